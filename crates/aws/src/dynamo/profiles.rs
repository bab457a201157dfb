//! The profiles table: one item per user, keyed by `user_id`, with optimistic
//! concurrency on `version`. A write that publishes carries its events in the item's
//! outbox, under the new version; the table's stream takes them to the relay.

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    operation::put_item::PutItemError,
    types::{AttributeValue, Put, TransactWriteItem},
};
use futures_util::{StreamExt, TryStreamExt, stream};
use herald_core::{
    events::DomainEvent,
    profiles::{Profile, ProfileStore, StoredProfile, VersionedProfile},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use std::collections::HashMap;

use super::{
    item_size,
    transaction::{ACTION_OVERHEAD, Action, pack, throttled_backoff, transact_conditionally},
};
use crate::{
    dynamo::{Item, batch, outbox},
    errors::unavailable,
};

/// Marks a tombstone: the profile was erased, only its id and version remain.
const ERASED: &str = "erased";
/// Transactions of one `save_many` in flight at once.
const TRANSACTIONS_IN_FLIGHT: usize = 4;

/// A stored item: a profile, or the tombstone of an erased one.
fn stored(item: Item) -> Result<StoredProfile, StoreError> {
    if matches!(item.get(ERASED), Some(AttributeValue::Bool(true))) {
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n.parse().map_err(|_| StoreError::Transient(format!("bad version {n:?}")))?,
            _ => 0,
        };
        return Ok(StoredProfile { version, profile: None });
    }
    let profile: Profile =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable profile item: {e}")))?;
    Ok(StoredProfile { version: profile.version, profile: Some(profile) })
}

#[derive(Clone, Debug)]
pub struct DynamoProfileStore {
    client: Client,
    table: String,
}

impl DynamoProfileStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn put_if_version(&self, item: Item, expected_version: u64) -> Result<(), StoreError> {
        let (condition, values) = version_condition(expected_version);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values);
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(_) => Err(StoreError::Conflict),
                other => Err(unavailable(other)),
            },
        }
    }
}

/// The condition of every profile write: the stored version is still `expected_version`
/// (0: there is no item yet).
fn version_condition(expected_version: u64) -> (&'static str, Option<HashMap<String, AttributeValue>>) {
    if expected_version == 0 {
        ("attribute_not_exists(user_id)", None)
    } else {
        ("version = :expected", Some(HashMap::from([(":expected".to_owned(), crate::dynamo::n(expected_version))])))
    }
}

#[async_trait]
impl ProfileStore for DynamoProfileStore {
    async fn load(&self, user_id: &str) -> Result<Option<StoredProfile>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("user_id", AttributeValue::S(user_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map(stored).transpose()
    }

    async fn load_many(&self, user_ids: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError> {
        let items = batch::get_all(&self.client, &self.table, "user_id", user_ids, false, &Backoff::default()).await?;
        items
            .into_iter()
            .map(|item| {
                let Some(AttributeValue::S(user_id)) = item.get("user_id").cloned() else {
                    return Err(StoreError::Transient("a profile item without user_id".into()));
                };
                Ok((user_id, stored(item)?))
            })
            .collect()
    }

    async fn save(&self, profile: &Profile, expected_version: u64, events: &[DomainEvent]) -> Result<(), StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(profile).map_err(|e| StoreError::Fatal(format!("unwritable profile: {e}")))?;
        outbox::fill(&mut item, profile.version.to_string(), events)?;
        self.put_if_version(item, expected_version).await
    }

    /// Conditional puts in transactions of up to 100 (TransactWriteItems: one round trip
    /// where `save` takes one per profile), several in flight.
    async fn save_many(&self, writes: &[VersionedProfile]) -> Result<Vec<bool>, StoreError> {
        let actions = writes
            .iter()
            .map(|write| {
                let item = serde_dynamo::to_item(&write.profile)
                    .map_err(|e| StoreError::Fatal(format!("unwritable profile: {e}")))?;
                let size = item_size(&item) + ACTION_OVERHEAD;
                let (condition, values) = version_condition(write.expected_version);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(crate::errors::unbuildable)?;
                let item = TransactWriteItem::builder().put(put).build();
                Ok(Action { item, key: write.profile.user_id.clone(), size })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let backoff = throttled_backoff();
        let (actions, backoff) = (&actions, &backoff);
        let written: Vec<Vec<usize>> = stream::iter(pack(actions))
            .map(|group| transact_conditionally(&self.client, actions, group, backoff))
            .buffer_unordered(TRANSACTIONS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut saved = vec![false; writes.len()];
        for i in written.into_iter().flatten() {
            saved[i] = true;
        }
        Ok(saved)
    }

    async fn erase(
        &self,
        user_id: &str,
        version: u64,
        expected_version: u64,
        events: &[DomainEvent],
    ) -> Result<(), StoreError> {
        let mut item: Item = [
            ("user_id".to_owned(), AttributeValue::S(user_id.to_owned())),
            ("version".to_owned(), AttributeValue::N(version.to_string())),
            (ERASED.to_owned(), AttributeValue::Bool(true)),
        ]
        .into();
        outbox::fill(&mut item, version.to_string(), events)?;
        self.put_if_version(item, expected_version).await
    }
}

/// A parallel Scan: part `part` is DynamoDB's scan segment `part` of `parts`, and the
/// cursor is the `user_id` of the page's LastEvaluatedKey. Eventually consistent: a
/// backfill's writes are guarded by the versions it read.
#[async_trait]
impl herald_core::profiles::ProfileScan for DynamoProfileStore {
    async fn scan_page(
        &self,
        part: u32,
        parts: u32,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<herald_core::profiles::ScanPage, StoreError> {
        if limit == 0 {
            return Ok(herald_core::profiles::ScanPage::default());
        }
        let total = i32::try_from(parts.max(1)).map_err(|_| StoreError::Transient(format!("{parts} parts")))?;
        let segment = i32::try_from(part).ok().filter(|p| *p < total);
        let segment = segment.ok_or_else(|| StoreError::Transient(format!("no part {part} of {parts}")))?;
        let start = cursor.map(|id| HashMap::from([("user_id".to_owned(), AttributeValue::S(id.to_owned()))]));
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment)
            .total_segments(total)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let profiles = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let Some(AttributeValue::S(user_id)) = item.get("user_id").cloned() else {
                    return Err(StoreError::Transient("a profile item without user_id".into()));
                };
                Ok((user_id, stored(item)?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = match output.last_evaluated_key.as_ref().and_then(|key| key.get("user_id")) {
            Some(AttributeValue::S(user_id)) => Some(user_id.clone()),
            Some(_) => return Err(StoreError::Transient("a scan stopped at a key that is not a user id".into())),
            None => None,
        };
        Ok(herald_core::profiles::ScanPage { profiles, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(key: &str, size: usize) -> Action {
        let put = Put::builder().table_name("t").item("user_id", crate::dynamo::s(key)).build().expect("a put");
        Action { item: TransactWriteItem::builder().put(put).build(), key: key.to_owned(), size }
    }

    fn sizes(groups: &[Vec<usize>]) -> Vec<usize> {
        groups.iter().map(Vec::len).collect()
    }

    #[test]
    fn pack_fills_transactions_up_to_100_actions() {
        let actions: Vec<_> = (0..250).map(|i| action(&format!("u{i}"), 1000)).collect();
        let groups = pack(&actions);
        assert_eq!(sizes(&groups), [100, 100, 50]);
        assert_eq!(groups.concat(), (0..250).collect::<Vec<_>>());
    }

    #[test]
    fn pack_keeps_each_transaction_under_the_byte_budget() {
        let actions: Vec<_> = (0..10).map(|i| action(&format!("u{i}"), 1_000_000)).collect();
        assert_eq!(sizes(&pack(&actions)), [3, 3, 3, 1]);
    }

    #[test]
    fn pack_puts_two_writes_of_one_user_in_different_transactions() {
        let actions = [action("a", 10), action("b", 10), action("a", 10), action("c", 10)];
        assert_eq!(pack(&actions), [vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn item_size_counts_names_and_values() {
        let item = Item::from([
            ("user_id".to_owned(), crate::dynamo::s("abc")),
            ("version".to_owned(), crate::dynamo::n(12)),
            ("tags".to_owned(), AttributeValue::L(vec![crate::dynamo::s("xy")])),
        ]);
        assert_eq!(item_size(&item), (7 + 3) + (7 + 2) + (4 + 3 + 1 + 2));
    }
}
