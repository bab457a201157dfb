//! The segmenter Lambda: fed by the bus through its SQS queue, it re-evaluates the
//! segments each `profile.changed` and `activity.recorded` can affect (and each
//! engagement of a user's delivery, `delivery.status_changed`, recorded first as their
//! behaviour event), and runs the
//! segment jobs (backfills, cleanups, the daily sweep). What an invocation has no time
//! for it hands on through its own queue.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use herald_aws::{
    Clients, DynamoActivityStore, DynamoMembershipStore, DynamoProfileStore, DynamoSegmentStore, EventBridgePublisher,
    SqsSegmenterQueue,
};
use herald_core::{
    activity::{ActivityEvent, ActivityStore},
    segments::{DEFAULT_BACKFILL_PARTS, EventWork, Segmenter, SegmenterQueue, Work},
};
use herald_edge::{
    config::{ConfigError, Env},
    eventbridge::Envelope,
    metrics::{Emf, Metric, Metrics},
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmenterConfig {
    pub profiles_table: String,
    pub activity_table: String,
    pub segments_table: String,
    pub members_table: String,
    pub event_bus_name: String,
    /// The segmenter's own queue, for the work an invocation hands on.
    pub queue_url: String,
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
            queue_url: env.required("SEGMENTER_QUEUE_URL")?,
            backfill_parts,
        })
    }
}

pub struct SegmenterHandler {
    pub segmenter: Segmenter,
    /// Where engagement (opens, clicks, bounces, complaints, unsubscribes of a user's
    /// delivery) is recorded as the user's behaviour before their segments are evaluated.
    pub activity: Arc<dyn ActivityStore>,
    /// Where the work past the invocation's deadline goes on.
    pub queue: Arc<dyn SegmenterQueue>,
    /// Work items evaluated together; between runs the deadline is checked.
    pub work_per_run: usize,
    /// Evaluations and change-to-membership latency, invocations and queue age.
    pub metrics: Emf,
}

/// Work items one run evaluates: a slice of an import (1,000 users by default) is
/// evaluated a run at a time, so that an invocation can stop between runs in time. A
/// multiple of BatchGetItem's 100 keys.
pub const WORK_PER_RUN: usize = 200;

/// What an invocation keeps, past its last run, for handing on the rest.
pub const HAND_ON_MARGIN: Duration = Duration::from_secs(2);

/// Why a message carries no work.
pub use herald_core::segments::EventWorkError as MessageError;

/// The work a queue message carries: one item, or one per user of an import's slice.
pub fn parse_work(body: &str) -> Result<Vec<Work>, MessageError> {
    parse_message(body).map(|message| message.work)
}

/// A message's work, with the engagement to record before it and the time of its change:
/// the envelope is unwrapped here, each body parsed once; what its event means is core's.
pub fn parse_message(body: &str) -> Result<EventWork, MessageError> {
    let envelope: Envelope = Envelope::parse(body)?;
    EventWork::of(&envelope.detail_type, envelope.time.as_deref(), envelope.detail)
}

impl SegmenterHandler {
    pub fn from_aws(clients: &Clients, config: &SegmenterConfig) -> Self {
        let db = || clients.dynamodb();
        let profiles = Arc::new(DynamoProfileStore::new(db(), &config.profiles_table));
        let activity = Arc::new(DynamoActivityStore::new(db(), &config.activity_table));
        let mut segmenter = Segmenter::new(
            profiles.clone(),
            profiles,
            activity.clone(),
            Arc::new(DynamoSegmentStore::new(db(), &config.segments_table)),
            Arc::new(DynamoMembershipStore::new(
                db(),
                &config.members_table,
                &config.profiles_table,
                &config.activity_table,
            )),
            Arc::new(EventBridgePublisher::new(clients.eventbridge(), &config.event_bus_name)),
        );
        segmenter.backfill_parts = config.backfill_parts;
        let queue = Arc::new(SqsSegmenterQueue::new(clients.sqs(), &config.queue_url));
        Self { segmenter, activity, queue, work_per_run: WORK_PER_RUN, metrics: Emf::for_function("Segmenter") }
    }

    /// The handler on the account's AWS clients, its table's connections warmed up.
    pub async fn connect(config: &SegmenterConfig) -> Self {
        let clients = Clients::new(&herald_aws::function_sdk_config());
        clients.warm_up(&config.members_table, None).await;
        Self::from_aws(&clients, config)
    }
}

/// The work of a batch goes to the segmenter a run of `work_per_run` items at a time;
/// each run evaluates each of its users once however many messages name them. A run
/// starts only if it can end before the deadline, judging by the slowest so far; the
/// work left is handed on through the segmenter's queue. A message is retried if it is
/// unreadable (after maxReceiveCount SQS moves it to the dead-letter queue), if any of its
/// work failed, or if its work left could not be handed on.
#[async_trait::async_trait]
impl SqsHandler for SegmenterHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let mut retry = Retry::default();
        let mut parsed = Vec::with_capacity(messages.len());
        for (position, message) in messages.iter().enumerate() {
            match parse_message(sqs::body(message)) {
                Ok(message_work) => parsed.push(Some(message_work)),
                Err(e) => {
                    tracing::error!(message_id = sqs::message_id(message), error = %e, "unreadable segmenter message");
                    retry.insert(position);
                    parsed.push(None);
                }
            }
        }
        // Engagement is recorded first (counted once by its id however often it comes),
        // so the evaluations below see it; a message whose event was not recorded is
        // retried and evaluates nothing now.
        let engagement: Vec<ActivityEvent> =
            parsed.iter().flatten().filter_map(|message_work| message_work.engagement.clone()).collect();
        if !engagement.is_empty()
            && let Err(e) = self.activity.record(&engagement).await
        {
            tracing::warn!(error = %e, "engagement not recorded; SQS retries its messages");
            for (position, message_work) in parsed.iter_mut().enumerate() {
                if message_work.as_ref().is_some_and(|message_work| message_work.engagement.is_some()) {
                    retry.insert(position);
                    *message_work = None;
                }
            }
        }
        // The time of each message's change.
        let changed_at: Vec<_> = parsed.iter().map(|m| m.as_ref().and_then(|m| m.changed_at)).collect();
        let mut work = Vec::new();
        // The position of the message each item of `work` came from.
        let mut positions = Vec::new();
        for (position, message_work) in parsed.into_iter().enumerate() {
            if let Some(message_work) = message_work {
                positions.extend(std::iter::repeat_n(position, message_work.work.len()));
                work.extend(message_work.work);
            }
        }
        // The position of each message's last item.
        let mut last_item = vec![None; messages.len()];
        positions.iter().enumerate().for_each(|(item, position)| last_item[*position] = Some(item));
        let mut done = 0;
        let mut slowest = Duration::ZERO;
        while done < work.len() {
            if invocation.deadline.is_some_and(|d| Instant::now() + slowest + HAND_ON_MARGIN > d) {
                break;
            }
            let run = done..(done + self.work_per_run.max(1)).min(work.len());
            let started = Instant::now();
            let results = self.segmenter.run(&work[run.clone()], chrono::Utc::now()).await;
            slowest = slowest.max(started.elapsed());
            for (position, result) in positions[run.clone()].iter().zip(results) {
                if let Err(e) = result {
                    // Ids and the error only: no attribute values in logs.
                    let message_id = sqs::message_id(&messages[*position]);
                    tracing::warn!(message_id, error = %e, "segmenter work failed; SQS retries it");
                    retry.insert(*position);
                }
            }
            self.metrics.count(Metric::SegmentEvaluations, &[], run.len() as u64);
            let now = chrono::Utc::now();
            for (position, changed_at) in changed_at.iter().enumerate() {
                let (Some(last), Some(changed_at)) = (last_item[position], changed_at) else { continue };
                if run.contains(&last) && !retry.contains(position) {
                    let ms = (now - *changed_at).num_milliseconds().max(0);
                    self.metrics.record(Metric::ChangeToMembershipLatency, &[], ms as f64);
                }
            }
            done = run.end;
        }
        if done < work.len() {
            let left = &work[done..];
            match self.queue.hand_on(left).await {
                Ok(()) => tracing::info!(evaluated = done, handed_on = left.len(), "work past the deadline handed on"),
                Err(e) => {
                    tracing::warn!(error = %e, "work past the deadline not handed on; SQS retries its messages");
                    for position in &positions[done..] {
                        retry.insert(*position);
                    }
                }
            }
        }
        retry
    }

    fn metrics(&self) -> Option<&Emf> {
        Some(&self.metrics)
    }
}

#[cfg(test)]
mod tests {
    use herald_core::{
        activity::memory::MemoryActivity,
        events::memory::MemoryBus,
        profiles::memory::MemoryProfiles,
        segments::{
            Change, HandedOn,
            memory::{MemoryMemberships, MemorySegmenterQueue, MemorySegments},
        },
    };

    use super::*;

    fn handler(queue: Arc<MemorySegmenterQueue>) -> SegmenterHandler {
        let profiles = Arc::new(MemoryProfiles::default());
        let activity = Arc::new(MemoryActivity::default());
        let segmenter = Segmenter::new(
            profiles.clone(),
            profiles,
            activity.clone(),
            Arc::new(MemorySegments::default()),
            Arc::new(MemoryMemberships::default()),
            Arc::new(MemoryBus::default()),
        );
        SegmenterHandler { segmenter, activity, queue, work_per_run: WORK_PER_RUN, metrics: Emf::discard("Segmenter") }
    }

    fn imported(users: usize) -> SqsMessage {
        let user_ids: Vec<String> = (0..users).map(|i| format!("u{i:04}")).collect();
        let mut message = SqsMessage::default();
        message.message_id = Some("m1".into());
        message.body = Some(
            serde_json::json!({"source": "herald", "detail-type": "profiles.imported", "detail": {
                "job_id": "j1", "user_ids": user_ids, "changed_attributes": ["tier"], "changed_fields": [],
                "everything": false}})
            .to_string(),
        );
        message
    }

    fn deadline_in(time: Duration) -> Invocation {
        Invocation { deadline: Some(Instant::now() + time) }
    }

    #[tokio::test]
    async fn work_an_invocation_has_no_time_for_is_handed_on_through_its_queue() {
        let queue = Arc::new(MemorySegmenterQueue::default());
        let retry = handler(queue.clone()).handle_batch(&[imported(1_000)], deadline_in(Duration::from_secs(1))).await;
        assert!(retry.is_empty());
        let handed_on = queue.handed_on.lock().unwrap().clone();
        assert_eq!(handed_on, parse_work(imported(1_000).body.as_deref().unwrap()).unwrap());
    }

    #[tokio::test]
    async fn an_invocation_with_time_left_evaluates_all_its_work_and_hands_nothing_on() {
        let queue = Arc::new(MemorySegmenterQueue::default());
        let retry = handler(queue.clone()).handle_batch(&[imported(1_000)], deadline_in(Duration::from_secs(30))).await;
        assert!(retry.is_empty());
        assert!(queue.handed_on.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn work_that_cannot_be_handed_on_brings_its_message_back() {
        let queue = Arc::new(MemorySegmenterQueue::default());
        queue.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let retry = handler(queue).handle_batch(&[imported(1_000)], deadline_in(Duration::from_secs(1))).await;
        assert_eq!(retry.positions().collect::<Vec<_>>(), [0]);
    }

    #[tokio::test]
    async fn an_invocation_writes_its_evaluations_and_each_changes_latency_to_its_membership() {
        let mut handler = handler(Arc::new(MemorySegmenterQueue::default()));
        let (emf, lines) = Emf::in_memory("Segmenter");
        handler.metrics = emf;
        let mut changed = imported(3);
        let time =
            (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut body: serde_json::Value = serde_json::from_str(changed.body.as_deref().unwrap()).unwrap();
        body["time"] = time.into();
        changed.body = Some(body.to_string());
        let mut sweep = SqsMessage::default();
        sweep.message_id = Some("m2".into());
        sweep.body = Some(r#"{"source":"herald","detail-type":"segment.job","detail":{"job":"sweep"}}"#.into());
        let mut event = herald_edge::sqs::SqsEvent::default();
        event.records = vec![changed, sweep];
        handler.handle(event).await;

        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        let document: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(document["SegmentEvaluations"], 4.0, "three users and a sweep");
        let latencies = document["ChangeToMembershipLatency"].as_array().unwrap();
        assert_eq!(latencies.len(), 1, "one per change message, none for a job");
        assert!((4_000.0..60_000.0).contains(&latencies[0].as_f64().unwrap()), "{latencies:?}");
    }

    #[test]
    fn handed_on_work_is_read_back_item_by_item() {
        let change = Change { attributes: ["tier".to_owned()].into(), ..Default::default() };
        let work = vec![Work::Change { user_id: "u1".into(), change }];
        let body = serde_json::json!({"source": "herald", "detail-type": "segment.work",
            "detail": HandedOn { work: work.clone() }});
        assert_eq!(parse_work(&body.to_string()).unwrap(), work);
    }

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
