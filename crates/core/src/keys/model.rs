//! API keys: only their SHA-256 hash is ever stored, with the scopes they grant.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Everything, including managing keys.
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "profiles:read")]
    ProfilesRead,
    #[serde(rename = "profiles:write")]
    ProfilesWrite,
    #[serde(rename = "notifications:send")]
    NotificationsSend,
    #[serde(rename = "notifications:read")]
    NotificationsRead,
    #[serde(rename = "templates:read")]
    TemplatesRead,
    #[serde(rename = "templates:write")]
    TemplatesWrite,
    /// Record behaviour events (`POST /v1/events`).
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "segments:read")]
    SegmentsRead,
    #[serde(rename = "segments:write")]
    SegmentsWrite,
    /// Read the jobs of bulk profile imports (`GET /v1/imports`).
    #[serde(rename = "imports:read")]
    ImportsRead,
    /// Read campaigns and their counters (`GET /v1/campaigns/{id}`).
    #[serde(rename = "campaigns:read")]
    CampaignsRead,
    /// Create and cancel campaigns.
    #[serde(rename = "campaigns:write")]
    CampaignsWrite,
    /// Read the suppression list.
    #[serde(rename = "suppressions:read")]
    SuppressionsRead,
    /// Put addresses on the suppression list and take them off.
    #[serde(rename = "suppressions:write")]
    SuppressionsWrite,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Hex SHA-256 of the secret; the secret itself is shown once and never kept.
    pub key_hash: String,
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    pub created_at: DateTime<Utc>,
    /// From this instant on the key is refused as if unknown; absent, it never expires.
    /// RFC 3339 in the table, like `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When an operator revoked the key: it is refused from then on, and kept so that
    /// `herald keys list` still shows it. Absent on a key in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// The same key, refused from `at` on.
    pub fn expiring_at(self, at: DateTime<Utc>) -> Self {
        Self { expires_at: Some(at), ..self }
    }

    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// The name operators use for the key (`herald keys revoke <id>`): derived from the
    /// hash, so every key has one, those stored before ids existed too, and nothing about
    /// the hash or the secret can be read back from it.
    pub fn id(&self) -> String {
        key_id(&self.key_hash)
    }
}

/// `key_` and 16 hex digits of the SHA-256 of `key-id:` and the key's hash.
pub fn key_id(key_hash: &str) -> String {
    let digest = Sha256::digest(format!("key-id:{key_hash}").as_bytes());
    format!("key_{}", &hex::encode(digest)[..16])
}

/// A new random secret, e.g. `hk_3f9a…` (32 random bytes, hex).
pub fn generate_secret() -> String {
    format!("hk_{}", hex::encode(rand::random::<[u8; 32]>()))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A key record for `secret`; the caller shows the secret once and stores the record.
pub fn new_key(secret: &str, name: &str, scopes: impl IntoIterator<Item = Scope>) -> ApiKey {
    ApiKey {
        key_hash: hash_secret(secret),
        name: name.to_owned(),
        scopes: scopes.into_iter().collect(),
        created_at: Utc::now(),
        expires_at: None,
        revoked_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_stored_as_the_sha256_of_its_secret() {
        let key = new_key("secret", "ci", [Scope::ProfilesRead]);
        assert_eq!(key.key_hash, "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b");
        assert!(!serde_json::to_string(&key).unwrap().contains("\"secret\""));
    }

    #[test]
    fn generated_secrets_differ() {
        assert_ne!(generate_secret(), generate_secret());
    }

    #[test]
    fn admin_allows_every_scope_and_others_only_their_own() {
        let admin = new_key("a", "admin", [Scope::Admin]);
        let reader = new_key("r", "reader", [Scope::ProfilesRead]);
        assert!(admin.allows(Scope::ProfilesWrite));
        assert!(reader.allows(Scope::ProfilesRead));
        assert!(!reader.allows(Scope::ProfilesWrite));
    }

    #[test]
    fn a_key_without_an_expiry_never_expires() {
        let key = new_key("s", "forever", [Scope::ProfilesRead]);
        assert!(!key.is_expired_at(DateTime::<Utc>::MAX_UTC));
    }

    #[test]
    fn a_key_expires_at_its_instant_and_not_before() {
        let at = Utc::now();
        let key = new_key("s", "temporary", [Scope::ProfilesRead]).expiring_at(at);
        assert!(!key.is_expired_at(at - chrono::Duration::seconds(1)));
        assert!(key.is_expired_at(at));
    }

    #[test]
    fn the_expiry_is_stored_as_rfc_3339_and_omitted_when_absent() {
        let forever = serde_json::to_value(new_key("s", "k", [Scope::Admin])).unwrap();
        assert!(forever.get("expires_at").is_none());
        let at = "2026-12-31T23:59:59Z".parse::<DateTime<Utc>>().unwrap();
        let expiring = serde_json::to_value(new_key("s", "k", [Scope::Admin]).expiring_at(at)).unwrap();
        assert_eq!(expiring["expires_at"], "2026-12-31T23:59:59Z");
    }

    #[test]
    fn a_key_id_is_stable_and_neither_the_hash_nor_a_part_of_it() {
        let key = new_key("secret", "ci", [Scope::ProfilesRead]);
        assert_eq!(key.id(), key_id(&key.key_hash));
        assert_eq!(key.id(), new_key("secret", "other", [Scope::Admin]).id());
        assert_ne!(key.id(), new_key("other secret", "ci", [Scope::ProfilesRead]).id());
        let digits = key.id().strip_prefix("key_").unwrap().to_owned();
        assert_eq!(digits.len(), 16);
        assert!(!key.key_hash.contains(&digits));
    }

    #[test]
    fn a_key_in_use_has_no_revocation_stored() {
        let key = serde_json::to_value(new_key("s", "k", [Scope::Admin])).unwrap();
        assert!(key.get("revoked_at").is_none());
    }

    #[test]
    fn scopes_serialize_by_their_names() {
        let json = serde_json::to_value(Scope::ProfilesWrite).unwrap();
        assert_eq!(json, "profiles:write");
    }
}
