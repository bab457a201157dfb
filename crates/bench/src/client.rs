//! The producer SDK (herald-client): what `Client::track` costs the app, and how fast it
//! delivers events compared with the Python optimizely-sdk, both sending to one local sink
//! that parses and counts every body.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use herald_client::{Client, ClientConfig, Event};
use herald_local::repo_root;
use serde::Deserialize;

use crate::import::report;

/// Events tracked for the cost of one `track` call.
const TRACKED: usize = 1_000_000;
/// Events each SDK delivers in the throughput run (the Python SDK takes ~5 s for these).
const THROUGHPUT_EVENTS: usize = 100_000;
/// The same batch size for both SDKs.
const BATCH_SIZE: usize = 100;
/// Both SDKs' default flush interval.
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);
const API_KEY: &str = "hk_bench_client";
const OPTIMIZELY_PATH: &str = "/optimizely/v1/events";

pub fn client_figures() {
    let sink = Sink::start();
    let base_url = format!("http://{}", sink.addr);
    // The app's user ids exist before it tracks: building an event copies one, as an app would.
    let users: Arc<Vec<String>> = Arc::new((0..1000).map(|i| format!("user-{i}")).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    for prebuilt in [false, true] {
        let before = sink.counts.herald();
        let ns = runtime.block_on(track_cost(base_url.clone(), users.clone(), prebuilt));
        let sent = sink.counts.herald().0 - before.0;
        assert_eq!(sent, TRACKED as u64, "the sink counted {sent} of {TRACKED} tracked events");
        let name = if prebuilt { "track ns per event (prebuilt events)" } else { "track ns per event" };
        report(name, ns, "ns");
    }

    let before = sink.counts.herald();
    let herald_seconds = runtime.block_on(herald_throughput(base_url.clone(), users));
    let (events, requests) = sink.counts.herald();
    let (events, requests) = (events - before.0, requests - before.1);
    assert_eq!(events, THROUGHPUT_EVENTS as u64, "the sink counted {events} of {THROUGHPUT_EVENTS} Herald events");
    drop(runtime);

    let optimizely_seconds = optimizely_throughput(&format!("{base_url}{OPTIMIZELY_PATH}"), &sink);
    assert_eq!(sink.counts.rejected.load(Ordering::Relaxed), 0, "the sink refused requests");

    let herald_rate = THROUGHPUT_EVENTS as f64 / herald_seconds;
    let optimizely_rate = THROUGHPUT_EVENTS as f64 / optimizely_seconds;
    report("events per request", events as f64 / requests as f64, "events");
    report("herald-client events per second", herald_rate, "events/s");
    report("optimizely-sdk events per second", optimizely_rate, "events/s");
    report("speedup vs optimizely-sdk", herald_rate / optimizely_rate, "x");
}

fn event(users: &[String], i: usize) -> Event {
    Event::new(users[i % users.len()].as_str(), "order").property("plan", "pro")
}

/// Nanoseconds per `track` over TRACKED events, on one task of the runtime (not on the
/// `block_on` thread, which is no worker). They are tracked in bursts of the default queue's
/// size, each timed from its first call to its last, with a flush after each (untimed): the
/// queue has room, as it has in an app whose sending keeps up, so `track` never waits for
/// the network, while the background task batches and sends the burst meanwhile.
async fn track_cost(base_url: String, users: Arc<Vec<String>>, prebuilt: bool) -> f64 {
    let task = tokio::spawn(async move {
        let config = ClientConfig { batch_size: BATCH_SIZE, ..ClientConfig::new(base_url, API_KEY) };
        let burst = config.max_queue;
        let client = Client::new(config).expect("the client starts");
        let mut elapsed = Duration::ZERO;
        for first in (0..TRACKED).step_by(burst) {
            let indices = first..(first + burst).min(TRACKED);
            if prebuilt {
                let events: Vec<Event> = indices.map(|i| event(&users, i)).collect();
                let start = Instant::now();
                for event in events {
                    client.track(event).await.expect("tracked");
                }
                elapsed += start.elapsed();
            } else {
                let start = Instant::now();
                for i in indices {
                    client.track(event(&users, i)).await.expect("tracked");
                }
                elapsed += start.elapsed();
            }
            client.flush().await.expect("the client sends the burst");
        }
        client.close(Duration::from_secs(300)).await.expect("the client sends everything");
        elapsed.as_nanos() as f64 / TRACKED as f64
    });
    task.await.expect("the track task")
}

/// Seconds from the first `track` to `close` returning Ok, with every setting but the batch
/// size at its default (the queue of 10 000 makes `track` wait when sending lags).
async fn herald_throughput(base_url: String, users: Arc<Vec<String>>) -> f64 {
    let task = tokio::spawn(async move {
        let config = ClientConfig {
            batch_size: BATCH_SIZE,
            flush_interval: FLUSH_INTERVAL,
            ..ClientConfig::new(base_url, API_KEY)
        };
        let client = Client::new(config).expect("the client starts");
        let start = Instant::now();
        for i in 0..THROUGHPUT_EVENTS {
            client.track(event(&users, i)).await.expect("tracked");
        }
        client.close(Duration::from_secs(120)).await.expect("the client sends everything");
        start.elapsed().as_secs_f64()
    });
    task.await.expect("the throughput task")
}

/// Runs scripts/bench_optimizely.py (the SDK in .venv-bench, installed by scripts/bench) and
/// returns its seconds, after checking the sink counted every event it tracked.
fn optimizely_throughput(url: &str, sink: &Sink) -> f64 {
    let root = repo_root();
    let before = sink.counts.optimizely();
    let output = Command::new(root.join(".venv-bench/bin/python"))
        .arg(root.join("scripts/bench_optimizely.py"))
        .args([url, &THROUGHPUT_EVENTS.to_string(), &BATCH_SIZE.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("the Python driver runs (scripts/bench installs .venv-bench)");
    assert!(output.status.success(), "bench_optimizely.py failed: {}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| panic!("bench_optimizely.py printed nothing"));
    let result: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bench_optimizely.py printed {line:?}: {e}"));
    let (events, requests) = sink.counts.optimizely();
    let (events, requests) = (events - before.0, requests - before.1);
    assert_eq!(
        events, THROUGHPUT_EVENTS as u64,
        "the sink counted {events} of {THROUGHPUT_EVENTS} optimizely-sdk events ({result})"
    );
    assert_eq!(result["events"].as_u64(), Some(THROUGHPUT_EVENTS as u64), "{result}");
    // Not a figure: what the Python SDK did, for whoever reads the log.
    eprintln!(
        "client: optimizely-sdk sent {events} events in {requests} requests; tracking took {:.2} s, \
         close() timed out before its thread ended: {}",
        result["track_seconds"].as_f64().unwrap_or(f64::NAN),
        result["close_timed_out"]
    );
    result["seconds"].as_f64().expect("seconds")
}

/// A local HTTP server taking both SDKs' requests on a runtime (and thread) of its own.
struct Sink {
    addr: SocketAddr,
    counts: Arc<Counts>,
    // Kept alive (and its thread running) as long as the sink is.
    _runtime: tokio::runtime::Runtime,
}

#[derive(Default)]
struct Counts {
    herald_events: AtomicU64,
    herald_requests: AtomicU64,
    optimizely_events: AtomicU64,
    optimizely_requests: AtomicU64,
    rejected: AtomicU64,
}

impl Counts {
    /// (events, requests) of each client.
    fn herald(&self) -> (u64, u64) {
        (self.herald_events.load(Ordering::SeqCst), self.herald_requests.load(Ordering::SeqCst))
    }

    fn optimizely(&self) -> (u64, u64) {
        (self.optimizely_events.load(Ordering::SeqCst), self.optimizely_requests.load(Ordering::SeqCst))
    }
}

/// `POST /v1/events`: the fields the API needs; serde still parses the rest of every event.
#[derive(Deserialize)]
struct HeraldBatch {
    events: Vec<HeraldEvent>,
}

#[derive(Deserialize)]
struct HeraldEvent {
    event_id: String,
    user_id: String,
    name: String,
}

/// Optimizely's event batch (what logx.optimizely.com takes): events sit in the snapshots of
/// each visitor.
#[derive(Deserialize)]
struct OptimizelyBatch {
    account_id: String,
    visitors: Vec<Visitor>,
}

#[derive(Deserialize)]
struct Visitor {
    visitor_id: String,
    snapshots: Vec<Snapshot>,
}

#[derive(Deserialize)]
struct Snapshot {
    events: Vec<SnapshotEvent>,
}

#[derive(Deserialize)]
struct SnapshotEvent {
    key: String,
}

impl Sink {
    fn start() -> Self {
        // One worker: both SDKs send one request at a time, and a second worker would only
        // compete for the 2 cores with the client being measured.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-sink")
            .enable_all()
            .build()
            .unwrap();
        let counts = Arc::new(Counts::default());
        let app = Router::new()
            .route("/v1/events", post(herald_events))
            .route(OPTIMIZELY_PATH, post(optimizely_events))
            .with_state(counts.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await.expect("the sink serves") });
        Self { addr, counts, _runtime: runtime }
    }
}

async fn herald_events(
    State(counts): State<Arc<Counts>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let json = [(header::CONTENT_TYPE, "application/json")];
    let authorized =
        headers.get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == format!("Bearer {API_KEY}").as_bytes());
    if !authorized {
        counts.rejected.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, json, r#"{"error":"unauthorized"}"#.into());
    }
    let batch = match serde_json::from_slice::<HeraldBatch>(&body) {
        Ok(batch)
            if batch
                .events
                .iter()
                .all(|e| e.name == "order" && !e.event_id.is_empty() && e.user_id.starts_with("user-")) =>
        {
            batch
        }
        _ => {
            counts.rejected.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::BAD_REQUEST, json, r#"{"error":"bad batch"}"#.into());
        }
    };
    let n = batch.events.len() as u64;
    counts.herald_events.fetch_add(n, Ordering::SeqCst);
    counts.herald_requests.fetch_add(1, Ordering::SeqCst);
    (StatusCode::ACCEPTED, json, format!(r#"{{"counted":{n},"duplicates":0}}"#))
}

async fn optimizely_events(State(counts): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    let batch = match serde_json::from_slice::<OptimizelyBatch>(&body) {
        Ok(batch)
            if !batch.account_id.is_empty()
                && batch.visitors.iter().all(|v| {
                    v.visitor_id.starts_with("user-")
                        && v.snapshots.iter().flat_map(|s| &s.events).all(|e| e.key == "order")
                }) =>
        {
            batch
        }
        _ => {
            counts.rejected.fetch_add(1, Ordering::SeqCst);
            return StatusCode::BAD_REQUEST;
        }
    };
    let n: usize = batch.visitors.iter().flat_map(|v| &v.snapshots).map(|s| s.events.len()).sum();
    counts.optimizely_events.fetch_add(n as u64, Ordering::SeqCst);
    counts.optimizely_requests.fetch_add(1, Ordering::SeqCst);
    // logx.optimizely.com answers 204 No Content.
    StatusCode::NO_CONTENT
}
