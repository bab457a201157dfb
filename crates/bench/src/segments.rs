//! Segments in memory: the cost of re-evaluating a profile change against a full catalog,
//! and the segmenter's backfill throughput with the stores stubbed in memory.

use std::{collections::BTreeSet, future::Future, hint::black_box, pin::Pin, sync::Arc, time::Instant};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use herald_core::{
    activity::{Activity, ActivityEvent, ActivityStore, CounterKey, memory::MemoryActivity},
    events::{DomainEvent, SegmentTask, memory::MemoryBus},
    profiles::{
        DeviceToken, ExternalChannel, Platform, Profile, ProfileScan, ScanPage, StoredProfile, memory::MemoryProfiles,
    },
    segments::{
        Backfill, Catalog, Change, Segment, SegmentKind, SegmentState, SegmentStore, Segmenter,
        memory::{MemoryMemberships, MemorySegments},
        rules::{Rule, Subject},
    },
    store::StoreError,
};
use serde_json::{Value, json};

fn report(name: &str, value: f64, unit: &str) {
    println!("{name}: {value:.2} {unit}");
}

/// A small deterministic generator (xorshift): the same catalog and profiles every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ATTRIBUTE_NAMES: usize = 200;
const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];
const COUNTRIES: [&str; 6] = ["FR", "DE", "US", "GB", "JP", "BR"];
const EVENTS: [&str; 5] = ["order", "login", "view", "cart", "share"];

fn attribute(i: usize) -> String {
    format!("attr_{:03}", i % ATTRIBUTE_NAMES)
}

fn today() -> NaiveDate {
    now().date_naive()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 15, 12, 0, 0).unwrap()
}

/// One leaf of a varied rule: attribute sets, numbers, dates, contacts and behaviour.
fn leaf(random: &mut Random) -> Value {
    let name = attribute(random.below(ATTRIBUTE_NAMES));
    match random.below(10) {
        0 | 1 => json!({"attribute": name, "any_of": [random.pick(&PLANS), random.pick(&COUNTRIES)]}),
        2 => json!({"attribute": name, "none_of": [random.pick(&COUNTRIES)]}),
        3 => json!({"attribute": name, "gte": random.below(100), "lt": 100 + random.below(100)}),
        4 => json!({"attribute": name, "within_last_days": 1 + random.below(60)}),
        5 => json!({"attribute": name, "exists": true}),
        6 => match random.below(3) {
            0 => json!({"has": "email"}),
            1 => json!({"has": "push", "platform": "fcm"}),
            _ => json!({"has": "channel", "platform": "slack"}),
        },
        7 => json!({"event": random.pick(&EVENTS), "window": {"last_days": 1 + random.below(30)},
            "count": {"gt": random.below(4)}}),
        8 => json!({"event": random.pick(&EVENTS), "window": "today", "count": {"gte": 1},
            "where": {"property": "plan", "any_of": [random.pick(&PLANS)]}}),
        _ => json!({"event": random.pick(&EVENTS), "last_seen_within_days": 1 + random.below(30)}),
    }
}

/// A rule of 1 to 6 leaves under all / any / not.
fn varied_rule(random: &mut Random) -> Value {
    let leaves: Vec<Value> = (0..1 + random.below(3)).map(|_| leaf(random)).collect();
    let inner = if leaves.len() == 1 { leaves[0].clone() } else { json!({"all": leaves}) };
    match random.below(4) {
        0 => inner,
        1 => json!({"any": [inner, leaf(random)]}),
        2 => json!({"all": [inner, {"not": leaf(random)}]}),
        _ => json!({"any": [inner, {"all": [leaf(random), leaf(random)]}]}),
    }
}

fn segment(segment_id: String, rule: Value) -> Segment {
    let parsed = Rule::parse(&rule).expect("bench rules are valid");
    Segment {
        segment_id: segment_id.clone(),
        name: segment_id,
        description: None,
        kind: SegmentKind::Dynamic,
        reads: parsed.reads(),
        rule: Some(rule),
        version: 1,
        state: SegmentState::Ready,
        backfill: Backfill::default(),
        created_at: now(),
        updated_at: now(),
    }
}

/// A profile with 40 of the catalog's attributes, contacts and a push token.
fn realistic_profile(user_id: &str, random: &mut Random) -> Profile {
    let mut profile = Profile::new(user_id);
    profile.version = 1;
    for _ in 0..40 {
        let name = attribute(random.below(ATTRIBUTE_NAMES));
        let value = match random.below(4) {
            0 => random.pick(&PLANS).to_owned(),
            1 => random.pick(&COUNTRIES).to_owned(),
            2 => random.below(200).to_string(),
            _ => (today() - Duration::days(random.below(90) as i64)).to_string(),
        };
        profile.attributes.entry(name).or_default().insert(value);
    }
    profile.email = Some(format!("{user_id}@example.com"));
    profile.device_tokens = vec![DeviceToken { token: format!("t-{user_id}"), platform: Platform::Fcm }];
    profile.external_channels = vec![ExternalChannel {
        platform: "slack".into(),
        url: "https://hooks.example.com/x".into(),
        enabled: random.below(2) == 0,
    }];
    profile
}

/// Counters over the last 30 days and last-seen times of every event.
fn realistic_activity(random: &mut Random) -> Activity {
    let mut activity = Activity::default();
    for event in EVENTS {
        for ago in 0..30 {
            if random.below(3) == 0 {
                let day = today() - Duration::days(ago);
                activity.counts.entry(CounterKey::total(event)).or_default().insert(day, 1 + random.below(3) as u64);
                let plan = CounterKey::property(event, "plan", random.pick(&PLANS));
                activity.counts.entry(plan).or_default().insert(day, 1);
            }
        }
        activity.last_seen.insert(event.to_owned(), now() - Duration::hours(random.below(24 * 40) as i64));
    }
    activity
}

/// Microseconds per call of `run` over as many calls as fit in about `budget_ms`, and
/// how many calls that was.
fn micros_per_call(budget_ms: u128, mut run: impl FnMut(usize)) -> (f64, usize) {
    let started = Instant::now();
    let mut calls = 0;
    while calls < 100 || started.elapsed().as_millis() < budget_ms {
        run(calls);
        calls += 1;
    }
    (started.elapsed().as_secs_f64() * 1e6 / calls as f64, calls)
}

/// The segments a typical change (2 attributes) can affect, found and evaluated; and the
/// worst case, a created or erased profile, that evaluates every segment.
pub fn evaluate_change_against_1000_segments() {
    let mut random = Random(0x5eed_cafe);
    let segments: Vec<Segment> = (0..1000).map(|i| segment(format!("s{i:04}"), varied_rule(&mut random))).collect();
    let catalog = Catalog::new(1, &segments);
    assert_eq!(catalog.segments.len(), 1000);
    let profile = realistic_profile("u1", &mut random);
    let activity = realistic_activity(&mut random);
    let changes: Vec<Change> = (0..64)
        .map(|_| Change {
            attributes: [attribute(random.below(ATTRIBUTE_NAMES)), attribute(random.below(ATTRIBUTE_NAMES))].into(),
            ..Default::default()
        })
        .collect();
    let mut evaluated = 0;
    let (typical, calls) = micros_per_call(2000, |i| {
        let affected = catalog.affected(&changes[i % changes.len()]);
        evaluated += affected.len();
        black_box(catalog.evaluate(&affected, Some(&profile), &activity, today()));
    });
    let everything = Change { everything: true, ..Default::default() };
    let mut members = 0;
    let (all, _) = micros_per_call(2000, |_| {
        let affected = catalog.affected(&everything);
        members = black_box(catalog.evaluate(&affected, Some(&profile), &activity, today())).len();
    });
    report("evaluate change against 1000 segments us", typical, "us");
    report("evaluate all 1000 segments us", all, "us");
    let per_change = evaluated as f64 / calls as f64;
    eprintln!("  a typical change evaluated {per_change:.1} segments; the profile is in {members} of 1000");
}

/// Pages of a pre-sorted list of profiles: a scan stubbed at the store, as cheap as it
/// can be, so that the figure is the segmenter's.
struct StubScan(Vec<(String, StoredProfile)>);

type ScanFuture<'a> = Pin<Box<dyn Future<Output = Result<ScanPage, StoreError>> + Send + 'a>>;

// By hand what `#[async_trait]` writes: this crate does not depend on async-trait.
impl ProfileScan for StubScan {
    fn scan_page<'a, 'b, 'c>(&'a self, part: u32, parts: u32, cursor: Option<&'b str>, limit: u32) -> ScanFuture<'c>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        assert_eq!((part, parts), (0, 1), "one part");
        let start: usize = cursor.map_or(0, |c| c.parse().unwrap());
        let end = (start + limit as usize).min(self.0.len());
        let next = (end < self.0.len()).then(|| end.to_string());
        let page = ScanPage { profiles: self.0[start..end].to_vec(), next };
        Box::pin(std::future::ready(Ok(page)))
    }
}

/// The segmenter's backfill of one segment over 100,000 profiles (a tenth of them with
/// orders), page after page as the jobs on the bus say, on one thread.
pub fn backfill_profiles_per_second_per_core() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let total = 100_000;
        let mut random = Random(0xba_c0ff);
        let mut profiles = Vec::with_capacity(total);
        let mut events = Vec::new();
        for i in 0..total {
            let user_id = format!("user-{i:06}");
            let mut profile = Profile::new(&user_id);
            profile.version = 1;
            for (name, value) in [
                ("plan", random.pick(&PLANS).to_owned()),
                ("country", random.pick(&COUNTRIES).to_owned()),
                ("age", (16 + random.below(60)).to_string()),
                ("signup", (today() - Duration::days(random.below(400) as i64)).to_string()),
            ] {
                profile.attributes.insert(name.into(), BTreeSet::from([value]));
            }
            for n in 0..4 {
                profile.attributes.insert(format!("trait_{n}"), BTreeSet::from([random.below(10).to_string()]));
            }
            profile.email = (random.below(4) != 0).then(|| format!("{user_id}@example.com"));
            if random.below(10) == 0 {
                for n in 0..1 + random.below(5) {
                    events.push(ActivityEvent {
                        event_id: format!("{user_id}-{n}"),
                        user_id: user_id.clone(),
                        name: "order".into(),
                        timestamp: now() - Duration::days(random.below(10) as i64),
                        properties: Default::default(),
                    });
                }
            }
            profiles.push((user_id, StoredProfile { version: 1, profile: Some(profile) }));
        }
        let activity = Arc::new(MemoryActivity::default());
        for batch in events.chunks(500) {
            activity.record(batch).await.unwrap();
        }
        let rule = json!({"any": [
            {"all": [{"attribute": "plan", "any_of": ["pro", "team"]}, {"attribute": "age", "gte": 30},
                     {"has": "email"}]},
            {"event": "order", "window": {"last_days": 7}, "count": {"gt": 2}},
        ]});
        let expected = {
            let parsed = Rule::parse(&rule).unwrap();
            let users = activity.users.lock().unwrap();
            let none = Activity::default();
            profiles
                .iter()
                .filter(|(id, stored)| {
                    let activity = users.get(id).map_or(&none, |(a, _)| a);
                    parsed.evaluate(&Subject { profile: stored.profile.as_ref(), activity, today: today() })
                })
                .count()
        };
        let segments = Arc::new(MemorySegments::default());
        segments.create(&segment("bench".into(), rule)).await.unwrap();
        let members = Arc::new(MemoryMemberships::default());
        let bus = Arc::new(MemoryBus::default());
        let segmenter = Segmenter::new(
            Arc::new(MemoryProfiles::default()),
            Arc::new(StubScan(profiles)),
            activity,
            segments.clone(),
            members.clone(),
            bus.clone(),
        );
        let catalog = segmenter.catalog().await.unwrap();
        let mut job = SegmentTask::Backfill {
            segment_id: "bench".into(),
            version: 1,
            part: 0,
            parts: 1,
            cursor: None,
            sweep: false,
        };
        let mut pages = 0;
        let started = Instant::now();
        loop {
            segmenter.backfill_page(&catalog, &job, now()).await.unwrap();
            pages += 1;
            let next = bus.published.lock().unwrap().pop();
            match next {
                Some(DomainEvent::SegmentTask(next)) => job = next,
                None => break,
                Some(other) => panic!("a backfill publishes only its next page: {other:?}"),
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(members.members_of("bench").len(), expected, "the backfill found every member");
        let segment = segments.get("bench").await.unwrap().unwrap();
        assert_eq!((segment.state, segment.backfill.profiles_scanned), (SegmentState::Ready, total as u64));
        report("backfill profiles per second per core", total as f64 / elapsed, "profiles/s");
        eprintln!("  {pages} pages, {expected} members");
    });
}
