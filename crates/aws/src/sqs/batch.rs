//! SendMessageBatch at the service's limits (`herald_core::limits::sqs`: ten entries, 1 MiB a
//! call), with the
//! entries SQS fails on its side sent again with exponential backoff and full jitter.

use std::time::Duration;

use aws_sdk_sqs::{Client, types::SendMessageBatchRequestEntry};
use herald_core::{
    limits::{
        self,
        sqs::{BATCH_BYTES, BATCH_ENTRIES, MAX_DELAY_SECONDS, MESSAGE_BYTES},
    },
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::errors::unavailable;

/// Message bodies packed into batches of at most `BATCH_ENTRIES`, each at most
/// `BATCH_BYTES` in all. A body over the limit on its own is an error: SQS would refuse it.
pub fn pack(bodies: Vec<String>) -> Result<Vec<Vec<String>>, StoreError> {
    if let Some(body) = bodies.iter().find(|b| b.len() > MESSAGE_BYTES) {
        return Err(StoreError::Fatal(format!(
            "a message of {} bytes is over the {MESSAGE_BYTES} bytes SQS takes",
            body.len()
        )));
    }
    let sizes: Vec<usize> = bodies.iter().map(String::len).collect();
    let mut bodies = bodies.into_iter();
    Ok(limits::pack(&sizes, BATCH_ENTRIES, BATCH_BYTES)
        .into_iter()
        .map(|r| bodies.by_ref().take(r.len()).collect())
        .collect())
}

/// The delay in whole seconds, rounded up (a job never arrives before its time) and capped
/// at what SQS allows.
pub fn delay_seconds(delay: Duration) -> i32 {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    seconds.min(MAX_DELAY_SECONDS) as i32
}

/// The entries of one batch of bodies, each delivered after `delay_seconds`.
pub(crate) fn entries(
    bodies: Vec<String>,
    delay_seconds: i32,
) -> Result<Vec<SendMessageBatchRequestEntry>, StoreError> {
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .delay_seconds(delay_seconds)
                .build()
                .map_err(|e| StoreError::Transient(e.to_string()))
        })
        .collect()
}

/// Sends one batch; entries SQS reports as failed on its side are sent again with
/// backoff until none is left or the attempts run out. An entry failed by the
/// sender's fault (e.g. too large) is not retried.
pub(crate) async fn send_batch(
    client: &Client,
    queue_url: &str,
    mut entries: Vec<SendMessageBatchRequestEntry>,
    backoff: &Backoff,
    what: &str,
) -> Result<(), StoreError> {
    let mut retry = 0;
    loop {
        let output = client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries.clone()))
            .send()
            .await
            .map_err(unavailable)?;
        if output.failed.is_empty() {
            return Ok(());
        }
        if let Some(fault) = output.failed.iter().find(|f| f.sender_fault) {
            return Err(StoreError::Fatal(format!(
                "a {what} was refused: {} {}",
                fault.code,
                fault.message.as_deref().unwrap_or_default()
            )));
        }
        let reasons: Vec<String> = output.failed.iter().map(|f| f.code.clone()).collect();
        entries.retain(|entry| output.failed.iter().any(|f| f.id == entry.id));
        if !backoff.wait(retry).await {
            return Err(StoreError::Transient(format!(
                "{} {what}(s) not accepted: {}",
                entries.len(),
                reasons.join(", ")
            )));
        }
        retry += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_ten_bodies_at_most() {
        let bodies: Vec<String> = (0..23).map(|i| format!("job {i}")).collect();
        let sizes: Vec<usize> = pack(bodies).unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn batches_stay_within_the_batch_bytes_in_all() {
        let body = "x".repeat(400 * 1024);
        let batches = pack(vec![body.clone(); 5]).unwrap();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(batches.iter().all(|b| b.iter().map(String::len).sum::<usize>() <= BATCH_BYTES));
    }

    #[test]
    fn a_body_over_the_limit_is_refused() {
        assert!(matches!(pack(vec!["x".repeat(MESSAGE_BYTES + 1)]), Err(StoreError::Fatal(_))));
        assert_eq!(pack(vec!["x".repeat(MESSAGE_BYTES)]).unwrap().len(), 1);
    }

    #[test]
    fn delays_round_up_to_whole_seconds_and_stop_at_15_minutes() {
        assert_eq!(delay_seconds(Duration::ZERO), 0);
        assert_eq!(delay_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(delay_seconds(Duration::from_secs(3600)), 900);
    }
}
