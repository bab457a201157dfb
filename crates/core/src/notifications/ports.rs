//! What notifications needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use crate::store::StoreError;

/// What reserving an idempotency key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    New,
    /// The key was used before, for this notification; `complete` once its jobs were
    /// published.
    Existing {
        notification_id: String,
        complete: bool,
    },
}

#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Records `notification_id` under `key` unless the key already names one.
    async fn reserve(&self, key: &str, notification_id: &str) -> Result<Reservation, StoreError>;
    /// Marks the key's notification as fully accepted (its jobs are on the bus).
    async fn complete(&self, key: &str) -> Result<(), StoreError>;
}
