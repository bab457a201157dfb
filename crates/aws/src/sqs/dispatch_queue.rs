//! The dispatcher's own queue over SQS: one message per campaign page (a `DispatchPage` as
//! JSON), ten per SendMessageBatch, delayed up to the 15 minutes SQS allows.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use herald_core::{
    backoff::Backoff,
    campaigns::{DispatchPage, DispatchQueue},
    store::StoreError,
};

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
