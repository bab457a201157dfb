//! Campaign fan-out: 1,000,000 recipients through the dispatcher with the queues stubbed
//! (and the stores answering from memory), in a process of its own.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use async_trait::async_trait;
use chrono::Utc;
use herald_core::{
    activity::memory::MemoryActivity,
    campaigns::{
        Campaign, CampaignCounters, CampaignState, CampaignStore, DispatchPage, ShardProgress,
        dispatcher::Dispatcher,
        memory::{MemoryCampaigns, MemoryQueues},
    },
    channel::Channel,
    profiles::{Profile, ProfileStore, StoredProfile},
    segments::{MEMBER_SHARDS, MembersPage, MembershipStore, MembershipWrite, UserSegments, shard_of},
    store::StoreError,
};

use crate::import::{cpu_time, report, status_kib};

/// The argument that runs [`million_recipients_stubbed`] alone, in a process of its own.
pub const STUBBED_FANOUT: &str = "--stubbed-fanout";

const RECIPIENTS: usize = 1_000_000;

/// DynamoDB requests the adapters would send for what the dispatcher asked: a Query per
/// members page, a BatchGetItem per 100 profiles, a GetItem per campaign read.
#[derive(Default)]
struct Reads(AtomicU64);

/// A segment's members by shard, paged as the members table's Query pages them. Held as
/// numbers (`user-{n:08}` sorts as `n` does), so that the peak memory measured is the
/// dispatcher's, not the table's.
struct Members {
    shards: Vec<Vec<u32>>,
    reads: Arc<Reads>,
}

fn member_id(n: u32) -> String {
    format!("user-{n:08}")
}

#[async_trait]
impl MembershipStore for Members {
    async fn members(&self, _: &str, shard: u32, after: Option<&str>, limit: u32) -> Result<MembersPage, StoreError> {
        self.reads.0.fetch_add(1, Ordering::Relaxed);
        let ids = &self.shards[shard as usize];
        let start = after.map_or(0, |a| ids.partition_point(|n| member_id(*n).as_str() <= a));
        let end = (start + limit as usize).min(ids.len());
        let next = (end < ids.len()).then(|| member_id(ids[end - 1]));
        Ok(MembersPage { user_ids: ids[start..end].iter().map(|n| member_id(*n)).collect(), next })
    }
    async fn user_segments(&self, _: &str) -> Result<UserSegments, StoreError> {
        unimplemented!("not read by the dispatcher")
    }
    async fn user_segments_many(&self, _: &[String]) -> Result<HashMap<String, UserSegments>, StoreError> {
        unimplemented!("not read by the dispatcher")
    }
    async fn write(&self, _: &MembershipWrite) -> Result<(), StoreError> {
        unimplemented!("not written by the dispatcher")
    }
    async fn write_many(&self, _: &[MembershipWrite]) -> Result<Vec<bool>, StoreError> {
        unimplemented!("not written by the dispatcher")
    }
    async fn add_static(&self, _: &str, _: &[String]) -> Result<(), StoreError> {
        unimplemented!("not written by the dispatcher")
    }
    async fn remove_rows(&self, _: &str, _: &[String]) -> Result<(), StoreError> {
        unimplemented!("not written by the dispatcher")
    }
    async fn rows_among(&self, _: &str, _: &[String]) -> Result<std::collections::BTreeSet<String>, StoreError> {
        unimplemented!("not read by the dispatcher")
    }
}

/// Every user has an email address; profiles are made as they are read.
struct Profiles(Arc<Reads>);

#[async_trait]
impl ProfileStore for Profiles {
    async fn load(&self, _: &str) -> Result<Option<StoredProfile>, StoreError> {
        unimplemented!("the dispatcher reads profiles in batches")
    }
    async fn load_many(&self, user_ids: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError> {
        self.0.0.fetch_add(user_ids.len().div_ceil(100) as u64, Ordering::Relaxed);
        Ok(user_ids
            .iter()
            .map(|id| {
                let mut profile = Profile::new(id.clone());
                profile.version = 1;
                profile.email = Some(format!("{id}@example.com"));
                (id.clone(), StoredProfile { version: 1, profile: Some(profile) })
            })
            .collect())
    }
    async fn save(&self, _: &Profile, _: u64, _: &[herald_core::events::DomainEvent]) -> Result<(), StoreError> {
        unimplemented!("the dispatcher writes no profile")
    }
    async fn erase(&self, _: &str, _: u64, _: u64, _: &[herald_core::events::DomainEvent]) -> Result<(), StoreError> {
        unimplemented!("the dispatcher writes no profile")
    }
}

/// Counts the campaign reads (a GetItem each) over the in-memory store.
struct Campaigns(MemoryCampaigns, Arc<Reads>);

#[async_trait]
impl CampaignStore for Campaigns {
    async fn create(&self, campaign: &Campaign) -> Result<bool, StoreError> {
        self.0.create(campaign).await
    }
    async fn get(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        self.1.0.fetch_add(1, Ordering::Relaxed);
        self.0.get(id).await
    }
    async fn set_state(&self, id: &str, state: CampaignState, from: &[CampaignState]) -> Result<bool, StoreError> {
        self.0.set_state(id, state, from).await
    }
    async fn get_with_shard(&self, id: &str, shard: u32) -> Result<Option<(Campaign, ShardProgress)>, StoreError> {
        self.1.0.fetch_add(1, Ordering::Relaxed);
        self.0.get_with_shard(id, shard).await
    }
    async fn record_page(
        &self,
        id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &CampaignCounters,
        message_id: &str,
    ) -> Result<Option<u32>, StoreError> {
        self.0.record_page(id, shard, cursor, next, counts, message_id).await
    }
    async fn page_followed_up(&self, id: &str, shard: u32, cursor: Option<&str>, by: &str) -> Result<(), StoreError> {
        self.0.page_followed_up(id, shard, cursor, by).await
    }
    async fn add_counts(&self, id: &str, counts: &CampaignCounters) -> Result<(), StoreError> {
        self.0.add_counts(id, counts).await
    }
    async fn add_outcomes(&self, id: &str, counts: &CampaignCounters) -> Result<bool, StoreError> {
        self.0.add_outcomes(id, counts).await
    }
    async fn settle(&self, id: &str, outcomes: &CampaignCounters) -> Result<bool, StoreError> {
        self.0.settle(id, outcomes).await
    }
}

/// `fanout recipients per second per core` (recipients over the process's CPU time),
/// `sqs requests per 1000 recipients` (SendMessageBatch requests of the channel jobs and
/// of the next pages, counted at the stubbed queues), `fanout peak rss mb`, and
/// `dynamodb reads per 1000 recipients` (counted at the stubbed stores, as the adapters
/// would send them).
pub fn million_recipients_stubbed() {
    let reads = Arc::new(Reads::default());
    let mut shards = vec![Vec::new(); MEMBER_SHARDS as usize];
    for n in 0..RECIPIENTS as u32 {
        shards[shard_of(&member_id(n)) as usize].push(n);
    }
    let members = Members { shards, reads: reads.clone() };
    let campaigns = Arc::new(Campaigns(MemoryCampaigns::default(), reads.clone()));
    let queues = Arc::new(MemoryQueues { discard: true, ..Default::default() });
    let dispatcher = Dispatcher::new(
        campaigns.clone(),
        Arc::new(members),
        Arc::new(Profiles(reads.clone())),
        Arc::new(MemoryActivity::default()),
        queues.clone(),
        queues.clone(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let now = Utc::now();
    let campaign = Campaign::new("c_bench", "bench", "everyone", "launch", 1, vec![Channel::Email], now);
    runtime.block_on(campaigns.create(&campaign)).unwrap();
    // Forget the peak so far (building the members table).
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS");
    let (cpu, wall) = (cpu_time(), Instant::now());
    let mut pending: Vec<DispatchPage> =
        (0..MEMBER_SHARDS).map(|shard| DispatchPage::first("c_bench", shard)).collect();
    runtime.block_on(async {
        let mut messages = 0u64;
        while let Some(page) = pending.pop() {
            messages += 1;
            dispatcher.run(&page, &format!("m{messages}"), now).await.unwrap();
            pending.extend(queues.pages.lock().unwrap().drain(..).map(|(p, _)| p));
        }
    });
    let (cpu, wall) = (cpu_time() - cpu, wall.elapsed());
    let counters = runtime.block_on(campaigns.get("c_bench")).unwrap().unwrap().counters;
    assert_eq!(counters.queued, RECIPIENTS as u64);
    eprintln!("fanout: {RECIPIENTS} recipients, {:.2} s wall, {:.2} s CPU", wall.as_secs_f64(), cpu.as_secs_f64());
    let per_1000 = |n: u64| n as f64 * 1000.0 / RECIPIENTS as f64;
    report("fanout recipients per second per core", RECIPIENTS as f64 / cpu.as_secs_f64(), "recipients/s");
    report("sqs requests per 1000 recipients", per_1000(queues.requests.load(Ordering::SeqCst) as u64), "requests");
    report("fanout peak rss mb", status_kib("VmHWM:") as f64 / 1024.0, "MB");
    // The final GetItem above is the bench's, not the dispatcher's.
    report("dynamodb reads per 1000 recipients", per_1000(reads.0.load(Ordering::Relaxed) - 1), "requests");
}
