//! SES's event publishing format (the `detail` of the events a configuration set's
//! EventBridge destination puts on the default bus):
//! https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
//!
//! The SES sender tags every email with its delivery id (`DELIVERY_TAG`); SES returns the
//! tags in `mail.tags`, so a report finds its delivery without an index on SES's message id.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use herald_core::{
    channel::Channel,
    delivery::feedback::{Feedback, FeedbackKind},
};
use serde::Deserialize;

use super::FeedbackFormatError;

/// The message tag holding the delivery id.
pub const DELIVERY_TAG: &str = "herald_delivery";

/// The `complaintSubType` of a message SES did not send: its address is on the
/// account-level suppression list.
const ON_ACCOUNT_SUPPRESSION_LIST: &str = "OnAccountSuppressionList";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    event_type: String,
    mail: Mail,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
    delivery: Option<Delivery>,
    delivery_delay: Option<DeliveryDelay>,
    reject: Option<Reject>,
    failure: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    timestamp: DateTime<Utc>,
    #[serde(default)]
    destination: Vec<String>,
    #[serde(default)]
    tags: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    email_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: String,
    #[serde(default)]
    bounce_sub_type: String,
    bounced_recipients: Vec<Recipient>,
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    complained_recipients: Vec<Recipient>,
    timestamp: Option<DateTime<Utc>>,
    complaint_feedback_type: Option<String>,
    complaint_sub_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    #[serde(default)]
    recipients: Vec<String>,
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryDelay {
    delay_type: Option<String>,
    #[serde(default)]
    delayed_recipients: Vec<Recipient>,
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Reject {
    reason: Option<String>,
}

/// A provider's word kept as a status's reason only when it is one (`MailboxFull`): a
/// value of another shape could be anything, an address included.
fn word(value: &str) -> Option<&str> {
    (!value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(value)
}

fn detail(parts: &[&str]) -> Option<String> {
    let words: Vec<&str> = parts.iter().filter_map(|p| word(p)).collect();
    (!words.is_empty()).then(|| words.join("/"))
}

/// The reports in one SES event's `detail`: one per recipient it names (Herald sends each
/// email to one). An event type Herald does not act on (`Send`, `Open`, `Click`,
/// `Subscription`: Herald records or tracks those itself) gives none.
pub fn feedback(event: &serde_json::Value) -> Result<Vec<Feedback>, FeedbackFormatError> {
    // serde's message may quote a value (an address): only its kind of failure is kept.
    let event = Event::deserialize(event)
        .map_err(|_| FeedbackFormatError::Unreadable("a field is missing or of another type".into()))?;
    let delivery_id = event
        .mail
        .tags
        .get(DELIVERY_TAG)
        .and_then(|values| values.first())
        .cloned()
        .ok_or(FeedbackFormatError::NotHeralds)?;
    let missing = |part: &str| FeedbackFormatError::Unreadable(format!("an event without its {part}"));
    let sent_at = event.mail.timestamp;
    let (kind, recipients, at, detail): (FeedbackKind, Vec<String>, _, _) = match event.event_type.as_str() {
        "Delivery" => {
            let delivery = event.delivery.ok_or_else(|| missing("delivery"))?;
            (FeedbackKind::Delivered, delivery.recipients, delivery.timestamp, None)
        }
        "Bounce" => {
            let bounce = event.bounce.ok_or_else(|| missing("bounce"))?;
            // `Undetermined` is treated as soft: SES could not tell, so one is not enough.
            let kind = FeedbackKind::Bounced { permanent: bounce.bounce_type == "Permanent" };
            let recipients = bounce.bounced_recipients.into_iter().map(|r| r.email_address).collect();
            (kind, recipients, bounce.timestamp, detail(&[&bounce.bounce_type, &bounce.bounce_sub_type]))
        }
        "Complaint" => {
            let complaint = event.complaint.ok_or_else(|| missing("complaint"))?;
            let recipients = complaint.complained_recipients.into_iter().map(|r| r.email_address).collect();
            // SES reports a message it did not send, the address being on the account's
            // suppression list, as a complaint of this subtype: no one complained.
            if complaint.complaint_sub_type.as_deref() == Some(ON_ACCOUNT_SUPPRESSION_LIST) {
                let reason = Some(ON_ACCOUNT_SUPPRESSION_LIST.to_owned());
                (FeedbackKind::ProviderSuppressed, recipients, complaint.timestamp, reason)
            } else {
                let feedback_type = complaint.complaint_feedback_type.unwrap_or_default();
                (FeedbackKind::Complained, recipients, complaint.timestamp, detail(&[&feedback_type]))
            }
        }
        "DeliveryDelay" => {
            let delay = event.delivery_delay.ok_or_else(|| missing("deliveryDelay"))?;
            let recipients = delay.delayed_recipients.into_iter().map(|r| r.email_address).collect();
            (
                FeedbackKind::DeliveryDelayed,
                recipients,
                delay.timestamp,
                detail(&[&delay.delay_type.unwrap_or_default()]),
            )
        }
        "Reject" => {
            let reason = event.reject.and_then(|r| r.reason).unwrap_or_default();
            (FeedbackKind::Rejected, event.mail.destination, None, detail(&[&reason]))
        }
        "Rendering Failure" => {
            event.failure.ok_or_else(|| missing("failure"))?;
            (FeedbackKind::Failed, event.mail.destination, None, Some("RenderingFailure".into()))
        }
        _ => return Ok(Vec::new()),
    };
    let at = at.unwrap_or(sent_at);
    let recipients: Vec<Option<String>> =
        if recipients.is_empty() { vec![None] } else { recipients.into_iter().map(Some).collect() };
    Ok(recipients
        .into_iter()
        .map(|address| Feedback {
            delivery_id: delivery_id.clone(),
            channel: Channel::Email,
            address,
            kind,
            at,
            detail: detail.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mail() -> serde_json::Value {
        json!({"timestamp": "2026-12-02T10:00:00.000Z", "source": "news@example.com", "messageId": "0100-abc",
            "destination": ["bob@example.com"], "sendingAccountId": "123456789012",
            "tags": {"ses:configuration-set": ["herald"], "herald_delivery": ["d_1"]}})
    }

    #[test]
    fn a_permanent_bounce_is_a_hard_bounce_of_its_recipient_with_its_type_as_reason() {
        let event = json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": "Permanent",
            "bounceSubType": "General", "timestamp": "2026-12-02T10:00:01.000Z", "feedbackId": "f",
            "bouncedRecipients": [{"emailAddress": "bob@example.com", "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 <bob@example.com> unknown"}]}});
        let [report] = feedback(&event).unwrap().try_into().unwrap();
        assert_eq!(report.delivery_id, "d_1");
        assert_eq!(report.kind, FeedbackKind::Bounced { permanent: true });
        assert_eq!(report.address.as_deref(), Some("bob@example.com"));
        assert_eq!(report.detail.as_deref(), Some("Permanent/General"));
        assert_eq!(report.at.to_rfc3339(), "2026-12-02T10:00:01+00:00");
    }

    #[test]
    fn transient_and_undetermined_bounces_are_soft_and_keep_ses_classification_as_reason() {
        for bounce_type in ["Transient", "Undetermined"] {
            let event = json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": bounce_type,
                "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": "bob@example.com"}]}});
            let report = &feedback(&event).unwrap()[0];
            assert_eq!(report.kind, FeedbackKind::Bounced { permanent: false }, "{bounce_type}");
            assert_eq!(report.detail, Some(format!("{bounce_type}/MailboxFull")));
        }
    }

    #[test]
    fn a_complaint_names_its_recipient() {
        let event = json!({"eventType": "Complaint", "mail": mail(), "complaint": {"complaintFeedbackType": "abuse",
            "complainedRecipients": [{"emailAddress": "bob@example.com"}], "timestamp": "2026-12-02T11:00:00Z"}});
        let report = &feedback(&event).unwrap()[0];
        assert_eq!((report.kind, report.detail.as_deref()), (FeedbackKind::Complained, Some("abuse")));
    }

    #[test]
    fn a_complaint_of_a_message_on_the_account_suppression_list_is_its_suppression_not_a_complaint() {
        let event = json!({"eventType": "Complaint", "mail": mail(), "complaint": {"complaintSubType":
            "OnAccountSuppressionList", "complainedRecipients": [{"emailAddress": "bob@example.com"}],
            "timestamp": "2026-12-02T11:00:00Z", "feedbackId": "f"}});
        let report = &feedback(&event).unwrap()[0];
        assert_eq!(
            (report.kind, report.detail.as_deref(), report.address.as_deref()),
            (FeedbackKind::ProviderSuppressed, Some("OnAccountSuppressionList"), Some("bob@example.com"))
        );
    }

    #[test]
    fn a_delivery_delay_and_a_delivery_are_read() {
        let delayed = json!({"eventType": "DeliveryDelay", "mail": mail(), "deliveryDelay": {"delayType": "MailboxFull",
            "delayedRecipients": [{"emailAddress": "bob@example.com"}], "timestamp": "2026-12-02T10:05:00Z"}});
        assert_eq!(feedback(&delayed).unwrap()[0].kind, FeedbackKind::DeliveryDelayed);
        let delivered = json!({"eventType": "Delivery", "mail": mail(), "delivery": {"recipients": ["bob@example.com"],
            "timestamp": "2026-12-02T10:00:02Z", "processingTimeMillis": 100, "smtpResponse": "250 ok"}});
        assert_eq!(feedback(&delivered).unwrap()[0].kind, FeedbackKind::Delivered);
    }

    #[test]
    fn a_providers_text_never_becomes_a_reason() {
        let event =
            json!({"eventType": "Reject", "mail": mail(), "reject": {"reason": "Bad content: bob@example.com"}});
        let report = &feedback(&event).unwrap()[0];
        assert_eq!((report.kind, report.detail.as_deref()), (FeedbackKind::Rejected, None));
    }

    #[test]
    fn sends_opens_clicks_and_subscriptions_are_not_feedback() {
        for event_type in ["Send", "Open", "Click", "Subscription"] {
            assert!(feedback(&json!({"eventType": event_type, "mail": mail()})).unwrap().is_empty());
        }
    }

    #[test]
    fn an_email_herald_did_not_tag_is_refused() {
        let mut untagged = mail();
        untagged["tags"] = json!({"ses:configuration-set": ["herald"]});
        let event = json!({"eventType": "Delivery", "mail": untagged, "delivery": {"recipients": []}});
        assert!(matches!(feedback(&event), Err(FeedbackFormatError::NotHeralds)));
    }

    #[test]
    fn an_unreadable_event_is_refused_without_quoting_it() {
        let event = json!({"eventType": "Bounce", "mail": mail(), "bounce": {"bounceType": "Permanent",
            "bouncedRecipients": "bob@example.com"}});
        let Err(error) = feedback(&event) else { panic!("read") };
        assert!(!error.to_string().contains("bob@"), "{error}");
    }
}
