//! What keys needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{keys::ApiKey, store::StoreError};

/// What the API needs: a key by its hash (and storing one, for the stacks that make the
/// first key).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn put(&self, key: &ApiKey) -> Result<(), StoreError>;
}

/// What an operator needs beyond the API's lookups (`herald keys`): every key, and
/// changing one in place. Kept apart from [`ApiKeyStore`] so that the API's role reads
/// keys by hash and can do nothing else.
#[async_trait]
pub trait ApiKeyCatalog: ApiKeyStore {
    /// Every stored key, revoked and expired ones included, in no particular order.
    async fn list(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Marks the key revoked at `at`; false, and nothing stored, when no key has the hash.
    async fn revoke(&self, key_hash: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Sets the instant the key expires; false, and nothing stored, when no key has the hash.
    async fn set_expiry(&self, key_hash: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
}

#[cfg(feature = "memory")]
pub mod memory {
    use std::{collections::HashMap, sync::Mutex};

    use super::*;

    /// Keys by hash.
    #[derive(Default)]
    pub struct MemoryApiKeys(Mutex<HashMap<String, ApiKey>>);

    impl MemoryApiKeys {
        fn change(&self, key_hash: &str, change: impl FnOnce(&mut ApiKey)) -> bool {
            let mut keys = self.0.lock().expect("keys lock");
            keys.get_mut(key_hash).map(change).is_some()
        }
    }

    #[async_trait]
    impl ApiKeyStore for MemoryApiKeys {
        async fn find(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
            Ok(self.0.lock().expect("keys lock").get(key_hash).cloned())
        }

        async fn put(&self, key: &ApiKey) -> Result<(), StoreError> {
            self.0.lock().expect("keys lock").insert(key.key_hash.clone(), key.clone());
            Ok(())
        }
    }

    #[async_trait]
    impl ApiKeyCatalog for MemoryApiKeys {
        async fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
            Ok(self.0.lock().expect("keys lock").values().cloned().collect())
        }

        async fn revoke(&self, key_hash: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
            Ok(self.change(key_hash, |key| key.revoked_at = Some(at)))
        }

        async fn set_expiry(&self, key_hash: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
            Ok(self.change(key_hash, |key| key.expires_at = Some(at)))
        }
    }
}
