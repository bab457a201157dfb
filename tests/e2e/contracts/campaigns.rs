//! `CampaignStore` and `DispatchQueue`: campaigns created once, moved only from the states
//! named, each shard's pages recorded exactly once, counters added up; dispatch pages
//! received as they were sent.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use herald_aws::{DynamoCampaignStore, SqsDispatchQueue};
use herald_core::{
    campaigns::{
        Campaign, CampaignCounters, CampaignState, CampaignStore, DispatchPage, DispatchQueue, PageRecord, Recount,
        SettleCheck, ShardCursor, ShardProgress,
        memory::{MemoryCampaigns, MemoryQueues},
    },
    channel::Channel,
    segments::MEMBER_SHARDS,
    store::StoreError,
};
use serde_json::json;

use super::{Inbox, SqsInbox};

contract!(campaign_store: memory_store, aws_store;
    a_campaign_is_created_once_and_read_back_as_it_was,
    set_state_moves_a_campaign_only_from_the_states_named,
    a_page_is_recorded_once_and_a_shard_is_done_at_its_last_page,
    a_shard_the_campaign_does_not_have_records_nothing,
    every_shard_done_makes_sixteen,
    add_counts_adds_the_counters_given,
    a_shard_shows_its_next_page_and_its_last_record_by_message,
    a_record_is_followed_up_only_while_it_is_the_shards_last,
    outcomes_are_added_until_the_campaign_is_done,
    settle_sets_the_outcomes_and_marks_only_a_sending_campaign_done,
);

contract!(dispatch_queue: memory_dispatch, aws_dispatch;
    dispatched_pages_are_received_as_they_were_sent,
    settle_checks_are_received_as_they_were_sent,
);

async fn memory_store() -> Box<dyn CampaignStore> {
    Box::new(MemoryCampaigns::default())
}

async fn aws_store() -> Box<dyn CampaignStore> {
    let (clients, tables) = super::moto_tables(&["JobsTable"]).await;
    Box::new(DynamoCampaignStore::new(clients.dynamodb(), &tables["JobsTable"]))
}

struct Dispatch {
    queue: Box<dyn DispatchQueue>,
    inbox: Box<dyn Inbox<DispatchPage>>,
    checks: Box<dyn Inbox<SettleCheck>>,
}

struct SharedQueues(Arc<MemoryQueues>);

#[async_trait::async_trait]
impl DispatchQueue for SharedQueues {
    async fn dispatch(&self, pages: &[DispatchPage], delay: Duration) -> Result<(), StoreError> {
        self.0.dispatch(pages, delay).await
    }
    async fn check(&self, check: &SettleCheck, delay: Duration) -> Result<(), StoreError> {
        self.0.check(check, delay).await
    }
}

#[async_trait::async_trait]
impl Inbox<SettleCheck> for SharedQueues {
    async fn take(&self, _expected: usize) -> Vec<SettleCheck> {
        self.0.checks.lock().unwrap().drain(..).map(|(check, _)| check).collect()
    }
}

#[async_trait::async_trait]
impl Inbox<DispatchPage> for SharedQueues {
    async fn take(&self, _expected: usize) -> Vec<DispatchPage> {
        self.0.pages.lock().unwrap().drain(..).map(|(page, _)| page).collect()
    }
}

async fn memory_dispatch() -> Box<Dispatch> {
    let queues = Arc::new(MemoryQueues::default());
    Box::new(Dispatch {
        queue: Box::new(SharedQueues(queues.clone())),
        inbox: Box::new(SharedQueues(queues.clone())),
        checks: Box::new(SharedQueues(queues)),
    })
}

async fn aws_dispatch() -> Box<Dispatch> {
    let clients = super::moto().await;
    let queue_url = super::sqs_queue(&clients, "dispatch").await;
    Box::new(Dispatch {
        queue: Box::new(SqsDispatchQueue::new(clients.sqs(), &queue_url)),
        inbox: Box::new(SqsInbox {
            sqs: clients.sqs(),
            queue_url: queue_url.clone(),
            parse: |b| serde_json::from_str(b).unwrap(),
        }),
        checks: Box::new(SqsInbox { sqs: clients.sqs(), queue_url, parse: |b| serde_json::from_str(b).unwrap() }),
    })
}

pub(crate) fn campaign(campaign_id: &str) -> Campaign {
    let at: DateTime<Utc> = "2026-11-24T09:00:00.123456Z".parse().unwrap();
    Campaign {
        send_at: Some("2026-11-25T08:00:00Z".parse().unwrap()),
        // 1.0 comes back as 1.0, not 1: the filter is kept as JSON text.
        filter: Some(json!({"attribute": "score", "gt": 1.0})),
        state: CampaignState::Scheduled,
        ..Campaign::new(campaign_id, "Spring sale", "vip", "spring", 3, vec![Channel::Email, Channel::Sms], at)
    }
}

pub(crate) fn counts(targeted: u64, queued: u64, skipped_no_address: u64) -> CampaignCounters {
    CampaignCounters { targeted, queued, skipped_no_address, ..Default::default() }
}

async fn a_campaign_is_created_once_and_read_back_as_it_was(store: &dyn CampaignStore) {
    let stored = campaign("c_once");
    assert!(store.create(&stored).await.unwrap());
    let mut other = campaign("c_once");
    other.name = "Another".into();
    assert!(!store.create(&other).await.unwrap(), "a second create writes nothing");
    let read = store.get("c_once").await.unwrap().expect("the campaign");
    assert_eq!(read, stored);
    assert_eq!(read.filter.as_ref().unwrap().to_string(), r#"{"attribute":"score","gt":1.0}"#);
    assert_eq!(store.get("c_none").await.unwrap(), None);
}

async fn set_state_moves_a_campaign_only_from_the_states_named(store: &dyn CampaignStore) {
    store.create(&campaign("c_state")).await.unwrap();
    use CampaignState::*;
    assert!(!store.set_state("c_state", Sending, &[Dispatching]).await.unwrap());
    assert!(!store.set_state("c_state", Sending, &[]).await.unwrap());
    assert_eq!(store.get("c_state").await.unwrap().unwrap().state, Scheduled);
    assert!(store.set_state("c_state", Dispatching, &[Scheduled]).await.unwrap());
    assert!(!store.set_state("c_state", Dispatching, &[Scheduled]).await.unwrap(), "moved once");
    assert!(store.set_state("c_state", Cancelled, &[Scheduled, Dispatching, Sending]).await.unwrap());
    let read = store.get("c_state").await.unwrap().unwrap();
    assert_eq!(read.state, Cancelled);
    assert!(read.updated_at > campaign("c_state").updated_at);
    assert!(!store.set_state("c_state", Sending, &[Scheduled, Dispatching]).await.unwrap());
    assert!(!store.set_state("c_unknown", Cancelled, &[Scheduled]).await.unwrap(), "nothing to move");
    assert_eq!(store.get("c_unknown").await.unwrap(), None, "and nothing written");
}

async fn a_page_is_recorded_once_and_a_shard_is_done_at_its_last_page(store: &dyn CampaignStore) {
    store.create(&campaign("c_pages")).await.unwrap();

    // Shard 3: a first page, then its last.
    assert_eq!(store.record_page("c_pages", 3, None, Some("user-5"), &counts(5, 8, 2), "m1").await.unwrap(), Some(0));
    assert_eq!(store.record_page("c_pages", 3, None, Some("user-5"), &counts(5, 8, 2), "m1").await.unwrap(), None);
    let read = store.get("c_pages").await.unwrap().unwrap();
    assert_eq!((read.counters.clone(), read.shards_done), (counts(5, 8, 2), 0), "the repeat added nothing");
    assert!(read.updated_at > campaign("c_pages").updated_at);

    assert_eq!(store.record_page("c_pages", 3, Some("user-5"), None, &counts(2, 4, 0), "m1").await.unwrap(), Some(1));
    assert_eq!(store.record_page("c_pages", 3, Some("user-5"), None, &counts(2, 4, 0), "m1").await.unwrap(), None);
    // Neither the start nor any page of a done shard is recorded again.
    assert_eq!(store.record_page("c_pages", 3, None, None, &counts(1, 1, 0), "m1").await.unwrap(), None);
    assert_eq!(store.record_page("c_pages", 3, Some("user-9"), None, &counts(1, 1, 0), "m1").await.unwrap(), None);

    // Shard 4: empty, done at once and counting nothing; shard 5 started elsewhere.
    assert_eq!(store.record_page("c_pages", 4, None, None, &CampaignCounters::default(), "m1").await.unwrap(), Some(2));
    assert_eq!(store.record_page("c_pages", 5, Some("user-1"), None, &counts(1, 1, 0), "m1").await.unwrap(), None);
    assert_eq!(store.record_page("c_pages", 15, None, Some("u"), &counts(1, 0, 0), "m1").await.unwrap(), Some(2));

    let read = store.get("c_pages").await.unwrap().unwrap();
    assert_eq!(read.counters, counts(8, 12, 2));
    assert_eq!(read.shards_done, 2);
    assert_eq!((read.state, &read.name), (CampaignState::Scheduled, &campaign("c_pages").name));
    assert_eq!(store.record_page("c_unknown", 0, None, None, &counts(1, 1, 1), "m1").await.unwrap(), None);
    assert_eq!(store.get("c_unknown").await.unwrap(), None);
}

async fn a_shard_the_campaign_does_not_have_records_nothing(store: &dyn CampaignStore) {
    store.create(&campaign("c_shards")).await.unwrap();

    assert_eq!(store.record_page("c_shards", MEMBER_SHARDS, None, None, &counts(1, 1, 0), "m1").await.unwrap(), None);

    let read = store.get("c_shards").await.unwrap().unwrap();
    assert_eq!((read.counters, read.shards_done), (CampaignCounters::default(), 0));
}

async fn every_shard_done_makes_sixteen(store: &dyn CampaignStore) {
    store.create(&campaign("c_all")).await.unwrap();
    let mut last = None;
    for shard in 0..16 {
        last = store.record_page("c_all", shard, None, None, &counts(1, 1, 0), "m1").await.unwrap();
    }
    assert_eq!(last, Some(16));
    let read = store.get("c_all").await.unwrap().unwrap();
    assert_eq!((read.shards_done, read.counters.targeted), (16, 16));
}

async fn add_counts_adds_the_counters_given(store: &dyn CampaignStore) {
    store.create(&campaign("c_counts")).await.unwrap();
    let outcome = CampaignCounters { sent: 3, failed: 1, skipped_opted_out: 2, ..Default::default() };
    store.add_counts("c_counts", &outcome).await.unwrap();
    store
        .add_counts("c_counts", &CampaignCounters { sent: 1, opened: 2, clicked: 1, ..Default::default() })
        .await
        .unwrap();
    store.add_counts("c_counts", &CampaignCounters::default()).await.unwrap();
    let read = store.get("c_counts").await.unwrap().unwrap();
    assert_eq!(
        read.counters,
        CampaignCounters { sent: 4, failed: 1, skipped_opted_out: 2, opened: 2, clicked: 1, ..Default::default() }
    );

    // Counts for a campaign that is not there are dropped, not written as a stray item.
    store.add_counts("c_unknown", &outcome).await.unwrap();
    assert_eq!(store.get("c_unknown").await.unwrap(), None);
}

async fn dispatched_pages_are_received_as_they_were_sent(subject: &Dispatch) {
    let pages: Vec<DispatchPage> = (0..12)
        .map(|shard| DispatchPage {
            cursor: (shard == 7).then(|| "user-7".to_owned()),
            users: if shard == 9 { vec!["u1".into(), "u2".into()] } else { Vec::new() },
            not_before: (shard == 9).then(|| "2026-11-25T08:00:00Z".parse().unwrap()),
            ..DispatchPage::first("c_1", shard)
        })
        .collect();

    subject.queue.dispatch(&pages, Duration::ZERO).await.unwrap();
    subject.queue.dispatch(&[], Duration::ZERO).await.unwrap();

    let mut received = subject.inbox.take(pages.len()).await;
    received.sort_by_key(|p| p.shard);
    assert_eq!(received, pages);
    assert!(subject.inbox.take(0).await.is_empty(), "each page once");
}

async fn a_shard_shows_its_next_page_and_its_last_record_by_message(store: &dyn CampaignStore) {
    store.create(&campaign("c_shard")).await.unwrap();
    let (read, progress) = store.get_with_shard("c_shard", 2).await.unwrap().expect("the campaign");
    assert_eq!(read, campaign("c_shard"));
    assert_eq!(progress, ShardProgress::default(), "at its start, nothing recorded");

    store.record_page("c_shard", 2, None, Some("user-5"), &counts(5, 5, 0), "m1").await.unwrap();
    let record = |cursor: Option<&str>, message_id: &str| PageRecord {
        cursor: cursor.map(str::to_owned),
        message_id: message_id.into(),
        followed_up: false,
    };
    let (read, progress) = store.get_with_shard("c_shard", 2).await.unwrap().unwrap();
    assert_eq!(read.counters, counts(5, 5, 0));
    assert_eq!(progress, ShardProgress { next: ShardCursor::At("user-5".into()), last: Some(record(None, "m1")) });
    assert_eq!(store.get_with_shard("c_shard", 3).await.unwrap().unwrap().1, ShardProgress::default());

    store.record_page("c_shard", 2, Some("user-5"), None, &counts(1, 1, 0), "m2").await.unwrap();
    let progress = store.get_with_shard("c_shard", 2).await.unwrap().unwrap().1;
    assert_eq!(progress, ShardProgress { next: ShardCursor::Done, last: Some(record(Some("user-5"), "m2")) });
    assert_eq!(store.get("c_shard").await.unwrap().unwrap().counters, counts(6, 6, 0), "read as a campaign still");
    assert_eq!(store.get_with_shard("c_none", 2).await.unwrap(), None);
}

async fn a_record_is_followed_up_only_while_it_is_the_shards_last(store: &dyn CampaignStore) {
    store.create(&campaign("c_follow")).await.unwrap();
    let followed = async |shard| store.get_with_shard("c_follow", shard).await.unwrap().unwrap().1.last.unwrap();
    store.record_page("c_follow", 1, None, Some("user-5"), &counts(5, 5, 0), "m1").await.unwrap();
    store.page_followed_up("c_follow", 1, None, "m2").await.unwrap();
    store.page_followed_up("c_follow", 1, Some("user-5"), "m1").await.unwrap();
    assert!(!followed(1).await.followed_up, "another message, another page: not followed up");
    store.page_followed_up("c_follow", 1, None, "m1").await.unwrap();
    assert!(followed(1).await.followed_up);

    store.record_page("c_follow", 1, Some("user-5"), None, &counts(1, 1, 0), "m3").await.unwrap();
    store.page_followed_up("c_follow", 1, None, "m1").await.unwrap();
    assert_eq!(
        followed(1).await,
        PageRecord { cursor: Some("user-5".into()), message_id: "m3".into(), followed_up: false }
    );
    // Nothing recorded, or no such campaign: nothing to mark, and no error.
    store.page_followed_up("c_follow", 9, None, "m1").await.unwrap();
    store.page_followed_up("c_none", 1, None, "m1").await.unwrap();
    assert_eq!(store.get_with_shard("c_follow", 9).await.unwrap().unwrap().1.last, None);
    assert_eq!(store.get("c_none").await.unwrap(), None);
}

async fn outcomes_are_added_until_the_campaign_is_done(store: &dyn CampaignStore) {
    store.create(&campaign("c_outcomes")).await.unwrap();
    let outcome = CampaignCounters { sent: 2, failed: 1, ..Default::default() };
    assert!(store.add_outcomes("c_outcomes", &outcome).await.unwrap());
    store.set_state("c_outcomes", CampaignState::Sending, &[CampaignState::Scheduled]).await.unwrap();
    assert!(store.add_outcomes("c_outcomes", &outcome).await.unwrap());
    store.set_state("c_outcomes", CampaignState::Done, &[CampaignState::Sending]).await.unwrap();
    assert!(!store.add_outcomes("c_outcomes", &outcome).await.unwrap(), "dropped once done");
    assert_eq!(
        store.get("c_outcomes").await.unwrap().unwrap().counters,
        CampaignCounters { sent: 4, failed: 2, ..Default::default() }
    );
    assert!(!store.add_outcomes("c_unknown", &outcome).await.unwrap());
    assert_eq!(store.get("c_unknown").await.unwrap(), None);
}

async fn settle_sets_the_outcomes_and_marks_only_a_sending_campaign_done(store: &dyn CampaignStore) {
    store.create(&campaign("c_settle")).await.unwrap();
    store.record_page("c_settle", 0, None, None, &counts(4, 3, 1), "m1").await.unwrap();
    store.add_counts("c_settle", &CampaignCounters { sent: 1, opened: 1, ..Default::default() }).await.unwrap();
    let recount = CampaignCounters { sent: 2, skipped_suppressed: 1, targeted: 99, ..Default::default() };
    assert!(!store.settle("c_settle", &recount).await.unwrap(), "scheduled: not settled");
    store.set_state("c_settle", CampaignState::Sending, &[CampaignState::Scheduled]).await.unwrap();

    assert!(store.settle("c_settle", &recount).await.unwrap());
    let read = store.get("c_settle").await.unwrap().unwrap();
    assert_eq!(read.state, CampaignState::Done);
    let expected = CampaignCounters { sent: 2, skipped_suppressed: 1, opened: 1, ..counts(4, 3, 1) };
    assert_eq!(read.counters, expected, "the outcomes set, the rest as they were");
    assert!(!store.settle("c_settle", &recount).await.unwrap(), "once");
    assert!(!store.settle("c_unknown", &recount).await.unwrap());
    assert_eq!(store.get("c_unknown").await.unwrap(), None);
}

async fn settle_checks_are_received_as_they_were_sent(subject: &Dispatch) {
    let first = SettleCheck::first("c_1");
    let recount = Recount { after: Some("d_0a".into()), deliveries: 1000, counted: counts(0, 0, 0) };
    let later = SettleCheck { seen: Some(12), recount: Some(recount), ..SettleCheck::first("c_2") };
    subject.queue.check(&first, Duration::ZERO).await.unwrap();
    subject.queue.check(&later, Duration::ZERO).await.unwrap();

    let mut received = subject.checks.take(2).await;
    received.sort_by(|a, b| a.campaign_id.cmp(&b.campaign_id));
    assert_eq!(received, vec![first, later]);
}
