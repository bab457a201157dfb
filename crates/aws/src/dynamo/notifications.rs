//! Idempotency keys of notifications, in the notifications table under `key#…` ids. Each
//! record holds its notification (`target`), the request's hash (`request_hash`), whether it
//! completed, and `expires_at` (epoch seconds, the table's TTL attribute). TTL deletes
//! lazily, so an expired record still there counts as absent: the conditional put replaces
//! it, and a read that finds one claims again.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use herald_core::{
    notifications::{KeyClaim, NotificationStore, Reservation},
    store::StoreError,
};

use crate::unavailable;

/// Claims tried before giving up, when each read finds the record gone or expired again.
const ATTEMPTS: usize = 3;

#[derive(Clone, Debug)]
pub struct DynamoNotificationStore {
    client: Client,
    table: String,
}

fn key_id(key: &str) -> AttributeValue {
    AttributeValue::S(format!("key#{key}"))
}

fn seconds(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

impl DynamoNotificationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Puts the claim unless an unexpired record holds the key; true if it was put.
    async fn claim(&self, key: &str, claim: &KeyClaim) -> Result<bool, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("notification_id", key_id(key))
            .item("target", AttributeValue::S(claim.notification_id.clone()))
            .item("request_hash", AttributeValue::S(claim.request_hash.clone()))
            .item("complete", AttributeValue::Bool(false))
            .item("expires_at", seconds(claim.expires_at.timestamp()))
            // A record from before keys expired has no expires_at: it counts as expired.
            .condition_expression(
                "attribute_not_exists(notification_id) OR attribute_not_exists(expires_at) OR expires_at <= :now",
            )
            .expression_attribute_values(":now", seconds(claim.now.timestamp()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The unexpired record under `key`, if any.
    async fn existing(&self, key: &str, claim: &KeyClaim) -> Result<Option<Reservation>, StoreError> {
        let Some(item) = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("notification_id", key_id(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?
            .item
        else {
            return Ok(None);
        };
        let expires_at = match item.get("expires_at") {
            Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
            _ => None,
        };
        if expires_at.is_none_or(|at| at <= claim.now.timestamp()) {
            return Ok(None);
        }
        match (item.get("target"), item.get("request_hash"), item.get("complete")) {
            (Some(AttributeValue::S(id)), Some(AttributeValue::S(hash)), Some(AttributeValue::Bool(complete))) => {
                Ok(Some(Reservation::Existing {
                    notification_id: id.clone(),
                    request_hash: hash.clone(),
                    complete: *complete,
                }))
            }
            _ => Err(StoreError::Fatal("an unreadable idempotency key".into())),
        }
    }
}

#[async_trait]
impl NotificationStore for DynamoNotificationStore {
    async fn reserve(&self, key: &str, claim: &KeyClaim) -> Result<Reservation, StoreError> {
        // The record may expire or vanish between the refused put and the read.
        for _ in 0..ATTEMPTS {
            if self.claim(key, claim).await? {
                return Ok(Reservation::New);
            }
            if let Some(existing) = self.existing(key, claim).await? {
                return Ok(existing);
            }
        }
        Err(StoreError::Transient("an idempotency key kept changing".into()))
    }

    async fn complete(&self, key: &str) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("notification_id", key_id(key))
            .update_expression("SET complete = :t")
            // A record TTL deleted stays deleted: an update would recreate it without expiry.
            .condition_expression("attribute_exists(notification_id)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await;
        match update {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}
