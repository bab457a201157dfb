//! SNS's SMS delivery status, as SNS writes it to CloudWatch Logs once the account's SMS
//! attribute `DeliveryStatusIAMRole` is set: one JSON record per message, in the log group
//! `sns/<region>/<account>/DirectPublishToPhoneNumber` (and `…/Failure`):
//! https://docs.aws.amazon.com/sns/latest/dg/sms_stats_cloudwatch.html
//!
//! A record names the message only by SNS's message id (what Publish answered), so its
//! delivery is found through the deliveries' receipt index. The destination number and
//! the carrier's free text are never kept: a failure's reason is one of SNS's known
//! provider responses, as a word.

use chrono::{DateTime, NaiveDateTime, Utc};
use herald_core::{
    channel::Channel,
    delivery::feedback::{FeedbackKind, Receipt},
};
use serde::Deserialize;

use super::FeedbackFormatError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    notification: Notification,
    #[serde(default)]
    delivery: Delivery,
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    message_id: String,
    /// `2016-06-28 00:40:34.558`, UTC.
    timestamp: String,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    #[serde(default)]
    provider_response: String,
}

/// SNS's provider responses for a message that did not arrive, and the word Herald records.
const FAILURES: [(&str, &str); 9] = [
    ("Phone carrier has blocked this message", "CarrierBlocked"),
    ("Phone carrier is currently unreachable/unavailable", "CarrierUnreachable"),
    ("Phone is currently unreachable/unavailable", "PhoneUnreachable"),
    ("Phone has blocked SMS", "PhoneBlocked"),
    ("Phone is on a blocked list", "BlockedList"),
    ("Invalid phone number", "InvalidNumber"),
    ("This phone number is invalid", "InvalidNumber"),
    ("This delivery would exceed max price", "MaxPriceExceeded"),
    ("Unknown error attempting to reach phone", "Unknown"),
];

/// The delivery status in one log record's message.
pub fn receipt(message: &str) -> Result<Receipt, FeedbackFormatError> {
    // serde's message may quote a value (a phone number): only its kind of failure is kept.
    let record: Record = serde_json::from_str(message)
        .map_err(|_| FeedbackFormatError::Unreadable("an SMS delivery status without its fields".into()))?;
    let at = NaiveDateTime::parse_from_str(&record.notification.timestamp, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| DateTime::<Utc>::from_naive_utc_and_offset(t, Utc))
        .map_err(|_| FeedbackFormatError::Unreadable("an SMS delivery status with an unreadable timestamp".into()))?;
    let (kind, detail) = match record.status.as_str() {
        "SUCCESS" => (FeedbackKind::Delivered, None),
        "FAILURE" => {
            let known = FAILURES.iter().find(|(response, _)| record.delivery.provider_response.starts_with(response));
            (FeedbackKind::Failed, Some(known.map_or("Unknown", |(_, word)| word).to_owned()))
        }
        _ => return Err(FeedbackFormatError::Unreadable("an SMS delivery status of no known status".into())),
    };
    Ok(Receipt { provider_message_id: record.notification.message_id, channel: Channel::Sms, kind, at, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: &str = r#"{"notification":{"messageId":"34d9b400-c6dd-5444-820d-fbeb0f1f54cf","timestamp":"2016-06-28 00:40:34.558"},
        "delivery":{"phoneCarrier":"My Phone Carrier","mnc":270,"numberOfMessageParts":1,"destination":"+15555550100",
        "priceInUSD":0.00645,"smsType":"Transactional","mcc":310,"providerResponse":"Message has been accepted by phone carrier",
        "dwellTimeMs":599,"dwellTimeMsUntilDeviceAck":1344},"status":"SUCCESS"}"#;

    fn failure(response: &str) -> String {
        SUCCESS.replace("Message has been accepted by phone carrier", response).replace("SUCCESS", "FAILURE")
    }

    #[test]
    fn a_success_is_a_delivery_of_the_message_sns_names_at_its_time() {
        let receipt = receipt(SUCCESS).unwrap();
        assert_eq!(receipt.provider_message_id, "34d9b400-c6dd-5444-820d-fbeb0f1f54cf");
        assert_eq!((receipt.channel, receipt.kind, receipt.detail), (Channel::Sms, FeedbackKind::Delivered, None));
        assert_eq!(receipt.at.to_rfc3339(), "2016-06-28T00:40:34.558+00:00");
    }

    #[test]
    fn a_failure_records_snss_known_response_as_a_word() {
        let receipt = receipt(&failure("Phone is currently unreachable/unavailable")).unwrap();
        assert_eq!((receipt.kind, receipt.detail.as_deref()), (FeedbackKind::Failed, Some("PhoneUnreachable")));
    }

    #[test]
    fn a_failure_with_a_response_herald_does_not_know_is_recorded_as_unknown_never_quoted() {
        let receipt = receipt(&failure("Carrier said no to +15555550100")).unwrap();
        assert_eq!(receipt.detail.as_deref(), Some("Unknown"));
    }

    #[test]
    fn an_unreadable_record_is_refused_without_quoting_it() {
        let error =
            receipt(r#"{"notification":{"messageId":7},"delivery":{"destination":"+15555550100"}}"#).unwrap_err();
        assert!(!error.to_string().contains("+1555"), "{error}");
        assert!(receipt(&SUCCESS.replace("SUCCESS", "PENDING")).is_err());
    }
}
