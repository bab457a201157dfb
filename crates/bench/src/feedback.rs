//! Delivery feedback and the engagement event stream: SES events and SNS's SMS delivery
//! statuses applied per second on one core (the feedback handler over in-memory stores:
//! the parsing, the status moves and the suppressions, no network), and the lag from a
//! status change to its event on the bus on the local stack.

use std::{
    io::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use chrono::Utc;
use herald_core::{
    channel::Channel,
    delivery::{
        Delivery, DeliveryStatus, DeliveryStore, StatusChange, feedback::FeedbackService, memory::MemoryDeliveries,
    },
    suppressions::{SoftBouncePolicy, SuppressionStore, memory::MemorySuppressions},
};
use herald_edge::{
    metrics::Emf,
    sqs::{Invocation, SqsHandler, SqsMessage},
};
use herald_feedback::FeedbackHandler;
use serde_json::{Value, json};

const EVENTS: usize = 50_000;

fn report(name: &str, value: f64, unit: &str) {
    println!("{name}: {value:.2} {unit}");
}

/// The SQS message the feedback queue would carry for SES's event about delivery `i`: 70 %
/// deliveries, 20 % bounces (half hard), 10 % complaints.
fn ses_message(i: usize, delivery_id: &str) -> SqsMessage {
    let address = format!("user{i}@example.com");
    let mail = json!({"timestamp": "2026-12-02T10:00:00Z", "messageId": format!("0100-{i}"),
        "destination": [address], "tags": {"ses:configuration-set": ["bench"], "herald_delivery": [delivery_id]}});
    let (detail_type, detail) = match i % 10 {
        0..=6 => (
            "Email Delivered",
            json!({"eventType": "Delivery", "mail": mail,
            "delivery": {"recipients": [address], "timestamp": "2026-12-02T10:00:01Z"}}),
        ),
        7 | 8 => (
            "Email Bounced",
            json!({"eventType": "Bounce", "mail": mail, "bounce": {
            "bounceType": if i % 10 == 7 { "Permanent" } else { "Transient" }, "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": address}], "timestamp": "2026-12-02T10:00:01Z"}}),
        ),
        _ => (
            "Email Complaint Received",
            json!({"eventType": "Complaint", "mail": mail, "complaint": {
            "complainedRecipients": [{"emailAddress": address}], "timestamp": "2026-12-02T10:00:01Z"}}),
        ),
    };
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("m{i}"));
    message.body = Some(
        json!({"version": "0", "detail-type": detail_type, "source": "aws.ses", "time": "2026-12-02T10:00:01Z",
            "detail": detail})
        .to_string(),
    );
    message
}

/// `feedback events per second per core`: batches of 10, as the queue hands them over.
pub fn feedback_events_per_second_per_core() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let deliveries = Arc::new(MemoryDeliveries::default());
        let rows: Vec<Delivery> = (0..EVENTS)
            .map(|i| Delivery::new("n_bench", &format!("u{i}"), Channel::Email, DeliveryStatus::Sent, None, Utc::now()))
            .collect();
        deliveries.create(&rows).await.unwrap();
        let messages: Vec<SqsMessage> = rows.iter().enumerate().map(|(i, d)| ses_message(i, &d.delivery_id)).collect();
        let service = FeedbackService::new(
            deliveries.clone(),
            Arc::new(MemorySuppressions::default()),
            SoftBouncePolicy::default(),
        );
        let handler = FeedbackHandler { service, metrics: Emf::discard("Feedback") };
        let started = Instant::now();
        for batch in messages.chunks(10) {
            let retry = handler.handle_batch(batch, Invocation::default()).await;
            assert!(retry.is_empty(), "a report failed");
        }
        let elapsed = started.elapsed().as_secs_f64();
        assert!(rows.iter().all(|d| deliveries.status(&d.delivery_id) != Some(DeliveryStatus::Sent)), "all moved");
        report("feedback events per second per core", EVENTS as f64 / elapsed, "events/s");
    });
}

/// SNS's SMS delivery status record for message `sns-<i>`, as SNS logs it: 80 %
/// delivered, 10 % unreachable, 10 % blocked by the carrier (which suppresses the number).
fn sms_status(i: usize) -> String {
    let (status, response) = match i % 10 {
        0..=7 => ("SUCCESS", "Message has been accepted by phone carrier"),
        8 => ("FAILURE", "Phone is currently unreachable/unavailable"),
        _ => ("FAILURE", "Phone carrier has blocked this message"),
    };
    json!({"notification": {"messageId": format!("sns-{i}"), "timestamp": "2026-12-02 10:00:01.250"},
        "delivery": {"phoneCarrier": "Carrier", "mnc": 270, "numberOfMessageParts": 1,
            "destination": format!("+1415{i:07}"), "priceInUSD": 0.00645, "smsType": "Transactional", "mcc": 310,
            "providerResponse": response, "dwellTimeMs": 599}, "status": status})
    .to_string()
}

/// What CloudWatch Logs invokes the function with for `records`: gzipped, in base64.
fn logs_payload(first: usize, records: &[String]) -> Value {
    let events: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(k, m)| json!({"id": (first + k).to_string(), "timestamp": 1_796_040_001_250_i64, "message": m}))
        .collect();
    let data = json!({"messageType": "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": "sns/us-east-1/123456789012/DirectPublishToPhoneNumber", "logStream": "s1",
        "subscriptionFilters": ["SmsDeliverySubscription"], "logEvents": events});
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(data.to_string().as_bytes()).expect("gzip in memory");
    json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(gzip.finish().expect("gzip"))}})
}

/// `sms feedback events per second per core`: SNS's records, 50 to a CloudWatch Logs
/// payload, each found by its SNS message id (the SMS worker's receipt index, in memory).
pub fn sms_feedback_events_per_second_per_core() {
    const PER_PAYLOAD: usize = 50;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let deliveries = Arc::new(MemoryDeliveries::default());
        let rows: Vec<Delivery> = (0..EVENTS)
            .map(|i| {
                Delivery::new("n_bench", &format!("u{i}"), Channel::Sms, DeliveryStatus::Pending, None, Utc::now())
            })
            .collect();
        deliveries.create(&rows).await.unwrap();
        let sent = StatusChange { status: DeliveryStatus::Sent, at: Utc::now(), reason: None };
        for (i, row) in rows.iter().enumerate() {
            let message_id = format!("sns-{i}");
            deliveries.finish(&row.delivery_id, &sent, Some("sns-sms"), Some(&message_id), false).await.unwrap();
        }
        let records: Vec<String> = (0..EVENTS).map(sms_status).collect();
        let payloads: Vec<Value> =
            records.chunks(PER_PAYLOAD).enumerate().map(|(n, chunk)| logs_payload(n * PER_PAYLOAD, chunk)).collect();
        let suppressions = Arc::new(MemorySuppressions::default());
        let service = FeedbackService::new(deliveries.clone(), suppressions.clone(), SoftBouncePolicy::default());
        let handler = FeedbackHandler { service, metrics: Emf::discard("Feedback") };
        let started = Instant::now();
        for payload in payloads {
            handler.invoke(payload, Invocation::default()).await.expect("a delivery of records applied");
        }
        let elapsed = started.elapsed().as_secs_f64();
        assert!(rows.iter().all(|d| deliveries.status(&d.delivery_id) != Some(DeliveryStatus::Sent)), "all moved");
        let blocked = format!("+1415{:07}", 9);
        let suppressed = suppressions.get(Channel::Sms, &blocked).await.unwrap();
        assert!(suppressed.is_some(), "a blocked number suppressed");
        report("sms feedback events per second per core", EVENTS as f64 / elapsed, "events/s");
    });
}

/// `engagement event lag p99 ms`: from a status change (its `at`, written with the change)
/// to its `delivery.status_changed` received from a queue subscribed to the bus, over
/// the changes of 50 emails to SES's success simulator (created … delivered), local stack.
pub async fn engagement_event_lag() {
    const EMAILS: usize = 50;
    let stack = crate::local_stack(None).await;
    let capture = herald_e2e::EventCapture::attach(&stack).await;
    let http = reqwest::Client::new();
    for i in 0..EMAILS {
        let body = json!({"type": "bench", "recipients": [{"email": format!("success+{i}@simulator.amazonses.com")}],
            "channels": ["email"], "content": {"email": {"subject": "s", "body": "b"}}});
        crate::notify(&http, &stack, &body).await;
    }
    let mut lags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while lags.len() < EMAILS * 4 && Instant::now() < deadline {
        for event in capture.collect(1, Duration::from_secs(1)).await {
            let received = Utc::now();
            if event["detail-type"] != "delivery.status_changed" {
                continue;
            }
            let at: chrono::DateTime<Utc> = serde_json::from_value::<Value>(event["detail"]["at"].clone())
                .ok()
                .and_then(|v| v.as_str().and_then(|t| t.parse().ok()))
                .expect("a change's time");
            lags.push((received - at).num_milliseconds().max(0) as f64);
        }
    }
    stack.stop().await;
    assert_eq!(lags.len(), EMAILS * 4, "every change of every email on the bus");
    lags.sort_by(f64::total_cmp);
    let p99 = lags[(lags.len() * 99).div_ceil(100) - 1];
    report("engagement event lag p99 ms", p99, "ms");
}
