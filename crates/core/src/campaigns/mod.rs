//! Campaigns: one template sent to a segment's members. The model and its validation, the
//! service behind the API, and the dispatcher that fans a campaign out onto the channel
//! queues.

pub mod dispatcher;
mod model;
mod ports;

pub use model::*;
pub use ports::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
