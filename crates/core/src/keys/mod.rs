//! API keys: only their SHA-256 hash is ever stored, with the scopes they grant.

mod admin;
mod model;
mod ports;

pub use admin::*;
pub use model::*;
pub use ports::{ApiKeyCatalog, ApiKeyStore};

#[cfg(feature = "memory")]
pub mod memory {
    pub use super::ports::memory::MemoryApiKeys;
}
