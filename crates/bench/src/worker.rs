//! Delivery workers: throughput with the provider stubbed at the network edge, and the
//! AWS requests and latency of the whole path on the local stack.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_smithy_runtime_api::{
    client::{
        http::{HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector},
        orchestrator::HttpRequest,
        runtime_components::RuntimeComponents,
    },
    http::{Response, StatusCode},
};
use aws_smithy_types::body::SdkBody;
use herald_aws::{RequestCounter, request_counter::DYNAMODB_WRITES, senders::SnsSmsSender};
use herald_core::{
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelRecipient, ContentRef, Delivery, DeliveryStatus, DeliveryStore, Target,
        memory::*,
        pipeline::{Pipeline, Providers},
        rate_limit::RateLimit,
        rendering::ChannelContent,
    },
    notifications::RECIPIENTS_PER_MESSAGE,
};
use serde_json::{Value, json};

/// Answers every request with SNS's Publish response, as the network would: the SDK still
/// builds, signs and parses every call.
#[derive(Debug, Clone)]
struct CannedSns;

impl HttpConnector for CannedSns {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let body = "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult><MessageId>m-1</MessageId></PublishResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></PublishResponse>";
        let mut response = Response::new(StatusCode::try_from(200).unwrap(), SdkBody::from(body));
        response.headers_mut().insert("content-type", "text/xml");
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for CannedSns {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn report(name: &str, value: f64, unit: &str) {
    println!("{name}: {value:.2} {unit}");
}

/// The shared pipeline over in-memory stores and the real SNS sender on a stubbed network,
/// on one thread.
pub fn deliveries_per_second_per_core() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = aws_sdk_sns::Config::builder()
            .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
            .region(aws_sdk_sns::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sns::config::Credentials::new("a", "b", None, None, "bench"))
            .http_client(CannedSns)
            .build();
        let deliveries = Arc::new(MemoryDeliveries::default());
        let pipeline = Pipeline::new(
            Channel::Sms,
            deliveries.clone(),
            Arc::new(MemoryPreferences::default()),
            Arc::new(herald_core::suppressions::memory::MemorySuppressions::default()),
            Arc::new(MemoryTemplates::default()),
            Providers { primary: Arc::new(SnsSmsSender::new(aws_sdk_sns::Client::from_conf(config))), secondary: None },
            Some(RateLimit { limit: 1000, window: 3600 }),
        );
        let total = 50_000;
        let jobs: Vec<ChannelMessage> = (0..total / RECIPIENTS_PER_MESSAGE)
            .map(|j| {
                let recipients = (0..RECIPIENTS_PER_MESSAGE)
                    .map(|r| {
                        let user = format!("u{}", j * RECIPIENTS_PER_MESSAGE + r);
                        let d =
                            Delivery::new("n1", &user, Channel::Sms, DeliveryStatus::Created, None, chrono::Utc::now());
                        deliveries.items.lock().unwrap().insert(d.delivery_id.clone(), (d.clone(), None));
                        ChannelRecipient {
                            delivery_id: d.delivery_id,
                            user_id: Some(user),
                            target: Target::Phone("+14155550100".into()),
                        }
                    })
                    .collect();
                ChannelMessage {
                    notification_id: "n1".into(),
                    notification_type: "otp".into(),
                    channel: Channel::Sms,
                    content: ContentRef::Inline(ChannelContent {
                        subject: None,
                        body: "Your code is {{ code }}".into(),
                        html: None,
                    }),
                    params: json!({"code": "123456"}).as_object().unwrap().clone(),
                    recipients,
                    campaign_id: None,
                    attempt: 0,
                    transactional: false,
                }
            })
            .collect();
        let started = Instant::now();
        for job in &jobs {
            pipeline.process(job).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let sent = deliveries.items.lock().unwrap().values().filter(|(d, _)| d.status == DeliveryStatus::Sent).count();
        assert_eq!(sent, total, "every delivery is sent");
        report("worker deliveries per second per core", total as f64 / elapsed, "deliveries/s");
    });
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Notifications to users over SMS through the whole local stack: API, bus, queue,
/// poller, worker, SNS on moto. Counts every AWS request at the SDK clients.
pub async fn local_delivery_costs() {
    let counter = RequestCounter::default();
    let stack = crate::local_stack(Some(counter.clone())).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", stack.api_url);
    let users = 400;
    for u in 0..users {
        http.put(url(&format!("/v1/users/b{u}")))
            .bearer_auth(&stack.admin_key)
            .json(&json!({"phone": format!("+1415555{:04}", u)}))
            .send()
            .await
            .unwrap();
    }
    let deliveries = herald_aws::DynamoDeliveryStore::new(stack.clients.dynamodb(), &stack.api_config.deliveries_table);
    // Waits until the notification's `count` deliveries are sent; their created → sent times.
    let sent_after = async |id: &str, count: usize| -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let list = deliveries.list(id).await.unwrap();
            if list.len() == count && list.iter().all(|d| d.status == DeliveryStatus::Sent) {
                return list
                    .iter()
                    .map(|d| {
                        let created = d.history.first().unwrap().at;
                        let sent = d.history.iter().find(|c| c.status == DeliveryStatus::Sent).unwrap().at;
                        (sent - created).num_microseconds().unwrap() as f64 / 1000.0
                    })
                    .collect();
            }
            assert!(Instant::now() < deadline, "deliveries did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let notify = async |recipients: Vec<Value>| -> String {
        let body = json!({"type": "otp", "recipients": recipients, "channels": ["sms"],
            "content": {"sms": {"body": "code {{ c }}"}}, "params": {"c": "42"}});
        crate::notify(&http, &stack, &body).await
    };

    // Cost and throughput: a burst of 40 notifications to 10 users each.
    counter.reset();
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..users / 10 {
        ids.push(notify((0..10).map(|i| json!({"user_id": format!("b{}", n * 10 + i)})).collect()).await);
    }
    for id in &ids {
        sent_after(id, 10).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (ids.len() * 10) as f64;
    // The waiting loop only reads (Query): it adds nothing to the writes or SQS.
    report("dynamodb writes per delivery", counter.count("DynamoDB", &DYNAMODB_WRITES) as f64 / total, "writes");
    report("sqs requests per delivery", counter.count("SQS", &[]) as f64 / total, "requests");
    report("local deliveries per second", total / elapsed, "deliveries/s");
    for ((service, operation), n) in counter.snapshot() {
        eprintln!("  {service} {operation}: {n}");
    }

    // Latency at a steady pace rather than behind a backlog: moto serves a few hundred
    // requests a second on one thread, and a burst would measure its queue.
    let mut latencies = Vec::new();
    for u in 0..50 {
        let id = notify(vec![json!({"user_id": format!("b{u}")})]).await;
        latencies.extend(sent_after(&id, 1).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort_by(f64::total_cmp);
    report("post to provider p50 ms", percentile(&latencies, 0.5), "ms");
    report("post to provider p99 ms", percentile(&latencies, 0.99), "ms");
    stack.stop().await;
}
