//! The dispatcher over in-memory ports: a campaign's fan-out, page by page, onto the
//! channel queues, with its checkpoints, filter, schedule and cancellation.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use herald_core::{
    activity::{ActivityEvent, ActivityStore, memory::MemoryActivity},
    campaigns::{
        Campaign, CampaignCounters, CampaignRequest, CampaignState, CampaignStore, DispatchPage, LocalWindow,
        SettleCheck,
        dispatcher::{DispatchOutcome, Dispatcher},
        memory::{MemoryCampaigns, MemoryQueues},
    },
    channel::Channel,
    profiles::{Profile, ProfileStore, memory::MemoryProfiles},
    segments::{MEMBER_SHARDS, MembershipStore, memory::MemoryMemberships},
};
use serde_json::json;

struct World {
    campaigns: Arc<MemoryCampaigns>,
    members: Arc<MemoryMemberships>,
    profiles: Arc<MemoryProfiles>,
    activity: Arc<MemoryActivity>,
    queues: Arc<MemoryQueues>,
    dispatcher: Dispatcher,
}

/// A new queue message id: each call a message of its own, as SQS gives each message sent.
fn next_id() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("m{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

async fn world(users: usize, with_email: impl Fn(usize) -> bool) -> World {
    let campaigns = Arc::new(MemoryCampaigns::default());
    let members = Arc::new(MemoryMemberships::default());
    let profiles = Arc::new(MemoryProfiles::default());
    let queues = Arc::new(MemoryQueues::default());
    let activity = Arc::new(MemoryActivity::default());
    let ids: Vec<String> = (0..users).map(|i| format!("u{i:05}")).collect();
    members.add_static("all", &ids).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let mut profile = Profile::new(id.clone());
        profile.version = 1;
        if with_email(i) {
            profile.email = Some(format!("{id}@example.com"));
        }
        profile.attributes.insert("plan".into(), [if i % 3 == 0 { "pro" } else { "free" }.to_owned()].into());
        profiles.save(&profile, 0, &[]).await.unwrap();
    }
    let dispatcher = Dispatcher::new(
        campaigns.clone(),
        members.clone(),
        profiles.clone(),
        activity.clone(),
        queues.clone(),
        queues.clone(),
    );
    World { campaigns, members, profiles, activity, queues, dispatcher }
}

fn campaign(filter: Option<serde_json::Value>) -> Campaign {
    Campaign { filter, ..Campaign::new("c_1", "launch", "all", "launch", 3, vec![Channel::Email, Channel::Sms], now()) }
}

fn first_pages() -> Vec<DispatchPage> {
    (0..MEMBER_SHARDS).map(|shard| DispatchPage::first("c_1", shard)).collect()
}

impl World {
    /// Plays the dispatch queue: every page message, including those the pages send.
    async fn dispatch_all(&self, pages: Vec<DispatchPage>) {
        let mut pending = pages;
        while let Some(page) = pending.pop() {
            self.dispatcher.run(&page, &next_id(), now()).await.unwrap();
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
        herald_core::delivery::ContentRef::Template { template_id, version: 3 } if template_id == "launch")));
    assert!(jobs.iter().all(|j| j.channel == Channel::Email));
}

#[tokio::test]
async fn another_copy_of_a_recorded_page_queues_counts_and_sends_on_nothing() {
    let mut w = world(300, |_| true).await;
    w.dispatcher.page_size = 10;
    w.campaigns.create(&campaign(None)).await.unwrap();
    let page = DispatchPage::first("c_1", 3);
    let first = w.dispatcher.run(&page, "m1", now()).await.unwrap();
    let DispatchOutcome::Dispatched { queued, deferred: 0, recorded: true } = first else { panic!("{first:?}") };
    let (jobs, pages) = (w.queues.jobs.lock().unwrap().len(), w.take_pages().len());
    assert_eq!(pages, 1, "the next page");

    assert_eq!(w.dispatcher.run(&page, "m2", now()).await.unwrap(), DispatchOutcome::Duplicate);
    assert_eq!(w.queues.jobs.lock().unwrap().len(), jobs, "nothing queued again");
    assert!(w.take_pages().is_empty(), "the next page is not sent again");
    assert_eq!(w.counters().await.queued, queued);
}

#[tokio::test]
async fn a_page_redelivered_after_it_sent_its_next_page_sends_nothing() {
    let mut w = world(300, |_| true).await;
    w.dispatcher.page_size = 10;
    w.campaigns.create(&campaign(None)).await.unwrap();
    let page = DispatchPage::first("c_1", 3);
    w.dispatcher.run(&page, "m1", now()).await.unwrap();
    assert_eq!(w.take_pages().len(), 1);
    let jobs = w.queues.jobs.lock().unwrap().len();

    // The same message again: its function stopped before deleting it.
    assert_eq!(w.dispatcher.run(&page, "m1", now()).await.unwrap(), DispatchOutcome::Duplicate);
    assert!(w.take_pages().is_empty());
    assert_eq!(w.queues.jobs.lock().unwrap().len(), jobs);
}

#[tokio::test]
async fn a_page_redelivered_after_it_was_recorded_but_before_its_next_page_went_out_sends_that_page_only() {
    let mut w = world(300, |_| true).await;
    w.dispatcher.page_size = 10;
    w.campaigns.create(&campaign(None)).await.unwrap();
    let page = DispatchPage::first("c_1", 3);
    let members = w.members.members("all", 3, None, 10).await.unwrap();
    let next = members.next.clone().expect("a second page");
    // What the message did before it stopped: the page's deliveries queued and recorded.
    let counts = CampaignCounters { targeted: 10, queued: 10, ..Default::default() };
    w.campaigns.record_page("c_1", 3, None, Some(&next), &counts, "m1").await.unwrap();

    assert_eq!(w.dispatcher.run(&page, "m1", now()).await.unwrap(), DispatchOutcome::FollowedUp);
    let pages: Vec<DispatchPage> = w.take_pages().into_iter().map(|(p, _)| p).collect();
    assert_eq!(pages, vec![DispatchPage { cursor: Some(next), ..page.clone() }]);
    assert!(w.queues.jobs.lock().unwrap().is_empty(), "its deliveries were queued before it was recorded");
    assert_eq!(w.counters().await, counts);
    assert_eq!(w.dispatcher.run(&page, "m1", now()).await.unwrap(), DispatchOutcome::Duplicate, "followed up once");
    assert!(w.take_pages().is_empty());
}

#[tokio::test]
async fn a_next_page_sent_twice_runs_the_rest_of_its_shard_once() {
    let mut w = world(300, |_| true).await;
    w.dispatcher.page_size = 5;
    w.campaigns.create(&campaign(None)).await.unwrap();
    let shard = 3;
    let page = DispatchPage::first("c_1", shard);
    w.dispatcher.run(&page, "m1", now()).await.unwrap();
    // The message stopped after sending its next page, before marking it sent: delivered
    // again, it sends the next page a second time.
    w.campaigns.last_pages.lock().unwrap().get_mut(&("c_1".to_owned(), shard)).unwrap().followed_up = false;
    assert_eq!(w.dispatcher.run(&page, "m1", now()).await.unwrap(), DispatchOutcome::FollowedUp);
    let copies: Vec<DispatchPage> = w.take_pages().into_iter().map(|(p, _)| p).collect();
    assert_eq!((copies.len(), &copies[0]), (2, &copies[1]));

    let mut outcomes = Vec::new();
    let mut pending = copies;
    while let Some(page) = pending.pop() {
        outcomes.push(w.dispatcher.run(&page, &next_id(), now()).await.unwrap());
        pending.extend(w.take_pages().into_iter().map(|(p, _)| p));
    }
    let (mut pages_of_shard, mut members, mut cursor) = (0, 0, None);
    loop {
        let page = w.members.members("all", shard, cursor.as_deref(), 5).await.unwrap();
        (pages_of_shard, members) = (pages_of_shard + 1, members + page.user_ids.len());
        let Some(next) = page.next else { break };
        cursor = Some(next);
    }
    assert!(pages_of_shard > 2, "a chain to fork");
    let dispatched = outcomes.iter().filter(|o| matches!(o, DispatchOutcome::Dispatched { .. })).count();
    assert_eq!(dispatched, pages_of_shard - 1, "each page after the first once: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == DispatchOutcome::Duplicate).count(), 1, "the second copy stops");
    let campaign = w.campaigns.get("c_1").await.unwrap().unwrap();
    assert_eq!((campaign.shards_done, campaign.counters.targeted as usize), (1, members));
}

#[tokio::test]
async fn the_first_pages_of_a_repeated_request_run_no_shard_twice() {
    let w = world(300, |_| true).await;
    w.campaigns.create(&campaign(None)).await.unwrap();
    // The API's first request and its repeat, each sending every shard's first page.
    let mut twice = first_pages();
    twice.extend(first_pages());
    w.dispatch_all(twice).await;
    let ids = w.queued_delivery_ids();
    assert_eq!(ids.len(), 300, "each member queued once");
    let counters = w.counters().await;
    assert_eq!((counters.targeted, counters.queued), (300, 300));
}

#[tokio::test]
async fn the_last_page_moves_the_campaign_to_sending_and_sends_its_first_settle_check() {
    let w = world(40, |_| true).await;
    w.campaigns.create(&campaign(None)).await.unwrap();
    w.dispatch_all(first_pages()).await;
    let campaign = w.campaigns.get("c_1").await.unwrap().unwrap();
    assert_eq!(campaign.state, CampaignState::Sending);
    let checks = w.queues.checks.lock().unwrap().clone();
    assert_eq!(checks, vec![(SettleCheck::first("c_1"), w.dispatcher.settle_every)]);
}

#[tokio::test]
async fn the_last_page_redelivered_before_its_follow_up_moves_the_campaign_on() {
    let w = world(0, |_| true).await;
    w.campaigns.create(&campaign(None)).await.unwrap();
    for shard in 0..MEMBER_SHARDS {
        w.campaigns.record_page("c_1", shard, None, None, &CampaignCounters::default(), "m1").await.unwrap();
    }
    // Shard 7's message recorded the campaign's last page and stopped.
    let page = DispatchPage::first("c_1", 7);
    assert_eq!(w.dispatcher.run(&page, "m1", now()).await.unwrap(), DispatchOutcome::FollowedUp);
    assert_eq!(w.campaigns.get("c_1").await.unwrap().unwrap().state, CampaignState::Sending);
    assert_eq!(w.queues.checks.lock().unwrap().len(), 1);
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
    let page = DispatchPage::first("c_1", 0);
    assert_eq!(w.dispatcher.run(&page, &next_id(), now()).await.unwrap(), DispatchOutcome::Deferred);
    assert_eq!(w.queues.pages.lock().unwrap()[0].1, Duration::from_secs(900));
    assert!(w.queued_delivery_ids().is_empty());
    let later = now() + chrono::Duration::hours(3);
    assert!(matches!(w.dispatcher.run(&page, &next_id(), later).await.unwrap(), DispatchOutcome::Dispatched { .. }));
    assert_eq!(w.campaigns.get("c_1").await.unwrap().unwrap().state, CampaignState::Dispatching);
}

#[tokio::test]
async fn erased_members_are_skipped_for_want_of_an_address() {
    let w = world(20, |_| true).await;
    w.profiles.erase("u00003", 2, 1, &[]).await.unwrap();
    w.members.add_static("all", &["ghost".to_owned()]).await.unwrap();
    w.campaigns.create(&campaign(None)).await.unwrap();
    w.dispatch_all(first_pages()).await;
    let counters = w.counters().await;
    assert_eq!((counters.targeted, counters.queued), (21, 19));
}

#[tokio::test]
async fn the_behavioural_filter_queues_only_users_with_more_than_two_orders_yesterday_and_today() {
    let w = world(6, |_| true).await;
    // u00000: 3 orders today; u00001: 2 yesterday and 1 today; u00002: 2 today (not more
    // than 2); u00003: 3 orders three days ago (outside the window); u00004: 3 "view"s;
    // u00005: nothing.
    let mut events = Vec::new();
    let mut event = |user: &str, name: &str, days_ago: i64| {
        events.push(ActivityEvent {
            event_id: format!("e{}", events.len()),
            user_id: user.into(),
            name: name.into(),
            timestamp: now() - chrono::Duration::days(days_ago) - chrono::Duration::hours(1),
            properties: Default::default(),
        })
    };
    for _ in 0..3 {
        event("u00000", "order", 0);
        event("u00003", "order", 3);
        event("u00004", "view", 0);
    }
    event("u00001", "order", 1);
    event("u00001", "order", 1);
    event("u00001", "order", 0);
    event("u00002", "order", 0);
    event("u00002", "order", 0);
    w.activity.record(&events).await.unwrap();
    let filter = json!({"event": "order", "window": {"last_days": 2}, "count": {"gt": 2}});
    let mut email_only = campaign(Some(filter));
    email_only.channels = vec![Channel::Email];
    w.campaigns.create(&email_only).await.unwrap();
    w.dispatch_all(first_pages()).await;
    let mut ids = w.queued_delivery_ids();
    ids.sort();
    let mut expected: Vec<String> =
        ["u00000", "u00001"].iter().map(|u| herald_core::delivery::delivery_id("c_1", u, Channel::Email)).collect();
    expected.sort();
    assert_eq!(ids, expected);
    let counters = w.counters().await;
    assert_eq!((counters.targeted, counters.queued, counters.skipped_filtered), (6, 2, 4));
}

fn window(start: &str, end: &str) -> Option<LocalWindow> {
    Some(LocalWindow { start: start.into(), end: end.into() })
}

/// A campaign by email in a local time window, its members' time zones set by `zone_of`.
async fn windowed(
    users: usize,
    local_window: Option<LocalWindow>,
    zone_of: impl Fn(usize) -> Option<&'static str>,
) -> World {
    let w = world(users, |_| true).await;
    for i in 0..users {
        let id = format!("u{i:05}");
        let mut profile = w.profiles.load(&id).await.unwrap().unwrap().profile.unwrap();
        profile.timezone = zone_of(i).map(str::to_owned);
        profile.version += 1;
        w.profiles.save(&profile, profile.version - 1, &[]).await.unwrap();
    }
    let mut c = campaign(None);
    c.channels = vec![Channel::Email];
    c.local_window = local_window;
    w.campaigns.create(&c).await.unwrap();
    w
}

impl World {
    fn take_pages(&self) -> Vec<(DispatchPage, Duration)> {
        std::mem::take(&mut *self.queues.pages.lock().unwrap())
    }

    /// Runs every shard's pages at `at`, and returns the deferred batches they sent.
    async fn dispatch_shards(&self, at: DateTime<Utc>) -> Vec<(DispatchPage, Duration)> {
        let mut pending = first_pages();
        let mut batches = Vec::new();
        while let Some(page) = pending.pop() {
            self.dispatcher.run(&page, &next_id(), at).await.unwrap();
            for (page, delay) in self.take_pages() {
                if page.is_deferred_batch() { batches.push((page, delay)) } else { pending.push(page) }
            }
        }
        batches
    }

    async fn state(&self) -> CampaignState {
        self.campaigns.get("c_1").await.unwrap().unwrap().effective_state()
    }
}

fn utc(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, h, m, 0).unwrap()
}

#[tokio::test]
async fn a_member_outside_the_window_is_deferred_to_its_start_and_queued_when_due() {
    // At 12:00 UTC: 13:00 in Paris (inside 09:00-17:00), 07:00 in New York (outside: the
    // window starts at 09:00 New York, 14:00 UTC), 21:00 in Tokyo (outside: it starts at
    // 09:00 Tokyo the next day, 00:00 UTC on the 25th).
    let zones = [Some("Europe/Paris"), Some("America/New_York"), Some("Asia/Tokyo")];
    let w = windowed(3, window("09:00", "17:00"), |i| zones[i]).await;
    let mut batches = w.dispatch_shards(now()).await;
    assert_eq!(w.queued_delivery_ids(), vec![herald_core::delivery::delivery_id("c_1", "u00000", Channel::Email)]);
    batches.sort_by_key(|(b, _)| b.not_before);
    let summary: Vec<_> = batches.iter().map(|(b, d)| (b.users.clone(), b.not_before.unwrap(), *d)).collect();
    assert_eq!(
        summary,
        vec![
            (vec!["u00001".to_owned()], utc(14, 0), Duration::from_secs(900)),
            (vec!["u00002".to_owned()], Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap(), Duration::from_secs(900)),
        ]
    );
    let counters = w.counters().await;
    assert_eq!((counters.targeted, counters.queued, counters.deferred, counters.pending_deferred()), (3, 1, 2, 2));

    // New York's batch, due at 14:00, runs then and queues its member.
    let (ny, _) = batches[0].clone();
    let outcome = w.dispatcher.run(&ny, &next_id(), utc(14, 0)).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::DeferredBatch { queued: 1, deferred: 0 });
    assert!(w.take_pages().is_empty());
    assert!(w.queued_delivery_ids().contains(&herald_core::delivery::delivery_id("c_1", "u00001", Channel::Email)));
    let counters = w.counters().await;
    assert_eq!(
        (counters.targeted, counters.queued, counters.deferred_planned, counters.pending_deferred()),
        (3, 2, 1, 1)
    );
}

#[tokio::test]
async fn a_deferred_batch_arriving_early_goes_back_to_the_queue() {
    let w = windowed(1, window("09:00", "17:00"), |_| Some("America/New_York")).await;
    let batches = w.dispatch_shards(now()).await;
    let (batch, delay) = batches[0].clone();
    assert_eq!((batch.not_before, delay), (Some(utc(14, 0)), Duration::from_secs(900)));
    // 15 minutes later it is still early: sent back, delayed until it is due or 15 minutes.
    assert_eq!(w.dispatcher.run(&batch, &next_id(), utc(12, 15)).await.unwrap(), DispatchOutcome::Deferred);
    assert_eq!(w.take_pages(), vec![(batch.clone(), Duration::from_secs(900))]);
    assert_eq!(w.dispatcher.run(&batch, &next_id(), utc(13, 50)).await.unwrap(), DispatchOutcome::Deferred);
    assert_eq!(w.take_pages(), vec![(batch.clone(), Duration::from_secs(600))]);
    assert!(w.queued_delivery_ids().is_empty());
    assert_eq!(w.counters().await.queued, 0);
    // Late is fine, within the window.
    let outcome = w.dispatcher.run(&batch, &next_id(), utc(14, 1)).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::DeferredBatch { queued: 1, deferred: 0 });
}

#[tokio::test]
async fn a_window_may_wrap_midnight() {
    // 22:00 to 06:00. At 12:00 UTC: 21:00 in Tokyo (outside, starts 22:00 Tokyo = 13:00
    // UTC), 04:00 in Los Angeles (inside), 12:00 in UTC (outside, starts 22:00 UTC).
    let zones = [Some("Asia/Tokyo"), Some("America/Los_Angeles"), Some("UTC")];
    let w = windowed(3, window("22:00", "06:00"), |i| zones[i]).await;
    let mut batches = w.dispatch_shards(now()).await;
    assert_eq!(w.queued_delivery_ids(), vec![herald_core::delivery::delivery_id("c_1", "u00001", Channel::Email)]);
    batches.sort_by_key(|(b, _)| b.not_before);
    let due: Vec<_> = batches.iter().map(|(b, _)| (b.users[0].as_str(), b.not_before.unwrap())).collect();
    assert_eq!(due, vec![("u00000", utc(13, 0)), ("u00002", utc(22, 0))]);
    // Tokyo's batch, delivered late (00:30 the next day in Tokyo), is still in the window.
    let (tokyo, _) = batches[0].clone();
    let outcome = w.dispatcher.run(&tokyo, &next_id(), utc(15, 30)).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::DeferredBatch { queued: 1, deferred: 0 });
}

#[tokio::test]
async fn a_member_without_a_time_zone_uses_utc() {
    // 12:00 UTC is outside 18:00-20:00: deferred to 18:00 UTC, whatever the server's zone.
    let w = windowed(2, window("18:00", "20:00"), |i| if i == 0 { None } else { Some("Asia/Kolkata") }).await;
    let mut batches = w.dispatch_shards(now()).await;
    batches.sort_by_key(|(b, _)| b.not_before);
    let due: Vec<_> = batches.iter().map(|(b, _)| (b.users[0].as_str(), b.not_before.unwrap())).collect();
    // Kolkata is UTC+05:30: 17:30 there, the window starts at 18:00, 12:30 UTC.
    assert_eq!(due, vec![("u00001", utc(12, 30)), ("u00000", utc(18, 0))]);
    assert_eq!(batches.iter().map(|(_, d)| d.as_secs()).collect::<Vec<_>>(), vec![900, 900]);
    // Within the window in UTC: queued now.
    let w = windowed(1, window("12:00", "12:30"), |_| None).await;
    assert!(w.dispatch_shards(now()).await.is_empty());
    assert_eq!(w.counters().await.queued, 1);
}

#[tokio::test]
async fn the_campaign_is_not_done_while_a_deferred_batch_is_pending() {
    let zones = [Some("Europe/Paris"), Some("America/New_York")];
    let w = windowed(2, window("09:00", "17:00"), |i| zones[i]).await;
    let batches = w.dispatch_shards(now()).await;
    assert_eq!(batches.len(), 1);
    let campaign = w.campaigns.get("c_1").await.unwrap().unwrap();
    assert_eq!(campaign.state, CampaignState::Sending, "every shard is read");
    // The one queued delivery settles: still sending, a member waits for their window.
    w.campaigns.add_counts("c_1", &CampaignCounters { sent: 1, ..Default::default() }).await.unwrap();
    assert_eq!(w.state().await, CampaignState::Sending);
    w.dispatcher.run(&batches[0].0, &next_id(), utc(14, 0)).await.unwrap();
    assert_eq!(w.state().await, CampaignState::Sending, "the batch's delivery is queued, not settled");
    w.campaigns.add_counts("c_1", &CampaignCounters { sent: 1, ..Default::default() }).await.unwrap();
    assert_eq!(w.state().await, CampaignState::Done);
}

#[tokio::test]
async fn a_batch_member_whose_window_passed_is_deferred_again_and_the_filter_read_again() {
    let w = windowed(2, window("09:00", "17:00"), |_| Some("America/New_York")).await;
    {
        let mut campaigns = w.campaigns.campaigns.lock().unwrap();
        campaigns.get_mut("c_1").unwrap().filter = Some(json!({"attribute": "plan", "any_of": ["pro"]}));
    }
    // One batch per shard: a batch of both members, as the dispatcher would have sent it.
    let batches = w.dispatch_shards(now()).await;
    assert_eq!(batches.len(), 2);
    let users = vec!["u00000".to_owned(), "u00001".to_owned()];
    let batch = DispatchPage::deferred("c_1", 0, users.clone(), utc(14, 0));
    // Delivered at 22:30 UTC, 17:30 in New York: past the window, put off to the next day.
    let outcome = w.dispatcher.run(&batch, &next_id(), utc(22, 30)).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::DeferredBatch { queued: 0, deferred: 2 });
    let again = w.take_pages();
    let next_day = utc(14, 0) + chrono::Duration::days(1);
    assert_eq!(again, vec![(DispatchPage::deferred("c_1", 0, users, next_day), Duration::from_secs(900))]);
    // The next day, only the pro member (u00000) matches the filter.
    let outcome = w.dispatcher.run(&again[0].0, &next_id(), next_day).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::DeferredBatch { queued: 1, deferred: 0 });
    let counters = w.counters().await;
    assert_eq!(
        (counters.targeted, counters.queued, counters.skipped_filtered, counters.deferred, counters.deferred_planned),
        (2, 1, 1, 4, 4)
    );
}

#[test]
fn a_deferred_batch_is_backward_compatible_json_and_fits_an_sqs_message() {
    let page: DispatchPage = serde_json::from_value(json!({"campaign_id": "c_1", "shard": 3, "cursor": "u9"})).unwrap();
    assert!(!page.is_deferred_batch() && page.users.is_empty());
    assert_eq!(serde_json::to_value(&page).unwrap(), json!({"campaign_id": "c_1", "shard": 3, "cursor": "u9"}));
    let users: Vec<String> = (0..1000).map(|i| format!("{i:0>128}")).collect();
    let batch = DispatchPage::deferred("c_1", 3, users, now());
    let text = serde_json::to_string(&batch).unwrap();
    assert!(text.len() < 256 * 1024, "{}", text.len());
    assert_eq!(serde_json::from_str::<DispatchPage>(&text).unwrap(), batch);
}

#[test]
fn bad_local_window_times_are_refused_naming_the_field() {
    let request = |start: &str, end: &str| -> CampaignRequest {
        serde_json::from_value(json!({"name": "n", "segment_id": "s", "template_id": "t", "channels": ["email"],
            "local_window": {"start": start, "end": end}}))
        .unwrap()
    };
    let fields = |start: &str, end: &str| -> Vec<String> {
        match request(start, end).validate() {
            Ok(()) => vec![],
            Err(errors) => errors.0.into_iter().map(|e| e.field).collect(),
        }
    };
    assert_eq!(fields("09:00", "17:00"), Vec::<String>::new());
    assert_eq!(fields("22:00", "06:00"), Vec::<String>::new());
    assert_eq!(fields("00:00", "23:59"), Vec::<String>::new());
    assert_eq!(fields("24:00", "17:00"), vec!["local_window.start"]);
    assert_eq!(fields("09:00", "9:30"), vec!["local_window.end"]);
    assert_eq!(fields("9h", "noon"), vec!["local_window.start", "local_window.end"]);
    assert_eq!(fields("08:60", "09:00"), vec!["local_window.start"]);
    assert_eq!(fields("10:00", "10:00"), vec!["local_window.end"]);
}
