//! Segments: rules, the catalog of saved segments, the service that saves them, and the
//! segmenter that keeps every user's memberships current.

mod model;
mod ports;
pub mod rules;
mod segmenter;
mod service;

pub use model::*;
pub use ports::*;
pub use segmenter::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
