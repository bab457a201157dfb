//! The profiles table: one item per user, keyed by `user_id`, with optimistic
//! concurrency on `version`.

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    operation::{put_item::PutItemError, transact_write_items::TransactWriteItemsError},
    types::{AttributeValue, Put, TransactWriteItem},
};
use futures_util::{StreamExt, TryStreamExt, stream};
use herald_core::{
    backoff::Backoff,
    profiles::{Profile, ProfileStore, StoredProfile, VersionedProfile},
    store::StoreError,
};

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use crate::{batch, describe, unavailable};

/// Marks a tombstone: the profile was erased, only its id and version remain.
const ERASED: &str = "erased";

/// A stored item: a profile, or the tombstone of an erased one.
fn stored(item: batch::Item) -> Result<StoredProfile, StoreError> {
    if matches!(item.get(ERASED), Some(AttributeValue::Bool(true))) {
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => {
                n.parse().map_err(|_| StoreError::Unavailable(format!("bad version {n:?}")))?
            }
            _ => 0,
        };
        return Ok(StoredProfile { version, profile: None });
    }
    let profile: Profile =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Unavailable(format!("unreadable profile item: {e}")))?;
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

    async fn put_if_version(&self, item: batch::Item, expected_version: u64) -> Result<(), StoreError> {
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
        ("version = :expected", Some(HashMap::from([(":expected".to_owned(), crate::n(expected_version))])))
    }
}

/// TransactWriteItems takes at most 100 actions.
const TRANSACTION_ACTIONS: usize = 100;
/// ... and 4 MB of items in all: packed to well under it, since the estimate below
/// ignores the request's own framing.
const TRANSACTION_BYTES: usize = 3_500_000;
/// Per action, on top of the item: table name, condition, values, framing.
const ACTION_OVERHEAD: usize = 256;
/// Transactions of one `save_many` in flight at once.
const TRANSACTIONS_IN_FLIGHT: usize = 4;

/// How long a throttled transaction keeps trying: an import must slow down under
/// throttling, not fail, so the budget is generous (a minute and more of waiting).
fn throttled_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5), 25)
}

/// An item's size as DynamoDB reckons it against its limits: attribute names plus values,
/// numbers by their text (an overestimate), lists and maps with their small overhead.
pub(crate) fn item_size(item: &batch::Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::Ss(texts) | AttributeValue::Ns(texts) => texts.iter().map(String::len).sum(),
        AttributeValue::Bs(blobs) => blobs.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        _ => 1,
    }
}

/// One conditional action of a transaction, with what packing needs to know of it.
pub(crate) struct Action {
    pub item: TransactWriteItem,
    /// The item's key: a transaction may not touch one item twice.
    pub key: String,
    /// Estimated bytes against the transaction's 4 MB.
    pub size: usize,
}

/// Splits `actions` into transactions (indexes, in order) of at most 100 actions and
/// `TRANSACTION_BYTES`, never two actions on one key in the same transaction.
pub(crate) fn pack(actions: &[Action]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    let mut keys = HashSet::new();
    for (i, action) in actions.iter().enumerate() {
        let fits = groups.last().is_some_and(|group| group.len() < TRANSACTION_ACTIONS)
            && bytes + action.size <= TRANSACTION_BYTES
            && !keys.contains(action.key.as_str());
        if !fits {
            groups.push(Vec::new());
            bytes = 0;
            keys.clear();
        }
        groups.last_mut().expect("a group was pushed").push(i);
        bytes += action.size;
        keys.insert(action.key.as_str());
    }
    groups
}

/// What a failed TransactWriteItems call means for the actions it carried.
enum Failure {
    /// Cancelled, nothing written: the reason code of each action, in order (`None` for
    /// the actions that were fine).
    Cancelled(Vec<String>),
    /// Throttled, busy or a server fault: the same request may succeed later.
    Transient(String),
    Fatal(StoreError),
}

/// Cancellation reasons that sending the actions again can cure: throttling, another
/// transaction on the same item, a server fault.
fn is_transient_reason(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingError"
            | "ProvisionedThroughputExceeded"
            | "RequestLimitExceeded"
            | "TransactionConflict"
            | "InternalServerError"
            | "ServiceUnavailable"
    )
}

fn classify(error: SdkError<TransactWriteItemsError>) -> Failure {
    // A 5xx or a timeout that outlived the SDK's own retries: the request may be sent
    // again with the same token, which DynamoDB applies at most once.
    let server_fault = error.raw_response().is_some_and(|r| r.status().is_server_error());
    let timed_out = match &error {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    };
    if server_fault || timed_out {
        return Failure::Transient(describe(&error));
    }
    match error.into_service_error() {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => Failure::Cancelled(
            cancelled
                .cancellation_reasons
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.code.unwrap_or_default())
                .collect(),
        ),
        e @ (TransactWriteItemsError::ThrottlingException(_)
        | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
        | TransactWriteItemsError::RequestLimitExceeded(_)
        | TransactWriteItemsError::TransactionInProgressException(_)
        | TransactWriteItemsError::InternalServerError(_)) => Failure::Transient(describe(&e)),
        other => Failure::Fatal(unavailable(other)),
    }
}

/// A fresh idempotency token: a transaction sent again with its token (after a timeout,
/// say) is applied at most once, so a write that did land is not later reported as
/// beaten by "another writer" (itself).
fn client_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Writes the actions `group` names (indexes into `actions`) in one transaction, each
/// under its own condition. A cancelled transaction writes nothing: the actions whose
/// condition failed are dropped (not written) and the rest sent again; throttling and
/// conflicts are waited out with `backoff`. Answers the indexes written.
pub(crate) async fn transact_conditionally(
    client: &Client,
    actions: &[Action],
    mut group: Vec<usize>,
    backoff: &Backoff,
) -> Result<Vec<usize>, StoreError> {
    let mut token = client_token();
    let mut retry = 0;
    while !group.is_empty() {
        let items = group.iter().map(|&i| actions[i].item.clone()).collect();
        let request = client.transact_write_items().set_transact_items(Some(items)).client_request_token(&token);
        let transient = match request.send().await {
            Ok(_) => return Ok(group),
            Err(e) => match classify(e) {
                Failure::Fatal(e) => return Err(e),
                Failure::Transient(description) => Some(description),
                Failure::Cancelled(codes) => {
                    if codes.len() != group.len() {
                        return Err(StoreError::Unavailable(format!(
                            "a transaction of {} writes was cancelled with {} reasons: {codes:?}",
                            group.len(),
                            codes.len()
                        )));
                    }
                    if let Some(code) = codes.iter().find(|c| {
                        !matches!(c.as_str(), "" | "None" | "ConditionalCheckFailed") && !is_transient_reason(c)
                    }) {
                        return Err(StoreError::Unavailable(format!(
                            "a transaction was cancelled: {code} in {codes:?}"
                        )));
                    }
                    let waits = codes.iter().any(|c| is_transient_reason(c));
                    if !waits && !codes.iter().any(|c| c == "ConditionalCheckFailed") {
                        // Nothing to drop and nothing to wait for: sending it again would
                        // be cancelled again.
                        return Err(StoreError::Unavailable(format!("a transaction was cancelled: {codes:?}")));
                    }
                    group = group
                        .into_iter()
                        .zip(&codes)
                        .filter(|(_, c)| *c != "ConditionalCheckFailed")
                        .map(|(i, _)| i)
                        .collect();
                    // Settled, nothing written: the next request is a new one.
                    token = client_token();
                    waits.then(|| format!("a transaction was cancelled: {codes:?}"))
                }
            },
        };
        if let Some(description) = transient {
            if !backoff.wait(retry).await {
                return Err(StoreError::Unavailable(format!(
                    "still failing after {} attempts: {description}",
                    retry + 1
                )));
            }
            retry += 1;
        }
    }
    Ok(group)
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
                    return Err(StoreError::Unavailable("a profile item without user_id".into()));
                };
                Ok((user_id, stored(item)?))
            })
            .collect()
    }

    async fn save(&self, profile: &Profile, expected_version: u64) -> Result<(), StoreError> {
        let item =
            serde_dynamo::to_item(profile).map_err(|e| StoreError::Unavailable(format!("unwritable profile: {e}")))?;
        self.put_if_version(item, expected_version).await
    }

    /// Conditional puts in transactions of up to 100 (TransactWriteItems: one round trip
    /// where `save` takes one per profile), several in flight.
    async fn save_many(&self, writes: &[VersionedProfile]) -> Result<Vec<bool>, StoreError> {
        let actions = writes
            .iter()
            .map(|write| {
                let item = serde_dynamo::to_item(&write.profile)
                    .map_err(|e| StoreError::Unavailable(format!("unwritable profile: {e}")))?;
                let size = item_size(&item) + ACTION_OVERHEAD;
                let (condition, values) = version_condition(write.expected_version);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(unavailable)?;
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

    async fn erase(&self, user_id: &str, version: u64, expected_version: u64) -> Result<(), StoreError> {
        let item = [
            ("user_id".to_owned(), AttributeValue::S(user_id.to_owned())),
            ("version".to_owned(), AttributeValue::N(version.to_string())),
            (ERASED.to_owned(), AttributeValue::Bool(true)),
        ]
        .into();
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
        let total = i32::try_from(parts.max(1)).map_err(|_| StoreError::Unavailable(format!("{parts} parts")))?;
        let segment = i32::try_from(part).ok().filter(|p| *p < total);
        let segment = segment.ok_or_else(|| StoreError::Unavailable(format!("no part {part} of {parts}")))?;
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
                    return Err(StoreError::Unavailable("a profile item without user_id".into()));
                };
                Ok((user_id, stored(item)?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = match output.last_evaluated_key.as_ref().and_then(|key| key.get("user_id")) {
            Some(AttributeValue::S(user_id)) => Some(user_id.clone()),
            Some(_) => return Err(StoreError::Unavailable("a scan stopped at a key that is not a user id".into())),
            None => None,
        };
        Ok(herald_core::profiles::ScanPage { profiles, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(key: &str, size: usize) -> Action {
        let put = Put::builder().table_name("t").item("user_id", crate::s(key)).build().expect("a put");
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
        let item = batch::Item::from([
            ("user_id".to_owned(), crate::s("abc")),
            ("version".to_owned(), crate::n(12)),
            ("tags".to_owned(), AttributeValue::L(vec![crate::s("xy")])),
        ]);
        assert_eq!(item_size(&item), (7 + 3) + (7 + 2) + (4 + 3 + 1 + 2));
    }
}
