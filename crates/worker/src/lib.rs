//! Delivery workers: one binary per channel over one shared pipeline, each batch run by
//! core's delivery runner (`herald_core::delivery::runner`). Each SQS batch is answered
//! with the messages that failed (`ReportBatchItemFailures`), so one bad message never
//! makes SQS retry the good ones.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use herald_aws::{
    Clients, DynamoCampaignStore, DynamoDeliveryStore, DynamoPreferenceStore, DynamoSuppressionStore,
    DynamoTemplateStore, SqsChannelQueues,
};
use herald_core::{
    campaigns::{CampaignStore, progress::StoredCampaignProgress},
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelQueues, Sender,
        pipeline::{Pipeline, Providers, Tracking},
        runner::{DeliveryRunner, Job, retry_delays},
    },
    signing::webhook::WebhookSigner,
};
use herald_edge::{
    config::ConfigError,
    metrics::{Dimension, Emf, Metric, Metrics},
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};

mod config;
pub mod senders;

use config::key_ring;
pub use config::{TRACKING_KEYS_SECRET_ARN, WEBHOOK_SIGNING_KEYS_SECRET_ARN, WorkerConfig};
pub use senders::SenderFactory;

pub struct WorkerHandler {
    /// The delivery policy: attempts, deadlines, campaigns, counts.
    pub runner: DeliveryRunner,
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

impl WorkerHandler {
    pub fn new(pipeline: Pipeline, queues: Arc<dyn ChannelQueues>, campaigns: Arc<dyn CampaignStore>) -> Self {
        let metrics = Arc::new(Emf::for_function(function_name(pipeline.channel)));
        Self::with_metrics(pipeline, queues, campaigns, metrics)
    }

    /// The handler recording into `metrics`, the writer its providers' latency goes to.
    pub fn with_metrics(
        pipeline: Pipeline,
        queues: Arc<dyn ChannelQueues>,
        campaigns: Arc<dyn CampaignStore>,
        metrics: Arc<Emf>,
    ) -> Self {
        let progress = Arc::new(StoredCampaignProgress::new(campaigns));
        let runner = DeliveryRunner::new(pipeline, queues, progress, retry_delays(), metrics.clone());
        Self { runner, metrics }
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
        Ok(Self::with_metrics(pipeline, Arc::new(queues), Arc::new(campaigns), metrics))
    }

    /// The handler on the account's AWS clients and the sender `sender` builds (the
    /// binary's own channel's), its table's connections warmed up.
    pub async fn connect(config: &WorkerConfig, sender: SenderFactory) -> Result<Self, ConfigError> {
        let clients = Clients::new(&herald_aws::function_sdk_config());
        clients.warm_up(&config.deliveries_table, None).await;
        Self::from_aws_with(&clients, config, sender).await
    }

    pub fn channel(&self) -> Channel {
        self.runner.channel()
    }
}

/// A job arrives wrapped in the EventBridge envelope (from the bus) or bare (sent to the
/// queue directly).
pub fn parse_job(body: &str) -> Result<ChannelMessage, serde_json::Error> {
    herald_edge::eventbridge::detail_or_bare(body)
}

/// How many times SQS has delivered `message`, this time included.
fn receive_count(message: &SqsMessage) -> u32 {
    message.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1)
}

/// Each message read as the runner's job; the runner answers those SQS is to deliver again.
#[async_trait::async_trait]
impl SqsHandler for WorkerHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let jobs = messages
            .iter()
            .map(|message| {
                let message_id = sqs::message_id(message);
                let job = parse_job(sqs::body(message))
                    // Only the id and where parsing stopped: serde's message quotes the
                    // value it refused, which may be an address.
                    .inspect_err(|e| {
                        let (category, line, column) = (e.classify(), e.line(), e.column());
                        tracing::error!(message_id, ?category, line, column, "unreadable delivery job")
                    })
                    .ok();
                Job { message_id, receive_count: receive_count(message), message: job }
            })
            .collect();
        self.runner.run(jobs, invocation.deadline).await.into_iter().collect()
    }

    fn metrics(&self) -> Option<&Emf> {
        Some(&self.metrics)
    }
}

#[cfg(test)]
mod tests;
