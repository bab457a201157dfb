//! A producer SDK for Herald's HTTP API.
//!
//! [`Client::track`] queues a behaviour event and returns at once; a background task batches
//! the queue and `POST`s it to `/v1/events`. [`Client::identify`] queues a profile patch that
//! the same task sends as `PUT /v1/users/{id}`.
//!
//! - **Batching**: a batch leaves when it holds [`ClientConfig::batch_size`] events, when its
//!   oldest event has waited [`ClientConfig::flush_interval`], on [`Client::flush`] and on
//!   [`Client::close`]. A batch never exceeds the API's limits ([`MAX_BATCH_EVENTS`] events,
//!   [`MAX_BATCH_BYTES`] bytes of JSON): larger ones are split, never refused. Only a single
//!   event whose JSON alone exceeds the limit cannot be sent; it reaches the error callback.
//! - **Exactly-once counting**: every [`Event`] gets a client-side `event_id` (UUID v4) when it
//!   is built. A batch that is retried (a timeout, a 5xx after the server already stored it)
//!   carries the same ids, and Herald counts each id once.
//! - **Retries**: network errors, `408`, `409`, `425`, `429` and `5xx` are retried up to
//!   [`ClientConfig::max_retries`] times with exponential backoff and full jitter
//!   ([`herald_wire::backoff::Backoff`]); a `429` waits at least its `Retry-After` (seconds,
//!   capped by [`ClientConfig::max_retry_after`]; an HTTP date works too). Other `4xx` are not retried. Whatever is
//!   given up reaches [`ClientConfig::on_error`] with its events or its patch.
//! - **Bounded queue**: at most [`ClientConfig::max_queue`] messages wait (besides the batch
//!   being formed and those in flight, at most `batch_size` events each). When it is full,
//!   [`FullQueuePolicy::Block`] makes [`Client::track`] wait for room (it is `async` for this
//!   reason; it returns at once whenever there is room) and [`FullQueuePolicy::DropNewest`]
//!   drops the new event and counts it in [`Client::dropped`]. [`Client::try_track`] never
//!   waits, whatever the policy.
//! - **Listeners**: [`ClientConfig::on_batch`] sees every dispatched request (its size, bytes,
//!   attempts and outcome, and for events what Herald [`Counted`]).
//!
//! The callbacks run on the client's background tasks: keep them quick and do not let them
//! panic (a panic ends the task, and what it held is lost).
//!
//! At most [`ClientConfig::max_in_flight`] requests of events are in flight at once (default
//! 1: batches leave in queue order, and Herald never has two of one producer's batches
//! competing for the same users' counters): a slow or failing API holds them, the queue
//! fills, and the full-queue policy applies.
//! Profile patches are sent one at a time, in queue order, so two patches of one user apply
//! in the order they were given.
//!
//! # Shutting down
//!
//! Call [`Client::close`] before the program ends: it sends everything queued and waits (up to
//! a timeout). Dropping the [`Client`] without closing it also makes the background task send
//! what is queued and then stop, but nothing waits for it: it only gets as far as the Tokio
//! runtime lets it run (a runtime that shuts down cancels it, and the rest is lost).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use herald_client::{Client, ClientConfig, Event, FullQueuePolicy};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(ClientConfig {
//!     batch_size: 50,
//!     full_queue: FullQueuePolicy::DropNewest,
//!     on_error: Some(std::sync::Arc::new(|failure: herald_client::Failure| {
//!         eprintln!("{} events lost: {}", failure.events.len(), failure.error);
//!     })),
//!     ..ClientConfig::new("https://api.example.com", "hk_live_...")
//! })?;
//!
//! client
//!     .track(Event::new("ana@example.com", "order").property("plan", "pro").property("amount", 42))
//!     .await?;
//! client.identify("ana@example.com", json!({"attributes": {"plan": ["pro"]}})).await?;
//!
//! // Before exiting: send what is queued, waiting at most five seconds.
//! client.close(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```

mod batch;
mod body;
mod client;
mod config;
mod error;
mod event;
mod report;
mod transport;

pub use client::Client;
pub use config::{ClientConfig, ConfigError, FullQueuePolicy, MAX_IN_FLIGHT};
pub use error::{CloseError, SendError, TrackError};
pub use event::Event;
/// The most events `POST /v1/events` takes in one request, and the largest body, in bytes.
pub use herald_wire::activity::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH as MAX_BATCH_EVENTS};
pub use report::{BatchListener, BatchReport, Counted, ErrorCallback, Failure, Outcome, RequestKind};
