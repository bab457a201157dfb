//! The deliveries table: one item per delivery, keyed by `delivery_id`, with a GSI on
//! `notification_id`. Status moves are conditional writes: the dedup of redelivered
//! messages and the guard that keeps statuses moving forward.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use chrono::{DateTime, Utc};
use herald_core::{
    backoff::Backoff,
    delivery::DeliveryStatus,
    notification::{Delivery, StatusChange},
    ports::{Claim, DeliveryStore, StoreError},
};

use crate::batch;

const ALL_STATUSES: [DeliveryStatus; 9] = [
    DeliveryStatus::Created,
    DeliveryStatus::Pending,
    DeliveryStatus::Sent,
    DeliveryStatus::Opened,
    DeliveryStatus::Clicked,
    DeliveryStatus::Error,
    DeliveryStatus::RateLimited,
    DeliveryStatus::Suppressed,
    DeliveryStatus::Unsubscribed,
];

#[derive(Clone, Debug)]
pub struct DynamoDeliveryStore {
    client: Client,
    table: String,
    backoff: Backoff,
}

fn status_value(status: DeliveryStatus) -> AttributeValue {
    serde_dynamo::to_attribute_value(status).expect("statuses serialize")
}

fn unavailable(e: impl std::error::Error + 'static) -> StoreError {
    StoreError::Unavailable(crate::describe(&e))
}

fn change_list(change: &StatusChange) -> AttributeValue {
    AttributeValue::L(vec![serde_dynamo::to_attribute_value(change).expect("status changes serialize")])
}

impl DynamoDeliveryStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), backoff: Backoff::default() }
    }

    fn item(delivery: &Delivery) -> Result<batch::Item, StoreError> {
        serde_dynamo::to_item(delivery).map_err(|e| StoreError::Unavailable(format!("unwritable delivery: {e}")))
    }

    async fn read(&self, delivery_id: &str) -> Result<Option<batch::Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("delivery_id", AttributeValue::S(delivery_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    /// Sets `status` (appending `change` to the history) if the current status is one of
    /// `from`; false if it is not.
    async fn move_status(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        change: &StatusChange,
        extra_set: &[(&str, AttributeValue)],
        remove_claim: bool,
    ) -> Result<bool, StoreError> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!(":from{i}")).collect();
        let mut set = vec!["#s = :status".to_owned(), "history = list_append(history, :change)".to_owned()];
        set.extend(extra_set.iter().map(|(name, _)| format!("{name} = :{name}")));
        let mut expression = format!("SET {}", set.join(", "));
        if remove_claim {
            expression.push_str(" REMOVE claimed_at");
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("delivery_id", AttributeValue::S(delivery_id.to_owned()))
            .update_expression(expression)
            .condition_expression(format!("#s IN ({})", placeholders.join(", ")))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":status", status_value(change.status))
            .expression_attribute_values(":change", change_list(change));
        for (placeholder, status) in placeholders.iter().zip(from) {
            request = request.expression_attribute_values(placeholder, status_value(*status));
        }
        for (name, value) in extra_set {
            request = request.expression_attribute_values(format!(":{name}"), value.clone());
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl DeliveryStore for DynamoDeliveryStore {
    async fn create(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let items = deliveries.iter().map(Self::item).collect::<Result<Vec<_>, _>>()?;
        batch::put_all(&self.client, &self.table, items, &self.backoff).await
    }

    async fn create_if_absent(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(delivery)?))
            .condition_expression("attribute_not_exists(delivery_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list(&self, notification_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let items: Vec<batch::Item> = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by-notification")
            .key_condition_expression("notification_id = :n")
            .expression_attribute_values(":n", AttributeValue::S(notification_id.to_owned()))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(unavailable)?;
        items
            .into_iter()
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Unavailable(format!("unreadable delivery: {e}")))
            })
            .collect()
    }

    async fn claim(&self, delivery_id: &str, at: DateTime<Utc>) -> Result<Claim, StoreError> {
        let change = StatusChange { status: DeliveryStatus::Pending, at, reason: None };
        let claimed_at = [("claimed_at", AttributeValue::S(at.to_rfc3339()))];
        if self
            .move_status(delivery_id, &[DeliveryStatus::Created, DeliveryStatus::Error], &change, &claimed_at, false)
            .await?
        {
            return Ok(Claim::Claimed);
        }
        let item = self
            .read(delivery_id)
            .await?
            .ok_or_else(|| StoreError::Unavailable(format!("no delivery {delivery_id}")))?;
        let status: DeliveryStatus = item
            .get("status")
            .cloned()
            .map(serde_dynamo::from_attribute_value)
            .transpose()
            .map_err(|e| StoreError::Unavailable(format!("unreadable status: {e}")))?
            .ok_or_else(|| StoreError::Unavailable("a delivery without status".into()))?;
        if status != DeliveryStatus::Pending {
            return Ok(Claim::Settled(status));
        }
        let claimed_at = match item.get("claimed_at") {
            Some(AttributeValue::S(s)) => DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or(at),
            _ => at,
        };
        Ok(Claim::InFlight { claimed_at })
    }

    async fn finish(
        &self,
        delivery_id: &str,
        change: &StatusChange,
        provider: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut extra = Vec::new();
        if let Some(p) = provider {
            extra.push(("provider", AttributeValue::S(p.to_owned())));
        }
        if let Some(m) = message_id {
            extra.push(("provider_message_id", AttributeValue::S(m.to_owned())));
        }
        if self.move_status(delivery_id, &[DeliveryStatus::Pending], change, &extra, true).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn advance(&self, delivery_id: &str, change: &StatusChange) -> Result<bool, StoreError> {
        let from: Vec<DeliveryStatus> = ALL_STATUSES.into_iter().filter(|s| s.can_become(change.status)).collect();
        if from.is_empty() {
            return Ok(false);
        }
        self.move_status(delivery_id, &from, change, &[], false).await
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        self.read(delivery_id)
            .await?
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Unavailable(format!("unreadable delivery: {e}")))
            })
            .transpose()
    }
}
