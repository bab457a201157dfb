//! The adapters of bulk import against moto, where they go beyond their ports' contracts
//! (`contracts::imports`, `contracts::profiles`): how many transactions and uploads they
//! send, objects as the bucket holds them, cursors, the wire format of the importer's
//! queue, imports and campaigns sharing the jobs table. Each test makes its own table,
//! bucket or queue, so the suite does not depend on the template.

use crate::contracts::imports::{job, started};
use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::{BillingMode, KeyType};
use herald_aws::{
    Clients, DynamoImportJobStore, DynamoProfileStore, RequestCounter, S3ImportFiles, SqsImportQueue,
    dynamo::import_jobs::is_valid_cursor,
};
use herald_core::{
    imports::{ImportFiles, ImportJobStore, ImportQueue},
    profiles::{Profile, ProfileStore, VersionedProfile},
    store::StoreError,
};
use herald_e2e::tables::{clients, jobs_table, key, string_attribute, unique};

/// A table shaped as the template's ProfilesTable.
async fn profiles_table(clients: &Clients) -> String {
    let table = unique("profiles");
    clients
        .dynamodb()
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("user_id"))
        .key_schema(key("user_id", KeyType::Hash))
        .send()
        .await
        .expect("profiles table");
    table
}

async fn bucket(clients: &Clients) -> String {
    let bucket = unique("imports");
    clients.s3().create_bucket().bucket(&bucket).send().await.expect("bucket");
    bucket
}

async fn put_object(clients: &Clients, bucket: &str, key: &str, body: &[u8]) {
    clients.s3().put_object().bucket(bucket).key(key).body(body.to_vec().into()).send().await.expect("put object");
}

async fn object(clients: &Clients, bucket: &str, key: &str) -> Vec<u8> {
    let output = clients.s3().get_object().bucket(bucket).key(key).send().await.expect("get object");
    output.body.collect().await.expect("object body").into_bytes().to_vec()
}

async fn keys(clients: &Clients, bucket: &str) -> Vec<String> {
    let output = clients.s3().list_objects_v2().bucket(bucket).send().await.expect("list objects");
    output.contents.unwrap_or_default().into_iter().filter_map(|o| o.key).collect()
}

fn profile(user_id: &str, version: u64) -> Profile {
    Profile { version, email: Some(format!("{user_id}@example.com")), ..Profile::new(user_id) }
}

fn write(user_id: &str, version: u64, expected_version: u64) -> VersionedProfile {
    VersionedProfile { profile: profile(user_id, version), expected_version }
}

fn transactions(counter: &RequestCounter) -> u64 {
    counter.count("DynamoDB", &["TransactWriteItems"])
}

#[tokio::test]
async fn save_many_with_a_stale_write_sends_the_transaction_again_without_it() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let store = DynamoProfileStore::new(clients.dynamodb(), profiles_table(&clients).await);
    store.save(&profile("existing", 1), 0, &[]).await.unwrap();
    store.save(&profile("raced", 2), 0, &[]).await.unwrap();
    counter.reset();

    let saved = store
        .save_many(&[write("existing", 2, 1), write("raced", 2, 1), write("new", 1, 0), write("other", 1, 0)])
        .await
        .unwrap();

    // What is saved is the contract's (contracts::profiles); how, the adapter's.
    assert_eq!(saved, [true, false, true, true]);
    // The cancelled transaction, then the same one without the stale write.
    assert_eq!(transactions(&counter), 2);
}

#[tokio::test]
async fn save_many_of_more_than_100_writes_uses_a_transaction_per_100() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let store = DynamoProfileStore::new(clients.dynamodb(), profiles_table(&clients).await);
    let writes: Vec<_> = (0..250).map(|i| write(&format!("u{i:03}"), 1, 0)).collect();

    let saved = store.save_many(&writes).await.unwrap();

    assert_eq!(saved, vec![true; 250]);
    assert_eq!(transactions(&counter), 3);
    let ids: Vec<String> = writes.iter().map(|w| w.profile.user_id.clone()).collect();
    assert_eq!(store.load_many(&ids).await.unwrap().len(), 250);
}

#[tokio::test]
async fn save_many_keeps_each_transaction_under_4_mb() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let store = DynamoProfileStore::new(clients.dynamodb(), profiles_table(&clients).await);
    // 15 items of 300 KB: 4.5 MB, over one transaction's 4 MB.
    let big = "x".repeat(300_000);
    let writes: Vec<_> = (0..15)
        .map(|i| {
            let mut w = write(&format!("big{i:02}"), 1, 0);
            w.profile.attributes.insert("blob".into(), BTreeSet::from([big.clone()]));
            w
        })
        .collect();

    let saved = store.save_many(&writes).await.unwrap();

    assert_eq!(saved, vec![true; 15]);
    assert_eq!(transactions(&counter), 2);
}

#[tokio::test]
async fn save_many_of_nothing_sends_nothing() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let store = DynamoProfileStore::new(clients.dynamodb(), "never-created");

    // Saving nothing is the contract's (contracts::profiles); sending no request for it, the adapter's.
    assert_eq!(store.save_many(&[]).await.unwrap(), Vec::<bool>::new());
    assert_eq!(counter.count("DynamoDB", &[]), 0);
}

#[tokio::test]
async fn save_many_into_a_missing_table_fails_for_good() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let store = DynamoProfileStore::new(clients.dynamodb(), unique("missing"));

    let result = store.save_many(&[write("u1", 1, 0)]).await;

    assert!(matches!(result, Err(StoreError::Fatal(_))), "a missing table is not worth a retry: {result:?}");
}

#[tokio::test]
async fn put_writes_the_object() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let bucket = bucket(&clients).await;
    let files = S3ImportFiles::new(clients.s3());

    files.put(&bucket, "errors/job/0001", b"line,reason\n".to_vec()).await.unwrap();

    assert_eq!(object(&clients, &bucket, "errors/job/0001").await, b"line,reason\n");
}

#[tokio::test]
async fn concatenate_joins_the_parts_in_key_order_after_the_head_and_deletes_them() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let bucket = bucket(&clients).await;
    for (key, body) in [("parts/j1/0002", "3,c\n"), ("parts/j1/0001", "2,b\n"), ("parts/j1/0010", "9,z\n")] {
        put_object(&clients, &bucket, key, body.as_bytes()).await;
    }
    put_object(&clients, &bucket, "parts/j10/0001", b"another job\n").await;
    let files = S3ImportFiles::new(clients.s3());

    files.concatenate(&bucket, "parts/j1/", b"line,reason\n".to_vec(), "errors/j1.csv").await.unwrap();

    assert_eq!(object(&clients, &bucket, "errors/j1.csv").await, b"line,reason\n2,b\n3,c\n9,z\n");
    assert_eq!(keys(&clients, &bucket).await, ["errors/j1.csv", "parts/j10/0001"]);
    assert_eq!(counter.count("S3", &["CreateMultipartUpload"]), 0);
}

#[tokio::test]
async fn concatenate_with_nothing_under_the_prefix_leaves_the_joined_object_as_it_is() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let bucket = bucket(&clients).await;
    put_object(&clients, &bucket, "errors/j1.csv", b"line,reason\n7,bad email\n").await;
    let files = S3ImportFiles::new(clients.s3());

    files.concatenate(&bucket, "parts/j1/", b"line,reason\n".to_vec(), "errors/j1.csv").await.unwrap();

    assert_eq!(object(&clients, &bucket, "errors/j1.csv").await, b"line,reason\n7,bad email\n");
    assert_eq!(keys(&clients, &bucket).await, ["errors/j1.csv"]);
}

#[tokio::test]
async fn concatenate_of_more_than_5_mib_streams_a_multipart_upload() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let bucket = bucket(&clients).await;
    // Four parts of 3 MiB: 12 MiB, more than one 8 MiB buffer.
    let parts: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 3 * 1024 * 1024]).collect();
    for (i, part) in parts.iter().enumerate() {
        put_object(&clients, &bucket, &format!("parts/big/{i:04}"), part).await;
    }
    let files = S3ImportFiles::new(clients.s3());
    counter.reset();

    files.concatenate(&bucket, "parts/big/", b"line,reason\n".to_vec(), "errors/big.csv").await.unwrap();

    let mut expected = b"line,reason\n".to_vec();
    parts.iter().for_each(|p| expected.extend_from_slice(p));
    let joined = object(&clients, &bucket, "errors/big.csv").await;
    assert_eq!(joined.len(), expected.len());
    assert!(joined == expected, "the joined object differs from head + parts");
    assert_eq!(counter.count("S3", &["CreateMultipartUpload"]), 1);
    assert_eq!(counter.count("S3", &["UploadPart"]), 2);
    assert_eq!(counter.count("S3", &["CompleteMultipartUpload"]), 1);
    assert_eq!(keys(&clients, &bucket).await, ["errors/big.csv"]);
}

#[tokio::test]
async fn the_id_of_a_campaign_in_the_same_table_names_no_import_job() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let table = jobs_table(&clients).await;
    let campaign: herald_core::campaigns::Campaign = serde_json::from_value(serde_json::json!({
        "campaign_id": "c_1", "name": "launch", "segment_id": "all", "template_id": "t", "template_version": 1,
        "channels": ["email"], "state": "dispatching",
        "created_at": "2026-11-24T10:00:00Z", "updated_at": "2026-11-24T10:00:00Z"
    }))
    .unwrap();
    let campaigns = herald_aws::DynamoCampaignStore::new(clients.dynamodb(), table.clone());
    herald_core::campaigns::CampaignStore::create(&campaigns, &campaign).await.unwrap();
    let store = DynamoImportJobStore::new(clients.dynamodb(), table);

    assert_eq!(store.get("c_1").await.unwrap(), None);
}

#[tokio::test]
async fn list_pages_through_the_jobs_with_cursors_it_can_read_back() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let store = DynamoImportJobStore::new(clients.dynamodb(), jobs_table(&clients).await);
    // Created out of order; the order of the pages is the contract's (contracts::imports).
    for (id, minute) in [("j2", 2), ("j0", 0), ("j4", 4), ("j1", 1), ("j3", 3)] {
        store.create(&job(id, started(minute))).await.unwrap();
    }

    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(2, cursor.as_deref()).await.unwrap();
        pages.push(page.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>());
        match page.next {
            Some(next) => {
                assert!(is_valid_cursor(&next), "{next}");
                cursor = Some(next);
            }
            None => break,
        }
        assert!(pages.len() < 10, "the pages never end: {pages:?}");
    }

    assert_eq!(pages, [vec!["j4", "j3"], vec!["j2", "j1"], vec!["j0"]]);
}

#[test]
fn a_cursor_that_list_did_not_make_is_invalid() {
    for cursor in ["", "not a cursor!", "eyJmb28iOjF9", "%%%"] {
        assert!(!is_valid_cursor(cursor), "{cursor:?}");
    }
}

#[tokio::test]
async fn continue_job_sends_the_job_id_as_json() {
    let counter = RequestCounter::default();
    let clients = clients(&counter).await;
    let queue_url = clients
        .sqs()
        .create_queue()
        .queue_name(unique("importer"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let queue = SqsImportQueue::new(clients.sqs(), &queue_url);

    queue.continue_job("job-1").await.unwrap();

    let output = clients
        .sqs()
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let bodies: Vec<_> = output.messages.unwrap_or_default().into_iter().filter_map(|m| m.body).collect();
    assert_eq!(bodies, [r#"{"continue_job":"job-1"}"#]);
}
