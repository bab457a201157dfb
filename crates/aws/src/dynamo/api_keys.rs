//! The API keys table: key hashes with their scopes, keyed by `key_hash`.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use chrono::{DateTime, SecondsFormat, Utc};
use herald_core::{
    keys::{ApiKey, ApiKeyCatalog, ApiKeyStore},
    store::StoreError,
};

use crate::errors::unavailable;

#[derive(Clone, Debug)]
pub struct DynamoApiKeyStore {
    client: Client,
    table: String,
}

impl DynamoApiKeyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Sets one instant attribute of an existing key (never creates one): false when no
    /// key has the hash.
    async fn set_instant(&self, key_hash: &str, attribute: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        // RFC 3339 as serde writes `created_at`, so the item reads back as an `ApiKey`.
        let at = at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key_hash", AttributeValue::S(key_hash.to_owned()))
            .update_expression("SET #at = :at")
            .condition_expression("attribute_exists(key_hash)")
            .expression_attribute_names("#at", attribute)
            .expression_attribute_values(":at", AttributeValue::S(at))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}

fn from_item(item: std::collections::HashMap<String, AttributeValue>) -> Result<ApiKey, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable key item: {e}")))
}

#[async_trait]
impl ApiKeyStore for DynamoApiKeyStore {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key_hash", AttributeValue::S(key_hash.to_owned()))
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map(from_item).transpose()
    }

    async fn put(&self, key: &ApiKey) -> Result<(), StoreError> {
        let item = serde_dynamo::to_item(key).map_err(|e| StoreError::Fatal(format!("unwritable key: {e}")))?;
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl ApiKeyCatalog for DynamoApiKeyStore {
    /// A strongly consistent scan, page after page: an operator sees the key just made
    /// or revoked.
    async fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        let items = crate::dynamo::scan_consistent(&self.client, &self.table).await?;
        items.into_iter().map(from_item).collect()
    }

    async fn revoke(&self, key_hash: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.set_instant(key_hash, "revoked_at", at).await
    }

    async fn set_expiry(&self, key_hash: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.set_instant(key_hash, "expires_at", at).await
    }
}
