//! The dispatcher Lambda: fed by its SQS queue with campaign pages (one page of one members
//! shard per message), it queues each page's deliveries on the channel queues and sends
//! the next page to itself.

use std::{collections::BTreeMap, sync::Arc};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use herald_aws::{
    Clients, DynamoActivityStore, DynamoCampaignStore, DynamoMembershipStore, DynamoProfileStore, SqsDispatchQueue,
    SqsJobQueues,
};
use herald_core::{
    campaigns::{DispatchPage, dispatcher::Dispatcher},
    delivery::Channel,
};
use lambda_runtime::{LambdaEvent, service_fn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatcherConfig {
    pub profiles_table: String,
    pub activity_table: String,
    pub members_table: String,
    pub jobs_table: String,
    pub dispatch_queue_url: String,
    /// Each channel's queue, which the dispatcher writes deliveries to directly.
    pub channel_queue_urls: BTreeMap<Channel, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing configuration: environment variable {0} is not set")]
    Missing(&'static str),
}

impl DispatcherConfig {
    /// Reads the variables through `lookup` (the process environment in Lambda, the
    /// template's resolved environment in the local stack).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(name));
        let channel_queue_urls = [
            (Channel::Email, "EMAIL_QUEUE_URL"),
            (Channel::Sms, "SMS_QUEUE_URL"),
            (Channel::Push, "PUSH_QUEUE_URL"),
            (Channel::Webhook, "WEBHOOK_QUEUE_URL"),
        ]
        .into_iter()
        .map(|(channel, name)| Ok((channel, get(name)?)))
        .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            profiles_table: get("PROFILES_TABLE")?,
            activity_table: get("ACTIVITY_TABLE")?,
            members_table: get("MEMBERS_TABLE")?,
            jobs_table: get("JOBS_TABLE")?,
            dispatch_queue_url: get("DISPATCH_QUEUE_URL")?,
            channel_queue_urls,
        })
    }
}

pub struct DispatcherFunction {
    pub dispatcher: Dispatcher,
}

impl DispatcherFunction {
    pub fn from_aws(clients: &Clients, config: &DispatcherConfig) -> Self {
        let db = || clients.dynamodb.clone();
        let dispatcher = Dispatcher::new(
            Arc::new(DynamoCampaignStore::new(db(), &config.jobs_table)),
            Arc::new(DynamoMembershipStore::new(
                db(),
                &config.members_table,
                &config.profiles_table,
                &config.activity_table,
            )),
            Arc::new(DynamoProfileStore::new(db(), &config.profiles_table)),
            Arc::new(DynamoActivityStore::new(db(), &config.activity_table)),
            Arc::new(SqsJobQueues::new(clients.sqs.clone(), config.channel_queue_urls.clone())),
            Arc::new(SqsDispatchQueue::new(clients.sqs.clone(), &config.dispatch_queue_url)),
        );
        Self { dispatcher }
    }

    /// Handles one SQS batch, its pages concurrently; reports the messages to retry
    /// (unreadable ones too: after maxReceiveCount SQS moves them to the dead-letter queue).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let now = chrono::Utc::now();
        let results = futures_util::future::join_all(event.records.iter().map(|record| async move {
            let message_id = record.message_id.clone().unwrap_or_default();
            let page: DispatchPage = match serde_json::from_str(record.body.as_deref().unwrap_or_default()) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(message_id, error = %e, "unreadable dispatch message");
                    return Some(message_id);
                }
            };
            match self.dispatcher.run(&page, now).await {
                Ok(outcome) => {
                    tracing::info!(message_id, campaign_id = %page.campaign_id, shard = page.shard, ?outcome, "page");
                    None
                }
                Err(e) => {
                    tracing::warn!(message_id, campaign_id = %page.campaign_id, error = %e, "page failed; SQS retries it");
                    Some(message_id)
                }
            }
        }))
        .await;
        let mut response = SqsBatchResponse::default();
        for message_id in results.into_iter().flatten() {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
        response
    }
}

/// The Lambda entry point.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let config = DispatcherConfig::from_lookup(|name| std::env::var(name).ok())?;
    let clients = Clients::new(&herald_aws::sdk_config().await);
    clients.warm_up(&config.members_table, None).await;
    let function = DispatcherFunction::from_aws(&clients, &config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let function = &function;
        async move { Ok::<_, lambda_runtime::Error>(function.handle(event.payload).await) }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_queue_is_configured() {
        let all = |name: &str| Some(name.to_lowercase());
        let config = DispatcherConfig::from_lookup(all).unwrap();
        assert_eq!(config.channel_queue_urls[&Channel::Sms], "sms_queue_url");
        assert_eq!(config.channel_queue_urls.len(), 4);
        let no_push = |name: &str| (name != "PUSH_QUEUE_URL").then(|| name.to_lowercase());
        assert!(matches!(DispatcherConfig::from_lookup(no_push), Err(ConfigError::Missing("PUSH_QUEUE_URL"))));
    }

    #[test]
    fn the_sample_event_is_a_page_of_a_shard() {
        let event: SqsEvent = serde_json::from_str(include_str!("../../../events/dispatcher-sqs.json")).unwrap();
        let page: DispatchPage = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        assert_eq!((page.shard, page.cursor.as_deref()), (3, Some("user-00412")));
    }
}
