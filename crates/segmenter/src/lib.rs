//! The segmenter Lambda: fed by the bus through its SQS queue, it re-evaluates the
//! segments each `profile.changed` and `activity.recorded` can affect, and runs the
//! segment jobs (backfills, cleanups, the daily sweep).

use std::sync::Arc;

use herald_aws::{
    Clients, DynamoActivityStore, DynamoMembershipStore, DynamoProfileStore, DynamoSegmentStore, EventBridgePublisher,
};
use herald_core::{
    activity::ActivityRecorded,
    events::{ProfileChanged, ProfilesImported, detail_type},
    segments::{Change, DEFAULT_BACKFILL_PARTS, Segmenter, Work},
};
use herald_edge::{
    config::{ConfigError, Env},
    eventbridge::Envelope,
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmenterConfig {
    pub profiles_table: String,
    pub activity_table: String,
    pub segments_table: String,
    pub members_table: String,
    pub event_bus_name: String,
    /// Parallel parts of a backfill's profile scan (`BACKFILL_PARTS`, default 4).
    pub backfill_parts: u32,
}

impl SegmenterConfig {
    /// Reads the variables through `lookup` (the process environment in Lambda, the
    /// template's resolved environment in the local stack).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let backfill_parts = env
            .parse("BACKFILL_PARTS", "a number from 1 to 64", |v| v.parse().ok().filter(|p| (1..=64).contains(p)))?
            .unwrap_or(DEFAULT_BACKFILL_PARTS);
        Ok(Self {
            profiles_table: env.required("PROFILES_TABLE")?,
            activity_table: env.required("ACTIVITY_TABLE")?,
            segments_table: env.required("SEGMENTS_TABLE")?,
            members_table: env.required("MEMBERS_TABLE")?,
            event_bus_name: env.required("EVENT_BUS_NAME")?,
            backfill_parts,
        })
    }
}

pub struct SegmenterHandler {
    pub segmenter: Segmenter,
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not an event of the bus: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("no segmenter work for detail-type {0:?}")]
    UnknownType(String),
}

/// The work a queue message carries: one item, or one per user of an import's slice.
pub fn parse_work(body: &str) -> Result<Vec<Work>, MessageError> {
    let envelope: Envelope = Envelope::parse(body)?;
    Ok(vec![match envelope.detail_type.as_str() {
        detail_type::PROFILE_CHANGED => {
            let changed: ProfileChanged = serde_json::from_value(envelope.detail)?;
            let change = Change {
                attributes: changed.changed_attributes.into_iter().collect(),
                fields: changed.changed_fields.into_iter().collect(),
                events: Default::default(),
                everything: changed.created || changed.erased,
            };
            Work::Change { user_id: changed.user_id, change }
        }
        detail_type::ACTIVITY_RECORDED => {
            let recorded: ActivityRecorded = serde_json::from_value(envelope.detail)?;
            Work::Change { user_id: recorded.user_id, change: Change { events: recorded.events, ..Default::default() } }
        }
        detail_type::PROFILES_IMPORTED => {
            let imported: ProfilesImported = serde_json::from_value(envelope.detail)?;
            let change = Change {
                attributes: imported.changed_attributes.into_iter().collect(),
                fields: imported.changed_fields.into_iter().collect(),
                events: Default::default(),
                everything: imported.everything,
            };
            let users = imported.user_ids.into_iter();
            return Ok(users.map(|user_id| Work::Change { user_id, change: change.clone() }).collect());
        }
        detail_type::SEGMENT_JOB => Work::Task(serde_json::from_value(envelope.detail)?),
        other => return Err(MessageError::UnknownType(other.to_owned())),
    }])
}

impl SegmenterHandler {
    pub fn from_aws(clients: &Clients, config: &SegmenterConfig) -> Self {
        let db = || clients.dynamodb.clone();
        let profiles = Arc::new(DynamoProfileStore::new(db(), &config.profiles_table));
        let mut segmenter = Segmenter::new(
            profiles.clone(),
            profiles,
            Arc::new(DynamoActivityStore::new(db(), &config.activity_table)),
            Arc::new(DynamoSegmentStore::new(db(), &config.segments_table)),
            Arc::new(DynamoMembershipStore::new(
                db(),
                &config.members_table,
                &config.profiles_table,
                &config.activity_table,
            )),
            Arc::new(EventBridgePublisher::new(clients.eventbridge.clone(), &config.event_bus_name)),
        );
        segmenter.backfill_parts = config.backfill_parts;
        Self { segmenter }
    }

    /// The handler on the account's AWS clients, its table's connections warmed up.
    pub async fn connect(config: &SegmenterConfig) -> Self {
        let clients = Clients::new(&herald_aws::sdk_config().await);
        clients.warm_up(&config.members_table, None).await;
        Self::from_aws(&clients, config)
    }
}

/// The work of a whole batch goes to the segmenter in one run, which evaluates each user
/// once however many of the batch's messages name them. A message is retried if it is
/// unreadable (after maxReceiveCount SQS moves it to the dead-letter queue) or if any of
/// its work failed.
#[async_trait::async_trait]
impl SqsHandler for SegmenterHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], _: Invocation) -> Retry {
        let mut retry = Retry::default();
        let mut work = Vec::new();
        // The position of the message each item of `work` came from.
        let mut positions = Vec::new();
        for (position, message) in messages.iter().enumerate() {
            match parse_work(sqs::body(message)) {
                Ok(items) => {
                    positions.extend(std::iter::repeat_n(position, items.len()));
                    work.extend(items);
                }
                Err(e) => {
                    tracing::error!(message_id = sqs::message_id(message), error = %e, "unreadable segmenter message");
                    retry.insert(position);
                }
            }
        }
        let results = self.segmenter.run(&work, chrono::Utc::now()).await;
        for (position, result) in positions.into_iter().zip(results) {
            if let Err(e) = result {
                // Ids and the error only: no attribute values in logs.
                let message_id = sqs::message_id(&messages[position]);
                tracing::warn!(message_id, error = %e, "segmenter work failed; SQS retries it");
                retry.insert(position);
            }
        }
        retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_change_of_a_created_profile_affects_every_segment() {
        let body = serde_json::json!({"source": "herald", "detail-type": "profile.changed", "detail": {
            "user_id": "u1", "version": 1, "changed_attributes": ["tier"], "changed_fields": ["email"],
            "created": true, "erased": false}});
        let [Work::Change { user_id, change }] = &parse_work(&body.to_string()).unwrap()[..] else {
            panic!("a change")
        };
        assert_eq!(user_id, "u1");
        assert!(change.everything);
        assert!(change.attributes.contains("tier") && change.fields.contains("email"));
    }

    #[test]
    fn recorded_activity_names_its_events() {
        let body =
            serde_json::json!({"detail-type": "activity.recorded", "detail": {"user_id": "u1", "events": ["order"]}});
        let [Work::Change { change, .. }] = &parse_work(&body.to_string()).unwrap()[..] else { panic!("a change") };
        assert_eq!(change.events.iter().collect::<Vec<_>>(), ["order"]);
        assert!(!change.everything);
    }

    #[test]
    fn the_scheduled_sweep_is_a_job() {
        let body = r#"{"source":"herald","detail-type":"segment.job","detail":{"job":"sweep"}}"#;
        assert_eq!(parse_work(body).unwrap(), [Work::Task(herald_core::events::SegmentTask::Sweep)]);
    }

    #[test]
    fn an_imported_slice_is_a_change_of_each_of_its_users() {
        let body = serde_json::json!({"detail-type": "profiles.imported", "detail": {
            "job_id": "imp_1", "user_ids": ["u1", "u2"], "changed_attributes": ["tier"], "changed_fields": [],
            "everything": false}});
        let work = parse_work(&body.to_string()).unwrap();
        let users: Vec<&str> = work
            .iter()
            .map(|w| match w {
                Work::Change { user_id, change } if change.attributes.contains("tier") => user_id.as_str(),
                other => panic!("not a tier change: {other:?}"),
            })
            .collect();
        assert_eq!(users, ["u1", "u2"]);
    }

    #[test]
    fn other_detail_types_are_refused() {
        let body = r#"{"detail-type":"notification.email","detail":{}}"#;
        assert!(matches!(parse_work(body), Err(MessageError::UnknownType(_))));
    }

    #[test]
    fn backfill_parts_default_and_are_bounded() {
        let base = |name: &str| match name {
            "BACKFILL_PARTS" => None,
            other => Some(other.to_lowercase()),
        };
        assert_eq!(SegmenterConfig::from_lookup(base).unwrap().backfill_parts, DEFAULT_BACKFILL_PARTS);
        let zero = |name: &str| if name == "BACKFILL_PARTS" { Some("0".into()) } else { Some("x".into()) };
        assert!(matches!(SegmenterConfig::from_lookup(zero), Err(ConfigError::Invalid { name: "BACKFILL_PARTS", .. })));
    }
}
