//! The imports API over real HTTP: the jobs the importer records in the stack's jobs
//! table (created here directly with the store), listed newest first a page at a time,
//! read one by one, and guarded by the `imports:read` scope.

use chrono::{DateTime, Duration, TimeZone, Utc};
use herald_aws::DynamoImportJobStore;
use herald_core::{
    imports::{ImportJob, ImportJobStore, ImportState, Resume},
    keys::Scope,
};
use herald_e2e::{Answer, Api, assert_problem, key_with, start_stack};
use herald_local::LocalStack;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn store(stack: &LocalStack) -> DynamoImportJobStore {
    DynamoImportJobStore::new(stack.clients.dynamodb(), &stack.api_config.jobs_table)
}

fn started(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, minute, 0).unwrap()
}

/// A job for the file `imports/<name>`, started at `started_at`, a quarter through.
fn job(job_id: &str, name: &str, started_at: DateTime<Utc>) -> ImportJob {
    ImportJob {
        job_id: job_id.to_owned(),
        bucket: "herald-importsbucket".into(),
        key: format!("imports/{name}"),
        state: ImportState::Running,
        format: Some("csv".into()),
        gzip: false,
        bytes_total: 4000,
        bytes_done: 1000,
        rows_read: 40,
        imported: 37,
        unchanged: 1,
        rejected: 3,
        unknown_columns: vec!["colour".into()],
        errors_key: None,
        failure: None,
        started_at,
        updated_at: started_at + Duration::seconds(30),
        finished_at: None,
        resume: Resume {
            offset: 1000,
            line: 41,
            csv_header: Some(vec!["user_id".into(), "email".into(), "colour".into()]),
            checkpoint: 4,
            invocations: 1,
        },
    }
}

async fn create(stack: &LocalStack, jobs: &[ImportJob]) {
    let store = store(stack);
    for job in jobs {
        assert!(store.create(job).await.unwrap(), "{} was created before", job.job_id);
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("{value} is not a time")).parse().unwrap()
}

fn ids(page: &Answer) -> Vec<String> {
    page.body["imports"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn jobs_are_listed_newest_first_and_read_one_by_one_without_their_checkpoint() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let empty = api.get("/v1/imports").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.body, json!({"imports": []}));

    let mut done = job("imp_done", "done.csv.gz", started(1));
    done.state = ImportState::Done;
    done.gzip = true;
    done.bytes_done = 3990;
    done.errors_key = Some("imports/errors/done.csv".into());
    done.finished_at = Some(started(2));
    let mut failed = job("imp_failed", "broken.jsonl", started(3));
    failed.state = ImportState::Failed;
    failed.format = None;
    failed.failure = Some("the file is neither CSV, JSON Lines nor a Pinpoint export".into());
    failed.finished_at = Some(started(3));
    let running = job("imp_running", "users.csv", started(5));
    create(&stack, &[done.clone(), running.clone(), failed.clone()]).await;

    let list = api.get("/v1/imports").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(ids(&list), ["imp_running", "imp_failed", "imp_done"]);
    assert!(list.body.get("next_cursor").is_none(), "one page holds them all: {}", list.body);

    let read = api.get("/v1/imports/imp_running").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let view = &read.body;
    assert_eq!(view, &list.body["imports"][0], "the list shows each job as GET does");
    for (field, value) in [
        ("job_id", json!("imp_running")),
        ("bucket", json!("herald-importsbucket")),
        ("key", json!("imports/users.csv")),
        ("state", json!("running")),
        ("format", json!("csv")),
        ("gzip", json!(false)),
        ("rows_read", json!(40)),
        ("imported", json!(37)),
        ("unchanged", json!(1)),
        ("rejected", json!(3)),
        ("bytes_done", json!(1000)),
        ("bytes_total", json!(4000)),
        ("progress", json!(0.25)),
        ("unknown_columns", json!(["colour"])),
    ] {
        assert_eq!(view[field], value, "{field} in {view}");
    }
    assert_eq!(time(&view["started_at"]), running.started_at);
    assert_eq!(time(&view["updated_at"]), running.updated_at);
    for absent in ["resume", "errors_key", "failure", "finished_at"] {
        assert!(view.get(absent).is_none(), "{absent} in {view}");
    }
    assert!(!view.to_string().contains("checkpoint"), "{view}");

    let done_view = api.get("/v1/imports/imp_done").await.body;
    assert_eq!(done_view["state"], "done");
    assert_eq!(done_view["gzip"], true);
    assert_eq!(done_view["progress"], 1.0, "a finished job is all the way through");
    assert_eq!(done_view["errors_key"], "imports/errors/done.csv");
    assert_eq!(time(&done_view["finished_at"]), started(2));
    let failed_view = api.get("/v1/imports/imp_failed").await.body;
    assert_eq!(failed_view["state"], "failed");
    assert_eq!(failed_view["failure"], failed.failure.unwrap().as_str());
    assert!(failed_view.get("format").is_none(), "{failed_view}");
    stack.stop().await;
}

#[tokio::test]
async fn an_unknown_import_is_404() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    create(&stack, &[job("imp_known", "users.csv", started(0))]).await;
    for path in ["/v1/imports/imp_unknown", "/v1/imports/imp%2Fknown", &format!("/v1/imports/{}", "x".repeat(3000))] {
        let answer = api.get(path).await;
        assert_problem(&answer, StatusCode::NOT_FOUND);
    }
    assert_eq!(api.get("/v1/imports/imp_known").await.status, StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn a_key_without_imports_read_is_403_and_one_with_it_may_read() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    create(&stack, &[job("imp_1", "users.csv", started(0))]).await;
    let profiles = api.with_key(Some(&key_with(&stack, [Scope::ProfilesRead, Scope::SegmentsRead]).await));
    assert_problem(&profiles.get("/v1/imports").await, StatusCode::FORBIDDEN);
    assert_problem(&profiles.get("/v1/imports/imp_1").await, StatusCode::FORBIDDEN);
    assert_problem(&profiles.get("/v1/imports/imp_unknown").await, StatusCode::FORBIDDEN);
    assert_problem(&api.with_key(None).get("/v1/imports").await, StatusCode::UNAUTHORIZED);

    let reader = api.with_key(Some(&key_with(&stack, [Scope::ImportsRead]).await));
    assert_eq!(reader.get("/v1/imports").await.status, StatusCode::OK);
    assert_eq!(reader.get("/v1/imports/imp_1").await.status, StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_400_naming_it() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    for limit in ["0", "101", "-1", "ten", "1.5", ""] {
        let answer = api.get(&format!("/v1/imports?limit={limit}")).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert_eq!(answer.fields_at_fault(), ["limit"], "limit={limit}");
    }
    for cursor in ["nope", "eyJ4IjoxfQ", "%7B%7D"] {
        let answer = api.get(&format!("/v1/imports?cursor={cursor}")).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert_eq!(answer.fields_at_fault(), ["cursor"], "cursor={cursor}");
    }
    let both = api.get("/v1/imports?limit=1000&cursor=nope").await;
    assert_problem(&both, StatusCode::BAD_REQUEST);
    assert_eq!(both.fields_at_fault(), ["limit", "cursor"]);
    for limit in ["1", "100"] {
        assert_eq!(api.get(&format!("/v1/imports?limit={limit}")).await.status, StatusCode::OK, "limit={limit}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn pages_follow_their_cursors_through_every_job_once_newest_first() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    // Two jobs start in the same instant: the order between them is still stable.
    let mut jobs: Vec<ImportJob> =
        (0..6).map(|i| job(&format!("imp_{i}"), &format!("file{i}.csv"), started(i.min(4)))).collect();
    jobs.reverse();
    create(&stack, &jobs).await;

    let default = api.get("/v1/imports").await;
    assert_eq!(ids(&default).len(), 6, "the default limit is 20: {}", default.body);

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/v1/imports?limit=2".to_owned();
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2, "{}", page.body);
        seen.extend(page_ids);
        match page.body.get("next_cursor").and_then(Value::as_str) {
            Some(cursor) => path = format!("/v1/imports?limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "the cursors never end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 6, "{seen:?}");
    let started_at: Vec<DateTime<Utc>> =
        seen.iter().map(|id| jobs.iter().find(|j| &j.job_id == id).unwrap().started_at).collect();
    assert!(started_at.windows(2).all(|w| w[0] >= w[1]), "newest first: {seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "each job once: {seen:?}");
    let mut newest = seen[..2].to_vec();
    newest.sort();
    assert_eq!(newest, ["imp_4", "imp_5"], "the two newest come first: {seen:?}");
    stack.stop().await;
}
