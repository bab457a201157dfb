//! The API keys table: key hashes with their scopes, keyed by `key_hash`.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use herald_core::{
    keys::{ApiKey, ApiKeyStore},
    store::StoreError,
};

use crate::unavailable;

#[derive(Clone, Debug)]
pub struct DynamoApiKeyStore {
    client: Client,
    table: String,
}

impl DynamoApiKeyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
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
        output
            .item
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable key item: {e}")))
            })
            .transpose()
    }

    async fn put(&self, key: &ApiKey) -> Result<(), StoreError> {
        let item = serde_dynamo::to_item(key).map_err(|e| StoreError::Fatal(format!("unwritable key: {e}")))?;
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }
}
