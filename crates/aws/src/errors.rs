//! How a failed call to AWS becomes a `StoreError`: which error codes are worth retrying,
//! and the full text of an SDK error.

/// A request the SDK would not build: a bug of ours, never cured by sending it again.
pub(crate) fn unbuildable(e: aws_sdk_dynamodb::error::BuildError) -> herald_core::store::StoreError {
    herald_core::store::StoreError::Fatal(describe(&e))
}

/// Error codes of AWS services that say "not now" rather than "never": throttling, server
/// faults, a conflicting request still in progress.
pub(crate) const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "TransactionConflictException",
    "LimitExceededException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalServerError",
    "InternalError",
    "InternalFailure",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMSThrottlingException",
];

/// A failed call to a service, with the SDK's full account of it: fatal when the service
/// answered with an error code that retrying cannot cure (a validation error, a missing
/// table or queue, access denied), transient otherwise (throttling, a server fault, a
/// timeout, no answer at all).
pub(crate) fn unavailable<E>(e: E) -> herald_core::store::StoreError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use herald_core::store::StoreError;
    match e.code() {
        Some(code) if !TRANSIENT_CODES.contains(&code) => StoreError::Fatal(describe(&e)),
        _ => StoreError::Transient(describe(&e)),
    }
}

/// The full text of an SDK error, its causes included (the default Display is terse).
pub fn describe(e: &(impl std::error::Error + 'static)) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::{error::ErrorMetadata, operation::put_item::PutItemError};
    use herald_core::store::StoreError;

    use super::unavailable;

    fn failed(code: Option<&str>) -> StoreError {
        let mut meta = ErrorMetadata::builder().message("refused");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        unavailable(PutItemError::generic(meta.build()))
    }

    #[test]
    fn a_code_that_retrying_cannot_cure_is_fatal() {
        assert!(matches!(failed(Some("ValidationException")), StoreError::Fatal(_)));
        assert!(matches!(failed(Some("ResourceNotFoundException")), StoreError::Fatal(_)));
    }

    #[test]
    fn throttling_and_server_faults_are_transient() {
        assert!(matches!(failed(Some("ThrottlingException")), StoreError::Transient(_)));
        assert!(matches!(failed(Some("InternalServerError")), StoreError::Transient(_)));
    }

    #[test]
    fn a_failure_without_a_code_is_transient() {
        assert!(matches!(failed(None), StoreError::Transient(_)));
    }
}
