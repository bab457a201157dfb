//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::events::{DomainEvent, EventPublisher, PublishError};

#[derive(Default)]
pub struct MemoryBus {
    pub published: Mutex<Vec<DomainEvent>>,
    /// The size of each publish, in events.
    pub batches: Mutex<Vec<usize>>,
    pub fail: bool,
}

#[async_trait]
impl EventPublisher for MemoryBus {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError> {
        if self.fail {
            return Err(PublishError("bus down".into()));
        }
        self.published.lock().unwrap().extend_from_slice(events);
        self.batches.lock().unwrap().push(events.len());
        Ok(())
    }
}
