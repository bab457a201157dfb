//! What segments needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::store::StoreError;

#[async_trait]
pub trait SegmentStore: Send + Sync {
    /// Saves a new segment; Conflict if the id is taken (or was, by a deleted segment).
    /// Bumps the catalog revision.
    async fn create(&self, segment: &crate::segments::Segment) -> Result<(), StoreError>;
    /// Replaces a segment if its stored version is still `expected_version`; bumps the
    /// catalog revision.
    async fn replace(&self, segment: &crate::segments::Segment, expected_version: u64) -> Result<(), StoreError>;
    /// Deletes a segment, leaving a tombstone: the id is never used again, so the old
    /// members rows, removed in the background, never mix with a new segment's. True for
    /// a live segment or a tombstone (a retried delete), false if there never was one.
    /// Bumps the catalog revision.
    async fn delete(&self, segment_id: &str) -> Result<bool, StoreError>;
    async fn get(&self, segment_id: &str) -> Result<Option<crate::segments::Segment>, StoreError>;
    /// Every segment (a deployment has at most `MAX_SEGMENTS`), read consistently: the
    /// segmenter caches the list under the catalog revision it just read.
    async fn list(&self) -> Result<Vec<crate::segments::Segment>, StoreError>;
    /// Grows with every create, replace and delete: a cached catalog is current while
    /// the revision is unchanged (a strongly consistent read).
    async fn catalog_revision(&self) -> Result<u64, StoreError>;
    /// Adds a backfill page's counts to version `version` of the segment (nothing if the
    /// segment moved on); `finished_part` also counts that part as finished, once however
    /// often it is told (its page's counts then too), and the last part makes the segment
    /// ready. Returns the segment as it is now. Pages that are not a part's last may be
    /// counted again when their message is redelivered: the counts are progress, not truth.
    async fn add_progress(
        &self,
        segment_id: &str,
        version: u64,
        progress: &BackfillProgress,
        finished_part: Option<u32>,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::segments::Segment>, StoreError>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackfillProgress {
    pub profiles_scanned: u64,
    pub entered: u64,
    pub exited: u64,
}

/// A user's dynamic memberships as the segmenter last wrote them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSegments {
    /// Grows with every write; 0 when never written.
    pub revision: u64,
    pub segments: std::collections::BTreeSet<String>,
    /// Changes a record written before memberships had an outbox still holds unpublished
    /// (its legacy `pending`): the user's next write carries them in its outbox.
    pub legacy_pending: Vec<crate::events::MembershipChange>,
}

/// Conditions a backfill's write holds to: the profile and activity it evaluated are
/// still current, so a slower backfill never overwrites a newer evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluated {
    /// The profile's stored version (0: never stored).
    pub profile_version: u64,
    /// The activity revision, when the segments read activity.
    pub activity_revision: Option<u64>,
}

/// One atomic step of a user's membership: the new set, the members rows that change
/// with it, and the outbox, written only if the revision is still `expected_revision`.
/// The outbox is published from the table's stream once the write is made (the relay),
/// so a change's event is never lost between the write and the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipWrite {
    pub user_id: String,
    pub expected_revision: u64,
    pub segments: std::collections::BTreeSet<String>,
    pub entered: Vec<String>,
    pub exited: Vec<String>,
    /// The changes this write publishes, under its new revision; none: it publishes
    /// nothing.
    pub outbox: Vec<crate::events::MembershipChange>,
    pub guard: Option<Evaluated>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembersPage {
    pub user_ids: Vec<String>,
    /// Where the next page starts within the shard; None when the shard is done.
    pub next: Option<String>,
}

#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// A strongly consistent read of a user's memberships.
    async fn user_segments(&self, user_id: &str) -> Result<UserSegments, StoreError>;
    /// Several users at once (batched, eventually consistent; users never written are
    /// absent).
    async fn user_segments_many(&self, user_ids: &[String]) -> Result<HashMap<String, UserSegments>, StoreError>;
    /// Writes one step (at most `MAX_ROWS_PER_WRITE` rows) with its outbox; Conflict if
    /// the revision moved or the guard no longer holds (nothing written or published).
    async fn write(&self, write: &MembershipWrite) -> Result<(), StoreError>;
    /// Writes several users' steps with as few transactions as fit (a backfill page);
    /// one answer per write, in order: applied, or not (a conflict, as `write` would say).
    async fn write_many(&self, writes: &[MembershipWrite]) -> Result<Vec<bool>, StoreError>;
    /// One page of a shard of a segment's members, in user id order.
    async fn members(
        &self,
        segment_id: &str,
        shard: u32,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MembersPage, StoreError>;
    /// Adds rows to a static segment (batched writes).
    async fn add_static(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError>;
    /// Removes members rows of a segment (batched writes).
    async fn remove_rows(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError>;
    /// Which of `segment_ids` have a members row for the user (static segments).
    async fn rows_among(
        &self,
        user_id: &str,
        segment_ids: &[String],
    ) -> Result<std::collections::BTreeSet<String>, StoreError>;
}

/// Rows one `MembershipWrite` may change: a DynamoDB transaction holds 100 items, three
/// of them being the user's record and the guard's two checks (profile and activity).
pub const MAX_ROWS_PER_WRITE: usize = 97;

/// The segmenter's own queue: the work an invocation has no time left for, handed on to
/// a later one (as [`HandedOn`] messages) rather than back to SQS, where it would use up
/// its message's receives.
#[async_trait]
pub trait SegmenterQueue: Send + Sync {
    async fn hand_on(&self, work: &[crate::segments::Work]) -> Result<(), StoreError>;
}

/// A message of handed-on work on the segmenter's queue, as the detail of a
/// `segment.work` envelope, so that the queue carries one shape.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandedOn {
    pub work: Vec<crate::segments::Work>,
}

impl HandedOn {
    pub const DETAIL_TYPE: &str = crate::events::detail_type::SEGMENT_WORK;
}
