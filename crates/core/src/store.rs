//! The error every store and queue port returns. It says whether a retry can help, so the
//! edges (the API's problem+json, a queue's batch item failures) decide once.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read (optimistic concurrency): read again, merge,
    /// write again.
    #[error("the record was changed by another writer")]
    Conflict,
    /// Throttled, timed out, a server fault, the service unreachable: the same request
    /// may succeed later.
    #[error("the store failed: {0}")]
    Transient(String),
    /// Refused for good: a request the service rejects, an item that cannot be read or
    /// written, a missing resource. Sending it again cannot help.
    #[error("the store refused the request: {0}")]
    Fatal(String),
}

impl StoreError {
    /// Whether the same request may succeed later (a conflict does, once read again).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Fatal(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fatal_error_is_not_worth_a_retry() {
        assert!(StoreError::Conflict.is_retryable());
        assert!(StoreError::Transient("throttled".into()).is_retryable());
        assert!(!StoreError::Fatal("no such table".into()).is_retryable());
    }
}
