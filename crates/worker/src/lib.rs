//! Delivery workers: one binary per channel over one shared pipeline. Each SQS batch is
//! answered with the messages that failed (`ReportBatchItemFailures`), so one bad
//! message never makes SQS retry the good ones.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use herald_aws::{
    Clients, DynamoCampaignStore, DynamoDeliveryStore, DynamoPreferenceStore, DynamoProfileStore,
    DynamoSuppressionStore, DynamoTemplateStore, EventBridgePublisher, SqsChannelQueues,
    senders::{PlatformApplications, SesEmailSender, SnsPushSender, SnsSmsSender, webhook::Destinations},
};
use herald_core::{
    backoff::Backoff,
    campaigns::{CampaignCounters, CampaignState, CampaignStore},
    delivery::{
        Channel, ChannelQueues, Sender,
        pipeline::{Pipeline, Providers, Tracking, campaign_counts, retry_job},
        rate_limit::RateLimit,
    },
    notifications::ChannelMessage,
    profiles::ProfileService,
};
use herald_edge::{
    config::{ConfigError, Env},
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    pub channel: Channel,
    /// The channel's own queue, where recipients to try again are put back.
    pub queue_url: String,
    /// Campaigns: whether one was cancelled, and its counters.
    pub jobs_table: String,
    pub deliveries_table: String,
    pub preferences_table: String,
    pub suppressions_table: String,
    pub rate_limits_table: String,
    pub templates_table: String,
    pub sender_address: String,
    pub apns_application: Option<String>,
    pub apns_sandbox_application: Option<String>,
    pub fcm_application: Option<String>,
    pub signing_secret: String,
    pub rate_limit: Option<RateLimit>,
    /// An extra trusted CA for webhook receivers (local stacks and tests only).
    pub webhook_root_pem: Option<String>,
    /// Public addresses only, unless `WEBHOOK_PRIVATE_DESTINATIONS=allow` (local stacks and
    /// tests whose receivers run on loopback; the template never sets it).
    pub webhook_destinations: Destinations,
    /// The public URL of the API; email carries tracking links to it when set.
    pub tracking_base_url: Option<String>,
    /// Another region of the same provider, used while the primary keeps failing.
    pub secondary_region: Option<String>,
    /// Where push removes tokens of disabled endpoints (and announces the change).
    pub profiles_table: Option<String>,
    pub event_bus_name: Option<String>,
    /// The provider's quota for the channel, in sends a second (`SENDS_PER_SECOND`; unset
    /// or empty: unpaced), shared by up to `max_concurrency` invocations at a time
    /// (`MAX_CONCURRENCY`, the queue's maximum concurrency; default 1).
    pub sends_per_second: Option<f64>,
    pub max_concurrency: u32,
}

impl WorkerConfig {
    /// What one invocation may send a second: its share of the channel's quota.
    pub fn sends_per_second_per_invocation(&self) -> Option<f64> {
        self.sends_per_second.map(|rate| rate / f64::from(self.max_concurrency.max(1)))
    }
}

fn parse_rate_limit(text: &str) -> Result<Option<RateLimit>, ConfigError> {
    if text.is_empty() || text == "off" {
        return Ok(None);
    }
    let bad = || ConfigError::invalid("RATE_LIMIT_PER_USER", "expected like 20/3600 (sends per seconds) or off");
    let (limit, window) = text.split_once('/').ok_or_else(bad)?;
    Ok(Some(RateLimit {
        limit: limit.trim().parse().map_err(|_| bad())?,
        window: window.trim().parse().map_err(|_| bad())?,
    }))
}

impl WorkerConfig {
    /// Reads the variables the template gives a worker through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let channel = env
            .parse("CHANNEL", "email, sms, push or webhook", |v| match v {
                "email" => Some(Channel::Email),
                "sms" => Some(Channel::Sms),
                "push" => Some(Channel::Push),
                "webhook" => Some(Channel::Webhook),
                _ => None,
            })?
            .ok_or(ConfigError::Missing("CHANNEL"))?;
        Ok(Self {
            channel,
            queue_url: env.required("QUEUE_URL")?,
            jobs_table: env.required("JOBS_TABLE")?,
            deliveries_table: env.required("DELIVERIES_TABLE")?,
            preferences_table: env.required("PREFERENCES_TABLE")?,
            suppressions_table: env.required("SUPPRESSIONS_TABLE")?,
            rate_limits_table: env.required("RATE_LIMITS_TABLE")?,
            templates_table: env.required("TEMPLATES_TABLE")?,
            sender_address: env.optional("SENDER_ADDRESS").unwrap_or_default(),
            apns_application: env.optional("APNS_PLATFORM_APPLICATION_ARN"),
            apns_sandbox_application: env.optional("APNS_SANDBOX_PLATFORM_APPLICATION_ARN"),
            fcm_application: env.optional("FCM_PLATFORM_APPLICATION_ARN"),
            signing_secret: env.required("SIGNING_SECRET")?,
            rate_limit: parse_rate_limit(&env.optional("RATE_LIMIT_PER_USER").unwrap_or_default())?,
            webhook_root_pem: env.optional("WEBHOOK_ROOT_CA_PEM"),
            webhook_destinations: env
                .parse("WEBHOOK_PRIVATE_DESTINATIONS", "allow", |v| (v == "allow").then_some(Destinations::Any))?
                .unwrap_or(Destinations::Public),
            tracking_base_url: env.optional("TRACKING_BASE_URL"),
            secondary_region: env.optional("SECONDARY_PROVIDER_REGION"),
            profiles_table: env.optional("PROFILES_TABLE"),
            event_bus_name: env.optional("EVENT_BUS_NAME"),
            sends_per_second: env.parse("SENDS_PER_SECOND", "a positive number of sends a second", |v| {
                v.parse().ok().filter(|r: &f64| r.is_finite() && *r > 0.0)
            })?,
            max_concurrency: env
                .parse("MAX_CONCURRENCY", "a whole number from 1", |v| v.parse().ok().filter(|n| *n >= 1))?
                .unwrap_or(1),
        })
    }

    /// The configuration, if it is for `channel`: each channel's binary delivers that
    /// channel only.
    pub fn for_channel(self, channel: Channel) -> Result<Self, ConfigError> {
        if self.channel != channel {
            return Err(ConfigError::invalid("CHANNEL", format!("this binary delivers {channel}")));
        }
        Ok(self)
    }
}

/// How many times a job's recipients are put back on the queue; a job past it is handed
/// back to SQS instead, which redelivers it and, after maxReceiveCount, parks it in the
/// dead-letter queue.
pub const MAX_ATTEMPTS: u32 = 5;

/// What a deadline-aware invocation keeps for recording outcomes and counts after its
/// last send starts.
const RECORDING_MARGIN: Duration = Duration::from_secs(2);

/// What of one message an invocation takes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Share {
    Whole,
    /// The first n recipients; the rest are handed on in a new message.
    First(usize),
    /// Nothing: the message goes back to the queue unclaimed.
    None,
}
/// How long a campaign's state is trusted: a cancel takes effect within this time.
pub const CAMPAIGN_STATE_TTL: Duration = Duration::from_secs(5);

/// What the worker knows of a job's campaign before processing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignCheck {
    /// No campaign, or one that is not cancelled (or not found): deliver.
    Deliver,
    Cancelled,
    /// The campaign could not be read: the message is retried.
    Unknown,
}

pub struct WorkerHandler {
    pipeline: Pipeline,
    queues: Arc<dyn ChannelQueues>,
    campaigns: Arc<dyn CampaignStore>,
    /// The wait before recipients are tried again, by the job's attempt: exponential with
    /// full jitter, capped at the 15 minutes SQS can delay a message.
    pub retry_delay: Backoff,
    /// Campaign id → when its state was read, and the state (None: no such campaign).
    campaign_states: Mutex<HashMap<String, (Instant, Option<CampaignState>)>>,
}

impl WorkerHandler {
    pub fn new(pipeline: Pipeline, queues: Arc<dyn ChannelQueues>, campaigns: Arc<dyn CampaignStore>) -> Self {
        Self {
            pipeline,
            queues,
            campaigns,
            retry_delay: Backoff::new(Duration::from_secs(10), Duration::from_secs(900), MAX_ATTEMPTS + 1),
            campaign_states: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_aws(clients: &Clients, config: &WorkerConfig) -> Result<Self, ConfigError> {
        let db = || clients.dynamodb.clone();
        let primary = sender(clients, config)?;
        let secondary = match &config.secondary_region {
            Some(region) => Some(sender(&clients.in_region(region), config)?),
            None => None,
        };
        let mut pipeline = Pipeline::new(
            config.channel,
            Arc::new(
                DynamoDeliveryStore::new(db(), &config.deliveries_table).with_rate_limits(&config.rate_limits_table),
            ),
            Arc::new(DynamoPreferenceStore::new(db(), &config.preferences_table)),
            Arc::new(DynamoSuppressionStore::new(db(), &config.suppressions_table)),
            Arc::new(DynamoTemplateStore::new(db(), &config.templates_table)),
            Providers { primary, secondary },
            config.rate_limit,
        );
        pipeline.pacing = config.sends_per_second_per_invocation().and_then(herald_core::delivery::pacing::Pacer::new);
        pipeline.tracking = config
            .tracking_base_url
            .clone()
            .map(|base_url| Tracking { base_url, secret: config.signing_secret.as_bytes().to_vec() });
        let queues =
            SqsChannelQueues::new(clients.sqs.clone(), BTreeMap::from([(config.channel, config.queue_url.clone())]));
        let campaigns = DynamoCampaignStore::new(db(), &config.jobs_table);
        Ok(Self::new(pipeline, Arc::new(queues), Arc::new(campaigns)))
    }

    /// The handler on the account's AWS clients, its table's connections warmed up.
    pub async fn connect(config: &WorkerConfig) -> Result<Self, ConfigError> {
        let clients = Clients::new(&herald_aws::sdk_config().await);
        clients.warm_up(&config.deliveries_table, None).await;
        Self::from_aws(&clients, config)
    }

    pub fn channel(&self) -> Channel {
        self.pipeline.channel
    }

    /// Whether a campaign's jobs are to be delivered, from a state read at most
    /// `CAMPAIGN_STATE_TTL` ago.
    async fn campaign_check(&self, campaign_id: &str) -> CampaignCheck {
        let now = Instant::now();
        let cached = self.campaign_states.lock().expect("cache lock").get(campaign_id).copied();
        let state = match cached {
            Some((read_at, state)) if now.duration_since(read_at) < CAMPAIGN_STATE_TTL => state,
            _ => match self.campaigns.get(campaign_id).await {
                Ok(campaign) => {
                    let state = campaign.map(|c| c.state);
                    let mut cache = self.campaign_states.lock().expect("cache lock");
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

    /// True when the message is done with: every recipient settled, or queued again.
    /// What of each message this invocation takes on: with a deadline and a paced
    /// channel, only the recipients whose sends can start before it (less the time to
    /// record them), in batch order; the rest are handed on unclaimed.
    fn shares(&self, jobs: &[Option<ChannelMessage>], deadline: Option<std::time::Instant>) -> Vec<Share> {
        let capacity = match (deadline, &self.pipeline.pacing) {
            (Some(deadline), Some(pacer)) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
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

    async fn handle_job(&self, message_id: &str, job: &ChannelMessage, check: CampaignCheck) -> bool {
        match check {
            CampaignCheck::Unknown => return false,
            CampaignCheck::Cancelled => return self.skip_cancelled(message_id, job).await,
            CampaignCheck::Deliver => {}
        }
        let outcomes = self.pipeline.process(job).await;
        for (delivery_id, outcome) in &outcomes {
            tracing::info!(message_id, delivery_id, attempt = job.attempt, outcome = ?outcome, "delivery");
        }
        if let Some(campaign_id) = &job.campaign_id {
            let counts = campaign_counts(outcomes.iter().map(|(_, o)| o));
            if counts != CampaignCounters::default()
                && let Err(e) = self.campaigns.add_counts(campaign_id, &counts).await
            {
                // Not retried: a redelivered message finds these recipients settled and
                // would not count them anyway.
                tracing::error!(message_id, campaign_id, error = %e, "the campaign's counters were not updated");
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
        let counts = CampaignCounters { skipped_cancelled: recipients.len() as u64, ..Default::default() };
        tracing::info!(message_id, campaign_id, recipients = recipients.len(), "campaign cancelled: not sent");
        match self.campaigns.add_counts(campaign_id, &counts).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(message_id, campaign_id, error = %e, "the campaign's counters were not updated");
                false
            }
        }
    }
}

/// The channel's provider over `clients`.
fn sender(clients: &Clients, config: &WorkerConfig) -> Result<Arc<dyn Sender>, ConfigError> {
    Ok(match config.channel {
        Channel::Email => Arc::new(SesEmailSender::new(clients.sesv2.clone(), &config.sender_address)),
        Channel::Sms => Arc::new(SnsSmsSender::new(clients.sns.clone())),
        Channel::Push => {
            let sender = SnsPushSender::new(
                clients.sns.clone(),
                PlatformApplications {
                    apns: config.apns_application.clone(),
                    apns_sandbox: config.apns_sandbox_application.clone(),
                    fcm: config.fcm_application.clone(),
                },
            );
            match (&config.profiles_table, &config.event_bus_name) {
                (Some(table), Some(bus)) => {
                    let profiles = ProfileService::new(
                        Arc::new(DynamoProfileStore::new(clients.dynamodb.clone(), table)),
                        Arc::new(EventBridgePublisher::new(clients.eventbridge.clone(), bus)),
                    );
                    Arc::new(sender.on_disabled(Arc::new(profiles)))
                }
                _ => Arc::new(sender),
            }
        }
        Channel::Webhook => Arc::new(
            herald_aws::senders::webhook::WebhookSender::new(
                &config.signing_secret,
                config.webhook_root_pem.as_deref(),
                config.webhook_destinations,
            )
            .map_err(|e| ConfigError::invalid("WEBHOOK_ROOT_CA_PEM", format!("the webhook client refuses it: {e}")))?,
        ),
    })
}

/// A job arrives wrapped in the EventBridge envelope (from the bus) or bare (sent to the
/// queue directly).
pub fn parse_job(body: &str) -> Result<ChannelMessage, serde_json::Error> {
    herald_edge::eventbridge::detail_or_bare(body)
}

/// The messages of a batch are read first, so that each campaign of the batch is looked
/// up once, not once per message; then they are handled concurrently. A message is
/// retried if it cannot be read (after maxReceiveCount, SQS moves it to the dead-letter
/// queue), if its recipients to try again could not be queued again or are out of
/// attempts, or if its campaign could not be read.
#[async_trait::async_trait]
impl SqsHandler for WorkerHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let jobs: Vec<Option<ChannelMessage>> = messages
            .iter()
            .map(|message| {
                let message_id = sqs::message_id(message);
                match parse_job(sqs::body(message)) {
                    Ok(job) if job.channel == self.channel() => Some(job),
                    Ok(job) => {
                        tracing::error!(message_id, channel = %job.channel, "a job for another channel");
                        None
                    }
                    Err(e) => {
                        // Only the id and the parse error: the body may hold addresses.
                        tracing::error!(message_id, error = %e, "unreadable delivery job");
                        None
                    }
                }
            })
            .collect();
        let campaign_ids: BTreeSet<&str> = jobs.iter().flatten().filter_map(|j| j.campaign_id.as_deref()).collect();
        let checks: HashMap<&str, CampaignCheck> = futures_util::future::join_all(
            campaign_ids.into_iter().map(async |id| (id, self.campaign_check(id).await)),
        )
        .await
        .into_iter()
        .collect();
        let shares = self.shares(&jobs, invocation.deadline);
        let done = futures_util::future::join_all(messages.iter().zip(&jobs).zip(shares).map(
            async |((message, job), share)| {
                let Some(job) = job else { return false };
                let job = match share {
                    Share::Whole => job.clone(),
                    // Back to the queue unclaimed: this invocation would not finish it.
                    Share::None => return false,
                    Share::First(n) => match self.hand_on(sqs::message_id(message), job, n).await {
                        Some(first) => first,
                        None => return false,
                    },
                };
                let check = job.campaign_id.as_deref().map_or(CampaignCheck::Deliver, |id| checks[id]);
                self.handle_job(sqs::message_id(message), &job, check).await
            },
        ))
        .await;
        Retry::from_handled(done)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use herald_core::{
        campaigns::{
            Campaign,
            memory::{MemoryCampaigns, MemoryQueues},
        },
        delivery::{
            DeliveryStatus, DeliveryStore, Outgoing, SendError, delivery_id,
            memory::{MemoryDeliveries, MemoryPreferences, MemorySuppressions, MemoryTemplates},
            rendering::ChannelContent,
        },
        notifications::{ChannelRecipient, ContentRef, Target},
        store::StoreError,
    };
    use herald_edge::sqs::{SqsBatchResponse, SqsEvent};

    use super::*;

    /// A provider that fails the recipients of `failing` (retryably) and sends the rest.
    #[derive(Default)]
    struct FlakySender {
        failing: Mutex<BTreeSet<String>>,
        sent: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Sender for FlakySender {
        fn name(&self) -> &str {
            "flaky"
        }

        async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
            if self.failing.lock().unwrap().contains(message.delivery_id) {
                return Err(SendError::Retryable("throttled".into()));
            }
            self.sent.lock().unwrap().push(message.delivery_id.to_owned());
            Ok(format!("m-{}", message.delivery_id))
        }
    }

    /// Campaigns that count their reads, or fail every read.
    #[derive(Default)]
    struct CountedCampaigns {
        inner: MemoryCampaigns,
        reads: AtomicUsize,
        adds: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl CampaignStore for CountedCampaigns {
        async fn create(&self, campaign: &Campaign) -> Result<bool, StoreError> {
            self.inner.create(campaign).await
        }
        async fn get(&self, campaign_id: &str) -> Result<Option<Campaign>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(campaign_id).await
        }
        async fn set_state(&self, id: &str, state: CampaignState, from: &[CampaignState]) -> Result<bool, StoreError> {
            self.inner.set_state(id, state, from).await
        }
        async fn record_page(
            &self,
            campaign_id: &str,
            shard: u32,
            cursor: Option<&str>,
            next: Option<&str>,
            counts: &CampaignCounters,
        ) -> Result<Option<u32>, StoreError> {
            self.inner.record_page(campaign_id, shard, cursor, next, counts).await
        }
        async fn add_counts(&self, campaign_id: &str, counts: &CampaignCounters) -> Result<(), StoreError> {
            self.adds.fetch_add(1, Ordering::SeqCst);
            self.inner.add_counts(campaign_id, counts).await
        }
    }

    struct BrokenQueues;

    #[async_trait::async_trait]
    impl ChannelQueues for BrokenQueues {
        async fn enqueue(&self, _: &[ChannelMessage], _: Duration) -> Result<(), StoreError> {
            Err(StoreError::Transient("sqs is down".into()))
        }
    }

    struct World {
        deliveries: Arc<MemoryDeliveries>,
        sender: Arc<FlakySender>,
        queues: Arc<MemoryQueues>,
        campaigns: Arc<CountedCampaigns>,
        worker: WorkerHandler,
    }

    fn world_with(queues: Arc<dyn ChannelQueues>) -> World {
        let deliveries = Arc::new(MemoryDeliveries::default());
        let sender = Arc::new(FlakySender::default());
        let memory_queues = Arc::new(MemoryQueues::default());
        let campaigns = Arc::new(CountedCampaigns::default());
        let mut pipeline = Pipeline::new(
            Channel::Sms,
            deliveries.clone(),
            Arc::new(MemoryPreferences::default()),
            Arc::new(MemorySuppressions::default()),
            Arc::new(MemoryTemplates::default()),
            Providers { primary: sender.clone(), secondary: None },
            None,
        );
        pipeline.send_retries = Backoff::new(Duration::ZERO, Duration::ZERO, 2);
        let worker = WorkerHandler::new(pipeline, queues, campaigns.clone());
        World { deliveries, sender, queues: memory_queues, campaigns, worker }
    }

    fn world() -> World {
        let mut w = world_with(Arc::new(BrokenQueues));
        let queues = w.queues.clone();
        w.worker.queues = queues;
        w
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
        }
    }

    fn event(jobs: &[&ChannelMessage]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let mut message = SqsMessage::default();
                message.message_id = Some(format!("m{i}"));
                message.body = Some(serde_json::to_string(job).unwrap());
                message
            })
            .collect();
        event
    }

    fn failed(response: &SqsBatchResponse) -> Vec<String> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
    }

    async fn counters(w: &World, campaign_id: &str) -> CampaignCounters {
        w.campaigns.inner.get(campaign_id).await.unwrap().unwrap().counters
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_worker_claims_only_what_it_can_send_before_its_deadline() {
        let mut w = world();
        // 2.8 sends a second and 10 s to go, 2 s of it kept for recording: 22 sends.
        w.worker.pipeline.pacing = herald_core::delivery::pacing::Pacer::new(2.8);
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        let users: Vec<String> = (0..40).map(|i| format!("{i:04}")).collect();
        let jobs: Vec<ChannelMessage> = users
            .chunks(10)
            .map(|chunk| campaign_job("c1", &chunk.iter().map(String::as_str).collect::<Vec<_>>()))
            .collect();
        let records = event(&jobs.iter().collect::<Vec<_>>()).records;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);

        let retry = w.worker.handle_batch(&records, Invocation { deadline: Some(deadline) }).await;

        assert_eq!(w.sender.sent.lock().unwrap().len(), 22);
        // The third message's last 8 recipients are handed on, unclaimed, in a message of
        // their own; the fourth message goes back to the queue whole.
        let handed_on = w.queues.jobs.lock().unwrap().clone();
        assert_eq!(handed_on.len(), 1);
        assert_eq!(handed_on[0].recipients, jobs[2].recipients[2..]);
        assert_eq!(handed_on[0].attempt, 0);
        assert_eq!(retry.positions().collect::<Vec<_>>(), [3]);
        for r in handed_on[0].recipients.iter().chain(&jobs[3].recipients) {
            assert_eq!(w.deliveries.status(&r.delivery_id), None, "claimed past the deadline");
        }
    }

    #[tokio::test]
    async fn a_failed_recipient_is_queued_again_alone_and_the_message_acknowledged() {
        let w = world();
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        let job = campaign_job("c1", &["0001", "0002", "0003"]);
        let failing = job.recipients[1].delivery_id.clone();
        w.sender.failing.lock().unwrap().insert(failing.clone());
        let response = w.worker.handle(event(&[&job])).await;
        assert!(failed(&response).is_empty());
        assert_eq!(w.sender.sent.lock().unwrap().len(), 2);
        let queued = w.queues.jobs.lock().unwrap().clone();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].recipients, [job.recipients[1].clone()]);
        assert_eq!((queued[0].attempt, queued[0].campaign_id.as_deref()), (1, Some("c1")));
        assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 2, ..Default::default() });

        // The retry sends the failed recipient only, and counts it once it settles.
        w.sender.failing.lock().unwrap().clear();
        let response = w.worker.handle(event(&[&queued[0]])).await;
        assert!(failed(&response).is_empty());
        assert_eq!(w.sender.sent.lock().unwrap().iter().filter(|id| **id == failing).count(), 1);
        assert_eq!(w.sender.sent.lock().unwrap().len(), 3);
        assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 3, ..Default::default() });
        assert_eq!(w.deliveries.status(&failing), Some(DeliveryStatus::Sent));
    }

    #[tokio::test]
    async fn recipients_of_notifications_are_queued_again_too() {
        let w = world();
        let mut job = campaign_job("n1", &["0001"]);
        job.campaign_id = None;
        let d = herald_core::notifications::Delivery::new(
            "n1",
            "0001",
            Channel::Sms,
            DeliveryStatus::Created,
            None,
            chrono::Utc::now(),
        );
        w.deliveries.create(&[d]).await.unwrap();
        w.sender.failing.lock().unwrap().insert(job.recipients[0].delivery_id.clone());
        assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
        assert_eq!(w.queues.jobs.lock().unwrap()[0].attempt, 1);
        assert_eq!(w.campaigns.reads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_job_out_of_attempts_is_handed_back_to_sqs() {
        let w = world();
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        let mut job = campaign_job("c1", &["0001", "0002"]);
        job.attempt = MAX_ATTEMPTS;
        w.sender.failing.lock().unwrap().insert(job.recipients[0].delivery_id.clone());
        assert_eq!(failed(&w.worker.handle(event(&[&job])).await), ["m0"]);
        assert!(w.queues.jobs.lock().unwrap().is_empty());
        assert_eq!(counters(&w, "c1").await.sent, 1);
    }

    #[tokio::test]
    async fn a_retry_that_cannot_be_queued_fails_the_message_and_its_redelivery_resends_nothing_settled() {
        let w = world_with(Arc::new(BrokenQueues));
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        let job = campaign_job("c1", &["0001", "0002"]);
        w.sender.failing.lock().unwrap().insert(job.recipients[0].delivery_id.clone());
        assert_eq!(failed(&w.worker.handle(event(&[&job])).await), ["m0"]);
        w.sender.failing.lock().unwrap().clear();
        assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
        let sent = w.sender.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 2, ..Default::default() });
    }

    #[tokio::test]
    async fn a_redelivered_campaign_message_sends_and_counts_nothing_twice() {
        let w = world();
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        let job = campaign_job("c1", &["0001", "0002", "0003"]);
        assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
        assert!(failed(&w.worker.handle(event(&[&job, &job])).await).is_empty());
        assert_eq!(w.sender.sent.lock().unwrap().len(), 3);
        assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 3, ..Default::default() });
        // One add per message that settled something: the redeliveries added nothing.
        assert_eq!(w.campaigns.adds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cancelled_campaign_sends_nothing_and_counts_its_recipients_skipped() {
        let w = world();
        w.campaigns.create(&campaign("c1", CampaignState::Cancelled)).await.unwrap();
        let job = campaign_job("c1", &["0001", "0002", "0003"]);
        assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
        assert!(w.sender.sent.lock().unwrap().is_empty());
        assert!(w.deliveries.items.lock().unwrap().is_empty(), "nothing is settled");
        assert_eq!(counters(&w, "c1").await, CampaignCounters { skipped_cancelled: 3, ..Default::default() });
        assert_eq!(w.campaigns.adds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_campaign_is_read_once_per_batch_and_cached_for_a_few_seconds() {
        let w = world();
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        let jobs: Vec<ChannelMessage> = (0..10).map(|i| campaign_job("c1", &[&format!("{i:04}")])).collect();
        let refs: Vec<&ChannelMessage> = jobs.iter().collect();
        assert!(failed(&w.worker.handle(event(&refs)).await).is_empty());
        assert_eq!(w.campaigns.reads.load(Ordering::SeqCst), 1);
        let more = campaign_job("c1", &["0100"]);
        assert!(failed(&w.worker.handle(event(&[&more])).await).is_empty());
        assert_eq!(w.campaigns.reads.load(Ordering::SeqCst), 1);
        assert_eq!(counters(&w, "c1").await.sent, 11);
    }

    #[tokio::test]
    async fn a_campaign_cancelled_meanwhile_stops_once_its_cached_state_expires() {
        let w = world();
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        assert!(failed(&w.worker.handle(event(&[&campaign_job("c1", &["0001"])])).await).is_empty());
        w.campaigns.set_state("c1", CampaignState::Cancelled, &[CampaignState::Sending]).await.unwrap();
        // Read a while ago: the cached state has expired.
        for (read_at, _) in w.worker.campaign_states.lock().unwrap().values_mut() {
            *read_at -= CAMPAIGN_STATE_TTL;
        }
        assert!(failed(&w.worker.handle(event(&[&campaign_job("c1", &["0002"])])).await).is_empty());
        assert_eq!(w.sender.sent.lock().unwrap().len(), 1);
        assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 1, skipped_cancelled: 1, ..Default::default() });
    }

    #[test]
    fn the_worker_needs_its_queue_and_the_jobs_table() {
        let base = [
            ("CHANNEL", "sms"),
            ("QUEUE_URL", "https://sqs.example/123/sms"),
            ("JOBS_TABLE", "jobs"),
            ("DELIVERIES_TABLE", "d"),
            ("PREFERENCES_TABLE", "p"),
            ("SUPPRESSIONS_TABLE", "s"),
            ("RATE_LIMITS_TABLE", "r"),
            ("TEMPLATES_TABLE", "t"),
            ("SIGNING_SECRET", "k"),
        ];
        let config = |without: &str| {
            WorkerConfig::from_lookup(|name| {
                base.iter().find(|(n, _)| *n == name && *n != without).map(|(_, v)| (*v).to_owned())
            })
        };
        let all = config("").unwrap();
        assert_eq!((all.queue_url.as_str(), all.jobs_table.as_str()), ("https://sqs.example/123/sms", "jobs"));
        for name in ["QUEUE_URL", "JOBS_TABLE"] {
            assert!(config(name).unwrap_err().to_string().contains(name), "{name}");
        }
    }

    #[test]
    fn an_invocation_sends_its_share_of_the_channels_quota() {
        let base = [
            ("CHANNEL", "email"),
            ("QUEUE_URL", "https://sqs.example/123/email"),
            ("JOBS_TABLE", "jobs"),
            ("DELIVERIES_TABLE", "d"),
            ("PREFERENCES_TABLE", "p"),
            ("SUPPRESSIONS_TABLE", "s"),
            ("RATE_LIMITS_TABLE", "r"),
            ("TEMPLATES_TABLE", "t"),
            ("SIGNING_SECRET", "k"),
        ];
        let config = |extra: &[(&'static str, &'static str)]| {
            let all: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            WorkerConfig::from_lookup(move |name| all.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
        };
        assert_eq!(config(&[]).unwrap().sends_per_second_per_invocation(), None);
        let paced = config(&[("SENDS_PER_SECOND", "14"), ("MAX_CONCURRENCY", "5")]).unwrap();
        assert_eq!(paced.sends_per_second_per_invocation(), Some(2.8));
        assert_eq!(config(&[("SENDS_PER_SECOND", "20")]).unwrap().sends_per_second_per_invocation(), Some(20.0));
        assert!(config(&[("SENDS_PER_SECOND", "0")]).is_err());
        assert!(config(&[("SENDS_PER_SECOND", "fast")]).is_err());
        assert!(config(&[("MAX_CONCURRENCY", "0")]).is_err());
    }

    #[test]
    fn rate_limits_parse_from_n_per_seconds() {
        assert_eq!(parse_rate_limit("20/3600").unwrap(), Some(RateLimit { limit: 20, window: 3600 }));
        assert_eq!(parse_rate_limit("off").unwrap(), None);
        assert!(parse_rate_limit("20 per hour").is_err());
    }

    #[test]
    fn jobs_are_read_from_the_eventbridge_envelope_or_bare() {
        let job = serde_json::json!({"notification_id": "n", "notification_type": "t", "channel": "sms",
            "content": {"inline": {"body": "x"}}, "recipients": []});
        let envelope = serde_json::json!({"detail-type": "notification.sms", "source": "herald", "detail": job});
        assert_eq!(parse_job(&envelope.to_string()).unwrap(), parse_job(&job.to_string()).unwrap());
        assert!(parse_job("{\"nope\": 1}").is_err());
    }

    #[test]
    fn webhook_signatures_are_hmac_sha256_of_timestamp_and_body() {
        // Known answer, computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        let sig = herald_aws::senders::webhook::signature(b"secret", 1_700_000_000, "{}");
        assert_eq!(sig, "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163");
    }
}
