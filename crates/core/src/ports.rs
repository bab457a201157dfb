//! What the services need from the outside world. Adapters in `herald-aws` implement
//! these over AWS; tests may implement them in memory.

use async_trait::async_trait;

use crate::{ApiKey, DomainEvent, Profile};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read (optimistic concurrency).
    #[error("the record was changed by another writer")]
    Conflict,
    #[error("the store failed: {0}")]
    Unavailable(String),
}

/// A profile as stored: its version survives erasure, so that versions only grow and a
/// consumer never mistakes a re-created profile for an old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredProfile {
    pub version: u64,
    /// None once erased.
    pub profile: Option<Profile>,
}

#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// A strongly consistent read; None if the user was never seen.
    async fn load(&self, user_id: &str) -> Result<Option<StoredProfile>, StoreError>;

    /// Writes `profile` if the stored version is still `expected_version` (0: no record).
    async fn save(&self, profile: &Profile, expected_version: u64) -> Result<(), StoreError>;

    /// Replaces the profile with a tombstone that holds only its id and `version`,
    /// if the stored version is still `expected_version`.
    async fn erase(&self, user_id: &str, version: u64, expected_version: u64) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("publishing events failed: {0}")]
pub struct PublishError(pub String);

#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes every event or fails; adapters batch to the service's limit.
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError>;
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn put(&self, key: &ApiKey) -> Result<(), StoreError>;
}
