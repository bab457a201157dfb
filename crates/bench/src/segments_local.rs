//! Segment figures on the local stack: how long a profile change takes to show in its
//! segment's membership, and how fast a backfill goes through moto.

use std::time::{Duration, Instant};

use herald_core::profiles::Profile;
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("the API answers");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        answer.json().await.unwrap_or(Value::Null)
    }

    async fn create_segment(&self, id: &str, rule: Value) -> Instant {
        let started = Instant::now();
        let body = json!({"segment_id": id, "name": id, "kind": "dynamic", "rule": rule});
        self.send(reqwest::Method::POST, "/v1/segments", Some(body)).await;
        let deadline = started + Duration::from_secs(900);
        while self.send(reqwest::Method::GET, &format!("/v1/segments/{id}"), None).await["state"] != "ready" {
            assert!(Instant::now() < deadline, "the backfill of {id} did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started
    }

    async fn is_member(&self, user: &str, segment: &str) -> bool {
        let answer = self.send(reqwest::Method::GET, &format!("/v1/users/{user}/segments"), None).await;
        answer["segment_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == segment))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `segment latency p50 ms` / `p99 ms`: from sending `PUT /v1/users/{id}` to the
/// membership being readable through the API (enter, then leave, for each user), and
/// `backfill profiles per second local`.
pub async fn local_segment_figures() {
    let stack = crate::local_stack(None).await;
    let client = Client { http: reqwest::Client::new(), base: stack.api_url.clone(), key: stack.admin_key.clone() };
    client.create_segment("vip", json!({"attribute": "tier", "any_of": ["vip"]})).await;

    let mut latencies = Vec::new();
    for i in 0..100 {
        let user = format!("lat{i}");
        for (tier, member) in [("vip", true), ("basic", false)] {
            let started = Instant::now();
            let body = json!({"attributes": {"tier": [tier]}});
            client.send(reqwest::Method::PUT, &format!("/v1/users/{user}"), Some(body)).await;
            while client.is_member(&user, "vip").await != member {
                assert!(started.elapsed() < Duration::from_secs(30), "the membership of {user} did not follow");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!("segment latency p50 ms: {:.1} ms", percentile(&latencies, 0.50));
    println!("segment latency p99 ms: {:.1} ms", percentile(&latencies, 0.99));

    // Profiles loaded straight into the table (as an import would), then a new segment
    // over them: from its creation to `ready`.
    let profiles = 5_000;
    let items = (0..profiles)
        .map(|i| {
            let mut profile = Profile::new(format!("bf{i:05}"));
            profile.version = 1;
            profile.attributes.insert("plan".into(), [["free", "pro"][i % 2].to_owned()].into());
            serde_dynamo::to_item(&profile).expect("profiles serialize")
        })
        .collect();
    let table = &stack.api_config.profiles_table;
    herald_aws::dynamo::batch::put_all(&stack.clients.dynamodb(), table, items, &Default::default()).await.unwrap();
    let started = client.create_segment("pro", json!({"attribute": "plan", "any_of": ["pro"]})).await;
    let seconds = started.elapsed().as_secs_f64();
    println!("backfill profiles per second local: {:.0} profiles/s", profiles as f64 / seconds);
    stack.stop().await;
}
