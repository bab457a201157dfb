//! An in-process stand-in for Herald's API that records what it receives and fails on demand.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{post, put},
};
use herald_client::{BatchReport, ClientConfig, Failure};
use serde_json::Value;

pub const KEY: &str = "test-key";

/// What the server does with request number `n` (0-based) to `POST /v1/events`.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Accept,
    /// Fails without recording anything.
    Fail(u16),
    /// Records the events, then fails as if the answer was lost: the client resends them.
    RecordThenFail(u16),
    /// 429 with `Retry-After` in seconds.
    TooMany(u64),
    /// Waits until [`Server::release`], then accepts.
    Hang,
}

#[derive(Default)]
pub struct Record {
    pub requests: u64,
    /// Receptions per event id.
    pub ids: HashMap<String, u32>,
    /// (events, bytes) per request.
    pub batches: Vec<(usize, usize)>,
    pub times: Vec<Instant>,
    pub violations: Vec<String>,
    pub identifies: Vec<(String, Value)>,
}

impl Record {
    pub fn unique(&self) -> usize {
        self.ids.len()
    }

    pub fn duplicates(&self) -> u64 {
        self.ids.values().map(|&n| u64::from(n) - 1).sum()
    }
}

type Decide = Box<dyn Fn(u64) -> Reply + Send + Sync>;

struct ServerState {
    record: Mutex<Record>,
    decide: Decide,
    open: tokio::sync::watch::Sender<bool>,
}

pub struct Server {
    pub url: String,
    state: Arc<ServerState>,
}

impl Server {
    pub async fn start(decide: impl Fn(u64) -> Reply + Send + Sync + 'static) -> Self {
        let state = Arc::new(ServerState {
            record: Mutex::new(Record::default()),
            decide: Box::new(decide),
            open: tokio::sync::watch::channel(false).0,
        });
        let app = Router::new()
            .route("/v1/events", post(events))
            .route("/v1/users/{id}", put(users))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    pub fn record<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.state.record.lock().unwrap())
    }

    pub fn release(&self) {
        self.state.open.send_replace(true);
    }

    /// Waits until `f` holds, at most `limit`.
    pub async fn wait_for(&self, limit: Duration, f: impl Fn(&Record) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.record(&f) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.record(&f)
    }

    /// A config for this server with fast retries.
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            retry_base: Duration::from_millis(1),
            retry_cap: Duration::from_millis(10),
            max_retries: 10,
            ..ClientConfig::new(self.url.clone(), KEY)
        }
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"))
}

async fn events(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let events = parsed["events"].as_array().cloned().unwrap_or_default();
    let reply = {
        let mut record = state.record.lock().unwrap();
        let n = record.requests;
        record.requests += 1;
        record.times.push(Instant::now());
        record.batches.push((events.len(), body.len()));
        if body.len() > 1024 * 1024 || events.len() > 500 || events.is_empty() {
            record.violations.push(format!("request {n}: {} events, {} bytes", events.len(), body.len()));
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
        (state.decide)(n)
    };
    // Herald's answer: the events counted now, and those counted before.
    let store = |state: &ServerState| {
        let mut record = state.record.lock().unwrap();
        let mut counted = 0;
        for event in &events {
            let id = event["event_id"].as_str().unwrap_or_default().to_owned();
            let receptions = record.ids.entry(id).or_default();
            *receptions += 1;
            counted += u64::from(*receptions == 1);
        }
        serde_json::json!({"counted": counted, "duplicates": events.len() as u64 - counted}).to_string()
    };
    match reply {
        Reply::Accept => (StatusCode::ACCEPTED, store(&state)).into_response(),
        Reply::Fail(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Reply::RecordThenFail(status) => {
            store(&state);
            StatusCode::from_u16(status).unwrap().into_response()
        }
        Reply::TooMany(secs) => {
            let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Reply::Hang => {
            let mut open = state.open.subscribe();
            open.wait_for(|open| *open).await.unwrap();
            (StatusCode::ACCEPTED, store(&state)).into_response()
        }
    }
}

async fn users(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let patch: Value = serde_json::from_slice(&body).unwrap();
    state.record.lock().unwrap().identifies.push((id, patch));
    StatusCode::OK.into_response()
}

/// Collects what the listener and the error callback see.
#[derive(Clone, Default)]
pub struct Seen {
    pub reports: Arc<Mutex<Vec<BatchReport>>>,
    pub failures: Arc<Mutex<Vec<Failure>>>,
}

impl Seen {
    pub fn attach(&self, mut config: ClientConfig) -> ClientConfig {
        let reports = self.reports.clone();
        let failures = self.failures.clone();
        config.on_batch = Some(Arc::new(move |report: &BatchReport| reports.lock().unwrap().push(report.clone())));
        config.on_error = Some(Arc::new(move |failure: Failure| failures.lock().unwrap().push(failure)));
        config
    }

    pub fn reports(&self) -> Vec<BatchReport> {
        self.reports.lock().unwrap().clone()
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().unwrap().clone()
    }
}
