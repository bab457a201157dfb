//! Why something was not sent, not queued, or not finished.

use herald_wire::activity::MAX_BATCH_BYTES;

use crate::event::Event;

/// Why something was given up.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SendError {
    #[error("refused with {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: String },
    #[error("the event's JSON ({bytes} bytes) exceeds the API's {MAX_BATCH_BYTES}-byte limit")]
    EventTooLarge { bytes: usize },
}

/// Why an event or patch was not queued.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// [`FullQueuePolicy::DropNewest`](crate::FullQueuePolicy::DropNewest) dropped it (counted in
    /// [`Client::dropped`](crate::Client::dropped)).
    #[error("the queue is full: the event was dropped")]
    Dropped,
    /// [`Client::try_track`](crate::Client::try_track) under
    /// [`FullQueuePolicy::Block`](crate::FullQueuePolicy::Block): not queued, not counted.
    #[error("the queue is full")]
    Full(Box<Event>),
    #[error("the client is closed")]
    Closed,
}

/// Why [`Client::close`](crate::Client::close) or [`Client::flush`](crate::Client::flush) did not
/// finish.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("timed out; the background task goes on sending")]
    Timeout,
    #[error("the client is closed")]
    Closed,
}
