//! Behaviour events and the per-user daily counters that windowed rules read, and the
//! service that records them.

mod model;
mod ports;
mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
