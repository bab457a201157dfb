//! The local stack refuses what AWS refuses (scripts/moto_patches.py): each of AWS's
//! limits that Herald packs its requests by, sent at the limit (accepted) and one past it
//! (refused with AWS's status and error code), through the Rust SDK and through boto3.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    types::{
        AttributeValue, BillingMode, KeyType, KeysAndAttributes, Put, PutRequest, TransactWriteItem, WriteRequest,
    },
};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use herald_aws::{Clients, RequestCounter};
use herald_core::limits::{dynamodb, eventbridge};
use herald_e2e::tables::{clients, key, string_attribute, unique};

/// The HTTP status and error code of a refused request.
fn refusal<E: ProvideErrorMetadata>(error: SdkError<E>) -> (u16, String) {
    let status = error.raw_response().map(|r| r.status().as_u16()).unwrap_or_default();
    (status, error.as_service_error().and_then(|e| e.code()).unwrap_or_default().to_owned())
}

fn validation_exception() -> (u16, String) {
    (400, "ValidationException".to_owned())
}

async fn table(clients: &Clients) -> String {
    let name = unique("limits");
    clients
        .dynamodb()
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("pk"))
        .key_schema(key("pk", KeyType::Hash))
        .send()
        .await
        .expect("a table");
    name
}

type Item = HashMap<String, AttributeValue>;

/// An item under `pk` whose size, as DynamoDB counts it (names and values), is `bytes`.
fn item_of(pk: &str, bytes: usize) -> Item {
    let body = bytes - ("pk".len() + pk.len() + "body".len());
    HashMap::from([("pk".into(), AttributeValue::S(pk.into())), ("body".into(), AttributeValue::S("x".repeat(body)))])
}

fn key_of(pk: &str) -> Item {
    HashMap::from([("pk".into(), AttributeValue::S(pk.into()))])
}

const SOURCE: &str = "herald.limits";
const DETAIL_TYPE: &str = "limit.checked";

/// A PutEvents entry whose size, as EventBridge counts it, is `bytes`.
fn entry_of(bytes: usize) -> PutEventsRequestEntry {
    let detail = format!(
        r#"{{"pad":"{}"}}"#,
        "x".repeat(bytes - eventbridge::entry_bytes(SOURCE, DETAIL_TYPE, r#"{"pad":""}"#))
    );
    assert_eq!(eventbridge::entry_bytes(SOURCE, DETAIL_TYPE, &detail), bytes);
    PutEventsRequestEntry::builder().source(SOURCE).detail_type(DETAIL_TYPE).detail(detail).build()
}

/// `count` entries of `total` bytes together.
fn entries_of(count: usize, total: usize) -> Vec<PutEventsRequestEntry> {
    (0..count).map(|i| entry_of(total / count + usize::from(i < total % count))).collect()
}

#[tokio::test]
async fn put_events_takes_ten_entries_and_refuses_eleven() {
    let clients = clients(&RequestCounter::default()).await;
    let put = |entries| clients.eventbridge().put_events().set_entries(Some(entries)).send();

    let accepted = put(entries_of(eventbridge::PUT_EVENTS_ENTRIES, 1000)).await.expect("ten entries are accepted");
    assert_eq!(accepted.failed_entry_count, 0);
    let refused = put(entries_of(eventbridge::PUT_EVENTS_ENTRIES + 1, 1000)).await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
}

#[tokio::test]
async fn put_events_takes_one_mebibyte_of_entries_and_refuses_a_byte_more() {
    let clients = clients(&RequestCounter::default()).await;
    let put = |entries| clients.eventbridge().put_events().set_entries(Some(entries)).send();
    let (count, limit) = (eventbridge::PUT_EVENTS_ENTRIES, eventbridge::PUT_EVENTS_BYTES);

    let accepted = put(entries_of(count, limit)).await.expect("1 MB in ten entries is accepted");
    assert_eq!(accepted.failed_entry_count, 0);
    let refused = put(entries_of(count, limit + 1)).await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
}

#[tokio::test]
async fn put_events_reports_an_entry_whose_detail_is_not_json_as_malformed() {
    let clients = clients(&RequestCounter::default()).await;
    let entry = PutEventsRequestEntry::builder().source(SOURCE).detail_type(DETAIL_TYPE).detail("{not json").build();
    let answer = clients.eventbridge().put_events().entries(entry).send().await.expect("the request is taken");
    assert_eq!(answer.failed_entry_count, 1);
    assert_eq!(answer.entries()[0].error_code(), Some("MalformedDetail"));
}

#[tokio::test]
async fn put_item_takes_an_item_of_400_kb_and_refuses_a_byte_more() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    let put = |item| clients.dynamodb().put_item().table_name(&table).set_item(Some(item)).send();

    put(item_of("at", dynamodb::ITEM_BYTES)).await.expect("400 KB is accepted");
    let refused = put(item_of("over", dynamodb::ITEM_BYTES + 1)).await.unwrap_err();
    assert!(refused.as_service_error().and_then(|e| e.message()).unwrap().contains("Item size has exceeded"));
    assert_eq!(refusal(refused), validation_exception());
}

#[tokio::test]
async fn a_list_counts_its_overhead_against_the_item_size() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    // One string in a list: 3 bytes for the list and 1 for its member, as AWS counts it.
    let mut item = item_of("listed", dynamodb::ITEM_BYTES - 4);
    let AttributeValue::S(body) = item.remove("body").unwrap() else { unreachable!() };
    item.insert("body".into(), AttributeValue::L(vec![AttributeValue::S(body.clone())]));
    clients.dynamodb().put_item().table_name(&table).set_item(Some(item.clone())).send().await.expect("at the limit");

    item.insert("body".into(), AttributeValue::L(vec![AttributeValue::S(format!("{body}x"))]));
    let refused = clients.dynamodb().put_item().table_name(&table).set_item(Some(item)).send().await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
}

#[tokio::test]
async fn update_item_refuses_an_update_that_makes_the_item_over_400_kb() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    clients
        .dynamodb()
        .put_item()
        .table_name(&table)
        .set_item(Some(item_of("u", dynamodb::ITEM_BYTES - 6)))
        .send()
        .await
        .unwrap();
    let update = |value: &str| {
        clients
            .dynamodb()
            .update_item()
            .table_name(&table)
            .set_key(Some(key_of("u")))
            .update_expression("SET more = :v")
            .expression_attribute_values(":v", AttributeValue::S(value.into()))
            .send()
    };

    update("xx").await.expect("an update to exactly 400 KB is accepted");
    let refused = update("xxx").await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
}

fn put_request(item: Item) -> WriteRequest {
    WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
}

#[tokio::test]
async fn batch_write_item_takes_25_requests_and_refuses_26() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    let write = |n: usize, prefix: &'static str| {
        let requests = (0..n).map(|i| put_request(key_of(&format!("{prefix}{i}")))).collect();
        clients.dynamodb().batch_write_item().request_items(&table, requests).send()
    };

    write(dynamodb::BATCH_WRITE_REQUESTS, "a").await.expect("25 requests are accepted");
    let refused = write(dynamodb::BATCH_WRITE_REQUESTS + 1, "b").await.unwrap_err();
    assert!(refused.as_service_error().and_then(|e| e.message()).unwrap().contains("Too many items requested"));
    assert_eq!(refusal(refused), validation_exception());
    let b0 = clients.dynamodb().get_item().table_name(&table).set_key(Some(key_of("b0"))).send().await.unwrap();
    assert!(b0.item.is_none(), "a refused batch writes nothing");
}

#[tokio::test]
async fn batch_write_item_with_an_item_over_400_kb_is_refused_whole() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    let requests = vec![put_request(key_of("first")), put_request(item_of("big", dynamodb::ITEM_BYTES + 1))];

    let refused = clients.dynamodb().batch_write_item().request_items(&table, requests).send().await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
    let first = clients.dynamodb().get_item().table_name(&table).set_key(Some(key_of("first"))).send().await.unwrap();
    assert!(first.item.is_none(), "nothing of a refused batch is written");
}

#[tokio::test]
async fn batch_get_item_takes_100_keys_and_refuses_101() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    let get = |n: usize| {
        let keys = KeysAndAttributes::builder()
            .set_keys(Some((0..n).map(|i| key_of(&format!("k{i}"))).collect()))
            .build()
            .unwrap();
        clients.dynamodb().batch_get_item().request_items(&table, keys).send()
    };

    get(dynamodb::BATCH_GET_KEYS).await.expect("100 keys are accepted");
    let refused = get(dynamodb::BATCH_GET_KEYS + 1).await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
}

fn transact_put(table: &str, item: Item) -> TransactWriteItem {
    TransactWriteItem::builder().put(Put::builder().table_name(table).set_item(Some(item)).build().unwrap()).build()
}

#[tokio::test]
async fn transact_write_items_takes_100_actions_and_refuses_101() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    let transact = |n: usize, prefix: &'static str| {
        let items = (0..n).map(|i| transact_put(&table, key_of(&format!("{prefix}{i}")))).collect();
        clients.dynamodb().transact_write_items().set_transact_items(Some(items)).send()
    };

    transact(dynamodb::TRANSACT_ITEMS, "a").await.expect("100 actions are accepted");
    let refused = transact(dynamodb::TRANSACT_ITEMS + 1, "b").await.unwrap_err();
    assert!(refused.as_service_error().and_then(|e| e.message()).unwrap().contains("less than or equal to 100"));
    assert_eq!(refusal(refused), validation_exception());
}

#[tokio::test]
async fn transact_write_items_takes_4_mb_of_items_and_refuses_a_byte_more() {
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    let transact = |total: usize, prefix: &'static str| {
        // Ten items of 400,000 bytes (the last one a byte bigger past the limit).
        let items = (0..10)
            .map(|i| {
                let pk = format!("{prefix}{i}");
                let bytes = total / 10 + usize::from(i < total % 10);
                transact_put(&table, item_of(&pk, bytes))
            })
            .collect();
        clients.dynamodb().transact_write_items().set_transact_items(Some(items)).send()
    };

    transact(dynamodb::TRANSACT_BYTES, "a").await.expect("4,000,000 bytes of items are accepted");
    let refused = transact(dynamodb::TRANSACT_BYTES + 1, "b").await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
}

#[tokio::test]
async fn transact_get_items_takes_100_items_and_refuses_101() {
    use aws_sdk_dynamodb::types::{Get, TransactGetItem};
    let clients = clients(&RequestCounter::default()).await;
    let table = table(&clients).await;
    let get = |n: usize| {
        let items = (0..n)
            .map(|i| {
                let get = Get::builder().table_name(&table).set_key(Some(key_of(&format!("k{i}")))).build().unwrap();
                TransactGetItem::builder().get(get).build()
            })
            .collect();
        clients.dynamodb().transact_get_items().set_transact_items(Some(items)).send()
    };

    get(dynamodb::TRANSACT_ITEMS).await.expect("100 items are accepted");
    let refused = get(dynamodb::TRANSACT_ITEMS + 1).await.unwrap_err();
    assert_eq!(refusal(refused), validation_exception());
}

/// boto3 (the venv's, beside moto) sends PutEvents of ten entries of `total` bytes and
/// prints "accepted" or the refusal's status and code.
fn boto3_put_events(total: usize) -> String {
    const SCRIPT: &str = r#"
import json, os, sys
import boto3, botocore.exceptions
total = int(sys.argv[1])
events = boto3.client("events", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
source, detail_type, empty = "herald.limits", "limit.checked", json.dumps({"pad": ""})
sizes = [total // 10 + (1 if i < total % 10 else 0) for i in range(10)]
entries = [{"Source": source, "DetailType": detail_type,
            "Detail": json.dumps({"pad": "x" * (size - len(source) - len(detail_type) - len(empty))})} for size in sizes]
try:
    events.put_events(Entries=entries)
    print("accepted")
except botocore.exceptions.ClientError as e:
    print(e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])
"#;
    let python = herald_local::repo_root().join(".venv/bin/python");
    let output = std::process::Command::new(python)
        .args(["-c", SCRIPT, &total.to_string()])
        .output()
        .expect("the venv's python runs (scripts/python-env)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn boto3_is_refused_an_oversized_put_events_as_aws_refuses_it() {
    assert_eq!(boto3_put_events(eventbridge::PUT_EVENTS_BYTES), "accepted");
    assert_eq!(boto3_put_events(eventbridge::PUT_EVENTS_BYTES + 1), "400 ValidationException");
}
