//! Delivery workers: one binary per channel over one shared pipeline. Each SQS batch is
//! answered with the messages that failed (`ReportBatchItemFailures`), so one bad
//! message never makes SQS retry the good ones.

pub mod webhook;

use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use herald_aws::{
    Clients, DynamoDeliveryStore, DynamoPreferenceStore, DynamoProfileStore, DynamoSuppressionStore,
    DynamoTemplateStore, EventBridgePublisher,
    senders::{PlatformApplications, SesEmailSender, SnsPushSender, SnsSmsSender},
};
use herald_core::{
    ProfileService,
    delivery::Channel,
    notification::DeliveryJob,
    pipeline::{Outcome, Pipeline, Providers, Tracking},
    ports::Sender,
    rate_limit::RateLimit,
};
use lambda_runtime::{LambdaEvent, service_fn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    pub channel: Channel,
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
    /// The public URL of the API; email carries tracking links to it when set.
    pub tracking_base_url: Option<String>,
    /// Another region of the same provider, used while the primary keeps failing.
    pub secondary_region: Option<String>,
    /// Where push removes tokens of disabled endpoints (and announces the change).
    pub profiles_table: Option<String>,
    pub event_bus_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("worker configuration: {0}")]
pub struct ConfigError(pub String);

fn parse_rate_limit(text: &str) -> Result<Option<RateLimit>, ConfigError> {
    if text.is_empty() || text == "off" {
        return Ok(None);
    }
    let bad =
        || ConfigError(format!("RATE_LIMIT_PER_USER must look like 20/3600 (sends per seconds) or off, not {text:?}"));
    let (limit, window) = text.split_once('/').ok_or_else(bad)?;
    Ok(Some(RateLimit {
        limit: limit.trim().parse().map_err(|_| bad())?,
        window: window.trim().parse().map_err(|_| bad())?,
    }))
}

impl WorkerConfig {
    /// Reads the variables the template gives a worker through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let optional = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let required = |name: &str| optional(name).ok_or_else(|| ConfigError(format!("{name} is not set")));
        let channel = match lookup("CHANNEL").as_deref() {
            Some("email") => Channel::Email,
            Some("sms") => Channel::Sms,
            Some("push") => Channel::Push,
            Some("webhook") => Channel::Webhook,
            other => return Err(ConfigError(format!("CHANNEL must be email, sms, push or webhook, not {other:?}"))),
        };
        Ok(Self {
            channel,
            deliveries_table: required("DELIVERIES_TABLE")?,
            preferences_table: required("PREFERENCES_TABLE")?,
            suppressions_table: required("SUPPRESSIONS_TABLE")?,
            rate_limits_table: required("RATE_LIMITS_TABLE")?,
            templates_table: required("TEMPLATES_TABLE")?,
            sender_address: optional("SENDER_ADDRESS").unwrap_or_default(),
            apns_application: optional("APNS_PLATFORM_APPLICATION_ARN"),
            apns_sandbox_application: optional("APNS_SANDBOX_PLATFORM_APPLICATION_ARN"),
            fcm_application: optional("FCM_PLATFORM_APPLICATION_ARN"),
            signing_secret: required("SIGNING_SECRET")?,
            rate_limit: parse_rate_limit(&optional("RATE_LIMIT_PER_USER").unwrap_or_default())?,
            webhook_root_pem: optional("WEBHOOK_ROOT_CA_PEM"),
            tracking_base_url: optional("TRACKING_BASE_URL"),
            secondary_region: optional("SECONDARY_PROVIDER_REGION"),
            profiles_table: optional("PROFILES_TABLE"),
            event_bus_name: optional("EVENT_BUS_NAME"),
        })
    }
}

pub struct Worker {
    pipeline: Pipeline,
}

impl Worker {
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
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
        pipeline.tracking = config
            .tracking_base_url
            .clone()
            .map(|base_url| Tracking { base_url, secret: config.signing_secret.as_bytes().to_vec() });
        Ok(Self::new(pipeline))
    }

    pub fn channel(&self) -> Channel {
        self.pipeline.channel
    }

    /// Handles one SQS batch and reports the messages to retry: those with a recipient
    /// to retry, and those that cannot be read (after maxReceiveCount, SQS moves them to
    /// the dead-letter queue).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        // The messages of a batch are independent: handle them concurrently.
        let done = futures_util::future::join_all(event.records.iter().map(|r| self.handle_message(r))).await;
        let mut response = SqsBatchResponse::default();
        for (record, done) in event.records.iter().zip(done) {
            if !done {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone().unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// True when the message is done with (every recipient settled).
    async fn handle_message(&self, record: &SqsMessage) -> bool {
        let message_id = record.message_id.as_deref().unwrap_or_default();
        let job = match parse_job(record.body.as_deref().unwrap_or_default()) {
            Ok(job) => job,
            Err(e) => {
                // Only the id and the parse error: the body may hold addresses.
                tracing::error!(message_id, error = %e, "unreadable delivery job");
                return false;
            }
        };
        if job.channel != self.channel() {
            tracing::error!(message_id, channel = %job.channel, "a job for another channel");
            return false;
        }
        let outcomes = self.pipeline.process(&job).await;
        let retries = outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Retry(_))).count();
        for (delivery_id, outcome) in &outcomes {
            tracing::info!(message_id, delivery_id, outcome = ?outcome, "delivery");
        }
        retries == 0
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
            webhook::WebhookSender::new(&config.signing_secret, config.webhook_root_pem.as_deref())
                .map_err(|e| ConfigError(format!("webhook client: {e}")))?,
        ),
    })
}

/// A job arrives wrapped in the EventBridge envelope (from the bus) or bare (sent to the
/// queue directly).
pub fn parse_job(body: &str) -> Result<DeliveryJob, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    match value.get("detail") {
        Some(detail) if value.get("detail-type").is_some() => serde_json::from_value(detail.clone()),
        _ => serde_json::from_value(value),
    }
}

/// The Lambda entry point of the channel's binary.
pub async fn run(channel: Channel) -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let config = WorkerConfig::from_lookup(|name| std::env::var(name).ok())?;
    if config.channel != channel {
        return Err(format!("this binary delivers {channel}, but CHANNEL says {}", config.channel).into());
    }
    let clients = Clients::new(&herald_aws::sdk_config().await);
    clients.warm_up(&config.deliveries_table, None).await;
    let worker = Worker::from_aws(&clients, &config)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let worker = &worker;
        async move { Ok::<_, lambda_runtime::Error>(worker.handle(event.payload).await) }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sig = webhook::signature(b"secret", 1_700_000_000, "{}");
        assert_eq!(sig, "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163");
    }
}
