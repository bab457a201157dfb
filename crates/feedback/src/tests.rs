use std::sync::Arc;

use chrono::Utc;
use herald_core::{
    channel::Channel,
    delivery::{Delivery, DeliveryStatus, DeliveryStore, memory::MemoryDeliveries},
    suppressions::{SuppressionReason, SuppressionStore, memory::MemorySuppressions},
};
use serde_json::json;

use super::*;

struct World {
    deliveries: Arc<MemoryDeliveries>,
    suppressions: Arc<MemorySuppressions>,
    handler: FeedbackHandler,
}

async fn world() -> (World, String) {
    let deliveries = Arc::new(MemoryDeliveries::default());
    let suppressions = Arc::new(MemorySuppressions::default());
    let service = FeedbackService::new(deliveries.clone(), suppressions.clone(), SoftBouncePolicy::default());
    let delivery = Delivery::new("n1", "u1", Channel::Email, DeliveryStatus::Sent, None, Utc::now());
    deliveries.create(std::slice::from_ref(&delivery)).await.unwrap();
    let handler = FeedbackHandler { service, metrics: Emf::discard("Feedback") };
    (World { deliveries, suppressions, handler }, delivery.delivery_id)
}

/// An SQS message carrying an SES event as the default bus's rule delivers it.
fn message(detail_type: &str, detail: serde_json::Value) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some("m1".into());
    message.body = Some(
        json!({"version": "0", "id": "e1", "detail-type": detail_type, "source": "aws.ses",
            "account": "123456789012", "time": "2026-12-02T10:00:01Z", "region": "eu-west-1",
            "resources": [], "detail": detail})
        .to_string(),
    );
    message
}

fn mail(delivery_id: &str) -> serde_json::Value {
    json!({"timestamp": "2026-12-02T10:00:00Z", "messageId": "0100-abc", "destination": ["bob@example.com"],
        "tags": {"ses:configuration-set": ["herald"], "herald_delivery": [delivery_id]}})
}

fn bounce(delivery_id: &str) -> SqsMessage {
    message(
        "Email Bounced",
        json!({"eventType": "Bounce", "mail": mail(delivery_id), "bounce": {"bounceType": "Permanent",
            "bounceSubType": "General", "bouncedRecipients": [{"emailAddress": "bob@example.com"}],
            "timestamp": "2026-12-02T10:00:01Z"}}),
    )
}

#[tokio::test]
async fn a_bounce_event_ends_its_delivery_bounced_and_suppresses_the_address() {
    let (w, id) = world().await;
    let retry = w.handler.handle_batch(&[bounce(&id)], Invocation::default()).await;
    assert!(retry.is_empty());
    assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Bounced));
    let entry = w.suppressions.get(Channel::Email, "bob@example.com").await.unwrap().unwrap();
    assert_eq!(entry.reason, SuppressionReason::HardBounce);
}

#[tokio::test]
async fn a_delivery_event_ends_its_delivery_delivered() {
    let (w, id) = world().await;
    let delivered = message(
        "Email Delivered",
        json!({"eventType": "Delivery", "mail": mail(&id), "delivery": {"recipients": ["bob@example.com"],
            "timestamp": "2026-12-02T10:00:02Z"}}),
    );
    assert!(w.handler.handle_batch(&[delivered], Invocation::default()).await.is_empty());
    assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Delivered));
}

#[tokio::test]
async fn an_unreadable_message_is_retried_and_the_others_applied() {
    let (w, id) = world().await;
    let mut unreadable = SqsMessage::default();
    unreadable.body = Some("not json".into());
    let retry = w.handler.handle_batch(&[unreadable, bounce(&id)], Invocation::default()).await;
    assert_eq!(retry.positions().collect::<Vec<_>>(), [0]);
    assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Bounced));
}

#[tokio::test]
async fn an_event_about_an_email_herald_did_not_tag_is_dropped() {
    let (w, _) = world().await;
    let mut untagged = mail("x");
    untagged["tags"] = json!({});
    let event = message("Email Delivered", json!({"eventType": "Delivery", "mail": untagged, "delivery": {}}));
    assert!(w.handler.handle_batch(&[event], Invocation::default()).await.is_empty());
}

#[tokio::test]
async fn messages_are_not_started_past_the_deadline_and_come_back() {
    let (w, id) = world().await;
    let invocation = Invocation { deadline: Some(Instant::now() + MARGIN / 2) };
    let retry = w.handler.handle_batch(&[bounce(&id)], invocation).await;
    assert_eq!(retry.positions().collect::<Vec<_>>(), [0]);
    assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Sent));
}

/// An SMS delivery, sent, whose SNS message id is `message_id`.
async fn sms_sent(w: &World, message_id: &str) -> String {
    use herald_core::delivery::StatusChange;
    let delivery = Delivery::new("n2", "u2", Channel::Sms, DeliveryStatus::Pending, None, Utc::now());
    w.deliveries.create(std::slice::from_ref(&delivery)).await.unwrap();
    let sent = StatusChange { status: DeliveryStatus::Sent, at: Utc::now(), reason: None };
    w.deliveries.finish(&delivery.delivery_id, &sent, Some("sns-sms"), Some(message_id), false).await.unwrap();
    delivery.delivery_id
}

fn sms_status(message_id: &str, status: &str, response: &str) -> String {
    json!({"notification": {"messageId": message_id, "timestamp": "2026-12-02 10:00:01.250"},
        "delivery": {"destination": "+15555550100", "providerResponse": response}, "status": status})
    .to_string()
}

/// What CloudWatch Logs invokes the function with: the data gzipped, in base64.
fn logs_event(message_type: &str, messages: &[String]) -> serde_json::Value {
    use base64::Engine as _;
    use std::io::Write as _;
    let events: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"id": i.to_string(), "timestamp": 1_796_040_001_250_i64, "message": m}))
        .collect();
    let data = json!({"messageType": message_type, "owner": "123456789012",
        "logGroup": "sns/us-east-1/123456789012/DirectPublishToPhoneNumber", "logStream": "s1",
        "subscriptionFilters": ["SmsDeliverySubscription"], "logEvents": events});
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(data.to_string().as_bytes()).unwrap();
    json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(gzip.finish().unwrap())}})
}

#[tokio::test]
async fn an_sms_delivery_status_from_cloudwatch_logs_moves_the_sms_its_message_id_names() {
    let (w, _) = world().await;
    let id = sms_sent(&w, "sns-1").await;
    let event =
        logs_event("DATA_MESSAGE", &[sms_status("sns-1", "SUCCESS", "Message has been accepted by phone carrier")]);
    assert_eq!(w.handler.invoke(event, Invocation::default()).await, Ok(serde_json::Value::Null));
    assert_eq!(w.deliveries.get(&id).await.unwrap().unwrap().status, DeliveryStatus::Delivered);
}

#[tokio::test]
async fn an_sms_status_saying_the_phone_opted_out_suppresses_its_number() {
    let (w, _) = world().await;
    sms_sent(&w, "sns-5").await;
    let event = logs_event("DATA_MESSAGE", &[sms_status("sns-5", "FAILURE", "Phone has opted out")]);
    assert!(w.handler.invoke(event, Invocation::default()).await.is_ok());
    let entry = w.suppressions.get(Channel::Sms, "+15555550100").await.unwrap().unwrap();
    assert_eq!(entry.reason, SuppressionReason::OptedOut);
}

#[tokio::test]
async fn an_unreadable_sms_delivery_status_is_skipped_and_the_others_applied() {
    let (w, _) = world().await;
    let id = sms_sent(&w, "sns-2").await;
    let records = ["not json".to_owned(), sms_status("sns-2", "FAILURE", "Phone has blocked SMS")];
    assert!(w.handler.invoke(logs_event("DATA_MESSAGE", &records), Invocation::default()).await.is_ok());
    let delivery = w.deliveries.get(&id).await.unwrap().unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(delivery.history.last().unwrap().reason.as_deref(), Some("PhoneBlocked"));
}

#[tokio::test]
async fn a_control_message_from_cloudwatch_logs_applies_nothing() {
    let (w, _) = world().await;
    let id = sms_sent(&w, "sns-3").await;
    let event = logs_event("CONTROL_MESSAGE", &[sms_status("sns-3", "SUCCESS", "")]);
    assert!(w.handler.invoke(event, Invocation::default()).await.is_ok());
    assert_eq!(w.deliveries.get(&id).await.unwrap().unwrap().status, DeliveryStatus::Sent);
}

#[tokio::test]
async fn sms_delivery_statuses_past_the_deadline_fail_the_invocation_for_lambda_to_retry() {
    let (w, _) = world().await;
    let id = sms_sent(&w, "sns-4").await;
    let event = logs_event("DATA_MESSAGE", &[sms_status("sns-4", "SUCCESS", "")]);
    let invocation = Invocation { deadline: Some(Instant::now() + MARGIN / 2) };
    assert!(w.handler.invoke(event, invocation).await.is_err());
    assert_eq!(w.deliveries.get(&id).await.unwrap().unwrap().status, DeliveryStatus::Sent);
}

#[tokio::test]
async fn a_payload_neither_from_sqs_nor_from_cloudwatch_logs_is_an_error() {
    let (w, _) = world().await;
    assert!(w.handler.invoke(json!({"detail": {}}), Invocation::default()).await.is_err());
    assert!(w.handler.invoke(json!({"awslogs": {"data": "not base64"}}), Invocation::default()).await.is_err());
}

#[test]
fn the_soft_bounce_policy_comes_from_the_environment_or_its_defaults() {
    let env = |extra: &'static [(&'static str, &'static str)]| {
        move |name: &str| match name {
            "DELIVERIES_TABLE" | "SUPPRESSIONS_TABLE" => Some("t".to_owned()),
            _ => extra.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()),
        }
    };
    assert_eq!(FeedbackConfig::from_lookup(env(&[])).unwrap().soft_bounces, SoftBouncePolicy::default());
    let set = FeedbackConfig::from_lookup(env(&[("SOFT_BOUNCES_TO_SUPPRESS", "5"), ("SOFT_BOUNCE_WINDOW_DAYS", "30")]));
    assert_eq!(set.unwrap().soft_bounces, SoftBouncePolicy { bounces: 5, window_days: 30 });
    assert!(FeedbackConfig::from_lookup(env(&[("SOFT_BOUNCES_TO_SUPPRESS", "0")])).is_err());
}
