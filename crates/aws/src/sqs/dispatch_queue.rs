//! The dispatcher's own queue over SQS: one message per campaign page (a `DispatchPage` as
//! JSON), ten per SendMessageBatch, or per settle check (a `SettleCheck` as JSON), delayed
//! up to the 15 minutes SQS allows.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use herald_core::{
    campaigns::{DispatchPage, DispatchQueue, SettleCheck},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::sqs::batch::{delay_seconds, entries, pack, send_batch};

#[derive(Clone, Debug)]
pub struct SqsDispatchQueue {
    client: Client,
    queue_url: String,
    backoff: Backoff,
}

impl SqsDispatchQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into(), backoff: Backoff::default() }
    }
}

#[async_trait]
impl DispatchQueue for SqsDispatchQueue {
    async fn dispatch(&self, pages: &[DispatchPage], delay: Duration) -> Result<(), StoreError> {
        let bodies = pages.iter().map(|page| serde_json::to_string(page).expect("a page serializes")).collect();
        self.send(bodies, delay).await
    }

    async fn check(&self, check: &SettleCheck, delay: Duration) -> Result<(), StoreError> {
        self.send(vec![serde_json::to_string(check).expect("a check serializes")], delay).await
    }
}

impl SqsDispatchQueue {
    async fn send(&self, bodies: Vec<String>, delay: Duration) -> Result<(), StoreError> {
        for batch in pack(bodies)? {
            send_batch(
                &self.client,
                &self.queue_url,
                entries(batch, delay_seconds(delay))?,
                &self.backoff,
                "dispatch message",
            )
            .await?;
        }
        Ok(())
    }
}
