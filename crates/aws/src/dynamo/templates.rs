//! The templates table: `id#v<n>` holds each version (never overwritten), `id` the latest.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use chrono::Utc;
use herald_core::{
    channel::Channel,
    delivery::{TemplateStore, rendering::ChannelContent, templates::StoredTemplate},
    store::StoreError,
};

use crate::errors::unavailable;

#[derive(Clone, Debug)]
pub struct DynamoTemplateStore {
    client: Client,
    table: String,
}

fn version_key(template_id: &str, version: u64) -> String {
    format!("{template_id}#v{version}")
}

impl DynamoTemplateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn read(&self, key: &str) -> Result<Option<StoredTemplate>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("template_id", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(mut item) = output.item else { return Ok(None) };
        // Version items carry their own key; the template's id is stored beside it.
        if let Some(id) = item.remove("id") {
            item.insert("template_id".into(), id);
        }
        serde_dynamo::from_item(item).map(Some).map_err(|e| StoreError::Fatal(format!("unreadable template: {e}")))
    }

    async fn put(&self, key: &str, template: &StoredTemplate, condition: &str) -> Result<bool, StoreError> {
        let mut item: crate::dynamo::Item =
            serde_dynamo::to_item(template).map_err(|e| StoreError::Fatal(format!("unwritable template: {e}")))?;
        item.insert("id".into(), AttributeValue::S(template.template_id.clone()));
        item.insert("template_id".into(), AttributeValue::S(key.to_owned()));
        let mut request =
            self.client.put_item().table_name(&self.table).set_item(Some(item)).condition_expression(condition);
        if condition.contains(":v") {
            request = request.expression_attribute_values(":v", AttributeValue::N(template.version.to_string()));
        }
        let result = request.send().await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl TemplateStore for DynamoTemplateStore {
    async fn save_new_version(
        &self,
        template_id: &str,
        channels: &BTreeMap<Channel, ChannelContent>,
    ) -> Result<StoredTemplate, StoreError> {
        let mut version = self.read(template_id).await?.map_or(0, |t| t.version) + 1;
        loop {
            let template = StoredTemplate {
                template_id: template_id.to_owned(),
                version,
                channels: channels.clone(),
                updated_at: Utc::now(),
            };
            // Versions are immutable: a concurrent writer that took this number makes us
            // take the next one.
            if self.put(&version_key(template_id, version), &template, "attribute_not_exists(template_id)").await? {
                self.put(template_id, &template, "attribute_not_exists(template_id) OR version < :v").await?;
                return Ok(template);
            }
            version += 1;
        }
    }

    async fn get(&self, template_id: &str, version: Option<u64>) -> Result<Option<StoredTemplate>, StoreError> {
        match version {
            None => self.read(template_id).await,
            Some(v) => self.read(&version_key(template_id, v)).await,
        }
    }
}
