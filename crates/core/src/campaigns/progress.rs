//! Campaign progress as the delivery runner needs it (`delivery::runner::CampaignProgress`),
//! over the campaign store: whether a campaign's jobs are delivered, from a state read a
//! few seconds ago at most, and the counters its jobs' outcomes add up to.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::{
    campaigns::{CampaignCounters, CampaignState, CampaignStore},
    delivery::{
        DeliveryStatus,
        pipeline::Outcome,
        runner::{CampaignCheck, CampaignProgress},
    },
    store::StoreError,
};

/// How long a campaign's state is trusted: a cancel takes effect within this time.
pub const CAMPAIGN_STATE_TTL: Duration = Duration::from_secs(5);

/// What a job's outcomes add to its campaign's counters: only what this attempt settled
/// (retries are counted once they settle, recipients settled before never again).
pub fn campaign_counts<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> CampaignCounters {
    let mut counts = CampaignCounters::default();
    for outcome in outcomes {
        let Outcome::Done(status) = outcome else { continue };
        let counter = match status {
            DeliveryStatus::Sent => &mut counts.sent,
            DeliveryStatus::Error => &mut counts.failed,
            DeliveryStatus::RateLimited => &mut counts.skipped_rate_limited,
            DeliveryStatus::Suppressed => &mut counts.skipped_suppressed,
            DeliveryStatus::Unsubscribed => &mut counts.skipped_opted_out,
            // Not an end a send attempt settles in.
            DeliveryStatus::Created
            | DeliveryStatus::Pending
            | DeliveryStatus::Opened
            | DeliveryStatus::Clicked
            | DeliveryStatus::Delivered
            | DeliveryStatus::Bounced
            | DeliveryStatus::Complained
            | DeliveryStatus::Rejected
            | DeliveryStatus::DeliveryDelayed
            | DeliveryStatus::Failed => continue,
        };
        *counter += 1;
    }
    counts
}

/// Campaign progress kept in the campaign store, with each campaign's state cached for
/// `CAMPAIGN_STATE_TTL`: a batch's jobs of one campaign read it once, not once each.
pub struct StoredCampaignProgress {
    store: Arc<dyn CampaignStore>,
    /// Campaign id → when its state was read, and the state (None: no such campaign).
    pub(crate) states: Mutex<HashMap<String, (Instant, Option<CampaignState>)>>,
}

impl StoredCampaignProgress {
    pub fn new(store: Arc<dyn CampaignStore>) -> Self {
        Self { store, states: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl CampaignProgress for StoredCampaignProgress {
    /// Whether a campaign's jobs are to be delivered, from a state read at most
    /// `CAMPAIGN_STATE_TTL` ago.
    async fn check(&self, campaign_id: &str) -> CampaignCheck {
        let now = Instant::now();
        let cached = self.states.lock().expect("cache lock").get(campaign_id).copied();
        let state = match cached {
            Some((read_at, state)) if now.duration_since(read_at) < CAMPAIGN_STATE_TTL => state,
            _ => match self.store.get(campaign_id).await {
                Ok(campaign) => {
                    let state = campaign.map(|c| c.state);
                    let mut cache = self.states.lock().expect("cache lock");
                    cache.retain(|_, (read_at, _)| now.duration_since(*read_at) < CAMPAIGN_STATE_TTL);
                    cache.insert(campaign_id.to_owned(), (now, state));
                    state
                }
                Err(e) => {
                    tracing::error!(campaign_id, error = %e, "the campaign could not be read");
                    return CampaignCheck::Unknown;
                }
            },
        };
        match state {
            Some(CampaignState::Cancelled) => CampaignCheck::Cancelled,
            Some(_) => CampaignCheck::Deliver,
            None => {
                tracing::warn!(campaign_id, "a job of an unknown campaign: delivered, its counts dropped");
                CampaignCheck::Deliver
            }
        }
    }

    async fn record_settled(&self, campaign_id: &str, outcomes: &[&Outcome]) -> Result<bool, StoreError> {
        let counts = campaign_counts(outcomes.iter().copied());
        // Nothing settled (a redelivery, or retries only): no write.
        if counts == CampaignCounters::default() {
            return Ok(true);
        }
        self.store.add_outcomes(campaign_id, &counts).await
    }

    async fn record_skipped(&self, campaign_id: &str, recipients: u64) -> Result<(), StoreError> {
        let counts = CampaignCounters { skipped_cancelled: recipients, ..Default::default() };
        self.store.add_counts(campaign_id, &counts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_only_what_an_attempt_settled() {
        use DeliveryStatus::*;
        let outcomes = [
            Outcome::Done(Sent),
            Outcome::Done(Sent),
            Outcome::Done(Error),
            Outcome::Done(RateLimited),
            Outcome::Done(Suppressed),
            Outcome::Done(Unsubscribed),
            Outcome::AlreadySettled(Sent),
            Outcome::Retry("throttled".into()),
        ];
        let counts = campaign_counts(&outcomes);
        let expected = CampaignCounters {
            sent: 2,
            failed: 1,
            skipped_rate_limited: 1,
            skipped_suppressed: 1,
            skipped_opted_out: 1,
            ..Default::default()
        };
        assert_eq!(counts, expected);
    }
}
