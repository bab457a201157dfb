//! Small per-user and per-address tables: preferences and the suppression list.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use herald_core::{
    ports::{PreferenceStore, StoreError, SuppressionStore},
    preferences::Preferences,
};
use sha2::{Digest, Sha256};

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
        serde_dynamo::from_item(item).map_err(|e| StoreError::Unavailable(format!("unreadable preferences: {e}")))
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<(), StoreError> {
        let mut item: crate::batch::Item = serde_dynamo::to_item(preferences)
            .map_err(|e| StoreError::Unavailable(format!("unwritable preferences: {e}")))?;
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
    async fn is_suppressed(&self, address: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("address_hash", AttributeValue::S(address_hash(address)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item.is_some())
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
