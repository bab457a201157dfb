//! A producer SDK for Herald's HTTP API.
//!
//! [`Client::track`] queues a behaviour event and returns at once; a background task batches
//! the queue and `POST`s it to `/v1/events`. [`Client::identify`] queues a profile patch that
//! the same task sends as `PUT /v1/users/{id}`.
//!
//! - **Batching**: a batch leaves when it holds [`ClientConfig::batch_size`] events, when its
//!   oldest event has waited [`ClientConfig::flush_interval`], on [`Client::flush`] and on
//!   [`Client::close`]. A batch never exceeds the API's limits ([`MAX_BATCH_EVENTS`] events,
//!   [`MAX_BATCH_BYTES`] bytes of JSON): larger ones are split, never refused. Only a single
//!   event whose JSON alone exceeds the limit cannot be sent; it reaches the error callback.
//! - **Exactly-once counting**: every [`Event`] gets a client-side `event_id` (UUID v4) when it
//!   is built. A batch that is retried (a timeout, a 5xx after the server already stored it)
//!   carries the same ids, and Herald counts each id once.
//! - **Retries**: network errors, `408`, `409`, `425`, `429` and `5xx` are retried up to
//!   [`ClientConfig::max_retries`] times with exponential backoff and full jitter
//!   ([`herald_wire::backoff::Backoff`]); a `429` waits at least its `Retry-After` (seconds,
//!   capped by [`ClientConfig::max_retry_after`]; an HTTP date works too). Other `4xx` are not retried. Whatever is
//!   given up reaches [`ClientConfig::on_error`] with its events or its patch.
//! - **Bounded queue**: at most [`ClientConfig::max_queue`] messages wait (besides the batch
//!   being formed and those in flight, at most `batch_size` events each). When it is full,
//!   [`FullQueuePolicy::Block`] makes [`Client::track`] wait for room (it is `async` for this
//!   reason; it returns at once whenever there is room) and [`FullQueuePolicy::DropNewest`]
//!   drops the new event and counts it in [`Client::dropped`]. [`Client::try_track`] never
//!   waits, whatever the policy.
//! - **Listeners**: [`ClientConfig::on_batch`] sees every dispatched request (its size, bytes,
//!   attempts and outcome, and for events what Herald [`Counted`]).
//!
//! The callbacks run on the client's background tasks: keep them quick and do not let them
//! panic (a panic ends the task, and what it held is lost).
//!
//! At most [`ClientConfig::max_in_flight`] requests of events are in flight at once (default
//! 1: batches leave in queue order, and Herald never has two of one producer's batches
//! competing for the same users' counters): a slow or failing API holds them, the queue
//! fills, and the full-queue policy applies.
//! Profile patches are sent one at a time, in queue order, so two patches of one user apply
//! in the order they were given.
//!
//! # Shutting down
//!
//! Call [`Client::close`] before the program ends: it sends everything queued and waits (up to
//! a timeout). Dropping the [`Client`] without closing it also makes the background task send
//! what is queued and then stop, but nothing waits for it: it only gets as far as the Tokio
//! runtime lets it run (a runtime that shuts down cancels it, and the rest is lost).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use herald_client::{Client, ClientConfig, Event, FullQueuePolicy};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(ClientConfig {
//!     batch_size: 50,
//!     full_queue: FullQueuePolicy::DropNewest,
//!     on_error: Some(std::sync::Arc::new(|failure: herald_client::Failure| {
//!         eprintln!("{} events lost: {}", failure.events.len(), failure.error);
//!     })),
//!     ..ClientConfig::new("https://api.example.com", "hk_live_...")
//! })?;
//!
//! client
//!     .track(Event::new("ana@example.com", "order").property("plan", "pro").property("amount", 42))
//!     .await?;
//! client.identify("ana@example.com", json!({"attributes": {"plan": ["pro"]}})).await?;
//!
//! // Before exiting: send what is queued, waiting at most five seconds.
//! client.close(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use herald_wire::backoff::Backoff;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::Instant,
};

/// The most events `POST /v1/events` takes in one request, and the largest body, in bytes.
pub use herald_wire::activity::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH as MAX_BATCH_EVENTS};

/// The most requests [`ClientConfig::max_in_flight`] allows.
pub const MAX_IN_FLIGHT: usize = 64;

const BODY_PREFIX: &[u8] = b"{\"events\":[";
const BODY_SUFFIX: &[u8] = b"]}";

/// A behaviour event, as `POST /v1/events` takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Generated (UUID v4) by [`Event::new`]: a resent event is counted once.
    pub event_id: String,
    pub user_id: String,
    pub name: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub properties: serde_json::Map<String, Value>,
}

impl Event {
    /// An event of `user_id` named `name`, happening now, with a fresh `event_id`.
    pub fn new(user_id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.into(),
            name: name.into(),
            timestamp: Utc::now(),
            properties: serde_json::Map::new(),
        }
    }

    /// Sets one property.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Sets when the event happened (default: when it was built).
    pub fn at(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Replaces the generated id, e.g. by one the producer already stores with the event.
    pub fn with_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = event_id.into();
        self
    }
}

/// What [`Client::track`] does when the queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FullQueuePolicy {
    /// Wait for room: [`Client::track`] returns once the event is queued.
    #[default]
    Block,
    /// Drop the new event and count it in [`Client::dropped`].
    DropNewest,
}

/// Called with every dispatched request, once its outcome is known.
pub type BatchListener = Arc<dyn Fn(&BatchReport) + Send + Sync>;
/// Called with whatever was given up: its events (or profile patch) and why.
pub type ErrorCallback = Arc<dyn Fn(Failure) + Send + Sync>;

/// The client's settings. Start from [`ClientConfig::new`] and override fields.
#[derive(Clone)]
pub struct ClientConfig {
    /// The API's root, e.g. `https://api.example.com`.
    pub base_url: String,
    /// A key with the scope `events:write` (and `profiles:write` for [`Client::identify`]).
    pub api_key: String,
    /// Events per batch (default 10; at most [`MAX_BATCH_EVENTS`], larger values are capped).
    pub batch_size: usize,
    /// The longest an event waits for its batch to fill (default 30 s).
    pub flush_interval: Duration,
    /// Messages (events, patches) the queue holds (default 10 000).
    pub max_queue: usize,
    pub full_queue: FullQueuePolicy,
    /// Retries after the first attempt (default 5).
    pub max_retries: u32,
    /// The backoff's first ceiling (default 100 ms); it doubles up to `retry_cap`.
    pub retry_base: Duration,
    /// The backoff's largest ceiling (default 10 s).
    pub retry_cap: Duration,
    /// The longest `Retry-After` honoured (default 60 s).
    pub max_retry_after: Duration,
    /// Per request (default 10 s).
    pub request_timeout: Duration,
    /// Requests of events sent at the same time (default 1; up to [`MAX_IN_FLIGHT`]). More
    /// raise a producer's throughput when its batches are of different users.
    pub max_in_flight: usize,
    pub on_batch: Option<BatchListener>,
    pub on_error: Option<ErrorCallback>,
}

impl ClientConfig {
    /// The defaults, for this API root and key.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self { base_url: base_url.into(), api_key: api_key.into(), ..Self::default() }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            api_key: String::new(),
            batch_size: 10,
            flush_interval: Duration::from_secs(30),
            max_queue: 10_000,
            full_queue: FullQueuePolicy::Block,
            max_retries: 5,
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1,
            on_batch: None,
            on_error: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue", &self.max_queue)
            .field("full_queue", &self.full_queue)
            .field("max_retries", &self.max_retries)
            .field("max_in_flight", &self.max_in_flight)
            .field("on_batch", &self.on_batch.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish_non_exhaustive()
    }
}

/// Which request a [`BatchReport`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `POST /v1/events`.
    Events,
    /// `PUT /v1/users/{id}`.
    Identify { user_id: String },
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Sent { status: u16 },
    /// A 4xx answer that is not retried.
    Rejected { status: u16 },
    /// The retries ran out (or, for a single oversized event, nothing could be sent).
    Failed,
}

/// What a [`BatchListener`] sees of each request.
#[derive(Clone, Debug)]
pub struct BatchReport {
    pub kind: RequestKind,
    /// Events in the batch (1 for an identify).
    pub size: usize,
    /// Bytes of JSON sent.
    pub bytes: usize,
    /// Attempts made, the first included.
    pub attempts: u32,
    pub outcome: Outcome,
    /// What Herald answered a sent batch of events: how many it counted, and how many it
    /// had counted before (a resent batch whose first answer was lost).
    pub counted: Option<Counted>,
}

/// The body of `202 Accepted` to `POST /v1/events`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Counted {
    pub counted: u64,
    pub duplicates: u64,
}

/// Why something was given up.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SendError {
    #[error("refused with {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: String },
    #[error("the event's JSON ({bytes} bytes) exceeds the API's {MAX_BATCH_BYTES}-byte limit")]
    EventTooLarge { bytes: usize },
}

/// What an [`ErrorCallback`] receives.
#[derive(Clone, Debug)]
pub struct Failure {
    pub error: SendError,
    /// The events given up (empty for an identify).
    pub events: Vec<Event>,
    /// The profile patch given up, for an identify.
    pub identify: Option<(String, Value)>,
}

/// Why [`Client::new`] refused its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("base_url: {0}")]
    BaseUrl(String),
    #[error("batch_size and max_queue must be at least 1, max_in_flight 1 to {MAX_IN_FLIGHT}")]
    OutOfRange,
    #[error("Client::new must be called inside a Tokio runtime")]
    NoRuntime,
    #[error("the HTTP client: {0}")]
    Http(String),
}

/// Why an event or patch was not queued.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// [`FullQueuePolicy::DropNewest`] dropped it (counted in [`Client::dropped`]).
    #[error("the queue is full: the event was dropped")]
    Dropped,
    /// [`Client::try_track`] under [`FullQueuePolicy::Block`]: not queued, not counted.
    #[error("the queue is full")]
    Full(Box<Event>),
    #[error("the client is closed")]
    Closed,
}

/// Why [`Client::close`] or [`Client::flush`] did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("timed out; the background task goes on sending")]
    Timeout,
    #[error("the client is closed")]
    Closed,
}

enum Message {
    Track(Event),
    Identify(String, Value),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// The producer client. Share it with `Arc<Client>`; see the crate docs.
pub struct Client {
    tx: mpsc::Sender<Message>,
    policy: FullQueuePolicy,
    dropped: Arc<AtomicU64>,
    closed: AtomicBool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("policy", &self.policy).field("dropped", &self.dropped()).finish()
    }
}

impl Client {
    /// Starts the background task on the current Tokio runtime.
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        if config.batch_size == 0 || config.max_queue == 0 || !(1..=MAX_IN_FLIGHT).contains(&config.max_in_flight) {
            return Err(ConfigError::OutOfRange);
        }
        let base = url::Url::parse(&config.base_url).map_err(|e| ConfigError::BaseUrl(e.to_string()))?;
        if base.cannot_be_a_base() {
            return Err(ConfigError::BaseUrl("cannot be a base".into()));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))?;
        let (tx, rx) = mpsc::channel(config.max_queue);
        let policy = config.full_queue;
        let worker = Worker {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            sender: Arc::new(Sender { http, base, config }),
            rx,
            pending: VecDeque::new(),
            pending_bytes: 0,
            oldest: None,
        };
        runtime.spawn(worker.run());
        Ok(Self { tx, policy, dropped: Arc::new(AtomicU64::new(0)), closed: AtomicBool::new(false) })
    }

    /// Queues an event. Returns at once while the queue has room; when it is full,
    /// [`FullQueuePolicy::Block`] waits for room and [`FullQueuePolicy::DropNewest`] drops
    /// the event (returning [`TrackError::Dropped`]).
    pub async fn track(&self, event: Event) -> Result<(), TrackError> {
        match self.policy {
            FullQueuePolicy::Block => {
                self.check_open()?;
                self.tx.send(Message::Track(event)).await.map_err(|_| TrackError::Closed)
            }
            FullQueuePolicy::DropNewest => self.try_track(event),
        }
    }

    /// Queues an event without ever waiting: when the queue is full, the event is dropped and
    /// counted under [`FullQueuePolicy::DropNewest`], and handed back in
    /// [`TrackError::Full`] under [`FullQueuePolicy::Block`].
    pub fn try_track(&self, event: Event) -> Result<(), TrackError> {
        self.check_open()?;
        match self.tx.try_send(Message::Track(event)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TrackError::Closed),
            Err(mpsc::error::TrySendError::Full(message)) => match self.policy {
                FullQueuePolicy::DropNewest => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Err(TrackError::Dropped)
                }
                FullQueuePolicy::Block => match message {
                    Message::Track(event) => Err(TrackError::Full(Box::new(event))),
                    _ => unreachable!("try_track only queues events"),
                },
            },
        }
    }

    /// Queues a profile patch, sent as `PUT /v1/users/{user_id}` in queue order. It waits for
    /// room whatever the policy: patches are not dropped.
    pub async fn identify(&self, user_id: impl Into<String>, patch: Value) -> Result<(), TrackError> {
        self.check_open()?;
        self.tx.send(Message::Identify(user_id.into(), patch)).await.map_err(|_| TrackError::Closed)
    }

    /// Sends everything queued before this call and waits until it has been sent (or given up).
    pub async fn flush(&self) -> Result<(), CloseError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Message::Flush(ack)).await.map_err(|_| CloseError::Closed)?;
        done.await.map_err(|_| CloseError::Closed)
    }

    /// Refuses new events, sends everything queued and waits for it, at most `timeout`.
    /// On [`CloseError::Timeout`] the background task goes on as far as the runtime lets it.
    pub async fn close(&self, timeout: Duration) -> Result<(), CloseError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Err(CloseError::Closed);
        }
        let work = async {
            let (ack, done) = oneshot::channel();
            self.tx.send(Message::Close(ack)).await.map_err(|_| CloseError::Closed)?;
            done.await.map_err(|_| CloseError::Closed)
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| CloseError::Timeout)?
    }

    /// Events dropped because the queue was full ([`FullQueuePolicy::DropNewest`]).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn check_open(&self) -> Result<(), TrackError> {
        if self.closed.load(Ordering::SeqCst) { Err(TrackError::Closed) } else { Ok(()) }
    }
}

struct Worker {
    sender: Arc<Sender>,
    /// A permit per request of events in flight.
    in_flight: Arc<Semaphore>,
    rx: mpsc::Receiver<Message>,
    /// Queued events with their JSON.
    pending: VecDeque<(Event, Vec<u8>)>,
    pending_bytes: usize,
    oldest: Option<Instant>,
}

impl Worker {
    fn batch_size(&self) -> usize {
        self.sender.config.batch_size.min(MAX_BATCH_EVENTS)
    }

    async fn run(mut self) {
        loop {
            let deadline = self.oldest.map(|t| t + self.sender.config.flush_interval);
            let message = tokio::select! {
                message = self.rx.recv() => message,
                () = sleep_until(deadline) => {
                    self.send_pending().await;
                    continue;
                }
            };
            match message {
                Some(Message::Track(event)) => self.push(event).await,
                Some(Message::Identify(user_id, patch)) => self.sender.identify(user_id, patch).await,
                Some(Message::Flush(ack)) => {
                    self.send_pending().await;
                    self.wait_for_requests().await;
                    let _ = ack.send(());
                }
                Some(Message::Close(ack)) => {
                    self.drain().await;
                    let _ = ack.send(());
                    return;
                }
                None => {
                    // Every `Client` is gone: send what is left while the runtime lets us.
                    self.send_pending().await;
                    self.wait_for_requests().await;
                    return;
                }
            }
        }
    }

    /// After close: takes what was queued concurrently with it, sends everything.
    async fn drain(&mut self) {
        self.rx.close();
        while let Some(message) = self.rx.recv().await {
            match message {
                Message::Track(event) => self.push(event).await,
                Message::Identify(user_id, patch) => self.sender.identify(user_id, patch).await,
                Message::Flush(ack) | Message::Close(ack) => {
                    self.send_pending().await;
                    self.wait_for_requests().await;
                    let _ = ack.send(());
                }
            }
        }
        self.send_pending().await;
        self.wait_for_requests().await;
    }

    /// Waits until no request of events is in flight.
    async fn wait_for_requests(&self) {
        let all = self.sender.config.max_in_flight as u32; // at most MAX_IN_FLIGHT
        let _idle = self.in_flight.acquire_many(all).await.expect("the semaphore is never closed");
    }

    async fn push(&mut self, event: Event) {
        let json = serde_json::to_vec(&event).expect("an event serialises");
        if BODY_PREFIX.len() + json.len() + BODY_SUFFIX.len() > MAX_BATCH_BYTES {
            let error = SendError::EventTooLarge { bytes: json.len() };
            self.sender.report(BatchReport {
                kind: RequestKind::Events,
                size: 1,
                bytes: json.len(),
                attempts: 0,
                outcome: Outcome::Failed,
                counted: None,
            });
            self.sender.fail(error, vec![event], None);
            return;
        }
        // Keep the pending batch within the byte limit: send first if this one would overflow it.
        if !self.pending.is_empty()
            && body_len(self.pending.len() + 1, self.pending_bytes + json.len()) > MAX_BATCH_BYTES
        {
            self.send_pending().await;
        }
        self.pending_bytes += json.len();
        self.pending.push_back((event, json));
        self.oldest.get_or_insert_with(Instant::now);
        if self.pending.len() >= self.batch_size() {
            self.send_pending().await;
        }
    }

    /// Sends all pending events, in batches within the API's limits.
    async fn send_pending(&mut self) {
        let limit = self.batch_size();
        while !self.pending.is_empty() {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some((_, json)) = self.pending.front() {
                if batch.len() >= limit
                    || (!batch.is_empty() && body_len(batch.len() + 1, bytes + json.len()) > MAX_BATCH_BYTES)
                {
                    break;
                }
                bytes += json.len();
                batch.push(self.pending.pop_front().expect("front exists"));
            }
            self.pending_bytes -= bytes;
            // Waits while max_in_flight requests are out: the queue fills meanwhile.
            let permit = self.in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
            let sender = self.sender.clone();
            tokio::spawn(async move {
                sender.events(batch).await;
                drop(permit);
            });
        }
        self.pending_bytes = 0;
        self.oldest = None;
    }
}

/// The body's length for `count` events whose JSON totals `bytes`.
fn body_len(count: usize, bytes: usize) -> usize {
    BODY_PREFIX.len() + bytes + count.saturating_sub(1) + BODY_SUFFIX.len()
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

struct Sender {
    http: reqwest::Client,
    base: url::Url,
    config: ClientConfig,
}

enum Attempt {
    Done(StatusCode, Option<Counted>),
    Refused(StatusCode, String),
    Retry(String, Option<Duration>),
}

impl Sender {
    async fn events(&self, batch: Vec<(Event, Vec<u8>)>) {
        let mut body = BODY_PREFIX.to_vec();
        for (i, (_, json)) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(json);
        }
        body.extend_from_slice(BODY_SUFFIX);
        debug_assert!(body.len() <= MAX_BATCH_BYTES && batch.len() <= MAX_BATCH_EVENTS);
        let url = self.url(&["v1", "events"]);
        let size = batch.len();
        let result = self.send(reqwest::Method::POST, url, body, RequestKind::Events, size).await;
        if let Err(error) = result {
            self.fail(error, batch.into_iter().map(|(event, _)| event).collect(), None);
        }
    }

    async fn identify(&self, user_id: String, patch: Value) {
        let body = serde_json::to_vec(&patch).expect("a JSON value serialises");
        let url = self.url(&["v1", "users", &user_id]);
        let kind = RequestKind::Identify { user_id: user_id.clone() };
        if let Err(error) = self.send(reqwest::Method::PUT, url, body, kind, 1).await {
            self.fail(error, Vec::new(), Some((user_id, patch)));
        }
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in Client::new").pop_if_empty().extend(segments);
        url
    }

    /// Sends with retries; reports the outcome to the listener.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Vec<u8>,
        kind: RequestKind,
        size: usize,
    ) -> Result<(), SendError> {
        let bytes = body.len();
        let report = |attempts, outcome, counted| {
            self.report(BatchReport { kind: kind.clone(), size, bytes, attempts, outcome, counted });
        };
        let backoff =
            Backoff::new(self.config.retry_base, self.config.retry_cap, self.config.max_retries.saturating_add(1));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (last, retry_after) = match self.attempt(method.clone(), url.clone(), body.clone()).await {
                Attempt::Done(status, counted) => {
                    report(attempts, Outcome::Sent { status: status.as_u16() }, counted);
                    return Ok(());
                }
                Attempt::Refused(status, text) => {
                    report(attempts, Outcome::Rejected { status: status.as_u16() }, None);
                    return Err(SendError::Rejected { status: status.as_u16(), body: text });
                }
                Attempt::Retry(last, retry_after) => (last, retry_after),
            };
            let retry = attempts - 1;
            if attempts >= backoff.max_attempts {
                report(attempts, Outcome::Failed, None);
                return Err(SendError::RetriesExhausted { attempts, last });
            }
            tracing::debug!(attempts, %last, "herald-client: retrying");
            let jitter = backoff.delay(retry);
            let wait = match retry_after {
                Some(after) => after.min(self.config.max_retry_after).max(jitter),
                None => jitter,
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, method: reqwest::Method, url: url::Url, body: Vec<u8>) -> Attempt {
        let request = self
            .http
            .request(method, url)
            .bearer_auth(&self.config.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Retry(error.to_string(), None),
        };
        let status = response.status();
        if status.is_success() {
            // Only `POST /v1/events` answers with counts; other bodies are not ours to read.
            let counted = response.bytes().await.ok().and_then(|body| serde_json::from_slice(&body).ok());
            return Attempt::Done(status, counted);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.text().await.unwrap_or_default();
        let retriable = status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 425 | 429);
        if retriable {
            Attempt::Retry(
                format!("{status}: {text}"),
                if status == StatusCode::TOO_MANY_REQUESTS { retry_after } else { None },
            )
        } else {
            Attempt::Refused(status, text)
        }
    }

    fn report(&self, report: BatchReport) {
        if let Some(listener) = &self.config.on_batch {
            listener(&report);
        }
    }

    fn fail(&self, error: SendError, events: Vec<Event>, identify: Option<(String, Value)>) {
        tracing::warn!(%error, events = events.len(), "herald-client: gave up");
        if let Some(on_error) = &self.config.on_error {
            on_error(Failure { error, events, identify });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 10 "), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = parse_retry_after(&later).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn body_len_counts_the_commas() {
        assert_eq!(body_len(1, 5), BODY_PREFIX.len() + 5 + BODY_SUFFIX.len());
        assert_eq!(body_len(3, 5), BODY_PREFIX.len() + 5 + 2 + BODY_SUFFIX.len());
    }
}
