//! The dispatcher's own queue over SQS: one message per campaign page (a `DispatchPage` as
//! JSON), ten per SendMessageBatch, delayed up to the 15 minutes SQS allows.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::{Client, types::SendMessageBatchRequestEntry};
use herald_core::{
    backoff::Backoff,
    campaigns::DispatchPage,
    ports::{DispatchQueue, StoreError},
};

use crate::unavailable;

/// SendMessageBatch takes at most ten entries.
pub const SEND_BATCH_LIMIT: usize = 10;
/// The longest delay SQS gives a message.
pub const MAX_DELAY_SECONDS: u64 = 900;

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

    /// Sends one batch; entries SQS reports as failed on its side (throttling, internal
    /// errors) are sent again with backoff until none is left or the attempts run out.
    /// An entry failed by the sender's fault is not retried.
    async fn send_batch(&self, mut entries: Vec<SendMessageBatchRequestEntry>) -> Result<(), StoreError> {
        let mut retry = 0;
        loop {
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(unavailable)?;
            if output.failed.is_empty() {
                return Ok(());
            }
            if let Some(fault) = output.failed.iter().find(|f| f.sender_fault) {
                return Err(StoreError::Unavailable(format!(
                    "a dispatch message was refused: {} {}",
                    fault.code,
                    fault.message.as_deref().unwrap_or_default()
                )));
            }
            let reasons: Vec<String> = output.failed.iter().map(|f| f.code.clone()).collect();
            entries.retain(|entry| output.failed.iter().any(|f| f.id == entry.id));
            if !self.backoff.wait(retry).await {
                return Err(StoreError::Unavailable(format!(
                    "{} dispatch message(s) not accepted: {}",
                    entries.len(),
                    reasons.join(", ")
                )));
            }
            retry += 1;
        }
    }
}

#[async_trait]
impl DispatchQueue for SqsDispatchQueue {
    async fn dispatch(&self, pages: &[DispatchPage], delay: Duration) -> Result<(), StoreError> {
        // Rounded up: a page is never delivered before its time.
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        let delay_seconds = seconds.min(MAX_DELAY_SECONDS) as i32;
        for chunk in pages.chunks(SEND_BATCH_LIMIT) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, page)| {
                    let body = serde_json::to_string(page).expect("a page serializes");
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .delay_seconds(delay_seconds)
                        .build()
                        .map_err(|e| StoreError::Unavailable(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.send_batch(entries).await?;
        }
        Ok(())
    }
}
