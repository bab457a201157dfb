//! User profiles and their contacts: the model and its merge, and the profile service
//! (validation, optimistic concurrency, change events).

mod model;
mod ports;
mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
