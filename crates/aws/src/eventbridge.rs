//! Domain events to the EventBridge bus, packed into PutEvents requests by count and by
//! bytes (`herald_core::limits::eventbridge`).

use async_trait::async_trait;
use aws_sdk_eventbridge::{Client, types::PutEventsRequestEntry};
use herald_core::{
    events::{DomainEvent, EventPublisher, PublishError, SOURCE},
    limits::{
        self,
        eventbridge::{PUT_EVENTS_BYTES, PUT_EVENTS_ENTRIES, entry_bytes},
    },
};
use herald_wire::backoff::Backoff;

/// Entries (by their sizes, as EventBridge counts them) packed into requests of at most
/// `PUT_EVENTS_ENTRIES` and `PUT_EVENTS_BYTES`, in order. An entry over the limit on its
/// own is refused: EventBridge would refuse the whole request.
pub fn pack(sizes: &[usize]) -> Result<Vec<std::ops::Range<usize>>, PublishError> {
    if let Some(size) = sizes.iter().find(|&&s| s > PUT_EVENTS_BYTES) {
        return Err(PublishError(format!(
            "an event of {size} bytes is over the {PUT_EVENTS_BYTES} bytes PutEvents takes"
        )));
    }
    Ok(limits::pack(sizes, PUT_EVENTS_ENTRIES, PUT_EVENTS_BYTES))
}

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

    /// The entry of `event`, with its size as EventBridge counts it.
    fn entry(&self, event: &DomainEvent) -> (PutEventsRequestEntry, usize) {
        let (detail_type, detail) = (event.detail_type(), event.detail_json());
        let size = entry_bytes(SOURCE, &detail_type, &detail);
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        (entry, size)
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
                .map_err(|e| PublishError(crate::errors::describe(&e)))?;
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
        let (entries, sizes): (Vec<_>, Vec<_>) = events.iter().map(|e| self.entry(e)).unzip();
        for batch in pack(&sizes)? {
            self.put_batch(entries[batch].to_vec()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_hold_ten_entries_at_most() {
        let batches = pack(&[100; 23]).unwrap();
        assert_eq!(batches, [0..10, 10..20, 20..23]);
    }

    #[test]
    fn requests_stay_within_the_bytes_putevents_takes() {
        let batches = pack(&[400 * 1024; 5]).unwrap();
        assert_eq!(batches, [0..2, 2..4, 4..5]);
    }

    #[test]
    fn an_entry_over_the_limit_is_refused() {
        assert!(pack(&[10, PUT_EVENTS_BYTES + 1]).is_err());
        assert_eq!(pack(&[PUT_EVENTS_BYTES]).unwrap().len(), 1);
    }
}
