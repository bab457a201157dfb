//! Delivering one message to one recipient on one channel: the delivery record and its
//! statuses, the pipeline every channel worker shares (claim, preferences, suppression,
//! rate limit, render, send with retries and failover, record), the pieces it uses, and
//! the runner that takes a worker's batch through it (attempts, deadlines, campaigns).

pub mod events;
pub mod failover;
pub mod feedback;
mod message;
mod model;
pub mod pacing;
pub mod pipeline;
mod ports;
pub mod preferences;
pub mod rate_limit;
pub mod rendering;
pub mod runner;
pub mod templates;
pub mod tracking;

pub use message::*;
pub use model::*;
pub use ports::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
