//! The profiles table as the DynamoDB adapter lays it out. What `ProfileStore` promises
//! (optimistic concurrency on the version, tombstones) is its contract: `contracts::profiles`.

use aws_sdk_dynamodb::types::AttributeValue;
use herald_aws::{DynamoProfileStore, RequestCounter};
use herald_core::profiles::{Profile, ProfileStore};
use herald_e2e::tables::{clients, template_tables};

#[tokio::test]
async fn a_tombstone_item_holds_only_the_id_the_version_and_the_erased_mark() {
    let clients = clients(&RequestCounter::default()).await;
    let tables = template_tables(&clients, &["ProfilesTable"]).await;
    let table = &tables["ProfilesTable"];
    let store = DynamoProfileStore::new(clients.dynamodb(), table);
    store
        .save(&Profile { version: 1, email: Some("a@example.com".into()), ..Profile::new("u1") }, 0, &[])
        .await
        .unwrap();
    store.erase("u1", 2, 1, &[]).await.unwrap();

    let item = clients.dynamodb().get_item().table_name(table).key("user_id", AttributeValue::S("u1".into())).send();
    let item = item.await.unwrap().item.unwrap();

    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["erased", "user_id", "version"]);
    assert_eq!(item["version"], AttributeValue::N("2".into()));
    assert_eq!(item["erased"], AttributeValue::Bool(true));
}
