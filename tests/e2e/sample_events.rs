//! The sample events in events/ are real API Gateway v2 and SQS payloads: fed to the
//! handlers in order, they store a template, create a user, record their behaviour
//! events, put them in a static segment and list its members and the user's segments,
//! send them a notification, schedule, read and cancel a campaign to the segment, read and
//! erase the user, put an address on the suppression list, read, list and remove it, and
//! deliver an email job; list and read the job of a bulk import; and apply SES's
//! feedback on three emails, a sample of every SES event type, and SNS's delivery status
//! of two SMS.

use herald_api::App;
use herald_core::{
    channel::Channel,
    delivery::{Delivery, DeliveryStatus, DeliveryStore},
    imports::{ImportJob, ImportJobStore, ImportState, Resume},
};
use herald_e2e::start_stack_with_key;
use herald_local::{esm::SqsHandler as _, repo_root};

/// The key the sample events carry in their Authorization header.
const SAMPLE_KEY: &str = "hk_sample_events_key";

fn read_event(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("events").join(file)).unwrap()
}

/// The sample with the timestamps of its behaviour events moved to now: a sample's are
/// fixed, and events more than 90 days old are refused.
fn with_fresh_event_times(event: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(event).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    for e in body["events"].as_array_mut().unwrap() {
        e["timestamp"] = chrono::Utc::now().to_rfc3339().into();
    }
    event["body"] = body.to_string().into();
    event.to_string()
}

/// The sample campaign moved to `send_at`: its own is fixed, and a campaign that is due
/// would be dispatched (and might be done) before the samples cancel it.
fn with_send_at(event: &str, send_at: chrono::DateTime<chrono::Utc>) -> String {
    let mut event: serde_json::Value = serde_json::from_str(event).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    body["send_at"] = send_at.to_rfc3339().into();
    event["body"] = body.to_string().into();
    event.to_string()
}

#[tokio::test]
async fn every_sample_api_event_gets_its_expected_answer() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let app = App::from_aws(&stack.clients, &stack.api_config).await.unwrap();
    let expectations = [
        ("api-put-template.json", 201),
        ("api-get-template.json", 200),
        ("api-put-user.json", 201),
        ("api-post-events.json", 202),
        ("api-post-segment.json", 202),
        ("api-get-segment-members.json", 200),
        ("api-get-user-segments.json", 200),
        ("api-put-preferences.json", 200),
        ("api-get-preferences.json", 200),
        ("api-post-notification.json", 202),
        ("api-post-notification.json", 202),
        ("api-get-notification.json", 404),
        ("api-post-campaign.json", 202),
        ("api-post-campaign.json", 202),
        ("api-get-campaign.json", 200),
        ("api-post-campaign-cancel.json", 202),
        ("api-post-campaign-cancel.json", 202),
        ("api-get-user.json", 200),
        ("api-delete-user.json", 204),
        ("api-get-user.json", 404),
        ("api-get-openapi.json", 200),
        ("api-put-suppression.json", 201),
        ("api-get-suppression.json", 200),
        ("api-get-suppressions.json", 200),
        ("api-delete-suppression.json", 204),
        ("api-get-suppression.json", 404),
    ];
    let campaign_send_at = chrono::Utc::now() + chrono::Duration::hours(1);
    for (file, status) in expectations {
        let event = read_event(file);
        let event = match file {
            "api-post-events.json" => with_fresh_event_times(&event),
            // The same time for the repeated POST, which is then the same request.
            "api-post-campaign.json" => with_send_at(&event, campaign_send_at),
            _ => event,
        };
        let request = lambda_http::request::from_str(&event)
            .unwrap_or_else(|e| panic!("{file} is not an API Gateway event: {e}"));
        let response = app.handle(request).await;
        assert_eq!(response.status().as_u16(), status, "{file}: {:?}", response.body());
        let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        match file {
            "api-post-events.json" => assert!(body.contains(r#""counted":2"#), "{file}: {body}"),
            "api-get-segment-members.json" => assert!(body.contains(r#""user_ids":["sample-user"]"#), "{file}: {body}"),
            "api-get-user-segments.json" => {
                assert!(body.contains(r#""segment_ids":["sample-segment"]"#), "{file}: {body}")
            }
            "api-post-campaign.json" => assert!(body.contains(r#""state":"scheduled""#), "{file}: {body}"),
            "api-get-campaign.json" => {
                assert!(body.contains(r#""segment_id":"sample-segment""#), "{file}: {body}");
                assert!(body.contains(r#""progress":{"shards_done":0,"shards":16}"#), "{file}: {body}");
            }
            "api-post-campaign-cancel.json" => assert!(body.contains(r#""state":"cancelled""#), "{file}: {body}"),
            "api-get-suppression.json" if status == 200 => {
                assert!(body.contains(r#""reason":"manual""#), "{file}: {body}")
            }
            "api-get-suppressions.json" => assert!(body.contains(r#""address_hash":"email#"#), "{file}: {body}"),
            _ => {}
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_worker_event_delivers_its_email() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&read_event("worker-email-sqs.json")).unwrap();
    let job = herald_worker::parse_job(event.records[0].body.as_deref().unwrap()).unwrap();
    let deliveries = herald_aws::DynamoDeliveryStore::new(stack.clients.dynamodb(), &stack.api_config.deliveries_table);
    let delivery_id = &job.recipients[0].delivery_id;
    let mut delivery = Delivery::new(
        &job.notification_id,
        "sample-user",
        Channel::Email,
        DeliveryStatus::Created,
        None,
        chrono::Utc::now(),
    );
    delivery.delivery_id = delivery_id.clone();
    deliveries.create(&[delivery]).await.unwrap();

    let response = stack.worker(Channel::Email).expect("an email worker").handle(event).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    assert_eq!(deliveries.get(delivery_id).await.unwrap().unwrap().status, DeliveryStatus::Sent);
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_feedback_event_delivers_bounces_and_complains_and_suppresses() {
    use herald_core::suppressions::{SuppressionReason, SuppressionStore};
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&read_event("feedback-ses-sqs.json")).unwrap();
    let deliveries = herald_aws::DynamoDeliveryStore::new(stack.clients.dynamodb(), &stack.api_config.deliveries_table);
    let ids = [
        "d_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
        "d_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2",
        "d_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa3",
    ];
    for id in ids {
        let mut delivery =
            Delivery::new("n_sample", id, Channel::Email, DeliveryStatus::Sent, None, chrono::Utc::now());
        delivery.delivery_id = id.to_owned();
        deliveries.create(&[delivery]).await.unwrap();
    }

    let response = stack.feedback().expect("the stack runs the feedback function").handle(event).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    let statuses: Vec<_> = futures_util::future::join_all(ids.map(|id| deliveries.get(id)))
        .await
        .into_iter()
        .map(|d| d.unwrap().unwrap().status)
        .collect();
    assert_eq!(statuses, [DeliveryStatus::Delivered, DeliveryStatus::Bounced, DeliveryStatus::Complained]);
    let suppressions =
        herald_aws::DynamoSuppressionStore::new(stack.clients.dynamodb(), &stack.api_config.suppressions_table);
    let reason = async |address: &str| suppressions.get(Channel::Email, address).await.unwrap().map(|s| s.reason);
    assert_eq!(reason("bounced@example.com").await, Some(SuppressionReason::HardBounce));
    assert_eq!(reason("complained@example.com").await, Some(SuppressionReason::Complaint));
    assert_eq!(reason("ana@example.com").await, None);
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_of_every_ses_event_type_moves_each_delivery_as_its_type_says_and_drops_the_rest() {
    use herald_core::suppressions::SuppressionStore;
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let event: aws_lambda_events::sqs::SqsEvent =
        serde_json::from_str(&read_event("feedback-ses-every-type-sqs.json")).unwrap();
    let deliveries = herald_aws::DynamoDeliveryStore::new(stack.clients.dynamodb(), &stack.api_config.deliveries_table);
    // Record by record: SES's event type, and the status it leaves its sent delivery in
    // (Send, Open, Click and Subscription are not feedback: Herald tracks opens, clicks
    // and unsubscribes itself).
    let expected = [
        ("Send", DeliveryStatus::Sent),
        ("Delivery", DeliveryStatus::Delivered),
        ("Bounce", DeliveryStatus::Bounced),
        ("Bounce", DeliveryStatus::Bounced),
        ("Bounce", DeliveryStatus::Bounced),
        ("Complaint", DeliveryStatus::Complained),
        ("Complaint", DeliveryStatus::Suppressed),
        ("Reject", DeliveryStatus::Rejected),
        ("DeliveryDelay", DeliveryStatus::DeliveryDelayed),
        ("Rendering Failure", DeliveryStatus::Failed),
        ("Open", DeliveryStatus::Sent),
        ("Click", DeliveryStatus::Sent),
        ("Subscription", DeliveryStatus::Sent),
    ];
    assert_eq!(event.records.len(), expected.len());
    let mut ids = Vec::new();
    for (record, (event_type, _)) in event.records.iter().zip(expected) {
        let envelope: serde_json::Value = serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            (envelope["source"].as_str(), envelope["detail"]["eventType"].as_str()),
            (Some("aws.ses"), Some(event_type))
        );
        let id = envelope["detail"]["mail"]["tags"]["herald_delivery"][0].as_str().unwrap().to_owned();
        let mut delivery =
            Delivery::new("n_sample", &id, Channel::Email, DeliveryStatus::Sent, None, chrono::Utc::now());
        delivery.delivery_id = id.clone();
        deliveries.create(&[delivery]).await.unwrap();
        ids.push(id);
    }

    let response = stack.feedback().expect("the stack runs the feedback function").handle(event).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    for (id, (event_type, status)) in ids.iter().zip(expected) {
        let delivery = deliveries.get(id).await.unwrap().unwrap();
        assert_eq!(delivery.status, status, "{event_type}: {id}");
    }
    let undetermined = deliveries.get(&ids[4]).await.unwrap().unwrap();
    assert_eq!(undetermined.history.last().unwrap().reason.as_deref(), Some("Undetermined/Undetermined"));
    // The hard bounce and the complaint put the one address of the sample on the list.
    let suppressions =
        herald_aws::DynamoSuppressionStore::new(stack.clients.dynamodb(), &stack.api_config.suppressions_table);
    assert!(suppressions.get(Channel::Email, "ana@example.com").await.unwrap().is_some());
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_sms_delivery_status_event_delivers_one_sms_and_fails_the_other() {
    use herald_core::delivery::StatusChange;
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let event: serde_json::Value = serde_json::from_str(&read_event("feedback-sns-sms-logs.json")).unwrap();
    let deliveries = herald_aws::DynamoDeliveryStore::new(stack.clients.dynamodb(), &stack.api_config.deliveries_table)
        .with_receipt_lookup();
    // The SMS the sample's records name by SNS's message id, sent.
    let sent = [
        ("d_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb1", "5a1f4c2e-0000-4000-8000-000000000001"),
        ("d_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2", "5a1f4c2e-0000-4000-8000-000000000002"),
    ];
    for (id, message_id) in sent {
        let mut delivery =
            Delivery::new("n_sample", id, Channel::Sms, DeliveryStatus::Pending, None, chrono::Utc::now());
        delivery.delivery_id = id.to_owned();
        deliveries.create(&[delivery]).await.unwrap();
        let change = StatusChange { status: DeliveryStatus::Sent, at: chrono::Utc::now(), reason: None };
        deliveries.finish(id, &change, Some("sns-sms"), Some(message_id), false).await.unwrap();
    }

    let feedback = stack.feedback().expect("the stack runs the feedback function");
    let answer = feedback.invoke(event, Default::default()).await.unwrap();
    assert_eq!(answer, serde_json::Value::Null);
    let [delivered, failed] = sent.map(|(id, _)| deliveries.get(id));
    let (delivered, failed) = (delivered.await.unwrap().unwrap(), failed.await.unwrap().unwrap());
    assert_eq!((delivered.status, failed.status), (DeliveryStatus::Delivered, DeliveryStatus::Failed));
    assert_eq!(failed.history.last().unwrap().reason.as_deref(), Some("PhoneUnreachable"));
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_segmenter_event_is_handled_without_failures() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&read_event("segmenter-sqs.json")).unwrap();
    let segmenter = stack.segmenter().expect("the stack runs the segmenter");
    let response = segmenter.handle(event).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_relay_event_publishes_the_new_outbox_only() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let capture = herald_e2e::EventCapture::attach(&stack).await;
    let event: aws_lambda_events::dynamodb::Event =
        serde_json::from_str(&read_event("relay-dynamodb-stream.json")).unwrap();
    let response = stack.relay().expect("the stack runs the relay").handle(event).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    // A profile write and a membership record write: each new outbox, once.
    let mut events = capture.collect(3, std::time::Duration::from_secs(5)).await;
    events.sort_by_key(|e| e["detail-type"].as_str().map(str::to_owned));
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (events[0]["detail-type"].as_str(), events[0]["detail"]["version"].as_u64()),
        (Some("profile.changed"), Some(2))
    );
    assert_eq!(
        (events[1]["detail-type"].as_str(), events[1]["detail"]["segment_id"].as_str()),
        (Some("segment.entered"), Some("pro-users"))
    );
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_import_events_list_and_read_a_job() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let app = App::from_aws(&stack.clients, &stack.api_config).await.unwrap();
    let event: serde_json::Value = serde_json::from_str(&read_event("api-get-import.json")).unwrap();
    let job_id = event["rawPath"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let at = chrono::Utc::now();
    let job = ImportJob {
        job_id: job_id.clone(),
        bucket: "herald-importsbucket".into(),
        key: "imports/crm export.csv".into(),
        state: ImportState::Done,
        format: Some("csv".into()),
        gzip: false,
        bytes_total: 2048,
        bytes_done: 2048,
        rows_read: 20,
        imported: 19,
        unchanged: 0,
        rejected: 1,
        unknown_columns: Vec::new(),
        errors_key: Some("imports/errors/crm export.csv".into()),
        failure: None,
        started_at: at,
        updated_at: at,
        finished_at: Some(at),
        resume: Resume::default(),
    };
    let jobs = herald_aws::DynamoImportJobStore::new(stack.clients.dynamodb(), &stack.api_config.jobs_table);
    assert!(jobs.create(&job).await.unwrap());
    for file in ["api-get-imports.json", "api-get-import.json"] {
        let request = lambda_http::request::from_str(&read_event(file))
            .unwrap_or_else(|e| panic!("{file} is not an API Gateway event: {e}"));
        let response = app.handle(request).await;
        assert_eq!(response.status().as_u16(), 200, "{file}: {:?}", response.body());
        let body = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        assert!(body.contains(&format!(r#""job_id":"{job_id}""#)), "{file}: {body}");
        assert!(body.contains(r#""progress":1.0"#), "{file}: {body}");
    }
    stack.stop().await;
}

#[test]
fn every_sample_event_is_tested() {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let tested = [
        "api-delete-suppression.json",
        "api-delete-user.json",
        "api-get-campaign.json",
        "api-get-import.json",
        "api-get-imports.json",
        "api-get-notification.json",
        "api-get-openapi.json",
        "api-get-preferences.json",
        "api-get-segment-members.json",
        "api-get-suppression.json",
        "api-get-suppressions.json",
        "api-get-template.json",
        "api-get-user-segments.json",
        "api-get-user.json",
        "api-post-campaign-cancel.json",
        "api-post-campaign.json",
        "api-post-events.json",
        "api-post-notification.json",
        "api-post-segment.json",
        "api-put-preferences.json",
        "api-put-suppression.json",
        "api-put-template.json",
        "api-put-user.json",
        // Tested with the dispatcher (crates/dispatcher), the settle check here too.
        "dispatcher-settle-sqs.json",
        "dispatcher-sqs.json",
        "feedback-ses-every-type-sqs.json",
        "feedback-ses-sqs.json",
        "feedback-sns-sms-logs.json",
        // Tested with the importer (crates/importer).
        "importer-continue-sqs.json",
        "importer-s3-sqs.json",
        "relay-dynamodb-stream.json",
        "segmenter-sqs.json",
        "worker-email-sqs.json",
    ];
    assert_eq!(files, tested);
}
