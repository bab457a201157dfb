//! The reconciler: settles a campaign whose fan-out is complete once every delivery has.
//!
//! Workers add each message's outcomes to the campaign's counters after settling its
//! deliveries; a worker that dies between the two loses those counts, and the counters
//! never add up. The reconciler does not add: it recounts. A settle check (a message on the
//! dispatch queue, first sent by the page that completes the fan-out, then by each check
//! for the next, `every` later) looks at the counters: if they add up, the campaign is
//! marked `done`. If they do not, and they have not moved since the previous check (the
//! workers are not getting anywhere), it recounts the outcomes from the deliveries
//! themselves, a page at a time, going on in a new message when the invocation's deadline
//! nears. When every delivery is settled and there are at least as many as were queued,
//! one conditional write sets the outcome counters to the recount and the state to `done`.
//!
//! Counts never double: the recount replaces the outcome counters rather than adding to
//! them, and a worker's late outcomes are dropped once the campaign is `done`
//! (`CampaignStore::add_outcomes`), the deliveries they were for being in the recount. A
//! late add that lands between the recount's read and its write is overwritten by it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    campaigns::{CampaignCounters, CampaignState, CampaignStore, DispatchQueue, Recount, SettleCheck},
    delivery::{DeliveryStatus, DeliveryStore, ListedDelivery},
    segments::MEMBER_SHARDS,
    store::StoreError,
};

/// How long between two checks of one campaign.
pub const SETTLE_EVERY: Duration = Duration::from_secs(300);
/// Deliveries read per Query page of a recount.
pub const RECOUNT_PAGE: u32 = 1000;
/// A recount page is started only with this much time left before the deadline.
pub const RECOUNT_MARGIN: Duration = Duration::from_secs(5);
/// How long a recount may take when the caller gives no deadline (the local stack).
pub const RECOUNT_BUDGET: Duration = Duration::from_secs(60);

/// What a settle check came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Cancelled, done already, or no such campaign: no more checks.
    Stopped,
    /// Not settled yet: checked again `every` later. `recounted` deliveries were read.
    Waiting { recounted: u64 },
    /// The recount goes on in a new message: the invocation's time ran out.
    Continued { recounted: u64 },
    /// Marked done; `recounted`: its outcome counters were set from its deliveries.
    Settled { recounted: bool },
}

pub struct Reconciler {
    campaigns: Arc<dyn CampaignStore>,
    deliveries: Arc<dyn DeliveryStore>,
    dispatch: Arc<dyn DispatchQueue>,
    pub every: Duration,
    pub page_size: u32,
}

impl Reconciler {
    pub fn new(
        campaigns: Arc<dyn CampaignStore>,
        deliveries: Arc<dyn DeliveryStore>,
        dispatch: Arc<dyn DispatchQueue>,
    ) -> Self {
        Self { campaigns, deliveries, dispatch, every: SETTLE_EVERY, page_size: RECOUNT_PAGE }
    }

    /// Checks a campaign once (see the module's comment); `deadline` is the invocation's
    /// (None: [`RECOUNT_BUDGET`] from now).
    pub async fn check(&self, check: &SettleCheck, deadline: Option<Instant>) -> Result<SettleOutcome, StoreError> {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + RECOUNT_BUDGET);
        let id = check.campaign_id.as_str();
        let Some(campaign) = self.campaigns.get(id).await? else { return Ok(SettleOutcome::Stopped) };
        match campaign.state {
            CampaignState::Cancelled | CampaignState::Done => return Ok(SettleOutcome::Stopped),
            CampaignState::Sending => {}
            // Every shard read, but the page that read the last one stopped before moving
            // the campaign on (its redelivery would do it too).
            CampaignState::Scheduled | CampaignState::Dispatching if campaign.shards_done >= MEMBER_SHARDS => {
                let from = [CampaignState::Dispatching, CampaignState::Scheduled];
                self.campaigns.set_state(id, CampaignState::Sending, &from).await?;
            }
            CampaignState::Scheduled | CampaignState::Dispatching => return self.wait(check, None, 0).await,
        }
        let counters = &campaign.counters;
        if counters.pending_deferred() > 0 {
            return self.wait(check, None, 0).await;
        }
        let settled = counters.settled();
        if check.recount.is_none() {
            if settled >= counters.queued {
                return Ok(
                    match self.campaigns.set_state(id, CampaignState::Done, &[CampaignState::Sending]).await? {
                        true => SettleOutcome::Settled { recounted: false },
                        false => SettleOutcome::Stopped,
                    },
                );
            }
            if check.seen != Some(settled) {
                // Progress since the last check (or the first check): the workers are at it.
                return self.wait(check, Some(settled), 0).await;
            }
        }
        let mut recount =
            check.recount.clone().unwrap_or(Recount { after: None, deliveries: 0, counted: Default::default() });
        let start = recount.deliveries;
        loop {
            if deadline.saturating_duration_since(Instant::now()) < RECOUNT_MARGIN {
                let next = SettleCheck { recount: Some(recount.clone()), ..check.clone() };
                self.dispatch.check(&next, Duration::ZERO).await?;
                return Ok(SettleOutcome::Continued { recounted: recount.deliveries - start });
            }
            let page = self.deliveries.list_page(id, recount.after.as_deref(), self.page_size).await?;
            for listed in &page.deliveries {
                if !count_outcome(&mut recount.counted, listed) {
                    // Still claimed, or failed and to be tried again: not settled yet.
                    return self.wait(check, Some(settled), recount.deliveries - start).await;
                }
                recount.deliveries += 1;
            }
            match page.next {
                Some(next) => recount.after = Some(next),
                None => break,
            }
        }
        let recounted = recount.deliveries - start;
        if recount.deliveries < counters.queued {
            // Queued deliveries no worker has claimed yet (their messages are waiting).
            return self.wait(check, Some(settled), recounted).await;
        }
        Ok(match self.campaigns.settle(id, &recount.counted).await? {
            true => SettleOutcome::Settled { recounted: true },
            false => SettleOutcome::Stopped,
        })
    }

    /// Sends the campaign's next check, `every` from now.
    async fn wait(&self, check: &SettleCheck, seen: Option<u64>, recounted: u64) -> Result<SettleOutcome, StoreError> {
        let next = SettleCheck { seen, recount: None, ..check.clone() };
        self.dispatch.check(&next, self.every).await?;
        Ok(SettleOutcome::Waiting { recounted })
    }
}

/// Counts a delivery in the outcome counter a worker would have counted it in; false (and
/// nothing counted) if it has not settled: claimed and not finished, or failed and to be
/// tried again. A delivery once sent counts as sent whatever followed (opened, clicked,
/// unsubscribed by its link).
pub fn count_outcome(counted: &mut CampaignCounters, listed: &ListedDelivery) -> bool {
    use DeliveryStatus::*;
    let delivery = &listed.delivery;
    let sent = matches!(delivery.status, Sent | Opened | Clicked) || delivery.history.iter().any(|c| c.status == Sent);
    let counter = match delivery.status {
        _ if sent => &mut counted.sent,
        Error if listed.final_error => &mut counted.failed,
        RateLimited => &mut counted.skipped_rate_limited,
        Suppressed => &mut counted.skipped_suppressed,
        Unsubscribed => &mut counted.skipped_opted_out,
        // A status after `sent` has `sent` in its history (counted above).
        Created | Pending | Error | Sent | Opened | Clicked | Delivered | Bounced | Complained | Rejected
        | DeliveryDelayed | Failed => return false,
    };
    *counter += 1;
    true
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{
        campaigns::{
            Campaign,
            memory::{MemoryCampaigns, MemoryQueues},
        },
        channel::Channel,
        delivery::{ClaimRequest, NewDelivery, StatusChange, memory::MemoryDeliveries},
    };

    struct World {
        campaigns: Arc<MemoryCampaigns>,
        deliveries: Arc<MemoryDeliveries>,
        queues: Arc<MemoryQueues>,
        reconciler: Reconciler,
    }

    fn world() -> World {
        let campaigns = Arc::new(MemoryCampaigns::default());
        let deliveries = Arc::new(MemoryDeliveries::default());
        let queues = Arc::new(MemoryQueues::default());
        let mut reconciler = Reconciler::new(campaigns.clone(), deliveries.clone(), queues.clone());
        reconciler.page_size = 2;
        World { campaigns, deliveries, queues, reconciler }
    }

    /// A campaign whose fan-out is complete: `queued` deliveries, counted by the pages.
    async fn sending(w: &World, queued: u64, counted: CampaignCounters) {
        let campaign = Campaign {
            state: CampaignState::Sending,
            shards_done: MEMBER_SHARDS,
            counters: CampaignCounters { targeted: queued, queued, ..counted },
            ..Campaign::new("c_1", "launch", "all", "launch", 1, vec![Channel::Email], Utc::now())
        };
        w.campaigns.create(&campaign).await.unwrap();
    }

    /// A delivery of the campaign as a worker's claim records it, then settled in `status`
    /// (None: left claimed), its error final or not.
    async fn delivery(w: &World, user: &str, status: Option<DeliveryStatus>, retryable: bool) {
        let id = crate::delivery::delivery_id("c_1", user, Channel::Email);
        let create = NewDelivery { notification_id: "c_1".into(), recipient: user.into(), channel: Channel::Email };
        let request = ClaimRequest { delivery_id: id.clone(), settle: None, rate_limit: None, create: Some(create) };
        w.deliveries.claim_all(&[request], Utc::now()).await.unwrap();
        if let Some(status) = status {
            let change = StatusChange { status, at: Utc::now(), reason: None };
            w.deliveries.finish(&id, &change, None, None, retryable).await.unwrap();
        }
    }

    fn sent(n: u64) -> CampaignCounters {
        CampaignCounters { sent: n, ..Default::default() }
    }

    async fn campaign(w: &World) -> Campaign {
        w.campaigns.get("c_1").await.unwrap().unwrap()
    }

    /// The check the reconciler sent, taken off the queue.
    fn next_check(w: &World) -> (SettleCheck, Duration) {
        let mut checks = w.queues.checks.lock().unwrap();
        assert_eq!(checks.len(), 1, "{checks:?}");
        checks.remove(0)
    }

    #[tokio::test]
    async fn a_campaign_whose_counts_add_up_is_marked_done_without_a_recount() {
        let w = world();
        sending(&w, 3, sent(3)).await;
        let outcome = w.reconciler.check(&SettleCheck::first("c_1"), None).await.unwrap();
        assert_eq!(outcome, SettleOutcome::Settled { recounted: false });
        assert_eq!(campaign(&w).await.state, CampaignState::Done);
        assert!(w.queues.checks.lock().unwrap().is_empty(), "no more checks");
    }

    #[tokio::test]
    async fn counts_still_moving_are_checked_again_later_not_recounted() {
        let w = world();
        // Settled, and their workers' counts on their way.
        for user in ["a", "b", "c"] {
            delivery(&w, user, Some(DeliveryStatus::Sent), false).await;
        }
        sending(&w, 3, sent(1)).await;
        let outcome = w.reconciler.check(&SettleCheck::first("c_1"), None).await.unwrap();
        assert_eq!(outcome, SettleOutcome::Waiting { recounted: 0 });
        let (check, delay) = next_check(&w);
        assert_eq!((check.seen, delay), (Some(1), SETTLE_EVERY));
        w.campaigns.add_outcomes("c_1", &sent(1)).await.unwrap();
        assert_eq!(w.reconciler.check(&check, None).await.unwrap(), SettleOutcome::Waiting { recounted: 0 });
        assert_eq!(next_check(&w).0.seen, Some(2));
        assert_eq!(campaign(&w).await.state, CampaignState::Sending);
    }

    #[tokio::test]
    async fn a_lost_count_is_recounted_from_the_deliveries_and_the_campaign_settled() {
        let w = world();
        for user in ["a", "b", "c"] {
            delivery(&w, user, Some(DeliveryStatus::Sent), false).await;
        }
        delivery(&w, "d", Some(DeliveryStatus::Error), false).await;
        delivery(&w, "e", Some(DeliveryStatus::Suppressed), false).await;
        // A worker died after settling "c": its sent was never added.
        sending(&w, 5, CampaignCounters { sent: 2, failed: 1, skipped_suppressed: 1, ..Default::default() }).await;
        let check = SettleCheck { seen: Some(4), ..SettleCheck::first("c_1") };

        let outcome = w.reconciler.check(&check, None).await.unwrap();
        assert_eq!(outcome, SettleOutcome::Settled { recounted: true });
        let settled = campaign(&w).await;
        assert_eq!(settled.state, CampaignState::Done);
        let expected = CampaignCounters {
            targeted: 5,
            queued: 5,
            sent: 3,
            failed: 1,
            skipped_suppressed: 1,
            ..Default::default()
        };
        assert_eq!(settled.counters, expected);

        // The slow worker's count arrives after all: dropped, the recount had it.
        assert!(!w.campaigns.add_outcomes("c_1", &sent(1)).await.unwrap());
        assert_eq!(campaign(&w).await.counters, expected);
    }

    #[tokio::test]
    async fn a_delivery_not_settled_yet_stops_the_recount() {
        for (status, retryable) in [(None, false), (Some(DeliveryStatus::Error), true)] {
            let w = world();
            delivery(&w, "a", Some(DeliveryStatus::Sent), false).await;
            delivery(&w, "b", status, retryable).await;
            sending(&w, 2, sent(0)).await;
            let check = SettleCheck { seen: Some(0), ..SettleCheck::first("c_1") };
            assert!(matches!(w.reconciler.check(&check, None).await.unwrap(), SettleOutcome::Waiting { .. }));
            assert_eq!(campaign(&w).await.state, CampaignState::Sending, "{status:?}");
            assert_eq!(next_check(&w).0.recount, None);
        }
    }

    #[tokio::test]
    async fn fewer_deliveries_than_queued_wait_for_the_rest() {
        let w = world();
        delivery(&w, "a", Some(DeliveryStatus::Sent), false).await;
        sending(&w, 2, sent(0)).await;
        let check = SettleCheck { seen: Some(0), ..SettleCheck::first("c_1") };
        assert_eq!(w.reconciler.check(&check, None).await.unwrap(), SettleOutcome::Waiting { recounted: 1 });
        assert_eq!(campaign(&w).await.state, CampaignState::Sending);
    }

    #[tokio::test]
    async fn a_recount_out_of_time_goes_on_in_a_new_message_from_where_it_stopped() {
        let w = world();
        for user in ["a", "b", "c", "d", "e"] {
            delivery(&w, user, Some(DeliveryStatus::Sent), false).await;
        }
        sending(&w, 5, sent(4)).await;
        let check = SettleCheck { seen: Some(4), ..SettleCheck::first("c_1") };
        let outcome = w.reconciler.check(&check, Some(Instant::now())).await.unwrap();
        assert_eq!(outcome, SettleOutcome::Continued { recounted: 0 });
        let (continued, delay) = next_check(&w);
        assert_eq!((delay, continued.recount.as_ref().map(|r| r.deliveries)), (Duration::ZERO, Some(0)));

        // Part of the way: two deliveries counted already, by a message before.
        let page = w.deliveries.list_page("c_1", None, 2).await.unwrap();
        let after = page.next.clone();
        let partial = Recount { after, deliveries: 2, counted: sent(2) };
        let check = SettleCheck { recount: Some(partial), ..continued };
        assert_eq!(w.reconciler.check(&check, None).await.unwrap(), SettleOutcome::Settled { recounted: true });
        assert_eq!(campaign(&w).await.counters.sent, 5, "the three after it, and the two before");
    }

    #[tokio::test]
    async fn a_cancelled_or_unknown_campaign_stops_its_checks() {
        let w = world();
        sending(&w, 2, sent(0)).await;
        w.campaigns.set_state("c_1", CampaignState::Cancelled, &[CampaignState::Sending]).await.unwrap();
        assert_eq!(w.reconciler.check(&SettleCheck::first("c_1"), None).await.unwrap(), SettleOutcome::Stopped);
        assert_eq!(w.reconciler.check(&SettleCheck::first("c_2"), None).await.unwrap(), SettleOutcome::Stopped);
        assert!(w.queues.checks.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_campaign_still_dispatching_is_checked_again_later() {
        let w = world();
        let campaign = Campaign {
            shards_done: 3,
            ..Campaign::new("c_1", "launch", "all", "launch", 1, vec![Channel::Email], Utc::now())
        };
        w.campaigns.create(&campaign).await.unwrap();
        let outcome = w.reconciler.check(&SettleCheck::first("c_1"), None).await.unwrap();
        assert_eq!(outcome, SettleOutcome::Waiting { recounted: 0 });
        assert_eq!(next_check(&w).0, SettleCheck::first("c_1"));
    }

    #[test]
    fn a_delivery_counts_where_its_worker_counted_it() {
        use DeliveryStatus::*;
        let at = Utc::now();
        let listed = |history: &[DeliveryStatus], final_error: bool| {
            let mut delivery = crate::delivery::Delivery::new("c_1", "u", Channel::Email, Created, None, at);
            for status in history {
                delivery.status = *status;
                delivery.history.push(StatusChange { status: *status, at, reason: None });
            }
            ListedDelivery { delivery, final_error }
        };
        let cases = [
            (listed(&[Pending, Sent], false), Some(sent(1))),
            (listed(&[Pending, Sent, Opened, Unsubscribed], false), Some(sent(1))),
            (listed(&[Unsubscribed], false), Some(CampaignCounters { skipped_opted_out: 1, ..Default::default() })),
            (listed(&[Pending, Error], true), Some(CampaignCounters { failed: 1, ..Default::default() })),
            (listed(&[RateLimited], false), Some(CampaignCounters { skipped_rate_limited: 1, ..Default::default() })),
            (listed(&[Pending, Error], false), None),
            (listed(&[Pending], false), None),
        ];
        for (listed, expected) in cases {
            let mut counted = CampaignCounters::default();
            let settled = count_outcome(&mut counted, &listed);
            assert_eq!(settled.then_some(counted), expected, "{:?}", listed.delivery.history);
        }
    }
}
