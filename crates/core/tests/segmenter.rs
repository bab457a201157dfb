//! The segmenter over the in-memory stores: what a profile change writes and puts in the
//! membership record's outbox (the in-memory store publishes it as the relay would),
//! that redelivery is harmless, what an erasure does, and that a backfill (driven page by
//! page through the jobs it publishes on the bus) ends with exactly the members a direct
//! evaluation gives, even when its writes lose races or a user's change spans several
//! writes.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use herald_core::{
    activity::{Activity, ActivityEvent, ActivityStore, memory::MemoryActivity},
    events::{DomainEvent, MembershipChange, SegmentTask, memory::MemoryBus},
    profiles::{Profile, ProfileStore, StoredProfile, memory::MemoryProfiles},
    segments::{
        Change, Evaluated, MAX_ROWS_PER_WRITE, MembersPage, MembershipStore, MembershipWrite, PageOutcome,
        SegmentInput, SegmentKind, SegmentService, SegmentState, Segmenter, UserSegments, Work,
        memory::{MemoryMemberships, MemorySegments},
        rules::{Rule, Subject},
    },
    store::StoreError,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 15, 12, 0, 0).unwrap()
}

/// A profile store that counts strongly consistent reads: a change no segment reads
/// must not even read the profile.
#[derive(Default)]
struct CountedProfiles {
    inner: Arc<MemoryProfiles>,
    loads: AtomicUsize,
}

#[async_trait]
impl ProfileStore for CountedProfiles {
    async fn load(&self, user_id: &str) -> Result<Option<StoredProfile>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(user_id).await
    }

    async fn load_many(
        &self,
        user_ids: &[String],
    ) -> Result<std::collections::HashMap<String, StoredProfile>, StoreError> {
        self.inner.load_many(user_ids).await
    }

    async fn save(&self, profile: &Profile, expected_version: u64, outbox: &[DomainEvent]) -> Result<(), StoreError> {
        self.inner.save(profile, expected_version, outbox).await
    }

    async fn erase(
        &self,
        user_id: &str,
        version: u64,
        expected_version: u64,
        outbox: &[DomainEvent],
    ) -> Result<(), StoreError> {
        self.inner.erase(user_id, version, expected_version, outbox).await
    }
}

/// Memberships whose chosen writes lose a race (Conflict, nothing written), as when
/// another segmenter wrote the user's record in between; counts the writes tried.
#[derive(Default)]
struct RacingMemberships {
    inner: Arc<MemoryMemberships>,
    writes: AtomicUsize,
    /// Numbers (1-based) of the writes that lose.
    losing: Mutex<BTreeSet<usize>>,
}

#[async_trait]
impl MembershipStore for RacingMemberships {
    async fn user_segments(&self, user_id: &str) -> Result<UserSegments, StoreError> {
        self.inner.user_segments(user_id).await
    }

    async fn user_segments_many(
        &self,
        user_ids: &[String],
    ) -> Result<std::collections::HashMap<String, UserSegments>, StoreError> {
        self.inner.user_segments_many(user_ids).await
    }

    async fn write(&self, write: &MembershipWrite) -> Result<(), StoreError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.losing.lock().unwrap().contains(&n) {
            return Err(StoreError::Conflict);
        }
        self.inner.write(write).await
    }

    async fn write_many(&self, writes: &[MembershipWrite]) -> Result<Vec<bool>, StoreError> {
        let mut applied = Vec::with_capacity(writes.len());
        for write in writes {
            applied.push(match self.write(write).await {
                Ok(()) => true,
                Err(StoreError::Conflict) => false,
                Err(e) => return Err(e),
            });
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
        self.inner.members(segment_id, shard, after, limit).await
    }

    async fn add_static(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        self.inner.add_static(segment_id, user_ids).await
    }

    async fn remove_rows(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        self.inner.remove_rows(segment_id, user_ids).await
    }

    async fn rows_among(&self, user_id: &str, segment_ids: &[String]) -> Result<BTreeSet<String>, StoreError> {
        self.inner.rows_among(user_id, segment_ids).await
    }
}

struct World {
    profiles: Arc<MemoryProfiles>,
    counted: Arc<CountedProfiles>,
    activity: Arc<MemoryActivity>,
    members: Arc<MemoryMemberships>,
    racing: Arc<RacingMemberships>,
    segments: Arc<MemorySegments>,
    bus: Arc<MemoryBus>,
    service: SegmentService,
    segmenter: Segmenter,
}

impl World {
    /// Backfills scan in `parts` parts.
    fn new(parts: u32) -> Self {
        let profiles = Arc::new(MemoryProfiles::default());
        let counted = Arc::new(CountedProfiles { inner: profiles.clone(), ..Default::default() });
        let activity = Arc::new(MemoryActivity::default());
        let segments = Arc::new(MemorySegments::default());
        let members = Arc::new(MemoryMemberships::default());
        let racing = Arc::new(RacingMemberships { inner: members.clone(), ..Default::default() });
        let bus = Arc::new(MemoryBus::default());
        let service = SegmentService::new(segments.clone(), racing.clone(), bus.clone(), parts);
        let segmenter = Segmenter::new(
            counted.clone(),
            profiles.clone(),
            activity.clone(),
            segments.clone(),
            racing.clone(),
            bus.clone(),
        );
        World { profiles, counted, activity, members, racing, segments, bus, service, segmenter }
    }

    /// Saves the user's profile with these attributes (the next version).
    fn put(&self, user_id: &str, attributes: &[(&str, &[&str])]) {
        let mut records = self.profiles.records.lock().unwrap();
        let version = records.get(user_id).map_or(0, |r| r.version) + 1;
        let mut profile = Profile::new(user_id);
        profile.version = version;
        profile.updated_at = now();
        profile.attributes = attributes
            .iter()
            .map(|(name, values)| (name.to_string(), values.iter().map(|v| v.to_string()).collect()))
            .collect();
        records.insert(user_id.to_owned(), StoredProfile { version, profile: Some(profile) });
    }

    fn erase(&self, user_id: &str) {
        let mut records = self.profiles.records.lock().unwrap();
        let version = records.get(user_id).map_or(0, |r| r.version) + 1;
        records.insert(user_id.to_owned(), StoredProfile { version, profile: None });
    }

    /// Creates a dynamic segment through the service and runs its backfill to the end.
    async fn dynamic(&self, segment_id: &str, rule: Value) {
        let input = SegmentInput {
            name: segment_id.into(),
            description: None,
            kind: SegmentKind::Dynamic,
            rule: Some(rule),
            user_ids: None,
        };
        self.service.create(Some(segment_id.into()), input, now()).await.unwrap();
        self.backfill().await;
    }

    /// Runs the segment jobs on the bus, and those they publish, until none is left;
    /// returns what each page did. Other events stay on the bus.
    async fn backfill(&self) -> Vec<PageOutcome> {
        let mut outcomes = Vec::new();
        loop {
            let jobs: Vec<SegmentTask> = {
                let mut published = self.bus.published.lock().unwrap();
                let (jobs, rest): (Vec<DomainEvent>, Vec<DomainEvent>) =
                    std::mem::take(&mut *published).into_iter().partition(|e| matches!(e, DomainEvent::SegmentTask(_)));
                *published = rest;
                jobs.into_iter()
                    .map(|e| match e {
                        DomainEvent::SegmentTask(job) => job,
                        _ => unreachable!(),
                    })
                    .collect()
            };
            if jobs.is_empty() {
                return outcomes;
            }
            let catalog = self.segmenter.catalog().await.unwrap();
            for job in &jobs {
                outcomes.push(self.segmenter.backfill_page(&catalog, job, now()).await.unwrap());
            }
        }
    }

    async fn change(&self, user_id: &str, change: Change) {
        let catalog = self.segmenter.catalog().await.unwrap();
        self.segmenter.evaluate_user(&catalog, user_id, &change, now()).await.unwrap();
    }

    async fn attributes_changed(&self, user_id: &str, names: &[&str]) {
        let change = Change { attributes: names.iter().map(|n| n.to_string()).collect(), ..Default::default() };
        self.change(user_id, change).await;
    }

    /// Membership events the writes' outboxes published so far, and forgets them. The
    /// segmenter itself never puts one on the bus.
    fn take_memberships(&self) -> Vec<MembershipChange> {
        let on_bus = self.bus.published.lock().unwrap().iter().any(|e| matches!(e, DomainEvent::Membership(_)));
        assert!(!on_bus, "membership events go through the record's outbox only");
        let memberships = self.members.membership_changes();
        self.members.published.lock().unwrap().clear();
        memberships
    }

    /// A segmenter over the world's stores whose bus refuses every publish.
    fn segmenter_without_bus(&self) -> Segmenter {
        Segmenter::new(
            self.counted.clone(),
            self.profiles.clone(),
            self.activity.clone(),
            self.segments.clone(),
            self.racing.clone(),
            Arc::new(MemoryBus { fail: true, ..Default::default() }),
        )
    }

    fn record_of(&self, user_id: &str) -> UserSegments {
        self.members.users.lock().unwrap().get(user_id).cloned().unwrap_or_default()
    }

    /// Every user's record agrees with the members rows of the dynamic segments.
    fn assert_records_match_rows(&self, segment_ids: &[&str]) {
        let users = self.members.users.lock().unwrap();
        for segment_id in segment_ids {
            let rows = self.members.members_of(segment_id);
            let recorded: BTreeSet<String> =
                users.iter().filter(|(_, r)| r.segments.contains(*segment_id)).map(|(u, _)| u.clone()).collect();
            assert_eq!(rows, recorded, "rows and user records of {segment_id}");
        }
    }
}

fn ids(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

const PRO: &str = "pro";

fn pro_rule() -> Value {
    json!({"attribute": "plan", "any_of": ["pro"]})
}

// ---------------------------------------------------------------------------------------
// Changes.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_change_that_makes_the_user_match_publishes_one_entered_and_writes_the_row_and_the_record() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["free"])]);
    world.dynamic(PRO, pro_rule()).await;

    world.put("u1", &[("plan", &["pro"])]);
    world.attributes_changed("u1", &["plan"]).await;

    let events = world.take_memberships();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].segment_id.as_str(), events[0].user_id.as_str(), events[0].entered), (PRO, "u1", true));
    assert_eq!(DomainEvent::Membership(events[0].clone()).detail_type(), "segment.entered");
    assert_eq!(world.members.members_of(PRO), ids(&["u1"]));
    let record = world.record_of("u1");
    assert_eq!(record.segments, ids(&[PRO]));
    assert_eq!(events[0].revision, record.revision, "the event is the write's: its outbox, under its revision");
}

#[tokio::test]
async fn changing_back_publishes_one_exited_and_removes_the_row() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["pro"])]);
    world.dynamic(PRO, pro_rule()).await;
    assert_eq!(world.members.members_of(PRO), ids(&["u1"]), "the backfill made u1 a member");
    assert!(world.take_memberships().is_empty(), "a backfill publishes no entered");

    world.put("u1", &[("plan", &["free"])]);
    world.attributes_changed("u1", &["plan"]).await;

    let events = world.take_memberships();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].segment_id.as_str(), events[0].entered), (PRO, false));
    assert_eq!(DomainEvent::Membership(events[0].clone()).detail_type(), "segment.exited");
    assert!(world.members.members_of(PRO).is_empty());
    assert!(world.record_of("u1").segments.is_empty());
}

#[tokio::test]
async fn a_redelivered_change_publishes_nothing_more() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["free"])]);
    world.dynamic(PRO, pro_rule()).await;
    world.put("u1", &[("plan", &["pro"])]);
    world.attributes_changed("u1", &["plan"]).await;
    assert_eq!(world.take_memberships().len(), 1);
    let record = world.record_of("u1");

    world.attributes_changed("u1", &["plan"]).await;
    world.attributes_changed("u1", &["plan"]).await;

    assert!(world.take_memberships().is_empty());
    assert_eq!(world.record_of("u1"), record, "nothing is written again");
    assert_eq!(world.members.members_of(PRO), ids(&["u1"]));
}

#[tokio::test]
async fn a_redelivered_exit_publishes_nothing_more() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["pro"])]);
    world.dynamic(PRO, pro_rule()).await;
    world.put("u1", &[("plan", &["free"])]);
    world.attributes_changed("u1", &["plan"]).await;
    assert_eq!(world.take_memberships().len(), 1);

    world.attributes_changed("u1", &["plan"]).await;

    assert!(world.take_memberships().is_empty());
    assert!(world.members.members_of(PRO).is_empty());
}

#[tokio::test]
async fn a_change_is_written_with_its_entered_in_the_outbox_while_the_bus_refuses_everything() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["free"])]);
    world.dynamic(PRO, pro_rule()).await;
    let segmenter = world.segmenter_without_bus();

    world.put("u1", &[("plan", &["pro"])]);
    let catalog = segmenter.catalog().await.unwrap();
    let change = Change { attributes: ids(&["plan"]), ..Default::default() };
    segmenter.evaluate_user(&catalog, "u1", &change, now()).await.unwrap();

    assert_eq!(world.members.members_of(PRO), ids(&["u1"]));
    let events = world.take_memberships();
    let published: Vec<(&str, &str, bool)> =
        events.iter().map(|m| (m.segment_id.as_str(), m.user_id.as_str(), m.entered)).collect();
    assert_eq!(published, [(PRO, "u1", true)]);
}

#[tokio::test]
async fn a_write_that_changes_no_membership_publishes_nothing() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["pro"]), ("age", &["40"])]);
    world.dynamic(PRO, pro_rule()).await;
    world.dynamic("adults", json!({"attribute": "age", "gte": 18})).await;
    world.service.delete("adults").await.unwrap();
    let revision = world.record_of("u1").revision;

    // The record still names the deleted segment: this write only forgets it.
    world.attributes_changed("u1", &["plan"]).await;

    let record = world.record_of("u1");
    assert_eq!((record.revision, record.segments), (revision + 1, ids(&[PRO])));
    assert!(world.take_memberships().is_empty());
}

#[tokio::test]
async fn a_sweep_puts_the_exits_of_time_passing_in_the_outbox() {
    let world = World::new(2);
    let rule = json!({"attribute": "signed_up", "within_last_days": 3});
    world.put("new", &[("signed_up", &["2024-03-15"])]);
    world.put("newer", &[("signed_up", &["2024-03-15"])]);
    world.dynamic("new-users", rule).await;
    assert_eq!(world.members.members_of("new-users"), ids(&["new", "newer"]));
    assert!(world.take_memberships().is_empty(), "a backfill publishes nothing");

    // Backdated with no event, as the passing of days would.
    world.put("new", &[("signed_up", &["2024-03-01"])]);
    let swept = world.segmenter.run(&[Work::Task(SegmentTask::Sweep)], now()).await;
    assert!(swept.iter().all(Result::is_ok), "{swept:?}");
    world.backfill().await;

    let events = world.take_memberships();
    let published: Vec<(&str, &str, bool)> =
        events.iter().map(|m| (m.segment_id.as_str(), m.user_id.as_str(), m.entered)).collect();
    assert_eq!(published, [("new-users", "new", false)]);
    assert_eq!(events[0].revision, world.record_of("new").revision);
    assert_eq!(world.members.members_of("new-users"), ids(&["newer"]));
}

#[tokio::test]
async fn a_record_s_legacy_pending_is_carried_by_its_next_write_s_outbox_once() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["pro"])]);
    world.dynamic(PRO, pro_rule()).await;
    // Written before memberships had an outbox, and never published.
    let legacy =
        MembershipChange { segment_id: PRO.into(), user_id: "u1".into(), entered: true, revision: 1, at: now() };
    world.members.users.lock().unwrap().get_mut("u1").unwrap().legacy_pending = vec![legacy.clone()];

    world.attributes_changed("u1", &["plan"]).await;

    assert_eq!(world.take_memberships(), [legacy]);
    let record = world.record_of("u1");
    assert_eq!((record.revision, record.segments), (2, ids(&[PRO])));
    assert!(record.legacy_pending.is_empty());
    world.attributes_changed("u1", &["plan"]).await;
    assert!(world.take_memberships().is_empty(), "published once");
}

#[tokio::test]
async fn a_change_to_an_attribute_no_segment_reads_evaluates_nothing() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["pro"]), ("city", &["Lyon"])]);
    world.dynamic(PRO, pro_rule()).await;
    let record = world.record_of("u1");
    let loads = world.counted.loads.load(Ordering::SeqCst);
    let writes = world.racing.writes.load(Ordering::SeqCst);

    world.put("u1", &[("plan", &["pro"]), ("city", &["Paris"])]);
    world.attributes_changed("u1", &["city"]).await;

    assert_eq!(world.counted.loads.load(Ordering::SeqCst), loads, "the profile is not even read");
    assert_eq!(world.racing.writes.load(Ordering::SeqCst), writes, "nothing is written");
    assert_eq!(world.record_of("u1"), record);
    assert!(world.take_memberships().is_empty());
}

#[tokio::test]
async fn an_erased_profile_leaves_every_segment() {
    let world = World::new(1);
    world.dynamic(PRO, pro_rule()).await;
    world.dynamic("adults", json!({"attribute": "age", "gte": 18})).await;
    world.dynamic("not-free", json!({"not": {"attribute": "plan", "any_of": ["free"]}})).await;
    let input = SegmentInput {
        name: "vip".into(),
        description: None,
        kind: SegmentKind::Static,
        rule: None,
        user_ids: Some(vec!["u1".into(), "u2".into()]),
    };
    world.service.create(Some("vip".into()), input, now()).await.unwrap();
    let created = || Change { everything: true, ..Default::default() };
    world.put("u1", &[("plan", &["pro"]), ("age", &["40"])]);
    world.change("u1", created()).await;
    world.put("u2", &[("plan", &["pro"])]);
    world.change("u2", created()).await;
    assert_eq!(world.record_of("u1").segments, ids(&[PRO, "adults", "not-free"]));
    world.take_memberships();

    world.erase("u1");
    world.change("u1", Change { everything: true, ..Default::default() }).await;

    let exited: BTreeSet<String> = world
        .take_memberships()
        .into_iter()
        .map(|m| {
            assert!(!m.entered && m.user_id == "u1", "{m:?}");
            m.segment_id
        })
        .collect();
    assert_eq!(exited, ids(&[PRO, "adults", "not-free"]));
    assert!(world.record_of("u1").segments.is_empty());
    for segment_id in [PRO, "adults", "not-free", "vip"] {
        assert!(!world.members.members_of(segment_id).contains("u1"), "u1 is still in {segment_id}");
    }
    assert_eq!(world.members.members_of("vip"), ids(&["u2"]), "others stay");
    assert_eq!(world.members.members_of(PRO), ids(&["u2"]));
}

// ---------------------------------------------------------------------------------------
// Backfills.
// ---------------------------------------------------------------------------------------

/// Plan pro and at least 30, or more than 2 orders in the last 7 days.
fn mixed_rule() -> Value {
    json!({"any": [
        {"all": [{"attribute": "plan", "any_of": ["pro"]}, {"attribute": "age", "gte": 30}]},
        {"event": "order", "window": {"last_days": 7}, "count": {"gt": 2}},
    ]})
}

/// `count` random users (a few erased) with random orders over the last 10 days.
async fn random_users(world: &World, count: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    for i in 0..count {
        let user_id = format!("user-{i:05}");
        let plan = ["free", "pro", "team"][rng.random_range(0..3)];
        let age = rng.random_range(16..60).to_string();
        match rng.random_range(0..10) {
            0 => world.put(&user_id, &[("plan", &[plan])]),
            1 => {
                world.put(&user_id, &[("plan", &["pro"]), ("age", &["45"])]);
                world.erase(&user_id);
            }
            _ => world.put(&user_id, &[("plan", &[plan]), ("age", &[age.as_str()])]),
        }
        for n in 0..rng.random_range(0..6) {
            events.push(ActivityEvent {
                event_id: format!("{user_id}-{n}"),
                user_id: user_id.clone(),
                name: "order".into(),
                timestamp: now() - Duration::days(rng.random_range(0..10)),
                properties: Default::default(),
            });
        }
    }
    world.activity.record(&events).await.unwrap();
}

/// Who a direct evaluation of every stored profile puts in the segment.
fn evaluated_members(world: &World, rule: &Value) -> BTreeSet<String> {
    let rule = Rule::parse(rule).unwrap();
    let activity = world.activity.users.lock().unwrap();
    let none = Activity::default();
    let records = world.profiles.records.lock().unwrap();
    records
        .iter()
        .filter(|(user_id, stored)| {
            let activity = activity.get(*user_id).map_or(&none, |(a, _)| a);
            rule.evaluate(&Subject { profile: stored.profile.as_ref(), activity, today: now().date_naive() })
        })
        .map(|(user_id, _)| user_id.clone())
        .collect()
}

#[tokio::test]
async fn a_backfill_over_1000_profiles_gives_exactly_the_members_a_direct_evaluation_gives() {
    let world = World::new(1);
    random_users(&world, 1000, 7).await;
    let expected = evaluated_members(&world, &mixed_rule());
    assert!((100..900).contains(&expected.len()), "a rule that splits the users: {}", expected.len());

    world.dynamic("mixed", mixed_rule()).await;

    assert_eq!(world.members.members_of("mixed"), expected);
    assert!(world.take_memberships().is_empty(), "a backfill publishes no entered or exited");
    let segment = world.service.get("mixed").await.unwrap();
    assert_eq!(segment.state, SegmentState::Ready);
    assert_eq!(segment.backfill.profiles_scanned, 1000);
    assert_eq!(segment.backfill.entered, expected.len() as u64);
    assert_eq!((segment.backfill.parts_done, segment.backfill.parts), (1, 1));
    world.assert_records_match_rows(&["mixed"]);
}

#[tokio::test]
async fn a_backfill_in_parallel_parts_follows_every_continuation() {
    let world = World::new(3);
    random_users(&world, 2000, 11).await;
    let expected = evaluated_members(&world, &mixed_rule());
    let input = SegmentInput {
        name: "mixed".into(),
        description: None,
        kind: SegmentKind::Dynamic,
        rule: Some(mixed_rule()),
        user_ids: None,
    };
    world.service.create(Some("mixed".into()), input, now()).await.unwrap();

    let pages = world.backfill().await;

    assert!(pages.len() > 3, "the parts took more than one page each: {}", pages.len());
    assert_eq!(pages.iter().map(|p| p.progress.profiles_scanned).sum::<u64>(), 2000);
    assert_eq!(world.members.members_of("mixed"), expected);
    let segment = world.service.get("mixed").await.unwrap();
    assert_eq!((segment.state, segment.backfill.parts_done), (SegmentState::Ready, 3));
    assert!(world.take_memberships().is_empty());
}

#[tokio::test]
async fn a_backfill_write_whose_guard_fails_re_evaluates_the_user_in_full_and_ends_right() {
    let world = World::new(1);
    random_users(&world, 1000, 23).await;
    let before = evaluated_members(&world, &mixed_rule());
    // Between the scan and the write, every tenth user's profile moves on (the plan flips),
    // as a concurrent API request would: the guard sees the version change.
    let movers: HashSet<String> = (0..1000).step_by(10).map(|i| format!("user-{i:05}")).collect();
    let moved = Arc::new(Mutex::new(HashSet::<String>::new()));
    let profiles = world.profiles.clone();
    let (movers_seen, moved_seen) = (movers.clone(), moved.clone());
    *world.members.guard_check.lock().unwrap() = Some(Box::new(move |user_id: &str, guard: &Evaluated| {
        let mut records = profiles.records.lock().unwrap();
        let stored = records.get_mut(user_id).unwrap();
        if movers_seen.contains(user_id) && moved_seen.lock().unwrap().insert(user_id.to_owned()) {
            stored.version += 1;
            if let Some(profile) = stored.profile.as_mut() {
                let plan = profile.attributes.entry("plan".into()).or_default();
                let flipped = if plan.contains("pro") { "free" } else { "pro" };
                *plan = BTreeSet::from([flipped.to_owned()]);
                profile.attributes.insert("age".into(), BTreeSet::from(["50".to_owned()]));
                profile.version = stored.version;
            }
        }
        stored.version == guard.profile_version
    }));
    let input = SegmentInput {
        name: "mixed".into(),
        description: None,
        kind: SegmentKind::Dynamic,
        rule: Some(mixed_rule()),
        user_ids: None,
    };
    world.service.create(Some("mixed".into()), input, now()).await.unwrap();

    let pages = world.backfill().await;

    let re_evaluated: u64 = pages.iter().map(|p| p.re_evaluated).sum();
    assert!(re_evaluated > 0, "some guarded writes failed");
    assert!(moved.lock().unwrap().iter().all(|u| movers.contains(u)));
    let after = evaluated_members(&world, &mixed_rule());
    assert_ne!(before, after, "the moves changed who is a member");
    assert_eq!(world.members.members_of("mixed"), after, "ends right");
    assert_eq!(world.service.get("mixed").await.unwrap().state, SegmentState::Ready);
    world.assert_records_match_rows(&["mixed"]);
}

#[tokio::test]
async fn a_backfill_keeps_the_users_other_segments() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["pro"]), ("age", &["40"])]);
    world.dynamic(PRO, pro_rule()).await;
    assert_eq!(world.record_of("u1").segments, ids(&[PRO]));

    world.dynamic("adults", json!({"attribute": "age", "gte": 18})).await;

    assert_eq!(world.record_of("u1").segments, ids(&[PRO, "adults"]));
    world.assert_records_match_rows(&[PRO, "adults"]);
    world.attributes_changed("u1", &["plan"]).await;
    assert!(world.take_memberships().is_empty(), "u1 was in pro all along");
}

#[tokio::test]
async fn an_erased_profile_leaves_the_segments_it_entered_by_backfill() {
    let world = World::new(1);
    world.put("u1", &[("plan", &["pro"]), ("age", &["40"])]);
    world.dynamic(PRO, pro_rule()).await;
    world.dynamic("adults", json!({"attribute": "age", "gte": 18})).await;

    world.erase("u1");
    world.change("u1", Change { everything: true, ..Default::default() }).await;

    assert!(world.members.members_of("adults").is_empty());
    assert!(world.members.members_of(PRO).is_empty(), "the erased user still gets the pro campaigns");
}

// ---------------------------------------------------------------------------------------
// Many segments at once.
// ---------------------------------------------------------------------------------------

const MANY: usize = 150;

/// `MANY` segments of gold users, with u1 not gold yet.
async fn many_gold_segments() -> (World, Vec<String>) {
    let world = World::new(1);
    world.put("u1", &[("tier", &["silver"])]);
    let segment_ids: Vec<String> = (0..MANY).map(|i| format!("gold-{i:03}")).collect();
    for (i, segment_id) in segment_ids.iter().enumerate() {
        // Varied rules that all hold for gold users.
        let rule = if i % 2 == 0 {
            json!({"attribute": "tier", "any_of": ["gold"]})
        } else {
            json!({"all": [{"attribute": "tier", "equals": ["gold"]}, {"not": {"has": "email"}}]})
        };
        world.dynamic(segment_id, rule).await;
    }
    assert!(world.record_of("u1").segments.is_empty());
    (world, segment_ids)
}

#[tokio::test]
async fn a_user_entering_more_than_97_segments_at_once_is_written_in_steps_and_ends_consistent() {
    let (world, segment_ids) = many_gold_segments().await;
    let writes = world.racing.writes.load(Ordering::SeqCst);

    world.put("u1", &[("tier", &["gold"])]);
    world.attributes_changed("u1", &["tier"]).await;

    let steps = MANY.div_ceil(MAX_ROWS_PER_WRITE);
    assert_eq!(world.racing.writes.load(Ordering::SeqCst) - writes, steps);
    let record = world.record_of("u1");
    assert_eq!(record.revision, steps as u64);
    assert_eq!(record.segments, segment_ids.iter().cloned().collect::<BTreeSet<_>>());
    let events = world.take_memberships();
    let entered: BTreeSet<&str> = events.iter().filter(|m| m.entered).map(|m| m.segment_id.as_str()).collect();
    assert_eq!((events.len(), entered.len()), (MANY, MANY), "one entered per segment");
    let refs: Vec<&str> = segment_ids.iter().map(String::as_str).collect();
    world.assert_records_match_rows(&refs);

    world.put("u1", &[("tier", &["silver"])]);
    world.attributes_changed("u1", &["tier"]).await;

    let exited = world.take_memberships();
    assert_eq!(exited.iter().filter(|m| !m.entered).map(|m| &m.segment_id).collect::<BTreeSet<_>>().len(), MANY);
    assert_eq!(exited.len(), MANY);
    assert!(world.record_of("u1").segments.is_empty());
    world.assert_records_match_rows(&refs);
}

#[tokio::test]
async fn a_multi_step_write_that_loses_a_race_half_way_resumes_and_publishes_each_change_once() {
    let (world, segment_ids) = many_gold_segments().await;
    let first = world.racing.writes.load(Ordering::SeqCst) + 1;
    // The second step loses: the first is written, its changes wait in the outbox.
    world.racing.losing.lock().unwrap().insert(first + 1);

    world.put("u1", &[("tier", &["gold"])]);
    world.attributes_changed("u1", &["tier"]).await;

    assert_eq!(world.racing.writes.load(Ordering::SeqCst) - first + 1, 3, "two steps and the lost one");
    let record = world.record_of("u1");
    assert_eq!(record.segments, segment_ids.iter().cloned().collect::<BTreeSet<_>>());
    let events = world.take_memberships();
    let entered: BTreeMap<&str, usize> = events.iter().fold(BTreeMap::new(), |mut counts, m| {
        assert!(m.entered);
        *counts.entry(m.segment_id.as_str()).or_default() += 1;
        counts
    });
    assert_eq!(entered.len(), MANY);
    assert!(entered.values().all(|n| *n == 1), "each entered once: {entered:?}");
    let refs: Vec<&str> = segment_ids.iter().map(String::as_str).collect();
    world.assert_records_match_rows(&refs);
}
