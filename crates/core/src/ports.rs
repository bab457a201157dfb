//! What the services need from the outside world. Adapters in `herald-aws` implement
//! these over AWS; tests may implement them in memory.

use async_trait::async_trait;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::{
    ApiKey, DomainEvent, Profile,
    delivery::{Channel, DeliveryStatus},
    notification::Target,
    notification::{Delivery, StatusChange},
    preferences::Preferences,
    rate_limit::WindowKey,
    rendering::{ChannelContent, Rendered},
    templates::StoredTemplate,
};

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

    /// Several profiles at once (adapters batch the reads; eventually consistent). Users
    /// never seen are absent from the map.
    async fn load_many(&self, user_ids: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError>;

    /// Writes `profile` if the stored version is still `expected_version` (0: no record).
    async fn save(&self, profile: &Profile, expected_version: u64) -> Result<(), StoreError>;

    /// Replaces the profile with a tombstone that holds only its id and `version`,
    /// if the stored version is still `expected_version`.
    async fn erase(&self, user_id: &str, version: u64, expected_version: u64) -> Result<(), StoreError>;

    /// Saves several profiles, each under its own version condition (as `save`), in as few
    /// requests as the store allows. Per write, in order: true if saved, false if a
    /// concurrent writer got there first (nothing was stored for it).
    async fn save_many(&self, writes: &[VersionedProfile]) -> Result<Vec<bool>, StoreError> {
        let mut saved = Vec::with_capacity(writes.len());
        for write in writes {
            match self.save(&write.profile, write.expected_version).await {
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

#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores `channels` as the template's next version and returns it.
    async fn save_new_version(
        &self,
        template_id: &str,
        channels: &std::collections::BTreeMap<Channel, ChannelContent>,
    ) -> Result<StoredTemplate, StoreError>;

    /// The given version, or the latest when `version` is None.
    async fn get(&self, template_id: &str, version: Option<u64>) -> Result<Option<StoredTemplate>, StoreError>;
}

#[async_trait]
pub trait PreferenceStore: Send + Sync {
    /// A user's preferences; the defaults (nothing opted out) when none were saved.
    async fn get(&self, user_id: &str) -> Result<Preferences, StoreError>;
    /// The preferences of several users at once (adapters batch the reads); users who saved
    /// none are absent from the map.
    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>, StoreError>;
    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<(), StoreError>;
}

/// A rate-limit window a claim counts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitClaim {
    pub window: WindowKey,
    pub limit: u32,
    /// How the delivery ends if the window is full.
    pub over: StatusChange,
}

/// One delivery of a job to claim for sending, or to settle without sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub delivery_id: String,
    /// Settle now with this status (e.g. unsubscribed) instead of claiming for sending.
    pub settle: Option<StatusChange>,
    /// Counted with the claim; a claim past the limit settles as `over` instead.
    pub rate_limit: Option<RateLimitClaim>,
    /// Records the delivery with the claim when it does not exist yet (campaign jobs,
    /// whose deliveries the dispatcher never writes); None: the delivery must exist.
    pub create: Option<NewDelivery>,
}

/// What a claim records of a delivery it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// The notification or campaign the delivery belongs to (what `list` finds it by).
    pub notification_id: String,
    /// The user id.
    pub recipient: String,
    pub channel: Channel,
}

/// What claiming a delivery for sending found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This worker owns the send now (the delivery moved to `pending`).
    Claimed,
    /// Settled by this very request (its `settle` status, or rate-limited): nothing to
    /// send.
    Settled(DeliveryStatus),
    /// Ended before this request (sent or settled by an earlier attempt, e.g. of a
    /// redelivered message): nothing to send, and nothing new happened.
    AlreadySettled(DeliveryStatus),
    /// Another attempt claimed it and has not finished: it may be sending right now, or
    /// it died between the provider's answer and the status write.
    InFlight { claimed_at: DateTime<Utc> },
}

#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Records new deliveries (batched to the store's limit).
    async fn create(&self, deliveries: &[Delivery]) -> Result<(), StoreError>;
    /// Records one delivery unless it exists (a conditional write), for the rare repeat of
    /// a request that stopped half-way; true when it was written.
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<bool, StoreError>;
    async fn list(&self, notification_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Claims a job's deliveries at once (adapters make it one conditional batch write):
    /// each request moves its delivery from `created` or `error` (or, with `create`, from
    /// not existing) to `pending`, or to its `settle` status, and counts its rate limit.
    /// The dedup of redelivered messages: a delivery already claimed or settled is
    /// reported as such and not touched. One answer per request, in order.
    async fn claim_all(&self, requests: &[ClaimRequest], at: DateTime<Utc>) -> Result<Vec<Claim>, StoreError>;
    /// Records the outcome of a claimed delivery, with the provider that handled it and
    /// the provider's message id when it accepted the message.
    async fn finish(
        &self,
        delivery_id: &str,
        change: &StatusChange,
        provider: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Moves a delivery forward (opened, clicked, unsubscribed) if `change.status` may
    /// follow its status; false when it may not.
    async fn advance(&self, delivery_id: &str, change: &StatusChange) -> Result<bool, StoreError>;
    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>, StoreError>;
}

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

#[async_trait]
pub trait SuppressionStore: Send + Sync {
    /// Which of `addresses` are on the list (adapters batch the reads).
    async fn suppressed_among(&self, addresses: &[String]) -> Result<HashSet<String>, StoreError>;
    async fn suppress(&self, address: &str, reason: &str) -> Result<(), StoreError>;
}

/// How a provider refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Throttling, timeouts, 5xx: the same message may succeed later.
    #[error("temporary failure: {0}")]
    Retryable(String),
    /// Invalid address, rejected content: sending again cannot help.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// Told when a push service reports a device token as gone.
#[async_trait]
pub trait DisabledDevices: Send + Sync {
    async fn device_disabled(&self, user_id: &str, token: &str) -> Result<(), StoreError>;
}

/// One message on its way to a provider.
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    pub delivery_id: &'a str,
    /// The user it is for; None for a direct address.
    pub user_id: Option<&'a str>,
    pub notification_type: &'a str,
    pub target: &'a Target,
    pub content: &'a Rendered,
}

/// A provider of one channel: SES for email, SNS for SMS and push, HTTPS for webhooks.
#[async_trait]
pub trait Sender: Send + Sync {
    /// A short name recorded on the delivery, e.g. `ses`.
    fn name(&self) -> &str;
    /// Sends the message; returns the provider's message id.
    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError>;
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

/// What recording a batch of events did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Events counted now.
    pub counted: usize,
    /// Events whose id was seen before: not counted again.
    pub duplicates: usize,
}

#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Counts each event whose `event_id` (per user) was not recorded before, atomically
    /// with remembering its id; bumps the revision of every user it counted events for.
    async fn record(&self, events: &[crate::activity::ActivityEvent]) -> Result<Recorded, StoreError>;

    /// The counters and last-seen times `query` names for each of `user_ids`, over the
    /// days up to `today` (users with no activity get an empty one, revision 0). Reads
    /// are strongly consistent: the segmenter evaluates right after a record.
    async fn load_many(
        &self,
        user_ids: &[String],
        query: &crate::activity::ActivityQuery,
        today: chrono::NaiveDate,
    ) -> Result<HashMap<String, crate::activity::Activity>, StoreError>;
}

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
    /// Changes written but not yet published (an outbox): published, then cleared.
    pub pending: Vec<crate::segments::MembershipChange>,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipWrite {
    pub user_id: String,
    pub expected_revision: u64,
    pub segments: std::collections::BTreeSet<String>,
    pub entered: Vec<String>,
    pub exited: Vec<String>,
    pub pending: Vec<crate::segments::MembershipChange>,
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
    /// Writes one step (at most `MAX_ROWS_PER_WRITE` rows); Conflict if the revision
    /// moved or the guard no longer holds.
    async fn write(&self, write: &MembershipWrite) -> Result<(), StoreError>;
    /// Writes several users' steps with as few transactions as fit (a backfill page);
    /// one answer per write, in order: applied, or not (a conflict, as `write` would say).
    async fn write_many(&self, writes: &[MembershipWrite]) -> Result<Vec<bool>, StoreError>;
    /// Clears the outbox if the revision is still `revision` (false otherwise).
    async fn clear_pending(&self, user_id: &str, revision: u64) -> Result<bool, StoreError>;
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

/// A file being read, as a stream of its bytes.
pub type ObjectReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// The bucket import files are dropped in.
#[async_trait]
pub trait ImportFiles: Send + Sync {
    /// The object's bytes from byte `from` to its end, streamed (never held whole).
    /// `Ok(None)` if the object does not exist (any more).
    async fn read_from(&self, bucket: &str, key: &str, from: u64) -> Result<Option<ObjectReader>, StoreError>;

    /// Writes a small object whole (a chunk of rejected rows).
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError>;

    /// Writes `head` followed by every object under `prefix`, in key order, as the one
    /// object `key`, streamed (the parts are never all in memory), then deletes the
    /// objects under `prefix`. With nothing under `prefix`, `key` is left as it is: an
    /// earlier call joined the parts but its caller stopped before recording it.
    async fn concatenate(&self, bucket: &str, prefix: &str, head: Vec<u8>, key: &str) -> Result<(), StoreError>;
}

/// The import jobs (the jobs table).
#[async_trait]
pub trait ImportJobStore: Send + Sync {
    /// Stores a new job; false (and nothing written) if a job with its id exists.
    async fn create(&self, job: &crate::importing::ImportJob) -> Result<bool, StoreError>;
    async fn get(&self, job_id: &str) -> Result<Option<crate::importing::ImportJob>, StoreError>;
    /// Replaces the job if its stored `checkpoint` is still `expected_checkpoint`, else
    /// `Err(Conflict)`: two runners of one job never both record progress.
    async fn save(&self, job: &crate::importing::ImportJob, expected_checkpoint: u64) -> Result<(), StoreError>;
    /// Jobs newest first (by `started_at`), `limit` per page, from an opaque cursor.
    async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<ImportJobsPage, StoreError>;
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportJobsPage {
    pub jobs: Vec<crate::importing::ImportJob>,
    /// Opaque; None on the last page.
    pub next: Option<String>,
}

/// The importer's own queue: a job that runs out of time goes on in a fresh invocation.
#[async_trait]
pub trait ImportQueue: Send + Sync {
    async fn continue_job(&self, job_id: &str) -> Result<(), StoreError>;
}

/// Campaigns (the jobs table, kind `campaign`).
#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Stores a new campaign; false (nothing written) if one with its id exists.
    async fn create(&self, campaign: &crate::campaigns::Campaign) -> Result<bool, StoreError>;
    /// Strongly consistent.
    async fn get(&self, campaign_id: &str) -> Result<Option<crate::campaigns::Campaign>, StoreError>;
    /// Moves the campaign to `state` if it is in one of `from`; false otherwise.
    async fn set_state(
        &self,
        campaign_id: &str,
        state: crate::campaigns::CampaignState,
        from: &[crate::campaigns::CampaignState],
    ) -> Result<bool, StoreError>;
    /// Records a dispatched page exactly once: if the shard's cursor is still `cursor`
    /// (None: the shard's start), moves it to `next` (None: the shard is done, and
    /// `shards_done` grows by one) and adds `counts`, in one conditional write. Returns the
    /// campaign's `shards_done` after the write, or None if the page had been recorded.
    async fn record_page(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<Option<u32>, StoreError>;
    /// Adds to the counters (a worker's outcomes of one message).
    async fn add_counts(
        &self,
        campaign_id: &str,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<(), StoreError>;
}

/// The dispatcher's own queue.
#[async_trait]
pub trait DispatchQueue: Send + Sync {
    /// Sends each page as a message (batched), delivered after `delay` (at most 15 minutes).
    async fn dispatch(
        &self,
        pages: &[crate::campaigns::DispatchPage],
        delay: std::time::Duration,
    ) -> Result<(), StoreError>;
}

/// The channel queues, written straight to (no bus in between): a campaign's deliveries,
/// and a worker's recipients to try again.
#[async_trait]
pub trait JobQueues: Send + Sync {
    /// Sends each job to its channel's queue, as few requests as possible (SendMessageBatch
    /// of 10), delivered after `delay` (at most 15 minutes).
    async fn enqueue(
        &self,
        jobs: &[crate::notification::DeliveryJob],
        delay: std::time::Duration,
    ) -> Result<(), StoreError>;
}
