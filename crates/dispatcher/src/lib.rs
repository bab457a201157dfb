//! The dispatcher Lambda: fed by its SQS queue with campaign pages (one page of one members
//! shard per message), it queues each page's deliveries on the channel queues and sends
//! the next page to itself; and with settle checks (`{"job": "settle", …}`), which the
//! reconciler answers.

use std::{collections::BTreeMap, sync::Arc};

use herald_aws::{
    Clients, DynamoActivityStore, DynamoCampaignStore, DynamoDeliveryStore, DynamoMembershipStore, DynamoProfileStore,
    SqsChannelQueues, SqsDispatchQueue,
};
use herald_core::{
    campaigns::{
        DispatchMessage, DispatchPage, SettleCheck,
        dispatcher::{DispatchOutcome, Dispatcher},
        reconciler::Reconciler,
    },
    channel::Channel,
};
use herald_edge::{
    config::{ConfigError, Env},
    metrics::{Emf, Metric, Metrics},
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatcherConfig {
    pub profiles_table: String,
    pub activity_table: String,
    pub members_table: String,
    pub jobs_table: String,
    /// Read by the reconciler: its by-notification-keys index, then the items it names
    /// (BatchGetItem).
    pub deliveries_table: String,
    pub dispatch_queue_url: String,
    /// `SETTLE_CHECK_SECONDS`: how long between two settle checks of a campaign; None:
    /// the reconciler's default.
    pub settle_every: Option<std::time::Duration>,
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
            deliveries_table: env.required("DELIVERIES_TABLE")?,
            dispatch_queue_url: env.required("DISPATCH_QUEUE_URL")?,
            settle_every: env
                .parse("SETTLE_CHECK_SECONDS", "a whole number of seconds, 1 to 900", |v| {
                    v.parse().ok().filter(|s| (1..=900).contains(s))
                })?
                .map(std::time::Duration::from_secs),
            channel_queue_urls,
        })
    }
}

pub struct DispatcherHandler {
    pub dispatcher: Dispatcher,
    pub reconciler: Reconciler,
    /// Campaign fan-out (recipients queued), invocations and queue age.
    pub metrics: Emf,
}

impl DispatcherHandler {
    pub fn from_aws(clients: &Clients, config: &DispatcherConfig) -> Self {
        let db = || clients.dynamodb();
        let campaigns = Arc::new(DynamoCampaignStore::new(db(), &config.jobs_table));
        let dispatch = Arc::new(SqsDispatchQueue::new(clients.sqs(), &config.dispatch_queue_url));
        let mut dispatcher = Dispatcher::new(
            campaigns.clone(),
            Arc::new(DynamoMembershipStore::new(
                db(),
                &config.members_table,
                &config.profiles_table,
                &config.activity_table,
            )),
            Arc::new(DynamoProfileStore::new(db(), &config.profiles_table)),
            Arc::new(DynamoActivityStore::new(db(), &config.activity_table)),
            Arc::new(SqsChannelQueues::new(clients.sqs(), config.channel_queue_urls.clone())),
            dispatch.clone(),
        );
        let mut reconciler =
            Reconciler::new(campaigns, Arc::new(DynamoDeliveryStore::new(db(), &config.deliveries_table)), dispatch);
        if let Some(every) = config.settle_every {
            dispatcher.settle_every = every;
            reconciler.every = every;
        }
        Self { dispatcher, reconciler, metrics: Emf::for_function("Dispatcher") }
    }

    /// The handler on the account's AWS clients, its table's connections warmed up.
    pub async fn connect(config: &DispatcherConfig) -> Self {
        let clients = Clients::new(&herald_aws::function_sdk_config());
        clients.warm_up(&config.members_table, None).await;
        Self::from_aws(&clients, config)
    }

    /// Queues one page's deliveries and the next page, or checks a campaign's settling;
    /// false if SQS is to deliver the message again (unreadable ones too: after
    /// maxReceiveCount they rest in the dead-letter queue).
    async fn handle(&self, message: &SqsMessage, now: chrono::DateTime<chrono::Utc>, invocation: Invocation) -> bool {
        let message_id = sqs::message_id(message);
        match serde_json::from_str(sqs::body(message)) {
            Ok(DispatchMessage::Page(page)) => self.dispatch(message_id, &page, now).await,
            Ok(DispatchMessage::Settle(check)) => self.settle(message_id, &check, invocation).await,
            Err(e) => {
                tracing::error!(message_id, error = %e, "unreadable dispatch message");
                false
            }
        }
    }

    async fn dispatch(&self, message_id: &str, page: &DispatchPage, now: chrono::DateTime<chrono::Utc>) -> bool {
        match self.dispatcher.run(page, message_id, now).await {
            Ok(outcome) => {
                tracing::info!(message_id, campaign_id = %page.campaign_id, shard = page.shard, ?outcome, "page");
                if let DispatchOutcome::Dispatched { queued, .. } | DispatchOutcome::DeferredBatch { queued, .. } =
                    outcome
                {
                    self.metrics.count(Metric::CampaignRecipientsQueued, &[], queued);
                }
                true
            }
            Err(e) => {
                tracing::warn!(message_id, campaign_id = %page.campaign_id, error = %e, "page failed; SQS retries it");
                false
            }
        }
    }

    async fn settle(&self, message_id: &str, check: &SettleCheck, invocation: Invocation) -> bool {
        match self.reconciler.check(check, invocation.deadline).await {
            Ok(outcome) => {
                tracing::info!(message_id, campaign_id = %check.campaign_id, ?outcome, "settle check");
                true
            }
            Err(e) => {
                tracing::warn!(message_id, campaign_id = %check.campaign_id, error = %e, "settle check failed; SQS retries it");
                false
            }
        }
    }
}

/// A batch's messages are independent: they are handled concurrently.
#[async_trait::async_trait]
impl SqsHandler for DispatcherHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let now = chrono::Utc::now();
        sqs::each_concurrently(messages, |message| self.handle(message, now, invocation)).await
    }

    fn metrics(&self) -> Option<&Emf> {
        Some(&self.metrics)
    }
}

#[cfg(test)]
mod tests {
    use herald_edge::sqs::SqsEvent;

    use super::*;

    #[test]
    fn every_channel_queue_is_configured() {
        let all = |name: &str| Some(if name == "SETTLE_CHECK_SECONDS" { "60".into() } else { name.to_lowercase() });
        let config = DispatcherConfig::from_lookup(all).unwrap();
        assert_eq!(config.settle_every, Some(std::time::Duration::from_secs(60)));
        assert_eq!(config.channel_queue_urls[&Channel::Sms], "sms_queue_url");
        assert_eq!(config.channel_queue_urls.len(), 4);
        let no_push = |name: &str| (name != "PUSH_QUEUE_URL").then(|| name.to_lowercase());
        assert!(matches!(DispatcherConfig::from_lookup(no_push), Err(ConfigError::Missing("PUSH_QUEUE_URL"))));
    }

    #[test]
    fn the_sample_event_is_a_page_of_a_shard() {
        let event: SqsEvent = serde_json::from_str(include_str!("../../../events/dispatcher-sqs.json")).unwrap();
        let message: DispatchMessage = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        let DispatchMessage::Page(page) = message else { panic!("not a page: {message:?}") };
        assert_eq!((page.shard, page.cursor.as_deref()), (3, Some("user-00412")));
    }

    #[test]
    fn the_settle_sample_event_is_a_campaigns_settle_check() {
        let event: SqsEvent = serde_json::from_str(include_str!("../../../events/dispatcher-settle-sqs.json")).unwrap();
        let message: DispatchMessage = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(message, DispatchMessage::Settle(SettleCheck::first("c_0123456789abcdef01234567")));
    }

    #[test]
    fn a_settle_check_is_never_read_as_a_page_nor_a_page_as_a_check() {
        let check = serde_json::to_string(&SettleCheck::first("c_1")).unwrap();
        assert!(matches!(serde_json::from_str(&check).unwrap(), DispatchMessage::Settle(_)));
        assert!(serde_json::from_str::<DispatchPage>(&check).is_err());
        let page = serde_json::to_string(&DispatchPage::first("c_1", 2)).unwrap();
        assert!(matches!(serde_json::from_str(&page).unwrap(), DispatchMessage::Page(_)));
        assert!(serde_json::from_str::<DispatchMessage>(r#"{"job": "sweep", "campaign_id": "c_1"}"#).is_err());
    }
}
