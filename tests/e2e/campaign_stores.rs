//! The campaign adapters against moto: campaigns in the jobs table (conditional create,
//! guarded state changes, pages recorded exactly once, counters added up) and the
//! dispatcher's queue. Each test makes its own table or queue, so the suite does not
//! depend on the template.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_aws::{Clients, DynamoCampaignStore, DynamoImportJobStore, RequestCounter, SqsDispatchQueue};
use herald_core::{
    campaigns::{Campaign, CampaignCounters, CampaignState, CampaignStore, DispatchPage, DispatchQueue},
    delivery::Channel,
    imports::{ImportJob, ImportJobStore, ImportState, Resume},
};
use herald_e2e::tables::{clients, jobs_table, unique};
use serde_json::json;

/// A store over a table of its own.
async fn store() -> (DynamoCampaignStore, Clients, String, RequestCounter) {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let table = jobs_table(&clients).await;
    (DynamoCampaignStore::new(clients.dynamodb.clone(), &table), clients, table, counter)
}

fn campaign(campaign_id: &str) -> Campaign {
    let at: DateTime<Utc> = "2026-11-24T09:00:00.123456Z".parse().unwrap();
    Campaign {
        send_at: Some("2026-11-25T08:00:00Z".parse().unwrap()),
        // 1.0 comes back as 1.0, not 1: the filter is kept as JSON text.
        filter: Some(json!({"attribute": "score", "gt": 1.0})),
        state: CampaignState::Scheduled,
        ..Campaign::new(campaign_id, "Spring sale", "vip", "spring", 3, vec![Channel::Email, Channel::Sms], at)
    }
}

fn counts(targeted: u64, queued: u64, skipped_no_address: u64) -> CampaignCounters {
    CampaignCounters { targeted, queued, skipped_no_address, ..Default::default() }
}

#[tokio::test]
async fn a_campaign_is_created_once_and_read_back_as_it_was() {
    let (store, clients, table, _) = store().await;
    let stored = campaign("c_once");
    assert!(store.create(&stored).await.unwrap());
    let mut other = campaign("c_once");
    other.name = "Another".into();
    assert!(!store.create(&other).await.unwrap(), "a second create writes nothing");
    let read = store.get("c_once").await.unwrap().expect("the campaign");
    assert_eq!(read, stored);
    assert_eq!(read.filter.as_ref().unwrap().to_string(), r#"{"attribute":"score","gt":1.0}"#);
    assert_eq!(store.get("c_none").await.unwrap(), None);

    // Listed by kind, as imports are, and never mistaken for an import (nor one for it).
    let id = aws_sdk_dynamodb::types::AttributeValue::S("c_once".into());
    let item = clients.dynamodb.get_item().table_name(&table).key("job_id", id).send().await;
    let item = item.unwrap().item.unwrap();
    assert_eq!(item["kind"].as_s().unwrap(), "campaign");
    assert_eq!(item["started"].as_s().unwrap(), "2026-11-24T09:00:00.123456Z#c_once");
    let imports = DynamoImportJobStore::new(clients.dynamodb.clone(), &table);
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
async fn set_state_moves_a_campaign_only_from_the_states_named() {
    let (store, _, _, _) = store().await;
    store.create(&campaign("c_state")).await.unwrap();
    use CampaignState::*;
    assert!(!store.set_state("c_state", Sending, &[Dispatching]).await.unwrap());
    assert!(!store.set_state("c_state", Sending, &[]).await.unwrap());
    assert_eq!(store.get("c_state").await.unwrap().unwrap().state, Scheduled);
    assert!(store.set_state("c_state", Dispatching, &[Scheduled]).await.unwrap());
    assert!(!store.set_state("c_state", Dispatching, &[Scheduled]).await.unwrap(), "moved once");
    assert!(store.set_state("c_state", Cancelled, &[Scheduled, Dispatching, Sending]).await.unwrap());
    let read = store.get("c_state").await.unwrap().unwrap();
    assert_eq!(read.state, Cancelled);
    assert!(read.updated_at > campaign("c_state").updated_at);
    assert!(!store.set_state("c_state", Sending, &[Scheduled, Dispatching]).await.unwrap());
    assert!(!store.set_state("c_unknown", Cancelled, &[Scheduled]).await.unwrap(), "nothing to move");
    assert_eq!(store.get("c_unknown").await.unwrap(), None, "and nothing written");
}

#[tokio::test]
async fn a_page_is_recorded_once_and_a_shard_is_done_at_its_last_page() {
    let (store, _, _, counter) = store().await;
    store.create(&campaign("c_pages")).await.unwrap();

    // Shard 3: a first page, then its last.
    counter.reset();
    assert_eq!(store.record_page("c_pages", 3, None, Some("user-5"), &counts(5, 8, 2)).await.unwrap(), Some(0));
    assert_eq!(counter.count("DynamoDB", &[]), 1, "one UpdateItem");
    assert_eq!(store.record_page("c_pages", 3, None, Some("user-5"), &counts(5, 8, 2)).await.unwrap(), None);
    let read = store.get("c_pages").await.unwrap().unwrap();
    assert_eq!((read.counters.clone(), read.shards_done), (counts(5, 8, 2), 0), "the repeat added nothing");

    assert_eq!(store.record_page("c_pages", 3, Some("user-5"), None, &counts(2, 4, 0)).await.unwrap(), Some(1));
    assert_eq!(store.record_page("c_pages", 3, Some("user-5"), None, &counts(2, 4, 0)).await.unwrap(), None);
    // Neither the start nor any page of a done shard is recorded again.
    assert_eq!(store.record_page("c_pages", 3, None, None, &counts(1, 1, 0)).await.unwrap(), None);
    assert_eq!(store.record_page("c_pages", 3, Some("user-9"), None, &counts(1, 1, 0)).await.unwrap(), None);

    // Shard 4: empty, done at once and counting nothing; shard 5 started elsewhere.
    assert_eq!(store.record_page("c_pages", 4, None, None, &CampaignCounters::default()).await.unwrap(), Some(2));
    assert_eq!(store.record_page("c_pages", 5, Some("user-1"), None, &counts(1, 1, 0)).await.unwrap(), None);
    assert_eq!(store.record_page("c_pages", 15, None, Some("u"), &counts(1, 0, 0)).await.unwrap(), Some(2));

    let read = store.get("c_pages").await.unwrap().unwrap();
    assert_eq!(read.counters, counts(8, 12, 2));
    assert_eq!(read.shards_done, 2);
    assert_eq!((read.state, &read.name), (CampaignState::Scheduled, &campaign("c_pages").name));
    assert_eq!(store.record_page("c_unknown", 0, None, None, &counts(1, 1, 1)).await.unwrap(), None);
    assert_eq!(store.get("c_unknown").await.unwrap(), None);
}

#[tokio::test]
async fn every_shard_done_makes_sixteen() {
    let (store, _, _, _) = store().await;
    store.create(&campaign("c_all")).await.unwrap();
    let mut last = None;
    for shard in 0..16 {
        last = store.record_page("c_all", shard, None, None, &counts(1, 1, 0)).await.unwrap();
    }
    assert_eq!(last, Some(16));
    let read = store.get("c_all").await.unwrap().unwrap();
    assert_eq!((read.shards_done, read.counters.targeted), (16, 16));
}

#[tokio::test]
async fn add_counts_adds_the_counters_given_and_nothing_for_zero() {
    let (store, _, _, counter) = store().await;
    store.create(&campaign("c_counts")).await.unwrap();
    let outcome = CampaignCounters { sent: 3, failed: 1, skipped_opted_out: 2, ..Default::default() };
    store.add_counts("c_counts", &outcome).await.unwrap();
    store
        .add_counts("c_counts", &CampaignCounters { sent: 1, opened: 2, clicked: 1, ..Default::default() })
        .await
        .unwrap();
    let read = store.get("c_counts").await.unwrap().unwrap();
    assert_eq!(
        read.counters,
        CampaignCounters { sent: 4, failed: 1, skipped_opted_out: 2, opened: 2, clicked: 1, ..Default::default() }
    );

    counter.reset();
    store.add_counts("c_counts", &CampaignCounters::default()).await.unwrap();
    assert_eq!(counter.count("DynamoDB", &[]), 0, "no request for nothing to add");

    // Counts for a campaign that is not there are dropped, not written as a stray item.
    store.add_counts("c_unknown", &outcome).await.unwrap();
    assert_eq!(store.get("c_unknown").await.unwrap(), None);
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
        .sqs
        .create_queue()
        .queue_name(unique("dispatch"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let queue = SqsDispatchQueue::new(clients.sqs.clone(), &queue_url);
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
        receive_all(&clients.sqs, &queue_url, 1).await.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    received.sort_by_key(|p| p.shard);
    assert_eq!(received, pages);

    // A delayed page waits; a delay over SQS's 15 minutes is sent at the most.
    queue.dispatch(&pages[..1], Duration::from_secs(2)).await.unwrap();
    queue.dispatch(&pages[1..2], Duration::from_secs(3600)).await.unwrap();
    assert!(receive_all(&clients.sqs, &queue_url, 0).await.is_empty(), "delayed pages are not visible yet");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let bodies = receive_all(&clients.sqs, &queue_url, 1).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(serde_json::from_str::<DispatchPage>(&bodies[0]).unwrap(), pages[0]);
}
