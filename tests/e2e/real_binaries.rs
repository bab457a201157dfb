//! The functions' real binaries on the local stack (`Functions::Processes`): every
//! invocation goes to the function's `bootstrap` process (the Cargo binaries in
//! `target/debug`, which `scripts/test` builds before the suites) through the emulated
//! Lambda Runtime API: README's walkthrough, a segment, an import and a campaign; and a
//! process past its timeout is killed, its batch failed.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use herald_e2e::{Api, aws_endpoint, sent_by_moto, start_stack_with};
use herald_local::{
    Functions, LocalStack,
    esm::{self, EventSourceMapping, QueueSource},
    processes::{Bootstrap, Function, Settings, SqsFunction, beside_this_executable},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A stack whose functions run as their binaries; each function's output goes to
/// `target/debug/function-logs/<stack>/<function>.log`.
async fn stack_of_processes() -> LocalStack {
    let binaries = beside_this_executable();
    let logs = binaries.join("function-logs").join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&logs).unwrap();
    start_stack_with(|o| {
        o.functions = Functions::Processes(Settings { binaries, logs: Some(logs) });
        // A settle check every 2 s (the template waits 300), so the campaign is done soon.
        o.dispatcher_environment.insert("SETTLE_CHECK_SECONDS".into(), "2".into());
        // Debug binaries on moto under the whole suite: the test is not about timeouts.
        o.timeout_scale = 3.0;
    })
    .await
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The binaries that ran at least one invocation to its end.
fn binaries_invoked(stack: &LocalStack) -> Vec<String> {
    let processes = stack.processes().expect("the stack runs processes");
    processes.functions().iter().filter(|(_, f)| !f.cold_starts().is_empty()).map(|(b, _)| b.clone()).collect()
}

#[tokio::test]
async fn the_readme_walkthrough_and_a_segment_run_on_the_real_binaries() {
    let stack = stack_of_processes().await;
    let walkthrough = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &herald_local::readme_walkthrough().unwrap()])
        .env("HERALD_URL", &stack.api_url)
        .env("HERALD_KEY", &stack.admin_key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&walkthrough.stdout);
    assert!(walkthrough.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&walkthrough.stderr));
    assert!(stdout.contains(r#""phone":"+14155552671""#), "{stdout}");
    assert!(stdout.contains(r#""deliveries":[{"#), "{stdout}");
    assert!(stdout.trim_end().ends_with("404"), "{stdout}");

    // A dynamic segment: backfilled by the segmenter, then entered through the relay
    // (the profiles table's stream), the bus and the segmenter's queue.
    let api = Api::new(&stack);
    let rule = json!({"attribute": "plan", "any_of": ["pro"]});
    let answer =
        api.post("/v1/segments", &json!({"segment_id": "pros", "name": "pros", "kind": "dynamic", "rule": rule})).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    eventually("the segment is ready", || async { api.get("/v1/segments/pros").await.body["state"] == "ready" }).await;
    assert!(api.put("/v1/users/bo", &json!({"attributes": {"plan": ["pro"]}})).await.status.is_success());
    eventually("bo is a member", || async {
        api.get("/v1/users/bo/segments").await.body["segment_ids"] == json!(["pros"])
    })
    .await;
    let invoked = binaries_invoked(&stack);
    for binary in ["herald-api", "herald-worker-sms", "herald-segmenter", "herald-relay"] {
        assert!(invoked.iter().any(|b| b == binary), "{binary} never answered an invocation: {invoked:?}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn an_import_and_a_campaign_run_on_the_real_binaries() {
    let stack = stack_of_processes().await;
    let api = Api::new(&stack);
    let domain = format!("{}.example.com", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let ids: Vec<String> = (0..5).map(|i| format!("rb{i}")).collect();
    let mut csv = String::from("user_id,email\n");
    for id in &ids {
        csv.push_str(&format!("{id},{id}@{domain}\n"));
    }
    let bucket = &stack.physical_names()["ImportsBucket"];
    stack
        .clients
        .s3()
        .put_object()
        .bucket(bucket)
        .key("imports/audience.csv")
        .body(csv.into_bytes().into())
        .send()
        .await
        .unwrap();
    eventually("the file is imported", || async {
        let jobs = api.get("/v1/imports").await.body;
        jobs["imports"].as_array().is_some_and(|jobs| jobs.iter().any(|j| j["state"] == "done" && j["imported"] == 5))
    })
    .await;

    let segment = json!({"segment_id": "everyone", "name": "everyone", "kind": "static", "user_ids": ids});
    assert!(api.post("/v1/segments", &segment).await.status.is_success());
    let template = json!({"channels": {"email": {"subject": "We launched", "body": "Come and see."}}});
    assert!(api.put("/v1/templates/launch", &template).await.status.is_success());
    let campaign = json!({"name": "launch", "segment_id": "everyone", "template_id": "launch", "channels": ["email"]});
    let answer = api.post("/v1/campaigns", &campaign).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let status_url = answer.body["status_url"].as_str().unwrap().to_owned();
    eventually("the campaign is done", || async { api.get(&status_url).await.body["state"] == "done" }).await;
    assert_eq!(api.get(&status_url).await.body["counters"]["sent"], 5);
    let emails = sent_by_moto(&aws_endpoint()).await.emails;
    for id in &ids {
        let address = format!("{id}@{domain}");
        assert_eq!(emails.iter().filter(|e| e.1.contains(&address)).count(), 1, "{address} got one email");
    }
    let invoked = binaries_invoked(&stack);
    for binary in ["herald-importer", "herald-dispatcher", "herald-worker-email"] {
        assert!(invoked.iter().any(|b| b == binary), "{binary} never answered an invocation: {invoked:?}");
    }
    stack.stop().await;
}

/// A bootstrap that takes its first event and never answers (bash only: its
/// `/dev/tcp` is the runtime API client).
const NEVER_ANSWERS: &str = r#"#!/bin/bash
exec 3<>"/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API#*:}"
printf 'GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: runtime\r\n\r\n' >&3
exec sleep 600
"#;

/// A bootstrap that takes its first event and exits, as a crashing function does.
const CRASHES: &str = r#"#!/bin/bash
exec 3<>"/dev/tcp/${AWS_LAMBDA_RUNTIME_API%:*}/${AWS_LAMBDA_RUNTIME_API#*:}"
printf 'GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: runtime\r\n\r\n' >&3
sleep 0.2
exit 3
"#;

/// Whether the process `pid` still runs (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
}

/// A queue with one message, and a mapping of it (failed messages back at once) to a
/// function whose bootstrap is `script`, stopped at `timeout`.
struct FakeFunction {
    sqs: aws_sdk_sqs::Client,
    url: String,
    dir: PathBuf,
    function: Arc<Function>,
    mapping: EventSourceMapping,
}

impl FakeFunction {
    async fn new(script: &str, timeout: Duration) -> Self {
        let dir = std::env::temp_dir().join(format!("herald-runtime-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path: PathBuf = dir.join("bootstrap");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let sqs = aws_sdk_sqs::Client::new(&herald_aws::local_sdk_config(&aws_endpoint()).await);
        let name = format!("fake-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let url = sqs.create_queue().queue_name(&name).send().await.unwrap().queue_url.unwrap();
        sqs.send_message().queue_url(&url).message_body("{}").send().await.unwrap();
        let bootstrap = Bootstrap {
            function: "FakeFunction".into(),
            binary: "bootstrap".into(),
            path,
            environment: Default::default(),
            timeout,
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:fake".into(),
        };
        let function = Arc::new(Function::new(bootstrap, None, 1));
        let mut source = QueueSource::new(&url, format!("arn:aws:sqs:us-east-1:123456789012:{name}"));
        source.retry_delay = Duration::ZERO;
        let mapping = EventSourceMapping { timeout, ..EventSourceMapping::new("FakeFunction", source) };
        Self { sqs, url, dir, function, mapping }
    }

    /// One poll of the mapping: a batch received, invoked and settled.
    async fn poll(&self) {
        let handler = SqsFunction::environments(self.function.clone(), &self.mapping).remove(0);
        assert_eq!(esm::poll_once(&self.sqs, &self.mapping, &handler).await.unwrap(), 1);
    }

    /// How many times the message was received, once it is back on the queue.
    async fn receives_of_the_message_back(&self) -> String {
        let again = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .wait_time_seconds(5)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        let message = again.messages.unwrap_or_default().pop().expect("the message is back");
        let attributes = message.attributes.unwrap_or_default();
        attributes[&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount].clone()
    }

    async fn remove(self) {
        self.sqs.delete_queue().queue_url(&self.url).send().await.unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

#[tokio::test]
async fn a_process_past_its_timeout_is_killed_and_its_batch_fails() {
    let timeout = Duration::from_secs(1);
    let fake = FakeFunction::new(NEVER_ANSWERS, timeout).await;
    let started = Instant::now();
    fake.poll().await;
    let took = started.elapsed();
    assert!(took >= timeout, "stopped at its timeout, not before: {took:?}");
    let pids = fake.function.started_processes();
    assert_eq!(pids.len(), 1);
    eventually("the process is killed", || async { !running(pids[0]) }).await;
    assert_eq!(fake.receives_of_the_message_back().await, "2", "the batch failed");
    fake.remove().await;
}

#[tokio::test]
async fn a_process_that_exits_during_its_invocation_fails_its_batch() {
    let timeout = Duration::from_secs(30);
    let fake = FakeFunction::new(CRASHES, timeout).await;
    let started = Instant::now();
    fake.poll().await;
    assert!(started.elapsed() < timeout / 2, "the exit ends the invocation, not its timeout");
    assert_eq!(fake.receives_of_the_message_back().await, "2", "the batch failed");
    fake.remove().await;
}
