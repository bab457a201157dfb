//! `KeyAdmin`: what an operator does with keys (`herald keys`): create one (its secret
//! shown once), list them, revoke one, rotate one (a new secret for the same name and
//! scopes, the old one kept working for a grace period).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use crate::{
    keys::{ApiKey, ApiKeyCatalog, Scope, generate_secret, new_key},
    store::StoreError,
};

/// A key just made: its secret, to show once, and the record stored for it.
pub struct CreatedKey {
    pub secret: String,
    pub key: ApiKey,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey").field("id", &self.key.id()).finish_non_exhaustive()
    }
}

/// A rotation's outcome: the new key, and the old one as it now stands (its new expiry).
#[derive(Debug)]
pub struct RotatedKey {
    pub new: CreatedKey,
    pub old: ApiKey,
}

/// Why an operator's request on a key was not done. Names keys by id, never by hash.
#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    #[error("no key has the id {0}")]
    NotFound(String),
    /// A revoked or expired key is not rotated: create a new one.
    #[error("the key {0} no longer works ({1}); create a new key instead")]
    NotInUse(String, &'static str),
    #[error("a key needs a name")]
    NoName,
    #[error("a key needs at least one scope")]
    NoScope,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KeyAdminError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, KeyAdminError::Store(e) if e.is_retryable())
    }
}

pub struct KeyAdmin<'a> {
    catalog: &'a dyn ApiKeyCatalog,
}

impl<'a> KeyAdmin<'a> {
    pub fn new(catalog: &'a dyn ApiKeyCatalog) -> Self {
        Self { catalog }
    }

    /// Stores a new key with a fresh secret.
    pub async fn create(
        &self,
        name: &str,
        scopes: &BTreeSet<Scope>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CreatedKey, KeyAdminError> {
        if name.trim().is_empty() {
            return Err(KeyAdminError::NoName);
        }
        if scopes.is_empty() {
            return Err(KeyAdminError::NoScope);
        }
        let secret = generate_secret();
        let key = new_key(&secret, name, scopes.iter().copied());
        let key = match expires_at {
            Some(at) => key.expiring_at(at),
            None => key,
        };
        self.catalog.put(&key).await?;
        Ok(CreatedKey { secret, key })
    }

    /// Every key, the oldest first.
    pub async fn list(&self) -> Result<Vec<ApiKey>, KeyAdminError> {
        let mut keys = self.catalog.list().await?;
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.key_hash.cmp(&b.key_hash)));
        Ok(keys)
    }

    /// The key named `id`.
    pub async fn find(&self, id: &str) -> Result<ApiKey, KeyAdminError> {
        let keys = self.catalog.list().await?;
        keys.into_iter().find(|k| k.id() == id).ok_or_else(|| KeyAdminError::NotFound(id.to_owned()))
    }

    /// Revokes the key named `id` at `now`: the API refuses it once its cache of the key
    /// lapses. A key revoked before keeps the instant it was first revoked.
    pub async fn revoke(&self, id: &str, now: DateTime<Utc>) -> Result<ApiKey, KeyAdminError> {
        let key = self.find(id).await?;
        if key.is_revoked() {
            return Ok(key);
        }
        if !self.catalog.revoke(&key.key_hash, now).await? {
            return Err(KeyAdminError::NotFound(id.to_owned()));
        }
        Ok(ApiKey { revoked_at: Some(now), ..key })
    }

    /// A new key with the name, scopes and expiry of the key named `id`; the old key works
    /// until `now + grace` (or its own expiry, when sooner), so callers can move over.
    pub async fn rotate(&self, id: &str, grace: Duration, now: DateTime<Utc>) -> Result<RotatedKey, KeyAdminError> {
        let old = self.find(id).await?;
        if old.is_revoked() {
            return Err(KeyAdminError::NotInUse(id.to_owned(), "revoked"));
        }
        if old.is_expired_at(now) {
            return Err(KeyAdminError::NotInUse(id.to_owned(), "expired"));
        }
        // The new key first: whatever fails after it, a working key is there.
        let new = self.create(&old.name, &old.scopes, old.expires_at).await?;
        let until = old.expires_at.map_or(now + grace, |at| at.min(now + grace));
        if !self.catalog.set_expiry(&old.key_hash, until).await? {
            return Err(KeyAdminError::NotFound(id.to_owned()));
        }
        Ok(RotatedKey { new, old: old.expiring_at(until) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{ApiKeyStore, hash_secret, memory::MemoryApiKeys};

    fn scopes(list: &[Scope]) -> BTreeSet<Scope> {
        list.iter().copied().collect()
    }

    fn now() -> DateTime<Utc> {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn a_created_key_is_stored_as_the_hash_of_the_secret_shown() {
        let keys = MemoryApiKeys::default();
        let created = KeyAdmin::new(&keys).create("ci", &scopes(&[Scope::ProfilesRead]), None).await.unwrap();
        assert!(created.secret.starts_with("hk_"));
        assert_eq!(keys.find(&hash_secret(&created.secret)).await.unwrap(), Some(created.key));
    }

    #[tokio::test]
    async fn a_key_needs_a_name_and_a_scope() {
        let keys = MemoryApiKeys::default();
        let admin = KeyAdmin::new(&keys);
        assert!(matches!(admin.create(" ", &scopes(&[Scope::Admin]), None).await, Err(KeyAdminError::NoName)));
        assert!(matches!(admin.create("ci", &scopes(&[]), None).await, Err(KeyAdminError::NoScope)));
        assert!(keys.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn revoking_marks_the_key_and_keeps_it_listed() {
        let keys = MemoryApiKeys::default();
        let admin = KeyAdmin::new(&keys);
        let created = admin.create("ci", &scopes(&[Scope::Admin]), None).await.unwrap();
        let revoked = admin.revoke(&created.key.id(), now()).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(now()));
        assert_eq!(admin.list().await.unwrap(), vec![revoked]);
    }

    #[tokio::test]
    async fn revoking_again_keeps_the_first_instant() {
        let keys = MemoryApiKeys::default();
        let admin = KeyAdmin::new(&keys);
        let id = admin.create("ci", &scopes(&[Scope::Admin]), None).await.unwrap().key.id();
        admin.revoke(&id, now()).await.unwrap();
        let again = admin.revoke(&id, now() + Duration::hours(1)).await.unwrap();
        assert_eq!(again.revoked_at, Some(now()));
    }

    #[tokio::test]
    async fn an_unknown_id_is_named_in_the_refusal() {
        let keys = MemoryApiKeys::default();
        let error = KeyAdmin::new(&keys).revoke("key_0000000000000000", now()).await.unwrap_err();
        assert_eq!(error.to_string(), "no key has the id key_0000000000000000");
        assert!(!error.is_retryable());
    }

    #[tokio::test]
    async fn rotating_makes_a_key_of_the_same_name_and_scopes_and_ends_the_old_after_the_grace() {
        let keys = MemoryApiKeys::default();
        let admin = KeyAdmin::new(&keys);
        let old = admin.create("ci", &scopes(&[Scope::ProfilesRead, Scope::EventsWrite]), None).await.unwrap();
        let rotated = admin.rotate(&old.key.id(), Duration::hours(24), now()).await.unwrap();
        assert_ne!(rotated.new.secret, old.secret);
        assert_eq!((&rotated.new.key.name, &rotated.new.key.scopes), (&old.key.name, &old.key.scopes));
        let stored_old = keys.find(&old.key.key_hash).await.unwrap().unwrap();
        assert_eq!(stored_old.expires_at, Some(now() + Duration::hours(24)));
        assert_eq!(rotated.old, stored_old);
        assert!(keys.find(&hash_secret(&rotated.new.secret)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn rotating_never_lengthens_the_old_keys_life_and_carries_its_expiry_over() {
        let keys = MemoryApiKeys::default();
        let admin = KeyAdmin::new(&keys);
        let soon = now() + Duration::hours(1);
        let old = admin.create("ci", &scopes(&[Scope::Admin]), Some(soon)).await.unwrap();
        let rotated = admin.rotate(&old.key.id(), Duration::hours(24), now()).await.unwrap();
        assert_eq!(rotated.old.expires_at, Some(soon));
        assert_eq!(rotated.new.key.expires_at, Some(soon));
    }

    #[tokio::test]
    async fn a_revoked_or_expired_key_is_not_rotated() {
        let keys = MemoryApiKeys::default();
        let admin = KeyAdmin::new(&keys);
        let revoked = admin.create("a", &scopes(&[Scope::Admin]), None).await.unwrap().key.id();
        admin.revoke(&revoked, now()).await.unwrap();
        let expired = admin.create("b", &scopes(&[Scope::Admin]), Some(now())).await.unwrap().key.id();
        for id in [revoked, expired] {
            let error = admin.rotate(&id, Duration::hours(1), now()).await.unwrap_err();
            assert!(matches!(error, KeyAdminError::NotInUse(..)), "{error}");
        }
        assert_eq!(keys.list().await.unwrap().len(), 2);
    }
}
