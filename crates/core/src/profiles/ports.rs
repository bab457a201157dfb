//! What profiles needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use std::collections::HashMap;

use crate::{events::DomainEvent, profiles::Profile, store::StoreError};

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

    /// Several profiles at once (adapters batch the reads; eventually consistent). Users
    /// never seen are absent from the map.
    async fn load_many(&self, user_ids: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError>;

    /// Writes `profile` if the stored version is still `expected_version` (0: no record),
    /// with `outbox`, the events the write publishes, in the same write (see
    /// [`crate::events::Outbox`]): they are published once the write is made, and never
    /// if it is not. An empty outbox publishes nothing.
    async fn save(&self, profile: &Profile, expected_version: u64, outbox: &[DomainEvent]) -> Result<(), StoreError>;

    /// Replaces the profile with a tombstone that holds only its id and `version`,
    /// if the stored version is still `expected_version`, with `outbox` as `save` does.
    async fn erase(
        &self,
        user_id: &str,
        version: u64,
        expected_version: u64,
        outbox: &[DomainEvent],
    ) -> Result<(), StoreError>;

    /// Saves several profiles, each under its own version condition (as `save`, with no
    /// events: an import publishes its own per slice), in as few
    /// requests as the store allows. Per write, in order: true if saved, false if a
    /// concurrent writer got there first (nothing was stored for it).
    async fn save_many(&self, writes: &[VersionedProfile]) -> Result<Vec<bool>, StoreError> {
        let mut saved = Vec::with_capacity(writes.len());
        for write in writes {
            match self.save(&write.profile, write.expected_version, &[]).await {
                Ok(()) => saved.push(true),
                Err(StoreError::Conflict) => saved.push(false),
                Err(e) => return Err(e),
            }
        }
        Ok(saved)
    }
}

/// A profile to save if the stored version is still `expected_version` (0: no record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedProfile {
    pub profile: Profile,
    pub expected_version: u64,
}

/// Where backfills read every profile from: a parallel scan in `parts` parts.
#[async_trait]
pub trait ProfileScan: Send + Sync {
    /// One page of part `part` (0-based) of `parts`, from `cursor` (None: the start).
    async fn scan_page(&self, part: u32, parts: u32, cursor: Option<&str>, limit: u32) -> Result<ScanPage, StoreError>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Profiles and tombstones (erased profiles), with their stored versions.
    pub profiles: Vec<(String, StoredProfile)>,
    /// Where the next page starts; None when the part is done. Opaque.
    pub next: Option<String>,
}
