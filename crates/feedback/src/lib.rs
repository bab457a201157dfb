//! The feedback Lambda: SES's events about Herald's emails (delivered, bounced,
//! complained, rejected, delayed, failed), routed from the default bus to its SQS queue,
//! and SNS's SMS delivery status (delivered, failed), which CloudWatch Logs' subscription
//! filters on SNS's delivery status log groups invoke it with. Each moves its delivery
//! forward and, for a hard bounce, a complaint or repeated soft bounces, puts the address
//! on the suppression list, and an SMS's number when SNS says it opted out, is blocked or
//! is invalid (`delivery::feedback`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lambda_events::cloudwatch_logs::{LogEntry, LogsEvent};
use futures_util::StreamExt as _;
use herald_aws::{
    Clients, DynamoDeliveryStore, DynamoSuppressionStore,
    feedback::{FeedbackFormatError, ses, sns_sms},
};
use herald_core::{delivery::feedback::FeedbackService, suppressions::SoftBouncePolicy};
use herald_edge::{
    config::{ConfigError, Env},
    eventbridge::Envelope,
    metrics::Emf,
    sqs::{self, Invocation, Retry, SqsEvent, SqsHandler, SqsMessage},
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

/// SMS delivery statuses applied at once: each is a query and a write or two, and one of a
/// message sent moments ago may wait for its send to be recorded.
pub const RECEIPTS_AT_ONCE: usize = 16;

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

impl FeedbackHandler {
    /// Applies the SMS delivery statuses of one CloudWatch Logs delivery, `RECEIPTS_AT_ONCE`
    /// at a time (a receipt for a message just sent may wait for its send to be recorded);
    /// Err when Lambda is to invoke it again (its retries of an asynchronous invocation,
    /// then the function's dead-letter queue). Applying is idempotent, so the records
    /// applied before a failure are applied once in all.
    pub async fn receipts(&self, event: &LogsEvent, invocation: Invocation) -> Result<(), String> {
        let data = &event.aws_logs.data;
        // CONTROL_MESSAGE: CloudWatch Logs checking that the destination answers.
        if data.message_type != "DATA_MESSAGE" {
            return Ok(());
        }
        // Collected first: a lazy map's closure makes the future not provably Send.
        let each: Vec<_> = data.log_events.iter().map(|entry| self.receipt(entry, invocation)).collect();
        let applied: Vec<_> = futures_util::stream::iter(each).buffer_unordered(RECEIPTS_AT_ONCE).collect().await;
        applied.into_iter().collect()
    }

    async fn receipt(&self, entry: &LogEntry, invocation: Invocation) -> Result<(), String> {
        if invocation.deadline.is_some_and(|d| Instant::now() + MARGIN > d) {
            return Err("the deadline is near: the invocation is retried".to_owned());
        }
        let receipt = match sns_sms::receipt(&entry.message) {
            Ok(receipt) => receipt,
            // A retry cannot read it either, and would hold back the records after it.
            Err(error) => {
                tracing::warn!(log_event = entry.id, %error, "an SMS delivery status Herald cannot read; skipped");
                return Ok(());
            }
        };
        let applied = self.service.apply_receipt(&receipt).await.map_err(|e| format!("store: {e}"))?;
        tracing::info!(
            log_event = entry.id,
            status = receipt.kind.status().as_str(),
            moved = applied.moved,
            suppressed = applied.suppressed.map(|r| r.as_str()),
            "SMS delivery status applied"
        );
        Ok(())
    }

    /// One invocation, of either kind: an SQS batch (SES's events) answers its batch
    /// item failures; a CloudWatch Logs delivery (SNS's SMS status) answers null.
    pub async fn invoke(
        &self,
        payload: serde_json::Value,
        invocation: Invocation,
    ) -> Result<serde_json::Value, String> {
        if payload.get("awslogs").is_some() {
            // From text: `AwsLogs`' deserializer takes borrowed keys, which a Value has not.
            let event: LogsEvent = serde_json::from_str(&payload.to_string())
                .map_err(|_| "an unreadable CloudWatch Logs event".to_owned())?;
            self.receipts(&event, invocation).await?;
            return Ok(serde_json::Value::Null);
        }
        let event: SqsEvent =
            serde_json::from_value(payload).map_err(|_| "neither SQS nor CloudWatch Logs".to_owned())?;
        let response = sqs::handle_event(self, event, invocation).await;
        Ok(serde_json::to_value(response).expect("a batch response serializes"))
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
