//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;

use crate::store::StoreError;

/// Campaigns by id, with each shard's recorded cursor.
#[derive(Default)]
pub struct MemoryCampaigns {
    pub campaigns: Mutex<BTreeMap<String, crate::campaigns::Campaign>>,
    /// (campaign, shard) → the cursor of the next page to record; absent: the shard's start.
    pub cursors: Mutex<HashMap<(String, u32), Option<String>>>,
    /// (campaign, shard) → the shard's last recorded page.
    pub last_pages: Mutex<HashMap<(String, u32), crate::campaigns::PageRecord>>,
}

fn add_counters(into: &mut crate::campaigns::CampaignCounters, counts: &crate::campaigns::CampaignCounters) {
    let c = counts;
    into.targeted += c.targeted;
    into.queued += c.queued;
    into.sent += c.sent;
    into.failed += c.failed;
    into.skipped_opted_out += c.skipped_opted_out;
    into.skipped_rate_limited += c.skipped_rate_limited;
    into.skipped_suppressed += c.skipped_suppressed;
    into.skipped_filtered += c.skipped_filtered;
    into.skipped_no_address += c.skipped_no_address;
    into.skipped_cancelled += c.skipped_cancelled;
    into.opened += c.opened;
    into.clicked += c.clicked;
    into.deferred += c.deferred;
    into.deferred_planned += c.deferred_planned;
}

#[async_trait]
impl crate::campaigns::CampaignStore for MemoryCampaigns {
    async fn create(&self, campaign: &crate::campaigns::Campaign) -> Result<bool, StoreError> {
        let mut campaigns = self.campaigns.lock().unwrap();
        if campaigns.contains_key(&campaign.campaign_id) {
            return Ok(false);
        }
        campaigns.insert(campaign.campaign_id.clone(), campaign.clone());
        Ok(true)
    }

    async fn get(&self, campaign_id: &str) -> Result<Option<crate::campaigns::Campaign>, StoreError> {
        Ok(self.campaigns.lock().unwrap().get(campaign_id).cloned())
    }

    async fn get_with_shard(
        &self,
        campaign_id: &str,
        shard: u32,
    ) -> Result<Option<(crate::campaigns::Campaign, crate::campaigns::ShardProgress)>, StoreError> {
        let key = (campaign_id.to_owned(), shard);
        let next = match self.cursors.lock().unwrap().get(&key) {
            None => crate::campaigns::ShardCursor::Start,
            Some(Some(c)) if c == DONE => crate::campaigns::ShardCursor::Done,
            Some(Some(c)) => crate::campaigns::ShardCursor::At(c.clone()),
            Some(None) => crate::campaigns::ShardCursor::Start,
        };
        let last = self.last_pages.lock().unwrap().get(&key).cloned();
        Ok(self.get(campaign_id).await?.map(|c| (c, crate::campaigns::ShardProgress { next, last })))
    }

    async fn set_state(
        &self,
        campaign_id: &str,
        state: crate::campaigns::CampaignState,
        from: &[crate::campaigns::CampaignState],
    ) -> Result<bool, StoreError> {
        let mut campaigns = self.campaigns.lock().unwrap();
        match campaigns.get_mut(campaign_id) {
            Some(campaign) if from.contains(&campaign.state) => {
                campaign.state = state;
                campaign.updated_at = chrono::Utc::now();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn record_page(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &crate::campaigns::CampaignCounters,
        message_id: &str,
    ) -> Result<Option<u32>, StoreError> {
        let mut cursors = self.cursors.lock().unwrap();
        let mut campaigns = self.campaigns.lock().unwrap();
        // As the adapter: no such campaign, or a shard it does not have, records nothing.
        let Some(campaign) = campaigns.get_mut(campaign_id) else { return Ok(None) };
        if shard >= crate::segments::MEMBER_SHARDS {
            return Ok(None);
        }
        let key = (campaign_id.to_owned(), shard);
        // Recorded cursors: Some(cursor) of the next page; Some(None) stands for "done".
        let expected: Option<Option<String>> = Some(cursor.map(str::to_owned));
        let current = match cursors.get(&key) {
            None => Some(None),
            Some(Some(c)) if c == DONE => None,
            Some(c) => Some(c.clone()),
        };
        if current != expected {
            return Ok(None);
        }
        cursors.insert(key.clone(), Some(next.unwrap_or(DONE).to_owned()));
        let record = crate::campaigns::PageRecord {
            cursor: cursor.map(str::to_owned),
            message_id: message_id.to_owned(),
            followed_up: false,
        };
        self.last_pages.lock().unwrap().insert(key, record);
        add_counters(&mut campaign.counters, counts);
        campaign.updated_at = chrono::Utc::now();
        if next.is_none() {
            campaign.shards_done += 1;
        }
        Ok(Some(campaign.shards_done))
    }

    async fn page_followed_up(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let mut last_pages = self.last_pages.lock().unwrap();
        if let Some(last) = last_pages.get_mut(&(campaign_id.to_owned(), shard))
            && last.cursor.as_deref() == cursor
            && last.message_id == message_id
        {
            last.followed_up = true;
        }
        Ok(())
    }

    async fn add_counts(
        &self,
        campaign_id: &str,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<(), StoreError> {
        if let Some(campaign) = self.campaigns.lock().unwrap().get_mut(campaign_id) {
            add_counters(&mut campaign.counters, counts);
        }
        Ok(())
    }

    async fn add_outcomes(
        &self,
        campaign_id: &str,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<bool, StoreError> {
        match self.campaigns.lock().unwrap().get_mut(campaign_id) {
            Some(campaign) if campaign.state != crate::campaigns::CampaignState::Done => {
                add_counters(&mut campaign.counters, counts);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn settle(
        &self,
        campaign_id: &str,
        outcomes: &crate::campaigns::CampaignCounters,
    ) -> Result<bool, StoreError> {
        match self.campaigns.lock().unwrap().get_mut(campaign_id) {
            Some(campaign) if campaign.state == crate::campaigns::CampaignState::Sending => {
                campaign.counters = campaign.counters.with_outcomes(outcomes);
                campaign.state = crate::campaigns::CampaignState::Done;
                campaign.updated_at = chrono::Utc::now();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

const DONE: &str = "\u{0}done";

/// Jobs and dispatch pages sent, with their delays, and how many requests the SQS adapters
/// would have made for them (SendMessageBatch of 10).
#[derive(Default)]
pub struct MemoryQueues {
    pub jobs: Mutex<Vec<crate::delivery::ChannelMessage>>,
    pub pages: Mutex<Vec<(crate::campaigns::DispatchPage, std::time::Duration)>>,
    pub checks: Mutex<Vec<(crate::campaigns::SettleCheck, std::time::Duration)>>,
    pub requests: AtomicUsize,
    /// Keeps only the counts (benchmarks of millions of recipients).
    pub discard: bool,
}

#[async_trait]
impl crate::delivery::ChannelQueues for MemoryQueues {
    async fn enqueue(
        &self,
        jobs: &[crate::delivery::ChannelMessage],
        _delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut by_channel = std::collections::BTreeMap::new();
        for job in jobs {
            *by_channel.entry(job.channel).or_insert(0usize) += 1;
        }
        self.requests.fetch_add(by_channel.values().map(|n| n.div_ceil(10)).sum(), Ordering::SeqCst);
        if !self.discard {
            self.jobs.lock().unwrap().extend_from_slice(jobs);
        }
        Ok(())
    }
}

#[async_trait]
impl crate::campaigns::DispatchQueue for MemoryQueues {
    async fn dispatch(
        &self,
        pages: &[crate::campaigns::DispatchPage],
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.requests.fetch_add(pages.len().div_ceil(10), Ordering::SeqCst);
        self.pages.lock().unwrap().extend(pages.iter().map(|p| (p.clone(), delay)));
        Ok(())
    }

    async fn check(&self, check: &crate::campaigns::SettleCheck, delay: std::time::Duration) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.checks.lock().unwrap().push((check.clone(), delay));
        Ok(())
    }
}
