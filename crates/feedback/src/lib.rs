//! The feedback Lambda: SES's events about Herald's emails (delivered, bounced,
//! complained, rejected, delayed, failed), routed from the default bus to its SQS queue.
//! Each moves its delivery forward and, for a hard bounce, a complaint or repeated soft
//! bounces, puts the address on the suppression list (`delivery::feedback`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use herald_aws::{
    Clients, DynamoDeliveryStore, DynamoSuppressionStore,
    feedback::{FeedbackFormatError, ses},
};
use herald_core::{delivery::feedback::FeedbackService, suppressions::SoftBouncePolicy};
use herald_edge::{
    config::{ConfigError, Env},
    eventbridge::Envelope,
    metrics::Emf,
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedbackConfig {
    pub deliveries_table: String,
    pub suppressions_table: String,
    pub soft_bounces: SoftBouncePolicy,
}

impl FeedbackConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let defaults = SoftBouncePolicy::default();
        let count = |v: &str| v.parse().ok().filter(|n: &u32| (1..=1000).contains(n));
        Ok(Self {
            deliveries_table: env.required("DELIVERIES_TABLE")?,
            suppressions_table: env.required("SUPPRESSIONS_TABLE")?,
            soft_bounces: SoftBouncePolicy {
                bounces: env
                    .parse("SOFT_BOUNCES_TO_SUPPRESS", "a number from 1 to 1000", count)?
                    .unwrap_or(defaults.bounces),
                window_days: env
                    .parse("SOFT_BOUNCE_WINDOW_DAYS", "a number of days from 1 to 1000", count)?
                    .unwrap_or(defaults.window_days),
            },
        })
    }
}

pub struct FeedbackHandler {
    pub service: FeedbackService,
    pub metrics: Emf,
}

/// Left at the end of an invocation: a message is started only with more than this to go
/// (its two or three small writes take milliseconds; the rest come back from SQS).
pub const MARGIN: Duration = Duration::from_secs(2);

impl FeedbackHandler {
    pub fn from_aws(clients: &Clients, config: &FeedbackConfig) -> Self {
        let db = || clients.dynamodb();
        let service = FeedbackService::new(
            Arc::new(DynamoDeliveryStore::new(db(), &config.deliveries_table)),
            Arc::new(DynamoSuppressionStore::new(db(), &config.suppressions_table)),
            config.soft_bounces,
        );
        Self { service, metrics: Emf::for_function("Feedback") }
    }

    pub async fn connect(config: &FeedbackConfig) -> Self {
        let clients = Clients::new(&herald_aws::function_sdk_config());
        clients.warm_up(&config.deliveries_table, None).await;
        Self::from_aws(&clients, config)
    }

    /// Applies one message's reports; Err when SQS is to deliver it again.
    async fn handle(&self, message: &SqsMessage) -> Result<(), String> {
        let envelope: Envelope =
            Envelope::parse(sqs::body(message)).map_err(|_| "not an event of the bus".to_owned())?;
        let reports = match ses::feedback(&envelope.detail) {
            Ok(reports) => reports,
            // Not Herald's email: nothing to move, nothing a retry could find.
            Err(FeedbackFormatError::NotHeralds) => {
                tracing::info!(message_id = sqs::message_id(message), "an SES event without Herald's tag; ignored");
                return Ok(());
            }
            // Kept in the dead-letter queue for a person to read.
            Err(e) => return Err(e.to_string()),
        };
        for report in &reports {
            let applied = self.service.apply(report).await.map_err(|e| format!("store: {e}"))?;
            tracing::info!(
                delivery_id = report.delivery_id,
                status = report.kind.status().as_str(),
                moved = applied.moved,
                suppressed = applied.suppressed.map(|r| r.as_str()),
                "feedback applied"
            );
        }
        Ok(())
    }
}

/// Messages are applied one after the other until the deadline is near; those not
/// started come back from SQS, as do those that failed.
#[async_trait::async_trait]
impl SqsHandler for FeedbackHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let mut retry = Retry::default();
        for (position, message) in messages.iter().enumerate() {
            if invocation.deadline.is_some_and(|d| Instant::now() + MARGIN > d) {
                retry.insert(position);
                continue;
            }
            if let Err(error) = self.handle(message).await {
                tracing::warn!(message_id = sqs::message_id(message), error, "feedback not applied; SQS retries it");
                retry.insert(position);
            }
        }
        retry
    }

    fn metrics(&self) -> Option<&Emf> {
        Some(&self.metrics)
    }
}

#[cfg(test)]
mod tests;
