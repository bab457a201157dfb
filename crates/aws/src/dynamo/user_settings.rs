//! The preferences table: a user's opt-outs, written conditionally on a version.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use herald_core::{
    delivery::{PreferenceStore, preferences::Preferences},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::dynamo::batch;

use crate::errors::unavailable;

#[derive(Clone, Debug)]
pub struct DynamoPreferenceStore {
    client: Client,
    table: String,
}

impl DynamoPreferenceStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl PreferenceStore for DynamoPreferenceStore {
    async fn get(&self, user_id: &str) -> Result<Preferences, StoreError> {
        Ok(self.get_versioned(user_id).await?.0)
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>, StoreError> {
        let items = batch::get_all(&self.client, &self.table, "user_id", user_ids, false, &Backoff::default()).await?;
        items
            .into_iter()
            .map(|mut item| {
                let Some(AttributeValue::S(user_id)) = item.remove("user_id") else {
                    return Err(StoreError::Fatal("preferences without a user id".into()));
                };
                Ok((user_id, read(item)?.0))
            })
            .collect()
    }

    async fn get_versioned(&self, user_id: &str) -> Result<(Preferences, u64), StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("user_id", AttributeValue::S(user_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        match output.item {
            Some(mut item) => {
                item.remove("user_id");
                read(item)
            }
            None => Ok((Preferences::default(), 0)),
        }
    }

    async fn put_if(&self, user_id: &str, preferences: &Preferences, version: u64) -> Result<(), StoreError> {
        let mut item: crate::dynamo::Item = serde_dynamo::to_item(preferences)
            .map_err(|e| StoreError::Fatal(format!("unwritable preferences: {e}")))?;
        item.insert("user_id".into(), AttributeValue::S(user_id.to_owned()));
        item.insert(VERSION.into(), AttributeValue::N((version + 1).to_string()));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#v", VERSION);
        // Version 0 is an item never written with a version (or no item at all).
        let request = if version == 0 {
            request.condition_expression("attribute_not_exists(#v)")
        } else {
            request
                .condition_expression("#v = :v")
                .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The attribute that orders preference writes; not part of `Preferences`.
const VERSION: &str = "version";

fn read(mut item: crate::dynamo::Item) -> Result<(Preferences, u64), StoreError> {
    let version = match item.remove(VERSION) {
        Some(AttributeValue::N(n)) => {
            n.parse().map_err(|_| StoreError::Fatal("unreadable preferences version".into()))?
        }
        _ => 0,
    };
    let preferences =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable preferences: {e}")))?;
    Ok((preferences, version))
}
