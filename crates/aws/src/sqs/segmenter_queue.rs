//! The segmenter's own queue over SQS: work an invocation had no time for, as `segment.work`
//! envelopes (the shape of everything else on that queue), each body within SQS's message
//! size and ten bodies a SendMessageBatch.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use herald_core::{
    limits::{self, sqs::MESSAGE_BYTES},
    segments::{HandedOn, SegmenterQueue, Work},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::sqs::batch::{entries, pack, send_batch};

/// What a body holds besides its work items: the envelope and the list's commas.
const ENVELOPE_BYTES: usize = 256;

#[derive(Clone, Debug)]
pub struct SqsSegmenterQueue {
    client: Client,
    queue_url: String,
    backoff: Backoff,
}

impl SqsSegmenterQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into(), backoff: Backoff::default() }
    }
}

/// The message bodies carrying `work`, in order, each at most SQS's message size.
pub fn bodies(work: &[Work]) -> Vec<String> {
    let sizes: Vec<usize> = work.iter().map(|w| serde_json::to_string(w).expect("work serializes").len() + 1).collect();
    let mut work = work.iter();
    limits::pack(&sizes, usize::MAX, MESSAGE_BYTES - ENVELOPE_BYTES)
        .into_iter()
        .map(|range| {
            let detail = HandedOn { work: work.by_ref().take(range.len()).cloned().collect() };
            serde_json::json!({"source": "herald", "detail-type": HandedOn::DETAIL_TYPE, "detail": detail}).to_string()
        })
        .collect()
}

#[async_trait]
impl SegmenterQueue for SqsSegmenterQueue {
    async fn hand_on(&self, work: &[Work]) -> Result<(), StoreError> {
        for batch in pack(bodies(work))? {
            send_batch(&self.client, &self.queue_url, entries(batch, 0)?, &self.backoff, "segmenter message").await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use herald_core::segments::Change;

    use super::*;

    fn change(user: usize) -> Work {
        let change = Change { attributes: ["tier".to_owned()].into(), ..Default::default() };
        Work::Change { user_id: format!("user-{user:06}-{}", "x".repeat(64)), change }
    }

    #[test]
    fn handed_on_work_reads_back_as_it_was() {
        let work = vec![change(1), Work::Task(herald_core::events::SegmentTask::Sweep)];
        let [body] = &bodies(&work)[..] else { panic!("one body") };
        let envelope: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(envelope["detail-type"], "segment.work");
        let read: HandedOn = serde_json::from_value(envelope["detail"].clone()).unwrap();
        assert_eq!(read.work, work);
    }

    #[test]
    fn a_large_hand_on_is_split_into_bodies_sqs_takes_and_keeps_every_item() {
        let work: Vec<Work> = (0..20_000).map(change).collect();
        let bodies = bodies(&work);
        assert!(bodies.len() > 1);
        assert!(bodies.iter().all(|b| b.len() <= MESSAGE_BYTES), "a body over SQS's limit");
        let read: Vec<Work> = bodies
            .iter()
            .flat_map(|b| {
                let envelope: serde_json::Value = serde_json::from_str(b).unwrap();
                serde_json::from_value::<HandedOn>(envelope["detail"].clone()).unwrap().work
            })
            .collect();
        assert_eq!(read, work);
    }
}
