//! The producer's handle: queues events and patches for the background task.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{
    batch::{Message, Worker},
    config::{ClientConfig, ConfigError, FullQueuePolicy, MAX_IN_FLIGHT},
    error::{CloseError, TrackError},
    event::Event,
    transport::Sender,
};

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
        let worker = Worker::new(Sender { http, base, config }, rx);
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
