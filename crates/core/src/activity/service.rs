//! The service behind the events route: recording behaviour events.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};

use crate::{
    activity,
    activity::{ActivityEvent, ActivityStore, Recorded},
    events::{ActivityRecorded, DomainEvent, EventPublisher, PublishError},
    store::StoreError,
    validation::ValidationErrors,
};

#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl ActivityError {
    /// Whether the same batch may succeed later: a refused batch never will; a store may
    /// answer again; the events are published again when the batch is retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ActivityError::Invalid(_) => false,
            ActivityError::Store(e) => e.is_retryable(),
            ActivityError::Publish(_) => true,
        }
    }
}

/// Records behaviour events and tells the segmenter.
pub struct ActivityService {
    pub store: Arc<dyn ActivityStore>,
    pub events: Arc<dyn EventPublisher>,
}

impl ActivityService {
    /// Validates the whole batch (any bad event refuses it all), counts each new event
    /// once, then publishes `activity.recorded` for every user of the batch, counted or
    /// not, so that a retried batch that stopped before publishing still reaches the
    /// segmenter.
    pub async fn record(&self, events: &[ActivityEvent], now: DateTime<Utc>) -> Result<Recorded, ActivityError> {
        activity::check_batch(events, now)?;
        let recorded = self.store.record(events).await?;
        let mut by_user: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for event in events {
            by_user.entry(&event.user_id).or_default().insert(event.name.clone());
        }
        let notices: Vec<DomainEvent> = by_user
            .into_iter()
            .map(|(user_id, events)| {
                DomainEvent::ActivityRecorded(ActivityRecorded { user_id: user_id.to_owned(), events })
            })
            .collect();
        self.events.publish(&notices).await?;
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_batch_or_a_fatal_store_is_not_worth_a_retry() {
        assert!(!ActivityError::Invalid(ValidationErrors::single("events", "empty")).is_retryable());
        assert!(!ActivityError::Store(StoreError::Fatal("gone".into())).is_retryable());
        assert!(ActivityError::Store(StoreError::Transient("slow".into())).is_retryable());
        assert!(ActivityError::Publish(PublishError("bus down".into())).is_retryable());
    }
}
