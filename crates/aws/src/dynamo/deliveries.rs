//! The deliveries table: one item per delivery, keyed by `delivery_id`, with a GSI on
//! `notification_id`. Status moves are conditional writes: the dedup of redelivered
//! messages and the guard that keeps statuses moving forward.
//!
//! The index projects the keys only: a status move then writes the table alone (an index
//! projecting the item would be written again at every claim and outcome, one unit each),
//! and a listing reads the items it names from the table, consistently, in BatchGetItem
//! calls of 100.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    operation::{query::builders::QueryFluentBuilder, transact_write_items::TransactWriteItemsError},
    types::{AttributeValue, TransactWriteItem, Update},
};
use chrono::{DateTime, Utc};
use herald_core::{
    delivery::{
        Claim, ClaimRequest, Delivery, DeliveryPage, DeliveryStatus, DeliveryStore, ListedDelivery, RateLimitClaim,
        StatusChange,
    },
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::{
    dynamo::{Item, batch},
    errors::unavailable,
};

/// The index of a notification's deliveries, keys only. (Renamed from `by-notification`,
/// which projected the whole item: CloudFormation changes no projection in place, it
/// drops the old index and creates this one.)
const BY_NOTIFICATION: &str = "by-notification-keys";

/// The index of deliveries by their provider's message id, keys only and sparse: only
/// items with `receipt_id` are in it, written by a store built `with_receipt_lookup` (the
/// SMS worker's, whose provider reports by that id alone), so other sends pay no index write.
const BY_RECEIPT: &str = "by-receipt-keys";
const RECEIPT_ID: &str = "receipt_id";

/// A deliveries table write as its stream reports it (old and new images): the status
/// changes it appended, as an outbox write (`delivery::events`); None for an image of
/// another table. An image without a `history` holds no status change (every write of
/// this store leaves the whole item, but an image of the key alone is not refused): read
/// as no delivery, so a new image without one publishes nothing. An image whose history
/// or fields are not a delivery's is an error (the relay's on-failure destination keeps
/// its record).
pub fn stream_write(
    old_image: &serde_dynamo::Item,
    new_image: &serde_dynamo::Item,
) -> Result<Option<herald_core::events::OutboxWrite>, serde_dynamo::Error> {
    if !new_image.contains_key("delivery_id") {
        return Ok(None);
    }
    let Some(after) = delivery_in(new_image)? else {
        return Ok(Some(herald_core::events::OutboxWrite::default()));
    };
    let before = delivery_in(old_image)?;
    Ok(Some(herald_core::delivery::events::write(before.as_ref(), &after)))
}

/// The delivery a stream image holds, if it holds a history.
fn delivery_in(image: &serde_dynamo::Item) -> Result<Option<Delivery>, serde_dynamo::Error> {
    if !image.contains_key("history") {
        return Ok(None);
    }
    serde_dynamo::from_item(image.clone()).map(Some)
}

/// A transaction holds at most 100 items: a claim and its rate-limit count are two.
const CLAIMS_PER_TRANSACTION: usize = super::transaction::MAX_ITEMS / 2;

#[derive(Clone, Debug)]
pub struct DynamoDeliveryStore {
    client: Client,
    table: String,
    /// Where claims count their rate-limit windows (workers only).
    rate_limits_table: Option<String>,
    /// Whether `finish` records the provider's message id for `find_by_provider_message`.
    receipt_lookup: bool,
    backoff: Backoff,
}

fn status_value(status: DeliveryStatus) -> AttributeValue {
    serde_dynamo::to_attribute_value(status).expect("statuses serialize")
}

fn change_list(change: &StatusChange) -> AttributeValue {
    AttributeValue::L(vec![serde_dynamo::to_attribute_value(change).expect("status changes serialize")])
}

/// Marks an `error` no later attempt may claim again: refused, interrupted, or possibly
/// received by the provider.
const FINAL_ERROR: &str = "final_error";

impl DynamoDeliveryStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            rate_limits_table: None,
            receipt_lookup: false,
            backoff: Backoff::default(),
        }
    }

    /// Records each sent delivery's provider message id in the `by-receipt-keys` index,
    /// for a provider whose reports name the message by that id alone.
    pub fn with_receipt_lookup(self) -> Self {
        Self { receipt_lookup: true, ..self }
    }

    /// Counts claims' rate limits in `table` (keyed by `window_key`, expiring by TTL).
    pub fn with_rate_limits(self, table: impl Into<String>) -> Self {
        Self { rate_limits_table: Some(table.into()), ..self }
    }

    /// The items the index's `keys` name, read from the table in the index's order; one
    /// gone since the index was read is left out.
    async fn items_of(&self, keys: &[Item]) -> Result<Vec<Item>, StoreError> {
        let ids: Vec<String> = keys
            .iter()
            .filter_map(|key| match key.get("delivery_id") {
                Some(AttributeValue::S(id)) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let mut items: HashMap<String, Item> =
            batch::get_all(&self.client, &self.table, "delivery_id", &ids, true, &self.backoff)
                .await?
                .into_iter()
                .filter_map(|item| match item.get("delivery_id") {
                    Some(AttributeValue::S(id)) => Some((id.clone(), item)),
                    _ => None,
                })
                .collect();
        Ok(ids.iter().filter_map(|id| items.remove(id)).collect())
    }

    /// The delivery's move out of `created` or `error` (or, for a request that creates
    /// it, out of not existing), as a transaction item.
    fn claim_item(&self, request: &ClaimRequest, at: DateTime<Utc>) -> TransactWriteItem {
        let (change, claimed_at) = match &request.settle {
            Some(settle) => (settle.clone(), None),
            None => (StatusChange { status: DeliveryStatus::Pending, at, reason: None }, Some(at)),
        };
        // An `error` is claimable unless it was recorded final (see `finish`).
        let mut condition = format!("(#s IN (:claimable0, :claimable1) AND attribute_not_exists({FINAL_ERROR}))");
        let mut expression = "SET #s = :status".to_owned();
        if request.create.is_some() {
            // A new item gets what a `Delivery` is read with: its notification (the key of
            // the by-notification-keys index), recipient, channel, and a history that starts
            // with `created`, as the rows the API records do.
            condition = format!("attribute_not_exists(delivery_id) OR {condition}");
            expression.push_str(
                ", history = list_append(if_not_exists(history, :created), :change), \
                 notification_id = if_not_exists(notification_id, :notification), \
                 recipient = if_not_exists(recipient, :recipient), channel = if_not_exists(channel, :channel)",
            );
        } else {
            expression.push_str(", history = list_append(history, :change)");
        }
        if claimed_at.is_some() {
            expression.push_str(", claimed_at = :at");
        }
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("delivery_id", AttributeValue::S(request.delivery_id.clone()))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":status", status_value(change.status))
            .expression_attribute_values(":change", change_list(&change))
            .expression_attribute_values(":claimable0", status_value(DeliveryStatus::CLAIMABLE[0]))
            .expression_attribute_values(":claimable1", status_value(DeliveryStatus::CLAIMABLE[1]));
        if let Some(at) = claimed_at {
            update = update.expression_attribute_values(":at", AttributeValue::S(at.to_rfc3339()));
        }
        if let Some(new) = &request.create {
            let created = StatusChange { status: DeliveryStatus::Created, at, reason: None };
            update = update
                .expression_attribute_values(":created", change_list(&created))
                .expression_attribute_values(":notification", AttributeValue::S(new.notification_id.clone()))
                .expression_attribute_values(":recipient", AttributeValue::S(new.recipient.clone()))
                .expression_attribute_values(
                    ":channel",
                    serde_dynamo::to_attribute_value(new.channel).expect("channels serialize"),
                );
        }
        TransactWriteItem::builder().update(update.build().expect("the update is complete")).build()
    }

    /// One more send in a rate-limit window, refused once the window is full.
    fn count_item(&self, table: &str, limit: &RateLimitClaim) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(table)
            .key("window_key", AttributeValue::S(limit.window.key.clone()))
            .update_expression("ADD sends :one SET expires_at = :expires")
            .condition_expression("attribute_not_exists(sends) OR sends < :limit")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":limit", AttributeValue::N(limit.limit.to_string()))
            .expression_attribute_values(":expires", AttributeValue::N(limit.window.expires_at.to_string()))
            .build()
            .expect("the update is complete");
        TransactWriteItem::builder().update(update).build()
    }

    /// What a delivery whose claim condition failed is doing now.
    async fn current_claim(&self, delivery_id: &str, at: DateTime<Utc>) -> Result<Claim, StoreError> {
        let item =
            self.read(delivery_id).await?.ok_or_else(|| StoreError::Fatal(format!("no delivery {delivery_id}")))?;
        let status: DeliveryStatus = item
            .get("status")
            .cloned()
            .map(serde_dynamo::from_attribute_value)
            .transpose()
            .map_err(|e| StoreError::Fatal(format!("unreadable status: {e}")))?
            .ok_or_else(|| StoreError::Fatal("a delivery without status".into()))?;
        if status != DeliveryStatus::Pending {
            return Ok(Claim::AlreadySettled(status));
        }
        let claimed_at = match item.get("claimed_at") {
            Some(AttributeValue::S(s)) => DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or(at),
            _ => at,
        };
        Ok(Claim::InFlight { claimed_at })
    }

    /// Claims up to `CLAIMS_PER_TRANSACTION` deliveries in one transaction (see `claim_all`).
    async fn claim_chunk(&self, requests: &[ClaimRequest], at: DateTime<Utc>) -> Result<Vec<Claim>, StoreError> {
        let mut requests: Vec<(usize, ClaimRequest)> = requests.iter().cloned().enumerate().collect();
        let mut claims: Vec<Option<Claim>> = vec![None; requests.len()];
        let mut retry = 0;
        while !requests.is_empty() {
            // Each transaction item: (request position, whether it is the rate-limit count).
            let mut items = Vec::new();
            let mut owners = Vec::new();
            for (position, request) in requests.iter().enumerate() {
                items.push(self.claim_item(&request.1, at));
                owners.push((position, false));
                if let (Some(limit), None) = (&request.1.rate_limit, &request.1.settle) {
                    let table = self
                        .rate_limits_table
                        .as_deref()
                        .ok_or_else(|| StoreError::Fatal("a rate-limited claim, but no rate-limit table".into()))?;
                    items.push(self.count_item(table, limit));
                    owners.push((position, true));
                }
            }
            let result = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
            let reasons = match result {
                Ok(_) => {
                    for (index, request) in requests.drain(..) {
                        claims[index] = Some(match request.settle {
                            Some(settle) => Claim::Settled(settle.status),
                            None => Claim::Claimed,
                        });
                    }
                    break;
                }
                Err(e) => match e.into_service_error() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        cancelled.cancellation_reasons.unwrap_or_default()
                    }
                    other => return Err(unavailable(other)),
                },
            };
            // The items whose condition failed: a delivery claimed or settled elsewhere, or
            // a full rate-limit window.
            let failed: Vec<(usize, bool)> = owners
                .iter()
                .zip(&reasons)
                .filter(|(_, r)| r.code.as_deref() == Some("ConditionalCheckFailed"))
                .map(|(owner, _)| *owner)
                .collect();
            let claimed_elsewhere: Vec<usize> = failed.iter().filter(|(_, count)| !count).map(|(p, _)| *p).collect();
            let windows_full: Vec<usize> = failed.iter().filter(|(_, count)| *count).map(|(p, _)| *p).collect();
            if claimed_elsewhere.is_empty() && windows_full.is_empty() {
                // Conflicts with concurrent transactions or throttling: write it all again.
                if !self.backoff.wait(retry).await {
                    return Err(StoreError::Transient("claims kept being cancelled".into()));
                }
                retry += 1;
                continue;
            }
            for &position in &windows_full {
                let request = &mut requests[position].1;
                request.settle = request.rate_limit.take().map(|limit| limit.over);
            }
            for &position in claimed_elsewhere.iter().rev() {
                let (index, request) = requests.remove(position);
                claims[index] = Some(self.current_claim(&request.delivery_id, at).await?);
            }
        }
        Ok(claims.into_iter().map(|c| c.expect("every request is answered")).collect())
    }

    /// The query of the `by-notification-keys` index for one notification's deliveries'
    /// keys, in delivery id order: a whole listing and a page of it read the same index.
    fn notification_query(&self, notification_id: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(BY_NOTIFICATION)
            .key_condition_expression("notification_id = :n")
            .expression_attribute_values(":n", AttributeValue::S(notification_id.to_owned()))
    }

    fn item(delivery: &Delivery) -> Result<Item, StoreError> {
        serde_dynamo::to_item(delivery).map_err(|e| StoreError::Fatal(format!("unwritable delivery: {e}")))
    }

    async fn read(&self, delivery_id: &str) -> Result<Option<Item>, StoreError> {
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
        let keys: Vec<Item> = self
            .notification_query(notification_id)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(unavailable)?;
        self.items_of(&keys)
            .await?
            .into_iter()
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable delivery: {e}")))
            })
            .collect()
    }

    async fn list_page(
        &self,
        notification_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeliveryPage, StoreError> {
        let start = after.map(|after| {
            HashMap::from([
                ("notification_id".to_owned(), AttributeValue::S(notification_id.to_owned())),
                ("delivery_id".to_owned(), AttributeValue::S(after.to_owned())),
            ])
        });
        let output = self
            .notification_query(notification_id)
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(unavailable)?;
        let next = match output.last_evaluated_key.as_ref().and_then(|key| key.get("delivery_id")) {
            Some(AttributeValue::S(id)) => Some(id.clone()),
            _ => None,
        };
        let deliveries = self
            .items_of(&output.items.unwrap_or_default())
            .await?
            .into_iter()
            .map(|item| {
                let final_error = matches!(item.get(FINAL_ERROR), Some(AttributeValue::Bool(true)));
                let delivery = serde_dynamo::from_item(item)
                    .map_err(|e| StoreError::Fatal(format!("unreadable delivery: {e}")))?;
                Ok(ListedDelivery { delivery, final_error })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(DeliveryPage { deliveries, next })
    }

    /// One TransactWriteItems for the whole job (or per 50 claims, a transaction's limit
    /// being 100 items: a claim and its rate-limit count): every claim and its count, all
    /// conditional. If any condition fails, DynamoDB cancels the transaction and says which
    /// items failed: a delivery already claimed or settled leaves the batch (its state is
    /// read and reported), a full window turns its claim into a `rate_limited` settle, and
    /// the rest is written again.
    async fn claim_all(&self, requests: &[ClaimRequest], at: DateTime<Utc>) -> Result<Vec<Claim>, StoreError> {
        let mut claims = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(CLAIMS_PER_TRANSACTION) {
            claims.extend(self.claim_chunk(chunk, at).await?);
        }
        Ok(claims)
    }

    async fn finish(
        &self,
        delivery_id: &str,
        change: &StatusChange,
        provider: Option<&str>,
        message_id: Option<&str>,
        retryable: bool,
    ) -> Result<(), StoreError> {
        let mut extra = Vec::new();
        if change.status == DeliveryStatus::Error && !retryable {
            extra.push((FINAL_ERROR, AttributeValue::Bool(true)));
        }
        if let Some(p) = provider {
            extra.push(("provider", AttributeValue::S(p.to_owned())));
        }
        if let Some(m) = message_id {
            extra.push(("provider_message_id", AttributeValue::S(m.to_owned())));
            if self.receipt_lookup {
                extra.push((RECEIPT_ID, AttributeValue::S(m.to_owned())));
            }
        }
        if self.move_status(delivery_id, &[DeliveryStatus::Pending], change, &extra, true).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn advance(&self, delivery_id: &str, change: &StatusChange) -> Result<bool, StoreError> {
        let from = change.status.predecessors();
        if from.is_empty() {
            return Ok(false);
        }
        self.move_status(delivery_id, &from, change, &[], false).await
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        self.read(delivery_id)
            .await?
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable delivery: {e}")))
            })
            .transpose()
    }

    async fn find_by_provider_message(&self, provider_message_id: &str) -> Result<Option<String>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_RECEIPT)
            .key_condition_expression("#r = :r")
            .expression_attribute_names("#r", RECEIPT_ID)
            .expression_attribute_values(":r", AttributeValue::S(provider_message_id.to_owned()))
            .limit(1)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.items.unwrap_or_default().first().and_then(|key| match key.get("delivery_id") {
            Some(AttributeValue::S(id)) => Some(id.clone()),
            _ => None,
        }))
    }
}
