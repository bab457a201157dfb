//! `NotificationStore`: an idempotency key names one notification, with the hash of the
//! request that made it, until it expires; it says whether that notification was fully
//! accepted.

use chrono::{DateTime, Duration, TimeZone, Utc};
use herald_aws::DynamoNotificationStore;
use herald_core::notifications::{KeyClaim, NotificationStore, Reservation, memory::MemoryNotifications};

contract!(notification_store: memory_store, aws_store;
    a_new_key_is_reserved_for_its_notification,
    a_key_reserved_before_names_its_first_notification_and_request,
    a_completed_key_says_so,
    completing_a_key_twice_is_harmless,
    an_expired_key_is_reserved_anew,
    a_key_expiring_at_the_claim_second_is_expired,
);

async fn memory_store() -> Box<dyn NotificationStore> {
    Box::new(MemoryNotifications::default())
}

async fn aws_store() -> Box<dyn NotificationStore> {
    let (clients, tables) = super::moto_tables(&["NotificationsTable"]).await;
    Box::new(DynamoNotificationStore::new(clients.dynamodb(), &tables["NotificationsTable"]))
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// A claim of `id` for request `hash` at `t0 + at` seconds, holding for a day.
fn claim(id: &str, hash: &str, at: i64) -> KeyClaim {
    let now = t0() + Duration::seconds(at);
    KeyClaim { notification_id: id.into(), request_hash: hash.into(), now, expires_at: now + Duration::hours(24) }
}

fn existing(id: &str, hash: &str, complete: bool) -> Reservation {
    Reservation::Existing { notification_id: id.into(), request_hash: hash.into(), complete }
}

async fn a_new_key_is_reserved_for_its_notification(store: &dyn NotificationStore) {
    assert_eq!(store.reserve("k1", &claim("n1", "h1", 0)).await.unwrap(), Reservation::New);
    assert_eq!(
        store.reserve("k2", &claim("n2", "h1", 0)).await.unwrap(),
        Reservation::New,
        "another key is another reservation"
    );
}

async fn a_key_reserved_before_names_its_first_notification_and_request(store: &dyn NotificationStore) {
    store.reserve("k1", &claim("n1", "h1", 0)).await.unwrap();

    let again = store.reserve("k1", &claim("n2", "h2", 60)).await.unwrap();

    assert_eq!(again, existing("n1", "h1", false));
    assert_eq!(store.reserve("k1", &claim("n3", "h1", 120)).await.unwrap(), again);
}

async fn a_completed_key_says_so(store: &dyn NotificationStore) {
    store.reserve("k1", &claim("n1", "h1", 0)).await.unwrap();
    store.reserve("k2", &claim("n2", "h2", 0)).await.unwrap();

    store.complete("k1").await.unwrap();

    assert_eq!(store.reserve("k1", &claim("n9", "h1", 1)).await.unwrap(), existing("n1", "h1", true));
    assert_eq!(store.reserve("k2", &claim("n9", "h2", 1)).await.unwrap(), existing("n2", "h2", false));
}

async fn completing_a_key_twice_is_harmless(store: &dyn NotificationStore) {
    store.reserve("k1", &claim("n1", "h1", 0)).await.unwrap();
    store.complete("k1").await.unwrap();
    store.complete("k1").await.unwrap();
    assert_eq!(store.reserve("k1", &claim("n2", "h1", 1)).await.unwrap(), existing("n1", "h1", true));
}

async fn an_expired_key_is_reserved_anew(store: &dyn NotificationStore) {
    store.reserve("k1", &claim("n1", "h1", 0)).await.unwrap();
    store.complete("k1").await.unwrap();
    let a_day_later = 24 * 3600 + 1;

    // The record is still there (TTL deletes lazily), and still counts as gone.
    assert_eq!(store.reserve("k1", &claim("n2", "h2", a_day_later)).await.unwrap(), Reservation::New);

    assert_eq!(
        store.reserve("k1", &claim("n3", "h1", a_day_later + 1)).await.unwrap(),
        existing("n2", "h2", false),
        "the new claim holds the key, not yet complete"
    );
}

async fn a_key_expiring_at_the_claim_second_is_expired(store: &dyn NotificationStore) {
    store.reserve("k1", &claim("n1", "h1", 0)).await.unwrap();
    assert_eq!(store.reserve("k1", &claim("n2", "h1", 24 * 3600 - 1)).await.unwrap(), existing("n1", "h1", false));
    assert_eq!(store.reserve("k1", &claim("n2", "h1", 24 * 3600)).await.unwrap(), Reservation::New);
}
