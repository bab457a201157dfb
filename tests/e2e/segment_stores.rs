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
    let store = DynamoSegmentStore::new(clients.dynamodb.clone(), table);
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

    let get =
        |id: &str| clients.dynamodb.get_item().table_name(table).key("segment_id", AttributeValue::S(id.into())).send();
    let item = get("s1").await.unwrap().item.unwrap();
    assert_eq!(item["rule_json"], AttributeValue::S(rule.to_string()));
    assert!(!item.contains_key("rule"));
    let catalog = get("#catalog").await.unwrap().item.unwrap();
    assert_eq!(catalog["revision"], AttributeValue::N("1".into()));
}
