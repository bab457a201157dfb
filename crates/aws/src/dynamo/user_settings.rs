//! Small per-user and per-address tables: preferences and the suppression list.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use herald_core::{
    backoff::Backoff,
    delivery::{PreferenceStore, SuppressionStore, preferences::Preferences},
    store::StoreError,
};
use sha2::{Digest, Sha256};

use crate::dynamo::batch;

use crate::unavailable;

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
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("user_id", AttributeValue::S(user_id.to_owned()))
            .send()
            .await
            .map_err(unavailable)?;
        let Some(mut item) = output.item else { return Ok(Preferences::default()) };
        item.remove("user_id");
        serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable preferences: {e}")))
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>, StoreError> {
        let items = batch::get_all(&self.client, &self.table, "user_id", user_ids, false, &Backoff::default()).await?;
        items
            .into_iter()
            .map(|mut item| {
                let Some(AttributeValue::S(user_id)) = item.remove("user_id") else {
                    return Err(StoreError::Fatal("preferences without a user id".into()));
                };
                let preferences = serde_dynamo::from_item(item)
                    .map_err(|e| StoreError::Fatal(format!("unreadable preferences: {e}")))?;
                Ok((user_id, preferences))
            })
            .collect()
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<(), StoreError> {
        let mut item: crate::dynamo::Item = serde_dynamo::to_item(preferences)
            .map_err(|e| StoreError::Fatal(format!("unwritable preferences: {e}")))?;
        item.insert("user_id".into(), AttributeValue::S(user_id.to_owned()));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }
}

/// The suppression list is keyed by a hash of the normalised address, so the table holds
/// no address in clear.
#[derive(Clone, Debug)]
pub struct DynamoSuppressionStore {
    client: Client,
    table: String,
}

pub fn address_hash(address: &str) -> String {
    hex::encode(Sha256::digest(address.trim().to_lowercase().as_bytes()))
}

impl DynamoSuppressionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl SuppressionStore for DynamoSuppressionStore {
    async fn suppressed_among(&self, addresses: &[String]) -> Result<HashSet<String>, StoreError> {
        let by_hash: HashMap<String, &String> = addresses.iter().map(|a| (address_hash(a), a)).collect();
        let hashes: Vec<String> = by_hash.keys().cloned().collect();
        let items =
            batch::get_all(&self.client, &self.table, "address_hash", &hashes, false, &Backoff::default()).await?;
        Ok(items
            .iter()
            .filter_map(|item| match item.get("address_hash") {
                Some(AttributeValue::S(hash)) => by_hash.get(hash).map(|a| (*a).clone()),
                _ => None,
            })
            .collect())
    }

    async fn suppress(&self, address: &str, reason: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("address_hash", AttributeValue::S(address_hash(address)))
            .item("reason", AttributeValue::S(reason.to_owned()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
