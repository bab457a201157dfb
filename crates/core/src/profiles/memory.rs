//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::{
    events::{DomainEvent, ProfileChanged},
    profiles::{Profile, ProfileStore, StoredProfile},
    store::StoreError,
};

/// An in-memory store that can make the next saves lose a race, as a concurrent
/// writer would. Each write's outbox is published the moment the write is made, as the
/// relay publishes it from the table's stream.
#[derive(Default)]
pub struct MemoryProfiles {
    pub records: Mutex<HashMap<String, StoredProfile>>,
    pub conflicts_to_inject: AtomicUsize,
    pub published: Mutex<Vec<DomainEvent>>,
}

impl MemoryProfiles {
    /// The `profile.changed` events the writes published, in order.
    pub fn profile_changes(&self) -> Vec<ProfileChanged> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter_map(|e| if let DomainEvent::ProfileChanged(c) = e { Some(c.clone()) } else { None })
            .collect()
    }
}

#[async_trait]
impl ProfileStore for MemoryProfiles {
    async fn load(&self, user_id: &str) -> Result<Option<StoredProfile>, StoreError> {
        Ok(self.records.lock().unwrap().get(user_id).cloned())
    }

    async fn load_many(&self, user_ids: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError> {
        let records = self.records.lock().unwrap();
        Ok(user_ids.iter().filter_map(|u| Some((u.clone(), records.get(u)?.clone()))).collect())
    }

    async fn save(&self, profile: &Profile, expected_version: u64, outbox: &[DomainEvent]) -> Result<(), StoreError> {
        let record = StoredProfile { version: profile.version, profile: Some(profile.clone()) };
        self.put(&profile.user_id, record, expected_version, outbox)
    }

    async fn erase(
        &self,
        user_id: &str,
        version: u64,
        expected_version: u64,
        outbox: &[DomainEvent],
    ) -> Result<(), StoreError> {
        self.put(user_id, StoredProfile { version, profile: None }, expected_version, outbox)
    }
}

impl MemoryProfiles {
    fn put(
        &self,
        user_id: &str,
        record: StoredProfile,
        expected_version: u64,
        outbox: &[DomainEvent],
    ) -> Result<(), StoreError> {
        if self.conflicts_to_inject.load(Ordering::SeqCst) > 0 {
            self.conflicts_to_inject.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Conflict);
        }
        let mut records = self.records.lock().unwrap();
        if records.get(user_id).map_or(0, |r| r.version) != expected_version {
            return Err(StoreError::Conflict);
        }
        records.insert(user_id.to_owned(), record);
        self.published.lock().unwrap().extend_from_slice(outbox);
        Ok(())
    }
}

/// The part of a scan in `parts` that holds a user: a stable hash of the id (the members
/// shard `segments::shard_of` gives it, of 16), then taken modulo `parts`.
fn part_of(user_id: &str, parts: u32) -> u32 {
    let digest = Sha256::digest(user_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 16 % parts.max(1)
}

/// Profiles scanned in user id order, split into parts by a stable hash.
#[async_trait]
impl crate::profiles::ProfileScan for MemoryProfiles {
    async fn scan_page(
        &self,
        part: u32,
        parts: u32,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<crate::profiles::ScanPage, StoreError> {
        let records = self.records.lock().unwrap();
        let mut ids: Vec<&String> = records
            .keys()
            .filter(|id| part_of(id, parts) == part)
            .filter(|id| cursor.is_none_or(|c| id.as_str() > c))
            .collect();
        ids.sort();
        let page: Vec<(String, StoredProfile)> =
            ids.iter().take(limit as usize).map(|id| ((*id).clone(), records[*id].clone())).collect();
        let next = (ids.len() > limit as usize).then(|| page.last().map(|(id, _)| id.clone())).flatten();
        Ok(crate::profiles::ScanPage { profiles: page, next })
    }
}
