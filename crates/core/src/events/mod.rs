//! Domain events that leave a service for the event bus.

mod outbox;
mod ports;

pub use outbox::*;
pub use ports::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `source` of every event Herald publishes.
pub const SOURCE: &str = "herald";

/// Every `detail-type` Herald publishes: rules, consumers and tests name them from here.
pub mod detail_type {
    pub const PROFILE_CHANGED: &str = "profile.changed";
    pub const PROFILES_IMPORTED: &str = "profiles.imported";
    pub const ACTIVITY_RECORDED: &str = "activity.recorded";
    pub const SEGMENT_ENTERED: &str = "segment.entered";
    pub const SEGMENT_EXITED: &str = "segment.exited";
    pub const SEGMENT_JOB: &str = "segment.job";
    /// Work one segmenter invocation handed on to the next, on the segmenter's own queue
    /// only (never on the bus).
    pub const SEGMENT_WORK: &str = "segment.work";
    /// Every status change of a delivery (`delivery::events`), from the deliveries
    /// table's stream.
    pub const DELIVERY_STATUS_CHANGED: &str = "delivery.status_changed";
    /// Followed by the channel: `notification.email`, `notification.sms`, …
    pub const NOTIFICATION_PREFIX: &str = "notification.";
}

/// Published once for every effective change of a profile (never for a no-op).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChanged {
    pub user_id: String,
    /// The profile's version after the change; consumers keep the highest they have seen.
    pub version: u64,
    /// Attribute names whose values changed (added, replaced or removed).
    pub changed_attributes: Vec<String>,
    /// Other fields that changed: email, phone, timezone, device_tokens, external_channels.
    pub changed_fields: Vec<String>,
    pub created: bool,
    pub erased: bool,
}

/// Published by an import for each slice of the file that changed profiles (up to a few
/// thousand users): one event where `profile.changed` would take one per user. The
/// segmenter reads it as a `profile.changed` of each user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfilesImported {
    pub job_id: String,
    pub user_ids: Vec<String>,
    /// What changed, over all the users (a superset for each one).
    pub changed_attributes: Vec<String>,
    pub changed_fields: Vec<String>,
    /// Some user may have changed in any way (created, or re-sent after a crash without
    /// knowing what the first attempt changed): every segment must be evaluated.
    pub everything: bool,
}

impl ProfilesImported {
    pub const DETAIL_TYPE: &str = detail_type::PROFILES_IMPORTED;
}

/// Published once per user for each accepted batch: which of their events changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecorded {
    pub user_id: String,
    pub events: BTreeSet<String>,
}

/// A membership change, published as `segment.entered` or `segment.exited`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub segment_id: String,
    pub user_id: String,
    pub entered: bool,
    /// The user's membership revision this change produced: with the ids, a stable key
    /// for consumers that must act once (events are delivered at least once).
    pub revision: u64,
    pub at: DateTime<Utc>,
}

impl MembershipChange {
    pub fn detail_type(&self) -> &'static str {
        if self.entered { detail_type::SEGMENT_ENTERED } else { detail_type::SEGMENT_EXITED }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainEvent {
    ProfileChanged(ProfileChanged),
    ProfilesImported(ProfilesImported),
    ActivityRecorded(ActivityRecorded),
    /// `segment.entered` or `segment.exited`.
    Membership(MembershipChange),
    /// Work for the segmenter: backfills, cleanups and sweeps.
    SegmentTask(SegmentTask),
    /// An event already in its wire form: read back from an outbox, or a channel message
    /// (`delivery::ChannelMessage::event`), routed by its channel to that channel's queue.
    Stored(StoredEvent),
}

/// The segmenter's own work, carried on the bus to its queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum SegmentTask {
    /// Computes version `version` of a segment over every profile: one page of one part
    /// of the profile scan per message, the next page in a new message.
    /// A sweep re-checks a ready segment as time passes and records no progress.
    Backfill {
        segment_id: String,
        version: u64,
        part: u32,
        parts: u32,
        cursor: Option<String>,
        #[serde(default)]
        sweep: bool,
    },
    /// Removes the members rows of a deleted segment, a page of a shard per message.
    Cleanup { segment_id: String, shard: u32, cursor: Option<String> },
    /// Re-evaluates every time-relative segment (the daily schedule sends it).
    Sweep,
}

impl SegmentTask {
    pub const DETAIL_TYPE: &str = detail_type::SEGMENT_JOB;
}

impl DomainEvent {
    /// EventBridge's `detail-type`, which the bus's rules match on.
    pub fn detail_type(&self) -> String {
        match self {
            DomainEvent::ProfileChanged(_) => detail_type::PROFILE_CHANGED.to_owned(),
            DomainEvent::ProfilesImported(_) => ProfilesImported::DETAIL_TYPE.to_owned(),
            DomainEvent::ActivityRecorded(_) => detail_type::ACTIVITY_RECORDED.to_owned(),
            DomainEvent::Membership(change) => change.detail_type().to_owned(),
            DomainEvent::SegmentTask(_) => SegmentTask::DETAIL_TYPE.to_owned(),
            DomainEvent::Stored(e) => e.detail_type.clone(),
        }
    }

    pub fn detail_json(&self) -> String {
        match self {
            DomainEvent::Stored(e) => Ok(e.detail.clone()),
            DomainEvent::ProfileChanged(e) => serde_json::to_string(e),
            DomainEvent::ProfilesImported(e) => serde_json::to_string(e),
            DomainEvent::ActivityRecorded(e) => serde_json::to_string(e),
            DomainEvent::Membership(e) => serde_json::to_string(e),
            DomainEvent::SegmentTask(e) => serde_json::to_string(e),
        }
        .expect("domain events serialize")
    }
}
