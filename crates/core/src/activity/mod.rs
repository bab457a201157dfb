//! Behaviour events and the per-user daily counters that windowed rules read.

mod model;
mod ports;

pub use model::*;
pub use ports::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
