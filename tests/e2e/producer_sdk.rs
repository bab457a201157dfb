//! The producer SDK (`herald-client`) against the local stack's API: what it tracks is
//! counted exactly once in the activity table, through failures, splits and shutdown.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use herald_aws::DynamoActivityStore;
use herald_client::{BatchReport, Client, ClientConfig, Event, Failure, FullQueuePolicy, Outcome, TrackError};
use herald_core::activity::{ActivityQuery, ActivityStore, CounterKey};
use herald_e2e::start_stack;
use herald_local::LocalStack;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

/// Every event of a test has a name of its own, so its counters are its alone.
fn event_name() -> String {
    format!("sdk_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn users(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("sdk-user-{n}")).collect()
}

/// A config for `url` with the stack's key and quick retries.
fn config(stack: &LocalStack, url: &str) -> ClientConfig {
    ClientConfig {
        retry_base: Duration::from_millis(5),
        retry_cap: Duration::from_millis(100),
        max_retries: 20,
        request_timeout: Duration::from_secs(60),
        ..ClientConfig::new(url, stack.admin_key.clone())
    }
}

/// What the listener and the error callback saw.
#[derive(Clone, Default)]
struct Seen {
    reports: Arc<Mutex<Vec<BatchReport>>>,
    failures: Arc<Mutex<Vec<Failure>>>,
}

impl Seen {
    fn attach(&self, mut config: ClientConfig) -> ClientConfig {
        let (reports, failures) = (self.reports.clone(), self.failures.clone());
        config.on_batch = Some(Arc::new(move |report: &BatchReport| reports.lock().unwrap().push(report.clone())));
        config.on_error = Some(Arc::new(move |failure: Failure| failures.lock().unwrap().push(failure)));
        config
    }

    fn reports(&self) -> Vec<BatchReport> {
        self.reports.lock().unwrap().clone()
    }

    fn failures(&self) -> usize {
        self.failures.lock().unwrap().len()
    }

    /// Events Herald answered it counted (not those it had counted before).
    fn counted(&self) -> u64 {
        self.reports().iter().filter_map(|r| r.counted).map(|c| c.counted).sum()
    }
}

/// The events of `name` the activity table counted for `users` (today and yesterday, in
/// case the test runs across midnight UTC).
async fn stored_count(stack: &LocalStack, users: &[String], name: &str) -> u64 {
    let store = DynamoActivityStore::new(stack.clients.dynamodb(), stack.physical_names()["ActivityTable"].clone());
    let total = CounterKey::total(name);
    let query = ActivityQuery { counters: [total.clone()].into(), days: 2, last_seen: Default::default() };
    let loaded = store.load_many(users, &query, chrono::Utc::now().date_naive()).await.unwrap();
    loaded.values().filter_map(|activity| activity.counts.get(&total)).flat_map(|days| days.values()).sum()
}

/// What the proxy does with request number `n` (0-based).
#[derive(Clone, Copy)]
enum Fault {
    Pass,
    /// Answers this status without forwarding: the API never sees the request.
    Refuse(u16),
    /// Forwards, then answers this status instead of the API's answer: the events are
    /// counted, and the client, not knowing it, sends them again.
    LoseAnswer(u16),
    /// Holds the request until released, then forwards it.
    Hold,
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    http: reqwest::Client,
    decide: Arc<dyn Fn(u64) -> Fault + Send + Sync>,
    requests: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
    released: tokio::sync::watch::Sender<bool>,
}

/// A proxy in front of the stack's API that fails the requests `decide` picks.
struct FaultyApi {
    url: String,
    state: ProxyState,
}

impl FaultyApi {
    async fn start(stack: &LocalStack, decide: impl Fn(u64) -> Fault + Send + Sync + 'static) -> Self {
        let state = ProxyState {
            target: stack.api_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            decide: Arc::new(decide),
            requests: Arc::new(AtomicU64::new(0)),
            faults: Arc::new(AtomicU64::new(0)),
            released: tokio::sync::watch::channel(false).0,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(proxy).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn faults(&self) -> u64 {
        self.state.faults.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.state.released.send_replace(true);
    }
}

async fn proxy(State(state): State<ProxyState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let forward =
        || herald_e2e::chaos::forward(&state.http, &state.target, method.clone(), &path, &headers, body.clone());
    match (state.decide)(n) {
        Fault::Pass => forward().await,
        Fault::Refuse(status) => {
            state.faults.fetch_add(1, Ordering::SeqCst);
            StatusCode::from_u16(status).unwrap().into_response()
        }
        Fault::LoseAnswer(status) => {
            state.faults.fetch_add(1, Ordering::SeqCst);
            let answer = forward().await;
            assert!(answer.status().is_success(), "the API refused a batch: {}", answer.status());
            StatusCode::from_u16(status).unwrap().into_response()
        }
        Fault::Hold => {
            state.released.subscribe().wait_for(|released| *released).await.unwrap();
            forward().await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_tracked_from_eight_tasks_are_counted_exactly_once() {
    let stack = start_stack().await;
    let name = event_name();
    let users = users(40);
    let seen = Seen::default();
    let client =
        Arc::new(Client::new(seen.attach(ClientConfig { batch_size: 250, ..config(&stack, &stack.api_url) })).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (client, name, users) = (client.clone(), name.clone(), users.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..1250 {
                    let event =
                        Event::new(&users[(task * 1250 + i) % users.len()], &name).property("task", task as u64);
                    ids.push(event.event_id.clone());
                    client.track(event).await.unwrap();
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    assert_eq!(ids.len(), 10_000, "every event has an id of its own");
    client.close(LONG).await.unwrap();

    assert_eq!(seen.failures(), 0);
    assert_eq!(seen.counted(), 10_000);
    assert!(seen.reports().iter().all(|r| r.outcome == Outcome::Sent { status: 202 }));
    assert_eq!(stored_count(&stack, &users, &name).await, 10_000);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_failing_30_percent_of_requests_loses_and_doubles_nothing() {
    let stack = start_stack().await;
    // Of every ten requests, two never reach the API and one reaches it but loses its answer.
    let api = FaultyApi::start(&stack, |n| match n % 10 {
        2 | 5 => Fault::Refuse(503),
        8 => Fault::LoseAnswer(502),
        _ => Fault::Pass,
    })
    .await;
    let name = event_name();
    let users = users(20);
    let seen = Seen::default();
    let client =
        Client::new(seen.attach(ClientConfig { batch_size: 25, max_in_flight: 4, ..config(&stack, &api.url) }))
            .unwrap();
    for n in 0..1000 {
        client.track(Event::new(&users[n % users.len()], &name)).await.unwrap();
    }
    client.close(LONG).await.unwrap();

    assert!(api.faults() >= 12 && api.requests() >= 52, "{} faults of {} requests", api.faults(), api.requests());
    assert_eq!(seen.failures(), 0);
    let reports = seen.reports();
    assert_eq!(reports.len(), 40, "one report per batch, however many attempts");
    let duplicates: u64 = reports.iter().filter_map(|r| r.counted).map(|c| c.duplicates).sum();
    assert!(duplicates > 0, "batches whose answer was lost were sent again, and recognised");
    // The answers the client saw count an event once: in its first answer, or as a
    // duplicate in the answer to its resend when the first was lost.
    assert_eq!(seen.counted() + duplicates, 1000);
    assert_eq!(stored_count(&stack, &users, &name).await, 1000);
    stack.stop().await;
}

#[tokio::test]
async fn close_sends_what_is_queued_before_it_returns() {
    let stack = start_stack().await;
    let name = event_name();
    let users = users(3);
    let client = Client::new(ClientConfig {
        batch_size: 100,
        flush_interval: Duration::from_secs(3600),
        ..config(&stack, &stack.api_url)
    })
    .unwrap();
    for n in 0..7 {
        client.track(Event::new(&users[n % 3], &name)).await.unwrap();
    }
    client.identify(&users[0], json!({"attributes": {"plan": ["pro"]}})).await.unwrap();
    assert_eq!(stored_count(&stack, &users, &name).await, 0, "a batch of 7 waits to fill");
    client.close(LONG).await.unwrap();

    assert_eq!(stored_count(&stack, &users, &name).await, 7);
    let profile = herald_e2e::Api::new(&stack).get(&format!("/v1/users/{}", users[0])).await;
    assert_eq!(profile.body["attributes"]["plan"], json!(["pro"]), "{:?}", profile.body);
    assert!(matches!(client.track(Event::new(&users[0], &name)).await, Err(TrackError::Closed)));
    stack.stop().await;
}

#[tokio::test]
async fn batches_over_the_apis_byte_limit_are_split_not_refused() {
    let stack = start_stack().await;
    let name = event_name();
    let users = users(10);
    let seen = Seen::default();
    let client = Client::new(seen.attach(ClientConfig {
        batch_size: 500,
        flush_interval: Duration::from_secs(3600),
        ..config(&stack, &stack.api_url)
    }))
    .unwrap();
    // 600 events of ~5 KB: 3 MB, over the API's 1 MiB a request, under its 500 events.
    // A list is not counted, so the API takes it however long.
    let padding = json!(["x".repeat(5000)]);
    for n in 0..600 {
        client.track(Event::new(&users[n % users.len()], &name).property("padding", padding.clone())).await.unwrap();
    }
    client.close(LONG).await.unwrap();

    let reports = seen.reports();
    assert!(reports.len() >= 3, "{} requests", reports.len());
    assert!(
        reports.iter().all(|r| r.bytes <= herald_client::MAX_BATCH_BYTES && r.outcome == Outcome::Sent { status: 202 })
    );
    assert_eq!(seen.failures(), 0);
    assert_eq!(seen.counted(), 600);
    assert_eq!(stored_count(&stack, &users, &name).await, 600);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_newest_events_and_counts_them() {
    let stack = start_stack().await;
    // The first request is held: the client's only request in flight waits, and the queue fills.
    let api = FaultyApi::start(&stack, |n| if n == 0 { Fault::Hold } else { Fault::Pass }).await;
    let name = event_name();
    let users = users(1);
    let client = Client::new(ClientConfig {
        batch_size: 1,
        max_queue: 10,
        full_queue: FullQueuePolicy::DropNewest,
        ..config(&stack, &api.url)
    })
    .unwrap();
    client.track(Event::new(&users[0], &name)).await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    while api.requests() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first request never left");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut dropped = 0;
    for _ in 0..100 {
        match client.track(Event::new(&users[0], &name)).await {
            Ok(()) => {}
            Err(TrackError::Dropped) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // Ten in the queue, and perhaps one more the task took into a batch that waits for a
    // request slot: the rest are dropped and counted.
    assert!(dropped == 89 || dropped == 90, "{dropped} dropped");
    assert_eq!(client.dropped(), dropped);
    api.release();
    client.close(LONG).await.unwrap();
    assert_eq!(stored_count(&stack, &users, &name).await, 101 - dropped, "the held event and the queued ones");
    stack.stop().await;
}
