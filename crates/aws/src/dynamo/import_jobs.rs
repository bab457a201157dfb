//! The jobs table: one item per import job, keyed by `job_id`. Each item also carries
//! `kind = "import"` and `started = "<started_at>#<job_id>"`, the keys of the `by_kind`
//! index, so that the jobs list newest first with one Query. A save is fenced on the
//! job's `resume.checkpoint`.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, operation::put_item::PutItemError, types::AttributeValue};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use herald_core::{
    imports::{ImportJob, ImportJobStore, ImportJobsPage},
    store::StoreError,
};
use serde::{Deserialize, Serialize};

use crate::{
    dynamo::{Item, jobs, n, s},
    errors::unavailable,
};

/// The index that lists jobs by kind, newest first.
const INDEX: &str = "by_kind";
const KIND: &str = "import";

#[derive(Clone, Debug)]
pub struct DynamoImportJobStore {
    client: Client,
    table: String,
}

/// Where a page of the list starts: the key (table and index) of the last job shown.
#[derive(Serialize, Deserialize)]
struct Cursor {
    job_id: String,
    kind: String,
    started: String,
}

/// Whether `cursor` could have come from `list` (the API turns a bad one into a 400
/// before calling `list`, which reports it as a store failure).
pub fn is_valid_cursor(cursor: &str) -> bool {
    decode_cursor(cursor).is_some()
}

fn decode_cursor(cursor: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).expect("a cursor serializes"))
}

fn item(job: &ImportJob) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(job).map_err(|e| StoreError::Fatal(format!("unwritable import job: {e}")))?;
    item.insert("kind".into(), s(KIND));
    item.insert("started".into(), s(jobs::started_key(job.started_at, &job.job_id)));
    Ok(item)
}

fn job(mut item: Item) -> Result<ImportJob, StoreError> {
    item.remove("kind");
    item.remove("started");
    serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable import job: {e}")))
}

fn text(item: &Item, name: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(StoreError::Fatal(format!("an import job item without {name}"))),
    }
}

impl DynamoImportJobStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl ImportJobStore for DynamoImportJobStore {
    async fn create(&self, job: &ImportJob) -> Result<bool, StoreError> {
        jobs::put_new(&self.client, &self.table, item(job)?).await
    }

    async fn get(&self, job_id: &str) -> Result<Option<ImportJob>, StoreError> {
        jobs::get(&self.client, &self.table, job_id, KIND).await?.map(job).transpose()
    }

    async fn save(&self, job: &ImportJob, expected_checkpoint: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(job)?))
            .condition_expression("#resume.#checkpoint = :expected")
            .expression_attribute_names("#resume", "resume")
            .expression_attribute_names("#checkpoint", "checkpoint")
            .expression_attribute_values(":expected", n(expected_checkpoint))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                // Another runner saved since this one read (or the job is gone).
                PutItemError::ConditionalCheckFailedException(_) => Err(StoreError::Conflict),
                other => Err(unavailable(other)),
            },
        }
    }

    async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<ImportJobsPage, StoreError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(ImportJobsPage::default());
        }
        let mut start = match cursor {
            Some(cursor) => {
                let cursor = decode_cursor(cursor).ok_or_else(|| StoreError::Fatal("bad cursor".into()))?;
                Some(Item::from([
                    ("job_id".to_owned(), s(cursor.job_id)),
                    ("kind".to_owned(), s(cursor.kind)),
                    ("started".to_owned(), s(cursor.started)),
                ]))
            }
            None => None,
        };
        // One job more than asked tells whether there is a next page, so that the last
        // page says so instead of pointing at an empty one.
        let wanted = limit.saturating_add(1);
        let mut items: Vec<Item> = Vec::new();
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX)
                .key_condition_expression("#kind = :kind")
                .expression_attribute_names("#kind", "kind")
                .expression_attribute_values(":kind", s(KIND))
                .scan_index_forward(false)
                .limit(i32::try_from(wanted - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            // A page also ends at 1 MB: go on until the extra job is read or none is left.
            if items.len() >= wanted || start.is_none() {
                break;
            }
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            let last = items.last().expect("limit > 0");
            let cursor =
                Cursor { job_id: text(last, "job_id")?, kind: text(last, "kind")?, started: text(last, "started")? };
            Some(encode_cursor(&cursor))
        } else {
            None
        };
        let jobs = items.into_iter().map(job).collect::<Result<_, _>>()?;
        Ok(ImportJobsPage { jobs, next })
    }
}
