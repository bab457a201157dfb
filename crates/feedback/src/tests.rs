use std::sync::Arc;

use chrono::Utc;
use herald_core::{
    delivery::{Channel, DeliveryStatus, DeliveryStore, memory::MemoryDeliveries},
    notifications::Delivery,
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
