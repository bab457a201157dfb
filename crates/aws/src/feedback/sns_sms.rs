//! SNS's SMS delivery status, as SNS writes it to CloudWatch Logs once the account's SMS
//! attribute `DeliveryStatusIAMRole` is set: one JSON record per message, in the log group
//! `sns/<region>/<account>/DirectPublishToPhoneNumber` (and `…/Failure`):
//! https://docs.aws.amazon.com/sns/latest/dg/sms_stats_cloudwatch.html
//!
//! A record names the message only by SNS's message id (what Publish answered), so its
//! delivery is found through the deliveries' receipt index. A failure's reason is one of
//! SNS's known provider responses, as a word; the carrier's free text is never kept. A
//! failure carries its destination number to core, which suppresses it (by its hash) if
//! the failure says it will fail again: the number is never kept or logged here.

use chrono::{DateTime, NaiveDateTime, Utc};
use herald_core::{
    channel::Channel,
    delivery::feedback::{FeedbackKind, Receipt, SmsFailure},
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
    #[serde(default)]
    destination: Option<String>,
}

/// SNS's provider responses for a message that did not arrive, each a prefix of the text.
const FAILURES: [(&str, SmsFailure); 11] = [
    ("Phone has opted out", SmsFailure::OptedOut),
    ("Phone number is opted out", SmsFailure::OptedOut),
    ("Phone carrier has blocked this message", SmsFailure::CarrierBlocked),
    ("Phone carrier is currently unreachable/unavailable", SmsFailure::CarrierUnreachable),
    ("Phone is currently unreachable/unavailable", SmsFailure::PhoneUnreachable),
    ("Phone has blocked SMS", SmsFailure::PhoneBlocked),
    ("Phone is on a blocked list", SmsFailure::BlockedList),
    ("Invalid phone number", SmsFailure::InvalidNumber),
    ("This phone number is invalid", SmsFailure::InvalidNumber),
    ("This delivery would exceed max price", SmsFailure::MaxPriceExceeded),
    ("Unknown error attempting to reach phone", SmsFailure::Unknown),
];

/// The delivery status in one log record's message.
pub fn receipt(message: &str) -> Result<Receipt, FeedbackFormatError> {
    // serde's message may quote a value (a phone number): only its kind of failure is kept.
    let record: Record = serde_json::from_str(message)
        .map_err(|_| FeedbackFormatError::Unreadable("an SMS delivery status without its fields".into()))?;
    let at = NaiveDateTime::parse_from_str(&record.notification.timestamp, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| DateTime::<Utc>::from_naive_utc_and_offset(t, Utc))
        .map_err(|_| FeedbackFormatError::Unreadable("an SMS delivery status with an unreadable timestamp".into()))?;
    let (kind, failure, address) = match record.status.as_str() {
        "SUCCESS" => (FeedbackKind::Delivered, None, None),
        "FAILURE" => {
            let known = FAILURES.iter().find(|(response, _)| record.delivery.provider_response.starts_with(response));
            (
                FeedbackKind::Failed,
                Some(known.map_or(SmsFailure::Unknown, |(_, failure)| *failure)),
                record.delivery.destination,
            )
        }
        _ => return Err(FeedbackFormatError::Unreadable("an SMS delivery status of no known status".into())),
    };
    Ok(Receipt {
        provider_message_id: record.notification.message_id,
        channel: Channel::Sms,
        kind,
        at,
        failure,
        address,
    })
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
    fn a_success_is_a_delivery_of_the_message_sns_names_at_its_time_without_its_number() {
        let receipt = receipt(SUCCESS).unwrap();
        assert_eq!(receipt.provider_message_id, "34d9b400-c6dd-5444-820d-fbeb0f1f54cf");
        assert_eq!((receipt.channel, receipt.kind, receipt.failure), (Channel::Sms, FeedbackKind::Delivered, None));
        assert_eq!(receipt.address, None);
        assert_eq!(receipt.at.to_rfc3339(), "2016-06-28T00:40:34.558+00:00");
    }

    #[test]
    fn a_failure_records_snss_known_response_as_a_word() {
        let receipt = receipt(&failure("Phone is currently unreachable/unavailable")).unwrap();
        assert_eq!((receipt.kind, receipt.failure), (FeedbackKind::Failed, Some(SmsFailure::PhoneUnreachable)));
    }

    #[test]
    fn an_opt_out_or_a_block_is_read_as_such_with_the_number_it_is_about() {
        for (response, expected) in [
            ("Phone has opted out", SmsFailure::OptedOut),
            ("Phone carrier has blocked this message", SmsFailure::CarrierBlocked),
            ("Phone has blocked SMS", SmsFailure::PhoneBlocked),
            ("Phone is on a blocked list", SmsFailure::BlockedList),
            ("Invalid phone number", SmsFailure::InvalidNumber),
        ] {
            let receipt = receipt(&failure(response)).unwrap();
            assert_eq!(receipt.failure, Some(expected), "{response}");
            assert_eq!(receipt.address.as_deref(), Some("+15555550100"), "{response}");
        }
    }

    #[test]
    fn a_failure_with_a_response_herald_does_not_know_is_recorded_as_unknown_never_quoted() {
        let receipt = receipt(&failure("Carrier said no to +15555550100")).unwrap();
        assert_eq!(receipt.failure, Some(SmsFailure::Unknown));
    }

    #[test]
    fn an_unreadable_record_is_refused_without_quoting_it() {
        let error =
            receipt(r#"{"notification":{"messageId":7},"delivery":{"destination":"+15555550100"}}"#).unwrap_err();
        assert!(!error.to_string().contains("+1555"), "{error}");
        assert!(receipt(&SUCCESS.replace("SUCCESS", "PENDING")).is_err());
    }
}
