//! The background task: takes what the [`Client`](crate::Client) queues, packs events into
//! batches within the API's limits and hands each to the transport, at most
//! `max_in_flight` at once.

use std::{collections::VecDeque, sync::Arc};

use herald_wire::activity::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH as MAX_BATCH_EVENTS};
use serde_json::Value;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::Instant,
};

use crate::{
    body::body_len,
    error::SendError,
    event::Event,
    report::{BatchReport, Outcome, RequestKind},
    transport::Sender,
};

/// What the client queues for the background task.
pub(crate) enum Message {
    Track(Event),
    Identify(String, Value),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// The background task's state: its inbox and the batch being formed.
pub(crate) struct Worker {
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
    pub(crate) fn new(sender: Sender, rx: mpsc::Receiver<Message>) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(sender.config.max_in_flight)),
            sender: Arc::new(sender),
            rx,
            pending: VecDeque::new(),
            pending_bytes: 0,
            oldest: None,
        }
    }

    fn batch_size(&self) -> usize {
        self.sender.config.batch_size.min(MAX_BATCH_EVENTS)
    }

    pub(crate) async fn run(mut self) {
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
        if body_len(1, json.len()) > MAX_BATCH_BYTES {
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
