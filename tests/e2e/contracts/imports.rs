//! `ImportJobStore`, `ImportFiles` and `ImportQueue`: jobs created once, saved only from the
//! checkpoint their runner read, listed newest first by opaque cursors; files read from an
//! offset and joined in key order; continuation messages delivered by job id.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use herald_aws::{DynamoImportJobStore, S3ImportFiles, SqsImportQueue};
use herald_core::{
    imports::{
        ImportFiles, ImportJob, ImportJobStore, ImportQueue, ImportState, Resume,
        memory::{MemoryFiles, MemoryImportJobs, MemoryImportQueue},
    },
    store::StoreError,
};
use tokio::io::AsyncReadExt;

use super::{Inbox, SqsInbox};

contract!(import_job_store: memory_jobs, aws_jobs;
    creating_a_job_twice_keeps_the_first,
    getting_an_unknown_job_is_none,
    saving_a_job_records_its_progress,
    saving_a_job_with_a_stale_checkpoint_is_a_conflict,
    saving_a_job_never_created_is_a_conflict,
    list_pages_through_the_jobs_newest_first,
    list_orders_jobs_by_their_start_to_the_microsecond,
    list_of_exactly_a_page_has_no_next_page,
    list_of_no_jobs_is_empty,
    list_of_zero_jobs_is_an_empty_last_page,
    list_from_a_cursor_it_did_not_make_fails,
);

contract!(import_files: memory_files, aws_files;
    read_from_streams_the_object_from_an_offset,
    read_from_at_or_past_the_end_reads_nothing,
    read_from_a_missing_object_is_none,
    put_writes_the_object_whole,
    concatenate_joins_the_parts_in_key_order_after_the_head_and_deletes_them,
    concatenate_with_nothing_under_the_prefix_leaves_the_joined_object_as_it_is,
);

contract!(import_queue: memory_queue, aws_queue;
    each_continued_job_is_received_once_by_its_id,
);

async fn memory_jobs() -> Box<dyn ImportJobStore> {
    Box::new(MemoryImportJobs::default())
}

async fn aws_jobs() -> Box<dyn ImportJobStore> {
    let (clients, tables) = super::moto_tables(&["JobsTable"]).await;
    Box::new(DynamoImportJobStore::new(clients.dynamodb(), &tables["JobsTable"]))
}

/// The files port and the bucket it reads (which exists).
struct Files {
    files: Box<dyn ImportFiles>,
    bucket: String,
}

async fn memory_files() -> Box<Files> {
    Box::new(Files { files: Box::new(MemoryFiles::default()), bucket: "imports".into() })
}

async fn aws_files() -> Box<Files> {
    let clients = super::moto().await;
    let bucket = herald_e2e::tables::unique("imports");
    clients.s3().create_bucket().bucket(&bucket).send().await.expect("bucket");
    Box::new(Files { files: Box::new(S3ImportFiles::new(clients.s3())), bucket })
}

struct Continued {
    queue: Box<dyn ImportQueue>,
    inbox: Box<dyn Inbox<String>>,
}

struct MemoryContinued(Arc<MemoryImportQueue>);

#[async_trait::async_trait]
impl Inbox<String> for MemoryContinued {
    async fn take(&self, _expected: usize) -> Vec<String> {
        std::mem::take(&mut *self.0.0.lock().unwrap())
    }
}

async fn memory_queue() -> Box<Continued> {
    let queue = Arc::new(MemoryImportQueue::default());
    Box::new(Continued { queue: Box::new(ArcQueue(queue.clone())), inbox: Box::new(MemoryContinued(queue)) })
}

/// The shared double as the port.
struct ArcQueue(Arc<MemoryImportQueue>);

#[async_trait::async_trait]
impl ImportQueue for ArcQueue {
    async fn continue_job(&self, job_id: &str) -> Result<(), StoreError> {
        self.0.continue_job(job_id).await
    }
}

async fn aws_queue() -> Box<Continued> {
    let clients = super::moto().await;
    let queue_url = super::sqs_queue(&clients, "importer").await;
    let parse = |body: &str| {
        let message: serde_json::Value = serde_json::from_str(body).expect("JSON");
        message["continue_job"].as_str().expect("a job id").to_owned()
    };
    Box::new(Continued {
        queue: Box::new(SqsImportQueue::new(clients.sqs(), &queue_url)),
        inbox: Box::new(SqsInbox { sqs: clients.sqs(), queue_url, parse }),
    })
}

pub(crate) fn job(job_id: &str, started_at: DateTime<Utc>) -> ImportJob {
    ImportJob {
        job_id: job_id.into(),
        bucket: "imports".into(),
        key: format!("incoming/{job_id}.csv"),
        state: ImportState::Running,
        format: Some("csv".into()),
        gzip: false,
        bytes_total: 1000,
        bytes_done: 0,
        rows_read: 0,
        imported: 0,
        unchanged: 0,
        rejected: 0,
        unknown_columns: Vec::new(),
        errors_key: None,
        failure: None,
        started_at,
        updated_at: started_at,
        finished_at: None,
        resume: Resume::default(),
    }
}

pub(crate) fn started(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::minutes(minute) + Duration::microseconds(123)
}

async fn creating_a_job_twice_keeps_the_first(store: &dyn ImportJobStore) {
    let first = job("j1", started(0));
    let second = ImportJob { key: "incoming/other.csv".into(), ..job("j1", started(1)) };

    assert!(store.create(&first).await.unwrap());
    assert!(!store.create(&second).await.unwrap());

    assert_eq!(store.get("j1").await.unwrap(), Some(first));
}

async fn getting_an_unknown_job_is_none(store: &dyn ImportJobStore) {
    assert_eq!(store.get("nope").await.unwrap(), None);
}

async fn saving_a_job_records_its_progress(store: &dyn ImportJobStore) {
    let created = job("j1", started(0));
    store.create(&created).await.unwrap();
    let progressed = ImportJob {
        state: ImportState::Done,
        rows_read: 10,
        imported: 8,
        rejected: 2,
        unknown_columns: vec!["shoe_size".into()],
        errors_key: Some("errors/j1.csv".into()),
        finished_at: Some(started(5)),
        resume: Resume {
            offset: 120,
            line: 11,
            csv_header: Some(vec!["user_id".into(), "email".into()]),
            checkpoint: 1,
            invocations: 1,
        },
        ..created
    };

    store.save(&progressed, 0).await.unwrap();

    assert_eq!(store.get("j1").await.unwrap(), Some(progressed));
}

async fn saving_a_job_with_a_stale_checkpoint_is_a_conflict(store: &dyn ImportJobStore) {
    let created = job("j1", started(0));
    store.create(&created).await.unwrap();
    let first = ImportJob { rows_read: 5, resume: Resume { checkpoint: 1, ..Resume::default() }, ..created.clone() };
    let late = ImportJob { rows_read: 3, resume: Resume { checkpoint: 1, ..Resume::default() }, ..created };
    store.save(&first, 0).await.unwrap();

    let result = store.save(&late, 0).await;

    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert_eq!(store.get("j1").await.unwrap(), Some(first));
}

async fn saving_a_job_never_created_is_a_conflict(store: &dyn ImportJobStore) {
    let result = store.save(&job("ghost", started(0)), 0).await;

    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert_eq!(store.get("ghost").await.unwrap(), None);
}

async fn list_pages_through_the_jobs_newest_first(store: &dyn ImportJobStore) {
    // Created out of order.
    for (id, minute) in [("j2", 2), ("j0", 0), ("j4", 4), ("j1", 1), ("j3", 3)] {
        store.create(&job(id, started(minute))).await.unwrap();
    }

    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(2, cursor.as_deref()).await.unwrap();
        pages.push(page.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>());
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages.len() < 10, "the pages never end: {pages:?}");
    }

    assert_eq!(pages, [vec!["j4", "j3"], vec!["j2", "j1"], vec!["j0"]]);
}

async fn list_orders_jobs_by_their_start_to_the_microsecond(store: &dyn ImportJobStore) {
    // A later whole second must sort after fractions of the second before it.
    let base = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    store.create(&job("a", base + Duration::microseconds(999_999))).await.unwrap();
    store.create(&job("b", base + Duration::seconds(1))).await.unwrap();
    store.create(&job("c", base + Duration::microseconds(5))).await.unwrap();

    let page = store.list(10, None).await.unwrap();

    assert_eq!(page.jobs.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(), ["b", "a", "c"]);
    assert_eq!(page.next, None);
}

async fn list_of_exactly_a_page_has_no_next_page(store: &dyn ImportJobStore) {
    store.create(&job("j0", started(0))).await.unwrap();
    store.create(&job("j1", started(1))).await.unwrap();

    let page = store.list(2, None).await.unwrap();

    assert_eq!(page.jobs, [job("j1", started(1)), job("j0", started(0))]);
    assert_eq!(page.next, None);
}

async fn list_of_no_jobs_is_empty(store: &dyn ImportJobStore) {
    let page = store.list(20, None).await.unwrap();

    assert_eq!(page.jobs, []);
    assert_eq!(page.next, None);
}

async fn list_of_zero_jobs_is_an_empty_last_page(store: &dyn ImportJobStore) {
    store.create(&job("j0", started(0))).await.unwrap();

    let page = store.list(0, None).await.unwrap();

    assert_eq!(page.jobs, []);
    assert_eq!(page.next, None);
}

async fn list_from_a_cursor_it_did_not_make_fails(store: &dyn ImportJobStore) {
    store.create(&job("j0", started(0))).await.unwrap();

    for cursor in ["not a cursor!", "%%%"] {
        let result = store.list(10, Some(cursor)).await;
        assert!(matches!(result, Err(StoreError::Fatal(_))), "{cursor:?}: {result:?}");
    }
}

async fn read_all(files: &Files, key: &str, from: u64) -> Option<Vec<u8>> {
    let mut reader = files.files.read_from(&files.bucket, key, from).await.expect("read_from")?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await.expect("the stream reads");
    Some(bytes)
}

async fn put(files: &Files, key: &str, body: &[u8]) {
    files.files.put(&files.bucket, key, body.to_vec()).await.unwrap();
}

async fn read_from_streams_the_object_from_an_offset(files: &Files) {
    put(files, "incoming/users.csv", b"0123456789").await;

    assert_eq!(read_all(files, "incoming/users.csv", 0).await.unwrap(), b"0123456789");
    assert_eq!(read_all(files, "incoming/users.csv", 4).await.unwrap(), b"456789");
    assert_eq!(read_all(files, "incoming/users.csv", 9).await.unwrap(), b"9");
}

async fn read_from_at_or_past_the_end_reads_nothing(files: &Files) {
    put(files, "incoming/users.csv", b"0123456789").await;

    assert_eq!(read_all(files, "incoming/users.csv", 10).await.unwrap(), b"");
    assert_eq!(read_all(files, "incoming/users.csv", 500).await.unwrap(), b"");
}

async fn read_from_a_missing_object_is_none(files: &Files) {
    assert!(files.files.read_from(&files.bucket, "incoming/gone.csv", 0).await.unwrap().is_none());
    assert!(files.files.read_from(&files.bucket, "incoming/gone.csv", 10).await.unwrap().is_none());
}

async fn put_writes_the_object_whole(files: &Files) {
    put(files, "errors/job/0001", b"first").await;
    put(files, "errors/job/0001", b"line,reason\n").await;

    assert_eq!(read_all(files, "errors/job/0001", 0).await.unwrap(), b"line,reason\n");
}

async fn concatenate_joins_the_parts_in_key_order_after_the_head_and_deletes_them(files: &Files) {
    for (key, body) in [("parts/j1/0002", "3,c\n"), ("parts/j1/0001", "2,b\n"), ("parts/j1/0010", "9,z\n")] {
        put(files, key, body.as_bytes()).await;
    }
    put(files, "parts/j10/0001", b"another job\n").await;

    files.files.concatenate(&files.bucket, "parts/j1/", b"line,reason\n".to_vec(), "errors/j1.csv").await.unwrap();

    assert_eq!(read_all(files, "errors/j1.csv", 0).await.unwrap(), b"line,reason\n2,b\n3,c\n9,z\n");
    for part in ["parts/j1/0001", "parts/j1/0002", "parts/j1/0010"] {
        assert_eq!(read_all(files, part, 0).await, None, "{part} is deleted");
    }
    assert_eq!(read_all(files, "parts/j10/0001", 0).await.unwrap(), b"another job\n");
}

async fn concatenate_with_nothing_under_the_prefix_leaves_the_joined_object_as_it_is(files: &Files) {
    put(files, "errors/j1.csv", b"line,reason\n7,bad email\n").await;

    files.files.concatenate(&files.bucket, "parts/j1/", b"line,reason\n".to_vec(), "errors/j1.csv").await.unwrap();

    assert_eq!(read_all(files, "errors/j1.csv", 0).await.unwrap(), b"line,reason\n7,bad email\n");
}

async fn each_continued_job_is_received_once_by_its_id(subject: &Continued) {
    subject.queue.continue_job("job-1").await.unwrap();
    subject.queue.continue_job("job-2").await.unwrap();

    let mut received = subject.inbox.take(2).await;
    received.sort();

    assert_eq!(received, ["job-1", "job-2"]);
    assert!(subject.inbox.take(0).await.is_empty(), "each message once");
}
