//! Segments: rules, the catalog of saved segments, the service that saves them, the
//! segmenter that keeps every user's memberships current, and the work each bus event
//! gives it.

mod event_work;
mod model;
mod ports;
pub mod rules;
mod segmenter;
mod service;

pub use event_work::*;
pub use model::*;
pub use ports::*;
pub use segmenter::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
