//! The template's imports bucket as the local stack provisions it on moto: a file written
//! under `imports/` notifies the importer's queue, and what moto sends there becomes,
//! through `s3::lambda_body`, the event real S3 sends.

use std::time::Duration;

use aws_lambda_events::s3::S3Event;
use herald_aws::Clients;
use herald_local::{MotoServer, Template, provision, repo_root, s3::lambda_body};

/// The endpoint `scripts/test` started, or a moto of our own.
async fn endpoint() -> (Option<MotoServer>, String) {
    match std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.is_empty()) {
        Some(endpoint) => (None, endpoint),
        None => {
            let moto = MotoServer::start().await.expect("moto starts");
            let endpoint = moto.endpoint.clone();
            (Some(moto), endpoint)
        }
    }
}

/// Every message on the queue now, in order, deleted as read.
async fn drain(clients: &Clients, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let received =
            clients.sqs().receive_message().queue_url(queue_url).max_number_of_messages(10).send().await.unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            bodies.push(message.body.unwrap_or_default());
            clients
                .sqs()
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    bodies
}

const FILE: &[u8] = b"user_id,email\nana,ana@example.com\n";

#[tokio::test]
async fn a_file_dropped_under_imports_reaches_the_importer_queue_as_a_real_s3_event() {
    let (moto, endpoint) = endpoint().await;
    let clients = Clients::new(&herald_aws::local_sdk_config(&endpoint).await);
    let template = Template::load(&repo_root().join("infra/template.yaml")).unwrap();
    let stack = format!("S3t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Only the resources: no pollers take the messages first.
    let deployment = provision::deploy(&clients, &template, &stack).await.expect("the template deploys");
    let bucket = deployment.names().get("ImportsBucket").expect("the imports bucket is created").clone();
    assert_eq!(bucket, format!("{}-importsbucket", stack.to_ascii_lowercase()));
    let queue_url = deployment.queue_url("ImporterQueue").expect("the importer's queue").to_owned();

    // Configuring the notification sent an s3:TestEvent, which the importer never sees.
    let first = drain(&clients, &queue_url).await;
    assert!(!first.is_empty(), "no s3:TestEvent");
    for body in &first {
        assert!(body.contains("s3:TestEvent"), "{body}");
        assert_eq!(lambda_body(body), None, "{body}");
    }

    let put = |key: &'static str, bytes: &'static [u8]| {
        clients.s3().put_object().bucket(&bucket).key(key).body(bytes.to_vec().into()).send()
    };
    put("imports/users (1).csv", FILE).await.unwrap();
    put("elsewhere/users.csv", b"user_id\nben\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    put("imports/users (1).csv", FILE).await.unwrap();
    let bodies = drain(&clients, &queue_url).await;
    assert_eq!(bodies.len(), 2, "only the writes under imports/ notify: {bodies:?}");
    for body in &bodies {
        eprintln!("moto sent: {body}");
        assert!(serde_json::from_str::<S3Event>(body).is_err(), "moto's body already deserializes: {body}");
    }
    let events: Vec<S3Event> = bodies
        .iter()
        .map(|body| {
            let real = lambda_body(body).expect("a notification, not a test event");
            serde_json::from_str(&real).unwrap_or_else(|e| panic!("{e}: {real}"))
        })
        .collect();
    let sequencers: Vec<String> = events
        .iter()
        .map(|event| {
            let record = &event.records[0];
            assert_eq!(record.event_source.as_deref(), Some("aws:s3"));
            assert_eq!(record.event_name.as_deref(), Some("ObjectCreated:Put"));
            assert_eq!(record.s3.bucket.name.as_deref(), Some(bucket.as_str()));
            assert_eq!(record.s3.bucket.arn.as_deref(), deployment.arn("ImportsBucket"));
            assert_eq!(record.s3.object.key.as_deref(), Some("imports/users+%281%29.csv"));
            assert_eq!(record.s3.object.size, Some(FILE.len() as i64));
            record.s3.object.sequencer.clone().expect("a sequencer")
        })
        .collect();
    assert_ne!(sequencers[0], sequencers[1], "two writes of one key are two sequencers");
    assert!(sequencers[1] > sequencers[0], "{sequencers:?}");

    // Deploying again (joining a running endpoint) finds the bucket.
    let again = provision::deploy(&clients, &template, &stack).await.expect("the template deploys again");
    assert_eq!(again.names().get("ImportsBucket"), Some(&bucket));
    drop(moto);
}
