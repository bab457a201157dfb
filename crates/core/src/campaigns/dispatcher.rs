//! The dispatcher: fans a campaign out, one page of one members shard per message, onto
//! the channel queues, several recipients per message. Each page is a checkpoint: its
//! counts are recorded once, by one message, which alone sends the next page as a new
//! message (see [`Dispatcher::run`]).
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
        PageState, SettleCheck, WindowTimes, reconciler::SETTLE_EVERY, time_zone_of,
    },
    channel::Channel,
    delivery::{ChannelMessage, ChannelQueues, ChannelRecipient, ContentRef, delivery_id, target_of},
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
    /// Queued; `recorded` is false when another copy of this page, dispatched at the same
    /// time, recorded it first (its deliveries were queued twice, and the workers' claims
    /// drop the repeats; the other copy sends the next page). `deferred` members were put
    /// off to their local time window, in deferred batches.
    Dispatched { queued: u64, deferred: u64, recorded: bool },
    /// The page had been recorded by another copy of it, or the shard is past it: nothing
    /// was done.
    Duplicate,
    /// This message had recorded the page and stopped before sending the next: it sent it
    /// now (or, for the campaign's last page, moved the campaign to `sending`).
    FollowedUp,
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
    /// The delay of a campaign's first settle check, sent by its last page.
    pub settle_every: Duration,
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
            settle_every: SETTLE_EVERY,
        }
    }

    /// Dispatches one page: reads the members, puts off those outside their local time
    /// window into deferred batches, screens the others with the campaign's filter, queues
    /// a delivery per member and channel with an address, records the page's counts once,
    /// and sends the next page as a new message. A deferred batch (see [`Self::run_deferred`])
    /// is planned when due; any message before its time is sent back, delayed.
    ///
    /// `message_id` is the queue message's id: the same on each delivery of one message,
    /// another on each copy of a page sent twice. It makes a page's next page go out once
    /// per page, not once per delivery (a chain that forked would run the rest of the shard
    /// twice). SQS and DynamoDB share no transaction, so sending the next page and
    /// recording that it was sent cannot be one step; instead:
    /// 1. the page is recorded (cursor moved, counts added) by one conditional write that
    ///    names the message that recorded it; of two copies of a page, one records it;
    /// 2. that message sends the next page (for a shard's last page: moves the campaign to
    ///    `sending` and sends its first settle check), then marks the record followed up.
    ///
    /// A message that stops between 1 and 2 is delivered again (same id): it finds its own
    /// record not followed up, and does step 2 only, so the next page is never lost. One
    /// that stops after sending and before marking sends the next page twice; the second
    /// copy then finds the page recorded by the first and stops there, so the chain does
    /// not fork. Any other copy of a recorded page (a repeated `POST /v1/campaigns`, a
    /// redelivery after the shard moved on) stops at once, sending nothing.
    pub async fn run(
        &self,
        page: &DispatchPage,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<DispatchOutcome, DispatchError> {
        let (campaign, progress) = self
            .campaigns
            .get_with_shard(&page.campaign_id, page.shard)
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
        match progress.page(page.cursor.as_deref(), message_id) {
            PageState::ToRecord => {}
            PageState::RecordedElsewhere | PageState::RecordedByThis { followed_up: true } => {
                return Ok(DispatchOutcome::Duplicate);
            }
            PageState::RecordedByThis { followed_up: false } => {
                let next = progress.next_cursor().map(str::to_owned);
                self.follow_up(&campaign, page, next, campaign.shards_done, message_id).await?;
                return Ok(DispatchOutcome::FollowedUp);
            }
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
        // Sent before the page is recorded, and again if the page is delivered again
        // before it is recorded: a batch is never lost, though it may be sent twice.
        self.send_batches(&batches).await?;
        let recorded = self
            .campaigns
            .record_page(
                &campaign.campaign_id,
                page.shard,
                page.cursor.as_deref(),
                members.next.as_deref(),
                &counts,
                message_id,
            )
            .await?;
        // Not recorded: another copy of the page recorded it meanwhile, and follows it up.
        if let Some(shards_done) = recorded {
            self.follow_up(&campaign, page, members.next, shards_done, message_id).await?;
        }
        Ok(DispatchOutcome::Dispatched {
            queued: counts.queued,
            deferred: counts.deferred,
            recorded: recorded.is_some(),
        })
    }

    /// What follows a recorded page: the shard's next page; after the campaign's last
    /// page (every shard done), the move to `sending` and the first settle check. Then the
    /// record is marked followed up (see [`Self::run`]).
    async fn follow_up(
        &self,
        campaign: &Campaign,
        page: &DispatchPage,
        next: Option<String>,
        shards_done: u32,
        message_id: &str,
    ) -> Result<(), DispatchError> {
        match next {
            Some(next) => {
                let next = DispatchPage { cursor: Some(next), ..page.clone() };
                self.dispatch.dispatch(&[next], Duration::ZERO).await?;
            }
            None if shards_done >= MEMBER_SHARDS => {
                // The check first: should this message stop before moving the campaign
                // on, the check finds every shard done and moves it itself.
                self.dispatch.check(&SettleCheck::first(&campaign.campaign_id), self.settle_every).await?;
                let from = [CampaignState::Dispatching, CampaignState::Scheduled];
                self.campaigns.set_state(&campaign.campaign_id, CampaignState::Sending, &from).await?;
            }
            None => {}
        }
        self.campaigns.page_followed_up(&campaign.campaign_id, page.shard, page.cursor.as_deref(), message_id).await?;
        Ok(())
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
                    // Bulk mail: it carries the one-click unsubscribe headers.
                    transactional: false,
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
