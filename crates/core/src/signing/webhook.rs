//! Webhook signatures: Ed25519 over `"<t>.<body>"`, in the header
//! `x-herald-signature: t=<unix seconds>,kid=<key id>,v1=<base64 signature>`. Receivers
//! verify with the public keys Herald publishes (`GET /v1/webhook-keys`); nothing a
//! receiver holds can sign, nor mint a tracking token (those use another ring's keys).

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::KeyRing;

/// The header a signed webhook carries.
pub const SIGNATURE_HEADER: &str = "x-herald-signature";

/// The algorithm every published key is for.
pub const ALGORITHM: &str = "Ed25519";

/// A published verification key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub kid: String,
    pub alg: String,
    /// The 32-byte Ed25519 public key, base64 (standard alphabet, padded).
    pub public_key: String,
}

/// Signs webhook bodies with a ring's current key; every key's public half is published.
#[derive(Clone)]
pub struct WebhookSigner {
    /// (id, key), the current first.
    keys: Vec<(String, ed25519_dalek::SigningKey)>,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSigner").field("keys", &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>()).finish()
    }
}

impl WebhookSigner {
    /// Each key's Ed25519 seed is the SHA-256 of its secret, so a secret string that
    /// CloudFormation generates is a signing key.
    pub fn new(ring: &KeyRing) -> Self {
        let keys = ring
            .keys()
            .iter()
            .map(|k| (k.id.clone(), ed25519_dalek::SigningKey::from_bytes(&Sha256::digest(k.secret()).into())))
            .collect();
        Self { keys }
    }

    /// The header value for `body` sent at `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &str) -> String {
        let (kid, key) = &self.keys[0];
        let signature = key.sign(format!("{timestamp}.{body}").as_bytes());
        format!("t={timestamp},kid={kid},v1={}", STANDARD.encode(signature.to_bytes()))
    }

    /// Every key's public half, the current first: what `GET /v1/webhook-keys` answers.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys
            .iter()
            .map(|(kid, key)| PublicKey {
                kid: kid.clone(),
                alg: ALGORITHM.to_owned(),
                public_key: STANDARD.encode(key.verifying_key().to_bytes()),
            })
            .collect()
    }
}

/// What a receiver does: the signature's timestamp if `header` signs `body` with one of
/// `keys` (picked by its kid). Checking the timestamp's age is the receiver's choice.
pub fn verify(header: &str, body: &str, keys: &[PublicKey]) -> Option<i64> {
    let field = |name: &str| header.split(',').find_map(|part| part.strip_prefix(name)?.strip_prefix('='));
    let timestamp: i64 = field("t")?.parse().ok()?;
    let kid = field("kid")?;
    let key = keys.iter().find(|k| k.kid == kid && k.alg == ALGORITHM)?;
    let key: [u8; 32] = STANDARD.decode(&key.public_key).ok()?.try_into().ok()?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).ok()?;
    let signature: [u8; 64] = STANDARD.decode(field("v1")?).ok()?.try_into().ok()?;
    key.verify_strict(format!("{timestamp}.{body}").as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
        .ok()?;
    Some(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "0123456789abcdef0123456789abcdef-one";
    const S2: &str = "0123456789abcdef0123456789abcdef-two";

    fn signer(keys: &[(&str, &str)]) -> WebhookSigner {
        WebhookSigner::new(&KeyRing::new(keys.iter().copied()).unwrap())
    }

    #[test]
    fn a_signature_verifies_with_the_published_public_key_and_names_its_kid() {
        let signer = signer(&[("k1", S1)]);
        let header = signer.sign(1_700_000_000, r#"{"text":"hi"}"#);
        assert!(header.starts_with("t=1700000000,kid=k1,v1="), "{header}");
        assert_eq!(verify(&header, r#"{"text":"hi"}"#, &signer.public_keys()), Some(1_700_000_000));
    }

    #[test]
    fn signatures_are_ed25519_over_timestamp_and_body_seeded_by_the_secrets_sha256() {
        // Known answer, computed independently (Python's cryptography): the private key is
        // Ed25519PrivateKey.from_private_bytes(sha256(secret)), the signed text b"1700000000.{}".
        let signer = signer(&[("k1", S1)]);
        assert_eq!(signer.public_keys()[0].public_key, "sp2NWB7OJpc0eV5XNvDCjcse8QttaV9n2VLibxTvC2Y=");
        assert_eq!(
            signer.sign(1_700_000_000, "{}"),
            "t=1700000000,kid=k1,v1=uIuHWCpS+zQny7U/i5uBTMK+ZQeRL3o7CpuxbtV0TxeYyH581akPmBguBahSEe7zgYPYWeqjqIbbRGpmNeScAA=="
        );
    }

    #[test]
    fn an_altered_body_or_timestamp_fails_verification() {
        let signer = signer(&[("k1", S1)]);
        let keys = signer.public_keys();
        let header = signer.sign(1_700_000_000, r#"{"text":"hi"}"#);
        assert_eq!(verify(&header, r#"{"text":"ho"}"#, &keys), None);
        assert_eq!(verify(&header.replace("t=1700000000", "t=1700000001"), r#"{"text":"hi"}"#, &keys), None);
    }

    #[test]
    fn a_signature_by_a_key_not_published_under_its_kid_fails() {
        let header = signer(&[("k1", S2)]).sign(1, "b");
        assert_eq!(verify(&header, "b", &signer(&[("k1", S1)]).public_keys()), None);
        assert_eq!(verify(&header, "b", &signer(&[("k2", S2)]).public_keys()), None);
    }

    #[test]
    fn after_a_rotation_the_new_key_signs_and_both_are_published() {
        let rotated = signer(&[("k2", S2), ("k1", S1)]);
        let published = rotated.public_keys();
        assert_eq!(published.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k2", "k1"]);
        assert!(rotated.sign(1, "b").contains(",kid=k2,"));
        // What the old key signed before the rotation still verifies.
        assert_eq!(verify(&signer(&[("k1", S1)]).sign(1, "b"), "b", &published), Some(1));
    }

    #[test]
    fn the_public_key_is_the_sha256_seeds_and_stable() {
        let a = signer(&[("k1", S1)]).public_keys();
        assert_eq!(a, signer(&[("k1", S1)]).public_keys());
        assert_ne!(a[0].public_key, signer(&[("k1", S2)]).public_keys()[0].public_key);
        assert_eq!(STANDARD.decode(&a[0].public_key).unwrap().len(), 32);
        assert_eq!(a[0].alg, "Ed25519");
    }
}
