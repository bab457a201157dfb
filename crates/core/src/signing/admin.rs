//! What an operator does with a ring (`herald secrets`): rotate it (a new key that
//! verifies at once), promote a key (it signs), and retire a key that only verifies.
//! Functions read their rings at init, so each step reaches an environment when it
//! starts: a new key is promoted only once every environment knows it.

use crate::{
    signing::{KeyRing, KeyRingError, KeyRingWriter, RingRefusal},
    store::StoreError,
};

/// Why a ring was not changed. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum RingChangeError {
    #[error(transparent)]
    Read(#[from] KeyRingError),
    #[error(transparent)]
    Refused(#[from] RingRefusal),
    #[error("the key ring could not be written: {0}")]
    Write(StoreError),
}

impl RingChangeError {
    pub fn is_retryable(&self) -> bool {
        match self {
            RingChangeError::Read(e) => e.is_retryable(),
            RingChangeError::Refused(_) => false,
            RingChangeError::Write(e) => e.is_retryable(),
        }
    }
}

/// Puts a new random key second in the ring stored as `secret_id` (it verifies, the
/// signing key still signs); the ring as stored.
pub async fn rotate_ring(store: &dyn KeyRingWriter, secret_id: &str) -> Result<KeyRing, RingChangeError> {
    let ring = store.key_ring(secret_id).await?.with_new_key();
    store.put_key_ring(secret_id, &ring).await.map_err(RingChangeError::Write)?;
    Ok(ring)
}

/// Puts the key `id` first in the ring stored as `secret_id`: it signs from then on.
pub async fn promote_key(store: &dyn KeyRingWriter, secret_id: &str, id: &str) -> Result<KeyRing, RingChangeError> {
    let ring = store.key_ring(secret_id).await?.promoted(id)?;
    store.put_key_ring(secret_id, &ring).await.map_err(RingChangeError::Write)?;
    Ok(ring)
}

/// Takes the key `id` out of the ring stored as `secret_id`; the ring as stored.
pub async fn retire_key(store: &dyn KeyRingWriter, secret_id: &str, id: &str) -> Result<KeyRing, RingChangeError> {
    let ring = store.key_ring(secret_id).await?.without(id)?;
    store.put_key_ring(secret_id, &ring).await.map_err(RingChangeError::Write)?;
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::signing::{KeyRingStore, memory::MemoryKeyRings};

    const RING: &str = r#"{"id":"k1","secret":"first-secret-0123456789abcdef01234"}"#;

    fn store() -> MemoryKeyRings {
        MemoryKeyRings::new(HashMap::from([("tracking".to_owned(), RING.to_owned())]))
    }

    fn ids(ring: &KeyRing) -> Vec<&str> {
        ring.keys().iter().map(|k| k.id.as_str()).collect()
    }

    #[tokio::test]
    async fn a_rotation_stores_a_new_key_after_the_signing_one() {
        let store = store();
        let rotated = rotate_ring(&store, "tracking").await.unwrap();
        let stored = store.key_ring("tracking").await.unwrap();
        assert_eq!(stored, rotated);
        assert_eq!(ids(&stored), ["k1", "k2"]);
    }

    #[tokio::test]
    async fn a_promotion_stores_the_key_first() {
        let store = store();
        rotate_ring(&store, "tracking").await.unwrap();
        promote_key(&store, "tracking", "k2").await.unwrap();
        assert_eq!(ids(&store.key_ring("tracking").await.unwrap()), ["k2", "k1"]);
    }

    #[tokio::test]
    async fn a_retired_key_is_gone_from_the_stored_ring() {
        let store = store();
        rotate_ring(&store, "tracking").await.unwrap();
        retire_key(&store, "tracking", "k2").await.unwrap();
        assert_eq!(ids(&store.key_ring("tracking").await.unwrap()), ["k1"]);
    }

    #[tokio::test]
    async fn a_refused_retirement_stores_nothing() {
        let store = store();
        let error = retire_key(&store, "tracking", "k1").await.unwrap_err();
        assert!(matches!(error, RingChangeError::Refused(RingRefusal::LastKey(_))), "{error}");
        assert!(!error.is_retryable());
        assert_eq!(store.value("tracking").as_deref(), Some(RING));
    }
}
