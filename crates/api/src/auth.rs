//! Bearer API keys: looked up by their SHA-256 hash, cached briefly per environment.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use herald_core::keys::{ApiKey, ApiKeyStore, Scope, hash_secret};

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

/// How long a key found in the table is trusted without asking again. A revoked key can
/// keep working this long in a warm environment; unknown keys are never cached, so a new
/// key works at once.
const CACHE_TTL: Duration = Duration::from_secs(60);

pub struct Authenticator {
    store: Arc<dyn ApiKeyStore>,
    cache: Mutex<HashMap<String, (Instant, ApiKey)>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn ApiKeyStore>) -> Self {
        Self { store, cache: Mutex::new(HashMap::new()) }
    }

    /// The key behind the request's `Authorization: Bearer …` header, if it grants `scope`.
    pub async fn authorize(&self, headers: &HeaderMap, scope: Option<Scope>) -> Result<ApiKey, Problem> {
        let secret = bearer(headers)?;
        let key = self.find(&hash_secret(secret)).await?;
        match scope {
            Some(scope) if !key.allows(scope) => {
                let scope = serde_json::to_value(scope).expect("scopes serialize");
                Err(Problem::forbidden(format!("This key lacks the scope {scope}")))
            }
            _ => Ok(key),
        }
    }

    async fn find(&self, hash: &str) -> Result<ApiKey, Problem> {
        if let Some((at, key)) = self.cache.lock().expect("cache lock").get(hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(key.clone());
        }
        let key = self.store.find(hash).await.map_err(|e| {
            tracing::error!(error = %e, "API key lookup failed");
            Problem::unavailable()
        })?;
        let key = key.ok_or_else(|| Problem::unauthenticated("Unknown API key"))?;
        self.cache.lock().expect("cache lock").insert(hash.to_owned(), (Instant::now(), key.clone()));
        Ok(key)
    }
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
