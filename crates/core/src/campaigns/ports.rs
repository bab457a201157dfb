//! What campaigns needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use crate::store::StoreError;

/// Campaigns (the jobs table, kind `campaign`).
#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Stores a new campaign; false (nothing written) if one with its id exists.
    async fn create(&self, campaign: &crate::campaigns::Campaign) -> Result<bool, StoreError>;
    /// Strongly consistent.
    async fn get(&self, campaign_id: &str) -> Result<Option<crate::campaigns::Campaign>, StoreError>;
    /// The campaign and where one of its shards stands, in one strongly consistent read.
    async fn get_with_shard(
        &self,
        campaign_id: &str,
        shard: u32,
    ) -> Result<Option<(crate::campaigns::Campaign, crate::campaigns::ShardProgress)>, StoreError>;
    /// Moves the campaign to `state` if it is in one of `from`; false otherwise.
    async fn set_state(
        &self,
        campaign_id: &str,
        state: crate::campaigns::CampaignState,
        from: &[crate::campaigns::CampaignState],
    ) -> Result<bool, StoreError>;
    /// Records a dispatched page exactly once: if the shard's cursor is still `cursor`
    /// (None: the shard's start), moves it to `next` (None: the shard is done, and
    /// `shards_done` grows by one), adds `counts` and makes the page the shard's last
    /// record, by `message_id` and not followed up, in one conditional write. Returns the
    /// campaign's `shards_done` after the write, or None if the page had been recorded.
    async fn record_page(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &crate::campaigns::CampaignCounters,
        message_id: &str,
    ) -> Result<Option<u32>, StoreError>;
    /// Marks the shard's last record followed up, if it is still the page read from
    /// `cursor` by `message_id` (else nothing: a later page replaced it).
    async fn page_followed_up(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        message_id: &str,
    ) -> Result<(), StoreError>;
    /// Adds to the counters (engagement, cancelled skips, a deferred batch's plan).
    async fn add_counts(
        &self,
        campaign_id: &str,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<(), StoreError>;
    /// Adds a worker's outcomes of one message, unless the campaign is `done`: its
    /// outcomes were then counted from its deliveries, these among them. False when
    /// dropped (done, or no such campaign).
    async fn add_outcomes(
        &self,
        campaign_id: &str,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<bool, StoreError>;
    /// Marks a `sending` campaign `done` with its outcome counters (sent, failed and the
    /// workers' skips, see `CampaignCounters::outcomes`) set to `outcomes`', the others
    /// untouched, in one conditional write. False if the campaign is not `sending`.
    async fn settle(
        &self,
        campaign_id: &str,
        outcomes: &crate::campaigns::CampaignCounters,
    ) -> Result<bool, StoreError>;
}

/// The dispatcher's own queue.
#[async_trait]
pub trait DispatchQueue: Send + Sync {
    /// Sends each page as a message (batched), delivered after `delay` (at most 15 minutes).
    async fn dispatch(
        &self,
        pages: &[crate::campaigns::DispatchPage],
        delay: std::time::Duration,
    ) -> Result<(), StoreError>;
    /// Sends a settle check, delivered after `delay` (at most 15 minutes).
    async fn check(&self, check: &crate::campaigns::SettleCheck, delay: std::time::Duration) -> Result<(), StoreError>;
}
