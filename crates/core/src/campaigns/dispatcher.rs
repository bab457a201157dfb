//! The dispatcher: fans a campaign out, one page of one members shard per message, onto
//! the channel queues, several recipients per message. Each page is a checkpoint: its
//! counts are recorded once, and the next page is a new message.
//!
//! A campaign with a `local_window` sends each member only within that window of their
//! local time: a member outside it is put off into a deferred batch, a message to the
//! dispatcher itself due when the window starts for them, which queues their deliveries then.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::{
    activity::{Activity, ActivityQuery, ActivityStore},
    campaigns::{
        Campaign, CampaignCounters, CampaignState, CampaignStore, DispatchPage, DispatchQueue, MAX_DEFERRED_USERS,
        WindowTimes, time_zone_of,
    },
    delivery::{Channel, ChannelQueues, delivery_id},
    notifications::{ChannelMessage, ChannelRecipient, ContentRef, target_of},
    profiles::ProfileStore,
    segments::{
        MEMBER_SHARDS, MembershipStore,
        rules::{Rule, Subject},
    },
    store::StoreError,
    validation::ValidationErrors,
};

/// Members read per message: one Query page, ten BatchGetItem of profiles.
pub const PAGE_SIZE: u32 = 1000;
/// Recipients per channel message: 1,000 recipients are 20 messages, 2 SendMessageBatch.
pub const RECIPIENTS_PER_MESSAGE: usize = 50;
/// SQS delays a message 15 minutes at most; a later `send_at` (or window start) is waited
/// for in steps.
const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no campaign {0}")]
    UnknownCampaign(String),
    #[error("the campaign's stored filter does not parse: {0}")]
    BadFilter(ValidationErrors),
    #[error("the campaign's stored local_window does not parse")]
    BadWindow,
}

/// What a page message came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatchOutcome {
    /// Cancelled or done: nothing was sent.
    Stopped,
    /// Before its `send_at` (or a deferred batch before its `not_before`): the message was
    /// sent again, delayed.
    Deferred,
    /// Queued; `recorded` is false when an earlier delivery of this page had recorded it
    /// (its deliveries were queued again, and the workers' claims drop the repeats).
    /// `deferred` members were put off to their local time window, in deferred batches.
    Dispatched { queued: u64, deferred: u64, recorded: bool },
    /// A deferred batch was planned: `queued` deliveries, `deferred` members put off again
    /// (their window had passed, or their time zone changed).
    DeferredBatch { queued: u64, deferred: u64 },
}

/// What planning some members came to.
struct Plan {
    jobs: Vec<ChannelMessage>,
    counts: CampaignCounters,
    /// Deferred batches, with the delay to send each with.
    batches: Vec<(DispatchPage, Duration)>,
}

pub struct Dispatcher {
    campaigns: Arc<dyn CampaignStore>,
    members: Arc<dyn MembershipStore>,
    profiles: Arc<dyn ProfileStore>,
    activity: Arc<dyn ActivityStore>,
    queues: Arc<dyn ChannelQueues>,
    dispatch: Arc<dyn DispatchQueue>,
    pub page_size: u32,
    pub recipients_per_job: usize,
}

impl Dispatcher {
    pub fn new(
        campaigns: Arc<dyn CampaignStore>,
        members: Arc<dyn MembershipStore>,
        profiles: Arc<dyn ProfileStore>,
        activity: Arc<dyn ActivityStore>,
        queues: Arc<dyn ChannelQueues>,
        dispatch: Arc<dyn DispatchQueue>,
    ) -> Self {
        Self {
            campaigns,
            members,
            profiles,
            activity,
            queues,
            dispatch,
            page_size: PAGE_SIZE,
            recipients_per_job: RECIPIENTS_PER_MESSAGE,
        }
    }

    /// Dispatches one page: reads the members, puts off those outside their local time
    /// window into deferred batches, screens the others with the campaign's filter, queues
    /// a delivery per member and channel with an address, records the page's counts once,
    /// and sends the next page as a new message. A deferred batch (see [`Self::run_deferred`])
    /// is planned when due; any message before its time is sent back, delayed.
    pub async fn run(&self, page: &DispatchPage, now: DateTime<Utc>) -> Result<DispatchOutcome, DispatchError> {
        let campaign = self
            .campaigns
            .get(&page.campaign_id)
            .await?
            .ok_or_else(|| DispatchError::UnknownCampaign(page.campaign_id.clone()))?;
        if matches!(campaign.state, CampaignState::Cancelled | CampaignState::Done) {
            return Ok(DispatchOutcome::Stopped);
        }
        let due = match (campaign.send_at, page.not_before) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(due) = due
            && due > now
        {
            self.dispatch.dispatch(std::slice::from_ref(page), delay(due, now)).await?;
            return Ok(DispatchOutcome::Deferred);
        }
        if page.is_deferred_batch() {
            return self.run_deferred(&campaign, page, now).await;
        }
        if campaign.state == CampaignState::Scheduled {
            self.campaigns
                .set_state(&campaign.campaign_id, CampaignState::Dispatching, &[CampaignState::Scheduled])
                .await?;
        }
        let members =
            self.members.members(&campaign.segment_id, page.shard, page.cursor.as_deref(), self.page_size).await?;
        let Plan { jobs, counts, batches } = self.plan(&campaign, page.shard, &members.user_ids, now).await?;
        self.queues.enqueue(&jobs, Duration::ZERO).await?;
        // Sent before the page is recorded, and again if the page is delivered again: a
        // batch is never lost, though a redelivered page may send its batches twice.
        self.send_batches(&batches).await?;
        let recorded = self
            .campaigns
            .record_page(&campaign.campaign_id, page.shard, page.cursor.as_deref(), members.next.as_deref(), &counts)
            .await?;
        match (members.next, recorded) {
            // Sent again even when the page had been recorded: the delivery that recorded
            // it may have stopped before sending it.
            (Some(next), _) => {
                let next = DispatchPage { cursor: Some(next), ..page.clone() };
                self.dispatch.dispatch(&[next], Duration::ZERO).await?;
            }
            (None, Some(shards_done)) if shards_done >= MEMBER_SHARDS => {
                let from = [CampaignState::Dispatching, CampaignState::Scheduled];
                self.campaigns.set_state(&campaign.campaign_id, CampaignState::Sending, &from).await?;
            }
            (None, _) => {}
        }
        Ok(DispatchOutcome::Dispatched {
            queued: counts.queued,
            deferred: counts.deferred,
            recorded: recorded.is_some(),
        })
    }

    /// Plans a due deferred batch: exactly its users, their profiles and the filter read
    /// again now. Its counts are added with `add_counts`, not recorded once: a batch
    /// delivered twice counts twice (its deliveries are deduplicated by the workers' claims,
    /// delivery ids being (campaign, user, channel), but `queued` and `deferred_planned`
    /// grow twice).
    async fn run_deferred(
        &self,
        campaign: &Campaign,
        page: &DispatchPage,
        now: DateTime<Utc>,
    ) -> Result<DispatchOutcome, DispatchError> {
        let Plan { jobs, mut counts, batches } = self.plan(campaign, page.shard, &page.users, now).await?;
        // Counted as targeted by their shard page already.
        counts.targeted = 0;
        counts.deferred_planned = page.users.len() as u64;
        self.queues.enqueue(&jobs, Duration::ZERO).await?;
        self.send_batches(&batches).await?;
        self.campaigns.add_counts(&campaign.campaign_id, &counts).await?;
        Ok(DispatchOutcome::DeferredBatch { queued: counts.queued, deferred: counts.deferred })
    }

    /// Sends deferred batches, those of one delay together.
    async fn send_batches(&self, batches: &[(DispatchPage, Duration)]) -> Result<(), DispatchError> {
        let mut by_delay: BTreeMap<Duration, Vec<DispatchPage>> = BTreeMap::new();
        for (batch, delay) in batches {
            by_delay.entry(*delay).or_default().push(batch.clone());
        }
        for (delay, pages) in by_delay {
            self.dispatch.dispatch(&pages, delay).await?;
        }
        Ok(())
    }

    /// The channel jobs of some members, the deferred batches of those outside their local
    /// time window, and what they count.
    async fn plan(
        &self,
        campaign: &Campaign,
        shard: u32,
        user_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Plan, DispatchError> {
        let filter = campaign.filter.as_ref().map(Rule::parse).transpose().map_err(DispatchError::BadFilter)?;
        let window: Option<WindowTimes> =
            campaign.local_window.as_ref().map(|w| w.times().ok_or(DispatchError::BadWindow)).transpose()?;
        let profiles = self.profiles.load_many(user_ids).await?;
        let mut counts = CampaignCounters { targeted: user_ids.len() as u64, ..Default::default() };
        // Members outside their window, by when it starts.
        let mut later: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
        let mut now_ids = Vec::with_capacity(user_ids.len());
        for user_id in user_ids {
            // An erased or never-written profile has no address on any channel.
            let Some(profile) = profiles.get(user_id).and_then(|s| s.profile.as_ref()) else {
                counts.skipped_no_address += campaign.channels.len() as u64;
                continue;
            };
            let start = window.and_then(|w| w.next_start(time_zone_of(profile.timezone.as_deref()), now));
            match start {
                Some(start) => later.entry(start).or_default().push(user_id.clone()),
                None => now_ids.push((user_id, profile)),
            }
        }
        let today = now.date_naive();
        let query = filter.as_ref().map(activity_query).unwrap_or_default();
        let activity = if query.is_empty() || now_ids.is_empty() {
            HashMap::new()
        } else {
            let ids: Vec<String> = now_ids.iter().map(|(id, _)| (*id).clone()).collect();
            self.activity.load_many(&ids, &query, today).await?
        };
        let no_activity = Activity::default();
        let mut recipients: BTreeMap<Channel, Vec<ChannelRecipient>> = BTreeMap::new();
        for (user_id, profile) in now_ids {
            if let Some(rule) = &filter {
                let activity = activity.get(user_id).unwrap_or(&no_activity);
                if !rule.evaluate(&Subject { profile: Some(profile), activity, today }) {
                    counts.skipped_filtered += 1;
                    continue;
                }
            }
            for &channel in &campaign.channels {
                match target_of(profile, channel) {
                    Some(target) => {
                        counts.queued += 1;
                        recipients.entry(channel).or_default().push(ChannelRecipient {
                            delivery_id: delivery_id(&campaign.campaign_id, user_id, channel),
                            user_id: Some(user_id.clone()),
                            target,
                        });
                    }
                    None => counts.skipped_no_address += 1,
                }
            }
        }
        let content =
            ContentRef::Template { template_id: campaign.template_id.clone(), version: campaign.template_version };
        let jobs = recipients
            .into_iter()
            .flat_map(|(channel, recipients)| {
                let message = ChannelMessage {
                    notification_id: campaign.campaign_id.clone(),
                    notification_type: "campaign".into(),
                    channel,
                    content: content.clone(),
                    params: Default::default(),
                    recipients: Vec::new(),
                    campaign_id: Some(campaign.campaign_id.clone()),
                    attempt: 0,
                };
                message.pack(&recipients, self.recipients_per_job)
            })
            .collect();
        let mut batches = Vec::new();
        for (start, users) in later {
            counts.deferred += users.len() as u64;
            for chunk in users.chunks(MAX_DEFERRED_USERS) {
                let batch = DispatchPage::deferred(&campaign.campaign_id, shard, chunk.to_vec(), start);
                batches.push((batch, delay(start, now)));
            }
        }
        Ok(Plan { jobs, counts, batches })
    }
}

/// How long to delay a message due at `due`: SQS delays 15 minutes at most, and a message
/// that arrives early is sent back again.
fn delay(due: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (due - now).to_std().unwrap_or_default().min(MAX_DELAY)
}

/// What of a user's activity the filter reads.
fn activity_query(rule: &Rule) -> ActivityQuery {
    let mut query = ActivityQuery::default();
    rule.counters(&mut query.counters);
    query.days = rule.window_days();
    rule.last_seen_events(&mut query.last_seen);
    query
}
