//! Key rings in AWS Secrets Manager: one secret per purpose, its value the ring's JSON
//! (parsed by core). Functions read each once at init and keep it for the environment's
//! life; a rotation reaches them as environments are recycled. `herald secrets` writes
//! them (PutSecretValue: a new version, made current).

use async_trait::async_trait;
use herald_core::{
    signing::{KeyRing, KeyRingError, KeyRingStore, KeyRingWriter},
    store::StoreError,
};

pub struct SecretsManagerKeyRings {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerKeyRings {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl KeyRingStore for SecretsManagerKeyRings {
    async fn key_ring(&self, secret_id: &str) -> Result<KeyRing, KeyRingError> {
        let answer = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| KeyRingError::Unavailable(crate::errors::unavailable(e)))?;
        // A binary secret is no ring either: rings are JSON text.
        let text =
            answer.secret_string().ok_or_else(|| KeyRingError::Malformed("the secret has no string value".into()))?;
        KeyRing::parse(text)
    }
}

#[async_trait]
impl KeyRingWriter for SecretsManagerKeyRings {
    async fn put_key_ring(&self, secret_id: &str, ring: &KeyRing) -> Result<(), StoreError> {
        // The SDK's errors name the secret's id at most, never the value sent.
        self.client
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(ring.to_secret_value())
            .send()
            .await
            .map_err(crate::errors::unavailable)?;
        Ok(())
    }
}
