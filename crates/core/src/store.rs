//! The error every store and queue port returns.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read (optimistic concurrency).
    #[error("the record was changed by another writer")]
    Conflict,
    #[error("the store failed: {0}")]
    Unavailable(String),
}
