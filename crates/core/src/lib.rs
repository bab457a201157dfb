//! Herald's domain, one folder per capability: its model, its services, its ports (the
//! traits the handlers need from the outside world) and, behind the `memory` feature, the
//! in-memory doubles of those ports. No AWS types live here.

pub mod activity;
pub mod campaigns;
pub mod channel;
pub mod delivery;
pub mod events;
pub mod imports;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod notifications;
pub mod profiles;
pub mod segments;
pub mod signing;
pub mod store;
pub mod suppressions;
pub mod validation;
