//! The DynamoDB adapters of segmentation against moto: activity counters, segments, the
//! members table and the profile scan behave as the in-memory stores of herald-core do.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use herald_aws::{DynamoActivityStore, DynamoMembershipStore, DynamoProfileStore, DynamoSegmentStore};
use herald_core::{
    activity::{ActivityEvent, ActivityQuery, ActivityStore, CounterKey, Recorded},
    profiles::{Profile, ProfileScan, ProfileStore},
    segments::{
        Backfill, BackfillProgress, Evaluated, MEMBER_SHARDS, MembershipChange, MembershipStore, MembershipWrite,
        Segment, SegmentKind, SegmentState, SegmentStore, shard_of,
    },
    store::StoreError,
};
use herald_e2e::start_stack;
use herald_local::LocalStack;
use serde_json::json;

fn table(stack: &LocalStack, logical_id: &str) -> String {
    stack.physical_names().get(logical_id).unwrap_or_else(|| panic!("the stack has no {logical_id}")).clone()
}

fn activity_store(stack: &LocalStack) -> DynamoActivityStore {
    DynamoActivityStore::new(stack.clients.dynamodb.clone(), table(stack, "ActivityTable"))
}

fn segment_store(stack: &LocalStack) -> DynamoSegmentStore {
    DynamoSegmentStore::new(stack.clients.dynamodb.clone(), table(stack, "SegmentsTable"))
}

fn membership_store(stack: &LocalStack) -> DynamoMembershipStore {
    DynamoMembershipStore::new(
        stack.clients.dynamodb.clone(),
        table(stack, "MembersTable"),
        table(stack, "ProfilesTable"),
        table(stack, "ActivityTable"),
    )
}

fn profile_store(stack: &LocalStack) -> DynamoProfileStore {
    DynamoProfileStore::new(stack.clients.dynamodb.clone(), table(stack, "ProfilesTable"))
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

#[tokio::test]
async fn a_repeated_event_id_is_counted_once_within_a_batch_and_across_calls() {
    let stack = start_stack().await;
    let store = activity_store(&stack);
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
    stack.stop().await;
}

#[tokio::test]
async fn counters_are_per_utc_day_and_per_property_value() {
    let stack = start_stack().await;
    let store = activity_store(&stack);
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
    stack.stop().await;
}

#[tokio::test]
async fn load_many_reads_only_the_asked_counters_and_days_and_the_revision_grows_per_record() {
    let stack = start_stack().await;
    let store = activity_store(&stack);
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
    stack.stop().await;
}

#[tokio::test]
async fn last_seen_keeps_the_latest_time_even_when_an_older_event_arrives_later() {
    let stack = start_stack().await;
    let store = activity_store(&stack);
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
    stack.stop().await;
}

#[tokio::test]
async fn more_events_for_one_user_than_a_transaction_holds_are_all_counted_once() {
    let stack = start_stack().await;
    let store = activity_store(&stack);
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
    stack.stop().await;
}

fn segment(id: &str, version: u64, parts: u32) -> Segment {
    let now = Utc::now();
    Segment {
        segment_id: id.into(),
        name: format!("Segment {id}"),
        description: Some("for tests".into()),
        kind: SegmentKind::Dynamic,
        rule: Some(
            json!({"attribute": "plan", "in": ["pro"], "weights": [1.0, 2.5, -7, 12345678901234567890u64, 0.1]}),
        ),
        reads: herald_core::segments::rules::Reads {
            attributes: ["plan".to_owned()].into(),
            events: ["order".to_owned()].into(),
            ..Default::default()
        },
        version,
        state: SegmentState::Backfilling,
        backfill: Backfill { parts, started_at: Some(now), ..Default::default() },
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test]
async fn a_segment_round_trips_with_its_rule_exactly_and_the_catalog_item_is_not_listed() {
    let stack = start_stack().await;
    let store = segment_store(&stack);
    let saved = segment("s1", 1, 4);
    store.create(&saved).await.unwrap();
    let mut empty = segment("s2", 1, 1);
    empty.kind = SegmentKind::Static;
    empty.rule = None;
    empty.description = None;
    empty.reads = Default::default();
    store.create(&empty).await.unwrap();

    let loaded = store.get("s1").await.unwrap().unwrap();
    assert_eq!(loaded, saved);
    assert_eq!(loaded.rule.unwrap().to_string(), saved.rule.unwrap().to_string());
    assert_eq!(store.get("s2").await.unwrap().unwrap(), empty);
    assert_eq!(store.get("nothing").await.unwrap(), None);
    let mut ids: Vec<String> = store.list().await.unwrap().into_iter().map(|s| s.segment_id).collect();
    ids.sort();
    assert_eq!(ids, ["s1", "s2"]);
    stack.stop().await;
}

#[tokio::test]
async fn creating_an_existing_or_deleted_segment_conflicts_and_every_change_bumps_the_catalog_revision() {
    let stack = start_stack().await;
    let store = segment_store(&stack);
    assert_eq!(store.catalog_revision().await.unwrap(), 0);
    store.create(&segment("s1", 1, 1)).await.unwrap();
    assert_eq!(store.catalog_revision().await.unwrap(), 1);

    let mut other = segment("s1", 1, 1);
    other.name = "another".into();
    assert!(matches!(store.create(&other).await, Err(StoreError::Conflict)));
    assert_eq!(store.get("s1").await.unwrap().unwrap().name, "Segment s1");
    assert_eq!(store.catalog_revision().await.unwrap(), 1);

    store.replace(&segment("s1", 2, 1), 1).await.unwrap();
    assert_eq!(store.catalog_revision().await.unwrap(), 2);
    assert!(store.delete("s1").await.unwrap());
    assert_eq!(store.catalog_revision().await.unwrap(), 3);
    assert!(store.delete("s1").await.unwrap(), "a retried delete finds the tombstone");
    assert!(!store.delete("never").await.unwrap());
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(store.get("s1").await.unwrap(), None);
    assert!(matches!(store.create(&segment("s1", 1, 1)).await, Err(StoreError::Conflict)), "ids are not reused");
    stack.stop().await;
}

#[tokio::test]
async fn replacing_a_segment_with_a_stale_version_conflicts() {
    let stack = start_stack().await;
    let store = segment_store(&stack);
    store.create(&segment("s1", 1, 1)).await.unwrap();
    store.replace(&segment("s1", 2, 1), 1).await.unwrap();
    let mut stale = segment("s1", 2, 1);
    stale.name = "stale".into();
    assert!(matches!(store.replace(&stale, 1).await, Err(StoreError::Conflict)));
    assert!(matches!(store.replace(&segment("absent", 2, 1), 1).await, Err(StoreError::Conflict)));
    assert_eq!(store.get("s1").await.unwrap().unwrap().name, "Segment s1");
    assert_eq!(store.get("absent").await.unwrap(), None);
    assert_eq!(store.catalog_revision().await.unwrap(), 2);
    stack.stop().await;
}

#[tokio::test]
async fn add_progress_makes_the_segment_ready_after_the_last_part_and_ignores_another_version() {
    let stack = start_stack().await;
    let store = segment_store(&stack);
    store.create(&segment("s1", 1, 2)).await.unwrap();
    let page = |scanned, entered, exited| BackfillProgress { profiles_scanned: scanned, entered, exited };
    let finished = Utc::now();

    let now = store.add_progress("s1", 1, &page(10, 3, 1), None, finished).await.unwrap().unwrap();
    assert_eq!((now.backfill.profiles_scanned, now.backfill.entered, now.backfill.exited), (10, 3, 1));
    assert_eq!((now.backfill.parts_done, now.state), (0, SegmentState::Backfilling));

    let now = store.add_progress("s1", 1, &page(5, 1, 0), Some(0), finished).await.unwrap().unwrap();
    assert_eq!((now.backfill.profiles_scanned, now.backfill.parts_done), (15, 1));
    assert_eq!(now.state, SegmentState::Backfilling);

    assert_eq!(store.add_progress("s1", 2, &page(100, 100, 0), Some(1), finished).await.unwrap(), None);
    assert_eq!(store.add_progress("absent", 1, &page(1, 1, 0), Some(1), finished).await.unwrap(), None);

    let now = store.add_progress("s1", 1, &page(7, 0, 2), Some(1), finished).await.unwrap().unwrap();
    assert_eq!(now.state, SegmentState::Ready);
    assert_eq!(now.backfill.finished_at, Some(finished));
    assert_eq!((now.backfill.profiles_scanned, now.backfill.entered, now.backfill.exited), (22, 4, 3));
    assert_eq!(now.backfill.parts_done, 2);
    assert_eq!(store.get("s1").await.unwrap().unwrap(), now);
    assert_eq!(store.get("absent").await.unwrap(), None);
    stack.stop().await;
}

#[tokio::test]
async fn a_finished_part_told_twice_counts_once() {
    let stack = start_stack().await;
    let store = segment_store(&stack);
    store.create(&segment("s1", 1, 2)).await.unwrap();
    let last_page = BackfillProgress { profiles_scanned: 5, entered: 1, exited: 0 };

    store.add_progress("s1", 1, &last_page, Some(0), Utc::now()).await.unwrap();
    let now = store.add_progress("s1", 1, &last_page, Some(0), Utc::now()).await.unwrap().unwrap();
    assert_eq!((now.backfill.parts_done, now.backfill.profiles_scanned), (1, 5));
    assert_eq!(now.state, SegmentState::Backfilling, "one of two parts is not the whole backfill");
    stack.stop().await;
}

fn change(segment: &str, user: &str, revision: u64) -> MembershipChange {
    MembershipChange { segment_id: segment.into(), user_id: user.into(), entered: true, revision, at: Utc::now() }
}

fn step(user: &str, expected: u64, segments: &[&str], entered: &[&str], exited: &[&str]) -> MembershipWrite {
    MembershipWrite {
        user_id: user.into(),
        expected_revision: expected,
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
        entered: entered.iter().map(|s| (*s).to_owned()).collect(),
        exited: exited.iter().map(|s| (*s).to_owned()).collect(),
        pending: entered.iter().map(|s| change(s, user, expected + 1)).collect(),
        guard: None,
    }
}

/// Every members row of a segment, shard after shard.
async fn all_members(store: &DynamoMembershipStore, segment_id: &str) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for shard in 0..MEMBER_SHARDS {
        let mut after = None;
        loop {
            let page = store.members(segment_id, shard, after.as_deref(), 100).await.unwrap();
            all.extend(page.user_ids);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    all
}

#[tokio::test]
async fn a_membership_write_moves_the_record_and_its_rows_together() {
    let stack = start_stack().await;
    let store = membership_store(&stack);
    let first = step("u1", 0, &["a", "b"], &["a", "b"], &[]);
    store.write(&first).await.unwrap();
    let record = store.user_segments("u1").await.unwrap();
    assert_eq!((record.revision, record.segments.clone()), (1, ["a".to_owned(), "b".to_owned()].into()));
    assert_eq!(record.pending, first.pending);
    assert_eq!(all_members(&store, "a").await, ["u1".to_owned()].into());

    store.write(&step("u1", 1, &[], &[], &["a", "b"])).await.unwrap();
    let record = store.user_segments("u1").await.unwrap();
    assert_eq!(record.revision, 2);
    assert!(record.segments.is_empty());
    assert!(all_members(&store, "a").await.is_empty());
    assert!(all_members(&store, "b").await.is_empty());
    assert_eq!(store.user_segments("nobody").await.unwrap(), Default::default());
    stack.stop().await;
}

#[tokio::test]
async fn a_membership_write_with_a_stale_revision_conflicts_and_writes_no_row() {
    let stack = start_stack().await;
    let store = membership_store(&stack);
    store.write(&step("u1", 0, &["a"], &["a"], &[])).await.unwrap();
    let stale = store.write(&step("u1", 0, &["a", "b"], &["b"], &[])).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let stale = store.write(&step("u1", 5, &["a", "b"], &["b"], &[])).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let never = store.write(&step("u2", 3, &["b"], &["b"], &[])).await;
    assert!(matches!(never, Err(StoreError::Conflict)), "{never:?}");
    assert!(all_members(&store, "b").await.is_empty());
    let record = store.user_segments("u1").await.unwrap();
    assert_eq!((record.revision, record.segments), (1, ["a".to_owned()].into()));
    stack.stop().await;
}

#[tokio::test]
async fn a_guarded_write_conflicts_once_the_profile_version_or_activity_revision_moved() {
    let stack = start_stack().await;
    let store = membership_store(&stack);
    let profiles = profile_store(&stack);
    let activity = activity_store(&stack);
    profiles.save(&Profile { version: 1, ..Profile::new("u1") }, 0).await.unwrap();
    profiles.save(&Profile { version: 2, ..Profile::new("u1") }, 1).await.unwrap();
    activity.record(&[event("e1", "u1", "order", at(0, 1, 0))]).await.unwrap();

    let guarded = |expected, profile_version, activity_revision| MembershipWrite {
        guard: Some(Evaluated { profile_version, activity_revision }),
        ..step("u1", expected, &["a"], &["a"], &[])
    };
    for (profile_version, activity_revision) in [(1, None), (0, None), (2, Some(0)), (2, Some(2))] {
        let moved = store.write(&guarded(0, profile_version, activity_revision)).await;
        assert!(matches!(moved, Err(StoreError::Conflict)), "{profile_version} {activity_revision:?}: {moved:?}");
    }
    assert_eq!(store.user_segments("u1").await.unwrap().revision, 0);
    assert!(all_members(&store, "a").await.is_empty());

    store.write(&guarded(0, 2, Some(1))).await.unwrap();
    assert_eq!(all_members(&store, "a").await, ["u1".to_owned()].into());
    // A user never stored and never active: both guards hold on absence.
    let absent = MembershipWrite {
        guard: Some(Evaluated { profile_version: 0, activity_revision: Some(0) }),
        ..step("ghost", 0, &[], &[], &[])
    };
    store.write(&absent).await.unwrap();
    stack.stop().await;
}

#[tokio::test]
async fn members_pages_through_a_shard_in_user_id_order() {
    let stack = start_stack().await;
    let store = membership_store(&stack);
    let shard = shard_of("user-000");
    let mine: Vec<String> =
        (0..400).map(|i| format!("user-{i:03}")).filter(|id| shard_of(id) == shard).take(7).collect();
    assert_eq!(mine.len(), 7);
    let others: Vec<String> = (0..20).map(|i| format!("other-{i}")).filter(|id| shard_of(id) != shard).collect();
    let mut shuffled: Vec<String> = mine.iter().rev().chain(&others).cloned().collect();
    shuffled.push(mine[0].clone());
    store.add_static("s", &shuffled).await.unwrap();

    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.members("s", shard, after.as_deref(), 3).await.unwrap();
        assert!(page.user_ids.len() <= 3);
        pages.push(page.user_ids.clone());
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages.len() < 10, "paging never ends");
    }
    assert_eq!(pages.concat(), mine);
    assert_eq!(pages[0], mine[..3]);
    assert!(store.members("other", shard, None, 3).await.unwrap().user_ids.is_empty());
    let all = all_members(&store, "s").await;
    assert_eq!(all.len(), mine.len() + others.len());
    stack.stop().await;
}

#[tokio::test]
async fn rows_among_finds_static_rows_and_remove_rows_removes_them() {
    let stack = start_stack().await;
    let store = membership_store(&stack);
    let many: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    store.add_static("big", &many).await.unwrap();
    store.add_static("small", &["u1".to_owned()]).await.unwrap();
    let asked = ["big".to_owned(), "small".to_owned(), "none".to_owned()];
    assert_eq!(store.rows_among("u1", &asked).await.unwrap(), ["big".to_owned(), "small".to_owned()].into());
    assert_eq!(store.rows_among("u2", &asked).await.unwrap(), ["big".to_owned()].into());
    assert!(store.rows_among("stranger", &asked).await.unwrap().is_empty());
    assert_eq!(all_members(&store, "big").await.len(), 60);

    store.remove_rows("big", &many[..50]).await.unwrap();
    assert_eq!(all_members(&store, "big").await, many[50..].iter().cloned().collect());
    assert_eq!(store.rows_among("u1", &asked).await.unwrap(), ["small".to_owned()].into());
    stack.stop().await;
}

#[tokio::test]
async fn clear_pending_empties_the_outbox_only_at_the_same_revision() {
    let stack = start_stack().await;
    let store = membership_store(&stack);
    assert!(!store.clear_pending("u1", 0).await.unwrap());
    store.write(&step("u1", 0, &["a"], &["a"], &[])).await.unwrap();
    store.write(&step("u1", 1, &["a", "b"], &["b"], &[])).await.unwrap();
    assert!(!store.clear_pending("u1", 1).await.unwrap());
    assert_eq!(store.user_segments("u1").await.unwrap().pending.len(), 1);
    assert!(store.clear_pending("u1", 2).await.unwrap());
    let record = store.user_segments("u1").await.unwrap();
    assert!(record.pending.is_empty());
    assert_eq!((record.revision, record.segments.len()), (2, 2));
    stack.stop().await;
}

#[tokio::test]
async fn user_segments_many_returns_the_users_written_and_omits_the_others() {
    let stack = start_stack().await;
    let store = membership_store(&stack);
    store.write(&step("u1", 0, &["a"], &["a"], &[])).await.unwrap();
    store.write(&step("u2", 0, &[], &[], &[])).await.unwrap();
    let users = ["u1".to_owned(), "u2".to_owned(), "u3".to_owned(), "u1".to_owned()];
    let many = store.user_segments_many(&users).await.unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many["u1"], store.user_segments("u1").await.unwrap());
    assert_eq!((many["u2"].revision, many["u2"].segments.len()), (1, 0));
    stack.stop().await;
}

#[tokio::test]
async fn a_profile_scan_over_four_parts_returns_every_profile_once_with_tombstones() {
    let stack = start_stack().await;
    let profiles = profile_store(&stack);
    let ids: Vec<String> = (0..30).map(|i| format!("p{i:02}")).collect();
    for id in &ids {
        profiles
            .save(&Profile { version: 1, email: Some(format!("{id}@example.com")), ..Profile::new(id) }, 0)
            .await
            .unwrap();
    }
    profiles.erase("p07", 2, 1).await.unwrap();

    let mut seen: BTreeMap<String, herald_core::profiles::StoredProfile> = BTreeMap::new();
    let mut pages = 0;
    for part in 0..4 {
        let mut cursor: Option<String> = None;
        loop {
            let page = profiles.scan_page(part, 4, cursor.as_deref(), 4).await.unwrap();
            pages += 1;
            assert!(page.profiles.len() <= 4);
            for (id, stored) in page.profiles {
                assert!(seen.insert(id.clone(), stored).is_none(), "{id} came twice");
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(pages < 100, "the scan never ends");
        }
    }
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ids);
    assert_eq!(seen["p07"], herald_core::profiles::StoredProfile { version: 2, profile: None });
    assert_eq!(seen["p08"].profile.as_ref().unwrap().email.as_deref(), Some("p08@example.com"));
    assert!(pages > 4, "pages of at most 4 profiles");
    stack.stop().await;
}
