//! BatchWriteItem at the service's limit (25), with the unprocessed items retried with
//! exponential backoff and full jitter.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, PutRequest, WriteRequest},
};
use herald_core::{backoff::Backoff, ports::StoreError};

pub const BATCH_WRITE_LIMIT: usize = 25;

pub type Item = HashMap<String, AttributeValue>;

pub async fn put_all(client: &Client, table: &str, items: Vec<Item>, backoff: &Backoff) -> Result<(), StoreError> {
    let requests: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder().set_item(Some(item)).build().expect("an item is set");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for chunk in requests.chunks(BATCH_WRITE_LIMIT) {
        let mut pending = chunk.to_vec();
        let mut retry = 0;
        while !pending.is_empty() {
            let output = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(crate::describe(&e)))?;
            pending = output.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
            if !pending.is_empty() {
                if !backoff.wait(retry).await {
                    return Err(StoreError::Unavailable(format!("{} items stayed unprocessed", pending.len())));
                }
                retry += 1;
            }
        }
    }
    Ok(())
}
