//! The segments table as the DynamoDB adapter lays it out. What `ActivityStore`,
//! `SegmentStore`, `MembershipStore` and `ProfileScan` promise is their contract:
//! `contracts::{activity, segments, profiles}`, run against the in-memory stores too.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use herald_aws::{DynamoSegmentStore, RequestCounter};
use herald_core::segments::{Backfill, Segment, SegmentKind, SegmentState, SegmentStore};
use herald_e2e::tables::{clients, template_tables};
use serde_json::json;

#[tokio::test]
async fn the_rule_is_kept_as_json_text_and_the_catalog_revision_in_an_item_of_its_own() {
    let clients = clients(&RequestCounter::default()).await;
    let tables = template_tables(&clients, &["SegmentsTable"]).await;
    let table = &tables["SegmentsTable"];
    let store = DynamoSegmentStore::new(clients.dynamodb(), table);
    let now = Utc::now();
    let rule = json!({"attribute": "plan", "in": ["pro"], "weights": [1.0, 2.5]});
    let segment = Segment {
        segment_id: "s1".into(),
        name: "Pro".into(),
        description: None,
        kind: SegmentKind::Dynamic,
        rule: Some(rule.clone()),
        reads: Default::default(),
        version: 1,
        state: SegmentState::Backfilling,
        backfill: Backfill { parts: 1, started_at: Some(now), ..Default::default() },
        created_at: now,
        updated_at: now,
    };
    store.create(&segment).await.unwrap();

    let get = |id: &str| {
        clients.dynamodb().get_item().table_name(table).key("segment_id", AttributeValue::S(id.into())).send()
    };
    let item = get("s1").await.unwrap().item.unwrap();
    assert_eq!(item["rule_json"], AttributeValue::S(rule.to_string()));
    assert!(!item.contains_key("rule"));
    let catalog = get("#catalog").await.unwrap().item.unwrap();
    assert_eq!(catalog["revision"], AttributeValue::N("1".into()));
}

/// A record written before memberships had an outbox, its `pending` never published: read
/// as `legacy_pending`, and the next write (which replaces the item) leaves no `pending`
/// and carries what it is given in its outbox.
#[tokio::test]
async fn a_legacy_pending_list_is_read_and_gone_after_the_next_write() {
    use herald_aws::DynamoMembershipStore;
    use herald_core::{
        events::{DomainEvent, MembershipChange, Outbox},
        segments::{MembershipStore, MembershipWrite},
    };

    let clients = clients(&RequestCounter::default()).await;
    let tables = template_tables(&clients, &["MembersTable", "ProfilesTable", "ActivityTable"]).await;
    let table = &tables["MembersTable"];
    let store =
        DynamoMembershipStore::new(clients.dynamodb(), table, &tables["ProfilesTable"], &tables["ActivityTable"]);
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let legacy = MembershipChange { segment_id: "a".into(), user_id: "u1".into(), entered: true, revision: 1, at };
    let key = |item: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder| {
        item.item("pk", AttributeValue::S("user#u1".into())).item("sk", AttributeValue::S("segments".into()))
    };
    key(clients.dynamodb().put_item().table_name(table))
        .item("revision", AttributeValue::N("1".into()))
        .item("segments", AttributeValue::L(vec![AttributeValue::S("a".into())]))
        .item("pending", serde_dynamo::to_attribute_value(vec![legacy.clone()]).unwrap())
        .send()
        .await
        .unwrap();

    let record = store.user_segments("u1").await.unwrap();
    assert_eq!((record.revision, record.legacy_pending.clone()), (1, vec![legacy.clone()]));

    let write = MembershipWrite {
        user_id: "u1".into(),
        expected_revision: 1,
        segments: record.segments,
        entered: Vec::new(),
        exited: Vec::new(),
        outbox: record.legacy_pending,
        guard: None,
    };
    store.write(&write).await.unwrap();

    let item = clients
        .dynamodb()
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S("user#u1".into()))
        .key("sk", AttributeValue::S("segments".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!item.contains_key("pending"));
    let outbox: Outbox = serde_dynamo::from_attribute_value(item["outbox"].clone()).unwrap();
    assert_eq!(outbox, Outbox::new("2", &[DomainEvent::Membership(legacy)]));
    assert!(store.user_segments("u1").await.unwrap().legacy_pending.is_empty());
}
