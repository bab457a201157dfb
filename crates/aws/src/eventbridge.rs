//! Domain events to the EventBridge bus, ten entries per PutEvents (the service's limit).

use async_trait::async_trait;
use aws_sdk_eventbridge::{Client, types::PutEventsRequestEntry};
use herald_core::{
    backoff::Backoff,
    events::{DomainEvent, EventPublisher, PublishError, SOURCE},
};

/// PutEvents takes at most ten entries.
pub const PUT_EVENTS_BATCH: usize = 10;

#[derive(Clone, Debug)]
pub struct EventBridgePublisher {
    client: Client,
    bus: String,
    backoff: Backoff,
}

impl EventBridgePublisher {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self { client, bus: bus.into(), backoff: Backoff::default() }
    }

    fn entry(&self, event: &DomainEvent) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(event.detail_type())
            .detail(event.detail_json())
            .build()
    }

    /// Sends one batch; entries the service reports as failed (throttled or internal
    /// errors) are sent again with backoff until none is left or the attempts run out.
    async fn put_batch(&self, mut entries: Vec<PutEventsRequestEntry>) -> Result<(), PublishError> {
        let mut retry = 0;
        loop {
            let output = self
                .client
                .put_events()
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| PublishError(crate::describe(&e)))?;
            if output.failed_entry_count == 0 {
                return Ok(());
            }
            // Results come back in request order: keep the entries that failed.
            let results = output.entries.unwrap_or_default();
            let mut reasons = Vec::new();
            entries = entries
                .into_iter()
                .zip(results)
                .filter(|(_, r)| r.error_code.is_some())
                .map(|(entry, r)| {
                    reasons.push(r.error_code.unwrap_or_default());
                    entry
                })
                .collect();
            if !self.backoff.wait(retry).await {
                return Err(PublishError(format!("{} event(s) not accepted: {}", entries.len(), reasons.join(", "))));
            }
            retry += 1;
        }
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError> {
        for chunk in events.chunks(PUT_EVENTS_BATCH) {
            self.put_batch(chunk.iter().map(|e| self.entry(e)).collect()).await?;
        }
        Ok(())
    }
}
