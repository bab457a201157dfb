//! The deliveries table's stream, as the relay reads it: every kind of write
//! `DynamoDeliveryStore` makes (a recorded delivery, one recorded if absent, claims that
//! create, claim, settle or are rate limited, outcomes retryable and final, feedback,
//! and the writes a condition refuses) leaves a whole delivery in each stream image, and
//! the relay reads every record back, publishing each status change once, in order.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use herald_aws::{DynamoDeliveryStore, RequestCounter};
use herald_core::{
    channel::Channel,
    delivery::{
        Claim, ClaimRequest, Delivery, DeliveryStatus, DeliveryStore, NewDelivery, RateLimitClaim, StatusChange,
        rate_limit::WindowKey,
    },
    events::{DomainEvent, memory::MemoryBus},
};
use serde_json::Value;

fn at(second: u32) -> DateTime<Utc> {
    format!("2026-05-01T10:00:{second:02}Z").parse().unwrap()
}

fn change(status: DeliveryStatus, second: u32, reason: Option<&str>) -> StatusChange {
    StatusChange { status, at: at(second), reason: reason.map(str::to_owned) }
}

fn claim(delivery_id: &str) -> ClaimRequest {
    ClaimRequest { delivery_id: delivery_id.to_owned(), settle: None, rate_limit: None, create: None }
}

/// A campaign's claim, recording the delivery if it is not there.
fn creating(delivery_id: &str, recipient: &str) -> ClaimRequest {
    let create = NewDelivery { notification_id: "c_1".into(), recipient: recipient.into(), channel: Channel::Email };
    ClaimRequest { create: Some(create), ..claim(delivery_id) }
}

fn limited(request: ClaimRequest, limit: u32) -> ClaimRequest {
    let window = WindowKey { key: "u#email#2026-05-01".into(), expires_at: 1_900_000_000 };
    let over = change(DeliveryStatus::RateLimited, 1, Some("rate limit"));
    ClaimRequest { rate_limit: Some(RateLimitClaim { window, limit, over }), ..request }
}

/// Every record of the table's stream, from its start.
async fn stream_records(
    clients: &herald_aws::Clients,
    table: &str,
) -> (String, Vec<aws_sdk_dynamodbstreams::types::Record>) {
    let streams = aws_sdk_dynamodbstreams::Client::new(&clients.sdk_config);
    let described = clients.dynamodb().describe_table().table_name(table).send().await.unwrap();
    let arn = described.table.and_then(|t| t.latest_stream_arn).expect("the deliveries table has a stream");
    let stream = streams.describe_stream().stream_arn(&arn).send().await.unwrap();
    let mut records = Vec::new();
    for shard in stream.stream_description.and_then(|d| d.shards).unwrap_or_default() {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id.unwrap())
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(current) = iterator {
            let read = streams.get_records().shard_iterator(current).send().await.unwrap();
            let got = read.records.unwrap_or_default();
            iterator = if got.is_empty() { None } else { read.next_shard_iterator };
            records.extend(got);
        }
    }
    (arn, records)
}

#[tokio::test]
async fn every_delivery_write_leaves_a_whole_item_the_relay_reads() {
    let clients = herald_e2e::tables::clients(&RequestCounter::default()).await;
    let tables = herald_e2e::tables::template_tables(&clients, &["DeliveriesTable", "RateLimitsTable"]).await;
    let store = DynamoDeliveryStore::new(clients.dynamodb(), &tables["DeliveriesTable"])
        .with_rate_limits(&tables["RateLimitsTable"])
        .with_receipt_lookup();
    use DeliveryStatus::*;

    // Recorded by the API: a batch, then one written if absent (twice: the second writes nothing).
    let ana = Delivery::new("n_1", "ana", Channel::Email, Created, None, at(0));
    let bob = Delivery::new("n_1", "bob", Channel::Email, Created, None, at(0));
    let direct = Delivery::new("n_1", "email:eve@example.com", Channel::Email, Created, None, at(0));
    store.create(&[ana.clone(), direct.clone()]).await.unwrap();
    assert!(store.create_if_absent(&bob).await.unwrap());
    assert!(!store.create_if_absent(&bob).await.unwrap());
    // A claim, a send, its provider's feedback; a move the statuses refuse writes nothing.
    assert_eq!(store.claim_all(&[limited(claim(&ana.delivery_id), 1)], at(1)).await.unwrap(), [Claim::Claimed]);
    store.finish(&ana.delivery_id, &change(Sent, 2, None), Some("ses"), Some("m-1"), false).await.unwrap();
    assert!(store.advance(&ana.delivery_id, &change(Delivered, 3, None)).await.unwrap());
    assert!(store.advance(&ana.delivery_id, &change(Opened, 4, None)).await.unwrap());
    assert!(!store.advance(&ana.delivery_id, &change(Delivered, 5, None)).await.unwrap());
    assert!(!store.advance(&ana.delivery_id, &change(Created, 5, None)).await.unwrap());
    // Rate limited: ana's claim filled the window, so bob's settles as the limit says.
    assert_eq!(
        store.claim_all(&[limited(claim(&bob.delivery_id), 1)], at(1)).await.unwrap(),
        [Claim::Settled(RateLimited)]
    );
    // A settle without sending (an unsubscribed user).
    let settle =
        ClaimRequest { settle: Some(change(Unsubscribed, 1, Some("unsubscribed"))), ..claim(&direct.delivery_id) };
    assert_eq!(store.claim_all(&[settle], at(1)).await.unwrap(), [Claim::Settled(Unsubscribed)]);
    // A campaign's claims create their deliveries; one settles as it creates.
    let (cid, did) = ("d_campaign_carl", "d_campaign_dan");
    assert_eq!(store.claim_all(&[creating(cid, "carl")], at(1)).await.unwrap(), [Claim::Claimed]);
    let unsubscribed = ClaimRequest { settle: Some(change(Unsubscribed, 1, None)), ..creating(did, "dan") };
    assert_eq!(store.claim_all(&[unsubscribed], at(1)).await.unwrap(), [Claim::Settled(Unsubscribed)]);
    // A redelivered job finds it in flight (a cancelled transaction writes nothing) ...
    assert_eq!(
        store.claim_all(&[limited(creating(cid, "carl"), 5)], at(2)).await.unwrap(),
        [Claim::InFlight { claimed_at: at(1) }]
    );
    // ... an interrupted send ends in a retryable error, is claimed again, ends final.
    store.finish(cid, &change(Error, 3, Some("interrupted")), None, None, true).await.unwrap();
    assert_eq!(store.claim_all(&[creating(cid, "carl")], at(4)).await.unwrap(), [Claim::Claimed]);
    store.finish(cid, &change(Error, 5, Some("refused")), Some("ses"), None, false).await.unwrap();
    assert_eq!(store.claim_all(&[creating(cid, "carl")], at(6)).await.unwrap(), [Claim::AlreadySettled(Error)]);
    // An outcome of a delivery nobody claimed writes nothing.
    assert!(store.finish(cid, &change(Sent, 7, None), None, None, false).await.is_err());

    let (arn, records) = stream_records(&clients, &tables["DeliveriesTable"]).await;
    let event: aws_lambda_events::dynamodb::Event =
        serde_json::from_value(herald_local::streams::lambda_event(&records, &arn)).unwrap();
    assert_eq!(event.records.len(), 14, "one record a write, none for a write refused");
    for record in &event.records {
        let read: Result<Delivery, _> = serde_dynamo::from_item(record.change.new_image.clone());
        assert!(
            read.is_ok(),
            "a write left an item that is not a whole delivery: {:?}: {read:?}",
            record.change.new_image
        );
    }
    let bus = Arc::new(MemoryBus::default());
    let answer = herald_relay::RelayHandler::new(bus.clone()).handle(event).await;
    assert!(answer.batch_item_failures.is_empty(), "the relay reads every record: {answer:?}");

    // Each delivery's every status change, published once, in order.
    let mut published: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for event in bus.published.lock().unwrap().iter() {
        assert_eq!(event.detail_type(), "delivery.status_changed");
        let detail: Value = serde_json::from_str(&DomainEvent::detail_json(event)).unwrap();
        published
            .entry(detail["delivery_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((detail["sequence"].as_u64().unwrap() as usize, detail["status"].as_str().unwrap().to_owned()));
    }
    for id in [&ana.delivery_id, &bob.delivery_id, &direct.delivery_id, &cid.to_owned(), &did.to_owned()] {
        let stored = store.get(id).await.unwrap().expect("the delivery is there");
        let expected: Vec<(usize, String)> =
            stored.history.iter().enumerate().map(|(i, c)| (i + 1, c.status.as_str().to_owned())).collect();
        assert_eq!(published.get(id.as_str()), Some(&expected), "{id}");
    }
    assert_eq!(published.len(), 5);
}

/// The relay as the local stack invokes it, counting the batches of the poisoned record alone.
struct Counting {
    relay: herald_relay::RelayHandler,
    poison: String,
    alone: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl herald_local::streams::StreamHandler for Counting {
    async fn handle(
        &self,
        event: aws_lambda_events::dynamodb::Event,
    ) -> aws_lambda_events::streams::DynamoDbEventResponse {
        let keys = |r: &aws_lambda_events::dynamodb::EventRecord| format!("{:?}", r.change.keys);
        if event.records.len() == 1 && keys(&event.records[0]).contains(&self.poison) {
            self.alone.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.relay.handle(event).await
    }
}

#[tokio::test]
async fn an_unreadable_record_goes_to_the_on_failure_queue_after_its_retries_and_the_shard_moves_on() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let clients = herald_e2e::tables::clients(&RequestCounter::default()).await;
    let tables = herald_e2e::tables::template_tables(&clients, &["DeliveriesTable"]).await;
    let table = &tables["DeliveriesTable"];
    let store = DynamoDeliveryStore::new(clients.dynamodb(), table);
    let sqs = clients.sqs();
    let queue = sqs.create_queue().queue_name(herald_e2e::tables::unique("relay-failure")).send().await.unwrap();
    let queue = queue.queue_url.unwrap();

    // A good write, one no Herald write leaves (its history is not a list of changes),
    // then good writes after it on the same shard.
    let ana = Delivery::new("n_1", "ana", Channel::Email, DeliveryStatus::Created, None, at(0));
    let bob = Delivery::new("n_1", "bob", Channel::Email, DeliveryStatus::Created, None, at(0));
    store.create(std::slice::from_ref(&ana)).await.unwrap();
    let poison = "d_poison";
    clients
        .dynamodb()
        .put_item()
        .table_name(table)
        .item("delivery_id", AttributeValue::S(poison.into()))
        .item("notification_id", AttributeValue::S("n_1".into()))
        .item("history", AttributeValue::S("not a history".into()))
        .send()
        .await
        .unwrap();
    store.create(std::slice::from_ref(&bob)).await.unwrap();
    assert_eq!(store.claim_all(&[claim(&ana.delivery_id)], at(1)).await.unwrap(), [Claim::Claimed]);

    let (arn, records) = stream_records(&clients, table).await;
    assert_eq!(records.len(), 4);
    let poison_sequence = records[1].dynamodb.as_ref().and_then(|d| d.sequence_number.clone()).unwrap();
    let source = herald_local::streams::StreamSource {
        function: "RelayFunction".into(),
        binary: Some("herald-relay".into()),
        stream_arn: arn,
        batch_size: 100,
        report_batch_item_failures: true,
        retry_delay: std::time::Duration::from_millis(20),
        timeout: std::time::Duration::from_secs(10),
        filters: Vec::new(),
        bisect_on_error: true,
        maximum_retry_attempts: Some(2),
        on_failure: Some(queue.clone()),
    };
    let bus = Arc::new(MemoryBus::default());
    let handler = Arc::new(Counting {
        relay: herald_relay::RelayHandler::new(bus.clone()),
        poison: poison.into(),
        alone: Default::default(),
    });
    let streams = aws_sdk_dynamodbstreams::Client::new(&clients.sdk_config);
    let (stopper, stop) = herald_local::esm::stop_signal();
    let poller = herald_local::streams::spawn_poller(streams, sqs.clone(), source, handler.clone(), stop);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bus.published.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let message = sqs.receive_message().queue_url(&queue).wait_time_seconds(5).send().await.unwrap();
    stopper.stop();
    tokio::time::timeout(std::time::Duration::from_secs(10), poller).await.expect("the poller stops").unwrap();

    let published: Vec<(String, String)> = bus
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|e| {
            let detail: Value = serde_json::from_str(&e.detail_json()).unwrap();
            (detail["delivery_id"].as_str().unwrap().to_owned(), detail["status"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [(&ana.delivery_id, "created"), (&bob.delivery_id, "created"), (&ana.delivery_id, "pending")]
        .map(|(id, status)| (id.clone(), status.to_owned()));
    assert_eq!(published, expected, "the writes after the unreadable one are published");
    assert_eq!(handler.alone.load(std::sync::atomic::Ordering::SeqCst), 3, "bisected to it alone, then retried twice");
    let messages = message.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let body: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    let info = &body["DDBStreamBatchInfo"];
    assert_eq!(
        (info["startSequenceNumber"].as_str(), info["endSequenceNumber"].as_str()),
        (Some(poison_sequence.as_str()), Some(poison_sequence.as_str()))
    );
    assert_eq!(info["batchSize"], 1);
    assert_eq!(body["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(body["requestContext"]["approximateInvokeCount"], 3);
}
