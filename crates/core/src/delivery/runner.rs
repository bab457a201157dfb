//! The delivery runner: what a channel worker does with a batch of jobs around the
//! pipeline. It decides how many attempts a job gets, when a job that keeps coming back is
//! handed on, what of a batch an invocation takes on before its deadline (and its pacer),
//! which recipients are queued again, what a cancelled campaign's job becomes, and what is
//! counted. It answers the jobs that failed, for the queue to deliver again.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use herald_wire::backoff::Backoff;

use crate::{
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelQueues,
        pipeline::{Outcome, Pipeline, RECORDING_MARGIN, retry_job},
    },
    metrics::{Dimension, Metric, Metrics},
    store::StoreError,
};

/// How many times a job's recipients are put back on the queue; a job past it is handed
/// back to SQS instead, which redelivers it and, after maxReceiveCount, parks it in the
/// dead-letter queue.
pub const MAX_ATTEMPTS: u32 = 5;

/// Receives after which a message that keeps coming back (its invocations stopped, as by
/// their timeout) is handed on as a new message, one attempt later, before it is tried
/// again. What it settled is recorded, so it made progress; left to SQS, its receives
/// would park it in the dead-letter queue (maxReceiveCount 5) with recipients never sent.
/// `MAX_ATTEMPTS` bounds the hand-ons: a message that cannot be handled still ends there.
pub const HAND_ON_AFTER_RECEIVES: u32 = 3;

/// The wait before recipients are tried again, by the job's attempt: exponential with
/// full jitter, capped at the 15 minutes SQS can delay a message.
pub fn retry_delays() -> Backoff {
    Backoff::new(Duration::from_secs(10), Duration::from_secs(900), MAX_ATTEMPTS + 1)
}

/// What the runner knows of a job's campaign before processing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignCheck {
    /// No campaign, or one that is not cancelled (or not found): deliver.
    Deliver,
    Cancelled,
    /// The campaign could not be read: the message is retried.
    Unknown,
}

/// What the runner needs of campaigns: whether a campaign's jobs are delivered, and its
/// progress recorded. A port, so that delivery does not depend on campaigns (campaigns
/// implements it over its store).
#[async_trait]
pub trait CampaignProgress: Send + Sync {
    /// Whether the campaign's jobs are to be delivered.
    async fn check(&self, campaign_id: &str) -> CampaignCheck;
    /// Adds what one job's attempt settled to the campaign's counters. False when dropped
    /// because the campaign was settled already (its outcomes counted from its deliveries).
    async fn record_settled(&self, campaign_id: &str, outcomes: &[&Outcome]) -> Result<bool, StoreError>;
    /// Counts `recipients` of a cancelled campaign as skipped.
    async fn record_skipped(&self, campaign_id: &str, recipients: u64) -> Result<(), StoreError>;
}

/// One message of a batch, as the queue delivered it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job<'a> {
    /// The queue's id of the message, for logs (never its body: it may hold addresses).
    pub message_id: &'a str,
    /// How many times the queue has delivered the message, this time included.
    pub receive_count: u32,
    /// The job; None if the message could not be read.
    pub message: Option<ChannelMessage>,
}

/// What of one message an invocation takes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Share {
    Whole,
    /// The first n recipients; the rest are handed on in a new message.
    First(usize),
    /// Nothing: the message goes back to the queue unclaimed.
    None,
}

pub struct DeliveryRunner {
    pub pipeline: Pipeline,
    /// The channel's queue, where recipients to try again are put back.
    pub queues: Arc<dyn ChannelQueues>,
    pub campaigns: Arc<dyn CampaignProgress>,
    /// The wait before recipients are tried again, by the job's attempt.
    pub retry_delay: Backoff,
    /// Deliveries by status, campaign progress.
    pub metrics: Arc<dyn Metrics>,
}

/// What a delivery's outcome is called in `Deliveries`' status dimension.
fn outcome_status(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done(status) => status.as_str(),
        Outcome::AlreadySettled(_) => "already_settled",
        Outcome::Retry(_) => "retry",
    }
}

impl DeliveryRunner {
    pub fn new(
        pipeline: Pipeline,
        queues: Arc<dyn ChannelQueues>,
        campaigns: Arc<dyn CampaignProgress>,
        retry_delay: Backoff,
        metrics: Arc<dyn Metrics>,
    ) -> Self {
        Self { pipeline, queues, campaigns, retry_delay, metrics }
    }

    pub fn channel(&self) -> Channel {
        self.pipeline.channel
    }

    /// Runs a batch and answers the positions of the jobs that failed, for the queue to
    /// deliver again. The jobs are read first, so that each campaign of the batch is
    /// looked up once, not once per job. A job fails if it could not be read or is for
    /// another channel (after maxReceiveCount, SQS moves it to the dead-letter queue), if
    /// its recipients to try again could not be queued again or are out of attempts, or
    /// if its campaign could not be read.
    pub async fn run(&self, batch: Vec<Job<'_>>, deadline: Option<Instant>) -> Vec<usize> {
        let (message_ids, receive_counts): (Vec<&str>, Vec<u32>) =
            batch.iter().map(|job| (job.message_id, job.receive_count)).unzip();
        let mut jobs: Vec<Option<ChannelMessage>> = batch
            .into_iter()
            .map(|job| match job.message {
                Some(message) if message.channel != self.channel() => {
                    tracing::error!(message_id = job.message_id, channel = %message.channel, "a job for another channel");
                    None
                }
                message => message,
            })
            .collect();
        let mut done = vec![false; jobs.len()];
        self.hand_on_worn(&message_ids, &receive_counts, &mut jobs, &mut done).await;
        let campaign_ids: BTreeSet<&str> = jobs.iter().flatten().filter_map(|j| j.campaign_id.as_deref()).collect();
        let checks: HashMap<&str, CampaignCheck> = futures_util::future::join_all(
            campaign_ids.into_iter().map(async |id| (id, self.campaigns.check(id).await)),
        )
        .await
        .into_iter()
        .collect();
        let shares = self.shares(&jobs, deadline);
        // One message after the other, each started only if it can end before the
        // deadline, judging by the slowest so far, so the invocation is never stopped
        // mid-message with its counts unrecorded.
        let mut later: Vec<(usize, ChannelMessage)> = Vec::new();
        let mut slowest = Duration::ZERO;
        for (position, (job, share)) in jobs.iter().zip(shares).enumerate() {
            let Some(job) = job else { continue };
            let message_id = message_ids[position];
            let late = deadline.is_some_and(|d| Instant::now() + slowest + RECORDING_MARGIN > d);
            let started = Instant::now();
            let job = match share {
                _ if late => None,
                Share::Whole => Some(job.clone()),
                Share::None => None,
                Share::First(n) => match self.hand_on(message_id, job, n).await {
                    Some(first) => Some(first),
                    None => continue,
                },
            };
            let Some(job) = job else {
                later.push((position, jobs[position].clone().expect("a parsed job")));
                continue;
            };
            let check = job.campaign_id.as_deref().map_or(CampaignCheck::Deliver, |id| checks[id]);
            done[position] = self.handle_job(message_id, &job, check, deadline).await;
            slowest = slowest.max(started.elapsed());
        }
        // Messages this invocation would not finish go back to the channel queue as new
        // messages, unclaimed: handed back to SQS instead, each would use up one of its
        // receives, and a busy paced channel would send good messages to the DLQ.
        if !later.is_empty() {
            let (positions, unstarted): (Vec<usize>, Vec<ChannelMessage>) = later.into_iter().unzip();
            match self.queues.enqueue(&unstarted, Duration::ZERO).await {
                Ok(()) => positions.into_iter().for_each(|p| done[p] = true),
                Err(e) => tracing::error!(error = %e, "the messages past the deadline were not handed on"),
            }
        }
        done.iter().enumerate().filter(|(_, done)| !**done).map(|(position, _)| position).collect()
    }

    /// What of each message this invocation takes on: with a deadline and a paced
    /// channel, only the recipients whose sends can start before it (less the time to
    /// record them), in batch order; the rest are handed on unclaimed.
    fn shares(&self, jobs: &[Option<ChannelMessage>], deadline: Option<Instant>) -> Vec<Share> {
        let capacity = match (deadline, &self.pipeline.pacing) {
            (Some(deadline), Some(pacer)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                Some(pacer.sends_within(left.saturating_sub(RECORDING_MARGIN)))
            }
            _ => None,
        };
        let Some(mut capacity) = capacity else { return vec![Share::Whole; jobs.len()] };
        jobs.iter()
            .map(|job| {
                let wanted = job.as_ref().map_or(0, |j| j.recipients.len());
                if wanted <= capacity {
                    capacity -= wanted;
                    Share::Whole
                } else if capacity == 0 {
                    Share::None
                } else {
                    let first = std::mem::take(&mut capacity);
                    Share::First(first)
                }
            })
            .collect()
    }

    /// Hands on the messages that came back `HAND_ON_AFTER_RECEIVES` times, as new
    /// messages one attempt later, before anything else: this invocation may be stopped
    /// as the earlier ones were. Each handed on is done (and its job taken out of `jobs`);
    /// one that could not be is tried here as it is.
    async fn hand_on_worn(
        &self,
        message_ids: &[&str],
        receive_counts: &[u32],
        jobs: &mut [Option<ChannelMessage>],
        done: &mut [bool],
    ) {
        for position in 0..jobs.len() {
            let Some(job) = &jobs[position] else { continue };
            if receive_counts[position] < HAND_ON_AFTER_RECEIVES || job.attempt + 1 >= MAX_ATTEMPTS {
                continue;
            }
            let fresh = ChannelMessage { attempt: job.attempt + 1, ..job.clone() };
            let message_id = message_ids[position];
            match self.queues.enqueue(std::slice::from_ref(&fresh), self.retry_delay.delay(job.attempt)).await {
                Ok(()) => {
                    tracing::info!(message_id, attempt = fresh.attempt, "a message back too often handed on anew");
                    done[position] = true;
                    jobs[position] = None;
                }
                Err(e) => tracing::warn!(message_id, error = %e, "a message back too often not handed on"),
            }
        }
    }

    /// Queues the recipients of `job` after the first `n` as a message of their own, before
    /// any is claimed, and answers the message of the first `n`; None if the queue failed
    /// (the whole message then comes back).
    async fn hand_on(&self, message_id: &str, job: &ChannelMessage, n: usize) -> Option<ChannelMessage> {
        let (first, rest) = job.recipients.split_at(n);
        let later = ChannelMessage { recipients: rest.to_vec(), ..job.clone() };
        if let Err(e) = self.queues.enqueue(std::slice::from_ref(&later), Duration::ZERO).await {
            tracing::error!(message_id, error = %e, "the recipients past the deadline were not handed on");
            return None;
        }
        tracing::info!(message_id, taken = n, handed_on = rest.len(), "recipients past the deadline handed on");
        Some(ChannelMessage { recipients: first.to_vec(), ..job.clone() })
    }

    /// True when the message is done with: every recipient settled, or queued again.
    async fn handle_job(
        &self,
        message_id: &str,
        job: &ChannelMessage,
        check: CampaignCheck,
        deadline: Option<Instant>,
    ) -> bool {
        match check {
            CampaignCheck::Unknown => return false,
            CampaignCheck::Cancelled => return self.skip_cancelled(message_id, job).await,
            CampaignCheck::Deliver => {}
        }
        let outcomes = self.pipeline.process_until(job, deadline).await;
        for (delivery_id, outcome) in &outcomes {
            // The kind and status only: the delivery's history has the reason (a send's
            // error code), and a retry's may be a store's error text.
            let (kind, status) = match outcome {
                Outcome::Done(status) => ("done", Some(*status)),
                Outcome::AlreadySettled(status) => ("already_settled", Some(*status)),
                Outcome::Retry(_) => ("retry", None),
            };
            tracing::info!(message_id, delivery_id, attempt = job.attempt, outcome = kind, status = ?status, "delivery");
            let channel = Dimension::Channel(self.channel());
            let status = Dimension::Status(outcome_status(outcome));
            self.metrics.count(Metric::Deliveries, &[channel, status], 1);
            if job.campaign_id.is_some() && !outcome.is_retry() {
                self.metrics.count(Metric::CampaignRecipientsSettled, &[channel, status], 1);
            }
        }
        if let Some(campaign_id) = &job.campaign_id {
            let settled: Vec<&Outcome> = outcomes.iter().map(|(_, o)| o).collect();
            match self.campaigns.record_settled(campaign_id, &settled).await {
                Ok(true) => {}
                // The reconciler counted these from the deliveries already.
                Ok(false) => tracing::info!(message_id, campaign_id, "the campaign is settled: outcomes dropped"),
                // Not retried: a redelivered message finds these recipients settled and
                // would not count them anyway; the reconciler recounts them.
                Err(e) => {
                    tracing::error!(message_id, campaign_id, error = %e, "the campaign's counters were not updated")
                }
            }
        }
        let retries: Vec<&str> = outcomes.iter().filter(|(_, o)| o.is_retry()).map(|(id, _)| id.as_str()).collect();
        if retries.is_empty() {
            return true;
        }
        if job.attempt >= MAX_ATTEMPTS {
            tracing::warn!(message_id, attempt = job.attempt, retries = retries.len(), "out of attempts");
            return false;
        }
        let retry = retry_job(job, &retries);
        let delay = self.retry_delay.delay(job.attempt);
        match self.queues.enqueue(std::slice::from_ref(&retry), delay).await {
            Ok(()) => {
                tracing::info!(
                    message_id,
                    attempt = retry.attempt,
                    retries = retries.len(),
                    delay_ms = delay.as_millis() as u64,
                    "queued again"
                );
                true
            }
            Err(e) => {
                // SQS redelivers the whole message; the recipients settled meanwhile are
                // protected by their claims.
                tracing::error!(message_id, error = %e, "the recipients to try again could not be queued");
                false
            }
        }
    }

    /// A cancelled campaign's job: nothing is sent or settled, its recipients are counted
    /// as skipped.
    async fn skip_cancelled(&self, message_id: &str, job: &ChannelMessage) -> bool {
        let campaign_id = job.campaign_id.as_deref().unwrap_or_default();
        let recipients: BTreeSet<&str> = job.recipients.iter().map(|r| r.delivery_id.as_str()).collect();
        tracing::info!(message_id, campaign_id, recipients = recipients.len(), "campaign cancelled: not sent");
        match self.campaigns.record_skipped(campaign_id, recipients.len() as u64).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(message_id, campaign_id, error = %e, "the campaign's counters were not updated");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        campaigns::{
            Campaign, CampaignCounters, CampaignState, CampaignStore,
            memory::{MemoryCampaigns, MemoryQueues},
            progress::{CAMPAIGN_STATE_TTL, StoredCampaignProgress},
        },
        delivery::{
            ChannelRecipient, ContentRef, Target, delivery_id,
            memory::{MemoryDeliveries, MemoryPreferences, MemoryTemplates, ScriptedSender},
            pipeline::Providers,
            rendering::ChannelContent,
        },
        metrics::NoMetrics,
        suppressions::memory::MemorySuppressions,
    };

    struct World {
        sender: Arc<ScriptedSender>,
        campaigns: Arc<MemoryCampaigns>,
        progress: Arc<StoredCampaignProgress>,
        runner: DeliveryRunner,
    }

    fn world() -> World {
        let sender = Arc::new(ScriptedSender::named("sns"));
        let campaigns = Arc::new(MemoryCampaigns::default());
        let progress = Arc::new(StoredCampaignProgress::new(campaigns.clone()));
        let pipeline = Pipeline::new(
            Channel::Sms,
            Arc::new(MemoryDeliveries::default()),
            Arc::new(MemoryPreferences::default()),
            Arc::new(MemorySuppressions::default()),
            Arc::new(MemoryTemplates::default()),
            Providers { primary: sender.clone(), secondary: None },
            None,
        );
        let queues = Arc::new(MemoryQueues::default());
        let runner = DeliveryRunner::new(pipeline, queues, progress.clone(), retry_delays(), Arc::new(NoMetrics));
        World { sender, campaigns, progress, runner }
    }

    fn campaign(id: &str, state: CampaignState) -> Campaign {
        Campaign { state, ..Campaign::new(id, "spring", "s1", "t1", 1, vec![Channel::Sms], chrono::Utc::now()) }
    }

    /// A campaign's job for `users` (by phone number), as the dispatcher makes them.
    fn campaign_job(campaign_id: &str, users: &[&str]) -> ChannelMessage {
        ChannelMessage {
            notification_id: campaign_id.into(),
            notification_type: "spring".into(),
            channel: Channel::Sms,
            content: ContentRef::Inline(ChannelContent { subject: None, body: "sale".into(), html: None }),
            params: Default::default(),
            recipients: users
                .iter()
                .map(|u| ChannelRecipient {
                    delivery_id: delivery_id(campaign_id, u, Channel::Sms),
                    user_id: Some((*u).to_owned()),
                    target: Target::Phone(format!("+1415555{u}")),
                })
                .collect(),
            campaign_id: Some(campaign_id.into()),
            attempt: 0,
            transactional: false,
        }
    }

    /// `jobs` as a batch, each received for the first time.
    fn batch(jobs: &[&ChannelMessage]) -> Vec<Job<'static>> {
        jobs.iter().map(|job| Job { message_id: "m", receive_count: 1, message: Some((*job).clone()) }).collect()
    }

    async fn counters(w: &World, campaign_id: &str) -> CampaignCounters {
        w.campaigns.get(campaign_id).await.unwrap().unwrap().counters
    }

    #[tokio::test]
    async fn a_campaign_cancelled_meanwhile_stops_once_its_cached_state_expires() {
        let w = world();
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        assert!(w.runner.run(batch(&[&campaign_job("c1", &["0001"])]), None).await.is_empty());
        w.campaigns.set_state("c1", CampaignState::Cancelled, &[CampaignState::Sending]).await.unwrap();
        // Read a while ago: the cached state has expired.
        for (read_at, _) in w.progress.states.lock().unwrap().values_mut() {
            *read_at -= CAMPAIGN_STATE_TTL;
        }
        assert!(w.runner.run(batch(&[&campaign_job("c1", &["0002"])]), None).await.is_empty());
        assert_eq!(w.sender.sent.lock().unwrap().len(), 1);
        assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 1, skipped_cancelled: 1, ..Default::default() });
    }
}
