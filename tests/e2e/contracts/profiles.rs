//! `ProfileStore` and `ProfileScan`: optimistic concurrency on the version, tombstones that
//! keep the version, batched conditional saves, and a scan in parts that sees every profile
//! once.

use std::{collections::BTreeMap, sync::Arc};

use herald_aws::DynamoProfileStore;
use herald_core::{
    profiles::{Profile, ProfileScan, ProfileStore, StoredProfile, VersionedProfile, memory::MemoryProfiles},
    store::StoreError,
};

contract!(profile_store: memory_store, aws_store;
    a_profile_round_trips_through_the_store,
    a_user_never_seen_loads_as_none,
    a_save_with_a_stale_version_is_a_conflict_and_changes_nothing,
    creating_a_profile_that_exists_is_a_conflict,
    an_erased_profile_keeps_only_its_version,
    an_erase_with_a_stale_version_is_a_conflict,
    a_profile_saved_over_its_tombstone_lives_again,
    load_many_returns_profiles_and_tombstones_and_omits_users_never_seen,
    save_many_saves_new_and_existing_profiles_and_reports_a_stale_version_as_not_saved,
    save_many_reports_a_record_created_meanwhile_as_not_saved,
    save_many_of_one_user_twice_at_one_version_saves_exactly_one,
    save_many_of_nothing_saves_nothing,
);

contract!(profile_scan: memory_scan, aws_scan;
    a_profile_scan_over_four_parts_returns_every_profile_once_with_tombstones,
);

async fn memory_store() -> Box<dyn ProfileStore> {
    Box::new(MemoryProfiles::default())
}

async fn aws_store() -> Box<dyn ProfileStore> {
    Box::new(aws_profiles().await)
}

async fn aws_profiles() -> DynamoProfileStore {
    let (clients, tables) = super::moto_tables(&["ProfilesTable"]).await;
    DynamoProfileStore::new(clients.dynamodb(), &tables["ProfilesTable"])
}

/// A store and the scan over what it holds.
struct Scanned {
    store: Arc<dyn ProfileStore>,
    scan: Arc<dyn ProfileScan>,
}

async fn memory_scan() -> Box<Scanned> {
    let profiles = Arc::new(MemoryProfiles::default());
    Box::new(Scanned { store: profiles.clone(), scan: profiles })
}

async fn aws_scan() -> Box<Scanned> {
    let profiles = Arc::new(aws_profiles().await);
    Box::new(Scanned { store: profiles.clone(), scan: profiles })
}

fn profile(version: u64, email: &str) -> Profile {
    Profile { version, email: Some(email.into()), ..Profile::new("u1") }
}

fn profile_of(user_id: &str, version: u64) -> Profile {
    Profile { version, email: Some(format!("{user_id}@example.com")), ..Profile::new(user_id) }
}

fn write(user_id: &str, version: u64, expected_version: u64) -> VersionedProfile {
    VersionedProfile { profile: profile_of(user_id, version), expected_version }
}

async fn a_profile_round_trips_through_the_store(store: &dyn ProfileStore) {
    let mut p = profile(1, "a@example.com");
    p.attributes.insert("tags".into(), ["1".to_owned(), "11".to_owned()].into());
    p.updated_at = chrono::Utc::now();
    store.save(&p, 0, &[]).await.unwrap();
    assert_eq!(store.load("u1").await.unwrap(), Some(StoredProfile { version: 1, profile: Some(p) }));
}

async fn a_user_never_seen_loads_as_none(store: &dyn ProfileStore) {
    assert_eq!(store.load("nobody").await.unwrap(), None);
}

async fn a_save_with_a_stale_version_is_a_conflict_and_changes_nothing(store: &dyn ProfileStore) {
    store.save(&profile(1, "first@example.com"), 0, &[]).await.unwrap();
    store.save(&profile(2, "second@example.com"), 1, &[]).await.unwrap();
    let stale = store.save(&profile(2, "stale@example.com"), 1, &[]).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let stored = store.load("u1").await.unwrap().unwrap();
    assert_eq!(stored.profile.unwrap().email.as_deref(), Some("second@example.com"));
}

async fn creating_a_profile_that_exists_is_a_conflict(store: &dyn ProfileStore) {
    store.save(&profile(1, "first@example.com"), 0, &[]).await.unwrap();
    assert!(matches!(store.save(&profile(1, "again@example.com"), 0, &[]).await, Err(StoreError::Conflict)));
    // Nor may a first save name a version the store never had.
    assert!(matches!(store.save(&Profile::new("u2"), 3, &[]).await, Err(StoreError::Conflict)));
    assert_eq!(store.load("u2").await.unwrap(), None);
}

async fn an_erased_profile_keeps_only_its_version(store: &dyn ProfileStore) {
    store.save(&profile(1, "a@example.com"), 0, &[]).await.unwrap();
    store.erase("u1", 2, 1, &[]).await.unwrap();
    assert_eq!(store.load("u1").await.unwrap(), Some(StoredProfile { version: 2, profile: None }));
    assert_eq!(store.load("nobody").await.unwrap(), None);
}

async fn an_erase_with_a_stale_version_is_a_conflict(store: &dyn ProfileStore) {
    store.save(&profile(1, "a@example.com"), 0, &[]).await.unwrap();
    store.save(&profile(2, "b@example.com"), 1, &[]).await.unwrap();
    assert!(matches!(store.erase("u1", 2, 1, &[]).await, Err(StoreError::Conflict)));
    assert!(matches!(store.erase("nobody", 1, 1, &[]).await, Err(StoreError::Conflict)));
    assert_eq!(store.load("u1").await.unwrap().unwrap().profile.unwrap().email.as_deref(), Some("b@example.com"));
    assert_eq!(store.load("nobody").await.unwrap(), None);
}

async fn a_profile_saved_over_its_tombstone_lives_again(store: &dyn ProfileStore) {
    store.save(&profile(1, "a@example.com"), 0, &[]).await.unwrap();
    store.erase("u1", 2, 1, &[]).await.unwrap();
    assert!(matches!(store.save(&profile(1, "new@example.com"), 0, &[]).await, Err(StoreError::Conflict)));
    store.save(&profile(3, "new@example.com"), 2, &[]).await.unwrap();
    assert_eq!(
        store.load("u1").await.unwrap(),
        Some(StoredProfile { version: 3, profile: Some(profile(3, "new@example.com")) })
    );
}

async fn load_many_returns_profiles_and_tombstones_and_omits_users_never_seen(store: &dyn ProfileStore) {
    store.save(&profile_of("a", 1), 0, &[]).await.unwrap();
    store.save(&profile_of("b", 1), 0, &[]).await.unwrap();
    store.erase("b", 2, 1, &[]).await.unwrap();
    let asked = ["a".to_owned(), "b".to_owned(), "never".to_owned(), "a".to_owned()];
    let loaded = store.load_many(&asked).await.unwrap();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert_eq!(loaded["a"], StoredProfile { version: 1, profile: Some(profile_of("a", 1)) });
    assert_eq!(loaded["b"], StoredProfile { version: 2, profile: None });
    assert!(store.load_many(&[]).await.unwrap().is_empty());
}

async fn save_many_saves_new_and_existing_profiles_and_reports_a_stale_version_as_not_saved(store: &dyn ProfileStore) {
    store.save(&profile_of("existing", 1), 0, &[]).await.unwrap();
    store.save(&profile_of("raced", 2), 0, &[]).await.unwrap();

    let saved = store
        .save_many(&[write("existing", 2, 1), write("raced", 2, 1), write("new", 1, 0), write("other", 1, 0)])
        .await
        .unwrap();

    assert_eq!(saved, [true, false, true, true]);
    assert_eq!(store.load("existing").await.unwrap().unwrap().profile, Some(profile_of("existing", 2)));
    assert_eq!(store.load("new").await.unwrap().unwrap().profile, Some(profile_of("new", 1)));
    assert_eq!(store.load("other").await.unwrap().unwrap().profile, Some(profile_of("other", 1)));
    // The stale write left the stored profile alone.
    assert_eq!(store.load("raced").await.unwrap().unwrap().version, 2);
}

async fn save_many_reports_a_record_created_meanwhile_as_not_saved(store: &dyn ProfileStore) {
    store.save(&profile_of("u1", 1), 0, &[]).await.unwrap();

    let saved = store.save_many(&[write("u1", 1, 0)]).await.unwrap();

    assert_eq!(saved, [false]);
}

async fn save_many_of_one_user_twice_at_one_version_saves_exactly_one(store: &dyn ProfileStore) {
    let mut second = write("twice", 1, 0);
    second.profile.email = Some("second@example.com".into());

    let saved = store.save_many(&[write("twice", 1, 0), second]).await.unwrap();

    assert_eq!(saved.iter().filter(|s| **s).count(), 1, "{saved:?}");
}

async fn save_many_of_nothing_saves_nothing(store: &dyn ProfileStore) {
    assert_eq!(store.save_many(&[]).await.unwrap(), Vec::<bool>::new());
}

async fn a_profile_scan_over_four_parts_returns_every_profile_once_with_tombstones(subject: &Scanned) {
    let ids: Vec<String> = (0..30).map(|i| format!("p{i:02}")).collect();
    for id in &ids {
        subject.store.save(&profile_of(id, 1), 0, &[]).await.unwrap();
    }
    subject.store.erase("p07", 2, 1, &[]).await.unwrap();

    let mut seen: BTreeMap<String, StoredProfile> = BTreeMap::new();
    let mut pages = 0;
    for part in 0..4 {
        let mut cursor: Option<String> = None;
        loop {
            let page = subject.scan.scan_page(part, 4, cursor.as_deref(), 4).await.unwrap();
            pages += 1;
            assert!(page.profiles.len() <= 4);
            for (id, stored) in page.profiles {
                assert!(seen.insert(id.clone(), stored).is_none(), "{id} came twice");
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(pages < 100, "the scan never ends");
        }
    }
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ids);
    assert_eq!(seen["p07"], StoredProfile { version: 2, profile: None });
    assert_eq!(seen["p08"].profile.as_ref().unwrap().email.as_deref(), Some("p08@example.com"));
    assert!(pages > 4, "pages of at most 4 profiles");
}
