//! The activity table: per user (`user_id`), items under the sort key `sk`:
//! - `c#<event>#<YYYY-MM-DD>` and `c#<event>#<YYYY-MM-DD>#<property>=<value>`: daily
//!   counters (`count`, grown with ADD), expiring (`expires_at`) once no window reaches them;
//! - `e#<event_id>`: the ids of counted events, the dedup, kept for `DEDUP_DAYS`;
//! - `l#<event>`: when the event last happened (`at`, a fixed-width UTC timestamp that
//!   compares as a string);
//! - `#rev`: the activity revision (`revision`), grown by every transaction that counted
//!   something for the user.
//!
//! Counting is exactly once: an event's counters grow in the same transaction that writes
//! its id under the condition that the id is new.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, Put, TransactWriteItem, Update},
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use herald_core::{
    activity::{Activity, ActivityEvent, ActivityQuery, ActivityStore, CounterKey, MAX_WINDOW_DAYS, Recorded},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::{
    dynamo::{
        Item,
        batch::{CONCURRENCY, get_keys},
        n, number_of, s,
        transaction::{CONDITIONAL_CHECK_FAILED, cancellation_codes, is_retryable},
    },
    errors::unavailable,
};

/// The sort key of a user's activity revision.
pub(crate) const REVISION_SK: &str = "#rev";
/// How long an event id is remembered: as long as an event can be accepted
/// (`MAX_AGE_DAYS`), so a late repeat is still known.
const DEDUP_DAYS: i64 = herald_core::activity::MAX_AGE_DAYS + 1;
/// Counters outlive the longest window by this much (late events, time zones).
const COUNTER_SLACK_DAYS: i64 = 2;

#[derive(Clone, Debug)]
pub struct DynamoActivityStore {
    client: Client,
    table: String,
    backoff: Backoff,
}

fn counter_sk(key: &CounterKey, day: NaiveDate) -> String {
    let mut sk = format!("c#{}#{}", key.event, day.format("%Y-%m-%d"));
    if let Some((property, value)) = &key.property {
        sk.push_str(&format!("#{property}={value}"));
    }
    sk
}

fn dedup_sk(event_id: &str) -> String {
    format!("e#{event_id}")
}

fn last_seen_sk(event: &str) -> String {
    format!("l#{event}")
}

/// A fixed-width UTC timestamp, so that later times compare greater as strings.
fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn counter_expiry(day: NaiveDate) -> i64 {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    (midnight + Duration::days(i64::from(MAX_WINDOW_DAYS) + COUNTER_SLACK_DAYS)).timestamp()
}

/// Events of one user that go into one transaction (owned: futures that borrow into
/// stream items trip the `Send` proof of `async_trait`).
#[derive(Clone, Debug)]
struct Unit {
    user_id: String,
    events: Vec<ActivityEvent>,
}

impl Unit {
    /// Each counter item once, with the sum of its increments.
    fn counters(&self) -> BTreeMap<(CounterKey, NaiveDate), u64> {
        let mut counters = BTreeMap::new();
        for event in &self.events {
            for key in event.counters() {
                *counters.entry((key, event.day())).or_default() += 1;
            }
        }
        counters
    }

    /// A put per event id, an update per counter item, and the revision.
    fn actions(&self) -> usize {
        self.events.len() + self.counters().len() + 1
    }
}

/// Splits a user's events into units that fit a transaction each (one unit when they fit).
fn units_of(user_id: &str, events: &[&ActivityEvent]) -> Vec<Unit> {
    let new_unit = || Unit { user_id: user_id.to_owned(), events: Vec::new() };
    let mut units = Vec::new();
    let mut current = new_unit();
    let mut counters: HashSet<(CounterKey, NaiveDate)> = HashSet::new();
    for &event in events {
        let fresh: Vec<(CounterKey, NaiveDate)> =
            event.counters().map(|key| (key, event.day())).filter(|c| !counters.contains(c)).collect();
        let actions = current.events.len() + 1 + counters.len() + fresh.len() + 1;
        if actions > crate::dynamo::transaction::MAX_ITEMS && !current.events.is_empty() {
            units.push(std::mem::replace(&mut current, new_unit()));
            counters.clear();
            counters.extend(event.counters().map(|key| (key, event.day())));
        } else {
            counters.extend(fresh);
        }
        current.events.push(event.clone());
    }
    if !current.events.is_empty() {
        units.push(current);
    }
    units
}

/// Packs units into transactions of at most 100 actions, in order: the units of a user
/// who was split land in consecutive transactions.
fn transactions(units: Vec<Unit>) -> Vec<Vec<Unit>> {
    let mut transactions: Vec<Vec<Unit>> = Vec::new();
    let mut actions = 0;
    for unit in units {
        let size = unit.actions();
        match transactions.last_mut() {
            Some(last) if actions + size <= crate::dynamo::transaction::MAX_ITEMS => {
                last.push(unit);
                actions += size;
            }
            _ => {
                transactions.push(vec![unit]);
                actions = size;
            }
        }
    }
    transactions
}

/// Groups consecutive transactions that share a user: they run one after the other (the
/// same items in concurrent transactions would cancel each other), the groups concurrently.
fn runs(transactions: Vec<Vec<Unit>>) -> Vec<Vec<Vec<Unit>>> {
    let mut runs: Vec<Vec<Vec<Unit>>> = Vec::new();
    for transaction in transactions {
        let continues = runs
            .last()
            .and_then(|run| run.last())
            .and_then(|previous| previous.last())
            .zip(transaction.first())
            .is_some_and(|(previous, first)| previous.user_id == first.user_id);
        match runs.last_mut() {
            Some(run) if continues => run.push(transaction),
            _ => runs.push(vec![transaction]),
        }
    }
    runs
}

/// What a transaction did.
#[derive(Default)]
struct Outcome {
    counted: usize,
    duplicates: usize,
}

impl DynamoActivityStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), backoff: Backoff::default() }
    }

    /// The actions of `units`, and for each action the event whose id it writes (if any).
    fn build(&self, units: &[Unit], now: DateTime<Utc>) -> (Vec<TransactWriteItem>, Vec<Option<(usize, usize)>>) {
        let dedup_expiry = (now + Duration::days(DEDUP_DAYS)).timestamp();
        let mut items = Vec::new();
        let mut owners = Vec::new();
        for (u, unit) in units.iter().enumerate() {
            for (e, event) in unit.events.iter().enumerate() {
                let put = Put::builder()
                    .table_name(&self.table)
                    .item("user_id", s(&unit.user_id))
                    .item("sk", s(dedup_sk(&event.event_id)))
                    .item("expires_at", n(dedup_expiry))
                    .condition_expression("attribute_not_exists(sk)")
                    .build()
                    .expect("the put is complete");
                items.push(TransactWriteItem::builder().put(put).build());
                owners.push(Some((u, e)));
            }
            for ((key, day), increment) in unit.counters() {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("user_id", s(&unit.user_id))
                    .key("sk", s(counter_sk(&key, day)))
                    .update_expression("ADD #c :inc SET expires_at = :exp")
                    .expression_attribute_names("#c", "count")
                    .expression_attribute_values(":inc", n(increment))
                    .expression_attribute_values(":exp", n(counter_expiry(day)))
                    .build()
                    .expect("the update is complete");
                items.push(TransactWriteItem::builder().update(update).build());
                owners.push(None);
            }
            let revision = Update::builder()
                .table_name(&self.table)
                .key("user_id", s(&unit.user_id))
                .key("sk", s(REVISION_SK))
                .update_expression("ADD revision :one")
                .expression_attribute_values(":one", n(1))
                .build()
                .expect("the update is complete");
            items.push(TransactWriteItem::builder().update(revision).build());
            owners.push(None);
        }
        (items, owners)
    }

    /// Commits one transaction's units: events found counted before leave it (they are
    /// duplicates) and the rest is written again; cancellations by concurrent transactions
    /// or throttling are retried after a backoff.
    async fn commit(&self, mut units: Vec<Unit>, now: DateTime<Utc>) -> Result<Outcome, StoreError> {
        let mut outcome = Outcome::default();
        let mut retry = 0;
        loop {
            units.retain(|unit| !unit.events.is_empty());
            if units.is_empty() {
                return Ok(outcome);
            }
            let (items, owners) = self.build(&units, now);
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                // The SDK's own retries of this very request are then idempotent.
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await;
            let codes = match result {
                Ok(_) => {
                    outcome.counted += units.iter().map(|unit| unit.events.len()).sum::<usize>();
                    return Ok(outcome);
                }
                Err(e) => cancellation_codes(e)?,
            };
            let mut seen: Vec<(usize, usize)> = Vec::new();
            for (owner, code) in owners.iter().zip(&codes) {
                if code == CONDITIONAL_CHECK_FAILED {
                    seen.push(owner.ok_or_else(|| {
                        StoreError::Transient("a counter's update failed a condition it does not have".into())
                    })?);
                }
            }
            if !seen.is_empty() {
                // Counted before: drop them (last first, so the positions hold) and write again.
                seen.sort_unstable();
                for &(u, e) in seen.iter().rev() {
                    units[u].events.remove(e);
                }
                outcome.duplicates += seen.len();
                continue;
            }
            if !codes.iter().any(|code| is_retryable(code)) {
                return Err(StoreError::Transient(format!("recording activity was cancelled: {codes:?}")));
            }
            if !self.backoff.wait(retry).await {
                return Err(StoreError::Transient("recording activity kept being cancelled".into()));
            }
            retry += 1;
        }
    }

    /// Moves a last-seen time forward (never back).
    async fn see(&self, user_id: &str, event: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("user_id", s(user_id))
            .key("sk", s(last_seen_sk(event)))
            .update_expression("SET #at = :t")
            .condition_expression("attribute_not_exists(#at) OR #at < :t")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":t", s(timestamp(at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// What an item of a `load_many` read is.
enum Slot {
    Count(CounterKey, NaiveDate),
    LastSeen(String),
    Revision,
}

#[async_trait]
impl ActivityStore for DynamoActivityStore {
    async fn record(&self, events: &[ActivityEvent]) -> Result<Recorded, StoreError> {
        let now = Utc::now();
        let mut recorded = Recorded::default();
        // Each user's events, in the order users first appear; an id repeated within the
        // batch counts once.
        let mut ids: HashSet<(&str, &str)> = HashSet::new();
        let mut order: Vec<&str> = Vec::new();
        let mut by_user: HashMap<&str, Vec<&ActivityEvent>> = HashMap::new();
        for event in events {
            if !ids.insert((&event.user_id, &event.event_id)) {
                recorded.duplicates += 1;
                continue;
            }
            let list = by_user.entry(&event.user_id).or_default();
            if list.is_empty() {
                order.push(&event.user_id);
            }
            list.push(event);
        }
        let units: Vec<Unit> = order.iter().flat_map(|user_id| units_of(user_id, &by_user[user_id])).collect();
        let outcomes: Vec<Outcome> = stream::iter(runs(transactions(units)))
            .map(|run| async move {
                let mut total = Outcome::default();
                for transaction in run {
                    let outcome = self.commit(transaction, now).await?;
                    total.counted += outcome.counted;
                    total.duplicates += outcome.duplicates;
                }
                Ok::<_, StoreError>(total)
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for outcome in outcomes {
            recorded.counted += outcome.counted;
            recorded.duplicates += outcome.duplicates;
        }
        // Last seen, from every event of the batch, those found counted before included:
        // moving a time forward is idempotent, and a call that stopped between counting and
        // here is mended by its retry.
        let mut latest: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
        for events in by_user.values() {
            for event in events {
                let at = latest.entry((event.user_id.clone(), event.name.clone())).or_insert(event.timestamp);
                *at = (*at).max(event.timestamp);
            }
        }
        stream::iter(latest)
            .map(|((user_id, event), at)| async move { self.see(&user_id, &event, at).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
        Ok(recorded)
    }

    async fn load_many(
        &self,
        user_ids: &[String],
        query: &ActivityQuery,
        today: NaiveDate,
    ) -> Result<HashMap<String, Activity>, StoreError> {
        let mut slots: HashMap<String, Slot> = HashMap::new();
        for day in query.days_from(today) {
            for key in &query.counters {
                slots.insert(counter_sk(key, day), Slot::Count(key.clone(), day));
            }
        }
        for event in &query.last_seen {
            slots.insert(last_seen_sk(event), Slot::LastSeen(event.clone()));
        }
        slots.insert(REVISION_SK.to_owned(), Slot::Revision);
        let users: BTreeSet<&String> = user_ids.iter().collect();
        let keys: Vec<(String, String)> =
            users.iter().flat_map(|user_id| slots.keys().map(|sk| ((*user_id).clone(), sk.clone()))).collect();
        // Strongly consistent: the segmenter evaluates a user right after their events were
        // counted, and must see them.
        let items = get_keys(&self.client, &self.table, ("user_id", "sk"), &keys, true, &self.backoff).await?;
        let mut activities: HashMap<String, Activity> =
            users.into_iter().map(|user_id| (user_id.clone(), Activity::default())).collect();
        for item in items {
            let (Some(AttributeValue::S(user_id)), Some(AttributeValue::S(sk))) = (item.get("user_id"), item.get("sk"))
            else {
                return Err(StoreError::Transient("an activity item without its key".into()));
            };
            let (Some(activity), Some(slot)) = (activities.get_mut(user_id), slots.get(sk)) else { continue };
            fill(activity, slot, &item)?;
        }
        Ok(activities)
    }
}

fn fill(activity: &mut Activity, slot: &Slot, item: &Item) -> Result<(), StoreError> {
    match slot {
        Slot::Count(key, day) => {
            activity.counts.entry(key.clone()).or_default().insert(*day, number_of(item, "count")?);
        }
        Slot::LastSeen(event) => {
            if let Some(AttributeValue::S(at)) = item.get("at") {
                let at = DateTime::parse_from_rfc3339(at)
                    .map_err(|e| StoreError::Transient(format!("bad last-seen time {at:?}: {e}")))?;
                activity.last_seen.insert(event.clone(), at.with_timezone(&Utc));
            }
        }
        Slot::Revision => activity.revision = number_of(item, "revision")?,
    }
    Ok(())
}
