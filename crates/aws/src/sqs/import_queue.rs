//! The importer's own queue over SQS: a job that ran out of time is continued by a fresh
//! invocation fed this message.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use herald_core::{imports::ImportQueue, store::StoreError};

use crate::errors::unavailable;

#[derive(Clone, Debug)]
pub struct SqsImportQueue {
    client: Client,
    queue_url: String,
}

impl SqsImportQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

#[async_trait]
impl ImportQueue for SqsImportQueue {
    async fn continue_job(&self, job_id: &str) -> Result<(), StoreError> {
        let body = serde_json::json!({ "continue_job": job_id }).to_string();
        self.client.send_message().queue_url(&self.queue_url).message_body(body).send().await.map_err(unavailable)?;
        Ok(())
    }
}
