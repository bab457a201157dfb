//! The outbox relay Lambda: fed by the DynamoDB streams (old and new images) of the
//! profiles table (`profile.changed`), the members table (`segment.entered`/`exited`
//! on each user's membership record) and the deliveries table (`delivery.status_changed`,
//! one per status change a write appended to a delivery's history), it publishes to the
//! bus the events each write put in its item's outbox (`herald_core::events::Outbox`; a
//! delivery's is its history), in stream order. It reads no table: any item with an
//! `outbox` attribute is relayed the same way, and an item without one (a members row)
//! publishes nothing. When publishing fails it answers
//! the first record not published as the batch's failure: Lambda delivers the stream
//! again from that record (`ReportBatchItemFailures`), so a change's event is delayed
//! while the bus is down. A record it cannot read is answered the same way; the
//! mappings split a failed batch down to it (`BisectBatchOnFunctionError`), retry it 10
//! times, then leave its position on the failure queue (alarmed) and move on, so one
//! such record holds its shard for minutes, not the stream's day.

use std::sync::Arc;

use aws_lambda_events::{
    dynamodb::{Event, EventRecord},
    streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse},
};
use herald_aws::{
    Clients, EventBridgePublisher,
    dynamo::{deliveries, outbox},
};
use herald_core::events::{EventPublisher, OutboxRelay, OutboxWrite};
use herald_edge::config::{ConfigError, Env};
use lambda_runtime::{LambdaEvent, service_fn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    pub event_bus_name: String,
}

impl RelayConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        Ok(Self { event_bus_name: env.required("EVENT_BUS_NAME")? })
    }
}

pub struct RelayHandler {
    relay: OutboxRelay,
    /// Invocations by outcome, flushed at each invocation's end.
    pub metrics: herald_edge::metrics::Emf,
}

impl RelayHandler {
    pub fn new(events: Arc<dyn EventPublisher>) -> Self {
        Self { relay: OutboxRelay::new(events), metrics: herald_edge::metrics::Emf::for_function("Relay") }
    }

    pub fn from_aws(clients: &Clients, config: &RelayConfig) -> Self {
        Self::new(Arc::new(EventBridgePublisher::new(clients.eventbridge(), &config.event_bus_name)))
    }

    pub async fn connect(config: &RelayConfig) -> Self {
        Self::from_aws(&Clients::new(&herald_aws::function_sdk_config()), config)
    }

    /// Publishes the batch's due events; answers the first record to deliver again, if
    /// any (Lambda retries from it, and every record after it).
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let mut writes = Vec::with_capacity(event.records.len());
        let mut unreadable = None;
        for (position, record) in event.records.iter().enumerate() {
            match write(record) {
                Ok(write) => writes.push(write),
                Err(_) => {
                    // Only Herald writes outboxes, so this is a bug or a version skew: hold
                    // the stream here for the mapping's retries (then its on-failure
                    // destination keeps the record's position) rather than skip an event.
                    // Not the error's text: it may quote what the item holds.
                    tracing::error!(event_id = %record.event_id, "an unreadable outbox");
                    unreadable = Some(position);
                    break;
                }
            }
        }
        let failed = match self.relay.relay(&writes).await {
            Ok(()) => unreadable,
            Err(e) => {
                tracing::warn!(error = %e.error, unpublished = writes.len() - e.position, "the bus refused; the stream delivers again");
                Some(e.position)
            }
        };
        let mut response = DynamoDbEventResponse::default();
        if let Some(record) = failed.and_then(|position| event.records.get(position)) {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = record.change.sequence_number.clone();
            response.batch_item_failures.push(failure);
        }
        let outcome = match failed {
            None => "ok",
            Some(0) => "failed",
            Some(_) => "partial",
        };
        use herald_edge::metrics::{Dimension, Metric, Metrics};
        self.metrics.record(Metric::Invocations, &[Dimension::Outcome(outcome)], 1.0);
        self.metrics.flush();
        response
    }

    /// Runs as the Lambda function until the runtime stops it.
    pub async fn run(self) -> Result<(), lambda_runtime::Error> {
        let handler = &self;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
            Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await)
        }))
        .await
    }
}

/// The write a stream record reports: its outbox before and after (none for a removal).
/// A delivery's outbox is its history: the status changes the write appended.
fn write(record: &EventRecord) -> Result<OutboxWrite, serde_dynamo::Error> {
    if record.event_name == "REMOVE" {
        return Ok(OutboxWrite::default());
    }
    let (old, new) = (&record.change.old_image, &record.change.new_image);
    match deliveries::stream_write(old, new)? {
        Some(write) => Ok(write),
        None => outbox::write(old, new),
    }
}

#[cfg(test)]
mod tests {
    use herald_core::events::{DomainEvent, memory::MemoryBus};
    use serde_json::{Value, json};

    use super::*;

    fn record(sequence: &str, name: &str, old: Option<&str>, new: Option<&str>) -> Value {
        let image = |id: Option<&str>| match id {
            None => json!({"user_id": {"S": "u1"}}),
            Some(id) => json!({"user_id": {"S": "u1"}, "outbox": {"M": {
                "id": {"S": id},
                "events": {"L": [{"M": {
                    "detail_type": {"S": "profile.changed"},
                    "detail": {"S": format!("{{\"user_id\":\"u1\",\"version\":{id}}}")}
                }}]}
            }}}),
        };
        json!({
            "eventID": format!("e{sequence}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/s-Profiles/stream/2026-12-01T00:00:00.000",
            "dynamodb": {
                "ApproximateCreationDateTime": 1764547200.0,
                "Keys": {"user_id": {"S": "u1"}},
                "NewImage": image(new),
                "OldImage": image(old),
                "SequenceNumber": sequence,
                "SizeBytes": 100,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            }
        })
    }

    /// A members table record: the user's membership record with an outbox of one
    /// `segment.entered` under `revision`, or a members row (no outbox).
    fn members_record(sequence: &str, name: &str, revision: Option<&str>) -> Value {
        let (keys, new_image) = match revision {
            Some(revision) => {
                let keys = json!({"pk": {"S": "user#u1"}, "sk": {"S": "segments"}});
                let mut image = keys.clone();
                image["revision"] = json!({"N": revision});
                image["outbox"] = json!({"M": {
                    "id": {"S": revision},
                    "events": {"L": [{"M": {
                        "detail_type": {"S": "segment.entered"},
                        "detail": {"S": format!("{{\"segment_id\":\"gold\",\"user_id\":\"u1\",\"revision\":{revision}}}")}
                    }}]}
                }});
                (keys, image)
            }
            None => {
                let keys = json!({"pk": {"S": "gold#3"}, "sk": {"S": "u1"}});
                (keys.clone(), keys)
            }
        };
        json!({
            "eventID": format!("m{sequence}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/s-Members/stream/2026-12-01T00:00:00.000",
            "dynamodb": {
                "ApproximateCreationDateTime": 1764547200.0,
                "Keys": keys,
                "NewImage": new_image,
                "SequenceNumber": sequence,
                "SizeBytes": 100,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            }
        })
    }

    fn event(records: Vec<Value>) -> Event {
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    fn details(bus: &MemoryBus) -> Vec<String> {
        bus.published.lock().unwrap().iter().map(DomainEvent::detail_json).collect()
    }

    #[tokio::test]
    async fn each_write_that_filled_its_outbox_is_published_once() {
        let bus = Arc::new(MemoryBus::default());
        let handler = RelayHandler::new(bus.clone());
        let answer = handler
            .handle(event(vec![
                record("100", "INSERT", None, Some("1")),
                record("200", "MODIFY", Some("1"), Some("1")),
                record("300", "MODIFY", Some("1"), Some("2")),
                record("400", "REMOVE", Some("2"), None),
            ]))
            .await;
        assert!(answer.batch_item_failures.is_empty());
        assert_eq!(details(&bus), [r#"{"user_id":"u1","version":1}"#, r#"{"user_id":"u1","version":2}"#]);
    }

    #[tokio::test]
    async fn a_refused_publish_asks_for_the_stream_again_from_the_first_unpublished_record() {
        let bus = Arc::new(MemoryBus { fail: true, ..Default::default() });
        let answer = RelayHandler::new(bus).handle(event(vec![record("100", "INSERT", None, Some("1"))])).await;
        let failed: Vec<_> = answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        assert_eq!(failed, [Some("100".to_owned())]);
    }

    #[tokio::test]
    async fn an_unreadable_outbox_holds_the_stream_at_its_record() {
        let bus = Arc::new(MemoryBus::default());
        let mut bad = record("200", "MODIFY", Some("1"), Some("2"));
        bad["dynamodb"]["NewImage"]["outbox"] = json!({"S": "not an outbox"});
        let answer = RelayHandler::new(bus.clone())
            .handle(event(vec![
                record("100", "INSERT", None, Some("1")),
                bad,
                record("300", "INSERT", None, Some("3")),
            ]))
            .await;
        let failed: Vec<_> = answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        assert_eq!(failed, [Some("200".to_owned())]);
        assert_eq!(details(&bus), [r#"{"user_id":"u1","version":1}"#], "the records before it are published");
    }

    #[tokio::test]
    async fn a_membership_record_s_outbox_is_published_and_a_members_row_publishes_nothing() {
        let bus = Arc::new(MemoryBus::default());
        let answer = RelayHandler::new(bus.clone())
            .handle(event(vec![
                members_record("100", "INSERT", Some("1")),
                members_record("200", "INSERT", None),
                members_record("300", "REMOVE", None),
            ]))
            .await;
        assert!(answer.batch_item_failures.is_empty());
        let published = bus.published.lock().unwrap().clone();
        let types: Vec<String> = published.iter().map(DomainEvent::detail_type).collect();
        assert_eq!(types, ["segment.entered"]);
        assert_eq!(details(&bus), [r#"{"segment_id":"gold","user_id":"u1","revision":1}"#]);
    }

    /// A deliveries table record: the delivery's history from `old` statuses to `new`.
    fn delivery_record(sequence: &str, old: &[&str], new: &[&str]) -> Value {
        let image = |statuses: &[&str]| {
            if statuses.is_empty() {
                return json!({});
            }
            let history: Vec<Value> = statuses
                .iter()
                .map(|s| json!({"M": {"status": {"S": s}, "at": {"S": "2026-12-02T10:00:00Z"}}}))
                .collect();
            json!({"delivery_id": {"S": "d_1"}, "notification_id": {"S": "n_1"}, "recipient": {"S": "ana"},
                "channel": {"S": "email"}, "status": {"S": statuses.last().unwrap()}, "history": {"L": history}})
        };
        json!({
            "eventID": format!("d{sequence}"),
            "eventName": if old.is_empty() { "INSERT" } else { "MODIFY" },
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/s-Deliveries/stream/2026-12-01T00:00:00.000",
            "dynamodb": {
                "ApproximateCreationDateTime": 1764547200.0,
                "Keys": {"delivery_id": {"S": "d_1"}},
                "NewImage": image(new),
                "OldImage": image(old),
                "SequenceNumber": sequence,
                "SizeBytes": 100,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            }
        })
    }

    #[tokio::test]
    async fn a_delivery_image_without_history_publishes_nothing_and_a_malformed_history_is_unreadable() {
        let bus = Arc::new(MemoryBus::default());
        // An image of the key alone (what moto's UpdateItem recorded before the item).
        let mut keys_only = delivery_record("100", &[], &["created"]);
        keys_only["dynamodb"]["NewImage"] = json!({"delivery_id": {"S": "d_1"}});
        let created = delivery_record("200", &[], &["created"]);
        let mut malformed = delivery_record("300", &["created"], &["created", "pending"]);
        malformed["dynamodb"]["NewImage"]["history"] = json!({"S": "not a history"});
        let ev = event(vec![keys_only, created, malformed]);
        let answer = RelayHandler::new(bus.clone()).handle(ev).await;
        let failed: Vec<_> = answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        assert_eq!(failed, [Some("300".to_owned())]);
        let published = bus.published.lock().unwrap().clone();
        assert_eq!(published.len(), 1, "only the created delivery's change");
    }

    #[tokio::test]
    async fn each_status_change_a_delivery_write_appended_is_published_once_in_order() {
        let bus = Arc::new(MemoryBus::default());
        let answer = RelayHandler::new(bus.clone())
            .handle(event(vec![
                delivery_record("100", &[], &["created"]),
                delivery_record("200", &["created"], &["created", "pending", "sent"]),
                // A write that appended nothing (an attribute set) publishes nothing.
                delivery_record("300", &["created", "pending", "sent"], &["created", "pending", "sent"]),
            ]))
            .await;
        assert!(answer.batch_item_failures.is_empty());
        let published = bus.published.lock().unwrap().clone();
        assert!(published.iter().all(|e| e.detail_type() == "delivery.status_changed"));
        let changes: Vec<(String, u64)> = published
            .iter()
            .map(|e| {
                let detail: Value = serde_json::from_str(&e.detail_json()).unwrap();
                (detail["status"].as_str().unwrap().to_owned(), detail["sequence"].as_u64().unwrap())
            })
            .collect();
        assert_eq!(changes, [("created".into(), 1), ("pending".into(), 2), ("sent".into(), 3)]);
    }
}
