//! The dispatcher: fans a campaign out, one page of one members shard per message, onto
//! the channel queues, several recipients per message. Each page is a checkpoint: its
//! counts are recorded once, and the next page is a new message.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::{
    ValidationErrors,
    activity::{Activity, ActivityQuery},
    campaigns::{Campaign, CampaignCounters, CampaignState, DispatchPage},
    delivery::{Channel, delivery_id},
    notification::{ContentRef, DeliveryJob, JobRecipient, target_of},
    ports::{ActivityStore, CampaignStore, DispatchQueue, JobQueues, MembershipStore, ProfileStore, StoreError},
    rules::{Rule, Subject},
    segments::MEMBER_SHARDS,
};

/// Members read per message: one Query page, ten BatchGetItem of profiles.
pub const PAGE_SIZE: u32 = 1000;
/// Recipients per channel message: 1,000 recipients are 20 messages, 2 SendMessageBatch.
pub const RECIPIENTS_PER_JOB: usize = 50;
/// SQS delays a message 15 minutes at most; a later `send_at` is waited for in steps.
const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no campaign {0}")]
    UnknownCampaign(String),
    #[error("the campaign's stored filter does not parse: {0}")]
    BadFilter(ValidationErrors),
}

/// What a page message came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatchOutcome {
    /// Cancelled or done: nothing was sent.
    Stopped,
    /// Before its `send_at`: the message was sent again, delayed.
    Deferred,
    /// Queued; `recorded` is false when an earlier delivery of this page had recorded it
    /// (its deliveries were queued again, and the workers' claims drop the repeats).
    Dispatched { queued: u64, recorded: bool },
}

pub struct Dispatcher {
    campaigns: Arc<dyn CampaignStore>,
    members: Arc<dyn MembershipStore>,
    profiles: Arc<dyn ProfileStore>,
    activity: Arc<dyn ActivityStore>,
    queues: Arc<dyn JobQueues>,
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
        queues: Arc<dyn JobQueues>,
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
            recipients_per_job: RECIPIENTS_PER_JOB,
        }
    }

    /// Dispatches one page: reads the members, screens them with the campaign's filter,
    /// queues a delivery per member and channel with an address, records the page's
    /// counts once, and sends the next page as a new message.
    pub async fn run(&self, page: &DispatchPage, now: DateTime<Utc>) -> Result<DispatchOutcome, DispatchError> {
        let campaign = self
            .campaigns
            .get(&page.campaign_id)
            .await?
            .ok_or_else(|| DispatchError::UnknownCampaign(page.campaign_id.clone()))?;
        if matches!(campaign.state, CampaignState::Cancelled | CampaignState::Done) {
            return Ok(DispatchOutcome::Stopped);
        }
        if let Some(send_at) = campaign.send_at
            && send_at > now
        {
            let wait = (send_at - now).to_std().unwrap_or_default().min(MAX_DELAY);
            self.dispatch.dispatch(std::slice::from_ref(page), wait).await?;
            return Ok(DispatchOutcome::Deferred);
        }
        if campaign.state == CampaignState::Scheduled {
            self.campaigns
                .set_state(&campaign.campaign_id, CampaignState::Dispatching, &[CampaignState::Scheduled])
                .await?;
        }
        let members =
            self.members.members(&campaign.segment_id, page.shard, page.cursor.as_deref(), self.page_size).await?;
        let (jobs, counts) = self.plan(&campaign, &members.user_ids, now).await?;
        self.queues.enqueue(&jobs, Duration::ZERO).await?;
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
        Ok(DispatchOutcome::Dispatched { queued: counts.queued, recorded: recorded.is_some() })
    }

    /// The channel jobs of a page of members, and what the page counts.
    async fn plan(
        &self,
        campaign: &Campaign,
        user_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(Vec<DeliveryJob>, CampaignCounters), DispatchError> {
        let filter = campaign.filter.as_ref().map(Rule::parse).transpose().map_err(DispatchError::BadFilter)?;
        let profiles = self.profiles.load_many(user_ids).await?;
        let today = now.date_naive();
        let query = filter.as_ref().map(activity_query).unwrap_or_default();
        let activity =
            if query.is_empty() { HashMap::new() } else { self.activity.load_many(user_ids, &query, today).await? };
        let no_activity = Activity::default();
        let mut counts = CampaignCounters { targeted: user_ids.len() as u64, ..Default::default() };
        let mut recipients: BTreeMap<Channel, Vec<JobRecipient>> = BTreeMap::new();
        for user_id in user_ids {
            // An erased or never-written profile has no address on any channel.
            let Some(profile) = profiles.get(user_id).and_then(|s| s.profile.as_ref()) else {
                counts.skipped_no_address += campaign.channels.len() as u64;
                continue;
            };
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
                        recipients.entry(channel).or_default().push(JobRecipient {
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
                recipients
                    .chunks(self.recipients_per_job.max(1))
                    .map(|chunk| DeliveryJob {
                        notification_id: campaign.campaign_id.clone(),
                        notification_type: "campaign".into(),
                        channel,
                        content: content.clone(),
                        params: Default::default(),
                        recipients: chunk.to_vec(),
                        campaign_id: Some(campaign.campaign_id.clone()),
                        attempt: 0,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok((jobs, counts))
    }
}

/// What of a user's activity the filter reads.
fn activity_query(rule: &Rule) -> ActivityQuery {
    let mut query = ActivityQuery::default();
    rule.counters(&mut query.counters);
    query.days = rule.window_days();
    rule.last_seen_events(&mut query.last_seen);
    query
}
