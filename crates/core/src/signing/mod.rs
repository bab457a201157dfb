//! Signing keys, one key ring per purpose: HMAC keys for tracking tokens (held only by the
//! functions that mint or verify them) and Ed25519 keys for webhook signatures (whose
//! public halves are published, so a receiver verifies and can mint nothing). A ring
//! names each key with an id: the first key signs, the others still verify, so a key
//! rotates without breaking what was signed before.

pub mod admin;
mod ring;
pub mod webhook;

pub use ring::{
    GENERATED_SECRET_CHARS, KeyRing, KeyRingError, KeyRingStore, KeyRingWriter, LEGACY_KEY_ID, MIN_SECRET_CHARS,
    RingRefusal, SigningKey,
};

#[cfg(feature = "memory")]
pub mod memory {
    pub use super::ring::memory::MemoryKeyRings;
}
