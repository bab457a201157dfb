//! Idempotency keys of notifications, in the notifications table under `key#…` ids.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use herald_core::{
    notifications::{NotificationStore, Reservation},
    store::StoreError,
};

use crate::unavailable;

#[derive(Clone, Debug)]
pub struct DynamoNotificationStore {
    client: Client,
    table: String,
}

fn key_id(key: &str) -> AttributeValue {
    AttributeValue::S(format!("key#{key}"))
}

impl DynamoNotificationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl NotificationStore for DynamoNotificationStore {
    async fn reserve(&self, key: &str, notification_id: &str) -> Result<Reservation, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("notification_id", key_id(key))
            .item("target", AttributeValue::S(notification_id.to_owned()))
            .item("complete", AttributeValue::Bool(false))
            .condition_expression("attribute_not_exists(notification_id)")
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Reservation::New),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("notification_id", key_id(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?
            .item
            .ok_or_else(|| StoreError::Transient("an idempotency key vanished".into()))?;
        match (item.get("target"), item.get("complete")) {
            (Some(AttributeValue::S(id)), Some(AttributeValue::Bool(complete))) => {
                Ok(Reservation::Existing { notification_id: id.clone(), complete: *complete })
            }
            _ => Err(StoreError::Transient("an unreadable idempotency key".into())),
        }
    }

    async fn complete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("notification_id", key_id(key))
            .update_expression("SET complete = :t")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
