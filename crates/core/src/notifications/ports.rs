//! What notifications needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store::StoreError;

/// A claim on an idempotency key: the notification it will name, the hash of the request
/// that made it, and until when it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyClaim {
    pub notification_id: String,
    /// `NotificationRequest::fingerprint` of the request.
    pub request_hash: String,
    /// The time of the claim: a record whose `expires_at` is not after it is expired, even
    /// if the store has not deleted it yet.
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What reserving an idempotency key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    New,
    /// The key was used before, for this notification, by the request of `request_hash`;
    /// `complete` once its jobs were published.
    Existing {
        notification_id: String,
        request_hash: String,
        complete: bool,
    },
}

#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Records the claim under `key` unless the key names a notification that has not
    /// expired (at `claim.now`, to the second); an expired record is replaced.
    async fn reserve(&self, key: &str, claim: &KeyClaim) -> Result<Reservation, StoreError>;
    /// Marks the key's notification as fully accepted (its jobs are on the bus).
    async fn complete(&self, key: &str) -> Result<(), StoreError>;
}
