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
    DynamoSuppressionStore, DynamoTemplateStore, SecretsManagerKeyRings, SqsChannelQueues,
    senders::{PlatformApplications, SesEmailSender, SnsPushSender, SnsSmsSender, webhook::Destinations},
};
use herald_core::{
    campaigns::{CampaignCounters, CampaignState, CampaignStore},
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelQueues, Sender,
        pipeline::{Pipeline, Providers, RECORDING_MARGIN, Tracking, campaign_counts, retry_job},
        rate_limit::RateLimit,
    },
    profiles::ProfileService,
    signing::{KeyRing, KeyRingStore, webhook::WebhookSigner},
};
use herald_edge::{
    config::{ConfigError, Env},
    metrics::{Dimension, Emf, Metric, Metrics},
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};
use herald_wire::backoff::Backoff;

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
    /// The SES configuration set whose events are Herald's email feedback (email only).
    pub configuration_set: Option<String>,
    pub apns_application: Option<String>,
    pub apns_sandbox_application: Option<String>,
    pub fcm_application: Option<String>,
    /// The secret (ARN) holding the tracking keys: email with tracking only.
    pub tracking_keys_secret: Option<String>,
    /// The secret (ARN) holding the webhook signing keys: webhooks only.
    pub webhook_keys_secret: Option<String>,
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

pub const TRACKING_KEYS_SECRET_ARN: &str = "TRACKING_KEYS_SECRET_ARN";
pub const WEBHOOK_SIGNING_KEYS_SECRET_ARN: &str = "WEBHOOK_SIGNING_KEYS_SECRET_ARN";

/// The key ring in the secret `arn`, read once (an error names `var`, never the value).
async fn key_ring(clients: &Clients, var: &'static str, arn: &str) -> Result<KeyRing, ConfigError> {
    let secrets = SecretsManagerKeyRings::new(clients.secretsmanager());
    secrets.key_ring(arn).await.map_err(|e| ConfigError::invalid(var, e.to_string()))
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
        let config = Self {
            channel,
            queue_url: env.required("QUEUE_URL")?,
            jobs_table: env.required("JOBS_TABLE")?,
            deliveries_table: env.required("DELIVERIES_TABLE")?,
            preferences_table: env.required("PREFERENCES_TABLE")?,
            suppressions_table: env.required("SUPPRESSIONS_TABLE")?,
            rate_limits_table: env.required("RATE_LIMITS_TABLE")?,
            templates_table: env.required("TEMPLATES_TABLE")?,
            sender_address: env.optional("SENDER_ADDRESS").unwrap_or_default(),
            configuration_set: env.optional("SES_CONFIGURATION_SET"),
            apns_application: env.optional("APNS_PLATFORM_APPLICATION_ARN"),
            apns_sandbox_application: env.optional("APNS_SANDBOX_PLATFORM_APPLICATION_ARN"),
            fcm_application: env.optional("FCM_PLATFORM_APPLICATION_ARN"),
            tracking_keys_secret: env.optional(TRACKING_KEYS_SECRET_ARN),
            webhook_keys_secret: env.optional(WEBHOOK_SIGNING_KEYS_SECRET_ARN),
            rate_limit: parse_rate_limit(&env.optional("RATE_LIMIT_PER_USER").unwrap_or_default())?,
            webhook_root_pem: env.optional("WEBHOOK_ROOT_CA_PEM"),
            webhook_destinations: env
                .parse("WEBHOOK_PRIVATE_DESTINATIONS", "allow", |v| (v == "allow").then_some(Destinations::Any))?
                .unwrap_or(Destinations::Public),
            tracking_base_url: env.optional("TRACKING_BASE_URL"),
            secondary_region: env.optional("SECONDARY_PROVIDER_REGION"),
            profiles_table: env.optional("PROFILES_TABLE"),
            sends_per_second: env.parse("SENDS_PER_SECOND", "a positive number of sends a second", |v| {
                v.parse().ok().filter(|r: &f64| r.is_finite() && *r > 0.0)
            })?,
            max_concurrency: env
                .parse("MAX_CONCURRENCY", "a whole number from 1", |v| v.parse().ok().filter(|n| *n >= 1))?
                .unwrap_or(1),
        };
        // Each key ring only where it is used: tracked email signs links, webhooks bodies.
        if config.channel == Channel::Email
            && config.tracking_base_url.is_some()
            && config.tracking_keys_secret.is_none()
        {
            return Err(ConfigError::Missing(TRACKING_KEYS_SECRET_ARN));
        }
        if config.channel == Channel::Webhook && config.webhook_keys_secret.is_none() {
            return Err(ConfigError::Missing(WEBHOOK_SIGNING_KEYS_SECRET_ARN));
        }
        Ok(config)
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

/// Receives after which a message that keeps coming back (its invocations stopped, as by
/// their timeout) is handed on as a new message, one attempt later, before it is tried
/// again. What it settled is recorded, so it made progress; left to SQS, its receives
/// would park it in the dead-letter queue (maxReceiveCount 5) with recipients never sent.
/// `MAX_ATTEMPTS` bounds the hand-ons: a message that cannot be handled still ends there.
pub const HAND_ON_AFTER_RECEIVES: u32 = 3;

/// How many times SQS has delivered `message`, this time included.
fn receive_count(message: &SqsMessage) -> u32 {
    message.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1)
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
    /// Deliveries by status, campaign progress; the providers' latency (`from_aws`).
    pub metrics: Arc<Emf>,
}

/// The function's name in its metrics: the template's logical id less `Function`.
pub fn function_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "EmailWorker",
        Channel::Sms => "SmsWorker",
        Channel::Push => "PushWorker",
        Channel::Webhook => "WebhookWorker",
    }
}

/// A provider whose every call's time is recorded (`ProviderLatency`, by channel).
pub struct TimedSender {
    inner: Arc<dyn Sender>,
    channel: Channel,
    metrics: Arc<dyn Metrics>,
}

impl TimedSender {
    pub fn new(inner: Arc<dyn Sender>, channel: Channel, metrics: Arc<dyn Metrics>) -> Self {
        Self { inner, channel, metrics }
    }
}

#[async_trait::async_trait]
impl Sender for TimedSender {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn send(
        &self,
        message: &herald_core::delivery::Outgoing<'_>,
    ) -> Result<String, herald_core::delivery::SendError> {
        let started = Instant::now();
        let sent = self.inner.send(message).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.record(Metric::ProviderLatency, &[Dimension::Channel(self.channel)], ms);
        sent
    }
}

/// What a delivery's outcome is called in `Deliveries`' status dimension.
fn outcome_status(outcome: &herald_core::delivery::pipeline::Outcome) -> &'static str {
    match outcome {
        herald_core::delivery::pipeline::Outcome::Done(status) => status.as_str(),
        herald_core::delivery::pipeline::Outcome::AlreadySettled(_) => "already_settled",
        herald_core::delivery::pipeline::Outcome::Retry(_) => "retry",
    }
}

impl WorkerHandler {
    pub fn new(pipeline: Pipeline, queues: Arc<dyn ChannelQueues>, campaigns: Arc<dyn CampaignStore>) -> Self {
        let metrics = Arc::new(Emf::for_function(function_name(pipeline.channel)));
        Self {
            pipeline,
            queues,
            campaigns,
            retry_delay: Backoff::new(Duration::from_secs(10), Duration::from_secs(900), MAX_ATTEMPTS + 1),
            campaign_states: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The handler over `clients` with every channel's sender linked (the local stack).
    pub async fn from_aws(clients: &Clients, config: &WorkerConfig) -> Result<Self, ConfigError> {
        Self::from_aws_with(clients, config, senders::for_channel(config.channel)).await
    }

    /// The handler over `clients` and the sender `sender` builds, its key rings read from
    /// Secrets Manager once, here.
    pub async fn from_aws_with(
        clients: &Clients,
        config: &WorkerConfig,
        sender: SenderFactory,
    ) -> Result<Self, ConfigError> {
        let db = || clients.dynamodb();
        let webhook_signer = match &config.webhook_keys_secret {
            Some(arn) if config.channel == Channel::Webhook => {
                Some(WebhookSigner::new(&key_ring(clients, WEBHOOK_SIGNING_KEYS_SECRET_ARN, arn).await?))
            }
            _ => None,
        };
        let tracking_keys = match (&config.tracking_keys_secret, &config.tracking_base_url) {
            (Some(arn), Some(_)) if config.channel == Channel::Email => {
                Some(key_ring(clients, TRACKING_KEYS_SECRET_ARN, arn).await?)
            }
            _ => None,
        };
        let metrics = Arc::new(Emf::for_function(function_name(config.channel)));
        let timed = |sender| -> Arc<dyn Sender> { Arc::new(TimedSender::new(sender, config.channel, metrics.clone())) };
        let primary = timed(sender(clients, config, webhook_signer.clone())?);
        // The configuration set is the template's region's: the other region's sends go
        // without, so their feedback is not seen.
        let elsewhere = WorkerConfig { configuration_set: None, ..config.clone() };
        let secondary = match &config.secondary_region {
            Some(region) => Some(timed(sender(&clients.in_region(region), &elsewhere, webhook_signer)?)),
            None => None,
        };
        let mut deliveries =
            DynamoDeliveryStore::new(db(), &config.deliveries_table).with_rate_limits(&config.rate_limits_table);
        // SNS's SMS delivery status names the message by SNS's id alone.
        if config.channel == Channel::Sms {
            deliveries = deliveries.with_receipt_lookup();
        }
        let mut pipeline = Pipeline::new(
            config.channel,
            Arc::new(deliveries),
            Arc::new(DynamoPreferenceStore::new(db(), &config.preferences_table)),
            Arc::new(DynamoSuppressionStore::new(db(), &config.suppressions_table)),
            Arc::new(DynamoTemplateStore::new(db(), &config.templates_table)),
            Providers { primary, secondary },
            config.rate_limit,
        );
        pipeline.pacing = config.sends_per_second_per_invocation().and_then(herald_core::delivery::pacing::Pacer::new);
        pipeline.tracking =
            config.tracking_base_url.clone().zip(tracking_keys).map(|(base_url, keys)| Tracking { base_url, keys });
        let queues = SqsChannelQueues::new(clients.sqs(), BTreeMap::from([(config.channel, config.queue_url.clone())]));
        let campaigns = DynamoCampaignStore::new(db(), &config.jobs_table);
        Ok(Self { metrics, ..Self::new(pipeline, Arc::new(queues), Arc::new(campaigns)) })
    }

    /// The handler on the account's AWS clients and the sender `sender` builds (the
    /// binary's own channel's), its table's connections warmed up.
    pub async fn connect(config: &WorkerConfig, sender: SenderFactory) -> Result<Self, ConfigError> {
        let clients = Clients::new(&herald_aws::function_sdk_config());
        clients.warm_up(&config.deliveries_table, None).await;
        Self::from_aws_with(&clients, config, sender).await
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

    /// Hands on the messages that came back `HAND_ON_AFTER_RECEIVES` times, as new
    /// messages one attempt later, before anything else: this invocation may be stopped
    /// as the earlier ones were. Each handed on is done (and its job taken out of `jobs`);
    /// one that could not be is tried here as it is.
    async fn hand_on_worn(&self, messages: &[SqsMessage], jobs: &mut [Option<ChannelMessage>], done: &mut [bool]) {
        for (position, message) in messages.iter().enumerate() {
            let Some(job) = &jobs[position] else { continue };
            if receive_count(message) < HAND_ON_AFTER_RECEIVES || job.attempt + 1 >= MAX_ATTEMPTS {
                continue;
            }
            let fresh = ChannelMessage { attempt: job.attempt + 1, ..job.clone() };
            let message_id = sqs::message_id(message);
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

    async fn handle_job(
        &self,
        message_id: &str,
        job: &ChannelMessage,
        check: CampaignCheck,
        deadline: Option<std::time::Instant>,
    ) -> bool {
        match check {
            CampaignCheck::Unknown => return false,
            CampaignCheck::Cancelled => return self.skip_cancelled(message_id, job).await,
            CampaignCheck::Deliver => {}
        }
        let outcomes = self.pipeline.process_until(job, deadline).await;
        for (delivery_id, outcome) in &outcomes {
            // The kind and status only: a retry's reason is the provider's error text, which
            // may quote the address.
            let (kind, status) = match outcome {
                herald_core::delivery::pipeline::Outcome::Done(status) => ("done", Some(*status)),
                herald_core::delivery::pipeline::Outcome::AlreadySettled(status) => ("already_settled", Some(*status)),
                herald_core::delivery::pipeline::Outcome::Retry(_) => ("retry", None),
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
            let counts = campaign_counts(outcomes.iter().map(|(_, o)| o));
            if counts != CampaignCounters::default() {
                match self.campaigns.add_outcomes(campaign_id, &counts).await {
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

/// Builds a channel's provider over the clients. Each worker binary names its own
/// channel's, so that it links that provider's SDK only (an SES worker has no SNS
/// client, no webhook HTTP client): [`senders::for_channel`] links them all.
pub type SenderFactory = fn(&Clients, &WorkerConfig, Option<WebhookSigner>) -> Result<Arc<dyn Sender>, ConfigError>;

pub mod senders {
    use super::*;

    /// Every channel's factory, chosen at run time (the local stack, which runs them all).
    pub fn for_channel(channel: Channel) -> SenderFactory {
        match channel {
            Channel::Email => email,
            Channel::Sms => sms,
            Channel::Push => push,
            Channel::Webhook => webhook,
        }
    }

    pub fn email(
        clients: &Clients,
        config: &WorkerConfig,
        _: Option<WebhookSigner>,
    ) -> Result<Arc<dyn Sender>, ConfigError> {
        Ok(Arc::new(
            SesEmailSender::new(clients.sesv2(), &config.sender_address)
                .with_configuration_set(config.configuration_set.clone()),
        ))
    }

    pub fn sms(clients: &Clients, _: &WorkerConfig, _: Option<WebhookSigner>) -> Result<Arc<dyn Sender>, ConfigError> {
        Ok(Arc::new(SnsSmsSender::new(clients.sns())))
    }

    /// A push sender that marks a device the platform reports disabled on its profile
    /// (when the worker knows the profiles table).
    pub fn push(
        clients: &Clients,
        config: &WorkerConfig,
        _: Option<WebhookSigner>,
    ) -> Result<Arc<dyn Sender>, ConfigError> {
        let sender = SnsPushSender::new(
            clients.sns(),
            PlatformApplications {
                apns: config.apns_application.clone(),
                apns_sandbox: config.apns_sandbox_application.clone(),
                fcm: config.fcm_application.clone(),
            },
        );
        Ok(match &config.profiles_table {
            Some(table) => {
                let profiles = ProfileService::new(Arc::new(DynamoProfileStore::new(clients.dynamodb(), table)));
                Arc::new(sender.on_disabled(Arc::new(profiles)))
            }
            None => Arc::new(sender),
        })
    }

    pub fn webhook(
        _: &Clients,
        config: &WorkerConfig,
        webhook_signer: Option<WebhookSigner>,
    ) -> Result<Arc<dyn Sender>, ConfigError> {
        Ok(Arc::new(
            herald_aws::senders::webhook::WebhookSender::new(
                webhook_signer.ok_or(ConfigError::Missing(WEBHOOK_SIGNING_KEYS_SECRET_ARN))?,
                config.webhook_root_pem.as_deref(),
                config.webhook_destinations,
            )
            .map_err(|e| ConfigError::invalid("WEBHOOK_ROOT_CA_PEM", format!("the webhook client refuses it: {e}")))?,
        ))
    }
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
        let mut jobs: Vec<Option<ChannelMessage>> = messages
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
        let mut done = vec![false; messages.len()];
        self.hand_on_worn(messages, &mut jobs, &mut done).await;
        let campaign_ids: BTreeSet<&str> = jobs.iter().flatten().filter_map(|j| j.campaign_id.as_deref()).collect();
        let checks: HashMap<&str, CampaignCheck> = futures_util::future::join_all(
            campaign_ids.into_iter().map(async |id| (id, self.campaign_check(id).await)),
        )
        .await
        .into_iter()
        .collect();
        let shares = self.shares(&jobs, invocation.deadline);
        // One message after the other, each started only if it can end before the
        // deadline, judging by the slowest so far, so the invocation is never stopped
        // mid-message with its counts unrecorded.
        let mut later: Vec<(usize, ChannelMessage)> = Vec::new();
        let mut slowest = Duration::ZERO;
        for (position, ((message, job), share)) in messages.iter().zip(&jobs).zip(shares).enumerate() {
            let Some(job) = job else { continue };
            let late = invocation.deadline.is_some_and(|d| Instant::now() + slowest + RECORDING_MARGIN > d);
            let started = Instant::now();
            let job = match share {
                _ if late => None,
                Share::Whole => Some(job.clone()),
                Share::None => None,
                Share::First(n) => match self.hand_on(sqs::message_id(message), job, n).await {
                    Some(first) => Some(first),
                    None => continue,
                },
            };
            let Some(job) = job else {
                later.push((position, jobs[position].clone().expect("a parsed job")));
                continue;
            };
            let check = job.campaign_id.as_deref().map_or(CampaignCheck::Deliver, |id| checks[id]);
            done[position] = self.handle_job(sqs::message_id(message), &job, check, invocation.deadline).await;
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
        Retry::from_handled(done)
    }

    fn metrics(&self) -> Option<&Emf> {
        Some(&self.metrics)
    }
}

#[cfg(test)]
mod tests;
