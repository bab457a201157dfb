//! Idempotency keys of notifications, in the notifications table under `key#…` ids. Each
//! record holds its notification (`target`), the request's hash (`request_hash`), whether it
//! completed, and `expires_at` (epoch seconds, the table's TTL attribute). TTL deletes
//! lazily, so an expired record still there counts as absent: the conditional put replaces
//! it.

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    operation::put_item::PutItemError,
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
};
use herald_core::{
    notifications::{KeyClaim, NotificationStore, Reservation},
    store::StoreError,
};

use crate::errors::unavailable;

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

    /// The record a refused claim found: the condition held it unexpired.
    fn existing(item: &crate::dynamo::Item) -> Result<Reservation, StoreError> {
        match (item.get("target"), item.get("request_hash"), item.get("complete")) {
            (Some(AttributeValue::S(id)), Some(AttributeValue::S(hash)), Some(AttributeValue::Bool(complete))) => {
                Ok(Reservation::Existing {
                    notification_id: id.clone(),
                    request_hash: hash.clone(),
                    complete: *complete,
                })
            }
            _ => Err(StoreError::Fatal("an unreadable idempotency key".into())),
        }
    }
}

#[async_trait]
impl NotificationStore for DynamoNotificationStore {
    /// One conditional put: it claims the key unless an unexpired record holds it, and a
    /// refusal returns that record (`ReturnValuesOnConditionCheckFailure`), so no read
    /// follows and nothing can change in between.
    async fn reserve(&self, key: &str, claim: &KeyClaim) -> Result<Reservation, StoreError> {
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
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Reservation::New),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(refused) => {
                    Self::existing(refused.item.as_ref().ok_or_else(|| {
                        StoreError::Transient("a refused idempotency claim returned no record".into())
                    })?)
                }
                other => Err(unavailable(other)),
            },
        }
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
