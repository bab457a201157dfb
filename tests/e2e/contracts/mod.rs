//! The port contract suites: what each port of herald-core promises, stated once, one
//! behaviour per async function over the port, and run twice: against the in-memory double
//! (`<port>::memory::<behaviour>`, no AWS needed) and against the AWS adapter on moto
//! (`<port>::aws::<behaviour>`, on tables shaped and named as the template declares them,
//! made for the test alone). A double that passes the contract behaves as the adapter does
//! wherever the contract looks; what only an adapter has (request counts, item layouts,
//! batching) stays in the adapter suites (`*_stores.rs`).

use std::time::Duration;

use async_trait::async_trait;
use herald_aws::{Clients, RequestCounter};

/// `contract!(port: memory_fixture, aws_fixture; behaviour, …)` makes a module `port` with
/// a `#[tokio::test]` per behaviour in `port::memory` and in `port::aws`. Each test builds a
/// fresh subject with its fixture (an async fn of this module returning a `Box`) and hands
/// `&*subject` to the behaviour.
macro_rules! contract {
    ($port:ident: $memory:ident, $aws:ident; $($behaviour:ident),+ $(,)?) => {
        mod $port {
            mod memory {
                $(
                    #[tokio::test]
                    async fn $behaviour() {
                        let subject = super::super::$memory().await;
                        super::super::$behaviour(&*subject).await;
                    }
                )+
            }
            mod aws {
                $(
                    #[tokio::test]
                    async fn $behaviour() {
                        let subject = super::super::$aws().await;
                        super::super::$behaviour(&*subject).await;
                    }
                )+
            }
        }
    };
}

mod activity;
pub(crate) mod campaigns;
mod delivery;
pub(crate) mod imports;
mod keys;
mod notifications;
mod profiles;
mod segments;
mod signing;
mod suppressions;

/// Clients on the moto endpoint `scripts/with-moto` started.
async fn moto() -> Clients {
    herald_e2e::tables::clients(&RequestCounter::default()).await
}

/// The template's tables `logical_ids`, made for this test: (clients, logical id → name).
async fn moto_tables(logical_ids: &[&str]) -> (Clients, std::collections::BTreeMap<String, String>) {
    let clients = moto().await;
    let tables = herald_e2e::tables::template_tables(&clients, logical_ids).await;
    (clients, tables)
}

/// What a queue port sent, as its consumer would receive it.
#[async_trait]
trait Inbox<T>: Send + Sync {
    /// Waits (a little) until `expected` messages arrived, takes every message there is,
    /// and returns them in no particular order.
    async fn take(&self, expected: usize) -> Vec<T>;
}

/// A queue made for the test alone.
async fn sqs_queue(clients: &Clients, prefix: &str) -> String {
    let created = clients.sqs().create_queue().queue_name(herald_e2e::tables::unique(prefix)).send().await;
    created.expect("queue").queue_url.expect("queue url")
}

/// The bodies of the messages on an SQS queue, parsed by `parse`.
struct SqsInbox<T> {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    parse: fn(&str) -> T,
}

#[async_trait]
impl<T: Send + 'static> Inbox<T> for SqsInbox<T> {
    async fn take(&self, expected: usize) -> Vec<T> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut taken = Vec::new();
        loop {
            let wait = if taken.len() < expected && std::time::Instant::now() < deadline { 1 } else { 0 };
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(wait)
                .send()
                .await
                .expect("receive");
            let messages = output.messages.unwrap_or_default();
            for message in &messages {
                taken.push((self.parse)(message.body().expect("a body")));
                let handle = message.receipt_handle().expect("a receipt handle");
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("delete");
            }
            if messages.is_empty() && wait == 0 {
                return taken;
            }
        }
    }
}
