//! The campaign adapters against moto, where they go beyond their ports' contracts
//! (`contracts::campaigns`): the item's index keys in the jobs table it shares with
//! imports, requests per change, and the dispatcher's queue (batches of ten, delays).
//! Each test makes its own table or queue, so the suite does not depend on the template.

use crate::contracts::campaigns::{campaign, counts};
use std::time::Duration;

use chrono::Utc;
use herald_aws::{Clients, DynamoCampaignStore, DynamoImportJobStore, RequestCounter, SqsDispatchQueue};
use herald_core::{
    campaigns::{CampaignCounters, CampaignStore, DispatchPage, DispatchQueue},
    imports::{ImportJob, ImportJobStore, ImportState, Resume},
};
use herald_e2e::tables::{clients, jobs_table, unique};

/// A store over a table of its own.
async fn store() -> (DynamoCampaignStore, Clients, String, RequestCounter) {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let table = jobs_table(&clients).await;
    (DynamoCampaignStore::new(clients.dynamodb(), &table), clients, table, counter)
}

#[tokio::test]
async fn a_campaign_item_carries_the_keys_of_the_index_and_is_never_taken_for_an_import() {
    let (store, clients, table, _) = store().await;
    let stored = campaign("c_once");
    assert!(store.create(&stored).await.unwrap());

    // Listed by kind, as imports are, and never mistaken for an import (nor one for it).
    let id = aws_sdk_dynamodb::types::AttributeValue::S("c_once".into());
    let item = clients.dynamodb().get_item().table_name(&table).key("job_id", id).send().await;
    let item = item.unwrap().item.unwrap();
    assert_eq!(item["kind"].as_s().unwrap(), "campaign");
    assert_eq!(item["started"].as_s().unwrap(), "2026-11-24T09:00:00.123456Z#c_once");
    let imports = DynamoImportJobStore::new(clients.dynamodb(), &table);
    assert!(imports.list(10, None).await.unwrap().jobs.is_empty());
    let at = Utc::now();
    let job = ImportJob {
        job_id: "imp_1".into(),
        bucket: "b".into(),
        key: "imports/a.csv".into(),
        state: ImportState::Running,
        format: None,
        gzip: false,
        bytes_total: 0,
        bytes_done: 0,
        rows_read: 0,
        imported: 0,
        unchanged: 0,
        rejected: 0,
        unknown_columns: Vec::new(),
        errors_key: None,
        failure: None,
        started_at: at,
        updated_at: at,
        finished_at: None,
        resume: Resume::default(),
    };
    assert!(imports.create(&job).await.unwrap());
    assert_eq!(store.get("imp_1").await.unwrap(), None, "an import job is no campaign");
}

#[tokio::test]
async fn recording_a_page_is_one_update_item() {
    let (store, _, _, counter) = store().await;
    store.create(&campaign("c_pages")).await.unwrap();

    counter.reset();
    assert_eq!(store.record_page("c_pages", 3, None, Some("user-5"), &counts(5, 8, 2), "m1").await.unwrap(), Some(0));
    assert_eq!(counter.count("DynamoDB", &[]), 1, "one UpdateItem");
}

#[tokio::test]
async fn add_counts_of_nothing_sends_no_request() {
    let (store, _, _, counter) = store().await;
    store.create(&campaign("c_counts")).await.unwrap();

    counter.reset();
    store.add_counts("c_counts", &CampaignCounters::default()).await.unwrap();
    assert_eq!(counter.count("DynamoDB", &[]), 0, "no request for nothing to add");
}

/// Receives every message of `queue_url` (waiting up to `wait` for the first ones).
async fn receive_all(sqs: &aws_sdk_sqs::Client, queue_url: &str, wait: i32) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(if bodies.is_empty() { wait } else { 0 })
            .send()
            .await
            .expect("receive");
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return bodies;
        }
        bodies.extend(messages.into_iter().filter_map(|m| m.body));
    }
}

#[tokio::test]
async fn dispatch_pages_are_sent_as_json_ten_per_request_and_delayed() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let queue_url = clients
        .sqs()
        .create_queue()
        .queue_name(unique("dispatch"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let queue = SqsDispatchQueue::new(clients.sqs(), &queue_url);
    let pages: Vec<DispatchPage> = (0..16)
        .map(|shard| DispatchPage {
            cursor: (shard == 7).then(|| "user-7".to_owned()),
            ..DispatchPage::first("c_1", shard)
        })
        .collect();

    counter.reset();
    queue.dispatch(&pages, Duration::ZERO).await.unwrap();
    assert_eq!(counter.count("SQS", &["SendMessageBatch"]), 2, "16 pages are two batches");
    let mut received: Vec<DispatchPage> =
        receive_all(&clients.sqs(), &queue_url, 1).await.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    received.sort_by_key(|p| p.shard);
    assert_eq!(received, pages);

    // A delayed page waits; a delay over SQS's 15 minutes is sent at the most.
    queue.dispatch(&pages[..1], Duration::from_secs(2)).await.unwrap();
    queue.dispatch(&pages[1..2], Duration::from_secs(3600)).await.unwrap();
    assert!(receive_all(&clients.sqs(), &queue_url, 0).await.is_empty(), "delayed pages are not visible yet");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let bodies = receive_all(&clients.sqs(), &queue_url, 1).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(serde_json::from_str::<DispatchPage>(&bodies[0]).unwrap(), pages[0]);
}
