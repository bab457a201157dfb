//! The sample events in events/ are real API Gateway v2 and SQS payloads: fed to the
//! handlers in order, they store a template, create a user, send them a notification,
//! read and erase the user, and deliver an email job.

use herald_api::App;
use herald_core::{
    delivery::{Channel, DeliveryStatus},
    notification::Delivery,
    ports::DeliveryStore,
};
use herald_e2e::start_stack_with_key;
use herald_local::repo_root;

/// The key the sample events carry in their Authorization header.
const SAMPLE_KEY: &str = "hk_sample_events_key";

fn read_event(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("events").join(file)).unwrap()
}

#[tokio::test]
async fn every_sample_api_event_gets_its_expected_answer() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let app = App::from_aws(&stack.clients, &stack.api_config);
    let expectations = [
        ("api-put-template.json", 201),
        ("api-get-template.json", 200),
        ("api-put-user.json", 201),
        ("api-put-preferences.json", 200),
        ("api-get-preferences.json", 200),
        ("api-post-notification.json", 202),
        ("api-post-notification.json", 202),
        ("api-get-notification.json", 404),
        ("api-get-user.json", 200),
        ("api-delete-user.json", 204),
        ("api-get-user.json", 404),
        ("api-get-openapi.json", 200),
    ];
    for (file, status) in expectations {
        let request = lambda_http::request::from_str(&read_event(file))
            .unwrap_or_else(|e| panic!("{file} is not an API Gateway event: {e}"));
        let response = app.handle(request).await;
        assert_eq!(response.status().as_u16(), status, "{file}: {:?}", response.body());
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_sample_worker_event_delivers_its_email() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&read_event("worker-email-sqs.json")).unwrap();
    let job = herald_worker::parse_job(event.records[0].body.as_deref().unwrap()).unwrap();
    let deliveries =
        herald_aws::DynamoDeliveryStore::new(stack.clients.dynamodb.clone(), &stack.api_config.deliveries_table);
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

#[test]
fn every_sample_event_is_tested() {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let tested = [
        "api-delete-user.json",
        "api-get-notification.json",
        "api-get-openapi.json",
        "api-get-preferences.json",
        "api-get-template.json",
        "api-get-user.json",
        "api-post-notification.json",
        "api-put-preferences.json",
        "api-put-template.json",
        "api-put-user.json",
        "worker-email-sqs.json",
    ];
    assert_eq!(files, tested);
}
