//! BatchWriteItem and BatchGetItem at the service's limits (`herald_core::limits::dynamodb`),
//! with the unprocessed
//! items retried with exponential backoff and full jitter.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest},
};
use herald_core::{
    limits::dynamodb::{BATCH_GET_KEYS, BATCH_WRITE_REQUESTS},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::{Item, s};
use crate::unavailable;
use std::collections::BTreeSet;

pub async fn put_all(client: &Client, table: &str, items: Vec<Item>, backoff: &Backoff) -> Result<(), StoreError> {
    let requests: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder().set_item(Some(item)).build().expect("an item is set");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for chunk in requests.chunks(BATCH_WRITE_REQUESTS) {
        let mut pending = chunk.to_vec();
        let mut retry = 0;
        while !pending.is_empty() {
            let output = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| StoreError::Transient(crate::describe(&e)))?;
            pending = output.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
            if !pending.is_empty() {
                if !backoff.wait(retry).await {
                    return Err(StoreError::Transient(format!("{} items stayed unprocessed", pending.len())));
                }
                retry += 1;
            }
        }
    }
    Ok(())
}

/// The items of `table` whose `key_name` is one of `keys` (a string key), in chunks of 100,
/// with unprocessed keys read again after a backoff. Missing items are simply absent.
pub async fn get_all(
    client: &Client,
    table: &str,
    key_name: &str,
    keys: &[String],
    consistent: bool,
    backoff: &Backoff,
) -> Result<Vec<Item>, StoreError> {
    // BatchGetItem refuses a request that names one key twice.
    let keys: std::collections::BTreeSet<&String> = keys.iter().collect();
    let mut items = Vec::new();
    for chunk in keys.into_iter().collect::<Vec<_>>().chunks(BATCH_GET_KEYS) {
        let request =
            chunk.iter().map(|k| HashMap::from([(key_name.to_owned(), AttributeValue::S((*k).clone()))])).collect();
        items.extend(get_chunk(client, table, request, consistent, backoff).await?);
    }
    Ok(items)
}

/// One BatchGetItem of at most 100 `keys`, unprocessed keys read again after a backoff.
pub(crate) async fn get_chunk(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    consistent: bool,
    backoff: &Backoff,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut pending =
        Some(KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(consistent).build().expect("keys"));
    let mut retry = 0;
    while let Some(keys) = pending.take() {
        let output = client.batch_get_item().request_items(table, keys).send().await.map_err(crate::unavailable)?;
        items.extend(output.responses.and_then(|mut r| r.remove(table)).unwrap_or_default());
        pending = output.unprocessed_keys.and_then(|mut u| u.remove(table)).filter(|k| !k.keys.is_empty());
        if pending.is_some() {
            if !backoff.wait(retry).await {
                return Err(StoreError::Transient("keys stayed unprocessed".into()));
            }
            retry += 1;
        }
    }
    Ok(items)
}

/// The items of `table` under `keys` (`names` are the partition and sort key's names),
/// read in concurrent BatchGetItem calls of 100 keys, unprocessed keys read again after a
/// backoff. Missing items are absent; a key named twice is read once.
/// Batched calls in flight at once.
pub(crate) const CONCURRENCY: usize = 8;

pub(crate) async fn get_keys(
    client: &Client,
    table: &str,
    names: (&str, &str),
    keys: &[(String, String)],
    consistent: bool,
    backoff: &Backoff,
) -> Result<Vec<Item>, StoreError> {
    let keys: BTreeSet<&(String, String)> = keys.iter().collect();
    let keys: Vec<Item> = keys
        .into_iter()
        .map(|(hash, range)| HashMap::from([(names.0.to_owned(), s(hash)), (names.1.to_owned(), s(range))]))
        .collect();
    let chunks: Vec<Vec<Item>> = keys.chunks(BATCH_GET_KEYS).map(<[Item]>::to_vec).collect();
    let pages: Vec<Vec<Item>> = stream::iter(chunks)
        .map(|chunk| get_chunk(client, table, chunk, consistent, backoff))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(pages.into_iter().flatten().collect())
}

/// Sends `requests` in concurrent BatchWriteItem calls of 25, unprocessed requests sent
/// again after a backoff. The requests must name distinct items.
pub(crate) async fn write_all(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
    backoff: &Backoff,
) -> Result<(), StoreError> {
    let chunks: Vec<Vec<WriteRequest>> = requests.chunks(BATCH_WRITE_REQUESTS).map(<[WriteRequest]>::to_vec).collect();
    stream::iter(chunks)
        .map(|chunk| write_chunk(client, table, chunk, backoff))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
}

async fn write_chunk(
    client: &Client,
    table: &str,
    mut pending: Vec<WriteRequest>,
    backoff: &Backoff,
) -> Result<(), StoreError> {
    let mut retry = 0;
    while !pending.is_empty() {
        let output = client.batch_write_item().request_items(table, pending).send().await.map_err(unavailable)?;
        pending = output.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
        if !pending.is_empty() {
            if !backoff.wait(retry).await {
                return Err(StoreError::Transient(format!("{} items stayed unprocessed", pending.len())));
            }
            retry += 1;
        }
    }
    Ok(())
}
