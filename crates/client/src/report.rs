//! What the callbacks see: each request's report, and whatever was given up.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::{error::SendError, event::Event};

/// Called with every dispatched request, once its outcome is known.
pub type BatchListener = Arc<dyn Fn(&BatchReport) + Send + Sync>;
/// Called with whatever was given up: its events (or profile patch) and why.
pub type ErrorCallback = Arc<dyn Fn(Failure) + Send + Sync>;

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

/// What an [`ErrorCallback`] receives.
#[derive(Clone, Debug)]
pub struct Failure {
    pub error: SendError,
    /// The events given up (empty for an identify).
    pub events: Vec<Event>,
    /// The profile patch given up, for an identify.
    pub identify: Option<(String, Value)>,
}
