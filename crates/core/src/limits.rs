//! AWS's service limits: the one table every batching path packs its requests by, count
//! and bytes. Each value is the service's documented hard limit (not an adjustable
//! quota), with where it is documented; checked 2026-12-01. Where a value changed in
//! 2026 the note says so: on 2026-01-29 Lambda's asynchronous invocations, SQS and
//! EventBridge went from 256 KB to 1 MB payloads
//! (<https://aws.amazon.com/blogs/compute/more-room-to-build-serverless-services-now-support-payloads-up-to-1-mb>).

use std::ops::Range;

const KIB: usize = 1024;

/// Items (by their sizes) packed, in order, into batches of at most `max_count` items and
/// `max_bytes` in all: the one packing every batching path uses. An item over `max_bytes`
/// on its own forms a batch alone; callers that the service would refuse it from check
/// for that themselves.
pub fn pack(sizes: &[usize], max_count: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut batches: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        match batches.last_mut() {
            Some(batch) if batch.len() < max_count.max(1) && bytes + size <= max_bytes => {
                batch.end = i + 1;
                bytes += size;
            }
            _ => {
                batches.push(i..i + 1);
                bytes = size;
            }
        }
    }
    batches
}

const MIB: usize = 1024 * KIB;

/// AWS Lambda (<https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>).
pub mod lambda {
    use super::MIB;

    /// A synchronous invocation's request and response (the API behind API Gateway).
    pub const SYNC_PAYLOAD_BYTES: usize = 6 * MIB;
    /// An asynchronous invocation's event: 1 MB since 2026-01-29 (256 KB before).
    pub const ASYNC_PAYLOAD_BYTES: usize = MIB;
}

/// Amazon API Gateway HTTP APIs
/// (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html>).
pub mod api_gateway {
    use super::MIB;

    /// A request's payload.
    pub const PAYLOAD_BYTES: usize = 10 * MIB;
}

/// Amazon SQS (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html>).
pub mod sqs {
    use super::MIB;

    /// A message, body and attributes: 1 MiB since 2025 (256 KiB before), 1 MiB through
    /// Lambda's event source mapping since 2026-01-29.
    pub const MESSAGE_BYTES: usize = MIB;
    /// Entries of one SendMessageBatch (and DeleteMessageBatch, ChangeMessageVisibilityBatch).
    pub const BATCH_ENTRIES: usize = 10;
    /// All the bodies of one SendMessageBatch together.
    pub const BATCH_BYTES: usize = MIB;
    /// Messages one ReceiveMessage returns.
    pub const RECEIVE_MESSAGES: usize = 10;
    /// The longest delay of a message (DelaySeconds).
    pub const MAX_DELAY_SECONDS: u64 = 900;
}

/// Amazon EventBridge PutEvents
/// (<https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html>,
/// <https://docs.aws.amazon.com/eventbridge/latest/userguide/calculate-putevents-entry-size.html>).
pub mod eventbridge {
    use super::MIB;

    /// Entries of one PutEvents.
    pub const PUT_EVENTS_ENTRIES: usize = 10;
    /// One request, all its entries together, as EventBridge counts them (see
    /// [`entry_bytes`]): 1 MB since 2026-01-29 (256 KB before).
    pub const PUT_EVENTS_BYTES: usize = MIB;
    /// EventBridge counts a `Time` given as 14 bytes.
    pub const TIME_BYTES: usize = 14;

    /// An entry's size as EventBridge reckons it: source, detail type and detail in UTF-8
    /// (no time and no resources: Herald sets neither).
    pub fn entry_bytes(source: &str, detail_type: &str, detail: &str) -> usize {
        source.len() + detail_type.len() + detail.len()
    }
}

/// Amazon DynamoDB
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html>).
pub mod dynamodb {
    use super::{KIB, MIB};

    /// An item: attribute names and values.
    pub const ITEM_BYTES: usize = 400 * KIB;
    /// Keys of one BatchGetItem.
    pub const BATCH_GET_KEYS: usize = 100;
    /// What one BatchGetItem returns; the rest comes back as UnprocessedKeys.
    pub const BATCH_GET_BYTES: usize = 16 * MIB;
    /// Put and delete requests of one BatchWriteItem.
    pub const BATCH_WRITE_REQUESTS: usize = 25;
    /// One BatchWriteItem in all.
    pub const BATCH_WRITE_BYTES: usize = 16 * MIB;
    /// Actions of one TransactWriteItems (or TransactGetItems), on distinct items.
    pub const TRANSACT_ITEMS: usize = 100;
    /// The items of one transaction together: "4 MB", read as the smaller 4,000,000 bytes.
    pub const TRANSACT_BYTES: usize = 4_000_000;
}

/// Amazon SES v2 (<https://docs.aws.amazon.com/ses/latest/dg/quotas.html>).
pub mod ses {
    use super::MIB;

    /// A message, after encoding, headers and attachments included.
    pub const MESSAGE_BYTES: usize = 40 * MIB;
}

/// Amazon SNS (<https://docs.aws.amazon.com/sns/latest/api/API_Publish.html>).
pub mod sns {
    use super::KIB;

    /// A published message (push), in UTF-8 bytes.
    pub const MESSAGE_BYTES: usize = 256 * KIB;
    /// One SMS publish in all, in characters: SNS splits it into 140-byte parts.
    pub const SMS_CHARS: usize = 1600;
}

#[cfg(test)]
mod tests {
    use super::{eventbridge::entry_bytes, pack};

    #[test]
    fn batches_hold_at_most_the_count() {
        assert_eq!(pack(&[1; 23], 10, 100), [0..10, 10..20, 20..23]);
    }

    #[test]
    fn batches_hold_at_most_the_bytes() {
        assert_eq!(pack(&[40; 5], 10, 100), [0..2, 2..4, 4..5]);
    }

    #[test]
    fn an_item_over_the_bytes_goes_alone() {
        assert_eq!(pack(&[10, 150, 10], 10, 100), [0..1, 1..2, 2..3]);
        assert!(pack(&[], 10, 100).is_empty());
    }

    #[test]
    fn an_eventbridge_entry_counts_source_detail_type_and_detail_in_utf8_bytes() {
        assert_eq!(entry_bytes("herald", "profile.changed", "{}"), 6 + 15 + 2);
        assert_eq!(entry_bytes("herald", "x", r#"{"name":"é"}"#), 6 + 1 + 13);
    }
}
