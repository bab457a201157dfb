//! The jobs table: imports and campaigns, one item each under `job_id`, with `kind` and
//! `started` as the keys of the `by_kind` index that lists each kind newest first.

use aws_sdk_dynamodb::{Client, operation::put_item::PutItemError, types::AttributeValue};
use chrono::{DateTime, Utc};
use herald_core::store::StoreError;

use crate::{
    dynamo::{Item, s},
    errors::unavailable,
};

/// The index's sort key: the start time with fixed-width fractions, so that the text
/// orders as the time does, and the id to keep jobs started at once apart.
pub(crate) fn started_key(at: DateTime<Utc>, job_id: &str) -> String {
    format!("{}#{}", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"), job_id)
}

/// Puts a new job; false (and nothing written) if one with its id exists.
pub(crate) async fn put_new(client: &Client, table: &str, item: Item) -> Result<bool, StoreError> {
    let result = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(job_id)")
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) => match e.into_service_error() {
            PutItemError::ConditionalCheckFailedException(_) => Ok(false),
            other => Err(unavailable(other)),
        },
    }
}

/// The job `job_id` if it is of `kind` (the id of a job of another kind names none).
pub(crate) async fn get(client: &Client, table: &str, job_id: &str, kind: &str) -> Result<Option<Item>, StoreError> {
    let output = client
        .get_item()
        .table_name(table)
        .key("job_id", s(job_id))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    Ok(output.item.filter(|item| matches!(item.get("kind"), Some(AttributeValue::S(k)) if k == kind)))
}
