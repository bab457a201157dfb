//! `ApiKeyStore` and `ApiKeyCatalog`: a key round-trips by its hash; the catalog lists
//! every key, revoked ones too, and changes a key's revocation or expiry in place, never
//! creating one that is not there.

use chrono::{DateTime, Utc};
use herald_aws::DynamoApiKeyStore;
use herald_core::keys::{ApiKey, ApiKeyCatalog, Scope, memory::MemoryApiKeys, new_key};

contract!(api_key_catalog: memory_catalog, aws_catalog;
    a_key_round_trips_by_its_hash_with_its_expiry,
    a_hash_never_stored_is_found_as_none,
    the_list_holds_every_key_revoked_ones_too,
    a_revoked_key_is_read_back_revoked_and_otherwise_unchanged,
    a_new_expiry_is_read_back,
    revoking_or_expiring_a_key_not_stored_stores_nothing,
);

async fn memory_catalog() -> Box<dyn ApiKeyCatalog> {
    Box::new(MemoryApiKeys::default())
}

async fn aws_catalog() -> Box<dyn ApiKeyCatalog> {
    let (clients, tables) = super::moto_tables(&["ApiKeysTable"]).await;
    Box::new(DynamoApiKeyStore::new(clients.dynamodb(), &tables["ApiKeysTable"]))
}

/// A whole-second instant: what the table keeps is RFC 3339.
fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn key(secret: &str) -> ApiKey {
    ApiKey {
        created_at: at("2026-12-01T10:00:00Z"),
        ..new_key(secret, "ci", [Scope::ProfilesRead, Scope::EventsWrite])
    }
}

async fn a_key_round_trips_by_its_hash_with_its_expiry(keys: &dyn ApiKeyCatalog) {
    let stored = key("hk_one").expiring_at(at("2027-06-30T00:00:00Z"));
    keys.put(&stored).await.unwrap();
    assert_eq!(keys.find(&stored.key_hash).await.unwrap(), Some(stored));
}

async fn a_hash_never_stored_is_found_as_none(keys: &dyn ApiKeyCatalog) {
    assert_eq!(keys.find(&key("hk_never").key_hash).await.unwrap(), None);
}

async fn the_list_holds_every_key_revoked_ones_too(keys: &dyn ApiKeyCatalog) {
    let (one, two) = (key("hk_one"), key("hk_two"));
    keys.put(&one).await.unwrap();
    keys.put(&two).await.unwrap();
    keys.revoke(&two.key_hash, at("2026-12-01T11:00:00Z")).await.unwrap();
    let mut listed: Vec<String> = keys.list().await.unwrap().into_iter().map(|k| k.key_hash).collect();
    listed.sort();
    let mut expected = vec![one.key_hash, two.key_hash];
    expected.sort();
    assert_eq!(listed, expected);
}

async fn a_revoked_key_is_read_back_revoked_and_otherwise_unchanged(keys: &dyn ApiKeyCatalog) {
    let stored = key("hk_one");
    keys.put(&stored).await.unwrap();
    assert!(keys.revoke(&stored.key_hash, at("2026-12-01T11:00:00Z")).await.unwrap());
    let read = keys.find(&stored.key_hash).await.unwrap().unwrap();
    assert_eq!(read, ApiKey { revoked_at: Some(at("2026-12-01T11:00:00Z")), ..stored });
    assert_eq!(keys.list().await.unwrap(), vec![read]);
}

async fn a_new_expiry_is_read_back(keys: &dyn ApiKeyCatalog) {
    let stored = key("hk_one").expiring_at(at("2027-06-30T00:00:00Z"));
    keys.put(&stored).await.unwrap();
    assert!(keys.set_expiry(&stored.key_hash, at("2026-12-02T10:00:00Z")).await.unwrap());
    let read = keys.find(&stored.key_hash).await.unwrap().unwrap();
    assert_eq!(read, stored.expiring_at(at("2026-12-02T10:00:00Z")));
}

async fn revoking_or_expiring_a_key_not_stored_stores_nothing(keys: &dyn ApiKeyCatalog) {
    let absent = key("hk_absent");
    assert!(!keys.revoke(&absent.key_hash, at("2026-12-01T11:00:00Z")).await.unwrap());
    assert!(!keys.set_expiry(&absent.key_hash, at("2026-12-01T11:00:00Z")).await.unwrap());
    assert_eq!(keys.find(&absent.key_hash).await.unwrap(), None);
    assert!(keys.list().await.unwrap().is_empty());
}
