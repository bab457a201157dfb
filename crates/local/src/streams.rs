//! Plays Lambda's DynamoDB stream event source mappings: for each function the template
//! subscribes to a table's stream, a poller reads the stream's shards from the start
//! (`StartingPosition: TRIM_HORIZON`), invokes the handler with the payload Lambda sends,
//! and, with `ReportBatchItemFailures`, delivers the stream again from the record the
//! handler names (or the whole batch, when the handler fails), as Lambda does; a
//! shard's later records wait behind it, so the stream stays in order. A mapping's
//! `FilterCriteria` drop the records no pattern matches before any invocation, as Lambda
//! does; patterns may nest fields and test exact values and `exists` (what the template
//! uses), anything else is refused when the stack starts.
//!
//! Each invocation is stopped at the function's template `Timeout`, its batch failed.
//! A failed batch is retried as the mapping says: with `BisectBatchOnFunctionError`, a
//! batch failed whole is split in two (the first half tried first; a split is not a
//! retry), down to the one record that fails; a batch (one record, once bisected) failed
//! more than `MaximumRetryAttempts` times is dropped, its metadata (shard, first and last
//! sequence numbers, as Lambda writes `DDBStreamBatchInfo`) sent to the
//! `DestinationConfig.OnFailure` queue, and the shard moves on. -1 (or no setting)
//! retries until the handler takes it. Local deviations: a failed batch is retried after
//! `HERALD_LOCAL_RETRY_DELAY_SECONDS` (Lambda backs off on its own schedule), and
//! `MaximumRecordAgeInSeconds` is not played (moto keeps records for ever).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use aws_lambda_events::{dynamodb::Event, streams::DynamoDbEventResponse};
use aws_sdk_dynamodbstreams::{
    Client,
    types::{AttributeValue, Record, ShardIteratorType},
};
use base64::Engine as _;
use herald_aws::describe;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use crate::{errors::LocalError, esm::StopToken, provision::Deployment};

/// How often an idle shard is read: Lambda polls a shard four times a second.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The longest any shard of this process's pollers was held on one record, in
/// milliseconds: from the first failed batch that starts at it until it is taken or
/// dropped (an ongoing hold counts as far as it went).
static LONGEST_STALL_MS: AtomicU64 = AtomicU64::new(0);

/// The longest time a stream poller of this process held a shard on one record (the
/// chaos bench's `chaos relay stalled seconds`).
pub fn longest_stall() -> Duration {
    Duration::from_millis(LONGEST_STALL_MS.load(Ordering::Relaxed))
}

/// The record a shard is held on, and since when.
#[derive(Default)]
struct Stall(Option<(String, std::time::Instant)>);

impl Stall {
    /// After an invocation: `head` is the shard's first record not taken, `failed`
    /// whether the invocation failed on it.
    fn update(&mut self, head: Option<&str>, failed: bool) {
        if let Some((sequence, since)) = &self.0 {
            LONGEST_STALL_MS.fetch_max(since.elapsed().as_millis() as u64, Ordering::Relaxed);
            if Some(sequence.as_str()) != head || !failed {
                self.0 = None;
            }
        }
        if let (None, Some(head), true) = (&self.0, head, failed) {
            self.0 = Some((head.to_owned(), std::time::Instant::now()));
        }
    }
}

/// What Lambda invokes with a batch of stream records.
#[async_trait]
pub trait StreamHandler: Send + Sync {
    async fn handle(&self, event: Event) -> DynamoDbEventResponse;
}

#[async_trait]
impl StreamHandler for herald_relay::RelayHandler {
    async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        herald_relay::RelayHandler::handle(self, event).await
    }
}

/// A function's `Events` entry of Type DynamoDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSource {
    /// The function's logical id.
    pub function: String,
    pub binary: Option<String>,
    pub stream_arn: String,
    /// Records per invocation (DynamoDB's GetRecords returns at most 1,000).
    pub batch_size: i32,
    pub report_batch_item_failures: bool,
    pub retry_delay: Duration,
    /// When the function is stopped: its template `Timeout`.
    pub timeout: Duration,
    /// The mapping's filter patterns: a record is delivered if one matches (all without
    /// any).
    pub filters: Vec<Value>,
    /// `BisectBatchOnFunctionError`: a batch failed whole is split in two before its retry.
    pub bisect_on_error: bool,
    /// `MaximumRetryAttempts`; None (-1): retried until the handler takes the batch.
    pub maximum_retry_attempts: Option<u32>,
    /// The URL of the `DestinationConfig.OnFailure` queue: a dropped batch's metadata.
    pub on_failure: Option<String>,
}

impl StreamSource {
    /// Whether the mapping delivers `record` to the function.
    pub fn delivers(&self, record: &Record) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let payload = lambda_event(std::slice::from_ref(record), &self.stream_arn);
        let record = &payload["Records"][0];
        self.filters.iter().any(|pattern| matches(pattern, Some(record)))
    }
}

/// A `FilterCriteria` pattern, checked to use only what `matches` knows.
fn filter_pattern(text: &str, context: &str) -> Result<Value, LocalError> {
    fn supported(pattern: &Value) -> bool {
        match pattern {
            Value::Object(fields) => fields.values().all(supported),
            Value::Array(tests) => tests.iter().all(|test| match test {
                Value::Object(test) => test.len() == 1 && test.get("exists").is_some_and(Value::is_boolean),
                Value::Array(_) => false,
                _ => true,
            }),
            _ => false,
        }
    }
    let pattern: Value = serde_json::from_str(text)
        .map_err(|e| LocalError::Template(format!("{context}: a filter pattern that is not JSON: {e}")))?;
    if !pattern.is_object() || !supported(&pattern) {
        return Err(LocalError::Template(format!(
            "{context}: the local stack filters on nested fields, exact values and exists only"
        )));
    }
    Ok(pattern)
}

/// Whether `value` (absent: `None`) matches `pattern`: every field of an object pattern
/// matches the value's field; an array of tests matches a leaf one of them names (an
/// exact value, or `{"exists": bool}`).
fn matches(pattern: &Value, value: Option<&Value>) -> bool {
    match pattern {
        Value::Object(fields) => fields.iter().all(|(name, field)| matches(field, value.and_then(|v| v.get(name)))),
        Value::Array(tests) => tests.iter().any(|test| match test.get("exists").and_then(Value::as_bool) {
            Some(exists) => value.is_some_and(|v| !v.is_object()) == exists,
            None => match value {
                Some(Value::Array(values)) => values.contains(test),
                Some(value) => value == test,
                None => false,
            },
        }),
        _ => false,
    }
}

/// Every enabled DynamoDB stream event source of the template's functions.
pub fn stream_event_sources(deployment: &Deployment, retry_delay: Duration) -> Result<Vec<StreamSource>, LocalError> {
    let template = &deployment.template;
    let mut sources = Vec::new();
    for function in template.resources_of_type("AWS::Serverless::Function") {
        let events = function.properties.get("Events").and_then(serde_norway::Value::as_mapping);
        for (name, event) in events.into_iter().flatten() {
            if event.get("Type").and_then(serde_norway::Value::as_str) != Some("DynamoDB") {
                continue;
            }
            let context = format!("{}.Events.{}", function.logical_id, name.as_str().unwrap_or("?"));
            let properties = event.get("Properties").cloned().unwrap_or_default();
            if properties.get("Enabled").and_then(serde_norway::Value::as_bool) == Some(false) {
                continue;
            }
            let stream = properties
                .get("Stream")
                .ok_or_else(|| LocalError::Template(format!("{context} names no Stream")))
                .and_then(|s| template.resolve(s, &deployment.physical, &deployment.stack_name))
                .map_err(|e| e.context(&context))?;
            if properties.get("StartingPosition").and_then(serde_norway::Value::as_str) != Some("TRIM_HORIZON") {
                return Err(LocalError::Template(format!(
                    "{context}: the local stack reads streams from TRIM_HORIZON only"
                )));
            }
            let batch_size = match properties.get("BatchSize") {
                None => 100,
                Some(size) => size
                    .as_i64()
                    .and_then(|s| i32::try_from(s).ok())
                    .filter(|s| (1..=10_000).contains(s))
                    .ok_or_else(|| LocalError::Template(format!("{context}: BatchSize {size:?}")))?,
            };
            let report_batch_item_failures = properties
                .get("FunctionResponseTypes")
                .and_then(serde_norway::Value::as_sequence)
                .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("ReportBatchItemFailures")));
            let timeout = template.timeout(function, &deployment.physical, &deployment.stack_name)?;
            let filters = match properties.get("FilterCriteria") {
                None => Vec::new(),
                Some(criteria) => criteria
                    .get("Filters")
                    .and_then(serde_norway::Value::as_sequence)
                    .ok_or_else(|| LocalError::Template(format!("{context}: FilterCriteria without Filters")))?
                    .iter()
                    .map(|filter| {
                        let text = filter.get("Pattern").and_then(serde_norway::Value::as_str).ok_or_else(|| {
                            LocalError::Template(format!("{context}: a filter without a Pattern string"))
                        })?;
                        filter_pattern(text, &context)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let bisect_on_error =
                properties.get("BisectBatchOnFunctionError").and_then(serde_norway::Value::as_bool) == Some(true);
            let maximum_retry_attempts = match properties.get("MaximumRetryAttempts") {
                None => None,
                Some(value) => match value.as_i64() {
                    Some(-1) => None,
                    Some(n @ 0..=10_000) => Some(n as u32),
                    _ => return Err(LocalError::Template(format!("{context}: MaximumRetryAttempts {value:?}"))),
                },
            };
            let on_failure = match properties.get("DestinationConfig").and_then(|d| d.get("OnFailure")) {
                None => None,
                Some(on_failure) => {
                    if on_failure.get("Type").and_then(serde_norway::Value::as_str) != Some("SQS") {
                        return Err(LocalError::Template(format!(
                            "{context}: the local stack plays an OnFailure destination of Type SQS only"
                        )));
                    }
                    let arn = on_failure
                        .get("Destination")
                        .ok_or_else(|| LocalError::Template(format!("{context}: an OnFailure without Destination")))
                        .and_then(|d| template.resolve(d, &deployment.physical, &deployment.stack_name))
                        .map_err(|e| e.context(&context))?;
                    let url = deployment.physical.by_arn(&arn).and_then(|id| deployment.queue_url(id));
                    Some(
                        url.ok_or_else(|| {
                            LocalError::Template(format!("{context}: {arn} is not a queue of the template"))
                        })?
                        .to_owned(),
                    )
                }
            };
            sources.push(StreamSource {
                bisect_on_error,
                maximum_retry_attempts,
                on_failure,
                filters,
                timeout,
                function: function.logical_id.clone(),
                binary: function.binary().map(str::to_owned),
                stream_arn: stream,
                batch_size,
                report_batch_item_failures,
                retry_delay,
            });
        }
    }
    Ok(sources)
}

/// Starts reading every shard of `source`'s stream for `handler` until `stop`.
pub fn spawn_poller(
    client: Client,
    sqs: aws_sdk_sqs::Client,
    source: StreamSource,
    handler: Arc<dyn StreamHandler>,
    stop: StopToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stop_here = stop.clone();
        let mut shards = Vec::new();
        while !stop_here.is_stopped() {
            // Shards are found once: moto's streams have one shard that never closes.
            match shard_ids(&client, &source.stream_arn).await {
                Ok(ids) => {
                    shards = ids;
                    break;
                }
                Err(e) => {
                    tracing::warn!(stream = %source.stream_arn, error = %e, "describing the stream");
                    stop_here.sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let readers = shards.into_iter().map(|shard| {
            let (client, sqs, source, handler, stop) =
                (client.clone(), sqs.clone(), source.clone(), handler.clone(), stop.clone());
            tokio::spawn(async move { read_shard(&client, &sqs, &source, &shard, &handler, stop).await })
        });
        for reader in readers.collect::<Vec<_>>() {
            let _ = reader.await;
        }
    })
}

async fn shard_ids(client: &Client, stream_arn: &str) -> Result<Vec<String>, LocalError> {
    let described = client
        .describe_stream()
        .stream_arn(stream_arn)
        .send()
        .await
        .map_err(|e| LocalError::Aws(format!("describing {stream_arn}: {}", describe(&e))))?;
    let shards = described.stream_description.and_then(|d| d.shards).unwrap_or_default();
    Ok(shards.into_iter().filter_map(|s| s.shard_id).collect())
}

/// Reads one shard in order: a batch is taken again, from the record the handler
/// names, until the handler takes it whole or its retries run out (see the module's
/// documentation).
async fn read_shard(
    client: &Client,
    sqs: &aws_sdk_sqs::Client,
    source: &StreamSource,
    shard: &str,
    handler: &Arc<dyn StreamHandler>,
    mut stop: StopToken,
) {
    let mut iterator: Option<String> = None;
    let mut pending: Vec<Record> = Vec::new();
    // The next batch's size (smaller once bisected) and the retries of the batch at the head.
    let full = source.batch_size as usize;
    let (mut window, mut retries) = (full, 0u32);
    let mut stall = Stall::default();
    while !stop.is_stopped() {
        if pending.is_empty() {
            match next_records(client, source, shard, iterator.take()).await {
                Ok((records, next)) => {
                    iterator = next;
                    pending = records.into_iter().filter(|r| source.delivers(r)).collect();
                }
                Err(e) => {
                    tracing::warn!(stream = %source.stream_arn, error = %e, "reading the stream");
                    stop.sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            if pending.is_empty() {
                stop.sleep(IDLE_POLL).await;
                continue;
            }
        }
        let batch = pending.len().min(window);
        let taken = invoke(source, &pending[..batch], handler).await;
        pending.drain(..taken);
        stall.update(pending.first().and_then(sequence), taken < batch);
        if taken == batch {
            (window, retries) = (full, 0);
            continue;
        }
        if taken > 0 {
            // The checkpoint moved: the batch from the named record is a new one.
            (window, retries) = (full, 0);
        } else if source.bisect_on_error && batch > 1 {
            window = batch.div_ceil(2);
        } else {
            retries += 1;
            if source.maximum_retry_attempts.is_some_and(|max| retries > max) {
                let failed: Vec<Record> = pending.drain(..batch).collect();
                give_up(sqs, source, shard, &failed, retries).await;
                stall.update(pending.first().and_then(sequence), false);
                (window, retries) = (full, 0);
                continue;
            }
        }
        stop.sleep(source.retry_delay).await;
    }
}

/// Drops a batch whose retries ran out: its metadata to the mapping's on-failure queue,
/// in Lambda's shape (the records themselves stay in the stream for its retention).
async fn give_up(sqs: &aws_sdk_sqs::Client, source: &StreamSource, shard: &str, failed: &[Record], invocations: u32) {
    let body = on_failure_message(source, shard, failed, invocations);
    tracing::error!(
        function = %source.function,
        shard,
        first = body["DDBStreamBatchInfo"]["startSequenceNumber"].as_str().unwrap_or_default(),
        records = failed.len(),
        "stream records dropped after their retries"
    );
    let Some(queue) = &source.on_failure else {
        return;
    };
    if let Err(e) = sqs.send_message().queue_url(queue).message_body(body.to_string()).send().await {
        tracing::error!(function = %source.function, error = %describe(&e), "the on-failure queue refused the batch's metadata");
    }
}

/// What Lambda sends an on-failure destination for a dropped stream batch.
pub fn on_failure_message(source: &StreamSource, shard: &str, failed: &[Record], invocations: u32) -> Value {
    let arrival = |record: Option<&Record>| {
        record
            .and_then(|r| r.dynamodb.as_ref())
            .and_then(|d| d.approximate_creation_date_time)
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let mut arn = source.stream_arn.split(':');
    let (region, account) = (arn.nth(3).unwrap_or("us-east-1"), arn.next().unwrap_or("000000000000"));
    json!({
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": format!("arn:aws:lambda:{region}:{account}:function:{}", source.function),
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": invocations,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": failed.first().and_then(sequence),
            "endSequenceNumber": failed.last().and_then(sequence),
            "approximateArrivalOfFirstRecord": arrival(failed.first()),
            "approximateArrivalOfLastRecord": arrival(failed.last()),
            "batchSize": failed.len(),
            "streamArn": source.stream_arn,
        },
    })
}

async fn next_records(
    client: &Client,
    source: &StreamSource,
    shard: &str,
    iterator: Option<String>,
) -> Result<(Vec<Record>, Option<String>), LocalError> {
    let iterator = match iterator {
        Some(iterator) => iterator,
        None => client
            .get_shard_iterator()
            .stream_arn(&source.stream_arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| LocalError::Aws(format!("a shard iterator of {}: {}", source.stream_arn, describe(&e))))?
            .shard_iterator
            .ok_or_else(|| LocalError::Aws("no shard iterator".into()))?,
    };
    let read = client
        .get_records()
        .shard_iterator(&iterator)
        .limit(source.batch_size.min(1_000))
        .send()
        .await
        .map_err(|e| LocalError::Aws(format!("reading {}: {}", source.stream_arn, describe(&e))))?;
    // A closed shard has no next iterator; moto's never close, but read again from the
    // iterator we had rather than from the start.
    let next = read.next_shard_iterator.or(Some(iterator));
    Ok((read.records.unwrap_or_default(), next))
}

/// Invokes the handler with `records`; answers how many of them it took (all, none on a
/// function error, or those before the record it names).
async fn invoke(source: &StreamSource, records: &[Record], handler: &Arc<dyn StreamHandler>) -> usize {
    let payload = lambda_event(records, &source.stream_arn);
    let event: Event = match serde_json::from_value(payload) {
        Ok(event) => event,
        Err(e) => {
            // The category only: serde's message may quote an attribute value.
            tracing::error!(function = %source.function, category = ?e.classify(), "the stream event does not deserialize");
            return 0;
        }
    };
    let mut invoked = tokio::spawn({
        let handler = handler.clone();
        async move { handler.handle(event).await }
    });
    let response = match tokio::time::timeout(source.timeout, &mut invoked).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::error!(function = %source.function, error = %e, "the handler failed the whole batch");
            return 0;
        }
        Err(_) => {
            invoked.abort();
            let _ = invoked.await;
            let seconds = source.timeout.as_secs_f64();
            tracing::warn!(function = %source.function, "Task timed out after {seconds:.2} seconds");
            return 0;
        }
    };
    if !source.report_batch_item_failures {
        return records.len();
    }
    if response.batch_item_failures.is_empty() {
        return records.len();
    }
    // Lambda retries from the earliest record named; an id that is empty or not in the
    // batch fails the whole batch.
    let named: Option<Vec<usize>> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_deref().and_then(|id| records.iter().position(|r| sequence(r) == Some(id))))
        .collect();
    named.and_then(|positions| positions.into_iter().min()).unwrap_or(0)
}

fn sequence(record: &Record) -> Option<&str> {
    record.dynamodb.as_ref().and_then(|d| d.sequence_number.as_deref())
}

/// The payload Lambda sends for `records` of the stream `stream_arn`.
pub fn lambda_event(records: &[Record], stream_arn: &str) -> Value {
    // arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>
    let region = stream_arn.split(':').nth(3).filter(|r| !r.is_empty()).unwrap_or("us-east-1");
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            let change = r.dynamodb.as_ref();
            let image = |i: Option<&std::collections::HashMap<String, AttributeValue>>| {
                Value::Object(i.into_iter().flatten().map(|(k, v)| (k.clone(), attribute(v))).collect::<Map<_, _>>())
            };
            let mut dynamodb = json!({
                "Keys": image(change.and_then(|c| c.keys.as_ref())),
                "SequenceNumber": change.and_then(|c| c.sequence_number.as_deref()),
                "SizeBytes": change.and_then(|c| c.size_bytes).unwrap_or_default(),
                "StreamViewType": change.and_then(|c| c.stream_view_type.as_ref()).map(|t| t.as_str()),
                "ApproximateCreationDateTime": change
                    .and_then(|c| c.approximate_creation_date_time)
                    .map_or(0.0, |t| t.as_secs_f64()),
            });
            if let Some(new) = change.and_then(|c| c.new_image.as_ref()) {
                dynamodb["NewImage"] = image(Some(new));
            }
            if let Some(old) = change.and_then(|c| c.old_image.as_ref()) {
                dynamodb["OldImage"] = image(Some(old));
            }
            json!({
                "eventID": r.event_id(),
                "eventName": r.event_name().map(|n| n.as_str()),
                "eventVersion": r.event_version().unwrap_or("1.1"),
                "eventSource": "aws:dynamodb",
                "awsRegion": r.aws_region().unwrap_or(region),
                "eventSourceARN": stream_arn,
                "dynamodb": dynamodb,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// An attribute value in DynamoDB's JSON, as stream records carry it.
fn attribute(value: &AttributeValue) -> Value {
    let base64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
    };
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": base64(b) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(n) => json!({ "NULL": n }),
        AttributeValue::Ss(s) => json!({ "SS": s }),
        AttributeValue::Ns(n) => json!({ "NS": n }),
        AttributeValue::Bs(b) => json!({ "BS": b.iter().map(base64).collect::<Vec<_>>() }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute).collect::<Vec<_>>() }),
        AttributeValue::M(m) => {
            json!({ "M": m.iter().map(|(k, v)| (k.clone(), attribute(v))).collect::<Map<_, _>>() })
        }
        _ => json!({ "NULL": true }),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};

    use super::*;

    const ARN: &str = "arn:aws:dynamodb:eu-west-3:123456789012:table/s-ProfilesTable/stream/2026-12-01T00:00:00.000";

    fn record() -> Record {
        Record::builder()
            .event_id("e1")
            .event_name(OperationType::Modify)
            .event_version("1.1")
            .dynamodb(
                StreamRecord::builder()
                    .keys("user_id", AttributeValue::S("u1".into()))
                    .new_image("user_id", AttributeValue::S("u1".into()))
                    .new_image("version", AttributeValue::N("2".into()))
                    .new_image("tags", AttributeValue::L(vec![AttributeValue::Bool(true)]))
                    .old_image("user_id", AttributeValue::S("u1".into()))
                    .sequence_number("100")
                    .size_bytes(42)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build(),
            )
            .build()
    }

    fn source(patterns: &[&str]) -> StreamSource {
        StreamSource {
            function: "F".into(),
            binary: None,
            stream_arn: ARN.into(),
            batch_size: 100,
            report_batch_item_failures: true,
            retry_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            filters: patterns.iter().map(|p| filter_pattern(p, "F").unwrap()).collect(),
            bisect_on_error: false,
            maximum_retry_attempts: None,
            on_failure: None,
        }
    }

    #[test]
    fn a_stall_lasts_from_the_first_failure_on_a_record_until_it_is_taken() {
        let mut stall = Stall::default();
        stall.update(Some("1"), true);
        std::thread::sleep(Duration::from_millis(40));
        stall.update(Some("1"), true);
        std::thread::sleep(Duration::from_millis(40));
        stall.update(Some("2"), false);
        assert!(stall.0.is_none(), "taken: the shard moved on");
        assert!(longest_stall() >= Duration::from_millis(80), "{:?}", longest_stall());
        stall.update(Some("2"), true);
        assert_eq!(stall.0.as_ref().map(|(s, _)| s.as_str()), Some("2"));
    }

    /// A record whose new image is `image`.
    fn with_image(image: &[(&str, AttributeValue)]) -> Record {
        let mut change = StreamRecord::builder().keys("pk", AttributeValue::S("k".into())).sequence_number("1");
        for (name, value) in image {
            change = change.new_image(*name, value.clone());
        }
        Record::builder().event_name(OperationType::Insert).dynamodb(change.build()).build()
    }

    const OUTBOX_FILTER: &str = r#"{"dynamodb": {"NewImage": {"outbox": {"M": {"id": {"S": [{"exists": true}]}}}}}}"#;

    #[test]
    fn a_filter_delivers_only_the_records_it_matches() {
        let source = source(&[OUTBOX_FILTER]);
        let outbox = AttributeValue::M([("id".to_owned(), AttributeValue::S("2".into()))].into());
        assert!(source.delivers(&with_image(&[("outbox", outbox)])));
        assert!(!source.delivers(&with_image(&[("sk", AttributeValue::S("u1".into()))])), "no outbox");
        assert!(!source.delivers(&with_image(&[("outbox", AttributeValue::S("2".into()))])), "not the outbox's shape");
        assert!(!source.delivers(&with_image(&[])));
    }

    #[test]
    fn exact_values_and_absence_match_as_lambda_s_patterns_do() {
        let by_name = source(&[r#"{"eventName": ["MODIFY", "INSERT"]}"#]);
        assert!(by_name.delivers(&with_image(&[])));
        assert!(!source(&[r#"{"eventName": ["REMOVE"]}"#]).delivers(&with_image(&[])));
        let pro = source(&[r#"{"dynamodb": {"NewImage": {"plan": {"S": ["pro"]}}}}"#]);
        assert!(pro.delivers(&with_image(&[("plan", AttributeValue::S("pro".into()))])));
        assert!(!pro.delivers(&with_image(&[])), "a value that is not there is not matched");
        let absent = source(&[r#"{"dynamodb": {"NewImage": {"outbox": {"M": {"id": {"S": [{"exists": false}]}}}}}}"#]);
        assert!(absent.delivers(&with_image(&[])));
        assert!(source(&[]).delivers(&with_image(&[])), "no filter delivers everything");
    }

    #[test]
    fn a_pattern_the_local_stack_cannot_honour_is_refused() {
        for pattern in [r#"{"eventName": [{"prefix": "MOD"}]}"#, r#"{"eventName": "MODIFY"}"#, "[1]"] {
            assert!(filter_pattern(pattern, "F").is_err(), "{pattern}");
        }
    }

    #[test]
    fn the_payload_is_what_lambda_sends_for_a_stream_batch() {
        let payload = lambda_event(&[record()], ARN);
        let event: Event = serde_json::from_value(payload.clone()).unwrap();
        let change = &event.records[0];
        assert_eq!((change.event_name.as_str(), change.aws_region.as_str()), ("MODIFY", "eu-west-3"));
        assert_eq!(change.change.sequence_number.as_deref(), Some("100"));
        assert_eq!(payload["Records"][0]["dynamodb"]["NewImage"]["tags"], json!({"L": [{"BOOL": true}]}));
        assert_eq!(payload["Records"][0]["dynamodb"]["NewImage"]["version"], json!({"N": "2"}));
        assert_eq!(payload["Records"][0]["eventSourceARN"], ARN);
    }
}
