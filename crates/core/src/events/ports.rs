//! What events needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use crate::events::DomainEvent;

#[derive(Debug, thiserror::Error)]
#[error("publishing events failed: {0}")]
pub struct PublishError(pub String);

#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes every event or fails; adapters batch to the service's limit.
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError>;
}
