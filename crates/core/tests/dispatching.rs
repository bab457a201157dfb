//! The dispatcher over in-memory ports: a campaign's fan-out, page by page, onto the
//! channel queues, with its checkpoints, filter, schedule and cancellation.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use herald_core::{
    Profile,
    campaigns::{Campaign, CampaignCounters, CampaignState, DispatchPage},
    delivery::Channel,
    dispatching::{DispatchOutcome, Dispatcher},
    memory::{MemoryActivity, MemoryCampaigns, MemoryMemberships, MemoryProfiles, MemoryQueues},
    ports::{CampaignStore, MembershipStore, ProfileStore},
    segments::MEMBER_SHARDS,
};
use serde_json::json;

struct World {
    campaigns: Arc<MemoryCampaigns>,
    members: Arc<MemoryMemberships>,
    profiles: Arc<MemoryProfiles>,
    queues: Arc<MemoryQueues>,
    dispatcher: Dispatcher,
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

async fn world(users: usize, with_email: impl Fn(usize) -> bool) -> World {
    let campaigns = Arc::new(MemoryCampaigns::default());
    let members = Arc::new(MemoryMemberships::default());
    let profiles = Arc::new(MemoryProfiles::default());
    let queues = Arc::new(MemoryQueues::default());
    let ids: Vec<String> = (0..users).map(|i| format!("u{i:05}")).collect();
    members.add_static("all", &ids).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let mut profile = Profile::new(id.clone());
        profile.version = 1;
        if with_email(i) {
            profile.email = Some(format!("{id}@example.com"));
        }
        profile.attributes.insert("plan".into(), [if i % 3 == 0 { "pro" } else { "free" }.to_owned()].into());
        profiles.save(&profile, 0).await.unwrap();
    }
    let dispatcher = Dispatcher::new(
        campaigns.clone(),
        members.clone(),
        profiles.clone(),
        Arc::new(MemoryActivity::default()),
        queues.clone(),
        queues.clone(),
    );
    World { campaigns, members, profiles, queues, dispatcher }
}

fn campaign(filter: Option<serde_json::Value>) -> Campaign {
    Campaign {
        campaign_id: "c_1".into(),
        name: "launch".into(),
        segment_id: "all".into(),
        template_id: "launch".into(),
        template_version: 3,
        channels: vec![Channel::Email, Channel::Sms],
        send_at: None,
        filter,
        state: CampaignState::Dispatching,
        shards_done: 0,
        counters: CampaignCounters::default(),
        created_at: now(),
        updated_at: now(),
    }
}

fn first_pages() -> Vec<DispatchPage> {
    (0..MEMBER_SHARDS).map(|shard| DispatchPage { campaign_id: "c_1".into(), shard, cursor: None }).collect()
}

impl World {
    /// Plays the dispatch queue: every page message, including those the pages send.
    async fn dispatch_all(&self, pages: Vec<DispatchPage>) {
        let mut pending = pages;
        while let Some(page) = pending.pop() {
            self.dispatcher.run(&page, now()).await.unwrap();
            pending.extend(self.queues.pages.lock().unwrap().drain(..).map(|(p, _)| p));
        }
    }

    async fn counters(&self) -> CampaignCounters {
        self.campaigns.get("c_1").await.unwrap().unwrap().counters
    }

    fn queued_delivery_ids(&self) -> Vec<String> {
        let jobs = self.queues.jobs.lock().unwrap();
        jobs.iter().flat_map(|j| j.recipients.iter().map(|r| r.delivery_id.clone())).collect()
    }
}

#[tokio::test]
async fn every_member_gets_one_delivery_per_channel_with_an_address() {
    let mut w = world(2500, |i| i % 10 != 0).await;
    w.campaigns.create(&campaign(None)).await.unwrap();
    w.dispatcher.page_size = 100;
    w.dispatch_all(first_pages()).await;
    let ids = w.queued_delivery_ids();
    assert_eq!(ids.len(), 2250, "emails only: nobody has a phone");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "one delivery each");
    let counters = w.counters().await;
    assert_eq!((counters.targeted, counters.queued, counters.skipped_no_address), (2500, 2250, 250 + 2500));
    let campaign = w.campaigns.get("c_1").await.unwrap().unwrap();
    assert_eq!((campaign.shards_done, campaign.state), (MEMBER_SHARDS, CampaignState::Sending));
}

#[tokio::test]
async fn jobs_carry_the_campaign_its_template_version_and_up_to_50_recipients() {
    let w = world(1000, |_| true).await;
    w.campaigns.create(&campaign(None)).await.unwrap();
    w.dispatch_all(first_pages()).await;
    let jobs = w.queues.jobs.lock().unwrap();
    assert!(jobs.iter().all(|j| j.recipients.len() <= 50 && j.campaign_id.as_deref() == Some("c_1")));
    assert!(jobs.iter().all(|j| matches!(&j.content,
        herald_core::notification::ContentRef::Template { template_id, version: 3 } if template_id == "launch")));
    assert!(jobs.iter().all(|j| j.channel == Channel::Email));
}

#[tokio::test]
async fn a_page_delivered_twice_is_queued_again_but_counted_once() {
    let w = world(300, |_| true).await;
    w.campaigns.create(&campaign(None)).await.unwrap();
    let page = DispatchPage { campaign_id: "c_1".into(), shard: 3, cursor: None };
    let first = w.dispatcher.run(&page, now()).await.unwrap();
    let again = w.dispatcher.run(&page, now()).await.unwrap();
    let DispatchOutcome::Dispatched { queued, recorded: true } = first else { panic!("{first:?}") };
    assert_eq!(again, DispatchOutcome::Dispatched { queued, recorded: false });
    assert_eq!(w.counters().await.queued, queued);
}

#[tokio::test]
async fn the_send_time_filter_skips_members_that_do_not_match() {
    let w = world(300, |_| true).await;
    w.campaigns.create(&campaign(Some(json!({"attribute": "plan", "any_of": ["pro"]})))).await.unwrap();
    w.dispatch_all(first_pages()).await;
    let counters = w.counters().await;
    assert_eq!((counters.queued, counters.skipped_filtered), (100, 200));
}

#[tokio::test]
async fn a_cancelled_campaign_queues_nothing() {
    let w = world(100, |_| true).await;
    let mut cancelled = campaign(None);
    cancelled.state = CampaignState::Cancelled;
    w.campaigns.create(&cancelled).await.unwrap();
    w.dispatch_all(first_pages()).await;
    assert!(w.queued_delivery_ids().is_empty());
}

#[tokio::test]
async fn a_scheduled_campaign_waits_for_its_time_in_steps_of_at_most_15_minutes() {
    let w = world(10, |_| true).await;
    let mut scheduled = campaign(None);
    scheduled.state = CampaignState::Scheduled;
    scheduled.send_at = Some(now() + chrono::Duration::hours(2));
    w.campaigns.create(&scheduled).await.unwrap();
    let page = DispatchPage { campaign_id: "c_1".into(), shard: 0, cursor: None };
    assert_eq!(w.dispatcher.run(&page, now()).await.unwrap(), DispatchOutcome::Deferred);
    assert_eq!(w.queues.pages.lock().unwrap()[0].1, Duration::from_secs(900));
    assert!(w.queued_delivery_ids().is_empty());
    let later = now() + chrono::Duration::hours(3);
    assert!(matches!(w.dispatcher.run(&page, later).await.unwrap(), DispatchOutcome::Dispatched { .. }));
    assert_eq!(w.campaigns.get("c_1").await.unwrap().unwrap().state, CampaignState::Dispatching);
}

#[tokio::test]
async fn erased_members_are_skipped_for_want_of_an_address() {
    let w = world(20, |_| true).await;
    w.profiles.erase("u00003", 2, 1).await.unwrap();
    w.members.add_static("all", &["ghost".to_owned()]).await.unwrap();
    w.campaigns.create(&campaign(None)).await.unwrap();
    w.dispatch_all(first_pages()).await;
    let counters = w.counters().await;
    assert_eq!((counters.targeted, counters.queued), (21, 19));
}
