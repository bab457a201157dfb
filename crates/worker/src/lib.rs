//! Delivery workers: one binary per channel over one shared pipeline. Each SQS batch is
//! answered with the messages that failed (`ReportBatchItemFailures`), so one bad
//! message never makes SQS retry the good ones.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use herald_aws::Clients;
use herald_core::delivery::Channel;
use lambda_runtime::{LambdaEvent, service_fn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    pub channel: Channel,
}

#[derive(Debug, thiserror::Error)]
#[error("worker configuration: {0}")]
pub struct ConfigError(pub String);

impl WorkerConfig {
    /// Reads the variables the template gives a worker through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let channel = match lookup("CHANNEL").as_deref() {
            Some("email") => Channel::Email,
            Some("sms") => Channel::Sms,
            Some("push") => Channel::Push,
            Some("webhook") => Channel::Webhook,
            other => return Err(ConfigError(format!("CHANNEL must be email, sms, push or webhook, not {other:?}"))),
        };
        Ok(Self { channel })
    }
}

pub struct Worker {
    config: WorkerConfig,
}

impl Worker {
    pub fn from_aws(_clients: &Clients, config: &WorkerConfig) -> Self {
        Self { config: config.clone() }
    }

    pub fn channel(&self) -> Channel {
        self.config.channel
    }

    /// Handles one SQS batch and reports the messages to retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        // The delivery pipeline is not wired yet: retry everything, lose nothing.
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
        response
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
    let worker = Worker::from_aws(&clients, &config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let worker = &worker;
        async move { Ok::<_, lambda_runtime::Error>(worker.handle(event.payload).await) }
    }))
    .await
}
