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
    /// Moves the campaign to `state` if it is in one of `from`; false otherwise.
    async fn set_state(
        &self,
        campaign_id: &str,
        state: crate::campaigns::CampaignState,
        from: &[crate::campaigns::CampaignState],
    ) -> Result<bool, StoreError>;
    /// Records a dispatched page exactly once: if the shard's cursor is still `cursor`
    /// (None: the shard's start), moves it to `next` (None: the shard is done, and
    /// `shards_done` grows by one) and adds `counts`, in one conditional write. Returns the
    /// campaign's `shards_done` after the write, or None if the page had been recorded.
    async fn record_page(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<Option<u32>, StoreError>;
    /// Adds to the counters (a worker's outcomes of one message).
    async fn add_counts(
        &self,
        campaign_id: &str,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<(), StoreError>;
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
}
