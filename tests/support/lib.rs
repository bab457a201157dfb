//! Shared support for the end-to-end suites: a local stack per test (its own tables and
//! bus on the shared moto endpoint), an HTTP client for the API, and an SQS queue that
//! captures what the stack publishes on its bus.

pub mod chaos;
pub mod tables;
pub mod webhook_sink;

use std::time::{Duration, Instant};

use aws_sdk_eventbridge::types::Target;
use herald_local::{LocalStack, Options, repo_root};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;

/// Starts a stack named uniquely for this test on the endpoint `scripts/test` started.
pub async fn start_stack() -> LocalStack {
    start_stack_with(|_| {}).await
}

pub async fn start_stack_with_key(admin_key: Option<String>) -> LocalStack {
    start_stack_with(|options| options.admin_key = admin_key).await
}

/// Starts a stack with `configure` applied to its options.
pub async fn start_stack_with(configure: impl FnOnce(&mut Options)) -> LocalStack {
    // The stack's warnings and errors (RUST_LOG for more) show with a failed test's output.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .expect("AWS_ENDPOINT_URL must name a running moto server: run the suites with scripts/test, which starts one");
    let mut options = Options {
        endpoint: Some(endpoint),
        port: 0,
        admin_key: None,
        stack_name: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        template: repo_root().join("infra/template.yaml"),
        worker_environment: Default::default(),
        dispatcher_environment: Default::default(),
        timeout_scale: 1.0,
        provider_endpoint: None,
        request_counter: None,
        worker_random_timeout_share: 0.0,
        parameters: Default::default(),
        functions: Default::default(),
    };
    configure(&mut options);
    LocalStack::start(options).await.expect("the local stack starts")
}

/// The endpoint `scripts/test` started.
pub fn aws_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL is set by scripts/test")
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Checks `answer` is a problem+json of `status`, with its title and detail.
pub fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["status"], status.as_u16());
    assert!(answer.body["title"].is_string() && answer.body["detail"].is_string(), "{}", answer.body);
}

/// Stores a new API key with `scopes` in the stack's keys table; returns its secret.
pub async fn key_with(stack: &LocalStack, scopes: impl IntoIterator<Item = herald_core::keys::Scope>) -> String {
    use herald_core::{keys, keys::ApiKeyStore};
    let secret = keys::generate_secret();
    herald_aws::DynamoApiKeyStore::new(stack.clients.dynamodb(), &stack.api_config.api_keys_table)
        .put(&keys::new_key(&secret, "scoped", scopes))
        .await
        .unwrap();
    secret
}

/// The stack's deliveries table.
pub fn deliveries(stack: &LocalStack) -> herald_aws::DynamoDeliveryStore {
    herald_aws::DynamoDeliveryStore::new(stack.clients.dynamodb(), &stack.api_config.deliveries_table)
}

/// Waits until the delivery has `status`, at most `limit`.
pub async fn wait_for_status(
    stack: &LocalStack,
    delivery_id: &str,
    status: herald_core::delivery::DeliveryStatus,
    limit: Duration,
) {
    use herald_core::delivery::DeliveryStore;
    let deadline = Instant::now() + limit;
    while deliveries(stack).get(delivery_id).await.unwrap().map(|d| d.status) != Some(status) {
        assert!(Instant::now() < deadline, "{delivery_id} never became {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The `field` of each entry in a problem's `errors`.
    pub fn fields_at_fault(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str().map(str::to_owned))
            .collect()
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Api {
    pub fn new(stack: &LocalStack) -> Self {
        Self { http: reqwest::Client::new(), base: stack.api_url.clone(), key: Some(stack.admin_key.clone()) }
    }

    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self { key: key.map(str::to_owned), ..self.clone() }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Answer {
        self.send_as(method, path, "application/json", body).await
    }

    pub async fn send_as(&self, method: Method, path: &str, content_type: &str, body: Option<Vec<u8>>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.expect("the local API answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::PUT, path, Some(serde_json::to_vec(body).unwrap())).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, Some(serde_json::to_vec(body).unwrap())).await
    }

    /// Sends a notification and returns its id, asserting it was accepted.
    pub async fn notify(&self, body: &Value) -> String {
        let answer = self.post("/v1/notifications", body).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        answer.body["notification_id"].as_str().unwrap().to_owned()
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }
}

/// An SQS queue subscribed to everything Herald publishes on the stack's bus.
pub struct EventCapture {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl EventCapture {
    pub async fn attach(stack: &LocalStack) -> Self {
        let config = herald_aws::local_sdk_config(&stack.endpoint).await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let bus = &stack.api_config.event_bus_name;
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{}-capture", stack.deployment.stack_name))
            .send()
            .await
            .expect("capture queue")
            .queue_url
            .expect("queue url");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
            .expect("queue arn");
        stack
            .clients
            .eventbridge()
            .put_rule()
            .name("capture-all")
            .event_bus_name(bus)
            .event_pattern(r#"{"source": ["herald"]}"#)
            .send()
            .await
            .expect("capture rule");
        stack
            .clients
            .eventbridge()
            .put_targets()
            .rule("capture-all")
            .event_bus_name(bus)
            .targets(Target::builder().id("capture").arn(arn).build().unwrap())
            .send()
            .await
            .expect("capture target");
        Self { sqs, queue_url }
    }

    /// Collects events until `count` have arrived or `timeout` has passed, then looks
    /// once more so that an extra, unwanted event is seen too.
    pub async fn collect(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while events.len() < count && Instant::now() < deadline {
            events.extend(self.receive(1).await);
        }
        events.extend(self.receive(0).await);
        events
    }

    async fn receive(&self, wait_seconds: i32) -> Vec<Value> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds)
            .send()
            .await
            .expect("receive");
        let messages = output.messages.unwrap_or_default();
        if !messages.is_empty() {
            let entries = messages.iter().enumerate().map(|(i, m)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap())
                    .build()
                    .unwrap()
            });
            self.sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries.collect()))
                .send()
                .await
                .expect("delete");
        }
        messages.iter().map(|m| serde_json::from_str(m.body().unwrap()).expect("an EventBridge event")).collect()
    }
}

/// What moto recorded as sent, read from its `/moto-api/data.json`.
#[derive(Debug, Default)]
pub struct SentByMoto {
    /// SES: (message id, to addresses, subject, body).
    pub emails: Vec<(String, Vec<String>, String, String)>,
    /// SNS SMS: (message id, phone number, text).
    pub sms: Vec<(String, String, String)>,
    /// SNS mobile push: (message id, device token, payload).
    pub pushes: Vec<(String, String, String)>,
}

pub async fn sent_by_moto(endpoint: &str) -> SentByMoto {
    // moto builds this dump while other tests write to it, and now and then fails doing
    // so (a 500): ask again.
    let mut data = Value::Null;
    for _ in 0..10 {
        let response = reqwest::get(format!("{endpoint}/moto-api/data.json")).await.unwrap();
        if let Ok(value) = response.json::<Value>().await {
            data = value;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(data.is_object(), "moto's data.json could not be read");
    let list = |service: &str, model: &str| data[service][model].as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut sent = SentByMoto::default();
    for m in list("ses", "Message") {
        let to = m["destinations"]["ToAddresses"].as_array().into_iter().flatten().map(text).collect();
        sent.emails.push((text(&m["id"]), to, text(&m["subject"]), text(&m["body"])));
    }
    for m in list("sns", "SMS") {
        sent.sms.push((text(&m["message_id"]), text(&m["phone_number"]), text(&m["message"])));
    }
    for endpoint in list("sns", "PlatformEndpoint") {
        for (id, payload) in endpoint["messages"].as_object().into_iter().flatten() {
            sent.pushes.push((id.clone(), text(&endpoint["token"]), text(payload)));
        }
    }
    sent
}

/// Polls a notification until every delivery satisfies `settled`, or `timeout` passes;
/// returns the last answer.
pub async fn wait_for_deliveries(
    api: &Api,
    notification_id: &str,
    timeout: Duration,
    settled: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = api.get(&format!("/v1/notifications/{notification_id}")).await;
        let done = answer.status == StatusCode::OK
            && answer.body["deliveries"].as_array().is_some_and(|d| !d.is_empty() && d.iter().all(&settled));
        if done || Instant::now() >= deadline {
            return answer.body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tracking links of an HTML email, in order: clicks, unsubscribe, open pixel.
pub fn tracking_links(html: &str) -> Vec<String> {
    html.split("http://127.0.0.1:")
        .skip(1)
        .filter(|rest| rest.contains("/v1/t/"))
        .map(|rest| format!("http://127.0.0.1:{}", &rest[..rest.find('"').unwrap()]))
        .collect()
}
