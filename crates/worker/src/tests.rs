//! The worker's handler over in-memory stores and scripted providers.

use std::{
    collections::BTreeSet,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use herald_core::{
    campaigns::{
        Campaign, CampaignCounters, CampaignState, ShardProgress,
        memory::{MemoryCampaigns, MemoryQueues},
    },
    delivery::{
        ChannelRecipient, ContentRef, DeliveryStatus, DeliveryStore, Outgoing, SendError, SendErrorCode, SendFailure,
        Target, delivery_id,
        memory::{MemoryDeliveries, MemoryPreferences, MemoryTemplates},
        rate_limit::RateLimit,
        rendering::ChannelContent,
        runner::{HAND_ON_AFTER_RECEIVES, MAX_ATTEMPTS},
    },
    store::StoreError,
};
use herald_edge::sqs::{SqsBatchResponse, SqsEvent};
use herald_wire::backoff::Backoff;

use super::*;
use crate::config::parse_rate_limit;

/// A provider that fails the recipients of `failing` (retryably) and sends the rest.
#[derive(Default)]
struct FlakySender {
    failing: Mutex<BTreeSet<String>>,
    sent: Mutex<Vec<String>>,
    /// How long each send takes.
    hold: Mutex<Duration>,
}

#[async_trait::async_trait]
impl Sender for FlakySender {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let hold = *self.hold.lock().unwrap();
        tokio::time::sleep(hold).await;
        if self.failing.lock().unwrap().contains(message.delivery_id) {
            return Err(SendError::Retryable(SendFailure::new(SendErrorCode::Throttled)));
        }
        self.sent.lock().unwrap().push(message.delivery_id.to_owned());
        Ok(format!("m-{}", message.delivery_id))
    }
}

/// Campaigns that count their reads, or fail every read.
#[derive(Default)]
struct CountedCampaigns {
    inner: MemoryCampaigns,
    reads: AtomicUsize,
    adds: AtomicUsize,
}

#[async_trait::async_trait]
impl CampaignStore for CountedCampaigns {
    async fn create(&self, campaign: &Campaign) -> Result<bool, StoreError> {
        self.inner.create(campaign).await
    }
    async fn get(&self, campaign_id: &str) -> Result<Option<Campaign>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(campaign_id).await
    }
    async fn set_state(&self, id: &str, state: CampaignState, from: &[CampaignState]) -> Result<bool, StoreError> {
        self.inner.set_state(id, state, from).await
    }
    async fn get_with_shard(&self, id: &str, shard: u32) -> Result<Option<(Campaign, ShardProgress)>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_with_shard(id, shard).await
    }
    async fn record_page(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &CampaignCounters,
        message_id: &str,
    ) -> Result<Option<u32>, StoreError> {
        self.inner.record_page(campaign_id, shard, cursor, next, counts, message_id).await
    }
    async fn page_followed_up(&self, id: &str, shard: u32, cursor: Option<&str>, by: &str) -> Result<(), StoreError> {
        self.inner.page_followed_up(id, shard, cursor, by).await
    }
    async fn add_counts(&self, campaign_id: &str, counts: &CampaignCounters) -> Result<(), StoreError> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        self.inner.add_counts(campaign_id, counts).await
    }
    async fn add_outcomes(&self, campaign_id: &str, counts: &CampaignCounters) -> Result<bool, StoreError> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        self.inner.add_outcomes(campaign_id, counts).await
    }
    async fn settle(&self, campaign_id: &str, outcomes: &CampaignCounters) -> Result<bool, StoreError> {
        self.inner.settle(campaign_id, outcomes).await
    }
}

struct BrokenQueues;

#[async_trait::async_trait]
impl ChannelQueues for BrokenQueues {
    async fn enqueue(&self, _: &[ChannelMessage], _: Duration) -> Result<(), StoreError> {
        Err(StoreError::Transient("sqs is down".into()))
    }
}

struct World {
    deliveries: Arc<MemoryDeliveries>,
    sender: Arc<FlakySender>,
    queues: Arc<MemoryQueues>,
    campaigns: Arc<CountedCampaigns>,
    worker: WorkerHandler,
}

fn world_with(queues: Arc<dyn ChannelQueues>) -> World {
    let deliveries = Arc::new(MemoryDeliveries::default());
    let sender = Arc::new(FlakySender::default());
    let memory_queues = Arc::new(MemoryQueues::default());
    let campaigns = Arc::new(CountedCampaigns::default());
    let mut pipeline = Pipeline::new(
        Channel::Sms,
        deliveries.clone(),
        Arc::new(MemoryPreferences::default()),
        Arc::new(herald_core::suppressions::memory::MemorySuppressions::default()),
        Arc::new(MemoryTemplates::default()),
        Providers { primary: sender.clone(), secondary: None },
        None,
    );
    pipeline.send_retries = Backoff::new(Duration::ZERO, Duration::ZERO, 2);
    let worker = WorkerHandler::new(pipeline, queues, campaigns.clone());
    World { deliveries, sender, queues: memory_queues, campaigns, worker }
}

fn world() -> World {
    let mut w = world_with(Arc::new(BrokenQueues));
    let queues = w.queues.clone();
    w.worker.runner.queues = queues;
    w
}

fn campaign(id: &str, state: CampaignState) -> Campaign {
    Campaign { state, ..Campaign::new(id, "spring", "s1", "t1", 1, vec![Channel::Sms], chrono::Utc::now()) }
}

/// A campaign's job for `users` (by phone number), as the dispatcher makes them.
fn campaign_job(campaign_id: &str, users: &[&str]) -> ChannelMessage {
    ChannelMessage {
        notification_id: campaign_id.into(),
        notification_type: "spring".into(),
        channel: Channel::Sms,
        content: ContentRef::Inline(ChannelContent { subject: None, body: "sale".into(), html: None }),
        params: Default::default(),
        recipients: users
            .iter()
            .map(|u| ChannelRecipient {
                delivery_id: delivery_id(campaign_id, u, Channel::Sms),
                user_id: Some((*u).to_owned()),
                target: Target::Phone(format!("+1415555{u}")),
            })
            .collect(),
        campaign_id: Some(campaign_id.into()),
        attempt: 0,
        transactional: false,
    }
}

fn event(jobs: &[&ChannelMessage]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("m{i}"));
            message.body = Some(serde_json::to_string(job).unwrap());
            message
        })
        .collect();
    event
}

fn failed(response: &SqsBatchResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

async fn counters(w: &World, campaign_id: &str) -> CampaignCounters {
    w.campaigns.inner.get(campaign_id).await.unwrap().unwrap().counters
}

#[tokio::test(start_paused = true)]
async fn a_paced_worker_claims_only_what_it_can_send_before_its_deadline() {
    let mut w = world();
    // 2.8 sends a second and 10 s to go, 2 s of it kept for recording: 22 sends.
    w.worker.runner.pipeline.pacing = herald_core::delivery::pacing::Pacer::new(2.8);
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let users: Vec<String> = (0..40).map(|i| format!("{i:04}")).collect();
    let jobs: Vec<ChannelMessage> = users
        .chunks(10)
        .map(|chunk| campaign_job("c1", &chunk.iter().map(String::as_str).collect::<Vec<_>>()))
        .collect();
    let records = event(&jobs.iter().collect::<Vec<_>>()).records;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);

    let retry = w.worker.handle_batch(&records, Invocation { deadline: Some(deadline) }).await;

    assert_eq!(w.sender.sent.lock().unwrap().len(), 22);
    // The third message's last 8 recipients are handed on, unclaimed, in a message of
    // their own, and so is the fourth message, whole: none goes back to SQS, where each
    // return would use up one of its receives.
    let handed_on = w.queues.jobs.lock().unwrap().clone();
    assert_eq!(handed_on.len(), 2);
    assert_eq!(handed_on[0].recipients, jobs[2].recipients[2..]);
    assert_eq!(handed_on[1], jobs[3]);
    assert_eq!(handed_on[0].attempt, 0);
    assert!(retry.is_empty());
    for r in handed_on[0].recipients.iter().chain(&jobs[3].recipients) {
        assert_eq!(w.deliveries.status(&r.delivery_id), None, "claimed past the deadline");
    }
}

#[tokio::test]
async fn a_worker_starts_no_message_it_cannot_finish_before_its_deadline_and_hands_them_on() {
    let w = world();
    *w.sender.hold.lock().unwrap() = Duration::from_millis(1_500);
    let jobs: Vec<ChannelMessage> = ["0001", "0002", "0003"].iter().map(|u| campaign_job("c1", &[u])).collect();
    let records = event(&jobs.iter().collect::<Vec<_>>()).records;
    // The first message takes 1.5 s; a second would end past 4 s less the 2 s margin.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);

    let retry = w.worker.handle_batch(&records, Invocation { deadline: Some(deadline) }).await;

    assert_eq!(w.sender.sent.lock().unwrap().len(), 1);
    assert_eq!(*w.queues.jobs.lock().unwrap(), jobs[1..], "handed on as new messages");
    assert!(retry.is_empty());
    for job in &jobs[1..] {
        assert_eq!(w.deliveries.status(&job.recipients[0].delivery_id), None, "claimed past the deadline");
    }
}

#[tokio::test]
async fn messages_past_the_deadline_go_back_to_sqs_when_they_cannot_be_handed_on() {
    let w = world_with(Arc::new(BrokenQueues));
    *w.sender.hold.lock().unwrap() = Duration::from_millis(1_500);
    let jobs: Vec<ChannelMessage> = ["0001", "0002"].iter().map(|u| campaign_job("c1", &[u])).collect();
    let records = event(&jobs.iter().collect::<Vec<_>>()).records;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let retry = w.worker.handle_batch(&records, Invocation { deadline: Some(deadline) }).await;
    assert_eq!(retry.positions().collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn a_failed_recipient_is_queued_again_alone_and_the_message_acknowledged() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let job = campaign_job("c1", &["0001", "0002", "0003"]);
    let failing = job.recipients[1].delivery_id.clone();
    w.sender.failing.lock().unwrap().insert(failing.clone());
    let response = w.worker.handle(event(&[&job])).await;
    assert!(failed(&response).is_empty());
    assert_eq!(w.sender.sent.lock().unwrap().len(), 2);
    let queued = w.queues.jobs.lock().unwrap().clone();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].recipients, [job.recipients[1].clone()]);
    assert_eq!((queued[0].attempt, queued[0].campaign_id.as_deref()), (1, Some("c1")));
    assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 2, ..Default::default() });

    // The retry sends the failed recipient only, and counts it once it settles.
    w.sender.failing.lock().unwrap().clear();
    let response = w.worker.handle(event(&[&queued[0]])).await;
    assert!(failed(&response).is_empty());
    assert_eq!(w.sender.sent.lock().unwrap().iter().filter(|id| **id == failing).count(), 1);
    assert_eq!(w.sender.sent.lock().unwrap().len(), 3);
    assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 3, ..Default::default() });
    assert_eq!(w.deliveries.status(&failing), Some(DeliveryStatus::Sent));
}

#[tokio::test]
async fn recipients_of_notifications_are_queued_again_too() {
    let w = world();
    let mut job = campaign_job("n1", &["0001"]);
    job.campaign_id = None;
    let d = herald_core::delivery::Delivery::new(
        "n1",
        "0001",
        Channel::Sms,
        DeliveryStatus::Created,
        None,
        chrono::Utc::now(),
    );
    w.deliveries.create(&[d]).await.unwrap();
    w.sender.failing.lock().unwrap().insert(job.recipients[0].delivery_id.clone());
    assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
    assert_eq!(w.queues.jobs.lock().unwrap()[0].attempt, 1);
    assert_eq!(w.campaigns.reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_job_out_of_attempts_is_handed_back_to_sqs() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let mut job = campaign_job("c1", &["0001", "0002"]);
    job.attempt = MAX_ATTEMPTS;
    w.sender.failing.lock().unwrap().insert(job.recipients[0].delivery_id.clone());
    assert_eq!(failed(&w.worker.handle(event(&[&job])).await), ["m0"]);
    assert!(w.queues.jobs.lock().unwrap().is_empty());
    assert_eq!(counters(&w, "c1").await.sent, 1);
}

/// `job`'s message as SQS delivers it for the `count`th time.
fn received(job: &ChannelMessage, count: u32) -> SqsEvent {
    let mut event = event(&[job]);
    event.records[0].attributes.insert("ApproximateReceiveCount".into(), count.to_string());
    event
}

#[tokio::test]
async fn a_message_back_too_often_is_handed_on_anew_one_attempt_later_before_it_is_tried() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let job = campaign_job("c1", &["0001", "0002"]);
    let response = w.worker.handle(received(&job, HAND_ON_AFTER_RECEIVES)).await;
    assert!(failed(&response).is_empty());
    assert!(w.sender.sent.lock().unwrap().is_empty(), "tried before it was handed on");
    assert_eq!(*w.queues.jobs.lock().unwrap(), [ChannelMessage { attempt: 1, ..job }]);
}

#[tokio::test]
async fn a_message_back_less_often_is_tried_where_it_is() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let job = campaign_job("c1", &["0001"]);
    assert!(failed(&w.worker.handle(received(&job, HAND_ON_AFTER_RECEIVES - 1)).await).is_empty());
    assert_eq!(w.sender.sent.lock().unwrap().len(), 1);
    assert!(w.queues.jobs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_message_back_too_often_on_its_last_attempt_is_tried_and_left_to_the_dead_letter_queue() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let mut job = campaign_job("c1", &["0001"]);
    job.attempt = MAX_ATTEMPTS - 1;
    assert!(failed(&w.worker.handle(received(&job, HAND_ON_AFTER_RECEIVES)).await).is_empty());
    assert_eq!(w.sender.sent.lock().unwrap().len(), 1);
    assert!(w.queues.jobs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_retry_that_cannot_be_queued_fails_the_message_and_its_redelivery_resends_nothing_settled() {
    let w = world_with(Arc::new(BrokenQueues));
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let job = campaign_job("c1", &["0001", "0002"]);
    w.sender.failing.lock().unwrap().insert(job.recipients[0].delivery_id.clone());
    assert_eq!(failed(&w.worker.handle(event(&[&job])).await), ["m0"]);
    w.sender.failing.lock().unwrap().clear();
    assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
    let sent = w.sender.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 2, ..Default::default() });
}

#[tokio::test]
async fn a_redelivered_campaign_message_sends_and_counts_nothing_twice() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let job = campaign_job("c1", &["0001", "0002", "0003"]);
    assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
    assert!(failed(&w.worker.handle(event(&[&job, &job])).await).is_empty());
    assert_eq!(w.sender.sent.lock().unwrap().len(), 3);
    assert_eq!(counters(&w, "c1").await, CampaignCounters { sent: 3, ..Default::default() });
    // One add per message that settled something: the redeliveries added nothing.
    assert_eq!(w.campaigns.adds.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn outcomes_reaching_a_campaign_the_reconciler_settled_are_not_counted_again() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Done)).await.unwrap();
    let job = campaign_job("c1", &["0001", "0002"]);
    assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
    assert_eq!(w.sender.sent.lock().unwrap().len(), 2);
    assert_eq!(counters(&w, "c1").await, CampaignCounters::default(), "counted by the recount already");
}

#[tokio::test]
async fn a_cancelled_campaign_sends_nothing_and_counts_its_recipients_skipped() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Cancelled)).await.unwrap();
    let job = campaign_job("c1", &["0001", "0002", "0003"]);
    assert!(failed(&w.worker.handle(event(&[&job])).await).is_empty());
    assert!(w.sender.sent.lock().unwrap().is_empty());
    assert!(w.deliveries.items.lock().unwrap().is_empty(), "nothing is settled");
    assert_eq!(counters(&w, "c1").await, CampaignCounters { skipped_cancelled: 3, ..Default::default() });
    assert_eq!(w.campaigns.adds.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_campaign_is_read_once_per_batch_and_cached_for_a_few_seconds() {
    let w = world();
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let jobs: Vec<ChannelMessage> = (0..10).map(|i| campaign_job("c1", &[&format!("{i:04}")])).collect();
    let refs: Vec<&ChannelMessage> = jobs.iter().collect();
    assert!(failed(&w.worker.handle(event(&refs)).await).is_empty());
    assert_eq!(w.campaigns.reads.load(Ordering::SeqCst), 1);
    let more = campaign_job("c1", &["0100"]);
    assert!(failed(&w.worker.handle(event(&[&more])).await).is_empty());
    assert_eq!(w.campaigns.reads.load(Ordering::SeqCst), 1);
    assert_eq!(counters(&w, "c1").await.sent, 11);
}

#[test]
fn the_worker_needs_its_queue_and_the_jobs_table() {
    let base = [
        ("CHANNEL", "sms"),
        ("QUEUE_URL", "https://sqs.example/123/sms"),
        ("JOBS_TABLE", "jobs"),
        ("DELIVERIES_TABLE", "d"),
        ("PREFERENCES_TABLE", "p"),
        ("SUPPRESSIONS_TABLE", "s"),
        ("RATE_LIMITS_TABLE", "r"),
        ("TEMPLATES_TABLE", "t"),
    ];
    let config = |without: &str| {
        WorkerConfig::from_lookup(|name| {
            base.iter().find(|(n, _)| *n == name && *n != without).map(|(_, v)| (*v).to_owned())
        })
    };
    let all = config("").unwrap();
    assert_eq!((all.queue_url.as_str(), all.jobs_table.as_str()), ("https://sqs.example/123/sms", "jobs"));
    for name in ["QUEUE_URL", "JOBS_TABLE"] {
        assert!(config(name).unwrap_err().to_string().contains(name), "{name}");
    }
}

#[test]
fn a_worker_needs_the_key_ring_of_its_channel_only() {
    let config = |pairs: &[(&'static str, &'static str)]| {
        let base = [
            ("QUEUE_URL", "q"),
            ("JOBS_TABLE", "j"),
            ("DELIVERIES_TABLE", "d"),
            ("PREFERENCES_TABLE", "p"),
            ("SUPPRESSIONS_TABLE", "s"),
            ("RATE_LIMITS_TABLE", "r"),
            ("TEMPLATES_TABLE", "t"),
        ];
        let all: Vec<(&str, &str)> = base.iter().chain(pairs).copied().collect();
        WorkerConfig::from_lookup(move |name| all.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    };
    let missing = |name| Err(ConfigError::Missing(name));
    assert_eq!(config(&[("CHANNEL", "webhook")]), missing("WEBHOOK_SIGNING_KEYS_SECRET_ARN"));
    assert!(config(&[("CHANNEL", "webhook"), ("WEBHOOK_SIGNING_KEYS_SECRET_ARN", "arn:w")]).is_ok());
    let tracked = [("CHANNEL", "email"), ("TRACKING_BASE_URL", "https://api.example")];
    assert_eq!(config(&tracked), missing("TRACKING_KEYS_SECRET_ARN"));
    assert!(config(&[tracked[0], tracked[1], ("TRACKING_KEYS_SECRET_ARN", "arn:t")]).is_ok());
    assert!(config(&[("CHANNEL", "email")]).is_ok(), "untracked email signs nothing");
    assert!(config(&[("CHANNEL", "sms")]).is_ok());
}

#[test]
fn an_invocation_sends_its_share_of_the_channels_quota() {
    let base = [
        ("CHANNEL", "email"),
        ("QUEUE_URL", "https://sqs.example/123/email"),
        ("JOBS_TABLE", "jobs"),
        ("DELIVERIES_TABLE", "d"),
        ("PREFERENCES_TABLE", "p"),
        ("SUPPRESSIONS_TABLE", "s"),
        ("RATE_LIMITS_TABLE", "r"),
        ("TEMPLATES_TABLE", "t"),
    ];
    let config = |extra: &[(&'static str, &'static str)]| {
        let all: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        WorkerConfig::from_lookup(move |name| all.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    };
    assert_eq!(config(&[]).unwrap().sends_per_second_per_invocation(), None);
    let paced = config(&[("SENDS_PER_SECOND", "14"), ("MAX_CONCURRENCY", "5")]).unwrap();
    assert_eq!(paced.sends_per_second_per_invocation(), Some(2.8));
    assert_eq!(config(&[("SENDS_PER_SECOND", "20")]).unwrap().sends_per_second_per_invocation(), Some(20.0));
    assert!(config(&[("SENDS_PER_SECOND", "0")]).is_err());
    assert!(config(&[("SENDS_PER_SECOND", "fast")]).is_err());
    assert!(config(&[("MAX_CONCURRENCY", "0")]).is_err());
}

#[test]
fn rate_limits_parse_from_n_per_seconds() {
    assert_eq!(parse_rate_limit("20/3600").unwrap(), Some(RateLimit { limit: 20, window: 3600 }));
    assert_eq!(parse_rate_limit("off").unwrap(), None);
    assert!(parse_rate_limit("20 per hour").is_err());
}

#[test]
fn jobs_are_read_from_the_eventbridge_envelope_or_bare() {
    let job = serde_json::json!({"notification_id": "n", "notification_type": "t", "channel": "sms",
        "content": {"inline": {"body": "x"}}, "recipients": []});
    let envelope = serde_json::json!({"detail-type": "notification.sms", "source": "herald", "detail": job});
    assert_eq!(parse_job(&envelope.to_string()).unwrap(), parse_job(&job.to_string()).unwrap());
    assert!(parse_job("{\"nope\": 1}").is_err());
}

/// The documents a worker wrote, read back from its writer's memory.
fn written(lines: &Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    lines.lock().unwrap().drain(..).map(|line| serde_json::from_str(&line).unwrap()).collect()
}

/// The value of `metric` in the document whose dimension `name` is `value`.
fn value_where<'a>(documents: &'a [serde_json::Value], metric: &str, name: &str, value: &str) -> &'a serde_json::Value {
    documents
        .iter()
        .find(|d| d[name] == value && d.get(metric).is_some())
        .map_or(&serde_json::Value::Null, |d| &d[metric])
}

#[tokio::test]
async fn an_invocation_writes_its_deliveries_by_status_and_its_campaigns_progress() {
    let mut w = world();
    let (emf, lines) = Emf::in_memory(function_name(Channel::Sms));
    let emf = Arc::new(emf);
    w.worker.metrics = emf.clone();
    w.worker.runner.metrics = emf;
    w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
    let job = campaign_job("c1", &["0001", "0002", "0003"]);
    w.sender.failing.lock().unwrap().insert(job.recipients[1].delivery_id.clone());
    w.worker.handle(event(&[&job])).await;

    let documents = written(&lines);
    assert_eq!(documents.len(), 2, "one document per status: {documents:?}");
    assert!(documents.iter().all(|d| d["function"] == "SmsWorker" && d["channel"] == "sms"));
    assert_eq!(*value_where(&documents, "Deliveries", "status", "sent"), 2.0);
    assert_eq!(*value_where(&documents, "Deliveries", "status", "retry"), 1.0);
    assert_eq!(*value_where(&documents, "CampaignRecipientsSettled", "status", "sent"), 2.0);
    assert_eq!(*value_where(&documents, "Invocations", "outcome", "ok"), 1.0);
    let text = lines.lock().unwrap().concat();
    assert!(!text.contains("0001") && !text.contains("c1"), "no id nor phone in metrics");
}

#[tokio::test]
async fn a_timed_provider_records_each_calls_latency_by_channel() {
    let (emf, lines) = Emf::in_memory("SmsWorker");
    let emf = Arc::new(emf);
    let flaky = Arc::new(FlakySender::default());
    *flaky.hold.lock().unwrap() = Duration::from_millis(20);
    let timed = TimedSender::new(flaky, Channel::Sms, emf.clone());
    let content = herald_core::delivery::rendering::Rendered { subject: None, body: "hi".into(), html: None };
    let outgoing = Outgoing {
        delivery_id: "d1",
        user_id: None,
        notification_type: "t",
        target: &Target::Phone("+14155550001".into()),
        content: &content,
        list_unsubscribe: None,
    };
    timed.send(&outgoing).await.unwrap();
    timed.send(&outgoing).await.unwrap();
    emf.flush();
    let documents = written(&lines);
    let latencies = documents[0]["ProviderLatency"].as_array().unwrap();
    assert_eq!(latencies.len(), 2);
    assert!(latencies.iter().all(|ms| ms.as_f64().unwrap() >= 20.0), "{latencies:?}");
    assert_eq!(documents[0]["channel"], "sms");
}

/// A provider's error message quotes an address and a number; Herald keeps its code only.
mod provider_text {
    use std::io::Write;

    use aws_smithy_runtime_api::{
        client::{
            http::{HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn},
            orchestrator::{HttpRequest, HttpResponse},
        },
        http::StatusCode,
    };
    use aws_smithy_types::body::SdkBody;
    use herald_aws::senders::SnsSmsSender;
    use herald_core::delivery::events::status_changes;

    use super::*;

    const EMAIL: &str = "someone@example.com";
    const PHONE: &str = "+14155550123";

    /// SNS refusing every Publish, its message naming the number and an address.
    #[derive(Debug)]
    struct Refusing;

    impl HttpConnector for Refusing {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let body = format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameter</Code><Message>Invalid parameter: PhoneNumber Reason: {PHONE} of {EMAIL} is not valid to publish to</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
            );
            let mut response = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::from(body));
            response.headers_mut().insert("content-type", "text/xml");
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    fn refusing_sns() -> SnsSmsSender {
        let config = aws_sdk_sns::Config::builder()
            .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
            .region(aws_sdk_sns::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sns::config::Credentials::for_tests())
            .http_client(http_client_fn(|_, _| SharedHttpConnector::new(Refusing)))
            .build();
        SnsSmsSender::new(aws_sdk_sns::Client::from_conf(config))
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn assert_no_personal_data(what: &str, text: &str) {
        assert!(!text.contains(EMAIL), "the address in {what}: {text}");
        assert!(!text.contains(PHONE), "the number in {what}: {text}");
    }

    #[tokio::test]
    async fn a_provider_s_message_reaches_no_delivery_event_or_log() {
        // Herald's crates at their most verbose, the rest as a function logs them (info).
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info,herald_core=trace,herald_aws=trace,herald_worker=trace,herald_edge=trace")
            .with_writer(move || writer.clone())
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);

        let w = world();
        let mut pipeline = Pipeline::new(
            Channel::Sms,
            w.deliveries.clone(),
            Arc::new(MemoryPreferences::default()),
            Arc::new(herald_core::suppressions::memory::MemorySuppressions::default()),
            Arc::new(MemoryTemplates::default()),
            Providers { primary: Arc::new(refusing_sns()), secondary: None },
            None,
        );
        pipeline.send_retries = Backoff::new(Duration::ZERO, Duration::ZERO, 2);
        let worker = WorkerHandler::new(pipeline, w.queues.clone(), w.campaigns.clone());
        w.campaigns.create(&campaign("c1", CampaignState::Sending)).await.unwrap();
        let mut job = campaign_job("c1", &["u1"]);
        job.recipients[0].target = Target::Phone(PHONE.into());

        let retry = worker.handle_batch(&event(&[&job]).records, Invocation { deadline: None }).await;

        assert!(retry.is_empty());
        let delivery = w.deliveries.get(&job.recipients[0].delivery_id).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Error);
        assert_eq!(delivery.history.last().unwrap().reason.as_deref(), Some("rejected/InvalidParameter"));
        assert_no_personal_data("the deliveries", &format!("{:?}", w.deliveries.items.lock().unwrap()));
        let events = serde_json::to_string(&status_changes(None, &delivery)).unwrap();
        assert!(events.contains("rejected/InvalidParameter"), "{events}");
        assert_no_personal_data("the delivery.status_changed events", &events);
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("\"error\":\"rejected/InvalidParameter\""), "the failure was logged: {logs}");
        assert_no_personal_data("the logs", &logs);
    }
}
