//! `SegmentStore` and `MembershipStore`: segments with a catalog revision and tombstones,
//! backfill progress counted once per finished part; each user's memberships moved with
//! their members rows in one conditional step, guarded by the profile version and activity
//! revision a backfill read; each step's changes published once from its outbox (on moto,
//! what the relay publishes from the members table's stream); members paged per shard.

use std::{collections::BTreeSet, sync::Arc};

use chrono::Utc;
use herald_aws::{DynamoActivityStore, DynamoMembershipStore, DynamoProfileStore, DynamoSegmentStore};
use herald_core::{
    activity::{ActivityEvent, ActivityStore, memory::MemoryActivity},
    events::{MembershipChange, memory::MemoryBus},
    profiles::{Profile, ProfileStore, memory::MemoryProfiles},
    segments::{
        Backfill, BackfillProgress, Evaluated, MEMBER_SHARDS, MembershipStore, MembershipWrite, Segment, SegmentKind,
        SegmentState, SegmentStore,
        memory::{MemoryMemberships, MemorySegments},
        shard_of,
    },
    store::StoreError,
};
use serde_json::json;

contract!(segment_store: memory_segments, aws_segments;
    a_segment_round_trips_with_its_rule_exactly_and_the_catalog_item_is_not_listed,
    creating_an_existing_or_deleted_segment_conflicts_and_every_change_bumps_the_catalog_revision,
    replacing_a_segment_with_a_stale_version_conflicts,
    add_progress_makes_the_segment_ready_after_the_last_part_and_ignores_another_version,
    a_finished_part_told_twice_counts_once,
    a_part_finished_on_a_ready_segment_counts_but_does_not_finish_it_again,
);

contract!(membership_store: memory_members, aws_members;
    a_membership_write_moves_the_record_and_its_rows_together,
    a_membership_write_with_a_stale_revision_conflicts_and_writes_no_row,
    a_conflicting_first_write_leaves_no_user_record,
    a_guarded_write_conflicts_once_the_profile_version_or_activity_revision_moved,
    write_many_applies_each_write_whose_revision_holds,
    members_pages_through_a_shard_in_user_id_order,
    rows_among_finds_static_rows_and_remove_rows_removes_them,
    each_write_publishes_the_changes_of_its_outbox_once_in_order,
    only_the_changes_of_committed_writes_are_published,
    user_segments_many_returns_the_users_written_and_omits_the_others,
);

async fn memory_segments() -> Box<dyn SegmentStore> {
    Box::new(MemorySegments::default())
}

async fn aws_segments() -> Box<dyn SegmentStore> {
    let (clients, tables) = super::moto_tables(&["SegmentsTable"]).await;
    Box::new(DynamoSegmentStore::new(clients.dynamodb(), &tables["SegmentsTable"]))
}

/// The membership store with the profile and activity stores its guards read.
struct Members {
    memberships: Arc<dyn MembershipStore>,
    profiles: Arc<dyn ProfileStore>,
    activity: Arc<dyn ActivityStore>,
    outboxes: Outboxes,
}

/// Where the events the writes' outboxes published are seen.
enum Outboxes {
    Memory(Arc<MemoryMemberships>),
    /// The members table's stream, read from its start and handed to the relay.
    Stream {
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: String,
    },
}

impl Members {
    /// Every membership event the writes so far published, in order.
    async fn published(&self) -> Vec<MembershipChange> {
        let (dynamodb, streams, table) = match &self.outboxes {
            Outboxes::Memory(store) => return store.membership_changes(),
            Outboxes::Stream { dynamodb, streams, table } => (dynamodb, streams, table),
        };
        let described = dynamodb.describe_table().table_name(table).send().await.unwrap();
        let arn = described.table.and_then(|t| t.latest_stream_arn).expect("the members table has a stream");
        let stream = streams.describe_stream().stream_arn(&arn).send().await.unwrap();
        let mut records = Vec::new();
        for shard in stream.stream_description.and_then(|d| d.shards).unwrap_or_default() {
            let mut iterator = streams
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(shard.shard_id.unwrap())
                .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator;
            while let Some(current) = iterator {
                let read = streams.get_records().shard_iterator(current).send().await.unwrap();
                let got = read.records.unwrap_or_default();
                iterator = if got.is_empty() { None } else { read.next_shard_iterator };
                records.extend(got);
            }
        }
        let event = serde_json::from_value(herald_local::streams::lambda_event(&records, &arn)).unwrap();
        let bus = Arc::new(MemoryBus::default());
        let answer = herald_relay::RelayHandler::new(bus.clone()).handle(event).await;
        assert!(answer.batch_item_failures.is_empty(), "the relay reads every record");
        let published = bus.published.lock().unwrap();
        published.iter().map(|e| serde_json::from_str(&e.detail_json()).unwrap()).collect()
    }
}

async fn memory_members() -> Box<Members> {
    let profiles = Arc::new(MemoryProfiles::default());
    let activity = Arc::new(MemoryActivity::default());
    let memberships = Arc::new(MemoryMemberships::default());
    let (p, a) = (profiles.clone(), activity.clone());
    // The guard as the adapter checks it: the stored profile version (0: no record) and,
    // when the guard names one, the activity revision (0: no activity).
    *memberships.guard_check.lock().unwrap() = Some(Box::new(move |user_id: &str, guard: &Evaluated| {
        let version = p.records.lock().unwrap().get(user_id).map_or(0, |r| r.version);
        let revision = a.users.lock().unwrap().get(user_id).map_or(0, |(activity, _)| activity.revision);
        version == guard.profile_version && guard.activity_revision.is_none_or(|r| r == revision)
    }));
    let outboxes = Outboxes::Memory(memberships.clone());
    Box::new(Members { memberships, profiles, activity, outboxes })
}

async fn aws_members() -> Box<Members> {
    let (clients, tables) = super::moto_tables(&["MembersTable", "ProfilesTable", "ActivityTable"]).await;
    let db = &clients.dynamodb();
    Box::new(Members {
        memberships: Arc::new(DynamoMembershipStore::new(
            db.clone(),
            &tables["MembersTable"],
            &tables["ProfilesTable"],
            &tables["ActivityTable"],
        )),
        profiles: Arc::new(DynamoProfileStore::new(db.clone(), &tables["ProfilesTable"])),
        activity: Arc::new(DynamoActivityStore::new(db.clone(), &tables["ActivityTable"])),
        outboxes: Outboxes::Stream {
            dynamodb: db.clone(),
            streams: aws_sdk_dynamodbstreams::Client::new(&clients.sdk_config),
            table: tables["MembersTable"].clone(),
        },
    })
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

async fn a_segment_round_trips_with_its_rule_exactly_and_the_catalog_item_is_not_listed(store: &dyn SegmentStore) {
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
}

async fn creating_an_existing_or_deleted_segment_conflicts_and_every_change_bumps_the_catalog_revision(
    store: &dyn SegmentStore,
) {
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
}

async fn replacing_a_segment_with_a_stale_version_conflicts(store: &dyn SegmentStore) {
    store.create(&segment("s1", 1, 1)).await.unwrap();
    store.replace(&segment("s1", 2, 1), 1).await.unwrap();
    let mut stale = segment("s1", 2, 1);
    stale.name = "stale".into();
    assert!(matches!(store.replace(&stale, 1).await, Err(StoreError::Conflict)));
    assert!(matches!(store.replace(&segment("absent", 2, 1), 1).await, Err(StoreError::Conflict)));
    assert_eq!(store.get("s1").await.unwrap().unwrap().name, "Segment s1");
    assert_eq!(store.get("absent").await.unwrap(), None);
    assert_eq!(store.catalog_revision().await.unwrap(), 2);
}

async fn add_progress_makes_the_segment_ready_after_the_last_part_and_ignores_another_version(
    store: &dyn SegmentStore,
) {
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
}

async fn a_finished_part_told_twice_counts_once(store: &dyn SegmentStore) {
    store.create(&segment("s1", 1, 2)).await.unwrap();
    let last_page = BackfillProgress { profiles_scanned: 5, entered: 1, exited: 0 };

    store.add_progress("s1", 1, &last_page, Some(0), Utc::now()).await.unwrap();
    let now = store.add_progress("s1", 1, &last_page, Some(0), Utc::now()).await.unwrap().unwrap();
    assert_eq!((now.backfill.parts_done, now.backfill.profiles_scanned), (1, 5));
    assert_eq!(now.state, SegmentState::Backfilling, "one of two parts is not the whole backfill");
}

async fn a_part_finished_on_a_ready_segment_counts_but_does_not_finish_it_again(store: &dyn SegmentStore) {
    let ready = Segment { state: SegmentState::Ready, ..segment("s1", 1, 1) };
    store.create(&ready).await.unwrap();
    let page = BackfillProgress { profiles_scanned: 3, entered: 1, exited: 0 };

    let now = store.add_progress("s1", 1, &page, Some(0), Utc::now()).await.unwrap().unwrap();

    assert_eq!((now.backfill.parts_done, now.backfill.profiles_scanned), (1, 3));
    assert_eq!((now.state, now.backfill.finished_at), (SegmentState::Ready, None));
    assert_eq!(store.get("s1").await.unwrap().unwrap(), now);
}

fn change(segment: &str, user: &str, entered: bool, revision: u64) -> MembershipChange {
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    MembershipChange { segment_id: segment.into(), user_id: user.into(), entered, revision, at }
}

fn step(user: &str, expected: u64, segments: &[&str], entered: &[&str], exited: &[&str]) -> MembershipWrite {
    MembershipWrite {
        user_id: user.into(),
        expected_revision: expected,
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
        entered: entered.iter().map(|s| (*s).to_owned()).collect(),
        exited: exited.iter().map(|s| (*s).to_owned()).collect(),
        outbox: (entered.iter().map(|s| change(s, user, true, expected + 1)))
            .chain(exited.iter().map(|s| change(s, user, false, expected + 1)))
            .collect(),
        guard: None,
    }
}

/// Every members row of a segment, shard after shard.
async fn all_members(store: &dyn MembershipStore, segment_id: &str) -> BTreeSet<String> {
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

async fn a_membership_write_moves_the_record_and_its_rows_together(subject: &Members) {
    let store = &*subject.memberships;
    let first = step("u1", 0, &["a", "b"], &["a", "b"], &[]);
    store.write(&first).await.unwrap();
    let record = store.user_segments("u1").await.unwrap();
    assert_eq!((record.revision, record.segments.clone()), (1, ["a".to_owned(), "b".to_owned()].into()));
    assert!(record.legacy_pending.is_empty());
    assert_eq!(all_members(store, "a").await, ["u1".to_owned()].into());

    store.write(&step("u1", 1, &[], &[], &["a", "b"])).await.unwrap();
    let record = store.user_segments("u1").await.unwrap();
    assert_eq!(record.revision, 2);
    assert!(record.segments.is_empty());
    assert!(all_members(store, "a").await.is_empty());
    assert!(all_members(store, "b").await.is_empty());
    assert_eq!(store.user_segments("nobody").await.unwrap(), Default::default());
}

async fn a_membership_write_with_a_stale_revision_conflicts_and_writes_no_row(subject: &Members) {
    let store = &*subject.memberships;
    store.write(&step("u1", 0, &["a"], &["a"], &[])).await.unwrap();
    let stale = store.write(&step("u1", 0, &["a", "b"], &["b"], &[])).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let stale = store.write(&step("u1", 5, &["a", "b"], &["b"], &[])).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let never = store.write(&step("u2", 3, &["b"], &["b"], &[])).await;
    assert!(matches!(never, Err(StoreError::Conflict)), "{never:?}");
    assert!(all_members(store, "b").await.is_empty());
    let record = store.user_segments("u1").await.unwrap();
    assert_eq!((record.revision, record.segments), (1, ["a".to_owned()].into()));
}

async fn a_guarded_write_conflicts_once_the_profile_version_or_activity_revision_moved(subject: &Members) {
    let store = &*subject.memberships;
    let (profiles, activity) = (&subject.profiles, &subject.activity);
    profiles.save(&Profile { version: 1, ..Profile::new("u1") }, 0, &[]).await.unwrap();
    profiles.save(&Profile { version: 2, ..Profile::new("u1") }, 1, &[]).await.unwrap();
    let order = ActivityEvent {
        event_id: "e1".into(),
        user_id: "u1".into(),
        name: "order".into(),
        timestamp: Utc::now(),
        properties: Default::default(),
    };
    activity.record(&[order]).await.unwrap();

    let guarded = |expected, profile_version, activity_revision| MembershipWrite {
        guard: Some(Evaluated { profile_version, activity_revision }),
        ..step("u1", expected, &["a"], &["a"], &[])
    };
    for (profile_version, activity_revision) in [(1, None), (0, None), (2, Some(0)), (2, Some(2))] {
        let moved = store.write(&guarded(0, profile_version, activity_revision)).await;
        assert!(matches!(moved, Err(StoreError::Conflict)), "{profile_version} {activity_revision:?}: {moved:?}");
    }
    assert_eq!(store.user_segments("u1").await.unwrap().revision, 0);
    assert!(all_members(store, "a").await.is_empty());

    store.write(&guarded(0, 2, Some(1))).await.unwrap();
    assert_eq!(all_members(store, "a").await, ["u1".to_owned()].into());
    // A user never stored and never active: both guards hold on absence.
    let absent = MembershipWrite {
        guard: Some(Evaluated { profile_version: 0, activity_revision: Some(0) }),
        ..step("ghost", 0, &[], &[], &[])
    };
    store.write(&absent).await.unwrap();
}

async fn members_pages_through_a_shard_in_user_id_order(subject: &Members) {
    let store = &*subject.memberships;
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
    let all = all_members(store, "s").await;
    assert_eq!(all.len(), mine.len() + others.len());
}

async fn rows_among_finds_static_rows_and_remove_rows_removes_them(subject: &Members) {
    let store = &*subject.memberships;
    let many: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    store.add_static("big", &many).await.unwrap();
    store.add_static("small", &["u1".to_owned()]).await.unwrap();
    let asked = ["big".to_owned(), "small".to_owned(), "none".to_owned()];
    assert_eq!(store.rows_among("u1", &asked).await.unwrap(), ["big".to_owned(), "small".to_owned()].into());
    assert_eq!(store.rows_among("u2", &asked).await.unwrap(), ["big".to_owned()].into());
    assert!(store.rows_among("stranger", &asked).await.unwrap().is_empty());
    assert_eq!(all_members(store, "big").await.len(), 60);

    store.remove_rows("big", &many[..50]).await.unwrap();
    assert_eq!(all_members(store, "big").await, many[50..].iter().cloned().collect());
    assert_eq!(store.rows_among("u1", &asked).await.unwrap(), ["small".to_owned()].into());
}

async fn each_write_publishes_the_changes_of_its_outbox_once_in_order(subject: &Members) {
    let store = &*subject.memberships;
    store.write(&step("u1", 0, &["a", "b"], &["a", "b"], &[])).await.unwrap();
    store.write(&step("u1", 1, &["b"], &[], &["a"])).await.unwrap();

    let published = subject.published().await;

    let expected = [change("a", "u1", true, 1), change("b", "u1", true, 1), change("a", "u1", false, 2)];
    assert_eq!(published, expected);
}

async fn only_the_changes_of_committed_writes_are_published(subject: &Members) {
    let store = &*subject.memberships;
    // A step that only forgets a deleted segment.
    store.write(&MembershipWrite { outbox: Vec::new(), ..step("u1", 0, &[], &[], &[]) }).await.unwrap();
    let stale = store.write(&step("u1", 0, &["a"], &["a"], &[])).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    // The record's revision holds, its guard does not (the profile was never stored).
    let moved = MembershipWrite {
        guard: Some(Evaluated { profile_version: 3, activity_revision: None }),
        ..step("u1", 1, &["a"], &["a"], &[])
    };
    assert!(matches!(store.write(&moved).await, Err(StoreError::Conflict)));
    assert_eq!(store.write_many(&[step("u2", 0, &["a"], &["a"], &[]), moved]).await.unwrap(), [true, false]);
    store.add_static("vip", &["u1".to_owned(), "u2".to_owned()]).await.unwrap();
    store.remove_rows("vip", &["u2".to_owned()]).await.unwrap();

    // A write without changes, conflicting ones and members rows publish nothing; the
    // step written in the same transaction as a failed guard's, once that is left out.
    assert_eq!(subject.published().await, [change("a", "u2", true, 1)]);
}

async fn user_segments_many_returns_the_users_written_and_omits_the_others(subject: &Members) {
    let store = &*subject.memberships;
    store.write(&step("u1", 0, &["a"], &["a"], &[])).await.unwrap();
    store.write(&step("u2", 0, &[], &[], &[])).await.unwrap();
    let users = ["u1".to_owned(), "u2".to_owned(), "u3".to_owned(), "u1".to_owned()];
    let many = store.user_segments_many(&users).await.unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many["u1"], store.user_segments("u1").await.unwrap());
    assert_eq!((many["u2"].revision, many["u2"].segments.len()), (1, 0));
}

async fn a_conflicting_first_write_leaves_no_user_record(subject: &Members) {
    let store = &*subject.memberships;
    let never = store.write(&step("u1", 3, &["a"], &["a"], &[])).await;
    assert!(matches!(never, Err(StoreError::Conflict)), "{never:?}");
    assert!(store.user_segments_many(&["u1".to_owned()]).await.unwrap().is_empty());
    assert_eq!(store.user_segments("u1").await.unwrap(), Default::default());
    // The record is still to be made: a write from revision 0 makes it.
    store.write(&step("u1", 0, &["a"], &["a"], &[])).await.unwrap();
    assert_eq!(store.user_segments("u1").await.unwrap().revision, 1);
}

async fn write_many_applies_each_write_whose_revision_holds(subject: &Members) {
    let store = &*subject.memberships;
    store.write(&step("u2", 0, &["a"], &["a"], &[])).await.unwrap();
    let writes = [
        step("u1", 0, &["a"], &["a"], &[]),
        step("u2", 0, &["a", "b"], &["b"], &[]),
        step("u3", 0, &["b"], &["b"], &[]),
    ];

    assert_eq!(store.write_many(&writes).await.unwrap(), [true, false, true]);

    assert_eq!(all_members(store, "a").await, ["u1".to_owned(), "u2".to_owned()].into());
    assert_eq!(all_members(store, "b").await, ["u3".to_owned()].into());
    assert_eq!(store.user_segments("u2").await.unwrap().segments, ["a".to_owned()].into());
    assert_eq!(store.write_many(&[]).await.unwrap(), Vec::<bool>::new());
}
