//! Bucket events: what the event log records for every put and delete, in
//! commit order, for triggers to consume.

use serde::{Deserialize, Serialize};

use crate::{Name, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectEventKind {
    Created,
    Deleted,
}

impl ObjectEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectEventKind::Created => "created",
            ObjectEventKind::Deleted => "deleted",
        }
    }
}

/// Why Mayfly itself deleted an object: its bucket's `retention`, or
/// `[policy].log_retention` for a sealed run log. A user's delete has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    /// Older than its bucket's `retention`.
    Retention,
    /// A sealed run log older than `[policy].log_retention`.
    LogRetention,
}

impl DeletionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionReason::Retention => "retention",
            DeletionReason::LogRetention => "log_retention",
        }
    }

    pub fn parse(text: &str) -> Option<DeletionReason> {
        match text {
            "retention" => Some(DeletionReason::Retention),
            "log_retention" => Some(DeletionReason::LogRetention),
            _ => None,
        }
    }
}

/// One entry of the event log. `sequence` is assigned by the state store, is
/// strictly increasing in commit order and never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEvent {
    pub sequence: u64,
    pub bucket: Name,
    pub key: String,
    pub kind: ObjectEventKind,
    /// Size of the object after a `created` event; 0 for `deleted`.
    pub size: u64,
    /// The object's entity tag after a `created` event, if the store gives one.
    pub etag: Option<String>,
    pub at: crate::Timestamp,
    /// Set on a `deleted` event when Mayfly expired the object itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeletionReason>,
}

/// An event before the state store has given it a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObjectEvent {
    pub bucket: Name,
    pub key: String,
    pub kind: ObjectEventKind,
    pub size: u64,
    pub etag: Option<String>,
    pub at: Timestamp,
    pub reason: Option<DeletionReason>,
}
