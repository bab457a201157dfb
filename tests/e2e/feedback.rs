//! Delivery feedback and the engagement event stream end to end: the email worker sends through the stack's configuration
//! set, the moto patch publishes SES's mailbox simulator events on the default bus, the
//! template's rule takes them to the feedback queue, and the feedback function moves the
//! delivery and fills the suppression list, which the next send honours.

use std::{io::Read, time::Duration};

use flate2::read::GzDecoder;
use herald_aws::{Clients, local_sdk_config};
use herald_e2e::{Api, EventCapture, aws_endpoint, start_stack, start_stack_with, wait_for_deliveries};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// One email to `address`, directly; its delivery once `done` says it has moved far enough.
async fn email(api: &Api, address: &str, done: impl Fn(&str) -> bool) -> Value {
    let id = api
        .notify(&json!({"type": "news", "recipients": [{"email": address}], "channels": ["email"],
            "content": {"email": {"subject": "News", "body": "Read it"}}}))
        .await;
    let answer = wait_for_deliveries(api, &id, WAIT, |d| d["status"].as_str().is_some_and(&done)).await;
    answer["deliveries"][0].clone()
}

fn history(delivery: &Value) -> Vec<&str> {
    delivery["history"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn an_email_to_the_bounce_simulator_ends_bounced_and_the_next_one_to_it_suppressed() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let bounced = email(&api, "bounce@simulator.amazonses.com", |s| s == "bounced").await;
    assert_eq!(history(&bounced), ["created", "pending", "sent", "bounced"], "{bounced}");
    assert_eq!(bounced["history"][3]["reason"], "Permanent/General");

    let entry = api.get("/v1/suppressions/email/bounce@simulator.amazonses.com").await;
    assert_eq!(entry.status, StatusCode::OK);
    assert_eq!(
        (entry.body["reason"].as_str(), entry.body["delivery_id"].as_str()),
        (Some("hard_bounce"), bounced["delivery_id"].as_str())
    );

    let next = email(&api, "Bounce@simulator.amazonses.com", |s| !matches!(s, "created" | "pending")).await;
    assert_eq!(next["status"], "suppressed", "{next}");
    stack.stop().await;
}

#[tokio::test]
async fn an_email_to_the_complaint_simulator_ends_complained_and_suppresses_the_address() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let complained = email(&api, "complaint@simulator.amazonses.com", |s| s == "complained").await;
    // SES publishes its delivery, then the complaint; events need not arrive in order, and
    // a delivery reported after the complaint is not recorded.
    let history = history(&complained);
    assert_eq!(
        (&history[..3], history.last()),
        (&["created", "pending", "sent"][..], Some(&"complained")),
        "{complained}"
    );
    let entry = api.get("/v1/suppressions/email/complaint@simulator.amazonses.com").await;
    assert_eq!(entry.body["reason"], "complaint", "{:?}", entry.body);
    let next = email(&api, "complaint@simulator.amazonses.com", |s| !matches!(s, "created" | "pending")).await;
    assert_eq!(next["status"], "suppressed", "{next}");
    stack.stop().await;
}

#[tokio::test]
async fn an_email_to_the_success_simulator_ends_delivered_and_suppresses_nothing() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let delivered = email(&api, "success@simulator.amazonses.com", |s| s == "delivered").await;
    assert_eq!(history(&delivered), ["created", "pending", "sent", "delivered"], "{delivered}");
    let entry = api.get("/v1/suppressions/email/success@simulator.amazonses.com").await;
    assert_eq!(entry.status, StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn an_address_taken_off_the_list_is_sent_to_again() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let put = api.put("/v1/suppressions/email/ana@example.com", &json!({})).await;
    assert_eq!((put.status, put.body["reason"].as_str()), (StatusCode::CREATED, Some("manual")));
    let listed = api.get("/v1/suppressions?channel=email").await;
    assert_eq!(listed.body["suppressions"].as_array().unwrap().len(), 1, "{:?}", listed.body);
    assert!(!listed.body.to_string().contains("ana@"), "a listing shows hashes only");
    let suppressed = email(&api, "ana@example.com", |s| !matches!(s, "created" | "pending")).await;
    assert_eq!(suppressed["status"], "suppressed");

    assert_eq!(api.delete("/v1/suppressions/email/ana@example.com").await.status, StatusCode::NO_CONTENT);
    let sent = email(&api, "ana@example.com", |s| !matches!(s, "created" | "pending")).await;
    assert_eq!(sent["status"], "sent");
    stack.stop().await;
}

/// An SQS event as `FeedbackRule` delivers SES's events: one message, SES's soft bounce
/// of `delivery_id`'s email to `address`, now.
fn soft_bounce(delivery_id: &str, address: &str) -> aws_lambda_events::sqs::SqsEvent {
    let now = chrono::Utc::now().to_rfc3339();
    let envelope = json!({"version": "0", "id": delivery_id, "detail-type": "Email Bounced", "source": "aws.ses",
        "account": "123456789012", "time": now, "region": "us-east-1", "resources": [],
        "detail": {"eventType": "Bounce", "mail": {"timestamp": now, "messageId": delivery_id,
            "destination": [address], "tags": {"herald_delivery": [delivery_id]}},
            "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "timestamp": now,
                "feedbackId": delivery_id, "bouncedRecipients": [{"emailAddress": address}]}}});
    serde_json::from_value(json!({"Records": [{"messageId": delivery_id, "body": envelope.to_string(),
        "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {}}]}))
    .unwrap()
}

#[tokio::test]
async fn an_address_taken_off_the_list_after_soft_bounces_needs_as_many_again_to_be_suppressed() {
    use herald_local::esm::SqsHandler as _;
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let feedback = stack.feedback().expect("the stack runs the feedback function");
    let entry = "/v1/suppressions/email/full@example.com";
    // The stack's policy: three soft bounces within a week.
    for id in ["d_soft1", "d_soft2", "d_soft3"] {
        let answer = feedback.handle(soft_bounce(id, "full@example.com")).await;
        assert!(answer.batch_item_failures.is_empty(), "{:?}", answer.batch_item_failures);
    }
    assert_eq!(api.get(entry).await.body["reason"], "soft_bounces");

    assert_eq!(api.delete(entry).await.status, StatusCode::NO_CONTENT);
    for id in ["d_soft4", "d_soft5"] {
        feedback.handle(soft_bounce(id, "full@example.com")).await;
        assert_eq!(api.get(entry).await.status, StatusCode::NOT_FOUND, "suppressed again by {id}");
    }
    feedback.handle(soft_bounce("d_soft6", "full@example.com")).await;
    assert_eq!(api.get(entry).await.body["reason"], "soft_bounces");
    stack.stop().await;
}

#[tokio::test]
async fn every_status_change_of_a_delivery_is_on_the_bus_once_with_a_sequence_without_gaps() {
    let stack = start_stack().await;
    let capture = EventCapture::attach(&stack).await;
    let api = Api::new(&stack);
    let delivered = email(&api, "success@simulator.amazonses.com", |s| s == "delivered").await;

    // The bus carries the notification's own event too: collect until four changes came.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut changes: Vec<Value> = Vec::new();
    while changes.len() < 4 && tokio::time::Instant::now() < deadline {
        let events = capture.collect(1, Duration::from_secs(1)).await;
        changes.extend(
            events.into_iter().filter(|e| e["detail-type"] == "delivery.status_changed").map(|e| e["detail"].clone()),
        );
    }
    changes.extend(
        capture
            .collect(0, Duration::ZERO)
            .await
            .into_iter()
            .filter(|e| e["detail-type"] == "delivery.status_changed")
            .map(|e| e["detail"].clone()),
    );
    // The bus does not keep order (EventBridge to SQS), so consumers order by `sequence`:
    // what this checks is that the sequences, as they came, hold no repeat and no gap.
    let mut by_sequence = std::collections::BTreeMap::new();
    for change in &changes {
        let sequence = change["sequence"].as_u64().expect("a sequence");
        let repeated = by_sequence.insert(sequence, change["status"].as_str().unwrap());
        assert!(repeated.is_none(), "sequence {sequence} came twice: {changes:?}");
    }
    let sequences: Vec<u64> = by_sequence.keys().copied().collect();
    assert_eq!(sequences, (1..=changes.len() as u64).collect::<Vec<_>>(), "a gap: {changes:?}");
    let statuses: Vec<&str> = by_sequence.into_values().collect();
    assert_eq!(statuses, ["created", "pending", "sent", "delivered"], "{changes:?}");
    let last = changes.iter().find(|c| c["sequence"] == 4).unwrap();
    assert_eq!(last["provider_message_id"], delivered["provider_message_id"]);
    for change in &changes {
        assert_eq!((change["version"].as_u64(), &change["delivery_id"]), (Some(1), &delivered["delivery_id"]));
        assert_eq!(change["channel"], "email");
        assert!(change.get("user_id").is_none(), "a direct address has no user: {change}");
        assert!(!change.to_string().contains("simulator.amazonses.com"), "no address: {change}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_segment_of_users_who_opened_an_email_this_week_gains_a_user_when_they_open_one() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/ola", &json!({"email": "ola@example.com"})).await;
    let rule = json!({"event": "email.opened", "window": {"last_days": 7}, "count": {"gt": 0}});
    let created = api
        .post("/v1/segments", &json!({"segment_id": "readers", "name": "readers", "kind": "dynamic", "rule": rule}))
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let segments_of = async || api.get("/v1/users/ola/segments").await.body["segment_ids"].clone();
    let id = api
        .notify(&json!({"type": "news", "recipients": [{"user_id": "ola"}], "channels": ["email"],
            "content": {"email": {"subject": "News", "body": "Read it", "html": "<p>Read it</p>"}}}))
        .await;
    let sent = wait_for_deliveries(&api, &id, WAIT, |d| d["status"] == "sent").await;
    assert_eq!(segments_of().await, json!([]), "not a reader before opening");

    let email_id = sent["deliveries"][0]["provider_message_id"].as_str().unwrap().to_owned();
    let html = herald_e2e::sent_by_moto(&stack.endpoint).await.emails.into_iter().find(|e| e.0 == email_id).unwrap().3;
    let open = herald_e2e::tracking_links(&html).pop().expect("the open pixel");
    assert_eq!(reqwest::get(&open).await.unwrap().status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + WAIT;
    while segments_of().await != json!(["readers"]) {
        assert!(std::time::Instant::now() < deadline, "never a reader: {}", segments_of().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.stop().await;
}

/// Every line of every object under `prefix` in `bucket`, each object gunzipped; the keys.
async fn archived(clients: &Clients, bucket: &str) -> (Vec<String>, Vec<String>) {
    let listed = clients.s3().list_objects_v2().bucket(bucket).send().await.expect("list the archive");
    let keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
    let mut lines = Vec::new();
    for key in &keys {
        let object = clients.s3().get_object().bucket(bucket).key(key).send().await.expect("get an archived object");
        let bytes = object.body.collect().await.expect("read an archived object").into_bytes();
        let mut text = String::new();
        GzDecoder::new(&bytes[..]).read_to_string(&mut text).expect("an archived object is gzip");
        assert!(text.ends_with('\n'), "every record ends its line: {text:?}");
        lines.extend(text.lines().map(str::to_owned));
    }
    (keys, lines)
}

#[tokio::test]
async fn with_the_archive_on_every_status_change_is_a_json_line_in_s3_under_its_day() {
    let stack = start_stack_with(|options| {
        options.parameters.insert("EventArchive".into(), "true".into());
    })
    .await;
    let api = Api::new(&stack);
    let day = |t: chrono::DateTime<chrono::Utc>| t.format("events/year=%Y/month=%m/day=%d/").to_string();
    let day_before = day(chrono::Utc::now());
    let delivered = email(&api, "success@simulator.amazonses.com", |s| s == "delivered").await;
    let bucket = stack.outputs()["EventArchiveBucketName"].clone();
    let clients = Clients::new(&local_sdk_config(&aws_endpoint()).await);

    let deadline = tokio::time::Instant::now() + WAIT;
    let (keys, lines) = loop {
        let (keys, lines) = archived(&clients, &bucket).await;
        if lines.len() >= 4 || tokio::time::Instant::now() > deadline {
            break (keys, lines);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let day_after = day(chrono::Utc::now());
    for key in &keys {
        let in_a_day = [&day_before, &day_after].iter().any(|day| key.starts_with(day.as_str()));
        assert!(in_a_day && key.ends_with(".gz"), "{key}");
    }
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("a line is one event")).collect();
    let mut changes: Vec<&Value> = events.iter().map(|e| &e["detail"]).collect();
    changes.sort_by_key(|c| c["sequence"].as_u64());
    let statuses: Vec<&str> = changes.iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["created", "pending", "sent", "delivered"], "{lines:?}");
    for event in &events {
        assert_eq!(
            (event["source"].as_str(), event["detail-type"].as_str()),
            (Some("herald"), Some("delivery.status_changed"))
        );
        assert_eq!(event["detail"]["delivery_id"], delivered["delivery_id"]);
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_archive_is_off_unless_asked_for() {
    let stack = start_stack().await;
    let outputs = stack.outputs();
    assert!(outputs.contains_key("EventBusName"), "{outputs:?}");
    assert!(!outputs.contains_key("EventArchiveBucketName"), "{outputs:?}");
    stack.stop().await;
}

/// One SMS to `phone` with SNS's SMS delivery status on; its delivery once `done` says it
/// has moved far enough.
async fn sms(api: &Api, phone: &str, done: impl Fn(&str) -> bool) -> Value {
    let id = api
        .notify(&json!({"type": "otp", "recipients": [{"phone": phone}], "channels": ["sms"],
            "content": {"sms": {"body": "Your code is 1234"}}}))
        .await;
    let answer = wait_for_deliveries(api, &id, WAIT, |d| d["status"].as_str().is_some_and(&done)).await;
    answer["deliveries"][0].clone()
}

#[tokio::test]
async fn with_sms_delivery_status_on_an_sms_the_carrier_accepted_ends_delivered() {
    let stack = start_stack_with(|options| {
        options.parameters.insert("SmsDeliveryStatus".into(), "true".into());
    })
    .await;
    let api = Api::new(&stack);
    let delivered = sms(&api, "+14155550142", |s| s == "delivered").await;
    assert_eq!(history(&delivered), ["created", "pending", "sent", "delivered"], "{delivered}");
    stack.stop().await;
}

#[tokio::test]
async fn with_sms_delivery_status_on_an_sms_to_an_unreachable_phone_ends_failed_with_its_reason() {
    let stack = start_stack_with(|options| {
        options.parameters.insert("SmsDeliveryStatus".into(), "true".into());
    })
    .await;
    let api = Api::new(&stack);
    // A number ending 0199: the local stack's unreachable phone (scripts/moto_patches.py).
    let failed = sms(&api, "+14155550199", |s| s == "failed").await;
    assert_eq!(history(&failed), ["created", "pending", "sent", "failed"], "{failed}");
    assert_eq!(failed["history"][3]["reason"], "PhoneUnreachable");
    let entry = api.get("/v1/suppressions/sms/+14155550199").await;
    assert_eq!(entry.status, StatusCode::NOT_FOUND, "an unreachable phone may answer later");
    stack.stop().await;
}

#[tokio::test]
async fn with_sms_delivery_status_on_an_sms_to_a_blocked_number_ends_failed_and_the_next_one_suppressed() {
    let stack = start_stack_with(|options| {
        options.parameters.insert("SmsDeliveryStatus".into(), "true".into());
    })
    .await;
    let api = Api::new(&stack);
    // A number ending 0198: the local stack's blocked phone (scripts/moto_patches.py).
    let failed = sms(&api, "+14155550198", |s| s == "failed").await;
    assert_eq!(history(&failed), ["created", "pending", "sent", "failed"], "{failed}");
    assert_eq!(failed["history"][3]["reason"], "CarrierBlocked");

    let entry = api.get("/v1/suppressions/sms/+14155550198").await;
    assert_eq!(entry.status, StatusCode::OK);
    assert_eq!(
        (entry.body["reason"].as_str(), entry.body["delivery_id"].as_str()),
        (Some("blocked"), failed["delivery_id"].as_str())
    );

    let next = sms(&api, "+14155550198", |s| !matches!(s, "created" | "pending")).await;
    assert_eq!(next["status"], "suppressed", "{next}");
    stack.stop().await;
}
