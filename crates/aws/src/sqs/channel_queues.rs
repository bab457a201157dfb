//! The channel queues over SQS, written straight to: a campaign's deliveries (from the
//! dispatcher) and the recipients a worker tries again. Each job is one message, its body
//! the bare JSON of the `ChannelMessage` (which the worker reads as it reads the bus's
//! envelopes), packed ten per SendMessageBatch and never over the 256 KiB a call takes.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use futures_util::StreamExt as _;
use herald_core::{
    channel::Channel,
    delivery::{ChannelMessage, ChannelQueues},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::sqs::batch::{delay_seconds, entries, pack, send_batch};

/// SendMessageBatch calls in flight at once.
const CONCURRENT_BATCHES: usize = 4;

#[derive(Clone, Debug)]
pub struct SqsChannelQueues {
    client: Client,
    queue_urls: BTreeMap<Channel, String>,
    backoff: Backoff,
}

impl SqsChannelQueues {
    /// The queue of each channel jobs may be sent to; a job for a channel without one is
    /// an error.
    pub fn new(client: Client, queue_urls: BTreeMap<Channel, String>) -> Self {
        Self { client, queue_urls, backoff: Backoff::default() }
    }

    /// Retries of entries SQS failed on its side (throttling, internal errors).
    pub fn with_backoff(self, backoff: Backoff) -> Self {
        Self { backoff, ..self }
    }
}

#[async_trait]
impl ChannelQueues for SqsChannelQueues {
    async fn enqueue(&self, jobs: &[ChannelMessage], delay: Duration) -> Result<(), StoreError> {
        let mut by_channel: BTreeMap<Channel, Vec<String>> = BTreeMap::new();
        for job in jobs {
            let body = serde_json::to_string(job)
                .map_err(|e| StoreError::Fatal(format!("unwritable channel message: {e}")))?;
            by_channel.entry(job.channel).or_default().push(body);
        }
        let delay_seconds = delay_seconds(delay);
        let mut calls = Vec::new();
        for (channel, bodies) in by_channel {
            let queue_url = self
                .queue_urls
                .get(&channel)
                .ok_or_else(|| StoreError::Fatal(format!("no queue is configured for the {channel} channel")))?;
            for batch in pack(bodies)? {
                calls.push((queue_url.clone(), entries(batch, delay_seconds)?));
            }
        }
        let mut sent = futures_util::stream::iter(calls)
            .map(|(queue_url, entries)| async move {
                send_batch(&self.client, &queue_url, entries, &self.backoff, "delivery job").await
            })
            .buffer_unordered(CONCURRENT_BATCHES);
        while let Some(result) = sent.next().await {
            result?;
        }
        Ok(())
    }
}
