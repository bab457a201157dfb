//! API keys: only their SHA-256 hash is ever stored, with the scopes they grant.

mod model;
mod ports;

pub use model::*;
pub use ports::*;
