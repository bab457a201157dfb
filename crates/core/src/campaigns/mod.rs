//! Campaigns: one template sent to a segment's members. The model and its validation, the
//! service behind the API, the dispatcher that fans a campaign out onto the channel
//! queues, the progress its deliveries make (the delivery runner's campaign port), and the
//! reconciler that settles it.

pub mod dispatcher;
mod model;
mod ports;
pub mod progress;
pub mod reconciler;
mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
