//! Counts the requests the SDK clients send (every attempt, retries included), by service
//! and operation: how benchmarks prove what a path costs in AWS calls.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use aws_sdk_dynamodb::config::{
    ConfigBag, Intercept, RuntimeComponents, interceptors::BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::{box_error::BoxError, client::orchestrator::Metadata};

/// DynamoDB operations that write.
pub const DYNAMODB_WRITES: [&str; 5] = ["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"];

#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl RequestCounter {
    /// Requests sent to `service` (as the SDK names it, e.g. `DynamoDB`, `SQS`) for the
    /// given operations, or all of them when `operations` is empty.
    pub fn count(&self, service: &str, operations: &[&str]) -> u64 {
        let counts = self.0.lock().expect("counter lock");
        counts
            .iter()
            .filter(|((s, op), _)| s == service && (operations.is_empty() || operations.contains(&op.as_str())))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().expect("counter lock").clone()
    }

    pub fn reset(&self) {
        self.0.lock().expect("counter lock").clear();
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let key = (metadata.service().to_owned(), metadata.name().to_owned());
            *self.0.lock().expect("counter lock").entry(key).or_default() += 1;
        }
        Ok(())
    }
}
