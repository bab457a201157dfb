//! The segmenter Lambda: fed by the bus through its SQS queue, it re-evaluates the
//! segments each `profile.changed` and `activity.recorded` can affect, and runs the
//! segment jobs (backfills, cleanups, the daily sweep).

use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use herald_aws::{
    Clients, DynamoActivityStore, DynamoMembershipStore, DynamoProfileStore, DynamoSegmentStore, EventBridgePublisher,
};
use herald_core::{
    activity::ActivityRecorded,
    events::{ProfileChanged, ProfilesImported, SegmentJob},
    segments::{Change, DEFAULT_BACKFILL_PARTS, Segmenter, Work},
};
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Deserialize;

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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing configuration: environment variable {0} is not set")]
    Missing(&'static str),
    #[error("BACKFILL_PARTS={0:?} is not a number from 1 to 64")]
    BackfillParts(String),
}

impl SegmenterConfig {
    /// Reads the variables through `lookup` (the process environment in Lambda, the
    /// template's resolved environment in the local stack).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(name));
        let backfill_parts = match lookup("BACKFILL_PARTS").filter(|v| !v.is_empty()) {
            None => DEFAULT_BACKFILL_PARTS,
            Some(v) => v.parse().ok().filter(|p| (1..=64).contains(p)).ok_or(ConfigError::BackfillParts(v))?,
        };
        Ok(Self {
            profiles_table: get("PROFILES_TABLE")?,
            activity_table: get("ACTIVITY_TABLE")?,
            segments_table: get("SEGMENTS_TABLE")?,
            members_table: get("MEMBERS_TABLE")?,
            event_bus_name: get("EVENT_BUS_NAME")?,
            backfill_parts,
        })
    }
}

pub struct SegmenterFunction {
    pub segmenter: Segmenter,
}

/// The bus's envelope around every message on the queue.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    detail: serde_json::Value,
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
    let envelope: Envelope = serde_json::from_str(body)?;
    Ok(vec![match envelope.detail_type.as_str() {
        "profile.changed" => {
            let changed: ProfileChanged = serde_json::from_value(envelope.detail)?;
            let change = Change {
                attributes: changed.changed_attributes.into_iter().collect(),
                fields: changed.changed_fields.into_iter().collect(),
                events: Default::default(),
                everything: changed.created || changed.erased,
            };
            Work::Change { user_id: changed.user_id, change }
        }
        "activity.recorded" => {
            let recorded: ActivityRecorded = serde_json::from_value(envelope.detail)?;
            Work::Change { user_id: recorded.user_id, change: Change { events: recorded.events, ..Default::default() } }
        }
        ProfilesImported::DETAIL_TYPE => {
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
        SegmentJob::DETAIL_TYPE => Work::Job(serde_json::from_value(envelope.detail)?),
        other => return Err(MessageError::UnknownType(other.to_owned())),
    }])
}

impl SegmenterFunction {
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

    /// Handles one SQS batch; reports the messages to retry (unreadable ones too: after
    /// maxReceiveCount SQS moves them to the dead-letter queue).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let mut work = Vec::new();
        // The message each item of `work` came from.
        let mut ids = Vec::new();
        for record in &event.records {
            let message_id = record.message_id.clone().unwrap_or_default();
            match parse_work(record.body.as_deref().unwrap_or_default()) {
                Ok(items) => {
                    ids.extend(std::iter::repeat_n(message_id, items.len()));
                    work.extend(items);
                }
                Err(e) => {
                    tracing::error!(message_id, error = %e, "unreadable segmenter message");
                    response.batch_item_failures.push(failure(message_id));
                }
            }
        }
        let results = self.segmenter.run(&work, chrono::Utc::now()).await;
        for (message_id, result) in ids.into_iter().zip(results) {
            if let Err(e) = result {
                // Ids and the error only: no attribute values in logs.
                tracing::warn!(message_id, error = %e, "segmenter work failed; SQS retries it");
                if !response.batch_item_failures.iter().any(|f| f.item_identifier == message_id) {
                    response.batch_item_failures.push(failure(message_id));
                }
            }
        }
        response
    }
}

fn failure(message_id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    failure
}

/// The Lambda entry point.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let config = SegmenterConfig::from_lookup(|name| std::env::var(name).ok())?;
    let clients = Clients::new(&herald_aws::sdk_config().await);
    clients.warm_up(&config.members_table, None).await;
    let function = SegmenterFunction::from_aws(&clients, &config);
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
        assert_eq!(parse_work(body).unwrap(), [Work::Job(SegmentJob::Sweep)]);
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
        assert!(matches!(SegmenterConfig::from_lookup(zero), Err(ConfigError::BackfillParts(_))));
    }
}
