//! `scripts/bench chaos`: a 5,000-recipient email campaign through the whole local stack
//! while providers throttle 30 % of sends and hold 1 % of them past a worker's timeout,
//! PutEvents refuses 20 % of its calls, and a tenth of the worker invocations get a timeout
//! drawn at random (from 1 s to 9 s of the template's 10 s), so that the local stack
//! stops workers at random points of their work. Prints how many recipients got no email, how many got more than one,
//! whether the campaign ended `done` with counters that add up, and the longest the relay
//! held a stream's shard on one record.

use std::{
    collections::BTreeMap,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use herald_e2e::{
    chaos::{ChaosProxy, Fault},
    sent_by_moto,
};
use herald_local::{LocalStack, Options, repo_root};
use serde_json::{Value, json};

const RECIPIENTS: usize = 5_000;
/// A held send outlasts a worker's 10 s timeout.
const HOLD: Duration = Duration::from_secs(15);
/// The share of worker invocations whose timeout strikes at a random point of their work.
const SHORT_TIMEOUTS: f64 = 0.1;
/// SES v2's SendEmail, as the workers call it.
const SEND_EMAIL: &str = "/v2/email/outbound-emails";

pub async fn chaos_figures() {
    // The local stack's warnings (functions stopped at their timeout, messages out of
    // attempts) on stderr, to read a run by; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let started = Instant::now();
    let moto = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL names the moto server");
    let bus = ChaosProxy::start(&moto, Fault::Throttle { share: 0.2, matching: "AWSEvents.PutEvents".into() }).await;
    let providers = ChaosProxy::start(
        &moto,
        Fault::All(vec![
            Fault::Delay { share: 0.01, matching: SEND_EMAIL.into(), by: HOLD },
            Fault::Throttle { share: 0.3, matching: SEND_EMAIL.into() },
        ]),
    )
    .await;
    let stack = LocalStack::start(Options {
        endpoint: Some(bus.url.clone()),
        port: 0,
        admin_key: None,
        stack_name: format!("chaos{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: repo_root().join("infra/template.yaml"),
        worker_environment: Default::default(),
        dispatcher_environment: Default::default(),
        timeout_scale: 1.0,
        provider_endpoint: Some(providers.url.clone()),
        request_counter: None,
        worker_random_timeout_share: SHORT_TIMEOUTS,
        parameters: Default::default(),
        functions: Default::default(),
    })
    .await
    .expect("the local stack starts");
    let api = Api { http: reqwest::Client::new(), url: stack.api_url.clone(), key: stack.admin_key.clone() };
    let domain = format!("{}.example.com", &uuid::Uuid::new_v4().simple().to_string()[..10]);

    let ids: Vec<String> = (0..RECIPIENTS).map(|i| format!("chaos{i:05}")).collect();
    let mut csv = String::from("user_id,email\n");
    for id in &ids {
        csv.push_str(&format!("{id},{id}@{domain}\n"));
    }
    stack
        .clients
        .s3()
        .put_object()
        .bucket(&stack.physical_names()["ImportsBucket"])
        .key("imports/chaos.csv")
        .body(csv.into_bytes().into())
        .send()
        .await
        .expect("the audience file is dropped");
    wait("the audience is imported", Duration::from_secs(600), async || {
        let imports = api.get("/v1/imports").await;
        imports["imports"].as_array().is_some_and(|jobs| jobs.iter().any(|j| j["state"] == "done"))
    })
    .await;
    let segment = json!({"segment_id": "everyone", "name": "everyone", "kind": "static", "user_ids": ids});
    api.send(reqwest::Method::POST, "/v1/segments", &segment).await;
    let template = json!({"channels": {"email": {"subject": "Chaos", "body": "Still here."}}});
    api.send(reqwest::Method::PUT, "/v1/templates/chaos", &template).await;
    let campaign = json!({"name": "chaos", "segment_id": "everyone", "template_id": "chaos", "channels": ["email"]});
    let created = api.send(reqwest::Method::POST, "/v1/campaigns", &campaign).await;
    let campaign_id = created["campaign_id"].as_str().expect("a campaign id").to_owned();

    let path = format!("/v1/campaigns/{campaign_id}");
    let done = wait_until(Duration::from_secs(1_800), async || api.get(&path).await["state"] == "done").await;
    // Stragglers (a worker's send held past its timeout) settle within the hold.
    tokio::time::sleep(HOLD + Duration::from_secs(5)).await;
    let campaign = api.get(&path).await;

    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for (_, to, _, _) in sent_by_moto(&moto).await.emails {
        for address in to.into_iter().filter(|a| a.ends_with(&domain)) {
            *received.entry(address).or_insert(0) += 1;
        }
    }
    let lost = RECIPIENTS - received.len();
    let duplicates: usize = received.values().map(|n| n.saturating_sub(1)).sum();
    let counters = &campaign["counters"];
    let count = |name: &str| counters[name].as_u64().unwrap_or_default();
    // Every member queued once and settled once, and no more counted sent than got one.
    let settled = count("sent") + count("failed");
    let consistent = done
        && count("targeted") == RECIPIENTS as u64
        && count("queued") == RECIPIENTS as u64
        && settled == RECIPIENTS as u64
        && count("sent") as usize <= received.len();
    println!("chaos lost deliveries: {lost} recipients");
    println!("chaos duplicate deliveries: {duplicates} emails");
    println!("chaos campaign counts consistent: {}", u8::from(consistent));
    let injected = bus.injected.load(Ordering::SeqCst) + providers.injected.load(Ordering::SeqCst);
    println!("chaos injected faults: {injected} calls");
    // The longest the relay held a stream's shard on one record it failed on.
    println!("chaos relay stalled seconds: {} s", herald_local::streams::longest_stall().as_secs());
    println!("chaos run time: {} s", started.elapsed().as_secs());
    if !consistent {
        eprintln!("chaos: campaign {campaign}");
    }
    stack.stop().await;
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    async fn get(&self, path: &str) -> Value {
        let answer = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.key).send().await;
        answer.expect("the API answers").json().await.unwrap_or(Value::Null)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key).json(body);
        let answer = request.send().await.expect("the API answers");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        answer.json().await.unwrap_or(Value::Null)
    }
}

async fn wait_until(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

async fn wait(what: &str, timeout: Duration, check: impl AsyncFnMut() -> bool) {
    assert!(wait_until(timeout, check).await, "timed out waiting until {what}");
}
