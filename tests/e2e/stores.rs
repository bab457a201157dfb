//! The DynamoDB adapters against moto: optimistic concurrency is the store's, not the API's.

use herald_aws::DynamoProfileStore;
use herald_core::{
    profiles::{Profile, ProfileStore, StoredProfile},
    store::StoreError,
};
use herald_e2e::start_stack;

fn store(stack: &herald_local::LocalStack) -> DynamoProfileStore {
    DynamoProfileStore::new(stack.clients.dynamodb.clone(), &stack.api_config.profiles_table)
}

fn profile(version: u64, email: &str) -> Profile {
    Profile { version, email: Some(email.into()), ..Profile::new("u1") }
}

#[tokio::test]
async fn a_save_with_a_stale_version_is_a_conflict_and_changes_nothing() {
    let stack = start_stack().await;
    let store = store(&stack);
    store.save(&profile(1, "first@example.com"), 0).await.unwrap();
    store.save(&profile(2, "second@example.com"), 1).await.unwrap();
    let stale = store.save(&profile(2, "stale@example.com"), 1).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let stored = store.load("u1").await.unwrap().unwrap();
    assert_eq!(stored.profile.unwrap().email.as_deref(), Some("second@example.com"));
    stack.stop().await;
}

#[tokio::test]
async fn creating_a_profile_that_exists_is_a_conflict() {
    let stack = start_stack().await;
    let store = store(&stack);
    store.save(&profile(1, "first@example.com"), 0).await.unwrap();
    assert!(matches!(store.save(&profile(1, "again@example.com"), 0).await, Err(StoreError::Conflict)));
    stack.stop().await;
}

#[tokio::test]
async fn a_profile_round_trips_through_the_table() {
    let stack = start_stack().await;
    let store = store(&stack);
    let mut p = profile(1, "a@example.com");
    p.attributes.insert("tags".into(), ["1".to_owned(), "11".to_owned()].into());
    p.updated_at = chrono::Utc::now();
    store.save(&p, 0).await.unwrap();
    assert_eq!(store.load("u1").await.unwrap(), Some(StoredProfile { version: 1, profile: Some(p) }));
    stack.stop().await;
}

#[tokio::test]
async fn an_erased_profile_keeps_only_its_version() {
    let stack = start_stack().await;
    let store = store(&stack);
    store.save(&profile(1, "a@example.com"), 0).await.unwrap();
    store.erase("u1", 2, 1).await.unwrap();
    assert_eq!(store.load("u1").await.unwrap(), Some(StoredProfile { version: 2, profile: None }));
    assert_eq!(store.load("nobody").await.unwrap(), None);
    stack.stop().await;
}
