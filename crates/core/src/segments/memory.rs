//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store::StoreError;

#[derive(Default)]
pub struct MemorySegments {
    pub segments: Mutex<BTreeMap<String, crate::segments::Segment>>,
    pub revision: AtomicUsize,
    /// Ids of deleted segments (tombstones).
    pub deleted: Mutex<std::collections::HashSet<String>>,
    /// (segment, version, part) of the parts counted as finished.
    pub finished_parts: Mutex<std::collections::HashSet<(String, u64, u32)>>,
}

#[async_trait]
impl crate::segments::SegmentStore for MemorySegments {
    async fn create(&self, segment: &crate::segments::Segment) -> Result<(), StoreError> {
        let mut segments = self.segments.lock().unwrap();
        if segments.contains_key(&segment.segment_id) || self.deleted.lock().unwrap().contains(&segment.segment_id) {
            return Err(StoreError::Conflict);
        }
        segments.insert(segment.segment_id.clone(), segment.clone());
        self.revision.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn replace(&self, segment: &crate::segments::Segment, expected_version: u64) -> Result<(), StoreError> {
        let mut segments = self.segments.lock().unwrap();
        if segments.get(&segment.segment_id).map(|s| s.version) != Some(expected_version) {
            return Err(StoreError::Conflict);
        }
        segments.insert(segment.segment_id.clone(), segment.clone());
        self.revision.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn delete(&self, segment_id: &str) -> Result<bool, StoreError> {
        let mut deleted = self.deleted.lock().unwrap();
        let removed = self.segments.lock().unwrap().remove(segment_id).is_some() || deleted.contains(segment_id);
        if removed {
            deleted.insert(segment_id.to_owned());
            self.revision.fetch_add(1, Ordering::SeqCst);
        }
        Ok(removed)
    }

    async fn get(&self, segment_id: &str) -> Result<Option<crate::segments::Segment>, StoreError> {
        Ok(self.segments.lock().unwrap().get(segment_id).cloned())
    }

    async fn list(&self) -> Result<Vec<crate::segments::Segment>, StoreError> {
        Ok(self.segments.lock().unwrap().values().cloned().collect())
    }

    async fn catalog_revision(&self) -> Result<u64, StoreError> {
        Ok(self.revision.load(Ordering::SeqCst) as u64)
    }

    async fn add_progress(
        &self,
        segment_id: &str,
        version: u64,
        progress: &crate::segments::BackfillProgress,
        finished_part: Option<u32>,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::segments::Segment>, StoreError> {
        let mut segments = self.segments.lock().unwrap();
        let Some(segment) = segments.get_mut(segment_id).filter(|s| s.version == version) else { return Ok(None) };
        if let Some(part) = finished_part {
            let mut finished = self.finished_parts.lock().unwrap();
            if !finished.insert((segment_id.to_owned(), version, part)) {
                return Ok(Some(segment.clone()));
            }
        }
        let backfill = &mut segment.backfill;
        backfill.profiles_scanned += progress.profiles_scanned;
        backfill.entered += progress.entered;
        backfill.exited += progress.exited;
        if finished_part.is_some() {
            backfill.parts_done += 1;
            // As the adapter: only a backfilling segment finishes (and gets its time).
            if backfill.parts_done >= backfill.parts && segment.state == crate::segments::SegmentState::Backfilling {
                backfill.finished_at = Some(at);
                segment.state = crate::segments::SegmentState::Ready;
            }
        }
        Ok(Some(segment.clone()))
    }
}

/// Tells whether a guarded write's evaluation is still current (user id, guard).
pub type GuardCheck = Box<dyn Fn(&str, &crate::segments::Evaluated) -> bool + Send>;

/// Memberships: each user's record and the members rows, segment → user ids. Each
/// write's outbox is published the moment the write is made, as the relay publishes it
/// from the table's stream.
#[derive(Default)]
pub struct MemoryMemberships {
    pub users: Mutex<HashMap<String, crate::segments::UserSegments>>,
    pub rows: Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
    /// Profile versions and activity revisions guards are checked against.
    pub guard_check: Mutex<Option<GuardCheck>>,
    pub published: Mutex<Vec<crate::events::DomainEvent>>,
}

impl MemoryMemberships {
    /// The `segment.entered`/`segment.exited` events the writes published, in order.
    pub fn membership_changes(&self) -> Vec<crate::events::MembershipChange> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter_map(|e| if let crate::events::DomainEvent::Membership(m) = e { Some(m.clone()) } else { None })
            .collect()
    }

    pub fn members_of(&self, segment_id: &str) -> std::collections::BTreeSet<String> {
        self.rows.lock().unwrap().get(segment_id).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl crate::segments::MembershipStore for MemoryMemberships {
    async fn user_segments(&self, user_id: &str) -> Result<crate::segments::UserSegments, StoreError> {
        Ok(self.users.lock().unwrap().get(user_id).cloned().unwrap_or_default())
    }

    async fn user_segments_many(
        &self,
        user_ids: &[String],
    ) -> Result<HashMap<String, crate::segments::UserSegments>, StoreError> {
        let users = self.users.lock().unwrap();
        Ok(user_ids.iter().filter_map(|id| Some((id.clone(), users.get(id)?.clone()))).collect())
    }

    async fn write(&self, write: &crate::segments::MembershipWrite) -> Result<(), StoreError> {
        let mut users = self.users.lock().unwrap();
        // A conflict writes nothing, not even an empty record for a user never written.
        if users.get(&write.user_id).map_or(0, |u| u.revision) != write.expected_revision {
            return Err(StoreError::Conflict);
        }
        if let (Some(guard), Some(check)) = (&write.guard, self.guard_check.lock().unwrap().as_ref())
            && !check(&write.user_id, guard)
        {
            return Err(StoreError::Conflict);
        }
        users.insert(
            write.user_id.clone(),
            crate::segments::UserSegments {
                revision: write.expected_revision + 1,
                segments: write.segments.clone(),
                legacy_pending: Vec::new(),
            },
        );
        self.published.lock().unwrap().extend(write.outbox.iter().cloned().map(crate::events::DomainEvent::Membership));
        let mut rows = self.rows.lock().unwrap();
        for segment_id in &write.entered {
            rows.entry(segment_id.clone()).or_default().insert(write.user_id.clone());
        }
        for segment_id in &write.exited {
            rows.entry(segment_id.clone()).or_default().remove(&write.user_id);
        }
        Ok(())
    }

    async fn write_many(&self, writes: &[crate::segments::MembershipWrite]) -> Result<Vec<bool>, StoreError> {
        let mut applied = Vec::with_capacity(writes.len());
        for write in writes {
            applied.push(match crate::segments::MembershipStore::write(self, write).await {
                Ok(()) => true,
                Err(StoreError::Conflict) => false,
                Err(e) => return Err(e),
            });
        }
        Ok(applied)
    }

    async fn members(
        &self,
        segment_id: &str,
        shard: u32,
        after: Option<&str>,
        limit: u32,
    ) -> Result<crate::segments::MembersPage, StoreError> {
        let rows = self.rows.lock().unwrap();
        let ids: Vec<String> = rows
            .get(segment_id)
            .into_iter()
            .flatten()
            .filter(|id| crate::segments::shard_of(id) == shard && after.is_none_or(|a| id.as_str() > a))
            .cloned()
            .collect();
        let page: Vec<String> = ids.iter().take(limit as usize).cloned().collect();
        let next = (ids.len() > limit as usize).then(|| page.last().cloned()).flatten();
        Ok(crate::segments::MembersPage { user_ids: page, next })
    }

    async fn add_static(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        self.rows.lock().unwrap().entry(segment_id.to_owned()).or_default().extend(user_ids.iter().cloned());
        Ok(())
    }

    async fn remove_rows(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        if let Some(rows) = self.rows.lock().unwrap().get_mut(segment_id) {
            for id in user_ids {
                rows.remove(id);
            }
        }
        Ok(())
    }

    async fn rows_among(
        &self,
        user_id: &str,
        segment_ids: &[String],
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let rows = self.rows.lock().unwrap();
        Ok(segment_ids.iter().filter(|s| rows.get(*s).is_some_and(|r| r.contains(user_id))).cloned().collect())
    }
}

/// The segmenter's queue: what was handed on, in order; `fail` refuses every hand-on.
#[derive(Default)]
pub struct MemorySegmenterQueue {
    pub handed_on: Mutex<Vec<crate::segments::Work>>,
    pub fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl crate::segments::SegmenterQueue for MemorySegmenterQueue {
    async fn hand_on(&self, work: &[crate::segments::Work]) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Transient("the queue is unavailable".into()));
        }
        self.handed_on.lock().unwrap().extend_from_slice(work);
        Ok(())
    }
}
