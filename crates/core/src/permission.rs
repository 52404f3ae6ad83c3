//! What a function may touch through the AWS-compatible endpoint: its
//! `permissions`, each an access verb on one named bucket or queue
//! (`objects:read:inbox`, `messages:write:work`). The verbs are the HTTPS
//! API's token scope names for buckets and queues, so a permission reads as
//! "this scope, limited to this resource".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Name;

/// An access verb, named as the token scope it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Access {
    /// `objects:read`: list a bucket, get and head its objects, copy from it.
    ObjectsRead,
    /// `objects:write`: put, copy into and delete objects of a bucket.
    ObjectsWrite,
    /// `queues:read`: a queue's URL and attributes.
    QueuesRead,
    /// `messages:write`: send to a queue (with `queues:read`: receive, delete, change visibility, purge).
    MessagesWrite,
}

/// What an [`Access`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Bucket,
    Queue,
}

impl ResourceKind {
    pub fn noun(self) -> &'static str {
        match self {
            ResourceKind::Bucket => "bucket",
            ResourceKind::Queue => "queue",
        }
    }
}

impl Access {
    pub const ALL: [Access; 4] = [Access::ObjectsRead, Access::ObjectsWrite, Access::QueuesRead, Access::MessagesWrite];

    /// The scope name, as tokens write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ObjectsRead => "objects:read",
            Access::ObjectsWrite => "objects:write",
            Access::QueuesRead => "queues:read",
            Access::MessagesWrite => "messages:write",
        }
    }

    /// Whether it names a bucket or a queue.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Access::ObjectsRead | Access::ObjectsWrite => ResourceKind::Bucket,
            Access::QueuesRead | Access::MessagesWrite => ResourceKind::Queue,
        }
    }
}

/// One entry of a function's `permissions`: `<verb>:<bucket or queue>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub access: Access,
    pub resource: Name,
}

/// Why a permission string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error("`{given}` has no resource; a permission reads `<verb>:<name>`, e.g. `objects:read:inbox`")]
    MissingResource { given: String },
    #[error("`{verb}` is not a permission verb; verbs are: {}", Access::ALL.map(Access::as_str).join(", "))]
    UnknownVerb { verb: String },
    #[error("`{name}` is not a valid {noun} name: {reason}")]
    BadName { name: String, noun: &'static str, reason: String },
}

impl FromStr for Permission {
    type Err = PermissionError;

    fn from_str(text: &str) -> Result<Permission, PermissionError> {
        let (verb, resource) = text
            .rsplit_once(':')
            .filter(|(verb, _)| verb.contains(':'))
            .ok_or_else(|| PermissionError::MissingResource { given: text.to_owned() })?;
        let access = Access::ALL
            .into_iter()
            .find(|access| access.as_str() == verb)
            .ok_or_else(|| PermissionError::UnknownVerb { verb: verb.to_owned() })?;
        let resource = Name::new(resource).map_err(|error| PermissionError::BadName {
            name: resource.to_owned(),
            noun: access.resource_kind().noun(),
            reason: error.to_string(),
        })?;
        Ok(Permission { access, resource })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.access.as_str(), self.resource)
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Permission, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `permissions` allow `access` on `resource`.
pub fn permits(permissions: &[Permission], access: Access, resource: &str) -> bool {
    permissions.iter().any(|permission| permission.access == access && permission.resource.as_str() == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_and_print_back() {
        for text in ["objects:read:inbox", "objects:write:archive", "queues:read:work", "messages:write:work"] {
            let permission: Permission = text.parse().unwrap();
            assert_eq!(permission.to_string(), text);
        }
        let permission: Permission = "objects:write:archive".parse().unwrap();
        assert_eq!(permission.access, Access::ObjectsWrite);
        assert_eq!(permission.resource.as_str(), "archive");
    }

    #[test]
    fn bad_permissions_say_what_is_wrong() {
        assert!(matches!("objects:read".parse::<Permission>(), Err(PermissionError::MissingResource { .. })));
        assert!(matches!("inbox".parse::<Permission>(), Err(PermissionError::MissingResource { .. })));
        let error = "objects:delete:inbox".parse::<Permission>().unwrap_err();
        assert_eq!(error, PermissionError::UnknownVerb { verb: "objects:delete".to_owned() });
        assert!(error.to_string().contains("objects:read, objects:write, queues:read, messages:write"), "{error}");
        assert!(matches!("objects:read:In Box".parse::<Permission>(), Err(PermissionError::BadName { .. })));
        assert!(matches!("objects:read:".parse::<Permission>(), Err(PermissionError::BadName { .. })));
    }

    #[test]
    fn a_permission_allows_only_its_verb_on_its_resource() {
        let permissions: Vec<Permission> =
            ["objects:read:inbox", "objects:write:archive"].iter().map(|text| text.parse().unwrap()).collect();
        assert!(permits(&permissions, Access::ObjectsRead, "inbox"));
        assert!(permits(&permissions, Access::ObjectsWrite, "archive"));
        assert!(!permits(&permissions, Access::ObjectsWrite, "inbox"));
        assert!(!permits(&permissions, Access::ObjectsRead, "archive"));
        assert!(!permits(&permissions, Access::ObjectsRead, "other"));
    }
}
