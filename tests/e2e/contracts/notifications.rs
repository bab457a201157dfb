//! `NotificationStore`: an idempotency key names one notification, reserved once, and says
//! whether that notification was fully accepted.

use herald_aws::DynamoNotificationStore;
use herald_core::notifications::{NotificationStore, Reservation, memory::MemoryNotifications};

contract!(notification_store: memory_store, aws_store;
    a_new_key_is_reserved_for_its_notification,
    a_key_reserved_before_names_its_first_notification,
    a_completed_key_says_so,
    completing_a_key_twice_is_harmless,
);

async fn memory_store() -> Box<dyn NotificationStore> {
    Box::new(MemoryNotifications::default())
}

async fn aws_store() -> Box<dyn NotificationStore> {
    let (clients, tables) = super::moto_tables(&["NotificationsTable"]).await;
    Box::new(DynamoNotificationStore::new(clients.dynamodb.clone(), &tables["NotificationsTable"]))
}

async fn a_new_key_is_reserved_for_its_notification(store: &dyn NotificationStore) {
    assert_eq!(store.reserve("k1", "n1").await.unwrap(), Reservation::New);
    assert_eq!(store.reserve("k2", "n2").await.unwrap(), Reservation::New, "another key is another reservation");
}

async fn a_key_reserved_before_names_its_first_notification(store: &dyn NotificationStore) {
    store.reserve("k1", "n1").await.unwrap();

    let again = store.reserve("k1", "n2").await.unwrap();

    assert_eq!(again, Reservation::Existing { notification_id: "n1".into(), complete: false });
    assert_eq!(store.reserve("k1", "n3").await.unwrap(), again);
}

async fn a_completed_key_says_so(store: &dyn NotificationStore) {
    store.reserve("k1", "n1").await.unwrap();
    store.reserve("k2", "n2").await.unwrap();

    store.complete("k1").await.unwrap();

    let existing = |id: &str, complete| Reservation::Existing { notification_id: id.into(), complete };
    assert_eq!(store.reserve("k1", "n9").await.unwrap(), existing("n1", true));
    assert_eq!(store.reserve("k2", "n9").await.unwrap(), existing("n2", false));
}

async fn completing_a_key_twice_is_harmless(store: &dyn NotificationStore) {
    store.reserve("k1", "n1").await.unwrap();
    store.complete("k1").await.unwrap();
    store.complete("k1").await.unwrap();
    assert_eq!(
        store.reserve("k1", "n2").await.unwrap(),
        Reservation::Existing { notification_id: "n1".into(), complete: true }
    );
}
