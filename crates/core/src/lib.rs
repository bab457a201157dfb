//! Herald's domain: profiles and their contacts, validation, API keys, domain events and
//! the ports (traits) the handlers need from the outside world. No AWS types live here.

pub mod activity;
pub mod backoff;
pub mod campaign_service;
pub mod campaigns;
pub mod circuit_breaker;
pub mod delivery;
pub mod dispatching;
pub mod events;
pub mod import;
pub mod importing;
pub mod keys;
pub mod memory;
pub mod notification;
pub mod notifications;
pub mod pacing;
pub mod pipeline;
pub mod ports;
pub mod preferences;
pub mod profile;
pub mod rate_limit;
pub mod rendering;
pub mod rules;
pub mod segmentation;
pub mod segments;
pub mod service;
pub mod templates;
pub mod tracking;
pub mod validation;

pub use events::{DomainEvent, ProfileChanged};
pub use keys::{ApiKey, Scope};
pub use profile::{DeviceToken, ExternalChannel, Platform, Profile, ProfilePatch};
pub use service::{ProfileError, ProfileService, Upserted};
pub use validation::{FieldError, ValidationErrors};
