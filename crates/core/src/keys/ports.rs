//! What keys needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use crate::{keys::ApiKey, store::StoreError};

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn put(&self, key: &ApiKey) -> Result<(), StoreError>;
}
