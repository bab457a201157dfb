//! Domain events that leave a service for the event bus.

use serde::{Deserialize, Serialize};

use crate::notification::DeliveryJob;

/// The `source` of every event Herald publishes.
pub const SOURCE: &str = "herald";

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainEvent {
    ProfileChanged(ProfileChanged),
    /// Routed by its channel (`notification.email`, …) to that channel's queue.
    DeliveryJob(DeliveryJob),
}

impl DomainEvent {
    /// EventBridge's `detail-type`, which the bus's rules match on.
    pub fn detail_type(&self) -> String {
        match self {
            DomainEvent::ProfileChanged(_) => "profile.changed".to_owned(),
            DomainEvent::DeliveryJob(job) => job.detail_type(),
        }
    }

    pub fn detail_json(&self) -> String {
        match self {
            DomainEvent::ProfileChanged(e) => serde_json::to_string(e),
            DomainEvent::DeliveryJob(job) => serde_json::to_string(job),
        }
        .expect("domain events serialize")
    }
}
