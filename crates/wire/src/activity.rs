//! The limits of one `POST /v1/events` request: the API refuses a larger batch, and the
//! producer SDK packs its batches to stay within them.

/// Events in one batch.
pub const MAX_EVENTS_PER_BATCH: usize = 500;
/// The body's bytes of JSON.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
