//! TransactWriteItems: packing actions into transactions within its limits
//! (`herald_core::limits::dynamodb`), and the one classification of its failures:
//! cancelled (with a reason per action), transient (a retry can help) or fatal.

use std::{collections::HashSet, time::Duration};

use aws_sdk_dynamodb::{
    Client, error::SdkError, operation::transact_write_items::TransactWriteItemsError, types::TransactWriteItem,
};
use herald_core::{limits::dynamodb, store::StoreError};
use herald_wire::backoff::Backoff;

use crate::errors::{describe, unavailable};

/// Actions of one transaction.
pub(crate) const MAX_ITEMS: usize = dynamodb::TRANSACT_ITEMS;
/// Items of one transaction in all: packed to well under the limit, since the estimate
/// below ignores the request's own framing.
const TRANSACTION_BYTES: usize = dynamodb::TRANSACT_BYTES / 8 * 7;
/// Per action, on top of the item: table name, condition, values, framing.
pub(crate) const ACTION_OVERHEAD: usize = 256;

/// Stands for a server error in the codes of a failed transaction.
const SERVER_ERROR: &str = "InternalServerError";

/// The cancellation reason of an item whose condition failed.
pub(crate) const CONDITIONAL_CHECK_FAILED: &str = "ConditionalCheckFailed";

/// One conditional action of a transaction, with what packing needs to know of it.
pub(crate) struct Action {
    pub item: TransactWriteItem,
    /// The item's key: a transaction may not touch one item twice.
    pub key: String,
    /// Estimated bytes against the transaction's 4 MB.
    pub size: usize,
}

/// Splits `actions` into transactions (indexes, in order) of at most 100 actions and
/// `TRANSACTION_BYTES`, never two actions on one key in the same transaction.
pub(crate) fn pack(actions: &[Action]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    let mut keys = HashSet::new();
    for (i, action) in actions.iter().enumerate() {
        let fits = groups.last().is_some_and(|group| group.len() < MAX_ITEMS)
            && bytes + action.size <= TRANSACTION_BYTES
            && !keys.contains(action.key.as_str());
        if !fits {
            groups.push(Vec::new());
            bytes = 0;
            keys.clear();
        }
        groups.last_mut().expect("a group was pushed").push(i);
        bytes += action.size;
        keys.insert(action.key.as_str());
    }
    groups
}

/// What a failed TransactWriteItems call means for the actions it carried.
enum Failure {
    /// Cancelled, nothing written: the reason code of each action, in order (`None` for
    /// the actions that were fine).
    Cancelled(Vec<String>),
    /// Throttled, busy or a server fault: the same request may succeed later.
    Transient(String),
    Fatal(StoreError),
}

/// Cancellation reasons that sending the actions again can cure: throttling, another
/// transaction on the same item, a server fault.
pub(crate) fn is_retryable(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingError"
            | "ProvisionedThroughputExceeded"
            | "RequestLimitExceeded"
            | "TransactionConflict"
            | SERVER_ERROR
            | "ServiceUnavailable"
    )
}

fn classify(error: SdkError<TransactWriteItemsError>) -> Failure {
    // A 5xx or a timeout that outlived the SDK's own retries: the request may be sent
    // again with the same token, which DynamoDB applies at most once.
    let server_fault = error.raw_response().is_some_and(|r| r.status().is_server_error());
    let timed_out = match &error {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    };
    if server_fault || timed_out {
        return Failure::Transient(describe(&error));
    }
    match error.into_service_error() {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => Failure::Cancelled(
            cancelled
                .cancellation_reasons
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.code.unwrap_or_default())
                .collect(),
        ),
        e @ (TransactWriteItemsError::ThrottlingException(_)
        | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
        | TransactWriteItemsError::RequestLimitExceeded(_)
        | TransactWriteItemsError::TransactionInProgressException(_)
        | TransactWriteItemsError::InternalServerError(_)) => Failure::Transient(describe(&e)),
        other => Failure::Fatal(unavailable(other)),
    }
}

/// The code of each item of a cancelled transaction, in order (`None` for the items that
/// were fine); any other failure is the store's.
pub(crate) fn cancellation_codes(error: SdkError<TransactWriteItemsError>) -> Result<Vec<String>, StoreError> {
    match classify(error) {
        Failure::Cancelled(codes) => Ok(codes),
        // Throttled, a 5xx or a timeout that outlived the SDK's own retries (the local
        // endpoint fails some concurrent transactions so): written again after a pause.
        Failure::Transient(_) => Ok(vec![SERVER_ERROR.to_owned()]),
        Failure::Fatal(e) => Err(e),
    }
}

/// A fresh idempotency token: a transaction sent again with its token (after a timeout,
/// say) is applied at most once, so a write that did land is not later reported as
/// beaten by "another writer" (itself).
fn client_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// How long a throttled transaction keeps trying: an import must slow down under
/// throttling, not fail, so the budget is generous (a minute and more of waiting).
pub(crate) fn throttled_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5), 25)
}

/// Writes the actions `group` names (indexes into `actions`) in one transaction, each
/// under its own condition. A cancelled transaction writes nothing: the actions whose
/// condition failed are dropped (not written) and the rest sent again; throttling and
/// conflicts are waited out with `backoff`. Answers the indexes written.
pub(crate) async fn transact_conditionally(
    client: &Client,
    actions: &[Action],
    mut group: Vec<usize>,
    backoff: &Backoff,
) -> Result<Vec<usize>, StoreError> {
    let mut token = client_token();
    let mut retry = 0;
    while !group.is_empty() {
        let items = group.iter().map(|&i| actions[i].item.clone()).collect();
        let request = client.transact_write_items().set_transact_items(Some(items)).client_request_token(&token);
        let transient = match request.send().await {
            Ok(_) => return Ok(group),
            Err(e) => match classify(e) {
                Failure::Fatal(e) => return Err(e),
                Failure::Transient(description) => Some(description),
                Failure::Cancelled(codes) => {
                    if codes.len() != group.len() {
                        return Err(StoreError::Fatal(format!(
                            "a transaction of {} writes was cancelled with {} reasons: {codes:?}",
                            group.len(),
                            codes.len()
                        )));
                    }
                    if let Some(code) = codes
                        .iter()
                        .find(|c| !matches!(c.as_str(), "" | "None" | "ConditionalCheckFailed") && !is_retryable(c))
                    {
                        return Err(StoreError::Fatal(format!("a transaction was cancelled: {code} in {codes:?}")));
                    }
                    let waits = codes.iter().any(|c| is_retryable(c));
                    if !waits && !codes.iter().any(|c| c == "ConditionalCheckFailed") {
                        // Nothing to drop and nothing to wait for: sending it again would
                        // be cancelled again.
                        return Err(StoreError::Transient(format!("a transaction was cancelled: {codes:?}")));
                    }
                    group = group
                        .into_iter()
                        .zip(&codes)
                        .filter(|(_, c)| *c != "ConditionalCheckFailed")
                        .map(|(i, _)| i)
                        .collect();
                    // Settled, nothing written: the next request is a new one.
                    token = client_token();
                    waits.then(|| format!("a transaction was cancelled: {codes:?}"))
                }
            },
        };
        if let Some(description) = transient {
            if !backoff.wait(retry).await {
                return Err(StoreError::Transient(format!(
                    "still failing after {} attempts: {description}",
                    retry + 1
                )));
            }
            retry += 1;
        }
    }
    Ok(group)
}
