//! Bearer API keys: looked up by their SHA-256 hash, cached briefly per environment, found
//! and unknown alike.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use herald_core::keys::{ApiKey, ApiKeyStore, Scope, hash_secret};
use lru::LruCache;

use crate::problem::Problem;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the links in messages (`/v1/t/{token}`) carry their own proof.
    Public,
    /// Any valid key.
    AnyKey,
    /// A key with this scope (or admin).
    Scope(Scope),
}

impl From<Scope> for Access {
    fn from(scope: Scope) -> Self {
        Access::Scope(scope)
    }
}

/// The route layer of every route but the public ones: the key is checked (401, 403)
/// before the handler runs, so before any body is read, and reaches the handler as an
/// `Extension<ApiKey>`.
pub async fn require(
    State((auth, scope)): State<(Arc<Authenticator>, Option<Scope>)>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.authorize(request.headers(), scope).await {
        Ok(key) => {
            request.extensions_mut().insert(key);
            next.run(request).await
        }
        Err(problem) => problem.into_response(),
    }
}

/// How long a key found in the table is trusted without reading it again: a revoked
/// (or deleted) key stops working within this bound in every warm environment.
pub const KNOWN_KEY_TTL: Duration = Duration::from_secs(10);

/// How long a hash that names no key is refused without reading again: a flood of bogus
/// keys costs one read per hash per environment per this TTL. A new key is random, so its
/// hash was never asked for before and works at once.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(10);

/// Most hashes each cache holds: bounded, so a flood of distinct bogus keys evicts the
/// oldest unknown hashes (never the known keys, which have a cache of their own).
const KNOWN_KEYS: usize = 1_000;
const UNKNOWN_KEYS: usize = 10_000;

pub struct Authenticator {
    store: Arc<dyn ApiKeyStore>,
    known_ttl: Duration,
    unknown_ttl: Duration,
    cache: Mutex<Caches>,
}

struct Caches {
    known: LruCache<String, (Instant, ApiKey)>,
    unknown: LruCache<String, Instant>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn ApiKeyStore>) -> Self {
        Self::with_ttls(store, KNOWN_KEY_TTL, UNKNOWN_KEY_TTL)
    }

    /// With other cache lifetimes than the deployed ones (tests: zero, or an hour).
    pub fn with_ttls(store: Arc<dyn ApiKeyStore>, known_ttl: Duration, unknown_ttl: Duration) -> Self {
        let size = |n| NonZeroUsize::new(n).expect("a cache holds something");
        Self {
            store,
            known_ttl,
            unknown_ttl,
            cache: Mutex::new(Caches {
                known: LruCache::new(size(KNOWN_KEYS)),
                unknown: LruCache::new(size(UNKNOWN_KEYS)),
            }),
        }
    }

    /// The key behind the request's `Authorization: Bearer …` header, if it grants `scope`.
    pub async fn authorize(&self, headers: &HeaderMap, scope: Option<Scope>) -> Result<ApiKey, Problem> {
        let secret = bearer(headers)?;
        let key = self.find(&hash_secret(secret)).await?;
        if key.is_revoked() {
            return Err(Problem::unauthenticated("Revoked API key"));
        }
        // Checked on every request, cached or not: a key stops at its instant.
        if key.is_expired_at(Utc::now()) {
            return Err(Problem::unauthenticated("Expired API key"));
        }
        match scope {
            Some(scope) if !key.allows(scope) => {
                let scope = serde_json::to_value(scope).expect("scopes serialize");
                Err(Problem::forbidden(format!("This key lacks the scope {scope}")))
            }
            _ => Ok(key),
        }
    }

    async fn find(&self, hash: &str) -> Result<ApiKey, Problem> {
        {
            let mut cache = self.cache.lock().expect("cache lock");
            if let Some((at, key)) = cache.known.get(hash)
                && at.elapsed() < self.known_ttl
            {
                return Ok(key.clone());
            }
            if let Some(at) = cache.unknown.get(hash)
                && at.elapsed() < self.unknown_ttl
            {
                return Err(unknown());
            }
        }
        let key = self.store.find(hash).await.map_err(|e| {
            tracing::error!(error = %e, "API key lookup failed");
            Problem::unavailable()
        })?;
        let mut cache = self.cache.lock().expect("cache lock");
        match key {
            Some(key) => {
                cache.unknown.pop(hash);
                cache.known.put(hash.to_owned(), (Instant::now(), key.clone()));
                Ok(key)
            }
            None => {
                cache.known.pop(hash);
                cache.unknown.put(hash.to_owned(), Instant::now());
                Err(unknown())
            }
        }
    }
}

fn unknown() -> Problem {
    Problem::unauthenticated("Unknown API key")
}

fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let value = headers
        .get("authorization")
        .ok_or_else(|| Problem::unauthenticated("Send an API key as Authorization: Bearer <key>"))?;
    let value = value.to_str().map_err(|_| Problem::unauthenticated("Malformed Authorization header"))?;
    let (scheme, secret) =
        value.split_once(' ').ok_or_else(|| Problem::unauthenticated("Malformed Authorization header"))?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(Problem::unauthenticated("Use the Bearer scheme: Authorization: Bearer <key>"));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use axum::http::HeaderValue;
    use herald_core::{keys::new_key, store::StoreError};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Keys in memory, counting the reads that reach the table.
    #[derive(Default)]
    struct CountingKeys {
        keys: Mutex<HashMap<String, ApiKey>>,
        reads: AtomicUsize,
    }

    impl CountingKeys {
        fn with(keys: impl IntoIterator<Item = ApiKey>) -> Arc<Self> {
            let keys = keys.into_iter().map(|k| (k.key_hash.clone(), k)).collect();
            Arc::new(Self { keys: Mutex::new(keys), reads: AtomicUsize::new(0) })
        }
        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
        fn revoke(&self, secret: &str) {
            self.keys.lock().unwrap().remove(&hash_secret(secret));
        }
    }

    #[async_trait::async_trait]
    impl ApiKeyStore for CountingKeys {
        async fn find(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.keys.lock().unwrap().get(key_hash).cloned())
        }
        async fn put(&self, key: &ApiKey) -> Result<(), StoreError> {
            self.keys.lock().unwrap().insert(key.key_hash.clone(), key.clone());
            Ok(())
        }
    }

    fn bearer_of(secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {secret}")).unwrap());
        headers
    }

    async fn status(auth: &Authenticator, secret: &str) -> u16 {
        match auth.authorize(&bearer_of(secret), None).await {
            Ok(_) => 200,
            Err(problem) => problem.status,
        }
    }

    #[tokio::test]
    async fn an_unknown_key_is_read_once_per_ttl_however_often_it_is_sent() {
        let store = CountingKeys::with([]);
        let auth = Authenticator::with_ttls(store.clone(), HOUR, HOUR);
        for _ in 0..5 {
            assert_eq!(status(&auth, "hk_bogus").await, 401);
        }
        assert_eq!(store.reads(), 1);
    }

    #[tokio::test]
    async fn an_unknown_key_is_read_again_once_its_ttl_is_over() {
        let store = CountingKeys::with([]);
        let auth = Authenticator::with_ttls(store.clone(), HOUR, Duration::ZERO);
        status(&auth, "hk_bogus").await;
        status(&auth, "hk_bogus").await;
        assert_eq!(store.reads(), 2);
    }

    #[tokio::test]
    async fn each_unknown_key_costs_its_own_read() {
        let store = CountingKeys::with([]);
        let auth = Authenticator::with_ttls(store.clone(), HOUR, HOUR);
        status(&auth, "hk_one").await;
        status(&auth, "hk_two").await;
        assert_eq!(store.reads(), 2);
    }

    #[tokio::test]
    async fn the_unknown_cache_is_bounded_and_forgets_the_oldest_hash() {
        let store = CountingKeys::with([]);
        let auth = Authenticator::with_ttls(store.clone(), HOUR, HOUR);
        for i in 0..=UNKNOWN_KEYS {
            status(&auth, &format!("hk_{i}")).await;
        }
        assert_eq!(auth.cache.lock().unwrap().unknown.len(), UNKNOWN_KEYS);
        let reads = store.reads();
        status(&auth, "hk_0").await;
        assert_eq!(store.reads(), reads + 1, "the oldest hash was evicted");
    }

    #[tokio::test]
    async fn a_found_key_is_trusted_for_its_ttl_without_reading_again() {
        let store = CountingKeys::with([new_key("hk_good", "k", [Scope::Admin])]);
        let auth = Authenticator::with_ttls(store.clone(), HOUR, HOUR);
        assert_eq!(status(&auth, "hk_good").await, 200);
        assert_eq!(status(&auth, "hk_good").await, 200);
        assert_eq!(store.reads(), 1);
    }

    #[tokio::test]
    async fn a_revoked_key_is_refused_once_the_known_ttl_is_over() {
        let store = CountingKeys::with([new_key("hk_good", "k", [Scope::Admin])]);
        let auth = Authenticator::with_ttls(store.clone(), Duration::ZERO, HOUR);
        assert_eq!(status(&auth, "hk_good").await, 200);
        store.revoke("hk_good");
        assert_eq!(status(&auth, "hk_good").await, 401);
    }

    #[tokio::test]
    async fn a_key_marked_revoked_is_refused_as_unauthenticated() {
        let revoked = ApiKey { revoked_at: Some(Utc::now()), ..new_key("hk_revoked", "k", [Scope::Admin]) };
        let auth = Authenticator::new(CountingKeys::with([revoked]));
        let problem = auth.authorize(&bearer_of("hk_revoked"), None).await.unwrap_err();
        assert_eq!((problem.status, problem.detail.as_str()), (401, "Revoked API key"));
    }

    #[test]
    fn revocation_takes_effect_within_ten_seconds_as_documented() {
        assert_eq!(KNOWN_KEY_TTL, Duration::from_secs(10));
        assert!(UNKNOWN_KEY_TTL <= Duration::from_secs(10));
    }

    #[tokio::test]
    async fn an_expired_key_is_refused_as_unauthenticated() {
        let expired = new_key("hk_old", "k", [Scope::Admin]).expiring_at(Utc::now() - chrono::Duration::seconds(1));
        let auth = Authenticator::new(CountingKeys::with([expired]));
        let problem = auth.authorize(&bearer_of("hk_old"), None).await.unwrap_err();
        assert_eq!((problem.status, problem.detail.as_str()), (401, "Expired API key"));
    }

    #[tokio::test]
    async fn a_key_before_its_expiry_is_accepted() {
        let key = new_key("hk_new", "k", [Scope::Admin]).expiring_at(Utc::now() + chrono::Duration::hours(1));
        let auth = Authenticator::new(CountingKeys::with([key]));
        assert_eq!(status(&auth, "hk_new").await, 200);
    }

    #[tokio::test]
    async fn a_key_without_an_expiry_is_accepted() {
        let auth = Authenticator::new(CountingKeys::with([new_key("hk_forever", "k", [Scope::Admin])]));
        assert_eq!(status(&auth, "hk_forever").await, 200);
    }
}
