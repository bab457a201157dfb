//! BatchWriteItem and BatchGetItem at the service's limits (`herald_core::limits::dynamodb`),
//! packed by count and bytes through `limits::pack`, with the unprocessed items retried
//! with exponential backoff and full jitter.

use std::{
    collections::{BTreeSet, HashMap},
    ops::Range,
};

use aws_sdk_dynamodb::{
    Client,
    types::{KeysAndAttributes, PutRequest, WriteRequest},
};
use futures_util::{StreamExt, TryStreamExt, stream};
use herald_core::{
    limits::{
        self,
        dynamodb::{BATCH_GET_BYTES, BATCH_GET_KEYS, BATCH_WRITE_BYTES, BATCH_WRITE_REQUESTS, ITEM_BYTES},
    },
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use super::{Item, item_size, s};
use crate::errors::unavailable;

/// Batched calls in flight at once.
pub(crate) const CONCURRENCY: usize = 8;

/// Puts `items`, one BatchWriteItem after another (so of two puts of one item, the later
/// one stays), unprocessed items sent again after a backoff.
pub async fn put_all(client: &Client, table: &str, items: Vec<Item>, backoff: &Backoff) -> Result<(), StoreError> {
    for batch in write_batches(puts(items))? {
        write_batch(client, table, batch, backoff).await?;
    }
    Ok(())
}

/// Sends `requests` in concurrent BatchWriteItem calls, unprocessed requests sent again
/// after a backoff. The requests must name distinct items.
pub(crate) async fn write_all(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
    backoff: &Backoff,
) -> Result<(), StoreError> {
    stream::iter(write_batches(requests)?)
        .map(|batch| write_batch(client, table, batch, backoff))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// A put request of each item.
pub(crate) fn puts(items: Vec<Item>) -> Vec<WriteRequest> {
    items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder().set_item(Some(item)).build().expect("an item is set");
            WriteRequest::builder().put_request(put).build()
        })
        .collect()
}

/// `requests` packed into BatchWriteItem calls of at most `BATCH_WRITE_REQUESTS` and
/// `BATCH_WRITE_BYTES`. An item over `ITEM_BYTES` is an error: DynamoDB would refuse the
/// whole call that carries it.
fn write_batches(requests: Vec<WriteRequest>) -> Result<Vec<Vec<WriteRequest>>, StoreError> {
    let sizes: Vec<usize> = requests.iter().map(request_size).collect();
    if let Some(size) = sizes.iter().find(|&&size| size > ITEM_BYTES) {
        return Err(StoreError::Fatal(format!(
            "an item of {size} bytes is over the {ITEM_BYTES} bytes DynamoDB takes"
        )));
    }
    Ok(split(requests, limits::pack(&sizes, BATCH_WRITE_REQUESTS, BATCH_WRITE_BYTES)))
}

/// The bytes a write request carries: a put's item, a delete's key.
fn request_size(request: &WriteRequest) -> usize {
    match (&request.put_request, &request.delete_request) {
        (Some(put), _) => item_size(&put.item),
        (None, Some(delete)) => item_size(&delete.key),
        (None, None) => 0,
    }
}

/// One BatchWriteItem, unprocessed requests sent again after a backoff until none is left
/// or the attempts run out.
async fn write_batch(
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

/// The items of `table` whose `key_name` is one of `keys` (a string key), one
/// BatchGetItem after another, unprocessed keys read again after a backoff. Missing items
/// are simply absent.
pub async fn get_all(
    client: &Client,
    table: &str,
    key_name: &str,
    keys: &[String],
    consistent: bool,
    backoff: &Backoff,
) -> Result<Vec<Item>, StoreError> {
    // BatchGetItem refuses a request that names one key twice.
    let keys: BTreeSet<&String> = keys.iter().collect();
    let keys: Vec<Item> = keys.into_iter().map(|k| HashMap::from([(key_name.to_owned(), s(k))])).collect();
    let mut items = Vec::new();
    for batch in get_batches(keys) {
        items.extend(get_batch(client, table, batch, consistent, backoff).await?);
    }
    Ok(items)
}

/// The items of `table` under `keys` (`names` are the partition and sort key's names),
/// read in concurrent BatchGetItem calls, unprocessed keys read again after a backoff.
/// Missing items are absent; a key named twice is read once.
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
    let pages: Vec<Vec<Item>> = stream::iter(get_batches(keys))
        .map(|batch| get_batch(client, table, batch, consistent, backoff))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(pages.into_iter().flatten().collect())
}

/// `keys` packed into BatchGetItem calls of at most `BATCH_GET_KEYS` and
/// `BATCH_GET_BYTES`. The bytes limit is of the response: DynamoDB stops there and hands
/// the rest back as unprocessed keys, which `get_batch` reads again.
fn get_batches(keys: Vec<Item>) -> Vec<Vec<Item>> {
    let sizes: Vec<usize> = keys.iter().map(item_size).collect();
    split(keys, limits::pack(&sizes, BATCH_GET_KEYS, BATCH_GET_BYTES))
}

/// One BatchGetItem, unprocessed keys read again after a backoff.
async fn get_batch(
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
        let output = client.batch_get_item().request_items(table, keys).send().await.map_err(unavailable)?;
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

/// `values` cut into the consecutive `batches` `limits::pack` made of them.
fn split<T>(values: Vec<T>, batches: Vec<Range<usize>>) -> Vec<Vec<T>> {
    let mut values = values.into_iter();
    batches.into_iter().map(|batch| values.by_ref().take(batch.len()).collect()).collect()
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest};

    use super::*;

    fn item(key: &str, bytes: usize) -> Item {
        HashMap::from([("pk".to_owned(), s(key)), ("body".to_owned(), AttributeValue::S("x".repeat(bytes)))])
    }

    #[test]
    fn writes_are_packed_25_to_a_call() {
        let items = (0..60).map(|i| item(&i.to_string(), 10)).collect();
        let lengths: Vec<usize> = write_batches(puts(items)).unwrap().iter().map(Vec::len).collect();
        assert_eq!(lengths, [25, 25, 10]);
    }

    #[test]
    fn a_delete_counts_its_key() {
        let delete = DeleteRequest::builder().key("pk", s("abc")).build().unwrap();
        assert_eq!(request_size(&WriteRequest::builder().delete_request(delete).build()), 2 + 3);
    }

    #[test]
    fn an_item_over_400_kb_is_refused_before_any_call() {
        let big = item("big", ITEM_BYTES);
        assert!(matches!(write_batches(puts(vec![item("a", 1), big])), Err(StoreError::Fatal(_))));
        let at_the_limit = item("at", ITEM_BYTES - "pk".len() - "at".len() - "body".len());
        assert_eq!(write_batches(puts(vec![at_the_limit])).unwrap().len(), 1);
    }

    #[test]
    fn keys_are_packed_100_to_a_call_in_order() {
        let keys: Vec<Item> = (0..250).map(|i| HashMap::from([("pk".to_owned(), s(format!("{i:03}")))])).collect();
        let batches = get_batches(keys.clone());
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(batches.concat(), keys);
    }
}
