//! The key ring model, its JSON form (a secret's value) and the port that reads one.

use async_trait::async_trait;
use serde_json::Value;

use crate::store::StoreError;

/// The id of the key that verifies tokens made before key ids existed (`<payload>.<sig>`):
/// the operator puts the old signing secret in the ring under this id.
pub const LEGACY_KEY_ID: &str = "legacy";

/// The shortest secret a ring accepts (GenerateSecretString's default length).
pub const MIN_SECRET_CHARS: usize = 32;

/// The longest key id: it travels in every token and signature header.
const MAX_ID_CHARS: usize = 64;

/// One key of a ring. Its secret is never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub id: String,
    secret: String,
}

impl SigningKey {
    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Keys by id; the first is current (signs), the others only verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

/// Why a key ring cannot be had. Never quotes the secret's value.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// The store did not answer; `is_retryable` says whether trying again can help.
    #[error("the key ring could not be read: {0}")]
    Unavailable(StoreError),
    /// The value is not a key ring: fixing the secret is the only remedy.
    #[error("the key ring is malformed: {0}")]
    Malformed(String),
}

impl KeyRingError {
    pub fn is_retryable(&self) -> bool {
        match self {
            KeyRingError::Unavailable(e) => e.is_retryable(),
            KeyRingError::Malformed(_) => false,
        }
    }
}

fn malformed(reason: impl Into<String>) -> KeyRingError {
    KeyRingError::Malformed(reason.into())
}

impl KeyRing {
    /// A ring of `(id, secret)` pairs, the first current.
    pub fn new<I: Into<String>, S: Into<String>>(keys: impl IntoIterator<Item = (I, S)>) -> Result<Self, KeyRingError> {
        let keys: Vec<SigningKey> =
            keys.into_iter().map(|(id, secret)| SigningKey { id: id.into(), secret: secret.into() }).collect();
        if keys.is_empty() {
            return Err(malformed("it holds no key"));
        }
        for (i, key) in keys.iter().enumerate() {
            let n = i + 1;
            let id_ok = !key.id.is_empty()
                && key.id.len() <= MAX_ID_CHARS
                && key.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !id_ok {
                return Err(malformed(format!("key {n}'s id must be 1 to {MAX_ID_CHARS} of A-Z, a-z, 0-9, - and _")));
            }
            if key.secret.chars().count() < MIN_SECRET_CHARS {
                return Err(malformed(format!("key {n}'s secret is shorter than {MIN_SECRET_CHARS} characters")));
            }
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(malformed(format!("key {n}'s id is the id of an earlier key")));
            }
        }
        Ok(Self { keys })
    }

    /// A secret's value: `{"id":"k1","secret":"…"}` (one key, what CloudFormation's
    /// GenerateSecretString makes) or `{"keys":[{"id":"k2","secret":"…"},{"id":"k1",…}]}`
    /// (the first current, the others verify only).
    pub fn parse(text: &str) -> Result<Self, KeyRingError> {
        // serde_json's errors would quote none of the value, but a position into it is no
        // use either: the shape is what is wrong.
        let value: Value = serde_json::from_str(text).map_err(|_| malformed("the value is not JSON"))?;
        let Value::Object(object) = value else { return Err(malformed("the value is not a JSON object")) };
        let key = |n: usize, entry: &serde_json::Map<String, Value>| -> Result<(String, String), KeyRingError> {
            let field = |name: &str| match entry.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(malformed(format!("key {n}'s {name} is not a string"))),
                None => Err(malformed(format!("key {n} has no {name}"))),
            };
            Ok((field("id")?, field("secret")?))
        };
        match object.get("keys") {
            Some(Value::Array(entries)) => {
                if object.len() > 1 {
                    return Err(malformed("a value with keys has no other field"));
                }
                let pairs = entries
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| match entry {
                        Value::Object(entry) => key(i + 1, entry),
                        _ => Err(malformed(format!("key {} is not a JSON object", i + 1))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Self::new(pairs)
            }
            Some(_) => Err(malformed("keys is not a list")),
            None => Self::new([key(1, &object)?]),
        }
    }

    /// The key that signs.
    pub fn current(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The key named `id`, current or verify-only.
    pub fn get(&self, id: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The ring as a secret's value, `{"keys":[{"id":…,"secret":…},…]}` (what `parse`
    /// reads): for writing to the secret store, never for showing.
    pub fn to_secret_value(&self) -> String {
        let keys: Vec<Value> = self.keys.iter().map(|k| serde_json::json!({"id": k.id, "secret": k.secret})).collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// The ring with a new random key second: it verifies at once and signs only once
    /// promoted, so no environment signs with a key that environments started before the
    /// rotation (the API verifying links, the key list receivers fetch) do not know. Every
    /// key is kept. Its id is `k` and one more than the highest `k<n>` of the ring; its
    /// secret is as long as the template's generated ones.
    pub fn with_new_key(&self) -> Self {
        let highest = self.keys.iter().filter_map(|k| k.id.strip_prefix('k')?.parse::<u64>().ok()).max().unwrap_or(0);
        let secret: String = rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric)
            .take(GENERATED_SECRET_CHARS)
            .map(char::from)
            .collect();
        let mut keys = self.keys.clone();
        keys.insert(1, SigningKey { id: format!("k{}", highest + 1), secret });
        Self { keys }
    }

    /// The ring with the key `id` first: it signs from now on, the others verify.
    pub fn promoted(&self, id: &str) -> Result<Self, RingRefusal> {
        let position = self.keys.iter().position(|k| k.id == id).ok_or_else(|| RingRefusal::Unknown(id.to_owned()))?;
        let mut keys = self.keys.clone();
        let key = keys.remove(position);
        keys.insert(0, key);
        Ok(Self { keys })
    }

    /// The ring without the key `id`: what it signed stops verifying. The signing key
    /// (and so the last) is never retired: rotate and promote first.
    pub fn without(&self, id: &str) -> Result<Self, RingRefusal> {
        if self.get(id).is_none() {
            return Err(RingRefusal::Unknown(id.to_owned()));
        }
        if self.keys.len() == 1 {
            return Err(RingRefusal::LastKey(id.to_owned()));
        }
        if self.current().id == id {
            return Err(RingRefusal::SigningKey(id.to_owned()));
        }
        Ok(Self { keys: self.keys.iter().filter(|k| k.id != id).cloned().collect() })
    }
}

/// The length of a secret `with_new_key` makes: the template's `PasswordLength`.
pub const GENERATED_SECRET_CHARS: usize = 48;

/// Why a ring is not changed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingRefusal {
    #[error("the ring has no key {0}")]
    Unknown(String),
    #[error("{0} is the ring's last key")]
    LastKey(String),
    #[error("{0} is the key that signs; promote another first, then retire it")]
    SigningKey(String),
}

/// Where key rings are kept (a secret store), each under its own id.
#[async_trait]
pub trait KeyRingStore: Send + Sync {
    /// The ring stored as `secret_id`.
    async fn key_ring(&self, secret_id: &str) -> Result<KeyRing, KeyRingError>;
}

/// Writing rings (`herald secrets`): apart from [`KeyRingStore`], so that what only reads
/// a ring cannot change it.
#[async_trait]
pub trait KeyRingWriter: KeyRingStore {
    /// Stores `ring` as the value of the existing secret `secret_id`.
    async fn put_key_ring(&self, secret_id: &str, ring: &KeyRing) -> Result<(), StoreError>;
}

#[cfg(feature = "memory")]
pub mod memory {
    use std::collections::HashMap;

    use super::*;

    use std::sync::Mutex;

    /// Secrets' values by id, parsed as the adapter parses them.
    #[derive(Default)]
    pub struct MemoryKeyRings(Mutex<HashMap<String, String>>);

    impl MemoryKeyRings {
        pub fn new(values: HashMap<String, String>) -> Self {
            Self(Mutex::new(values))
        }

        /// The value stored as `secret_id`, as the secret store holds it.
        pub fn value(&self, secret_id: &str) -> Option<String> {
            self.0.lock().expect("rings lock").get(secret_id).cloned()
        }
    }

    fn no_such_secret() -> StoreError {
        StoreError::Fatal("no such secret".into())
    }

    #[async_trait]
    impl KeyRingStore for MemoryKeyRings {
        async fn key_ring(&self, secret_id: &str) -> Result<KeyRing, KeyRingError> {
            let value = self.value(secret_id).ok_or_else(|| KeyRingError::Unavailable(no_such_secret()))?;
            KeyRing::parse(&value)
        }
    }

    #[async_trait]
    impl KeyRingWriter for MemoryKeyRings {
        async fn put_key_ring(&self, secret_id: &str, ring: &KeyRing) -> Result<(), StoreError> {
            let mut values = self.0.lock().expect("rings lock");
            let value = values.get_mut(secret_id).ok_or_else(no_such_secret)?;
            *value = ring.to_secret_value();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "0123456789abcdef0123456789abcdef-one";
    const S2: &str = "0123456789abcdef0123456789abcdef-two";
    const S3: &str = "0123456789abcdef0123456789abcdef-three";

    #[test]
    fn a_single_key_value_is_a_ring_of_that_key() {
        let ring = KeyRing::parse(&format!(r#"{{"id":"k1","secret":"{S1}"}}"#)).unwrap();
        assert_eq!(ring.current().id, "k1");
        assert_eq!(ring.current().secret(), S1.as_bytes());
        assert_eq!(ring.keys().len(), 1);
    }

    #[test]
    fn in_a_list_of_keys_the_first_is_current_and_every_one_is_found_by_id() {
        let ring =
            KeyRing::parse(&format!(r#"{{"keys":[{{"id":"k2","secret":"{S2}"}},{{"id":"k1","secret":"{S1}"}}]}}"#))
                .unwrap();
        assert_eq!(ring.current().id, "k2");
        assert_eq!(ring.get("k1").unwrap().secret(), S1.as_bytes());
        assert_eq!(ring.get("k3"), None);
    }

    #[test]
    fn bad_shapes_are_refused_with_a_reason_that_never_quotes_the_value() {
        let refused = [
            ("not json".to_owned(), "not JSON"),
            (format!(r#"["{S1}"]"#), "not a JSON object"),
            (format!(r#"{{"secret":"{S1}"}}"#), "key 1 has no id"),
            (r#"{"id":"k1"}"#.to_owned(), "key 1 has no secret"),
            (format!(r#"{{"id":"k1","secret":["{S1}"]}}"#), "key 1's secret is not a string"),
            (r#"{"id":"k1","secret":"short-secret-value"}"#.to_owned(), "shorter than 32"),
            (format!(r#"{{"id":"k.1","secret":"{S1}"}}"#), "key 1's id must be"),
            (r#"{"keys":[]}"#.to_owned(), "holds no key"),
            (format!(r#"{{"keys":"{S1}"}}"#), "keys is not a list"),
            (format!(r#"{{"keys":["{S1}"]}}"#), "key 1 is not a JSON object"),
            (
                format!(r#"{{"keys":[{{"id":"a","secret":"{S1}"}},{{"id":"a","secret":"{S2}"}}]}}"#),
                "key 2's id is the id",
            ),
            (format!(r#"{{"keys":[{{"id":"a","secret":"{S1}"}}],"id":"b","secret":"{S2}"}}"#), "no other field"),
        ];
        for (value, reason) in refused {
            let error = KeyRing::parse(&value).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(reason), "{value}: {message}");
            assert!(!message.contains("0123456789abcdef") && !message.contains("short-secret"), "{message}");
            assert!(!error.is_retryable());
        }
    }

    #[test]
    fn a_ring_reads_back_from_its_secret_value() {
        let ring = KeyRing::new([("k2", S2), ("k1", S1)]).unwrap();
        assert_eq!(KeyRing::parse(&ring.to_secret_value()).unwrap(), ring);
    }

    #[test]
    fn a_new_key_goes_second_with_the_next_id_and_every_old_key_stays() {
        let ring = KeyRing::new([("legacy", S2), ("k1", S1)]).unwrap();
        let rotated = ring.with_new_key();
        let ids: Vec<&str> = rotated.keys().iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["legacy", "k2", "k1"]);
        let new = rotated.get("k2").unwrap();
        assert_eq!(new.secret().len(), GENERATED_SECRET_CHARS);
        assert!(new.secret().iter().all(u8::is_ascii_alphanumeric));
        assert_eq!(rotated.current(), ring.current());
        assert_eq!(rotated.get("k1"), ring.get("k1"));
        assert_ne!(ring.with_new_key().get("k2").unwrap().secret(), new.secret());
        // What a secret store holds is a ring again.
        assert_eq!(KeyRing::parse(&rotated.to_secret_value()).unwrap(), rotated);
    }

    #[test]
    fn a_promoted_key_signs_and_the_others_keep_their_order() {
        let ring = KeyRing::new([("k1", S1), ("k3", S3), ("k2", S2)]).unwrap();
        let promoted = ring.promoted("k2").unwrap();
        assert_eq!(promoted.keys().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k2", "k1", "k3"]);
        assert_eq!(promoted.current(), ring.get("k2").unwrap());
        assert_eq!(ring.promoted("k9"), Err(RingRefusal::Unknown("k9".into())));
    }

    #[test]
    fn a_key_that_only_verifies_is_retired() {
        let ring = KeyRing::new([("k2", S2), ("k1", S1)]).unwrap();
        let retired = ring.without("k1").unwrap();
        assert_eq!(retired.keys().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k2"]);
    }

    #[test]
    fn the_signing_key_the_last_key_and_an_unknown_key_are_not_retired() {
        let two = KeyRing::new([("k2", S2), ("k1", S1)]).unwrap();
        assert_eq!(two.without("k2"), Err(RingRefusal::SigningKey("k2".into())));
        assert_eq!(two.without("k9"), Err(RingRefusal::Unknown("k9".into())));
        let one = KeyRing::new([("k1", S1)]).unwrap();
        assert_eq!(one.without("k1"), Err(RingRefusal::LastKey("k1".into())));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let ring = KeyRing::new([("k1", S1)]).unwrap();
        assert!(!format!("{ring:?}").contains(S1));
    }
}
