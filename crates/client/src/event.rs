//! The behaviour event a producer tracks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A behaviour event, as `POST /v1/events` takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Generated (UUID v4) by [`Event::new`]: a resent event is counted once.
    pub event_id: String,
    pub user_id: String,
    pub name: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub properties: serde_json::Map<String, Value>,
}

impl Event {
    /// An event of `user_id` named `name`, happening now, with a fresh `event_id`.
    pub fn new(user_id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.into(),
            name: name.into(),
            timestamp: Utc::now(),
            properties: serde_json::Map::new(),
        }
    }

    /// Sets one property.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Sets when the event happened (default: when it was built).
    pub fn at(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Replaces the generated id, e.g. by one the producer already stores with the event.
    pub fn with_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = event_id.into();
        self
    }
}
