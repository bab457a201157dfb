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
