//! Durable change events. A state change and the events it publishes are one write: the
//! events ride on the changed item itself, in an [`Outbox`], in the same conditional
//! write. The table's stream (DynamoDB Streams, old and new images) carries every write
//! to the relay function, which publishes what each write put in its outbox. A failed
//! PutEvents makes the stream deliver the write again: an event is delayed, never lost,
//! and a retried request that finds the change already made has nothing left to publish.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::events::{DomainEvent, EventPublisher, PublishError};

/// The events one write published, in their wire form, under an id that is new for
/// every write that publishes (e.g. the item's new version).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    pub id: String,
    pub events: Vec<StoredEvent>,
}

/// An event as the bus carries it: its `detail-type` and its JSON `detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub detail_type: String,
    pub detail: String,
}

impl StoredEvent {
    pub fn of(event: &DomainEvent) -> Self {
        Self { detail_type: event.detail_type(), detail: event.detail_json() }
    }
}

impl Outbox {
    pub fn new(id: impl Into<String>, events: &[DomainEvent]) -> Self {
        Self { id: id.into(), events: events.iter().map(StoredEvent::of).collect() }
    }

    /// What a write from `before` to `after` published: the new outbox's events, unless
    /// the write left the outbox as it was (a write that publishes nothing keeps or drops
    /// the old one, and must not publish it again).
    pub fn due<'a>(before: Option<&Outbox>, after: Option<&'a Outbox>) -> &'a [StoredEvent] {
        match after {
            Some(after) if before.is_none_or(|before| before.id != after.id) => &after.events,
            _ => &[],
        }
    }
}

/// One write as the stream reports it: the item's outbox before and after.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxWrite {
    pub before: Option<Outbox>,
    pub after: Option<Outbox>,
}

impl OutboxWrite {
    pub fn due(&self) -> &[StoredEvent] {
        Outbox::due(self.before.as_ref(), self.after.as_ref())
    }
}

/// The first write of a batch whose events are not all published: it and every later
/// write are to be delivered again.
#[derive(Debug, thiserror::Error)]
#[error("write {position} of the batch and those after it are not published: {error}")]
pub struct Unpublished {
    pub position: usize,
    pub error: PublishError,
}

/// Publishes what each write of a stream batch put in its outbox, in stream order.
pub struct OutboxRelay {
    events: Arc<dyn EventPublisher>,
}

impl OutboxRelay {
    pub fn new(events: Arc<dyn EventPublisher>) -> Self {
        Self { events }
    }

    /// Publishes the writes' events in groups of whole writes that fit one PutEvents by
    /// count, so a failure re-delivers only from the group that failed on.
    pub async fn relay(&self, writes: &[OutboxWrite]) -> Result<(), Unpublished> {
        let max = crate::limits::eventbridge::PUT_EVENTS_ENTRIES;
        let mut start = 0;
        while start < writes.len() {
            let mut end = start;
            let mut group: Vec<DomainEvent> = Vec::new();
            while end < writes.len() && (group.is_empty() || group.len() + writes[end].due().len() <= max) {
                group.extend(writes[end].due().iter().cloned().map(DomainEvent::Stored));
                end += 1;
            }
            if !group.is_empty() {
                self.events.publish(&group).await.map_err(|error| Unpublished { position: start, error })?;
            }
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ProfileChanged, memory::MemoryBus};

    fn changed(version: u64) -> DomainEvent {
        DomainEvent::ProfileChanged(ProfileChanged {
            user_id: "u1".into(),
            version,
            changed_attributes: vec!["a".into()],
            changed_fields: vec![],
            created: version == 1,
            erased: false,
        })
    }

    fn outbox(version: u64) -> Outbox {
        Outbox::new(version.to_string(), &[changed(version)])
    }

    #[test]
    fn a_write_that_fills_a_new_outbox_is_due() {
        let write = OutboxWrite { before: Some(outbox(1)), after: Some(outbox(2)) };
        assert_eq!(write.due(), outbox(2).events);
        let first = OutboxWrite { before: None, after: Some(outbox(1)) };
        assert_eq!(first.due().len(), 1);
    }

    #[test]
    fn a_write_that_keeps_or_drops_the_outbox_publishes_nothing() {
        let kept = OutboxWrite { before: Some(outbox(1)), after: Some(outbox(1)) };
        assert!(kept.due().is_empty());
        let dropped = OutboxWrite { before: Some(outbox(1)), after: None };
        assert!(dropped.due().is_empty());
    }

    #[test]
    fn a_stored_event_is_published_as_it_was_written() {
        let event = changed(3);
        let stored = DomainEvent::Stored(StoredEvent::of(&event));
        assert_eq!(stored.detail_type(), event.detail_type());
        assert_eq!(stored.detail_json(), event.detail_json());
    }

    #[tokio::test]
    async fn the_relay_publishes_each_due_write_in_order() {
        let bus = Arc::new(MemoryBus::default());
        let writes = [
            OutboxWrite { before: None, after: Some(outbox(1)) },
            OutboxWrite { before: Some(outbox(1)), after: Some(outbox(1)) },
            OutboxWrite { before: Some(outbox(1)), after: Some(outbox(2)) },
        ];
        OutboxRelay::new(bus.clone()).relay(&writes).await.unwrap();
        let published = bus.published.lock().unwrap().clone();
        assert_eq!(
            published,
            [DomainEvent::Stored(StoredEvent::of(&changed(1))), DomainEvent::Stored(StoredEvent::of(&changed(2)))]
        );
    }

    #[tokio::test]
    async fn a_failed_publish_names_the_first_write_to_deliver_again() {
        let bus = Arc::new(MemoryBus { fail: true, ..Default::default() });
        let writes = [
            OutboxWrite { before: Some(outbox(1)), after: None },
            OutboxWrite { before: None, after: Some(outbox(1)) },
        ];
        let error = OutboxRelay::new(bus).relay(&writes).await.unwrap_err();
        assert_eq!(error.position, 0, "the group starts at the first write");
    }

    #[tokio::test]
    async fn writes_are_grouped_within_one_putevents() {
        let bus = Arc::new(MemoryBus::default());
        let writes: Vec<OutboxWrite> = (1..=25).map(|v| OutboxWrite { before: None, after: Some(outbox(v)) }).collect();
        OutboxRelay::new(bus.clone()).relay(&writes).await.unwrap();
        assert_eq!(bus.published.lock().unwrap().len(), 25);
        assert_eq!(*bus.batches.lock().unwrap(), [10, 10, 5]);
    }
}
