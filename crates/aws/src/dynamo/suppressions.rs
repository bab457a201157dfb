//! The suppressions table: one item per suppressed address, keyed by `address_hash`
//! (`<channel>#<SHA-256 of the normalised address>`, so the table holds no address in
//! clear), and one per address and soft-bounce window (`soft#…`, the set of deliveries
//! that bounced soft in it, expired by TTL).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, ReturnValue},
};
use herald_core::{
    channel::Channel,
    store::StoreError,
    suppressions::{ListedSuppression, SoftBounceWindow, Suppression, SuppressionPage, SuppressionStore, address_hash},
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

    async fn remove(&self, channel: Channel, address: &str) -> Result<bool, StoreError> {
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

    /// ADD to a string set: a delivery already in it is not counted again.
    async fn count_soft_bounce(&self, window: &SoftBounceWindow, delivery_id: &str) -> Result<u32, StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(window.key.clone()))
            .update_expression("ADD bounced :delivery SET expires_at = :expires")
            .expression_attribute_values(":delivery", AttributeValue::Ss(vec![delivery_id.to_owned()]))
            .expression_attribute_values(":expires", AttributeValue::N(window.expires_at.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(unavailable)?;
        match output.attributes.as_ref().and_then(|a| a.get("bounced")) {
            Some(AttributeValue::Ss(set)) => Ok(set.len() as u32),
            _ => Err(StoreError::Fatal("a soft-bounce counter without its set".into())),
        }
    }
}
