//! The functions' real binaries on the local stack in process mode (`scripts/bench
//! runtime`): one flow that invokes every function once (a user, a notification on the
//! four channels, an import, a campaign), then per function `init ms <binary>` (its
//! process's start to its first `next` call on the runtime API) and `first invoke ms
//! <binary>` (its first event handed over to its answer), of its first environment.
//! `scripts/bench` builds the release binaries; `HERALD_LOCAL_BINARIES` points elsewhere.

use std::time::{Duration, Instant};

use herald_local::{
    Functions, LocalStack, Options,
    processes::{Settings, beside_this_executable},
    repo_root,
};
use serde_json::{Value, json};

/// Every function of the template, by binary.
const BINARIES: [&str; 10] = [
    "herald-api",
    "herald-relay",
    "herald-segmenter",
    "herald-worker-email",
    "herald-worker-sms",
    "herald-worker-push",
    "herald-worker-webhook",
    "herald-importer",
    "herald-dispatcher",
    "herald-feedback",
];

/// Where the functions' output goes while the group runs (removed at its end).
fn log_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herald-bench-runtime-{}", std::process::id()))
}

async fn stack_of_processes() -> LocalStack {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL names the moto server (scripts/bench starts it)");
    let binaries = std::env::var_os("HERALD_LOCAL_BINARIES").map_or_else(beside_this_executable, Into::into);
    let logs = log_dir();
    std::fs::create_dir_all(&logs).expect("a log directory");
    eprintln!("runtime: binaries from {}, logs in {}", binaries.display(), logs.display());
    let mut dispatcher_environment = std::collections::BTreeMap::new();
    dispatcher_environment.insert("SETTLE_CHECK_SECONDS".to_owned(), "2".to_owned());
    LocalStack::start(Options {
        endpoint: Some(endpoint),
        port: 0,
        admin_key: None,
        stack_name: format!("rt{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: repo_root().join("infra/template.yaml"),
        worker_environment: Default::default(),
        dispatcher_environment,
        timeout_scale: 1.0,
        provider_endpoint: None,
        request_counter: None,
        worker_random_timeout_share: 0.0,
        parameters: Default::default(),
        functions: Functions::Processes(Settings { binaries, logs: Some(logs) }),
    })
    .await
    .expect("the local stack starts in process mode")
}

async fn call(stack: &LocalStack, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request =
        reqwest::Client::new().request(method, format!("{}{path}", stack.api_url)).bearer_auth(&stack.admin_key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the API answers");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

pub async fn runtime_figures() {
    let stack = stack_of_processes().await;
    use reqwest::Method;
    // A user with every contact: the API, then the relay and the segmenter.
    let user = json!({
        "email": "rt@example.com",
        "phone": "+1 415 555 2671",
        "device_tokens": [{"token": "7c5e6b1a9f0d4e3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b", "platform": "apns"}],
        "external_channels": [{"platform": "slack", "url": "https://hooks.slack.com/services/T000/B000/XXXX", "enabled": true}]
    });
    call(&stack, Method::PUT, "/v1/users/rt", Some(user)).await;
    // The four channel workers.
    let content = json!({"channels": {
        "email": {"subject": "Hi", "body": "Hello"}, "sms": {"body": "Hello"},
        "push": {"body": "Hello"}, "webhook": {"body": "Hello"}
    }});
    call(&stack, Method::PUT, "/v1/templates/hello", Some(content)).await;
    let notification =
        json!({"type": "hello", "recipients": [{"user_id": "rt"}], "channels": ["email", "sms", "push", "webhook"]});
    call(&stack, Method::POST, "/v1/notifications", Some(notification)).await;
    // The importer.
    let bucket = &stack.physical_names()["ImportsBucket"];
    let csv = "user_id,email\nrt2,rt2@example.com\n";
    stack
        .clients
        .s3()
        .put_object()
        .bucket(bucket)
        .key("imports/rt.csv")
        .body(csv.as_bytes().to_vec().into())
        .send()
        .await
        .expect("the file is dropped");
    // The dispatcher.
    let segment = json!({"segment_id": "rt", "name": "rt", "kind": "static", "user_ids": ["rt"]});
    call(&stack, Method::POST, "/v1/segments", Some(segment)).await;
    let campaign = json!({"name": "rt", "segment_id": "rt", "template_id": "hello", "channels": ["email"]});
    call(&stack, Method::POST, "/v1/campaigns", Some(campaign)).await;

    let processes = stack.processes().expect("process mode");
    let deadline = Instant::now() + Duration::from_secs(120);
    let cold_start = |binary: &str| processes.functions().get(binary).and_then(|f| f.cold_starts().first().copied());
    while BINARIES.iter().any(|b| cold_start(b).is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for binary in BINARIES {
        match cold_start(binary) {
            Some(cold) => {
                println!("init ms {binary}: {:.1} ms", cold.init.as_secs_f64() * 1000.0);
                println!("first invoke ms {binary}: {:.1} ms", cold.first_invoke.as_secs_f64() * 1000.0);
            }
            None => eprintln!("runtime: {binary} answered no invocation within 120 s"),
        }
    }
    stack.stop().await;
    let _ = std::fs::remove_dir_all(log_dir());
}
