//! Bulk import on the local stack: a file dropped in the imports bucket reaches the
//! importer through the bucket's notification and its queue, as in AWS.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use herald_aws::{
    Clients, DynamoImportJobStore, DynamoProfileStore, EventBridgePublisher, S3ImportFiles, SqsImportQueue,
    local_sdk_config,
};
use herald_core::{
    imports::{DroppedFile, ImportJob, ImportJobStore, ImportJobsPage, ImportService, job_id_for},
    store::StoreError,
};
use herald_e2e::{Api, aws_endpoint, start_stack};
use herald_local::LocalStack;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

struct Imports {
    stack: LocalStack,
    api: Api,
    clients: Clients,
    bucket: String,
}

async fn imports() -> Imports {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let clients = Clients::new(&local_sdk_config(&aws_endpoint()).await);
    let bucket = stack.physical_names().get("ImportsBucket").expect("the template declares ImportsBucket").clone();
    Imports { stack, api, clients, bucket }
}

impl Imports {
    async fn drop_file(&self, key: &str, body: impl Into<Vec<u8>>) {
        let body = body.into();
        self.clients.s3().put_object().bucket(&self.bucket).key(key).body(body.into()).send().await.unwrap();
    }

    /// Waits for the newest job of `key` to finish, and returns it as the API shows it.
    async fn finished(&self, key: &str, jobs_before: usize) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = self.api.get("/v1/imports?limit=100").await;
            assert_eq!(answer.status, 200, "{:?}", answer.body);
            let jobs: Vec<Value> =
                answer.body["imports"].as_array().unwrap().iter().filter(|j| j["key"] == key).cloned().collect();
            if jobs.len() > jobs_before && jobs[0]["state"] != "running" {
                return jobs[0].clone();
            }
            assert!(Instant::now() < deadline, "the import of {key} did not finish: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn import(&self, key: &str, body: impl Into<Vec<u8>>) -> Value {
        let before = self.jobs_of(key).await;
        self.drop_file(key, body).await;
        self.finished(key, before).await
    }

    async fn jobs_of(&self, key: &str) -> usize {
        let answer = self.api.get("/v1/imports?limit=100").await;
        answer.body["imports"].as_array().unwrap().iter().filter(|j| j["key"] == key).count()
    }

    async fn user(&self, user_id: &str) -> Value {
        let answer = self.api.get(&format!("/v1/users/{user_id}")).await;
        assert_eq!(answer.status, 200, "{user_id}: {:?}", answer.body);
        answer.body
    }

    async fn object(&self, key: &str) -> String {
        let object = self.clients.s3().get_object().bucket(&self.bucket).key(key).send().await.unwrap();
        String::from_utf8(object.body.collect().await.unwrap().to_vec()).unwrap()
    }
}

const MESSY_CSV: &str = "\u{feff}user_id,email,phone,attr.tags,favourite_colour\r\n\
    u1,a@example.com,+14155552671,vip;early,blue\r\n\
    \r\n\
    u2,\"b@example.com\",,\"one, two\",red\r\n\
    u3,not-an-email,,,green\r\n\
    \"u4\",d@example.com,,\"multi\r\nline\",\r\n\
    u1,,+33612345678,,\r\n\
    u5,e@example.com,12345,,\r\n";

#[tokio::test]
async fn a_messy_csv_is_imported_and_its_bad_rows_are_reported_by_line() {
    let h = imports().await;
    let job = h.import("imports/crm/users.csv", MESSY_CSV).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        (job["rows_read"].as_u64(), job["imported"].as_u64(), job["rejected"].as_u64()),
        (Some(6), Some(4), Some(2))
    );
    assert_eq!(job["unknown_columns"], json!(["favourite_colour"]));
    assert_eq!(job["errors_key"], "imports/crm/errors/users.csv");
    assert_eq!(job["progress"], 1.0);

    let u1 = h.user("u1").await;
    assert_eq!(u1["email"], "a@example.com", "an empty cell keeps the earlier row's value");
    assert_eq!(u1["phone"], "+33612345678", "the last row wins the fields it gives");
    assert_eq!(u1["attributes"]["tags"], json!(["early", "vip"]));
    assert_eq!(h.user("u2").await["attributes"]["tags"], json!(["one, two"]));
    assert_eq!(h.user("u4").await["attributes"]["tags"], json!(["multi\r\nline"]));

    let errors = h.object("imports/crm/errors/users.csv").await;
    let rows: Vec<&str> = errors.lines().collect();
    assert_eq!(rows[0], "line,reason");
    assert!(rows[1].starts_with("5,") && rows[1].contains("email"), "{errors}");
    assert!(rows[2].starts_with("9,") && rows[2].contains("phone"), "{errors}");
    assert_eq!(rows.len(), 3, "{errors}");
    assert_eq!(h.api.get("/v1/users/u3").await.status, 404);
    h.stack.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_compressed_json_lines_file_is_imported() {
    let h = imports().await;
    let lines = "{\"user_id\":\"j1\",\"email\":\"j1@example.com\",\"timezone\":\"Europe/Paris\"}\n\
                 {\"user_id\":\"j2\",\"attributes\":{\"plan\":[\"pro\"]}}\n";
    let job = h.import("imports/users.jsonl.gz", gzip(lines.as_bytes())).await;
    assert_eq!(
        (job["state"].as_str(), job["format"].as_str(), job["gzip"].as_bool()),
        (Some("done"), Some("jsonl"), Some(true))
    );
    assert_eq!(job["imported"], 2);
    assert_eq!(h.user("j1").await["timezone"], "Europe/Paris");
    assert_eq!(h.user("j2").await["attributes"]["plan"], json!(["pro"]));
    h.stack.stop().await;
}

#[tokio::test]
async fn a_pinpoint_endpoint_export_migrates_its_users() {
    let h = imports().await;
    let export = std::fs::read(herald_local::repo_root().join("tests/fixtures/pinpoint-export.json")).unwrap();
    let job = h.import("imports/pinpoint/export.json", export).await;
    assert_eq!((job["state"].as_str(), job["format"].as_str()), (Some("done"), Some("pinpoint")), "{job}");
    let user = h.user("pinpoint-user-1").await;
    assert_eq!(user["email"], "ana@example.com");
    assert_eq!(user["phone"], "+14155552671");
    assert_eq!(user["device_tokens"].as_array().unwrap().len(), 2, "{user}");
    assert_eq!(user["attributes"]["plan"], json!(["pro"]));
    h.stack.stop().await;
}

#[tokio::test]
async fn importing_the_same_file_again_changes_no_profile() {
    let h = imports().await;
    let csv = "user_id,email,attr.plan\nr1,r1@example.com,pro\nr2,r2@example.com,free\n";
    h.import("imports/again.csv", csv).await;
    let again = h.import("imports/again.csv", csv).await;
    assert_eq!((again["imported"].as_u64(), again["unchanged"].as_u64()), (Some(2), Some(2)), "{again}");
    assert_eq!(h.user("r1").await["version"], 1);
    h.stack.stop().await;
}

#[tokio::test]
async fn a_file_that_is_not_an_import_file_fails_its_job_with_the_reason() {
    let h = imports().await;
    let job = h.import("imports/report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n".to_vec()).await;
    assert_eq!(job["state"], "failed");
    assert!(job["failure"].as_str().unwrap().contains("PDF"), "{job}");
    h.stack.stop().await;
}

#[tokio::test]
async fn imported_profiles_enter_their_dynamic_segments() {
    let h = imports().await;
    let rule = json!({"attribute": "plan", "any_of": ["pro"]});
    let answer = h
        .api
        .post("/v1/segments", &json!({"segment_id": "pros", "name": "pros", "kind": "dynamic", "rule": rule}))
        .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    h.import("imports/plans.csv", "user_id,attr.plan\ns1,pro\ns2,free\ns3,pro\n").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = h.api.get("/v1/segments/pros/members?limit=100").await;
        let mut members: Vec<String> = serde_json::from_value(answer.body["user_ids"].clone()).unwrap_or_default();
        members.sort();
        if members == ["s1", "s3"] {
            break;
        }
        assert!(Instant::now() < deadline, "members: {members:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.stack.stop().await;
}

/// The jobs table, failing the `fail_at`-th save: an importer that dies after writing a
/// slice's profiles, before recording its checkpoint.
struct DyingJobs {
    inner: DynamoImportJobStore,
    saves: AtomicUsize,
    fail_at: usize,
}

#[async_trait::async_trait]
impl ImportJobStore for DyingJobs {
    async fn create(&self, job: &ImportJob) -> Result<bool, StoreError> {
        self.inner.create(job).await
    }
    async fn get(&self, job_id: &str) -> Result<Option<ImportJob>, StoreError> {
        self.inner.get(job_id).await
    }
    async fn save(&self, job: &ImportJob, expected: u64) -> Result<(), StoreError> {
        if self.saves.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(StoreError::Transient("the invocation died".into()));
        }
        self.inner.save(job, expected).await
    }
    async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<ImportJobsPage, StoreError> {
        self.inner.list(limit, cursor).await
    }
}

#[tokio::test]
async fn an_import_that_dies_mid_file_is_resumed_by_the_stack_with_no_duplicate_and_no_loss() {
    let h = imports().await;
    let names = h.stack.physical_names();
    // A bucket without a notification: only this test's importer reads the file at first.
    let bucket = format!("{}-side", h.bucket);
    h.clients.s3().create_bucket().bucket(&bucket).send().await.unwrap();
    let mut csv = String::from("user_id,email\n");
    for i in 0..250 {
        csv.push_str(&format!("c{i:03},c{i}@example.com\n"));
    }
    csv.push_str("bad,not-an-email\n");
    let key = "imports/crash.csv";
    h.clients.s3().put_object().bucket(&bucket).key(key).body(csv.clone().into_bytes().into()).send().await.unwrap();

    let jobs_table = names["JobsTable"].clone();
    let mut dying = ImportService::new(
        Arc::new(DynamoProfileStore::new(h.clients.dynamodb(), names["ProfilesTable"].clone())),
        Arc::new(DyingJobs {
            inner: DynamoImportJobStore::new(h.clients.dynamodb(), jobs_table.clone()),
            saves: AtomicUsize::new(0),
            fail_at: 2,
        }),
        Arc::new(S3ImportFiles::new(h.clients.s3())),
        Arc::new(SqsImportQueue::new(h.clients.sqs(), h.stack.queue_url("ImporterQueue").unwrap())),
        Arc::new(EventBridgePublisher::new(h.clients.eventbridge(), names["EventBus"].clone())),
    );
    dying.options.users_per_slice = 100;
    let file = DroppedFile { bucket: bucket.clone(), key: key.into(), size: csv.len() as u64, sequencer: "01".into() };
    let outcome = dying.start(&file, Instant::now() + Duration::from_secs(600)).await;
    assert!(outcome.is_err(), "the second checkpoint fails: {outcome:?}");

    // SQS delivers the message again; here, as the continuation the stack's importer reads.
    let job_id = job_id_for(&file);
    h.clients
        .sqs()
        .send_message()
        .queue_url(h.stack.queue_url("ImporterQueue").unwrap())
        .message_body(json!({"continue_job": job_id}).to_string())
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let job = loop {
        let answer = h.api.get(&format!("/v1/imports/{job_id}")).await;
        if answer.body["state"] == "done" {
            break answer.body;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {:?}", answer.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (job["rows_read"].as_u64(), job["imported"].as_u64(), job["rejected"].as_u64()),
        (Some(251), Some(250), Some(1))
    );
    for i in [0, 99, 100, 199, 200, 249] {
        let user = h.user(&format!("c{i:03}")).await;
        assert_eq!(user["version"], 1, "written once: {user}");
    }
    let errors = h.clients.s3().get_object().bucket(&bucket).key("imports/errors/crash.csv").send().await.unwrap();
    let errors = String::from_utf8(errors.body.collect().await.unwrap().to_vec()).unwrap();
    assert_eq!(errors.lines().count(), 2, "{errors}");
    assert!(errors.contains("252,"), "{errors}");
    h.stack.stop().await;
}
