//! Notifications: what a producer asks to send, validated up front, and the service that
//! records one delivery per (notification, recipient, channel) and publishes the jobs.

mod model;
mod ports;
mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
