//! Plays CloudWatch Logs' subscription filters to a Lambda function
//! (`AWS::Logs::SubscriptionFilter` with a function's `DestinationArn`): a poller reads
//! the log group's new events four times a second and invokes the function
//! asynchronously with the payload CloudWatch Logs sends (`{"awslogs": {"data": …}}`,
//! gzipped and base64-encoded, one log stream's events per invocation). A failed
//! invocation is retried as Lambda retries an asynchronous one: `MaximumRetryAttempts`
//! of the function's `EventInvokeConfig` (2 unless set), then the event goes to its
//! `DeadLetterQueue`.
//!
//! Local deviations: only the empty `FilterPattern` (every event) is played, anything else
//! is refused when the stack starts; retries come after `HERALD_LOCAL_RETRY_DELAY_SECONDS`
//! (Lambda waits one minute, then two); events written before the stack started are not
//! delivered.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use aws_lambda_events::cloudwatch_logs::{LogData, LogEntry};
use aws_sdk_cloudwatchlogs::Client;
use axum::body::Bytes;
use base64::Engine as _;
use flate2::{Compression, write::GzEncoder};
use herald_aws::describe;
use herald_edge::sqs::Invocation;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};

use crate::{errors::LocalError, esm::StopToken, processes, provision::Deployment, template::ACCOUNT};

/// CloudWatch Logs delivers a subscription's events within about a second.
const POLL: Duration = Duration::from_millis(250);

/// What CloudWatch Logs invokes, asynchronously: Err when Lambda is to retry.
#[async_trait]
pub trait LogsHandler: Send + Sync {
    async fn invoke(&self, payload: Value) -> Result<(), String>;
}

/// The feedback function in this process, with the deadline its template gives it.
pub struct InProcess {
    pub handler: Arc<herald_feedback::FeedbackHandler>,
    pub timeout: Duration,
}

#[async_trait]
impl LogsHandler for InProcess {
    async fn invoke(&self, payload: Value) -> Result<(), String> {
        let invocation = Invocation { deadline: Some(Instant::now() + self.timeout) };
        let invoked = tokio::time::timeout(self.timeout, self.handler.invoke(payload, invocation)).await;
        invoked.map_err(|_| "the invocation timed out".to_owned())?.map(drop)
    }
}

/// A function as its process: an error answered or a timeout is a failed invocation.
pub struct Process(pub Arc<processes::Function>);

#[async_trait]
impl LogsHandler for Process {
    async fn invoke(&self, payload: Value) -> Result<(), String> {
        let deadline = self.0.deadline(None);
        self.0.invoke(Bytes::from(payload.to_string()), deadline).await.map(drop).map_err(|e| e.to_string())
    }
}

/// One subscription filter of the template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The filter's logical id (its name, in the payload's `subscriptionFilters`).
    pub filter: String,
    pub log_group: String,
    /// The function's logical id and binary.
    pub function: String,
    pub binary: Option<String>,
    /// Lambda's retries of a failed asynchronous invocation.
    pub retries: u32,
    /// The URL of the function's dead-letter queue, if it has one.
    pub dead_letter_queue: Option<String>,
    pub retry_delay: Duration,
}

/// The template's subscription filters to its functions.
pub fn subscriptions(deployment: &Deployment, retry_delay: Duration) -> Result<Vec<Subscription>, LocalError> {
    let template = &deployment.template;
    let (physical, stack) = (&deployment.physical, deployment.stack_name.as_str());
    let mut found = Vec::new();
    for filter in template.resources_of_type("AWS::Logs::SubscriptionFilter") {
        let context = |e: LocalError| e.context(&filter.logical_id);
        let property = |name: &str| {
            filter
                .properties
                .get(name)
                .ok_or_else(|| LocalError::Template(format!("no {name}")))
                .and_then(|v| template.resolve(v, physical, stack))
                .map_err(context)
        };
        if !property("FilterPattern")?.is_empty() {
            return Err(context(LocalError::Template(
                "the local stack plays only the empty FilterPattern (every event)".into(),
            )));
        }
        let destination = property("DestinationArn")?;
        let function = physical
            .by_arn(&destination)
            .and_then(|id| template.resources.iter().find(|r| r.logical_id == id))
            .filter(|r| r.kind == "AWS::Serverless::Function")
            .ok_or_else(|| {
                context(LocalError::Template("the local stack plays subscriptions to functions only".into()))
            })?;
        let properties = &function.properties;
        let retries = match properties.get("EventInvokeConfig").and_then(|c| c.get("MaximumRetryAttempts")) {
            None => 2,
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= 2)
                .ok_or_else(|| context(LocalError::Template(format!("MaximumRetryAttempts {value:?}"))))?,
        };
        let dead_letter_queue = match properties.get("DeadLetterQueue") {
            None => None,
            Some(queue) => {
                let arn = queue
                    .get("TargetArn")
                    .ok_or_else(|| LocalError::Template("a DeadLetterQueue without its TargetArn".into()))
                    .and_then(|arn| template.resolve(arn, physical, stack))
                    .map_err(context)?;
                let url = physical.by_arn(&arn).and_then(|id| deployment.queue_url(id));
                Some(url.ok_or_else(|| context(LocalError::Template(format!("{arn} is not a queue of the template"))))?)
            }
            .map(str::to_owned),
        };
        found.push(Subscription {
            filter: filter.logical_id.clone(),
            log_group: property("LogGroupName")?,
            function: function.logical_id.clone(),
            binary: function.binary().map(str::to_owned),
            retries,
            dead_letter_queue,
            retry_delay,
        });
    }
    Ok(found)
}

/// The payload CloudWatch Logs invokes a function with for `events` of one log stream:
/// the data JSON, gzipped, in padded base64. (Built here, not with `AwsLogs`' serializer,
/// which writes base64 without padding that its own deserializer refuses.)
pub fn payload(subscription: &Subscription, log_stream: &str, events: Vec<LogEntry>) -> Value {
    let mut data = LogData::default();
    data.owner = ACCOUNT.to_owned();
    data.log_group = subscription.log_group.clone();
    data.log_stream = log_stream.to_owned();
    data.subscription_filters = vec![subscription.filter.clone()];
    data.message_type = "DATA_MESSAGE".to_owned();
    data.log_events = events;
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    serde_json::to_writer(&mut gzip, &data).expect("log data serializes");
    let zipped = gzip.finish().expect("gzip into memory");
    json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(zipped)}})
}

/// Polls the subscription's log group until stopped, then waits for the invocations
/// (and their retries) under way.
pub fn spawn_poller(
    logs: Client,
    sqs: aws_sdk_sqs::Client,
    subscription: Subscription,
    handler: Arc<dyn LogsHandler>,
    mut stop: StopToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let subscription = Arc::new(subscription);
        let mut since = chrono::Utc::now().timestamp_millis();
        // The ids of the events delivered at `since`, which the next read returns again.
        let mut delivered_at_since: HashSet<String> = HashSet::new();
        let mut invocations = JoinSet::new();
        while !stop.is_stopped() {
            match new_events(&logs, &subscription.log_group, since).await {
                Ok(events) => {
                    let mut by_stream: BTreeMap<String, Vec<LogEntry>> = BTreeMap::new();
                    for (stream, entry) in events {
                        if delivered_at_since.contains(&entry.id) {
                            continue;
                        }
                        if entry.timestamp > since {
                            since = entry.timestamp;
                            delivered_at_since.clear();
                        }
                        if entry.timestamp == since {
                            delivered_at_since.insert(entry.id.clone());
                        }
                        by_stream.entry(stream).or_default().push(entry);
                    }
                    for (stream, entries) in by_stream {
                        let event = payload(&subscription, &stream, entries);
                        let (subscription, handler, sqs) = (subscription.clone(), handler.clone(), sqs.clone());
                        invocations.spawn(async move { invoke(&subscription, &*handler, &sqs, event).await });
                    }
                }
                Err(e) => tracing::warn!(log_group = %subscription.log_group, error = %e, "reading the log group"),
            }
            while invocations.try_join_next().is_some() {}
            stop.sleep(POLL).await;
        }
        while invocations.join_next().await.is_some() {}
    })
}

/// The group's events from `since` on (milliseconds), oldest first, with their streams.
async fn new_events(logs: &Client, group: &str, since: i64) -> Result<Vec<(String, LogEntry)>, LocalError> {
    let mut events = Vec::new();
    let mut next = None;
    loop {
        let page =
            match logs.filter_log_events().log_group_name(group).start_time(since).set_next_token(next).send().await {
                Ok(page) => page,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                    return Ok(events);
                }
                Err(e) => return Err(LocalError::Aws(describe(&e))),
            };
        for event in page.events.unwrap_or_default() {
            let mut entry = LogEntry::default();
            entry.id = event.event_id.unwrap_or_default();
            entry.timestamp = event.timestamp.unwrap_or_default();
            entry.message = event.message.unwrap_or_default();
            events.push((event.log_stream_name.unwrap_or_default(), entry));
        }
        next = page.next_token;
        if next.is_none() {
            break;
        }
    }
    events.sort_by_key(|(_, entry)| entry.timestamp);
    Ok(events)
}

/// One asynchronous invocation: tried, retried, then dead-lettered.
async fn invoke(subscription: &Subscription, handler: &dyn LogsHandler, sqs: &aws_sdk_sqs::Client, event: Value) {
    for attempt in 0..=subscription.retries {
        if attempt > 0 {
            tokio::time::sleep(subscription.retry_delay).await;
        }
        match handler.invoke(event.clone()).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(function = %subscription.function, attempt, %error, "asynchronous invocation failed")
            }
        }
    }
    let Some(queue) = &subscription.dead_letter_queue else {
        tracing::error!(function = %subscription.function, "asynchronous invocation failed for good: its event is dropped");
        return;
    };
    if let Err(e) = sqs.send_message().queue_url(queue).message_body(event.to_string()).send().await {
        tracing::error!(function = %subscription.function, error = %describe(&e), "the dead-letter queue refused the event");
    }
}
