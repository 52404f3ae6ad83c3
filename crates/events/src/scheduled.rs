//! EventBridge "Scheduled Event"s for schedule triggers.

use mayfly_core::Timestamp;
use serde_json::{Value, json};

use crate::{LOCAL_ACCOUNT_ID, LOCAL_REGION};

/// The event EventBridge sends when the rule `rule` fires at `time`: `source`
/// `aws.events`, `detail-type` `Scheduled Event`, an empty `detail`, and the
/// rule's ARN as the only resource. `time` is written to the second, as
/// EventBridge writes it (`2026-11-25T06:38:22Z`, the scheduled instant, not
/// when the function happened to start). `id` should be unique per firing: a
/// handler may use it to deduplicate a retried firing.
pub fn scheduled_event(rule: &str, time: Timestamp, id: &str) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT_ID,
        "time": rfc3339_to_the_second(time),
        "region": LOCAL_REGION,
        "resources": [format!("arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:rule/{rule}")],
        "detail": {},
    })
}

/// `2026-11-25T06:38:22Z`: RFC 3339 in UTC, the fraction of a second dropped.
pub(crate) fn rfc3339_to_the_second(time: Timestamp) -> String {
    let whole_seconds = Timestamp::from_millis(time.as_millis().div_euclid(1000) * 1000);
    whole_seconds.to_rfc3339().replace(".000Z", "Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_written_to_the_second_rounding_down() {
        assert_eq!(rfc3339_to_the_second(Timestamp::from_millis(1_795_588_702_999)), "2026-11-25T06:38:22Z");
        assert_eq!(rfc3339_to_the_second(Timestamp::from_millis(-1)), "1969-12-31T23:59:59Z");
    }
}
