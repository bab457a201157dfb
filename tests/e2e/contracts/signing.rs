//! `KeyRingStore`: a secret's value read as a key ring; a missing secret is an error that
//! no retry cures; a value that is no ring is refused, its value never quoted.
//! `KeyRingWriter`: a ring written is read back as written; a missing secret is not made.

use std::collections::HashMap;

use herald_aws::SecretsManagerKeyRings;
use herald_core::signing::{KeyRingError, KeyRingWriter, memory::MemoryKeyRings};

contract!(key_ring_store: memory_store, aws_store;
    a_stored_ring_is_read_with_its_current_key_first,
    a_missing_secret_is_unavailable_for_good,
    a_value_that_is_no_ring_is_malformed_and_not_quoted,
    a_written_ring_is_read_back_as_written,
    writing_to_a_missing_secret_fails_for_good,
);

const ROTATING: &str = r#"{"keys":[{"id":"k2","secret":"second-secret-0123456789abcdef0123"},{"id":"k1","secret":"first-secret-0123456789abcdef01234"}]}"#;
const NOT_A_RING: &str = r#"{"id":"k1","password":"not-a-ring-0123456789abcdef0123456"}"#;

/// The store, and the ids it holds ROTATING and NOT_A_RING under.
struct Secrets {
    store: Box<dyn KeyRingWriter>,
    rotating: String,
    not_a_ring: String,
    missing: String,
}

async fn memory_store() -> Box<Secrets> {
    let values =
        HashMap::from([("rotating".to_owned(), ROTATING.to_owned()), ("bad".to_owned(), NOT_A_RING.to_owned())]);
    Box::new(Secrets {
        store: Box::new(MemoryKeyRings::new(values)),
        rotating: "rotating".into(),
        not_a_ring: "bad".into(),
        missing: "missing".into(),
    })
}

async fn aws_store() -> Box<Secrets> {
    let clients = super::moto().await;
    let create = async |value: &str| {
        let name = herald_e2e::tables::unique("ring");
        let created = clients.secretsmanager().create_secret().name(&name).secret_string(value).send().await;
        created.expect("secret").arn.expect("an ARN")
    };
    let (rotating, not_a_ring) = (create(ROTATING).await, create(NOT_A_RING).await);
    Box::new(Secrets {
        store: Box::new(SecretsManagerKeyRings::new(clients.secretsmanager())),
        rotating,
        not_a_ring,
        missing: herald_e2e::tables::unique("missing"),
    })
}

async fn a_stored_ring_is_read_with_its_current_key_first(secrets: &Secrets) {
    let ring = secrets.store.key_ring(&secrets.rotating).await.unwrap();
    assert_eq!(ring.keys().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k2", "k1"]);
    assert_eq!(ring.current().secret(), b"second-secret-0123456789abcdef0123");
}

async fn a_missing_secret_is_unavailable_for_good(secrets: &Secrets) {
    let error = secrets.store.key_ring(&secrets.missing).await.unwrap_err();
    assert!(matches!(error, KeyRingError::Unavailable(_)), "{error}");
    assert!(!error.is_retryable(), "{error}");
}

async fn a_value_that_is_no_ring_is_malformed_and_not_quoted(secrets: &Secrets) {
    let error = secrets.store.key_ring(&secrets.not_a_ring).await.unwrap_err();
    assert!(matches!(error, KeyRingError::Malformed(_)), "{error}");
    assert!(error.to_string().contains("key 1 has no secret"), "{error}");
    assert!(!error.to_string().contains("not-a-ring"), "{error}");
}

async fn a_written_ring_is_read_back_as_written(secrets: &Secrets) {
    let rotated = secrets.store.key_ring(&secrets.rotating).await.unwrap().with_new_key();
    secrets.store.put_key_ring(&secrets.rotating, &rotated).await.unwrap();
    assert_eq!(secrets.store.key_ring(&secrets.rotating).await.unwrap(), rotated);
}

async fn writing_to_a_missing_secret_fails_for_good(secrets: &Secrets) {
    let ring = secrets.store.key_ring(&secrets.rotating).await.unwrap();
    let error = secrets.store.put_key_ring(&secrets.missing, &ring).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(!error.to_string().contains("second-secret"), "{error}");
    assert!(secrets.store.key_ring(&secrets.missing).await.is_err(), "no secret was made");
}
