//! SQS batches as Lambda's event source mapping delivers them, answered with partial batch
//! failures (`ReportBatchItemFailures`): only the messages that failed are delivered
//! again, so one bad message never makes SQS retry the good ones.
//!
//! A function implements [`SqsHandler::handle_batch`] over the whole batch, since some
//! work a batch together (the worker reads each campaign once per batch, the segmenter
//! evaluates a batch's changes in one run); functions whose messages are independent
//! use [`each_concurrently`] or [`each_in_turn`]. [`handle_event`] turns what a handler
//! answers into the [`SqsBatchResponse`]; the Lambda runtime ([`run`]) and the local
//! stack's event source mappings both invoke handlers through it.

use std::{
    collections::BTreeSet,
    future::Future,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
pub use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{LambdaEvent, service_fn};

use crate::metrics::{Dimension, Emf, Metric, Metrics};

/// What an invocation gives a batch besides its messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// When Lambda (or the local stack, at the function's template `Timeout`) ends the
    /// invocation. None when the caller sets none (a test): a handler that needs one
    /// picks its own budget.
    pub deadline: Option<Instant>,
}

/// The messages of a batch that SQS is to deliver again, by their position in the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retry(BTreeSet<usize>);

impl Retry {
    pub fn insert(&mut self, position: usize) {
        self.0.insert(position);
    }

    pub fn contains(&self, position: usize) -> bool {
        self.0.contains(&position)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The positions, in batch order.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    /// From whether each message of the batch, in order, was handled.
    pub fn from_handled(handled: impl IntoIterator<Item = bool>) -> Self {
        handled.into_iter().enumerate().filter(|(_, handled)| !handled).map(|(position, _)| position).collect()
    }
}

impl FromIterator<usize> for Retry {
    fn from_iter<I: IntoIterator<Item = usize>>(positions: I) -> Self {
        Self(positions.into_iter().collect())
    }
}

/// A function fed by an SQS queue.
#[async_trait]
pub trait SqsHandler: Send + Sync {
    /// Handles one batch; answers the messages SQS is to deliver again (after
    /// maxReceiveCount, SQS moves them to the dead-letter queue). A handler logs why a
    /// message failed, by message id and never with its body, which may hold personal
    /// data.
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry;

    /// Where the function's metrics go: [`handle_event`] records the invocation's outcome
    /// and its messages' queue age there, then flushes what the batch recorded.
    fn metrics(&self) -> Option<&Emf> {
        None
    }

    /// Handles one batch as Lambda invokes the function, without a deadline.
    async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.invoke(event, Invocation::default()).await
    }

    /// Handles one batch as Lambda invokes the function, with what the invocation gives
    /// (the local stack's event source mappings set the deadline as Lambda does).
    async fn invoke(&self, event: SqsEvent, invocation: Invocation) -> SqsBatchResponse {
        handle_event(self, event, invocation).await
    }
}

/// Invokes `handler` with `event`; the answer names exactly the messages to retry, once
/// each, in batch order.
pub async fn handle_event<H: SqsHandler + ?Sized>(
    handler: &H,
    event: SqsEvent,
    invocation: Invocation,
) -> SqsBatchResponse {
    let received = SystemTime::now();
    let retry = handler.handle_batch(&event.records, invocation).await;
    let response = response(&event.records, &retry);
    if let Some(metrics) = handler.metrics() {
        record_invocation(metrics, &event.records, &response, received);
        metrics.flush();
    }
    response
}

/// The invocation's outcome (`ok`, `partial`: some messages retried, `failed`: all) and
/// each message's time in its queue, from its `SentTimestamp` attribute to `received`.
pub fn record_invocation(metrics: &Emf, messages: &[SqsMessage], response: &SqsBatchResponse, received: SystemTime) {
    let failed = response.batch_item_failures.len();
    let outcome = match failed {
        0 => "ok",
        n if n >= messages.len() => "failed",
        _ => "partial",
    };
    metrics.record(Metric::Invocations, &[Dimension::Outcome(outcome)], 1.0);
    let received = received.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    for message in messages {
        if let Some(sent) = message.attributes.get("SentTimestamp").and_then(|t| t.parse::<u64>().ok()) {
            metrics.record(Metric::QueueAge, &[], received.saturating_sub(sent) as f64);
        }
    }
}

/// The answer to Lambda for `messages` of which `retry` failed.
pub fn response(messages: &[SqsMessage], retry: &Retry) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in retry.positions().filter_map(|position| messages.get(position)) {
        // A message without an id is answered with an empty one, which makes Lambda retry
        // the whole batch: safer than acknowledging a failed message.
        let id = message_id(message);
        if !response.batch_item_failures.iter().any(|f| f.item_identifier == id) {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.to_owned();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The message's id (empty if absent, which SQS never sends).
pub fn message_id(message: &SqsMessage) -> &str {
    message.message_id.as_deref().unwrap_or_default()
}

/// The message's body (empty if absent).
pub fn body(message: &SqsMessage) -> &str {
    message.body.as_deref().unwrap_or_default()
}

/// Handles the messages of a batch concurrently with `handle`, which answers whether the
/// message was handled.
pub async fn each_concurrently<'a, F, Fut>(messages: &'a [SqsMessage], handle: F) -> Retry
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = bool>,
{
    Retry::from_handled(futures_util::future::join_all(messages.iter().map(handle)).await)
}

/// Handles the messages of a batch one after the other with `handle`, which answers
/// whether the message was handled.
pub async fn each_in_turn<'a, F, Fut>(messages: &'a [SqsMessage], handle: F) -> Retry
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut handled = Vec::with_capacity(messages.len());
    for message in messages {
        handled.push(handle(message).await);
    }
    Retry::from_handled(handled)
}

/// The invocation's deadline on the monotonic clock: the context gives wall-clock
/// milliseconds, which may jump.
pub fn deadline(context: &lambda_runtime::Context) -> Instant {
    let left = context.deadline().duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// Runs `handler` as the Lambda function until the runtime stops it.
pub async fn run<H: SqsHandler>(handler: H) -> Result<(), lambda_runtime::Error> {
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let invocation = Invocation { deadline: Some(deadline(&event.context)) };
        Ok::<_, lambda_runtime::Error>(handle_event(handler, event.payload, invocation).await)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn batch(ids: &[&str]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = ids
            .iter()
            .map(|id| {
                let mut message = SqsMessage::default();
                message.message_id = Some((*id).to_owned());
                message.body = Some(format!("body of {id}"));
                message
            })
            .collect();
        event
    }

    fn failed(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    /// Fails the messages whose body ends with one of `failing`, and records the order
    /// it saw them in.
    struct Picky {
        failing: Vec<&'static str>,
        seen: Mutex<Vec<String>>,
        concurrently: bool,
    }

    impl Picky {
        async fn one(&self, message: &SqsMessage) -> bool {
            self.seen.lock().unwrap().push(message_id(message).to_owned());
            !self.failing.iter().any(|f| body(message).ends_with(f))
        }
    }

    #[async_trait]
    impl SqsHandler for Picky {
        async fn handle_batch(&self, messages: &[SqsMessage], _: Invocation) -> Retry {
            if self.concurrently {
                each_concurrently(messages, |m| self.one(m)).await
            } else {
                each_in_turn(messages, |m| self.one(m)).await
            }
        }
    }

    #[tokio::test]
    async fn the_answer_names_exactly_the_failed_messages() {
        for concurrently in [true, false] {
            let handler = Picky { failing: vec!["b", "d"], seen: Mutex::default(), concurrently };
            assert_eq!(failed(&handler.handle(batch(&["a", "b", "c", "d"])).await), ["b", "d"]);
            assert_eq!(*handler.seen.lock().unwrap(), ["a", "b", "c", "d"]);
            assert!(handler.handle(batch(&[])).await.batch_item_failures.is_empty());
        }
    }

    /// Fails the messages whose body ends with `b`, and writes its metrics to memory.
    struct Metered(Emf);

    #[async_trait]
    impl SqsHandler for Metered {
        async fn handle_batch(&self, messages: &[SqsMessage], _: Invocation) -> Retry {
            Retry::from_handled(messages.iter().map(|m| !body(m).ends_with('b')))
        }

        fn metrics(&self) -> Option<&Emf> {
            Some(&self.0)
        }
    }

    fn written(lines: &Mutex<Vec<String>>) -> Vec<serde_json::Value> {
        lines.lock().unwrap().drain(..).map(|l| serde_json::from_str(&l).unwrap()).collect()
    }

    #[tokio::test]
    async fn an_invocation_writes_its_outcome_and_queue_ages_in_one_document() {
        let (emf, lines) = Emf::in_memory("Segmenter");
        let handler = Metered(emf);
        let mut event = batch(&["a", "b"]);
        let sent = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 - 4_000;
        for message in &mut event.records {
            message.attributes.insert("SentTimestamp".into(), sent.to_string());
        }
        handler.handle(event).await;
        let documents = written(&lines);
        assert_eq!(documents.len(), 1);
        let document = &documents[0];
        assert_eq!((&document["function"], &document["outcome"]), (&"Segmenter".into(), &"partial".into()));
        assert_eq!(document["Invocations"], 1.0);
        let ages: Vec<f64> = document["QueueAge"].as_array().unwrap().iter().map(|a| a.as_f64().unwrap()).collect();
        assert_eq!(ages.len(), 2);
        assert!(ages.iter().all(|age| (4_000.0..60_000.0).contains(age)), "{ages:?}");

        handler.handle(batch(&["c"])).await;
        assert_eq!(written(&lines)[0]["outcome"], "ok");
        handler.handle(batch(&["b"])).await;
        assert_eq!(written(&lines)[0]["outcome"], "failed");
    }

    #[test]
    fn a_message_is_named_once_and_positions_past_the_batch_are_ignored() {
        let event = batch(&["a", "a", "b"]);
        let retry: Retry = [0, 1, 7].into_iter().collect();
        assert_eq!(failed(&response(&event.records, &retry)), ["a"]);
        assert_eq!(Retry::from_handled([true, false, true, false]), [1, 3].into_iter().collect());
    }

    #[test]
    fn a_message_without_an_id_fails_the_whole_batch() {
        let mut event = batch(&["a"]);
        event.records[0].message_id = None;
        let retry: Retry = [0].into_iter().collect();
        assert_eq!(failed(&response(&event.records, &retry)), [""]);
    }
}
