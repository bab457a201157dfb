//! Plays Lambda's SQS event source mappings: for each function the template subscribes
//! to a queue, a poller receives batches, invokes the handler with the exact payload
//! Lambda sends, and settles each message as Lambda does with `ReportBatchItemFailures`.
//!
//! One local deviation: Lambda leaves a failed message invisible until the queue's
//! visibility timeout ends (60 s in the template). Locally that would make every retry a
//! minute's wait, so the poller makes failed messages visible again after
//! `HERALD_LOCAL_RETRY_DELAY_SECONDS` (default 1). Receive counts, and so redrive to the
//! dead-letter queue after maxReceiveCount, behave as deployed.
//!
//! Timeouts: Lambda stops a function at its template `Timeout` (its own, else the
//! Globals', else 3 s), and so does the poller: the handler gets that deadline in its
//! [`Invocation`], and at the deadline its task is aborted (its future dropped, so all it
//! was doing stops where it was), the batch fails as a function error and its messages
//! come back after the retry delay. An aborted task does not stop tasks it spawned;
//! Herald's handlers spawn none, except the importer's parser thread
//! (`spawn_blocking`), which ends at its next slice once the dropped invocation no longer
//! receives them.
//!
//! Concurrency: a mapping's `ScalingConfig: MaximumConcurrency` caps how many invocations
//! Lambda runs at once for its queue (2 to 1000); without it, Lambda starts five pollers
//! and scales far beyond. Locally a mapping runs [`QueueSource::concurrency`] pollers at
//! once, each receiving, invoking and settling a batch in turn: the cap, or
//! [`DEFAULT_MAX_CONCURRENCY`] without one, at most `HERALD_LOCAL_MAX_CONCURRENCY` (to
//! spare a slow machine). So batches of one queue race each other as they do deployed.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
};
use base64::Engine as _;
use herald_aws::describe;
pub use herald_edge::sqs::{Invocation, Retry};
use herald_edge::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use md5::Digest as _;
use serde_json::{Map, Value, json};
use tokio::{
    sync::watch,
    task::{JoinHandle, JoinSet},
};

pub use crate::template::DEFAULT_TIMEOUT;
use crate::{errors::LocalError, provision::Deployment};

/// How long a failed message stays invisible locally, unless configured.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Pollers of a mapping without MaximumConcurrency: the five Lambda starts with.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 5;
use herald_core::limits::sqs::{BATCH_ENTRIES, RECEIVE_MESSAGES};
/// Long polling keeps an idle poller to one request a second and bounds how long
/// stopping waits for a receive in flight.
const WAIT_TIME_SECONDS: i32 = 1;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What Lambda invokes with a batch of SQS messages: the function's handler, the same
/// trait the deployed function runs under.
pub use herald_edge::sqs::SqsHandler;

/// The importer as Lambda feeds it: the bucket's notifications as real S3 sends them
/// (moto's are completed, see [`crate::s3::lambda_body`]), and never the `s3:TestEvent`,
/// which is settled (deleted) with the batch without reaching it.
pub struct RealS3Events(pub Arc<dyn SqsHandler>);

#[async_trait]
impl SqsHandler for RealS3Events {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        // The messages the importer gets, and the position of each in the batch.
        let mut given = Vec::with_capacity(messages.len());
        let mut positions = Vec::with_capacity(messages.len());
        for (position, message) in messages.iter().enumerate() {
            let mut message = message.clone();
            if let Some(body) = message.body.as_deref() {
                match crate::s3::lambda_body(body) {
                    None => {
                        tracing::debug!(message_id = ?message.message_id, "dropped an s3:TestEvent");
                        continue;
                    }
                    Some(real) => {
                        if real != body {
                            message.md5_of_body = Some(hex::encode(md5::Md5::digest(real.as_bytes())));
                            message.body = Some(real);
                        }
                    }
                }
            }
            given.push(message);
            positions.push(position);
        }
        if given.is_empty() {
            return Retry::default();
        }
        let retry = self.0.handle_batch(&given, invocation).await;
        retry.positions().filter_map(|i| positions.get(i).copied()).collect()
    }
}

/// A fake handler at Lambda's boundary: it answers the whole event itself, as it pleases.
struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> SqsHandler for FnHandler<F>
where
    F: Fn(SqsEvent) -> Fut + Send + Sync,
    Fut: Future<Output = SqsBatchResponse> + Send,
{
    async fn handle_batch(&self, messages: &[SqsMessage], _: Invocation) -> Retry {
        let mut event = SqsEvent::default();
        event.records = messages.to_vec();
        let failed = self.handle(event).await.batch_item_failures;
        let failed = |m: &SqsMessage| failed.iter().any(|f| Some(&f.item_identifier) == m.message_id.as_ref());
        Retry::from_handled(messages.iter().map(|m| !failed(m)))
    }

    // What the poller invokes: the fake's answer as it gave it, ids outside the batch too.
    async fn invoke(&self, event: SqsEvent, _: Invocation) -> SqsBatchResponse {
        (self.0)(event).await
    }
}

/// A handler from an async closure, e.g. a fake in a test.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn SqsHandler>
where
    F: Fn(SqsEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SqsBatchResponse> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

/// The local retry delay: `HERALD_LOCAL_RETRY_DELAY_SECONDS`, default 1.
pub fn retry_delay_from_env() -> Result<Duration, LocalError> {
    match std::env::var("HERALD_LOCAL_RETRY_DELAY_SECONDS").ok().filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_RETRY_DELAY),
        Some(text) => text.parse().map(Duration::from_secs).map_err(|_| {
            LocalError::Config(format!("HERALD_LOCAL_RETRY_DELAY_SECONDS={text:?} is not a number of seconds"))
        }),
    }
}

/// `HERALD_LOCAL_MAX_CONCURRENCY`: the most pollers any mapping runs at once locally
/// (None: as the template says).
pub fn max_concurrency_from_env() -> Result<Option<u32>, LocalError> {
    match std::env::var("HERALD_LOCAL_MAX_CONCURRENCY").ok().filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => {
            text.parse().ok().filter(|n| *n >= 1).map(Some).ok_or_else(|| {
                LocalError::Config(format!("HERALD_LOCAL_MAX_CONCURRENCY={text:?} is not a number from 1"))
            })
        }
    }
}

/// A queue a poller reads, and how it settles what the handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSource {
    pub queue_url: String,
    /// The `eventSourceARN` of each record.
    pub queue_arn: String,
    /// Messages per invocation, at most 10 (one ReceiveMessage).
    pub batch_size: i32,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`: without it, Lambda ignores the
    /// answer and deletes the whole batch.
    pub report_batch_item_failures: bool,
    /// How long a failed message stays invisible (see the module's comment).
    pub retry_delay: Duration,
    /// `ScalingConfig: MaximumConcurrency`: the most invocations Lambda runs at once for
    /// this queue (None: no cap but the account's).
    pub max_concurrency: Option<u32>,
    /// How many invocations the local pollers run at once (see the module's comment).
    pub concurrency: u32,
}

impl QueueSource {
    /// A source as the template declares the workers': batches of 10, partial failures.
    pub fn new(queue_url: impl Into<String>, queue_arn: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            queue_arn: queue_arn.into(),
            batch_size: RECEIVE_MESSAGES as i32,
            report_batch_item_failures: true,
            retry_delay: DEFAULT_RETRY_DELAY,
            max_concurrency: None,
            concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

/// A function's `Events` entry of Type SQS.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSourceMapping {
    /// The function's logical id.
    pub function: String,
    /// The Cargo binary it is built from, if the template says.
    pub binary: Option<String>,
    /// When the function is stopped: its template `Timeout`.
    pub timeout: Duration,
    /// The share of invocations whose timeout is drawn at random, from a tenth of `timeout`
    /// to nine tenths (chaos: timeouts that strike at any point of the work); 0 as deployed.
    pub random_timeout_share: f64,
    pub source: QueueSource,
}

impl EventSourceMapping {
    /// A mapping for `function` (a name for the logs) with Lambda's default timeout.
    pub fn new(function: impl Into<String>, source: QueueSource) -> Self {
        Self { function: function.into(), binary: None, timeout: DEFAULT_TIMEOUT, random_timeout_share: 0.0, source }
    }
}

/// Every enabled SQS event source of the template's functions, on the queues `deployment`
/// created; none runs more than `concurrency_cap` pollers, if given.
pub fn sqs_event_sources(
    deployment: &Deployment,
    retry_delay: Duration,
    concurrency_cap: Option<u32>,
) -> Result<Vec<EventSourceMapping>, LocalError> {
    let template = &deployment.template;
    let mut mappings = Vec::new();
    for function in template.resources_of_type("AWS::Serverless::Function") {
        let timeout = template
            .timeout(function, &deployment.physical, &deployment.stack_name)
            .map_err(|e| e.context(&function.logical_id))?;
        let events = function.properties.get("Events").and_then(serde_norway::Value::as_mapping);
        for (name, event) in events.into_iter().flatten() {
            if event.get("Type").and_then(serde_norway::Value::as_str) != Some("SQS") {
                continue;
            }
            let context = format!("{}.Events.{}", function.logical_id, name.as_str().unwrap_or("?"));
            let properties = event.get("Properties").cloned().unwrap_or_default();
            if properties.get("Enabled").and_then(serde_norway::Value::as_bool) == Some(false) {
                continue;
            }
            let queue = properties
                .get("Queue")
                .ok_or_else(|| LocalError::Template(format!("{context} names no Queue")))
                .and_then(|q| template.resolve(q, &deployment.physical, &deployment.stack_name))
                .map_err(|e| e.context(&context))?;
            let url = deployment.physical.by_arn(&queue).and_then(|id| deployment.queue_url(id)).ok_or_else(|| {
                LocalError::Template(format!("{context}: {queue} is not one of the template's queues"))
            })?;
            let batch_size = match properties.get("BatchSize") {
                None => RECEIVE_MESSAGES as i32,
                Some(size) => size
                    .as_i64()
                    .and_then(|s| i32::try_from(s).ok())
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| LocalError::Template(format!("{context}: BatchSize {size:?}")))?,
            };
            let max_concurrency = match properties.get("ScalingConfig").and_then(|c| c.get("MaximumConcurrency")) {
                None => None,
                Some(value) => {
                    let text = template
                        .resolve(value, &deployment.physical, &deployment.stack_name)
                        .map_err(|e| e.context(&context))?;
                    let maximum = text.parse::<u32>().ok().filter(|m| (2..=1000).contains(m)).ok_or_else(|| {
                        LocalError::Template(format!(
                            "{context}: ScalingConfig.MaximumConcurrency {text:?} is not a number from 2 to 1000"
                        ))
                    })?;
                    Some(maximum)
                }
            };
            let report_batch_item_failures = properties
                .get("FunctionResponseTypes")
                .and_then(serde_norway::Value::as_sequence)
                .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("ReportBatchItemFailures")));
            let concurrency = local_concurrency(max_concurrency, concurrency_cap);
            mappings.push(EventSourceMapping {
                function: function.logical_id.clone(),
                binary: function.binary().map(str::to_owned),
                timeout,
                random_timeout_share: 0.0,
                source: QueueSource {
                    queue_url: url.to_owned(),
                    queue_arn: queue,
                    batch_size,
                    report_batch_item_failures,
                    retry_delay,
                    max_concurrency,
                    concurrency,
                },
            });
        }
    }
    Ok(mappings)
}

/// How many pollers a mapping runs locally: its MaximumConcurrency, or Lambda's initial
/// five, at most `cap`.
pub fn local_concurrency(max_concurrency: Option<u32>, cap: Option<u32>) -> u32 {
    max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY).min(cap.unwrap_or(u32::MAX)).max(1)
}

/// Tells pollers to stop. Dropping it stops them too, so a stack dropped without being
/// stopped leaves no poller behind.
pub struct Stopper(watch::Sender<bool>);

/// What a poller watches to know when to stop.
#[derive(Clone)]
pub struct StopToken(watch::Receiver<bool>);

pub fn stop_signal() -> (Stopper, StopToken) {
    let (sender, receiver) = watch::channel(false);
    (Stopper(sender), StopToken(receiver))
}

impl Stopper {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl StopToken {
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once stop is called or the Stopper is dropped.
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    pub async fn sleep(&mut self, duration: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.stopped() => {}
        }
    }
}

/// Starts the mapping's pollers until `stop`, one per handler in `environments` (one per
/// concurrent invocation, as Lambda runs each in an environment of its own; at most the
/// source's `concurrency`); the handle ends when they all have. A receive in flight is
/// finished (not abandoned, which would hide its messages for the visibility timeout), so
/// stopping takes up to a second plus the function's timeout.
pub fn spawn_poller(
    sqs: aws_sdk_sqs::Client,
    mapping: EventSourceMapping,
    environments: Vec<Arc<dyn SqsHandler>>,
    stop: StopToken,
) -> JoinHandle<()> {
    let mapping = Arc::new(mapping);
    let mut pollers = JoinSet::new();
    for handler in environments.into_iter().take(mapping.source.concurrency.max(1) as usize) {
        pollers.spawn(poll_until_stopped(sqs.clone(), mapping.clone(), handler, stop.clone()));
    }
    // Dropping the set (this task aborted) aborts the pollers with it.
    tokio::spawn(async move { while pollers.join_next().await.is_some() {} })
}

/// One handler for every concurrent invocation of `mapping` (handlers without state of
/// their own per environment).
pub fn shared(handler: Arc<dyn SqsHandler>, mapping: &EventSourceMapping) -> Vec<Arc<dyn SqsHandler>> {
    vec![handler; mapping.source.concurrency.max(1) as usize]
}

async fn poll_until_stopped(
    sqs: aws_sdk_sqs::Client,
    mapping: Arc<EventSourceMapping>,
    handler: Arc<dyn SqsHandler>,
    mut stop: StopToken,
) {
    let mut backoff = FIRST_BACKOFF;
    while !stop.is_stopped() {
        match poll_once(&sqs, &mapping, &handler).await {
            Ok(_) => backoff = FIRST_BACKOFF,
            Err(e) => {
                // An endpoint that is down or a queue that is gone: wait, doubling up
                // to MAX_BACKOFF, rather than spin.
                tracing::warn!(queue = %mapping.source.queue_url, error = %e, retry_in = ?backoff, "SQS poller");
                stop.sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Receives one batch, invokes the handler (stopping it at the mapping's timeout) and
/// settles the batch; answers how many messages it handled.
pub async fn poll_once(
    sqs: &aws_sdk_sqs::Client,
    mapping: &EventSourceMapping,
    handler: &Arc<dyn SqsHandler>,
) -> Result<usize, LocalError> {
    let source = &mapping.source;
    let received = sqs
        .receive_message()
        .queue_url(&source.queue_url)
        .max_number_of_messages(source.batch_size.clamp(1, RECEIVE_MESSAGES as i32))
        .wait_time_seconds(WAIT_TIME_SECONDS)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| LocalError::Aws(format!("receiving from {}: {}", source.queue_url, describe(&e))))?;
    let messages = received.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(0);
    }
    let payload = lambda_event(&messages, &source.queue_arn);
    let event: SqsEvent = serde_json::from_value(payload)
        .map_err(|e| LocalError::Aws(format!("the SQS event does not deserialize: {e}")))?;
    let receipts: Vec<Receipt> = messages
        .iter()
        .map(|m| Receipt {
            message_id: m.message_id().unwrap_or_default().to_owned(),
            receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
        })
        .collect();
    // Chaos: a share of invocations get a timeout drawn at random, from a tenth of the
    // template's to nine tenths, told to them as their deadline as Lambda tells its own.
    let timeout = match mapping.random_timeout_share > 0.0 && rand::random::<f64>() < mapping.random_timeout_share {
        true => mapping.timeout.mul_f64(0.1 + 0.8 * rand::random::<f64>()),
        false => mapping.timeout,
    };
    let deadline = Instant::now() + timeout;
    let invocation = Invocation { deadline: Some(deadline) };
    // In its own task, so that a handler that panics fails its batch, as a function error
    // does in Lambda, instead of ending the poller; and so that it can be stopped.
    let mut invoked = tokio::spawn({
        let handler = handler.clone();
        let function = mapping.function.clone();
        async move {
            let started = Instant::now();
            let response = handler.invoke(event, invocation).await;
            crate::billed::record(&function, started);
            response
        }
    });
    let response = match tokio::time::timeout_at(deadline.into(), &mut invoked).await {
        Ok(Ok(response)) => Some(response),
        Ok(Err(e)) => {
            tracing::error!(function = %mapping.function, error = %e, "the handler failed the whole batch");
            None
        }
        Err(_) => {
            invoked.abort();
            // Settled only once the invocation is gone, as Lambda ends it before retrying.
            let _ = invoked.await;
            tracing::warn!(
                function = %mapping.function,
                messages = messages.len(),
                "Task timed out after {:.2} seconds",
                timeout.as_secs_f64()
            );
            None
        }
    };
    let settlement = settle(&receipts, response.as_ref(), source.report_batch_item_failures);
    delete(sqs, source, &settlement.delete).await?;
    retry_later(sqs, source, &settlement.retry).await?;
    Ok(messages.len())
}

/// A received message, as the poller settles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: String,
    pub receipt_handle: String,
}

/// What to do with each message of a handled batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settlement<'a> {
    pub delete: Vec<&'a Receipt>,
    pub retry: Vec<&'a Receipt>,
}

/// Splits a batch into the messages to delete and those to retry, by Lambda's rules: no answer (a function error) fails the whole batch; so does
/// a failure naming an id that is empty or not in the batch; otherwise the named
/// messages are retried and the rest deleted. Without ReportBatchItemFailures the answer
/// is ignored.
pub fn settle<'a>(
    batch: &'a [Receipt],
    response: Option<&SqsBatchResponse>,
    report_batch_item_failures: bool,
) -> Settlement<'a> {
    let all_failed = Settlement { delete: Vec::new(), retry: batch.iter().collect() };
    let Some(response) = response else { return all_failed };
    if !report_batch_item_failures {
        return Settlement { delete: batch.iter().collect(), retry: Vec::new() };
    }
    let failures: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    if failures.iter().any(|id| id.is_empty() || !batch.iter().any(|r| r.message_id == *id)) {
        return all_failed;
    }
    let (delete, retry) = batch.iter().partition(|r| !failures.contains(&r.message_id.as_str()));
    Settlement { delete, retry }
}

async fn delete(sqs: &aws_sdk_sqs::Client, source: &QueueSource, done: &[&Receipt]) -> Result<(), LocalError> {
    for chunk in done.chunks(BATCH_ENTRIES) {
        let entries = chunk.iter().enumerate().map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(&r.receipt_handle).build()
        });
        let entries = entries.collect::<Result<Vec<_>, _>>().map_err(|e| LocalError::Aws(e.to_string()))?;
        let answer = sqs
            .delete_message_batch()
            .queue_url(&source.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| LocalError::Aws(format!("deleting from {}: {}", source.queue_url, describe(&e))))?;
        if !answer.failed.is_empty() {
            tracing::warn!(queue = %source.queue_url, failed = ?answer.failed, "some handled messages were not deleted");
        }
    }
    Ok(())
}

async fn retry_later(sqs: &aws_sdk_sqs::Client, source: &QueueSource, failed: &[&Receipt]) -> Result<(), LocalError> {
    let seconds = i32::try_from(source.retry_delay.as_secs()).unwrap_or(i32::MAX);
    for chunk in failed.chunks(BATCH_ENTRIES) {
        let entries = chunk.iter().enumerate().map(|(i, r)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&r.receipt_handle)
                .visibility_timeout(seconds)
                .build()
        });
        let entries = entries.collect::<Result<Vec<_>, _>>().map_err(|e| LocalError::Aws(e.to_string()))?;
        let answer = sqs
            .change_message_visibility_batch()
            .queue_url(&source.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| LocalError::Aws(format!("releasing on {}: {}", source.queue_url, describe(&e))))?;
        if !answer.failed.is_empty() {
            tracing::warn!(queue = %source.queue_url, failed = ?answer.failed, "some failed messages wait out the visibility timeout");
        }
    }
    Ok(())
}

/// The payload Lambda sends for `messages` received from the queue `queue_arn`.
pub fn lambda_event(messages: &[Message], queue_arn: &str) -> Value {
    // arn:aws:sqs:<region>:<account>:<name>
    let region = queue_arn.split(':').nth(3).filter(|r| !r.is_empty()).unwrap_or("us-east-1");
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: Map<String, Value> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), Value::String(value.clone())))
                .collect();
            let message_attributes: Map<String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.clone(), message_attribute(value)))
                .collect();
            let mut record = json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            });
            if let Some(md5) = m.md5_of_message_attributes() {
                record["md5OfMessageAttributes"] = json!(md5);
            }
            record
        })
        .collect();
    json!({ "Records": records })
}

/// A message attribute as Lambda writes it: camelCase, binary values in base64.
fn message_attribute(value: &aws_sdk_sqs::types::MessageAttributeValue) -> Value {
    let base64 = |blob: &aws_sdk_sqs::primitives::Blob| base64::engine::general_purpose::STANDARD.encode(blob.as_ref());
    let mut attribute = json!({
        "stringListValues": value.string_list_values(),
        "binaryListValues": value.binary_list_values().iter().map(base64).collect::<Vec<_>>(),
        "dataType": value.data_type(),
    });
    if let Some(text) = value.string_value() {
        attribute["stringValue"] = json!(text);
    }
    if let Some(blob) = value.binary_value() {
        attribute["binaryValue"] = json!(base64(blob));
    }
    attribute
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::sqs::BatchItemFailure;
    use aws_sdk_sqs::{primitives::Blob, types::MessageAttributeValue};

    use super::*;

    const ARN: &str = "arn:aws:sqs:eu-west-3:123456789012:s-EmailQueue";

    fn message(id: &str) -> Message {
        Message::builder()
            .message_id(id)
            .receipt_handle(format!("rh-{id}"))
            .body(r#"{"a":1}"#)
            .md5_of_body("9b1a7f3a2b3a8e1d2f6d6a7c1e0a5b4c")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000000")
            .attributes(MessageSystemAttributeName::SenderId, "AIDAIENQZJOLO23YVJ4VO")
            .attributes(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp, "1700000000500")
            .build()
    }

    #[test]
    fn the_payload_is_what_lambda_sends_for_an_sqs_batch() {
        let payload = lambda_event(&[message("m1")], ARN);
        assert_eq!(
            payload,
            json!({"Records": [{
                "messageId": "m1",
                "receiptHandle": "rh-m1",
                "body": "{\"a\":1}",
                "attributes": {
                    "ApproximateReceiveCount": "2",
                    "SentTimestamp": "1700000000000",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1700000000500"
                },
                "messageAttributes": {},
                "md5OfBody": "9b1a7f3a2b3a8e1d2f6d6a7c1e0a5b4c",
                "eventSource": "aws:sqs",
                "eventSourceARN": ARN,
                "awsRegion": "eu-west-3"
            }]})
        );
        let event: SqsEvent = serde_json::from_value(payload).unwrap();
        assert_eq!(event.records[0].attributes["ApproximateReceiveCount"], "2");
        assert_eq!(event.records[0].event_source_arn.as_deref(), Some(ARN));
    }

    #[test]
    fn message_attributes_are_written_as_lambda_writes_them() {
        let m = Message::builder()
            .message_id("m")
            .message_attributes(
                "kind",
                MessageAttributeValue::builder().data_type("String").string_value("x").build().unwrap(),
            )
            .message_attributes(
                "raw",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(Blob::new(b"hi".to_vec()))
                    .build()
                    .unwrap(),
            )
            .md5_of_message_attributes("abc")
            .build();
        let payload = lambda_event(&[m], ARN);
        let record = &payload["Records"][0];
        assert_eq!(
            record["messageAttributes"]["kind"],
            json!({"stringValue": "x", "stringListValues": [], "binaryListValues": [], "dataType": "String"})
        );
        assert_eq!(record["messageAttributes"]["raw"]["binaryValue"], "aGk=");
        assert_eq!(record["md5OfMessageAttributes"], "abc");
        let event: SqsEvent = serde_json::from_value(payload).unwrap();
        assert_eq!(event.records[0].message_attributes["kind"].string_value.as_deref(), Some("x"));
    }

    fn batch() -> Vec<Receipt> {
        ["a", "b", "c"]
            .iter()
            .map(|id| Receipt { message_id: id.to_string(), receipt_handle: format!("rh-{id}") })
            .collect()
    }

    fn failing(ids: &[&str]) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for id in ids {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = (*id).to_owned();
            response.batch_item_failures.push(failure);
        }
        response
    }

    fn ids<'a>(receipts: &[&'a Receipt]) -> Vec<&'a str> {
        receipts.iter().map(|r| r.message_id.as_str()).collect()
    }

    #[test]
    fn reported_failures_are_retried_and_the_rest_deleted() {
        let batch = batch();
        let settled = settle(&batch, Some(&failing(&["b"])), true);
        assert_eq!((ids(&settled.delete), ids(&settled.retry)), (vec!["a", "c"], vec!["b"]));
        let settled = settle(&batch, Some(&failing(&[])), true);
        assert_eq!((ids(&settled.delete), ids(&settled.retry)), (vec!["a", "b", "c"], vec![]));
    }

    #[test]
    fn a_failure_naming_no_message_of_the_batch_fails_the_whole_batch() {
        let batch = batch();
        for bad in [&["b", "zz"][..], &[""][..]] {
            let settled = settle(&batch, Some(&failing(bad)), true);
            assert_eq!((settled.delete.len(), settled.retry.len()), (0, 3), "{bad:?}");
        }
    }

    #[test]
    fn a_handler_error_fails_the_whole_batch() {
        let batch = batch();
        let settled = settle(&batch, None, true);
        assert_eq!((settled.delete.len(), settled.retry.len()), (0, 3));
    }

    #[test]
    fn without_report_batch_item_failures_the_answer_is_ignored() {
        let batch = batch();
        let settled = settle(&batch, Some(&failing(&["b"])), false);
        assert_eq!((settled.delete.len(), settled.retry.len()), (3, 0));
    }

    #[test]
    fn a_mapping_runs_its_maximum_concurrency_or_five_pollers_at_most_the_local_cap() {
        assert_eq!(local_concurrency(Some(3), None), 3);
        assert_eq!(local_concurrency(None, None), 5);
        assert_eq!(local_concurrency(Some(8), Some(2)), 2);
        assert_eq!(local_concurrency(None, Some(1)), 1);
        assert_eq!(local_concurrency(Some(2), Some(4)), 2, "the cap only lowers");
    }

    #[tokio::test]
    async fn a_stop_token_sees_stop_and_a_dropped_stopper() {
        let (stopper, mut token) = stop_signal();
        assert!(!token.is_stopped());
        stopper.stop();
        assert!(token.is_stopped());
        token.stopped().await;

        let (stopper, mut token) = stop_signal();
        drop(stopper);
        assert!(token.is_stopped());
        token.stopped().await;
    }
}
