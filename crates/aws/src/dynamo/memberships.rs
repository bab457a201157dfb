//! The members table, keyed by `pk` and `sk`:
//! - members rows: `pk = "<segment_id>#<shard>"` (the user's `shard_of`), `sk = user_id`,
//!   so that a segment's members spread over `MEMBER_SHARDS` partitions;
//! - each user's record of their dynamic segments: `pk = "user#<user_id>"`,
//!   `sk = "segments"`, with `revision` (N), `segments` (a list of S) and, when the write
//!   published changes, `outbox` (`dynamo::outbox`, under the new revision), which the
//!   relay publishes from the table's stream.
//!
//! A membership step is one transaction: the record (conditional on its revision) with its
//! outbox, the members rows it changes and, for backfills, condition checks on the profile
//! version and the activity revision the evaluation read.
//!
//! Records written before the outbox may hold a `pending` list of changes never
//! published: it is read as `legacy_pending`, and the user's next write, which replaces
//! the item, carries it in its outbox.
//!
//! The helpers for tables with a composite key (batched reads and deletes) and for
//! cancelled transactions live here too; the activity store uses them.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, ConditionCheck, Delete, DeleteRequest, Put, TransactWriteItem, WriteRequest},
};
use futures_util::{StreamExt, TryStreamExt, stream};
use herald_core::{
    events::{DomainEvent, MembershipChange},
    segments::{MembersPage, MembershipStore, MembershipWrite, USER_RECORDS, UserSegments, shard_of},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use super::{
    batch::{CONCURRENCY, get_keys, write_all},
    number_of, transaction,
    transaction::{CONDITIONAL_CHECK_FAILED, cancellation_codes, is_retryable},
};
use crate::{
    dynamo::{Item, activity::REVISION_SK, batch, n, outbox, s},
    errors::unavailable,
};

/// The sort key of a user's record.
const RECORD_SK: &str = "segments";
/// A record's changes from before the outbox (read, never written).
const LEGACY_PENDING: &str = "pending";

#[derive(Clone, Debug)]
pub struct DynamoMembershipStore {
    client: Client,
    table: String,
    profiles_table: String,
    activity_table: String,
    backoff: Backoff,
    /// Attempts of a membership write cancelled by a concurrent transaction.
    conflict_backoff: Backoff,
}

/// Never a segment's rows: `USER_RECORDS` is no segment id.
fn record_pk(user_id: &str) -> String {
    format!("{USER_RECORDS}#{user_id}")
}

fn rows_pk(segment_id: &str, shard: u32) -> String {
    format!("{segment_id}#{shard}")
}

/// The key of a user's members row of a segment.
fn row_key(segment_id: &str, user_id: &str) -> (String, String) {
    (rows_pk(segment_id, shard_of(user_id)), user_id.to_owned())
}

fn string_of<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(StoreError::Fatal(format!("an item without the string {name}"))),
    }
}

/// A user's record as stored.
fn user_segments(item: Item) -> Result<UserSegments, StoreError> {
    let revision = number_of(&item, "revision")?;
    let segments = match item.get("segments") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| match v {
                AttributeValue::S(id) => Ok(id.clone()),
                _ => Err(StoreError::Transient("a segment id that is not a string".into())),
            })
            .collect::<Result<BTreeSet<String>, _>>()?,
        None => BTreeSet::new(),
        Some(_) => return Err(StoreError::Transient("segments is not a list".into())),
    };
    let legacy_pending: Vec<MembershipChange> = match item.get(LEGACY_PENDING) {
        // Not the error's text: it may quote what the item holds.
        Some(value) => serde_dynamo::from_attribute_value(value.clone())
            .map_err(|_| StoreError::Fatal("an unreadable legacy pending list".into()))?,
        None => Vec::new(),
    };
    Ok(UserSegments { revision, segments, legacy_pending })
}

/// The user's record a step writes: the whole item (so a legacy `pending` goes), its
/// changes in its outbox under the new revision.
fn record(write: &MembershipWrite) -> Result<Item, StoreError> {
    let revision = write.expected_revision + 1;
    let mut item: Item = [
        ("pk".to_owned(), s(record_pk(&write.user_id))),
        ("sk".to_owned(), s(RECORD_SK)),
        ("revision".to_owned(), n(revision)),
        ("segments".to_owned(), AttributeValue::L(write.segments.iter().map(s).collect())),
    ]
    .into();
    let events: Vec<DomainEvent> = write.outbox.iter().cloned().map(DomainEvent::Membership).collect();
    outbox::fill(&mut item, revision.to_string(), &events)?;
    Ok(item)
}

impl DynamoMembershipStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        profiles_table: impl Into<String>,
        activity_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            profiles_table: profiles_table.into(),
            activity_table: activity_table.into(),
            backoff: Backoff::default(),
            conflict_backoff: Backoff::new(
                std::time::Duration::from_millis(20),
                std::time::Duration::from_millis(500),
                4,
            ),
        }
    }

    fn record_item(&self, write: &MembershipWrite) -> Result<TransactWriteItem, StoreError> {
        let item = record(write)?;
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = if write.expected_revision == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("#r = :expected")
                .expression_attribute_names("#r", "revision")
                .expression_attribute_values(":expected", n(write.expected_revision))
        };
        Ok(TransactWriteItem::builder().put(put.build().expect("the put is complete")).build())
    }

    /// The transaction of one membership step.
    fn transaction(&self, write: &MembershipWrite) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = vec![self.record_item(write)?];
        for segment_id in &write.entered {
            let (pk, sk) = row_key(segment_id, &write.user_id);
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(&pk))
                .item("sk", s(&sk))
                .build()
                .expect("the put is complete");
            items.push(TransactWriteItem::builder().put(put).build());
        }
        for segment_id in &write.exited {
            let (pk, sk) = row_key(segment_id, &write.user_id);
            let delete =
                Delete::builder().table_name(&self.table).key("pk", s(&pk)).key("sk", s(&sk)).build().expect("keyed");
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        if let Some(guard) = &write.guard {
            let check = ConditionCheck::builder().table_name(&self.profiles_table).key("user_id", s(&write.user_id));
            let check = if guard.profile_version == 0 {
                check.condition_expression("attribute_not_exists(user_id)")
            } else {
                check
                    .condition_expression("#v = :v")
                    .expression_attribute_names("#v", "version")
                    .expression_attribute_values(":v", n(guard.profile_version))
            };
            items.push(TransactWriteItem::builder().condition_check(check.build().expect("complete")).build());
            if let Some(revision) = guard.activity_revision {
                let check = ConditionCheck::builder()
                    .table_name(&self.activity_table)
                    .key("user_id", s(&write.user_id))
                    .key("sk", s(REVISION_SK));
                let check = if revision == 0 {
                    check.condition_expression("attribute_not_exists(user_id)")
                } else {
                    check
                        .condition_expression("#r = :r")
                        .expression_attribute_names("#r", "revision")
                        .expression_attribute_values(":r", n(revision))
                };
                items.push(TransactWriteItem::builder().condition_check(check.build().expect("complete")).build());
            }
        }
        Ok(items)
    }

    /// Writes the steps `group` names in one transaction; a step whose condition failed
    /// is left out and the rest written again. Answers the steps written.
    async fn write_group(
        &self,
        transactions: &[Vec<TransactWriteItem>],
        mut group: Vec<usize>,
    ) -> Result<Vec<usize>, StoreError> {
        let mut retry = 0;
        while !group.is_empty() {
            let items: Vec<TransactWriteItem> = group.iter().flat_map(|&i| transactions[i].iter().cloned()).collect();
            let codes = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => return Ok(group),
                Err(e) => cancellation_codes(e)?,
            };
            let mut position = 0;
            let mut failed = BTreeSet::new();
            for &i in &group {
                let end = position + transactions[i].len();
                if codes.get(position..end).is_some_and(|c| c.iter().any(|c| c == CONDITIONAL_CHECK_FAILED)) {
                    failed.insert(i);
                }
                position = end;
            }
            if !failed.is_empty() {
                group.retain(|i| !failed.contains(i));
                continue;
            }
            if !codes.iter().any(|c| is_retryable(c)) {
                return Err(StoreError::Transient(format!("membership writes cancelled: {codes:?}")));
            }
            if !self.conflict_backoff.wait(retry).await {
                // Held by other writers throughout: reported as conflicts, re-evaluated.
                return Ok(Vec::new());
            }
            retry += 1;
        }
        Ok(group)
    }

    /// Sends write requests to the members table (batches of 25, several at once).
    async fn write_rows(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        write_all(&self.client, &self.table, requests, &self.backoff).await
    }
}

#[async_trait]
impl MembershipStore for DynamoMembershipStore {
    async fn user_segments(&self, user_id: &str) -> Result<UserSegments, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(record_pk(user_id)))
            .key("sk", s(RECORD_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map(user_segments).transpose().map(Option::unwrap_or_default)
    }

    async fn user_segments_many(&self, user_ids: &[String]) -> Result<HashMap<String, UserSegments>, StoreError> {
        let keys: Vec<(String, String)> = user_ids.iter().map(|id| (record_pk(id), RECORD_SK.to_owned())).collect();
        let items = get_keys(&self.client, &self.table, ("pk", "sk"), &keys, false, &self.backoff).await?;
        items
            .into_iter()
            .map(|item| {
                let user_id = string_of(&item, "pk")?
                    .strip_prefix("user#")
                    .ok_or_else(|| StoreError::Fatal("a user record with a bad key".into()))?
                    .to_owned();
                Ok((user_id, user_segments(item)?))
            })
            .collect()
    }

    async fn write(&self, write: &MembershipWrite) -> Result<(), StoreError> {
        match self.write_many(std::slice::from_ref(write)).await?.as_slice() {
            [true] => Ok(()),
            _ => Err(StoreError::Conflict),
        }
    }

    async fn write_many(&self, writes: &[MembershipWrite]) -> Result<Vec<bool>, StoreError> {
        let transactions = writes.iter().map(|w| self.transaction(w)).collect::<Result<Vec<_>, _>>()?;
        // Pack whole steps into transactions of at most 100 items.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut size = transaction::MAX_ITEMS;
        for (i, items) in transactions.iter().enumerate() {
            if size + items.len() > transaction::MAX_ITEMS {
                groups.push(Vec::new());
                size = 0;
            }
            groups.last_mut().expect("a group was pushed").push(i);
            size += items.len();
        }
        let transactions = &transactions;
        let outcomes: Vec<Vec<usize>> = stream::iter(groups)
            .map(|group| self.write_group(transactions, group))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut applied = vec![false; writes.len()];
        for i in outcomes.into_iter().flatten() {
            applied[i] = true;
        }
        Ok(applied)
    }

    async fn members(
        &self,
        segment_id: &str,
        shard: u32,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MembersPage, StoreError> {
        if limit == 0 {
            return Ok(MembersPage::default());
        }
        let pk = rows_pk(segment_id, shard);
        let start = after.map(|after| HashMap::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(after))]));
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .set_exclusive_start_key(start)
            .limit(limit.min(i32::MAX as u32) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        let user_ids = output
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| string_of(item, "sk").map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        // DynamoDB names where it stopped whenever it stopped early (the limit, or 1 MB);
        // a page that ends exactly at the last row costs one more, empty, page.
        let next = match output.last_evaluated_key {
            Some(key) => Some(string_of(&key, "sk")?.to_owned()),
            None => None,
        };
        Ok(MembersPage { user_ids, next })
    }

    async fn add_static(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        let ids: BTreeSet<&String> = user_ids.iter().collect();
        let items: Vec<Item> = ids
            .into_iter()
            .map(|user_id| {
                let (pk, sk) = row_key(segment_id, user_id);
                HashMap::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), s(&sk))])
            })
            .collect();
        self.write_rows(batch::puts(items)).await
    }

    async fn remove_rows(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        let ids: BTreeSet<&String> = user_ids.iter().collect();
        let requests = ids
            .into_iter()
            .map(|user_id| {
                let (pk, sk) = row_key(segment_id, user_id);
                let delete = DeleteRequest::builder().key("pk", s(&pk)).key("sk", s(&sk)).build().expect("keyed");
                WriteRequest::builder().delete_request(delete).build()
            })
            .collect();
        self.write_rows(requests).await
    }

    async fn rows_among(&self, user_id: &str, segment_ids: &[String]) -> Result<BTreeSet<String>, StoreError> {
        let keys: HashMap<(String, String), &String> =
            segment_ids.iter().map(|segment_id| (row_key(segment_id, user_id), segment_id)).collect();
        let wanted: Vec<(String, String)> = keys.keys().cloned().collect();
        let items = get_keys(&self.client, &self.table, ("pk", "sk"), &wanted, false, &self.backoff).await?;
        items
            .iter()
            .map(|item| {
                let key = (string_of(item, "pk")?.to_owned(), string_of(item, "sk")?.to_owned());
                keys.get(&key)
                    .map(|id| (*id).clone())
                    .ok_or_else(|| StoreError::Transient("a members row that was not asked for".into()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use herald_core::events::{Outbox, StoredEvent};

    use super::*;

    fn step(expected_revision: u64, entered: &[&str]) -> MembershipWrite {
        let change = |segment: &&str| MembershipChange {
            segment_id: (*segment).into(),
            user_id: "u1".into(),
            entered: true,
            revision: expected_revision + 1,
            at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        };
        MembershipWrite {
            user_id: "u1".into(),
            expected_revision,
            segments: entered.iter().map(|s| (*s).to_owned()).collect(),
            entered: entered.iter().map(|s| (*s).to_owned()).collect(),
            exited: Vec::new(),
            outbox: entered.iter().map(change).collect(),
            guard: None,
        }
    }

    #[test]
    fn a_record_s_changes_read_back_from_its_stream_image_as_the_outbox_of_its_revision() {
        let write = step(4, &["a", "b"]);
        let image: serde_dynamo::Item = record(&write).unwrap().into();

        let outbox = outbox::in_image(&image).unwrap().expect("an outbox");

        let events: Vec<DomainEvent> = write.outbox.iter().cloned().map(DomainEvent::Membership).collect();
        assert_eq!(outbox, Outbox::new("5", &events));
        assert_eq!(outbox.events[0], StoredEvent::of(&events[0]));
        assert_eq!(outbox.events[0].detail_type, "segment.entered");
    }

    #[test]
    fn a_record_without_changes_has_no_outbox_and_no_legacy_pending() {
        let item = record(&step(1, &[])).unwrap();
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["pk", "revision", "segments", "sk"]);
    }

    #[test]
    fn a_legacy_pending_list_is_read_as_changes_to_publish() {
        let write = step(0, &["a"]);
        let mut item = record(&write).unwrap();
        item.remove(outbox::ATTRIBUTE);
        item.insert(LEGACY_PENDING.into(), serde_dynamo::to_attribute_value(&write.outbox).unwrap());

        let read = user_segments(item).unwrap();

        assert_eq!(read.legacy_pending, write.outbox);
        assert_eq!(read.revision, 1);
    }
}
