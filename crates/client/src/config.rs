//! The client's settings, and why [`Client::new`](crate::Client::new) refuses them.

use std::{fmt, time::Duration};

use crate::report::{BatchListener, ErrorCallback};

/// The most requests [`ClientConfig::max_in_flight`] allows.
pub const MAX_IN_FLIGHT: usize = 64;

/// What [`Client::track`](crate::Client::track) does when the queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FullQueuePolicy {
    /// Wait for room: [`Client::track`](crate::Client::track) returns once the event is queued.
    #[default]
    Block,
    /// Drop the new event and count it in [`Client::dropped`](crate::Client::dropped).
    DropNewest,
}

/// The client's settings. Start from [`ClientConfig::new`] and override fields.
#[derive(Clone)]
pub struct ClientConfig {
    /// The API's root, e.g. `https://api.example.com`.
    pub base_url: String,
    /// A key with the scope `events:write` (and `profiles:write` for
    /// [`Client::identify`](crate::Client::identify)).
    pub api_key: String,
    /// Events per batch (default 10; at most [`MAX_BATCH_EVENTS`](crate::MAX_BATCH_EVENTS), larger
    /// values are capped).
    pub batch_size: usize,
    /// The longest an event waits for its batch to fill (default 30 s).
    pub flush_interval: Duration,
    /// Messages (events, patches) the queue holds (default 10 000).
    pub max_queue: usize,
    pub full_queue: FullQueuePolicy,
    /// Retries after the first attempt (default 5).
    pub max_retries: u32,
    /// The backoff's first ceiling (default 100 ms); it doubles up to `retry_cap`.
    pub retry_base: Duration,
    /// The backoff's largest ceiling (default 10 s).
    pub retry_cap: Duration,
    /// The longest `Retry-After` honoured (default 60 s).
    pub max_retry_after: Duration,
    /// Per request (default 10 s).
    pub request_timeout: Duration,
    /// Requests of events sent at the same time (default 1; up to [`MAX_IN_FLIGHT`]). More
    /// raise a producer's throughput when its batches are of different users.
    pub max_in_flight: usize,
    pub on_batch: Option<BatchListener>,
    pub on_error: Option<ErrorCallback>,
}

impl ClientConfig {
    /// The defaults, for this API root and key.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self { base_url: base_url.into(), api_key: api_key.into(), ..Self::default() }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            api_key: String::new(),
            batch_size: 10,
            flush_interval: Duration::from_secs(30),
            max_queue: 10_000,
            full_queue: FullQueuePolicy::Block,
            max_retries: 5,
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1,
            on_batch: None,
            on_error: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue", &self.max_queue)
            .field("full_queue", &self.full_queue)
            .field("max_retries", &self.max_retries)
            .field("max_in_flight", &self.max_in_flight)
            .field("on_batch", &self.on_batch.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish_non_exhaustive()
    }
}

/// Why [`Client::new`](crate::Client::new) refused its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("base_url: {0}")]
    BaseUrl(String),
    #[error("batch_size and max_queue must be at least 1, max_in_flight 1 to {MAX_IN_FLIGHT}")]
    OutOfRange,
    #[error("Client::new must be called inside a Tokio runtime")]
    NoRuntime,
    #[error("the HTTP client: {0}")]
    Http(String),
}
