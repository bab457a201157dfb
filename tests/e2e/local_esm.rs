//! The local stack plays Lambda's SQS event source mappings and creates the template's
//! queues, rules and platform applications: a fake handler on a test queue shows how
//! batches are settled, redelivered and dead-lettered, and the stack's own resources are
//! checked against the template.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, Target};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use herald_e2e::start_stack;
use herald_local::{
    Template,
    esm::{self, EventSourceMapping, Invocation, QueueSource, Retry, SqsHandler},
    repo_root,
};
use serde_json::{Value, json};

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .expect("AWS_ENDPOINT_URL must name a running moto server: run the suites with scripts/test, which starts one")
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&herald_aws::local_sdk_config(&endpoint()).await)
}

fn unique(name: &str) -> String {
    format!("t{}-{name}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Creates a queue and answers its URL and ARN.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.iter().cloned().collect()))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    (url.clone(), queue_arn(sqs, &url).await)
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    queue_attribute(sqs, url, QueueAttributeName::QueueArn).await
}

async fn queue_attribute(sqs: &aws_sdk_sqs::Client, url: &str, name: QueueAttributeName) -> String {
    let answer = sqs.get_queue_attributes().queue_url(url).attribute_names(name.clone()).send().await.unwrap();
    answer.attributes.and_then(|mut a| a.remove(&name)).unwrap_or_default()
}

fn source(url: &str, arn: &str) -> QueueSource {
    QueueSource { retry_delay: Duration::from_secs(1), ..QueueSource::new(url, arn) }
}

/// A fake function's mapping on the queue: Lambda's default timeout, five pollers.
fn mapping(url: &str, arn: &str) -> EventSourceMapping {
    EventSourceMapping::new("FakeFunction", source(url, arn))
}

/// Every batch a fake handler was given.
type Seen = Arc<Mutex<Vec<SqsEvent>>>;

/// A fake handler that records each batch and reports as failed the records `fails` picks.
fn fake_handler(fails: impl Fn(&SqsMessage) -> bool + Send + Sync + 'static) -> (Arc<dyn SqsHandler>, Seen) {
    let seen = Seen::default();
    let fails = Arc::new(fails);
    let handler = esm::handler_fn({
        let seen = seen.clone();
        move |event: SqsEvent| {
            let seen = seen.clone();
            let fails = fails.clone();
            async move {
                let mut response = SqsBatchResponse::default();
                for record in event.records.iter().filter(|r| fails(r)) {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = record.message_id.clone().unwrap_or_default();
                    response.batch_item_failures.push(failure);
                }
                seen.lock().unwrap().push(event);
                response
            }
        }
    });
    (handler, seen)
}

/// Bodies and receive counts of every record handled, in order.
fn deliveries(seen: &Seen) -> Vec<(String, String)> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .flat_map(|e| &e.records)
        .map(|r| {
            (
                r.body.clone().unwrap_or_default(),
                r.attributes.get("ApproximateReceiveCount").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_until(timeout: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_poller(stopper: esm::Stopper, poller: tokio::task::JoinHandle<()>) {
    stopper.stop();
    tokio::time::timeout(Duration::from_secs(10), poller).await.expect("the poller stops in time").unwrap();
}

#[tokio::test]
async fn a_failed_record_is_redelivered_alone_and_the_rest_of_its_batch_deleted() {
    let sqs = sqs().await;
    // A long visibility timeout: a redelivery within the test proves the short local
    // retry delay, not the timeout, brought the message back.
    let (url, arn) =
        create_queue(&sqs, &unique("batch"), &[(QueueAttributeName::VisibilityTimeout, "60".into())]).await;
    let entries = ["ok-1", "fail-once", "ok-2"].iter().enumerate().map(|(i, body)| {
        SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(*body).build().unwrap()
    });
    sqs.send_message_batch().queue_url(&url).set_entries(Some(entries.collect())).send().await.unwrap();

    let (handler, seen) = fake_handler(|r| {
        r.body.as_deref() == Some("fail-once")
            && r.attributes.get("ApproximateReceiveCount").map(String::as_str) == Some("1")
    });
    let (stopper, stop) = esm::stop_signal();
    let mapping = mapping(&url, &arn);
    let poller = esm::spawn_poller(sqs.clone(), mapping.clone(), esm::shared(handler, &mapping), stop);
    wait_until(Duration::from_secs(20), "the failed record's redelivery", || deliveries(&seen).len() >= 4).await;
    // Long enough for a wrongly kept message to come back once more.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let events = seen.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:#?}");
    let first = &events[0].records;
    assert_eq!(first.len(), 3, "the three messages arrive in one batch");
    for record in first.iter().chain(&events[1].records) {
        assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(record.event_source_arn.as_deref(), Some(arn.as_str()));
        assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));
        assert!(record.message_id.is_some() && record.receipt_handle.is_some() && record.md5_of_body.is_some());
        for attribute in ["ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"] {
            assert!(record.attributes.contains_key(attribute), "{attribute} missing from {record:?}");
        }
    }
    assert_eq!(
        deliveries(&seen),
        [("ok-1", "1"), ("fail-once", "1"), ("ok-2", "1"), ("fail-once", "2")]
            .map(|(b, c)| (b.to_owned(), c.to_owned()))
    );
    assert_eq!(events[1].records[0].message_id, first[1].message_id, "the same message comes back");
    for count in
        [QueueAttributeName::ApproximateNumberOfMessages, QueueAttributeName::ApproximateNumberOfMessagesNotVisible]
    {
        assert_eq!(queue_attribute(&sqs, &url, count.clone()).await, "0", "{count:?}: every message was deleted");
    }
    stop_poller(stopper, poller).await;
}

#[tokio::test]
async fn a_message_that_always_fails_lands_in_the_dead_letter_queue_after_max_receive_count() {
    let sqs = sqs().await;
    let (dlq_url, dlq_arn) = create_queue(&sqs, &unique("dlq"), &[]).await;
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string();
    let (url, arn) = create_queue(
        &sqs,
        &unique("poison"),
        &[(QueueAttributeName::VisibilityTimeout, "60".into()), (QueueAttributeName::RedrivePolicy, redrive)],
    )
    .await;
    sqs.send_message().queue_url(&url).message_body("poison").send().await.unwrap();

    let (handler, seen) = fake_handler(|_| true);
    let (stopper, stop) = esm::stop_signal();
    let mapping = mapping(&url, &arn);
    let poller = esm::spawn_poller(sqs.clone(), mapping.clone(), esm::shared(handler, &mapping), stop);
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let answer = sqs.receive_message().queue_url(&dlq_url).wait_time_seconds(1).send().await.unwrap();
        if let Some(message) = answer.messages.unwrap_or_default().into_iter().next() {
            break message;
        }
        assert!(Instant::now() < deadline, "nothing reached the dead-letter queue; handled: {:?}", deliveries(&seen));
    };
    stop_poller(stopper, poller).await;

    assert_eq!(dead.body(), Some("poison"));
    assert_eq!(deliveries(&seen), [("poison", "1"), ("poison", "2")].map(|(b, c)| (b.to_owned(), c.to_owned())));
    assert_eq!(queue_attribute(&sqs, &url, QueueAttributeName::ApproximateNumberOfMessages).await, "0");
}

/// Records when it is dropped: shows when an invocation's future was dropped.
struct DropGuard(Arc<Mutex<Option<Instant>>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

/// A function that outlives its timeout on a message's first delivery and handles it at
/// once on the next.
#[derive(Default)]
struct Slow {
    /// When each invocation started, and the deadline it was given.
    invocations: Mutex<Vec<(Instant, Option<Instant>, String)>>,
    dropped: Arc<Mutex<Option<Instant>>>,
    finished: AtomicBool,
}

#[async_trait::async_trait]
impl SqsHandler for Slow {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let count = messages[0].attributes.get("ApproximateReceiveCount").cloned().unwrap_or_default();
        self.invocations.lock().unwrap().push((Instant::now(), invocation.deadline, count.clone()));
        if count == "1" {
            let _guard = DropGuard(self.dropped.clone());
            tokio::time::sleep(Duration::from_secs(3)).await;
            self.finished.store(true, Ordering::SeqCst);
        }
        Retry::default()
    }
}

#[tokio::test]
async fn a_function_slower_than_its_timeout_is_stopped_there_and_its_messages_come_back() {
    let sqs = sqs().await;
    let (url, arn) = create_queue(&sqs, &unique("slow"), &[(QueueAttributeName::VisibilityTimeout, "60".into())]).await;
    sqs.send_message().queue_url(&url).message_body("slow").send().await.unwrap();

    let slow = Arc::new(Slow::default());
    let timeout = Duration::from_secs(1);
    let (stopper, stop) = esm::stop_signal();
    let mapping = EventSourceMapping { timeout, ..mapping(&url, &arn) };
    let poller = esm::spawn_poller(sqs.clone(), mapping.clone(), esm::shared(slow.clone(), &mapping), stop);
    wait_until(Duration::from_secs(10), "the message's second delivery", || {
        slow.invocations.lock().unwrap().len() >= 2
    })
    .await;
    stop_poller(stopper, poller).await;

    let invocations = slow.invocations.lock().unwrap().clone();
    let (started, deadline, count) = &invocations[0];
    assert_eq!(count, "1");
    let deadline = deadline.expect("the invocation has a deadline");
    let early = (*started + timeout).saturating_duration_since(deadline);
    assert!(deadline <= *started + timeout && early < Duration::from_millis(200), "deadline {early:?} early");
    let dropped = slow.dropped.lock().unwrap().expect("the invocation's future was dropped");
    let ran = dropped.duration_since(*started);
    assert!(ran >= timeout && ran < timeout + Duration::from_millis(300), "stopped after {ran:?}");
    assert!(!slow.finished.load(Ordering::SeqCst), "the invocation went on past its sleep");
    let (again, _, count) = &invocations[1];
    assert_eq!(count, "2", "the message came back, failed once");
    assert!(*again > dropped, "delivered again only once the first invocation was gone");
    assert_eq!(invocations.len(), 2, "{invocations:?}");
}

#[tokio::test]
async fn a_random_timeout_is_told_to_the_invocation_and_stops_it_there() {
    let sqs = sqs().await;
    let (url, arn) =
        create_queue(&sqs, &unique("random"), &[(QueueAttributeName::VisibilityTimeout, "60".into())]).await;
    sqs.send_message().queue_url(&url).message_body("random").send().await.unwrap();

    let slow = Arc::new(Slow::default());
    // Shorter than the handler's 3 s sleep, so every draw stops it.
    let timeout = Duration::from_secs(2);
    let (stopper, stop) = esm::stop_signal();
    let mapping = EventSourceMapping { timeout, random_timeout_share: 1.0, ..mapping(&url, &arn) };
    let poller = esm::spawn_poller(sqs.clone(), mapping.clone(), esm::shared(slow.clone(), &mapping), stop);
    wait_until(Duration::from_secs(15), "the message's second delivery", || {
        slow.invocations.lock().unwrap().len() >= 2
    })
    .await;
    stop_poller(stopper, poller).await;

    let invocations = slow.invocations.lock().unwrap().clone();
    let (started, deadline, _) = &invocations[0];
    let given = deadline.expect("a deadline").duration_since(*started);
    let slack = Duration::from_millis(100);
    assert!(given + slack >= timeout / 10 && given <= timeout.mul_f64(0.9) + slack, "a deadline {given:?} in");
    let dropped = slow.dropped.lock().unwrap().expect("the invocation's future was dropped");
    let ran = dropped.duration_since(*started);
    assert!(ran >= given && ran < given + Duration::from_millis(300), "stopped after {ran:?}, told {given:?}");
    assert_eq!(invocations[1].2, "2", "the message came back, failed once");
}

#[tokio::test]
async fn a_mapping_runs_as_many_invocations_at_once_as_its_maximum_concurrency() {
    let sqs = sqs().await;
    let (url, arn) = create_queue(&sqs, &unique("concurrent"), &[]).await;
    let entries = (0..6).map(|i| {
        SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(format!("m{i}")).build().unwrap()
    });
    sqs.send_message_batch().queue_url(&url).set_entries(Some(entries.collect())).send().await.unwrap();

    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let handler = esm::handler_fn({
        let (running, most, handled) = (running.clone(), most.clone(), handled.clone());
        move |event: SqsEvent| {
            let (running, most, handled) = (running.clone(), most.clone(), handled.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                handled.fetch_add(event.records.len(), Ordering::SeqCst);
                SqsBatchResponse::default()
            }
        }
    });
    let source = QueueSource { batch_size: 1, max_concurrency: Some(3), concurrency: 3, ..source(&url, &arn) };
    let (stopper, stop) = esm::stop_signal();
    let mapping = EventSourceMapping::new("FakeFunction", source);
    let poller = esm::spawn_poller(sqs.clone(), mapping.clone(), esm::shared(handler, &mapping), stop);
    wait_until(Duration::from_secs(10), "the six messages", || handled.load(Ordering::SeqCst) >= 6).await;
    stop_poller(stopper, poller).await;

    assert_eq!(most.load(Ordering::SeqCst), 3, "invocations at once");
    assert_eq!(handled.load(Ordering::SeqCst), 6, "each message handled once");
}

#[tokio::test]
async fn the_stack_polls_each_function_queue_and_routes_its_channel_events_there() {
    let stack = start_stack().await;
    let deployment = &stack.deployment;
    let sqs = &stack.clients.sqs();

    let mut polled: Vec<(&str, &str)> =
        stack.event_sources.iter().map(|m| (m.function.as_str(), m.source.queue_url.as_str())).collect();
    polled.sort();
    let expected: Vec<(&str, &str)> = [
        ("DispatcherFunction", "DispatchQueue"),
        ("EmailWorkerFunction", "EmailQueue"),
        ("FeedbackFunction", "FeedbackQueue"),
        ("ImporterFunction", "ImporterQueue"),
        ("PushWorkerFunction", "PushQueue"),
        ("SegmenterFunction", "SegmenterQueue"),
        ("SmsWorkerFunction", "SmsQueue"),
        ("WebhookWorkerFunction", "WebhookQueue"),
    ]
    .into_iter()
    .map(|(function, queue)| (function, stack.queue_url(queue).unwrap()))
    .collect();
    assert_eq!(polled, expected);
    for mapping in &stack.event_sources {
        // An import runs for minutes: one message per invocation.
        assert_eq!(mapping.source.batch_size, if mapping.function == "ImporterFunction" { 1 } else { 10 });
        assert!(mapping.source.report_batch_item_failures);
        let queue = match mapping.function.as_str() {
            "DispatcherFunction" => "DispatchQueue".to_owned(),
            function => function.replace("WorkerFunction", "Queue").replace("Function", "Queue"),
        };
        assert_eq!(Some(mapping.source.queue_arn.as_str()), deployment.arn(&queue));
        // The channel workers are paced by the ChannelMaxConcurrency parameter (default 5).
        let paced = mapping.function.ends_with("WorkerFunction");
        assert_eq!(mapping.source.max_concurrency, paced.then_some(5), "{}", mapping.function);
        // Five pollers each: the workers' cap, Lambda's initial five for the others.
        let cap = esm::max_concurrency_from_env().unwrap().unwrap_or(u32::MAX);
        assert_eq!(mapping.source.concurrency, cap.min(5), "{}", mapping.function);
        // Each function's own Timeout, else the Globals' 10 s.
        let timeout = match mapping.function.as_str() {
            "SegmenterFunction" | "FeedbackFunction" => 30,
            "ImporterFunction" => 900,
            "DispatcherFunction" => 300,
            _ => 10,
        };
        assert_eq!(mapping.timeout, Duration::from_secs(timeout), "{}", mapping.function);
    }

    let email_queue = stack.queue_url("EmailQueue").unwrap();
    assert_eq!(queue_attribute(sqs, email_queue, QueueAttributeName::VisibilityTimeout).await, "60");
    let redrive: Value =
        serde_json::from_str(&queue_attribute(sqs, email_queue, QueueAttributeName::RedrivePolicy).await).unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], deployment.arn("EmailDeadLetterQueue").unwrap());
    assert_eq!(redrive["maxReceiveCount"].to_string(), "5");

    let bus = &stack.physical_names()["EventBus"];
    let rule = &stack.physical_names()["EmailRule"];
    let targets =
        stack.clients.eventbridge().list_targets_by_rule().rule(rule).event_bus_name(bus).send().await.unwrap();
    let targets: Vec<(&str, &str)> = targets.targets().iter().map(|t| (t.id(), t.arn())).collect();
    assert_eq!(targets, [("email-queue", deployment.arn("EmailQueue").unwrap())]);

    // A second target on the template's rule, read by a fake handler, shows what the rule
    // lets through without racing the stack's own email worker for the EmailQueue.
    let (copy_url, copy_arn) = create_queue(sqs, &unique("email-copy"), &[]).await;
    let copy = Target::builder().id("copy").arn(&copy_arn).build().unwrap();
    stack.clients.eventbridge().put_targets().rule(rule).event_bus_name(bus).targets(copy).send().await.unwrap();
    let events = ["notification.sms", "notification.email", "profile.changed"].map(|detail_type| {
        PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source("herald")
            .detail_type(detail_type)
            .detail(json!({"test": detail_type}).to_string())
            .build()
    });
    let put = stack.clients.eventbridge().put_events().set_entries(Some(events.to_vec())).send().await.unwrap();
    assert_eq!(put.failed_entry_count, 0);

    let (handler, seen) = fake_handler(|_| false);
    let (stopper, stop) = esm::stop_signal();
    let mapping = mapping(&copy_url, &copy_arn);
    let poller = esm::spawn_poller(sqs.clone(), mapping.clone(), esm::shared(handler, &mapping), stop);
    wait_until(Duration::from_secs(15), "the email event", || !deliveries(&seen).is_empty()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_poller(stopper, poller).await;
    let bodies: Vec<Value> = deliveries(&seen).iter().map(|(body, _)| serde_json::from_str(body).unwrap()).collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["detail-type"], "notification.email");
    assert_eq!(bodies[0]["detail"], json!({"test": "notification.email"}));
    stack.stop().await;
}

/// The value of the template's secret `logical_id`, as Secrets Manager holds it.
async fn secret_value(stack: &herald_local::LocalStack, logical_id: &str) -> String {
    let arn = stack.deployment.physical.reference(logical_id).unwrap();
    let answer = stack.clients.secretsmanager().get_secret_value().secret_id(arn).send().await.unwrap();
    answer.secret_string().unwrap().to_owned()
}

#[tokio::test]
async fn each_secret_is_generated_as_a_one_key_ring_and_functions_get_only_the_arns_they_need() {
    let stack = start_stack().await;
    let tracking = secret_value(&stack, "TrackingKeysSecret").await;
    let webhook = secret_value(&stack, "WebhookSigningKeysSecret").await;
    for value in [&tracking, &webhook] {
        let ring = herald_core::signing::KeyRing::parse(value).unwrap();
        assert_eq!(ring.current().id, "k1");
        assert_eq!(ring.current().secret().len(), 48);
    }
    assert_ne!(tracking, webhook, "a secret per purpose");
    let names = ["TRACKING_KEYS_SECRET_ARN", "WEBHOOK_SIGNING_KEYS_SECRET_ARN"];
    let functions = [
        ("herald-api", &names[..]),
        ("herald-worker-email", &names[..1]),
        ("herald-worker-webhook", &names[1..]),
        ("herald-worker-sms", &[][..]),
        ("herald-worker-push", &[][..]),
        ("herald-segmenter", &[][..]),
        ("herald-importer", &[][..]),
        ("herald-dispatcher", &[][..]),
        ("herald-relay", &[][..]),
    ];
    for (binary, expected) in functions {
        let environment = stack.deployment.function_environment(binary).unwrap();
        let held: Vec<&str> = names.iter().copied().filter(|n| environment.contains_key(*n)).collect();
        assert_eq!(held, expected, "{binary}");
        for name in held {
            assert!(environment[name].starts_with("arn:aws:secretsmanager:us-east-1:"), "{binary}: {name}");
        }
        let secret_of = |value: &str| herald_core::signing::KeyRing::parse(value).unwrap().current().clone();
        for value in environment.values() {
            for secret in [secret_of(&tracking), secret_of(&webhook)] {
                assert!(!value.as_bytes().windows(secret.secret().len()).any(|w| w == secret.secret()), "{binary}");
            }
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_function_whose_secret_holds_no_key_ring_stops_at_init_naming_the_variable_never_the_value() {
    let stack = start_stack().await;
    let value = r#"{"id":"k1","secret":"too-short-to-sign"}"#;
    let name = herald_e2e::tables::unique("bad-ring");
    let created = stack.clients.secretsmanager().create_secret().name(&name).secret_string(value).send().await;
    let arn = created.unwrap().arn.unwrap();

    let config = herald_api::Config { tracking_keys_secret: arn.clone(), ..stack.api_config.clone() };
    let api = herald_api::App::from_aws(&stack.clients, &config).await.err().expect("refused at init").to_string();
    assert!(api.contains("TRACKING_KEYS_SECRET_ARN") && api.contains("shorter than 32"), "{api}");

    let mut environment = stack.deployment.function_environment("herald-worker-webhook").unwrap();
    environment.insert("WEBHOOK_SIGNING_KEYS_SECRET_ARN".into(), arn);
    let config = herald_worker::WorkerConfig::from_lookup(|n| environment.get(n).cloned()).unwrap();
    let worker = herald_worker::WorkerHandler::from_aws(&stack.clients, &config)
        .await
        .err()
        .expect("refused at init")
        .to_string();
    assert!(worker.contains("WEBHOOK_SIGNING_KEYS_SECRET_ARN"), "{worker}");
    for message in [api, worker] {
        assert!(!message.contains("too-short-to-sign"), "{message}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn deploying_again_on_the_same_endpoint_finds_the_same_resources_and_updates_changed_queues() {
    let stack = start_stack().await;
    let first = &stack.deployment;
    let push = first.function_environment("herald-worker-push").unwrap();
    for (variable, platform) in [
        ("APNS_PLATFORM_APPLICATION_ARN", "APNS"),
        ("APNS_SANDBOX_PLATFORM_APPLICATION_ARN", "APNS_SANDBOX"),
        ("FCM_PLATFORM_APPLICATION_ARN", "GCM"),
    ] {
        let arn = &push[variable];
        assert!(arn.starts_with("arn:aws:sns:") && arn.contains(&format!(":app/{platform}/")), "{variable}={arn}");
        let attributes =
            stack.clients.sns().get_platform_application_attributes().platform_application_arn(arn).send().await;
        assert!(attributes.is_ok(), "{arn} exists");
    }
    let sender = first.template.parameter("SenderAddress").unwrap();
    assert!(
        stack.clients.sesv2().get_email_identity().email_identity(sender).send().await.is_ok(),
        "{sender} is an identity"
    );

    let template = Template::load(&repo_root().join("infra/template.yaml")).unwrap();
    let tracking_keys = secret_value(&stack, "TrackingKeysSecret").await;
    let again = herald_local::provision::deploy(&stack.clients, &template, &first.stack_name).await.unwrap();
    assert_eq!(again.physical, first.physical);
    assert_eq!(secret_value(&stack, "TrackingKeysSecret").await, tracking_keys, "a secret keeps its value");
    assert_eq!(
        again.function_environment("herald-worker-push").unwrap()["APNS_PLATFORM_APPLICATION_ARN"],
        push["APNS_PLATFORM_APPLICATION_ARN"]
    );

    // A changed template updates the queues it names instead of failing on them.
    let text = std::fs::read_to_string(repo_root().join("infra/template.yaml")).unwrap();
    assert!(text.contains("VisibilityTimeout: 60"));
    let changed = Template::parse(&text.replace("VisibilityTimeout: 60", "VisibilityTimeout: 45")).unwrap();
    let updated = herald_local::provision::deploy(&stack.clients, &changed, &first.stack_name).await.unwrap();
    assert_eq!(updated.physical, first.physical);
    let email_queue = stack.queue_url("EmailQueue").unwrap();
    assert_eq!(queue_attribute(&stack.clients.sqs(), email_queue, QueueAttributeName::VisibilityTimeout).await, "45");
    stack.stop().await;
}

#[tokio::test]
async fn the_relay_reads_the_profiles_members_and_deliveries_streams_the_members_one_filtered_to_outboxes() {
    let stack = start_stack().await;
    let sources = herald_local::streams::stream_event_sources(&stack.deployment, Duration::from_secs(1)).unwrap();
    let names = stack.deployment.names();
    let relayed: Vec<(&str, usize)> = sources
        .iter()
        .filter(|s| s.binary.as_deref() == Some("herald-relay"))
        .map(|s| {
            let table = names.iter().find(|(_, name)| s.stream_arn.contains(&format!("table/{name}/"))).unwrap().0;
            (table.as_str(), s.filters.len())
        })
        .collect();
    assert_eq!(relayed, [("ProfilesTable", 0), ("MembersTable", 1), ("DeliveriesTable", 0)]);
    // An unreadable record holds its shard for 10 retries, not a day: then its position
    // goes to the failure queue.
    let failure_queue = stack.queue_url("RelayFailureQueue").map(str::to_owned);
    for source in sources.iter().filter(|s| s.binary.as_deref() == Some("herald-relay")) {
        assert!(source.bisect_on_error && source.report_batch_item_failures, "{}", source.stream_arn);
        assert_eq!(source.maximum_retry_attempts, Some(10));
        assert_eq!(source.on_failure, failure_queue);
    }
    stack.stop().await;
}
