//! SQS: SendMessageBatch packed to the service's limits, and the queues Herald writes to.

pub mod batch;
pub mod channel_queues;
pub mod dispatch_queue;
pub mod import_queue;
pub mod segmenter_queue;
