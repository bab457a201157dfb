//! The suppressions table: one item per suppressed address, keyed by `address_hash`
//! (`<channel>#<SHA-256 of the normalised address>`, so the table holds no address in
//! clear), and one per address's soft bounces (`soft#<address hash>`: a string set of
//! `<delivery id>#<bounce time>`, each write adding one and dropping those out of the
//! window, so the window slides; expired by TTL once the newest is out of it).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, ReturnValue},
};
use herald_core::{
    channel::Channel,
    store::StoreError,
    suppressions::{
        ListedSuppression, SoftBounceWindow, Suppression, SuppressionPage, SuppressionStore, address_hash,
        soft_bounce_key,
    },
};
use herald_wire::backoff::Backoff;

use crate::{
    dynamo::{Item, batch},
    errors::unavailable,
};

const KEY: &str = "address_hash";

#[derive(Clone, Debug)]
pub struct DynamoSuppressionStore {
    client: Client,
    table: String,
}

impl DynamoSuppressionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn entry(item: Item) -> Result<ListedSuppression, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable suppression: {e}")))
}

#[async_trait]
impl SuppressionStore for DynamoSuppressionStore {
    async fn suppressed_among(&self, channel: Channel, addresses: &[String]) -> Result<HashSet<String>, StoreError> {
        let by_hash: HashMap<String, &String> = addresses.iter().map(|a| (address_hash(channel, a), a)).collect();
        let hashes: Vec<String> = by_hash.keys().cloned().collect();
        let items = batch::get_all(&self.client, &self.table, KEY, &hashes, false, &Backoff::default()).await?;
        Ok(items
            .iter()
            .filter_map(|item| match item.get(KEY) {
                Some(AttributeValue::S(hash)) => by_hash.get(hash).map(|a| (*a).clone()),
                _ => None,
            })
            .collect())
    }

    async fn get(&self, channel: Channel, address: &str) -> Result<Option<Suppression>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(address_hash(channel, address)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map(|item| entry(item).map(|listed| listed.suppression)).transpose()
    }

    async fn suppress(&self, address: &str, suppression: &Suppression) -> Result<(), StoreError> {
        let listed = ListedSuppression {
            address_hash: address_hash(suppression.channel, address),
            suppression: suppression.clone(),
        };
        let item: Item =
            serde_dynamo::to_item(&listed).map_err(|e| StoreError::Fatal(format!("unwritable suppression: {e}")))?;
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }

    /// The soft bounces first: a failure after them leaves the entry, so a retry of the
    /// removal finds it and ends what it started.
    async fn remove(&self, channel: Channel, address: &str) -> Result<bool, StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(soft_bounce_key(channel, address)))
            .send()
            .await
            .map_err(unavailable)?;
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(address_hash(channel, address)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    /// A Scan page of `limit` items read, the soft-bounce counters (and other channels')
    /// filtered out, so a page may hold fewer than `limit` with more to come.
    async fn list(
        &self,
        channel: Option<Channel>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<SuppressionPage, StoreError> {
        let mut filter = "attribute_exists(reason)".to_owned();
        let mut request = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(after.map(|a| HashMap::from([(KEY.to_owned(), AttributeValue::S(a.to_owned()))])));
        if let Some(channel) = channel {
            filter.push_str(" AND channel = :channel");
            request = request.expression_attribute_values(":channel", AttributeValue::S(channel.as_str().to_owned()));
        }
        let output = request.filter_expression(filter).send().await.map_err(unavailable)?;
        let suppressions = output.items.unwrap_or_default().into_iter().map(entry).collect::<Result<_, _>>()?;
        let next = match output.last_evaluated_key.as_ref().and_then(|key| key.get(KEY)) {
            Some(AttributeValue::S(key)) => Some(key.clone()),
            _ => None,
        };
        Ok(SuppressionPage { suppressions, next })
    }

    /// ADD to a string set: a bounce already in it is not counted again. Then, only when
    /// there is something to drop or the expiry to push back, an UpdateItem that DELETEs
    /// the stale entries (exact values, so a bounce added meanwhile is kept) and raises
    /// `expires_at`, on the condition that it does not lower it (a concurrent later
    /// bounce's expiry is kept; a clean-up so skipped is done by the next bounce).
    async fn count_soft_bounce(&self, window: &SoftBounceWindow, delivery_id: &str) -> Result<u32, StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(window.key.clone()))
            .update_expression("ADD bounced :bounce SET expires_at = if_not_exists(expires_at, :expires)")
            .expression_attribute_values(":bounce", AttributeValue::Ss(vec![window.entry(delivery_id)]))
            .expression_attribute_values(":expires", AttributeValue::N(window.expires_at.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(unavailable)?;
        let attributes = output.attributes.unwrap_or_default();
        let Some(AttributeValue::Ss(entries)) = attributes.get("bounced") else {
            return Err(StoreError::Fatal("a soft-bounce record without its set".into()));
        };
        let stored_expiry = match attributes.get("expires_at") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        let count = window.count(entries.iter().map(String::as_str));
        let stale: Vec<String> = entries.iter().filter(|e| window.is_stale(e)).cloned().collect();
        let expiry = window.expiry_of(entries.iter().map(String::as_str));
        if stale.is_empty() && expiry <= stored_expiry {
            return Ok(count);
        }
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(window.key.clone()))
            .condition_expression("expires_at <= :expires")
            .expression_attribute_values(":expires", AttributeValue::N(expiry.max(stored_expiry).to_string()));
        update = if stale.is_empty() {
            update.update_expression("SET expires_at = :expires")
        } else {
            update
                .update_expression("DELETE bounced :stale SET expires_at = :expires")
                .expression_attribute_values(":stale", AttributeValue::Ss(stale))
        };
        match update.send().await {
            Ok(_) => Ok(count),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(count),
            Err(e) => Err(unavailable(e)),
        }
    }
}
