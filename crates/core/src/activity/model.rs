//! Behaviour events and the per-user daily counters that windowed rules read.
//!
//! Every accepted event adds one to the counter of its name for its UTC day, and one to
//! the counter of each of its scalar properties' values (`order` with `plan=pro`), so a
//! rule can count "orders of plan pro in the last 7 days" from a handful of counters.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use herald_wire::activity::MAX_EVENTS_PER_BATCH;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{validation, validation::ValidationErrors};

/// How far back windowed rules may look, and how long counters are kept.
pub const MAX_WINDOW_DAYS: u32 = 90;
/// Properties of one event; each scalar one is counted.
pub const MAX_PROPERTIES: usize = 40;
/// Events may arrive late (offline devices), but not from beyond the counters' memory.
pub const MAX_AGE_DAYS: i64 = MAX_WINDOW_DAYS as i64;
/// Clocks drift: a little future is accepted.
pub const MAX_FUTURE: Duration = Duration::minutes(15);

/// An event as producers send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityEvent {
    /// The producer's id: an event sent twice is counted once.
    pub event_id: String,
    pub user_id: String,
    pub name: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub properties: serde_json::Map<String, Value>,
}

/// A counter: of an event, or of an event with one property's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterKey {
    pub event: String,
    pub property: Option<(String, String)>,
}

impl CounterKey {
    pub fn total(event: &str) -> Self {
        Self { event: event.to_owned(), property: None }
    }

    pub fn property(event: &str, property: &str, value: &str) -> Self {
        Self { event: event.to_owned(), property: Some((property.to_owned(), value.to_owned())) }
    }
}

impl ActivityEvent {
    pub fn day(&self) -> NaiveDate {
        self.timestamp.date_naive()
    }

    /// The counters this event adds one to.
    pub fn counters(&self) -> impl Iterator<Item = CounterKey> + '_ {
        let properties = self
            .properties
            .iter()
            .filter_map(|(name, value)| Some(CounterKey::property(&self.name, name, &scalar(value)?)));
        std::iter::once(CounterKey::total(&self.name)).chain(properties)
    }
}

/// A property value as counters and rules see it; objects and lists are not counted.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn check_event_name(name: &str) -> Result<(), String> {
    check_name(name, "event names")
}

pub fn check_property_name(name: &str) -> Result<(), String> {
    check_name(name, "property names")
}

fn check_name(name: &str, what: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if valid { Ok(()) } else { Err(format!("{what} are 1 to 64 characters of A-Z, a-z, 0-9, _ - . :")) }
}

/// Validates a whole batch: any bad event refuses the batch, naming every fault.
pub fn check_batch(events: &[ActivityEvent], now: DateTime<Utc>) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if events.is_empty() || events.len() > MAX_EVENTS_PER_BATCH {
        errors.add("events", format!("must hold 1 to {MAX_EVENTS_PER_BATCH} events"));
    }
    let oldest = now - Duration::days(MAX_AGE_DAYS);
    for (i, event) in events.iter().enumerate() {
        let path = |field: &str| format!("events[{i}].{field}");
        let id_ok = (1..=128).contains(&event.event_id.len()) && !event.event_id.chars().any(char::is_control);
        if !id_ok {
            errors.add(path("event_id"), "must be 1 to 128 characters, no control characters");
        }
        errors.check(path("user_id"), validation::user_id(&event.user_id));
        errors.check(path("name"), check_event_name(&event.name));
        if event.timestamp < oldest {
            errors.add(path("timestamp"), format!("is more than {MAX_AGE_DAYS} days old"));
        } else if event.timestamp > now + MAX_FUTURE {
            errors.add(path("timestamp"), "is in the future");
        }
        if event.properties.len() > MAX_PROPERTIES {
            errors.add(path("properties"), format!("may hold at most {MAX_PROPERTIES} properties"));
        }
        for (name, value) in &event.properties {
            errors.check(path(&format!("properties.{name}")), check_property_name(name));
            if let Some(v) = scalar(value) {
                errors.check(path(&format!("properties.{name}")), validation::attribute_value(&v));
            }
        }
    }
    errors.into_result()
}

/// One user's counters and last-seen times, as far as a set of rules needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub counts: HashMap<CounterKey, BTreeMap<NaiveDate, u64>>,
    pub last_seen: HashMap<String, DateTime<Utc>>,
    /// Grows with every recorded batch that touched this user: a backfill that read an
    /// older revision must not write its result.
    pub revision: u64,
}

impl Activity {
    pub fn count(&self, key: &CounterKey, days: impl Iterator<Item = NaiveDate>) -> u64 {
        let Some(per_day) = self.counts.get(key) else { return 0 };
        days.map(|day| per_day.get(&day).copied().unwrap_or(0)).sum()
    }

    pub fn last_seen(&self, event: &str) -> Option<DateTime<Utc>> {
        self.last_seen.get(event).copied()
    }

    /// Adds what `events` count (the in-memory store and tests).
    pub fn record(&mut self, events: &[ActivityEvent]) {
        for event in events {
            for key in event.counters() {
                *self.counts.entry(key).or_default().entry(event.day()).or_default() += 1;
            }
            let seen = self.last_seen.entry(event.name.clone()).or_insert(event.timestamp);
            *seen = (*seen).max(event.timestamp);
        }
        self.revision += 1;
    }
}

/// What the segmenter needs to load for a user: these counters over these days, and the
/// last-seen times of these events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivityQuery {
    pub counters: BTreeSet<CounterKey>,
    /// Days of counters, today included (0: none).
    pub days: u32,
    pub last_seen: BTreeSet<String>,
}

impl ActivityQuery {
    pub fn is_empty(&self) -> bool {
        (self.counters.is_empty() || self.days == 0) && self.last_seen.is_empty()
    }

    pub fn days_from(&self, today: NaiveDate) -> Vec<NaiveDate> {
        (0..self.days).filter_map(|ago| today.checked_sub_days(chrono::Days::new(ago.into()))).collect()
    }
}
