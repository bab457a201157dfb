//! The dispatcher Lambda: fed by its SQS queue with campaign pages (one page of one members
//! shard per message), it queues each page's deliveries on the channel queues and sends
//! the next page to itself.

use std::{collections::BTreeMap, sync::Arc};

use herald_aws::{
    Clients, DynamoActivityStore, DynamoCampaignStore, DynamoMembershipStore, DynamoProfileStore, SqsChannelQueues,
    SqsDispatchQueue,
};
use herald_core::{
    campaigns::{DispatchPage, dispatcher::Dispatcher},
    delivery::Channel,
};
use herald_edge::{
    config::{ConfigError, Env},
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};

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

impl DispatcherConfig {
    /// Reads the variables through `lookup` (the process environment in Lambda, the
    /// template's resolved environment in the local stack).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let channel_queue_urls = [
            (Channel::Email, "EMAIL_QUEUE_URL"),
            (Channel::Sms, "SMS_QUEUE_URL"),
            (Channel::Push, "PUSH_QUEUE_URL"),
            (Channel::Webhook, "WEBHOOK_QUEUE_URL"),
        ]
        .into_iter()
        .map(|(channel, name)| Ok((channel, env.required(name)?)))
        .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            profiles_table: env.required("PROFILES_TABLE")?,
            activity_table: env.required("ACTIVITY_TABLE")?,
            members_table: env.required("MEMBERS_TABLE")?,
            jobs_table: env.required("JOBS_TABLE")?,
            dispatch_queue_url: env.required("DISPATCH_QUEUE_URL")?,
            channel_queue_urls,
        })
    }
}

pub struct DispatcherHandler {
    pub dispatcher: Dispatcher,
}

impl DispatcherHandler {
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
            Arc::new(SqsChannelQueues::new(clients.sqs.clone(), config.channel_queue_urls.clone())),
            Arc::new(SqsDispatchQueue::new(clients.sqs.clone(), &config.dispatch_queue_url)),
        );
        Self { dispatcher }
    }

    /// The handler on the account's AWS clients, its table's connections warmed up.
    pub async fn connect(config: &DispatcherConfig) -> Self {
        let clients = Clients::new(&herald_aws::sdk_config().await);
        clients.warm_up(&config.members_table, None).await;
        Self::from_aws(&clients, config)
    }

    /// Queues one page's deliveries and the next page; false if SQS is to deliver the
    /// message again (unreadable ones too: after maxReceiveCount they rest in the
    /// dead-letter queue).
    async fn dispatch(&self, message: &SqsMessage, now: chrono::DateTime<chrono::Utc>) -> bool {
        let message_id = sqs::message_id(message);
        let page: DispatchPage = match serde_json::from_str(sqs::body(message)) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(message_id, error = %e, "unreadable dispatch message");
                return false;
            }
        };
        match self.dispatcher.run(&page, now).await {
            Ok(outcome) => {
                tracing::info!(message_id, campaign_id = %page.campaign_id, shard = page.shard, ?outcome, "page");
                true
            }
            Err(e) => {
                tracing::warn!(message_id, campaign_id = %page.campaign_id, error = %e, "page failed; SQS retries it");
                false
            }
        }
    }
}

/// A batch's pages are independent: they are dispatched concurrently.
#[async_trait::async_trait]
impl SqsHandler for DispatcherHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], _: Invocation) -> Retry {
        let now = chrono::Utc::now();
        sqs::each_concurrently(messages, |message| self.dispatch(message, now)).await
    }
}

#[cfg(test)]
mod tests {
    use herald_edge::sqs::SqsEvent;

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
