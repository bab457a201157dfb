mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::{Reply, Seen, Server};
use herald_client::{
    Client, ClientConfig, CloseError, Event, FullQueuePolicy, Outcome, RequestKind, SendError, TrackError,
};
use serde_json::json;

const LONG: Duration = Duration::from_secs(20);

fn event(n: usize) -> Event {
    Event::new(format!("user-{}", n % 37), "order").property("n", n as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_from_eight_tasks_arrive_exactly_once() {
    // Every third request is stored and then answered 503, as if the answer was lost:
    // the client resends, and the ids let the server count each event once.
    let server = Server::start(|n| if n % 3 == 2 { Reply::RecordThenFail(503) } else { Reply::Accept }).await;
    let seen = Seen::default();
    let client = Arc::new(
        Client::new(seen.attach(ClientConfig { batch_size: 50, max_in_flight: 4, ..server.config() })).unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..1250 {
                let event = event(t * 1250 + i);
                ids.push(event.event_id.clone());
                client.track(event).await.unwrap();
            }
            ids
        }));
    }
    let mut tracked = HashSet::new();
    for task in tasks {
        tracked.extend(task.await.unwrap());
    }
    assert_eq!(tracked.len(), 10_000, "ids are distinct");
    client.close(LONG).await.unwrap();

    let (unique, duplicates, received) =
        server.record(|r| (r.unique(), r.duplicates(), r.ids.keys().cloned().collect::<HashSet<_>>()));
    assert_eq!(unique, 10_000);
    assert_eq!(received, tracked);
    assert!(duplicates > 0, "the lost answers made the client resend");
    // The listener sees Herald's counts. Each event is in exactly one answered request (the
    // client resends only what failed): counted there, or a duplicate if a lost answer's
    // request had counted it.
    let answered: Vec<_> = seen.reports().iter().filter_map(|r| r.counted).collect();
    let counted: u64 = answered.iter().map(|c| c.counted).sum();
    assert_eq!(counted + answered.iter().map(|c| c.duplicates).sum::<u64>(), 10_000);
    assert!(counted < 10_000, "some events were first counted in a request whose answer was lost");
    assert!(seen.failures().is_empty());
    assert_eq!(client.dropped(), 0);
    assert!(server.record(|r| r.violations.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failing_30_percent_loses_nothing() {
    let server = Server::start(|n| if matches!(n % 10, 1 | 4 | 7) { Reply::Fail(503) } else { Reply::Accept }).await;
    let seen = Seen::default();
    let client =
        Client::new(seen.attach(ClientConfig { batch_size: 20, max_in_flight: 4, ..server.config() })).unwrap();
    let mut tracked = HashSet::new();
    for n in 0..2000 {
        let event = event(n);
        tracked.insert(event.event_id.clone());
        client.track(event).await.unwrap();
    }
    client.close(LONG).await.unwrap();

    let received = server.record(|r| r.ids.keys().cloned().collect::<HashSet<_>>());
    assert_eq!(received, tracked);
    assert!(server.record(|r| r.requests) > 100, "some requests failed and were retried");
    assert!(seen.failures().is_empty());
    let reports = seen.reports();
    assert_eq!(reports.len(), 100);
    assert!(reports.iter().all(|r| r.outcome == Outcome::Sent { status: 202 } && r.size == 20));
    assert!(reports.iter().any(|r| r.attempts > 1));
}

#[tokio::test]
async fn close_flushes_what_is_queued() {
    let server = Server::start(|_| Reply::Accept).await;
    let client =
        Client::new(ClientConfig { batch_size: 100, flush_interval: Duration::from_secs(3600), ..server.config() })
            .unwrap();
    for n in 0..7 {
        client.track(event(n)).await.unwrap();
    }
    assert_eq!(server.record(|r| r.requests), 0, "nothing is sent before the batch fills");
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| r.unique()), 7);
    assert!(matches!(client.track(event(8)).await, Err(TrackError::Closed)));
    assert!(matches!(client.close(LONG).await, Err(CloseError::Closed)));
}

#[tokio::test]
async fn dropping_the_client_still_flushes_in_the_background() {
    let server = Server::start(|_| Reply::Accept).await;
    let client =
        Client::new(ClientConfig { batch_size: 100, flush_interval: Duration::from_secs(3600), ..server.config() })
            .unwrap();
    for n in 0..7 {
        client.track(event(n)).await.unwrap();
    }
    drop(client);
    assert!(server.wait_for(LONG, |r| r.unique() == 7).await);
}

#[tokio::test]
async fn flush_sends_at_once_and_waits() {
    let server = Server::start(|_| Reply::Accept).await;
    let client =
        Client::new(ClientConfig { batch_size: 100, flush_interval: Duration::from_secs(3600), ..server.config() })
            .unwrap();
    for n in 0..3 {
        client.track(event(n)).await.unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(server.record(|r| r.unique()), 3);
    client.track(event(3)).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(server.record(|r| (r.unique(), r.requests)), (4, 2));
}

#[tokio::test]
async fn the_oldest_event_waits_at_most_flush_interval() {
    let server = Server::start(|_| Reply::Accept).await;
    let client =
        Client::new(ClientConfig { batch_size: 100, flush_interval: Duration::from_millis(300), ..server.config() })
            .unwrap();
    let start = std::time::Instant::now();
    for n in 0..3 {
        client.track(event(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.record(|r| r.requests), 0);
    assert!(server.wait_for(LONG, |r| r.unique() == 3).await);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(280) && waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn a_full_batch_leaves_at_once() {
    let server = Server::start(|_| Reply::Accept).await;
    let client =
        Client::new(ClientConfig { batch_size: 5, flush_interval: Duration::from_secs(3600), ..server.config() })
            .unwrap();
    for n in 0..12 {
        client.track(event(n)).await.unwrap();
    }
    assert!(server.wait_for(LONG, |r| r.unique() == 10).await);
    assert_eq!(server.record(|r| r.batches.iter().map(|b| b.0).collect::<Vec<_>>()), [5, 5]);
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| r.unique()), 12);
}

#[tokio::test]
async fn an_oversized_batch_is_split_within_the_api_limits() {
    let server = Server::start(|_| Reply::Accept).await;
    let seen = Seen::default();
    // batch_size above the API's 500 is capped; 3 KB events overflow 1 MiB well before 500.
    let client = Client::new(seen.attach(ClientConfig {
        batch_size: 1000,
        flush_interval: Duration::from_secs(3600),
        ..server.config()
    }))
    .unwrap();
    let padding = "x".repeat(3000);
    for n in 0..1200 {
        client.track(event(n).property("padding", padding.clone())).await.unwrap();
    }
    for n in 0..700 {
        client.track(event(n)).await.unwrap();
    }
    client.close(LONG).await.unwrap();

    assert_eq!(server.record(|r| r.violations.clone()), Vec::<String>::new());
    assert_eq!(server.record(|r| r.unique()), 1900);
    let batches = server.record(|r| r.batches.clone());
    assert!(batches.len() >= 4, "{batches:?}");
    assert!(batches.iter().filter(|&&(_, bytes)| bytes > 1_000_000).count() >= 3, "large events split by bytes");
    assert!(batches.iter().all(|&(events, bytes)| events <= 500 && bytes <= 1024 * 1024));
    assert!(batches.iter().any(|&(events, _)| events == 500), "small events fill a batch of 500");
    assert!(seen.failures().is_empty());
    let reports = seen.reports();
    assert_eq!(reports.iter().map(|r| r.size).sum::<usize>(), 1900);
    let mut reported: Vec<_> = reports.iter().map(|r| r.bytes).collect();
    let mut received: Vec<_> = batches.iter().map(|b| b.1).collect();
    reported.sort_unstable();
    received.sort_unstable();
    assert_eq!(reported, received);
}

#[tokio::test]
async fn a_single_event_over_the_limit_reaches_the_error_callback() {
    let server = Server::start(|_| Reply::Accept).await;
    let seen = Seen::default();
    let client = Client::new(seen.attach(server.config())).unwrap();
    client.track(event(0).property("padding", "x".repeat(1024 * 1024))).await.unwrap();
    client.track(event(1)).await.unwrap();
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| r.unique()), 1);
    let failures = seen.failures();
    assert_eq!(failures.len(), 1);
    assert!(matches!(failures[0].error, SendError::EventTooLarge { .. }));
    assert_eq!(failures[0].events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_bounds_the_queue_and_counts_the_dropped() {
    let server = Server::start(|_| Reply::Hang).await;
    let client = Client::new(ClientConfig {
        batch_size: 1,
        max_queue: 5,
        full_queue: FullQueuePolicy::DropNewest,
        ..server.config()
    })
    .unwrap();
    client.track(event(0)).await.unwrap();
    // The background task holds event 0 in a request that hangs: the queue is empty again.
    assert!(server.wait_for(LONG, |r| r.requests == 1).await);
    let mut queued = 0;
    let mut dropped = 0;
    for n in 1..=20 {
        match client.track(event(n)).await {
            Ok(()) => queued += 1,
            Err(TrackError::Dropped) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // Five in the queue, and perhaps one more the task has taken from it into a batch that
    // waits for a request slot.
    assert!(queued == 5 || queued == 6, "{queued} queued");
    assert_eq!(dropped, 20 - queued);
    assert_eq!(client.dropped(), dropped);
    server.release();
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| r.unique()), 1 + queued as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_for_room() {
    let server = Server::start(|_| Reply::Hang).await;
    let client = Client::new(ClientConfig {
        batch_size: 1,
        max_queue: 5,
        full_queue: FullQueuePolicy::Block,
        ..server.config()
    })
    .unwrap();
    client.track(event(0)).await.unwrap();
    assert!(server.wait_for(LONG, |r| r.requests == 1).await);
    // Five fit in the queue, and perhaps one more the task takes into a batch that waits for
    // a request slot; then track waits.
    let mut queued = 0;
    while tokio::time::timeout(Duration::from_millis(200), client.track(event(1 + queued))).await.is_ok() {
        queued += 1;
        assert!(queued <= 6, "the queue is bounded");
    }
    assert!(queued >= 5, "{queued} queued");
    assert!(matches!(client.try_track(event(99)), Err(TrackError::Full(_))));
    assert_eq!(client.dropped(), 0);
    server.release();
    tokio::time::timeout(LONG, client.track(event(100))).await.unwrap().unwrap();
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| r.unique()), 1 + queued + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_in_flight_requests_are_out_at_once() {
    let server = Server::start(|_| Reply::Hang).await;
    let client = Client::new(ClientConfig { batch_size: 1, max_in_flight: 3, ..server.config() }).unwrap();
    for n in 0..6 {
        client.track(event(n)).await.unwrap();
    }
    assert!(server.wait_for(LONG, |r| r.requests == 3).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.record(|r| r.requests), 3, "the fourth waits for a slot");
    server.release();
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| (r.unique(), r.requests)), (6, 6));
}

#[tokio::test]
async fn a_400_reaches_the_error_callback_and_is_not_retried() {
    let server = Server::start(|_| Reply::Fail(400)).await;
    let seen = Seen::default();
    let client = Client::new(seen.attach(ClientConfig { batch_size: 3, ..server.config() })).unwrap();
    let ids: Vec<_> = (0..3).map(event).collect();
    for event in ids.clone() {
        client.track(event).await.unwrap();
    }
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| r.requests), 1, "not retried");
    let failures = seen.failures();
    assert_eq!(failures.len(), 1);
    assert!(matches!(failures[0].error, SendError::Rejected { status: 400, .. }));
    assert_eq!(failures[0].events, ids);
    let reports = seen.reports();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].attempts, reports[0].size), (1, 3));
    assert_eq!(reports[0].outcome, Outcome::Rejected { status: 400 });
    assert_eq!(reports[0].kind, RequestKind::Events);
}

#[tokio::test]
async fn spent_retries_reach_the_error_callback() {
    let server = Server::start(|_| Reply::Fail(503)).await;
    let seen = Seen::default();
    let client = Client::new(seen.attach(ClientConfig { batch_size: 2, max_retries: 2, ..server.config() })).unwrap();
    client.track(event(0)).await.unwrap();
    client.track(event(1)).await.unwrap();
    client.close(LONG).await.unwrap();
    assert_eq!(server.record(|r| r.requests), 3, "the first attempt and 2 retries");
    let failures = seen.failures();
    assert_eq!(failures.len(), 1);
    assert!(matches!(failures[0].error, SendError::RetriesExhausted { attempts: 3, .. }));
    assert_eq!(failures[0].events.len(), 2);
    assert_eq!(seen.reports()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let server = Server::start(|n| if n == 0 { Reply::TooMany(1) } else { Reply::Accept }).await;
    let seen = Seen::default();
    let client = Client::new(seen.attach(ClientConfig { batch_size: 2, ..server.config() })).unwrap();
    client.track(event(0)).await.unwrap();
    client.track(event(1)).await.unwrap();
    client.close(LONG).await.unwrap();
    let times = server.record(|r| r.times.clone());
    assert_eq!(times.len(), 2);
    let waited = times[1] - times[0];
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(server.record(|r| (r.unique(), r.duplicates())), (2, 0));
    assert_eq!(seen.reports()[0].attempts, 2);
    assert!(seen.failures().is_empty());
}

#[tokio::test]
async fn identify_puts_the_patch() {
    let server = Server::start(|_| Reply::Accept).await;
    let seen = Seen::default();
    let client = Client::new(seen.attach(server.config())).unwrap();
    let patch = json!({"attributes": {"plan": ["pro"]}, "email": "ana@example.com"});
    client.identify("ana@example.com", patch.clone()).await.unwrap();
    client.identify("odd/id?x", json!({"attributes": {}})).await.unwrap();
    client.close(LONG).await.unwrap();
    let identifies = server.record(|r| r.identifies.clone());
    assert_eq!(identifies.len(), 2);
    assert_eq!(identifies[0], ("ana@example.com".to_owned(), patch));
    assert_eq!(identifies[1].0, "odd/id?x", "the id is one path segment");
    let reports = seen.reports();
    assert_eq!(reports[0].kind, RequestKind::Identify { user_id: "ana@example.com".into() });
    assert!(seen.failures().is_empty());
}

#[tokio::test]
async fn event_ids_are_client_side_uuid_v4() {
    let a = Event::new("u", "e");
    let b = Event::new("u", "e");
    assert_ne!(a.event_id, b.event_id);
    let id = uuid::Uuid::parse_str(&a.event_id).unwrap();
    assert_eq!(id.get_version(), Some(uuid::Version::Random));
    let json = serde_json::to_value(a.clone().property("k", 1)).unwrap();
    assert_eq!(json["event_id"], a.event_id.as_str());
    assert_eq!(json["properties"]["k"], 1);
}

#[tokio::test]
async fn the_config_is_checked() {
    assert!(Client::new(ClientConfig::new("not a url", "k")).is_err());
    assert!(Client::new(ClientConfig { batch_size: 0, ..ClientConfig::new("http://localhost", "k") }).is_err());
    for max_in_flight in [0, herald_client::MAX_IN_FLIGHT + 1] {
        let config = ClientConfig { max_in_flight, ..ClientConfig::new("http://localhost", "k") };
        assert!(matches!(Client::new(config), Err(herald_client::ConfigError::OutOfRange)));
    }
    let defaults = ClientConfig::default();
    assert_eq!(
        (defaults.batch_size, defaults.flush_interval, defaults.max_queue, defaults.full_queue),
        (10, Duration::from_secs(30), 10_000, FullQueuePolicy::Block)
    );
}
