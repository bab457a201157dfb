//! `ActivityStore`: events counted exactly once (per user, by event id), per UTC day and per
//! scalar property value; reads of just the counters, days and last-seen times asked for;
//! a revision that grows with every batch that counted something.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use herald_aws::DynamoActivityStore;
use herald_core::activity::{
    ActivityEvent, ActivityQuery, ActivityStore, CounterKey, Recorded, memory::MemoryActivity,
};
use serde_json::json;

contract!(activity_store: memory_store, aws_store;
    a_repeated_event_id_is_counted_once_within_a_batch_and_across_calls,
    counters_are_per_utc_day_and_per_property_value,
    load_many_reads_only_the_asked_counters_and_days_and_the_revision_grows_per_record,
    last_seen_keeps_the_latest_time_even_when_an_older_event_arrives_later,
    more_events_for_one_user_than_a_transaction_holds_are_all_counted_once,
);

async fn memory_store() -> Box<dyn ActivityStore> {
    Box::new(MemoryActivity::default())
}

async fn aws_store() -> Box<dyn ActivityStore> {
    let (clients, tables) = super::moto_tables(&["ActivityTable"]).await;
    Box::new(DynamoActivityStore::new(clients.dynamodb(), &tables["ActivityTable"]))
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// `hour:minute` UTC on the day `days_ago` days before today.
fn at(days_ago: u64, hour: u32, minute: u32) -> DateTime<Utc> {
    let day = today().checked_sub_days(chrono::Days::new(days_ago)).unwrap();
    Utc.from_utc_datetime(&day.and_hms_opt(hour, minute, 0).unwrap())
}

fn event(id: &str, user: &str, name: &str, timestamp: DateTime<Utc>) -> ActivityEvent {
    ActivityEvent {
        event_id: id.into(),
        user_id: user.into(),
        name: name.into(),
        timestamp,
        properties: Default::default(),
    }
}

fn with(mut event: ActivityEvent, properties: serde_json::Value) -> ActivityEvent {
    event.properties = properties.as_object().unwrap().clone();
    event
}

fn query(counters: &[CounterKey], days: u32, last_seen: &[&str]) -> ActivityQuery {
    ActivityQuery {
        counters: counters.iter().cloned().collect(),
        days,
        last_seen: last_seen.iter().map(|e| (*e).to_owned()).collect(),
    }
}

fn per_day(counts: &[(u64, u64)]) -> BTreeMap<NaiveDate, u64> {
    counts.iter().map(|(ago, n)| (today().checked_sub_days(chrono::Days::new(*ago)).unwrap(), *n)).collect()
}

async fn a_repeated_event_id_is_counted_once_within_a_batch_and_across_calls(store: &dyn ActivityStore) {
    let first = [
        event("e1", "u1", "order", at(0, 1, 0)),
        event("e2", "u1", "order", at(0, 2, 0)),
        event("e1", "u1", "order", at(0, 1, 0)),
        // The same id for another user is another event.
        event("e1", "u2", "order", at(0, 1, 0)),
    ];
    assert_eq!(store.record(&first).await.unwrap(), Recorded { counted: 3, duplicates: 1 });
    let second = [event("e2", "u1", "order", at(0, 2, 0)), event("e3", "u1", "order", at(0, 3, 0))];
    assert_eq!(store.record(&second).await.unwrap(), Recorded { counted: 1, duplicates: 1 });
    let again = [event("e3", "u1", "order", at(0, 3, 0))];
    assert_eq!(store.record(&again).await.unwrap(), Recorded { counted: 0, duplicates: 1 });

    let total = CounterKey::total("order");
    let users = ["u1".to_owned(), "u2".to_owned()];
    let loaded = store.load_many(&users, &query(std::slice::from_ref(&total), 1, &[]), today()).await.unwrap();
    assert_eq!(loaded["u1"].counts[&total], per_day(&[(0, 3)]));
    assert_eq!(loaded["u2"].counts[&total], per_day(&[(0, 1)]));
    // Two calls counted something for u1; the one that counted nothing left its revision.
    assert_eq!(loaded["u1"].revision, 2);
    assert_eq!(loaded["u2"].revision, 1);
}

async fn counters_are_per_utc_day_and_per_property_value(store: &dyn ActivityStore) {
    let events = [
        with(event("a", "u1", "order", at(1, 23, 59)), json!({"plan": "pro", "items": 2, "gift": true})),
        with(event("b", "u1", "order", at(0, 0, 1)), json!({"plan": "pro", "items": 2, "note": {"x": 1}})),
        with(event("c", "u1", "order", at(0, 12, 0)), json!({"plan": "free", "items": 11})),
        event("d", "u1", "visit", at(0, 12, 0)),
    ];
    assert_eq!(store.record(&events).await.unwrap().counted, 4);

    let total = CounterKey::total("order");
    let pro = CounterKey::property("order", "plan", "pro");
    let free = CounterKey::property("order", "plan", "free");
    let two = CounterKey::property("order", "items", "2");
    let one = CounterKey::property("order", "items", "1");
    let gift = CounterKey::property("order", "gift", "true");
    let note = CounterKey::property("order", "note", "{\"x\":1}");
    let visit = CounterKey::total("visit");
    let asked = [total.clone(), pro.clone(), free.clone(), two.clone(), one.clone(), gift.clone(), note.clone()];
    let loaded = store.load_many(&["u1".to_owned()], &query(&asked, 2, &[]), today()).await.unwrap().remove("u1");
    let activity = loaded.unwrap();
    assert_eq!(activity.counts[&total], per_day(&[(1, 1), (0, 2)]));
    assert_eq!(activity.counts[&pro], per_day(&[(1, 1), (0, 1)]));
    assert_eq!(activity.counts[&free], per_day(&[(0, 1)]));
    assert_eq!(activity.counts[&two], per_day(&[(1, 1), (0, 1)]));
    assert_eq!(activity.counts[&gift], per_day(&[(1, 1)]));
    // "1" is not a prefix match of "11"; objects are not counted.
    assert!(!activity.counts.contains_key(&one));
    assert!(!activity.counts.contains_key(&note));
    // Not asked for: not read.
    assert!(!activity.counts.contains_key(&visit));
}

async fn load_many_reads_only_the_asked_counters_and_days_and_the_revision_grows_per_record(store: &dyn ActivityStore) {
    let total = CounterKey::total("order");
    let visit = CounterKey::total("visit");
    store
        .record(&[
            event("old", "u1", "order", at(5, 10, 0)),
            event("mid", "u1", "order", at(2, 10, 0)),
            event("new", "u1", "order", at(0, 10, 0)),
            event("v", "u1", "visit", at(0, 10, 0)),
        ])
        .await
        .unwrap();
    let users = ["u1".to_owned(), "nobody".to_owned()];
    let loaded = store.load_many(&users, &query(std::slice::from_ref(&total), 3, &[]), today()).await.unwrap();
    let activity = &loaded["u1"];
    assert_eq!(activity.counts.keys().collect::<Vec<_>>(), [&total]);
    assert_eq!(activity.counts[&total], per_day(&[(2, 1), (0, 1)]));
    assert!(activity.last_seen.is_empty());
    assert_eq!(activity.revision, 1);
    assert_eq!(loaded["nobody"], Default::default());

    store.record(&[event("again", "u1", "visit", at(0, 11, 0))]).await.unwrap();
    let loaded = store.load_many(&users[..1], &query(std::slice::from_ref(&visit), 1, &[]), today()).await.unwrap();
    assert_eq!(loaded["u1"].counts.keys().collect::<Vec<_>>(), [&visit]);
    assert_eq!(loaded["u1"].counts[&visit], per_day(&[(0, 2)]));
    assert_eq!(loaded["u1"].revision, 2);
    // Nothing asked but the revision, which a backfill's guard needs.
    let loaded = store.load_many(&users[..1], &query(&[], 0, &[]), today()).await.unwrap();
    assert!(loaded["u1"].counts.is_empty() && loaded["u1"].last_seen.is_empty());
    assert_eq!(loaded["u1"].revision, 2);
}

async fn last_seen_keeps_the_latest_time_even_when_an_older_event_arrives_later(store: &dyn ActivityStore) {
    let latest = at(0, 10, 0) + Duration::nanoseconds(123_456_789);
    store.record(&[event("a", "u1", "login", at(1, 9, 0)), event("b", "u1", "login", latest)]).await.unwrap();
    store.record(&[event("late", "u1", "login", at(0, 9, 59))]).await.unwrap();
    let users = ["u1".to_owned()];
    let asked = query(&[], 0, &["login", "never"]);
    let loaded = store.load_many(&users, &asked, today()).await.unwrap();
    assert_eq!(loaded["u1"].last_seen, [("login".to_owned(), latest)].into());

    let newer = at(0, 10, 1);
    store.record(&[event("c", "u1", "login", newer)]).await.unwrap();
    let loaded = store.load_many(&users, &asked, today()).await.unwrap();
    assert_eq!(loaded["u1"].last_seen("login"), Some(newer));
}

async fn more_events_for_one_user_than_a_transaction_holds_are_all_counted_once(store: &dyn ActivityStore) {
    let events: Vec<ActivityEvent> = (0..150)
        .map(|i| {
            let plan = if i % 2 == 0 { "pro" } else { "free" };
            let e = event(&format!("e{i}"), "u1", "order", at(i % 3, 12, 0));
            with(e, json!({"plan": plan, "slot": i % 5}))
        })
        .collect();
    assert_eq!(store.record(&events).await.unwrap(), Recorded { counted: 150, duplicates: 0 });
    // Sent again (a producer's retry): nothing more is counted.
    assert_eq!(store.record(&events).await.unwrap(), Recorded { counted: 0, duplicates: 150 });

    let total = CounterKey::total("order");
    let pro = CounterKey::property("order", "plan", "pro");
    let slot = CounterKey::property("order", "slot", "4");
    let asked = query(&[total.clone(), pro.clone(), slot.clone()], 3, &["order"]);
    let loaded = store.load_many(&["u1".to_owned()], &asked, today()).await.unwrap();
    let activity = &loaded["u1"];
    let days = || (0..3).map(|ago| today().checked_sub_days(chrono::Days::new(ago)).unwrap());
    assert_eq!(activity.count(&total, days()), 150);
    assert_eq!(activity.count(&pro, days()), 75);
    assert_eq!(activity.count(&slot, days()), 30);
    assert_eq!(activity.counts[&total], per_day(&[(0, 50), (1, 50), (2, 50)]));
    assert_eq!(activity.last_seen("order"), Some(at(0, 12, 0)));
    assert!(activity.revision >= 1);
}
