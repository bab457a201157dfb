//! Item helpers shared by the table adapters: attribute builders and readers, and an
//! item's size as DynamoDB reckons it against its limits.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use herald_core::store::StoreError;

/// An item as the SDK reads and writes it.
pub type Item = HashMap<String, AttributeValue>;

/// A string attribute.
pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn number_of(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => {
            value.parse().map_err(|_| StoreError::Transient(format!("bad number {name} = {value:?}")))
        }
        None => Ok(0),
        Some(_) => Err(StoreError::Transient(format!("{name} is not a number"))),
    }
}

/// An item's size as DynamoDB reckons it against its limits: attribute names plus values,
/// numbers by their text (an overestimate), lists and maps with their small overhead.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::Ss(texts) | AttributeValue::Ns(texts) => texts.iter().map(String::len).sum(),
        AttributeValue::Bs(blobs) => blobs.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        _ => 1,
    }
}

/// Every item of `table`, page after page, read strongly consistent: for the lists that
/// must be at least as new as a write just made (segments, API keys).
pub(crate) async fn scan_consistent(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<Item>, StoreError> {
    client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(crate::errors::unavailable)
}
