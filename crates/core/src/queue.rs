//! The queue message lifecycle (the SQS model) and its lease rules.
//!
//! A message is *delayed* until its delay passes, then *visible*. A receive
//! leases it: it is *in flight* until its visibility timeout passes (and it is
//! visible again) or the holder of the receipt deletes it. A receipt names one
//! lease: after the lease lapses and the message is received again, the old
//! receipt no longer deletes it. A message that has been received
//! `max_receives` times and comes up once more goes to the dead-letter queue
//! instead, with the reason recorded.
//!
//! Backends store messages however they like; these functions are the rules
//! they apply, and the conformance suite checks they do.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ByteSize, Name, Timestamp};

/// A queue's settings, as declared in the architecture file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// How long a received message stays invisible to other receivers.
    pub visibility_timeout: Duration,
    /// Delay before a newly sent message becomes visible.
    pub delay: Duration,
    /// Largest body plus attributes accepted by `send`.
    pub max_message_size: ByteSize,
    /// How long an undeleted message is kept.
    pub retention: Duration,
    /// After this many receives, the next one moves the message to `dead_letter`.
    pub max_receives: Option<u32>,
    /// The dead-letter queue; required for `max_receives` to move anything.
    pub dead_letter: Option<Name>,
}

impl QueueConfig {
    pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_MESSAGE_SIZE: ByteSize = ByteSize(256 * 1024);
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(4 * 86_400);
    /// The longest visibility timeout a receive or an extension may ask for.
    pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout: Self::DEFAULT_VISIBILITY_TIMEOUT,
            delay: Duration::ZERO,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            retention: Self::DEFAULT_RETENTION,
            max_receives: None,
            dead_letter: None,
        }
    }
}

/// Where a message is in its lifecycle at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Delayed,
    Visible,
    InFlight,
}

/// The lifecycle state of a stored message at `now`, from the two fields
/// every backend keeps: when it becomes visible and how often it was received.
pub fn message_state(visible_at: Timestamp, receive_count: u32, now: Timestamp) -> MessageState {
    if visible_at <= now {
        MessageState::Visible
    } else if receive_count == 0 {
        MessageState::Delayed
    } else {
        MessageState::InFlight
    }
}

/// What a receive does with one visible message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveDecision {
    /// Lease it until `lease_until`; this is receive number `receive_count`.
    Deliver { receive_count: u32, lease_until: Timestamp },
    /// Move it to the dead-letter queue instead, recording `reason`.
    DeadLetter { dead_letter: Name, reason: String },
}

/// Decide what receiving a visible message that was received `receive_count`
/// times before does, under `config`, at `now`, leasing for `visibility_timeout`.
pub fn decide_receive(
    config: &QueueConfig,
    receive_count: u32,
    visibility_timeout: Duration,
    now: Timestamp,
) -> ReceiveDecision {
    if let (Some(max_receives), Some(dead_letter)) = (config.max_receives, &config.dead_letter)
        && receive_count >= max_receives
    {
        return ReceiveDecision::DeadLetter {
            dead_letter: dead_letter.clone(),
            reason: max_receives_reason(max_receives),
        };
    }
    ReceiveDecision::Deliver {
        receive_count: receive_count.saturating_add(1),
        lease_until: now.saturating_add(visibility_timeout),
    }
}

/// The reason recorded on a message moved to its dead-letter queue by receives.
pub fn max_receives_reason(max_receives: u32) -> String {
    format!("received {max_receives} times without being deleted (max_receives = {max_receives})")
}

/// Check a message against the queue's size limit before it is stored.
pub fn check_message_size(config: &QueueConfig, queue: &Name, size: u64) -> Result<(), QueueRuleError> {
    if size > config.max_message_size.bytes() {
        return Err(QueueRuleError::MessageTooLarge { queue: queue.clone(), size, limit: config.max_message_size });
    }
    Ok(())
}

/// Check a requested visibility timeout.
pub fn check_visibility_timeout(timeout: Duration) -> Result<(), QueueRuleError> {
    if timeout > QueueConfig::MAX_VISIBILITY_TIMEOUT {
        return Err(QueueRuleError::VisibilityTimeoutTooLong { requested: timeout });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueRuleError {
    #[error(
        "message of {size} bytes is larger than queue `{queue}` accepts ({limit}); raise `max_message_size` or store the payload in a bucket and send its key"
    )]
    MessageTooLarge { queue: Name, size: u64, limit: ByteSize },
    #[error("visibility timeout of {requested:?} is longer than the 12h limit")]
    VisibilityTimeoutTooLong { requested: Duration },
}

/// Identifies one lease on one message: the message id and which receive it was.
/// Rendered as `<message id>.<receive count>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptHandle {
    pub message_id: u64,
    pub receive_count: u32,
}

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.message_id, self.receive_count)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a receipt handle; receipts look like `1234.1` (message id, receive count)")]
pub struct BadReceiptHandle(pub String);

impl FromStr for ReceiptHandle {
    type Err = BadReceiptHandle;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadReceiptHandle(s.to_owned());
        let (id, count) = s.split_once('.').ok_or_else(bad)?;
        Ok(ReceiptHandle {
            message_id: id.parse().map_err(|_| bad())?,
            receive_count: count.parse().map_err(|_| bad())?,
        })
    }
}

/// Counts a queue reports at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueStats {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Age of the oldest message in the queue (any state), if any.
    pub oldest_age: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn states_follow_visibility_and_receives() {
        let now = Timestamp(1_000);
        assert_eq!(message_state(Timestamp(1_000), 0, now), MessageState::Visible);
        assert_eq!(message_state(Timestamp(2_000), 0, now), MessageState::Delayed);
        assert_eq!(message_state(Timestamp(2_000), 1, now), MessageState::InFlight);
        assert_eq!(message_state(Timestamp(500), 3, now), MessageState::Visible);
    }

    #[test]
    fn receive_leases_until_timeout() {
        let config = QueueConfig::default();
        let decision = decide_receive(&config, 0, Duration::from_secs(30), Timestamp(1_000));
        assert_eq!(decision, ReceiveDecision::Deliver { receive_count: 1, lease_until: Timestamp(31_000) });
    }

    #[test]
    fn receive_past_max_goes_to_dead_letter_only_when_one_is_set() {
        let mut config = QueueConfig { max_receives: Some(3), ..QueueConfig::default() };
        let no_dlq = decide_receive(&config, 3, Duration::from_secs(1), Timestamp(0));
        assert!(matches!(no_dlq, ReceiveDecision::Deliver { receive_count: 4, .. }));

        config.dead_letter = Some(name("jobs-dlq"));
        assert!(matches!(
            decide_receive(&config, 2, Duration::from_secs(1), Timestamp(0)),
            ReceiveDecision::Deliver { receive_count: 3, .. }
        ));
        match decide_receive(&config, 3, Duration::from_secs(1), Timestamp(0)) {
            ReceiveDecision::DeadLetter { dead_letter, reason } => {
                assert_eq!(dead_letter, name("jobs-dlq"));
                assert!(reason.contains("received 3 times"), "{reason}");
            }
            other => panic!("expected dead letter, got {other:?}"),
        }
    }

    #[test]
    fn size_limit_names_queue_and_limit() {
        let config = QueueConfig::default();
        assert!(check_message_size(&config, &name("q"), 256 * 1024).is_ok());
        let error = check_message_size(&config, &name("q"), 256 * 1024 + 1).unwrap_err();
        assert!(error.to_string().contains("queue `q` accepts (256KiB)"), "{error}");
    }

    #[test]
    fn receipt_handles_round_trip() {
        let receipt = ReceiptHandle { message_id: 42, receive_count: 3 };
        assert_eq!(receipt.to_string().parse::<ReceiptHandle>(), Ok(receipt));
        assert!("42".parse::<ReceiptHandle>().is_err());
        assert!("a.b".parse::<ReceiptHandle>().is_err());
    }
}
