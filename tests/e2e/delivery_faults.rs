//! At-least-once delivery and faults: duplicates, poison messages, a throttling provider
//! and a provider that is down. Each test drives the stack's real queues and workers.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use herald_core::{
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelRecipient, ContentRef, Delivery, DeliveryStatus, DeliveryStore, Target,
        rendering::ChannelContent,
    },
};
use herald_e2e::{
    Api, aws_endpoint,
    chaos::{ChaosProxy, Fault},
    deliveries, sent_by_moto, start_stack, start_stack_with, wait_for_deliveries, wait_for_status,
};
use herald_local::LocalStack;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn sent(d: &Value) -> bool {
    d["status"] == "sent"
}

/// A recorded delivery and the job that carries it, as the API would make them.
async fn sms_job(stack: &LocalStack, notification_id: &str, phone: &str) -> ChannelMessage {
    let delivery =
        Delivery::new(notification_id, phone, Channel::Sms, DeliveryStatus::Created, None, chrono::Utc::now());
    deliveries(stack).create(std::slice::from_ref(&delivery)).await.unwrap();
    ChannelMessage {
        notification_id: notification_id.into(),
        notification_type: "otp".into(),
        channel: Channel::Sms,
        content: ContentRef::Inline(ChannelContent { subject: None, body: "code 42".into(), html: None }),
        params: Default::default(),
        recipients: vec![ChannelRecipient {
            delivery_id: delivery.delivery_id,
            user_id: None,
            target: Target::Phone(phone.into()),
        }],
        campaign_id: None,
        attempt: 0,
        transactional: false,
    }
}

async fn send_to_queue(stack: &LocalStack, queue: &str, bodies: Vec<String>) {
    let entries = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body).build().unwrap());
    stack
        .clients
        .sqs()
        .send_message_batch()
        .queue_url(stack.queue_url(queue).unwrap())
        .set_entries(Some(entries.collect()))
        .send()
        .await
        .unwrap();
}

async fn sms_count(stack: &LocalStack, phone: &str) -> usize {
    sent_by_moto(&stack.endpoint).await.sms.iter().filter(|s| s.1 == phone).count()
}

#[tokio::test]
async fn the_same_job_delivered_twice_sends_once() {
    let stack = start_stack().await;
    let phone = "+14155550131";
    let before = sms_count(&stack, phone).await;
    let job = sms_job(&stack, &format!("dup-{}", stack.deployment.stack_name), phone).await;
    let body = serde_json::to_string(&job).unwrap();
    send_to_queue(&stack, "SmsQueue", vec![body.clone(), body]).await;
    wait_for_status(&stack, &job.recipients[0].delivery_id, DeliveryStatus::Sent, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sms_count(&stack, phone).await - before, 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_poison_message_lands_in_the_dead_letter_queue_and_its_batch_is_delivered() {
    let stack = start_stack().await;
    let job = sms_job(&stack, &format!("poison-{}", stack.deployment.stack_name), "+14155550132").await;
    send_to_queue(&stack, "SmsQueue", vec!["{not a job".into(), serde_json::to_string(&job).unwrap()]).await;
    wait_for_status(&stack, &job.recipients[0].delivery_id, DeliveryStatus::Sent, WAIT).await;

    let dlq = stack.queue_url("SmsDeadLetterQueue").unwrap().to_owned();
    let deadline = Instant::now() + WAIT;
    let poison = loop {
        let received = stack.clients.sqs().receive_message().queue_url(&dlq).wait_time_seconds(1).send().await.unwrap();
        if let Some(message) = received.messages.unwrap_or_default().into_iter().next() {
            break message;
        }
        assert!(Instant::now() < deadline, "the poison message never reached the dead-letter queue");
    };
    assert_eq!(poison.body(), Some("{not a job"));
    stack.stop().await;
}

#[tokio::test]
async fn a_provider_throttling_30_percent_of_calls_still_delivers_each_message_once() {
    let proxy =
        ChaosProxy::start(&aws_endpoint(), Fault::Throttle { share: 0.3, matching: "Action=Publish".into() }).await;
    let stack = start_stack_with(|o| o.provider_endpoint = Some(proxy.url.clone())).await;
    let api = Api::new(&stack);
    let phones: Vec<String> = (0..20).map(|i| format!("+1415555{:04}", 200 + i)).collect();
    let before = sent_by_moto(&stack.endpoint).await;
    let recipients: Vec<Value> = phones.iter().map(|p| json!({"phone": p})).collect();
    let id = &api.notify(&json!({"type": "otp", "recipients": recipients, "channels": ["sms"], "content": {"sms": {"body": "hello"}}})).await;
    let answer = wait_for_deliveries(&api, id, WAIT, sent).await;
    let statuses: Vec<&str> =
        answer["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["sent"; 20], "{answer}");
    let after = sent_by_moto(&stack.endpoint).await;
    let count = |snapshot: &herald_e2e::SentByMoto, phone: &str| snapshot.sms.iter().filter(|s| s.1 == phone).count();
    for phone in &phones {
        assert_eq!(count(&after, phone) - count(&before, phone), 1, "{phone}");
    }
    assert!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst) > 0, "no fault was injected");
    stack.stop().await;
}

#[tokio::test]
async fn a_provider_that_is_down_fails_over_to_the_secondary_region() {
    let proxy = ChaosProxy::start(&aws_endpoint(), Fault::RegionDown { region: "us-east-1".into() }).await;
    let stack = start_stack_with(|o| {
        o.provider_endpoint = Some(proxy.url.clone());
        o.worker_environment.insert("SECONDARY_PROVIDER_REGION".into(), "us-west-2".into());
    })
    .await;
    let api = Api::new(&stack);
    let recipients: Vec<Value> = (0..3).map(|i| json!({"phone": format!("+1415555{:04}", 300 + i)})).collect();
    let id = &api.notify(&json!({"type": "otp", "recipients": recipients, "channels": ["sms"], "content": {"sms": {"body": "hello"}}})).await;
    let answer = wait_for_deliveries(&api, id, WAIT, sent).await;
    for d in answer["deliveries"].as_array().unwrap() {
        assert_eq!(d["status"], "sent", "{answer}");
        assert_eq!(d["provider"], "sns-sms@us-west-2", "{answer}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn sends_past_the_per_user_rate_limit_end_rate_limited_unsent() {
    let stack = start_stack_with(|o| {
        o.worker_environment.insert("RATE_LIMIT_PER_USER".into(), "2/3600".into());
    })
    .await;
    let api = Api::new(&stack);
    let phone = "+14155550141";
    api.put("/v1/users/rl", &json!({"phone": phone})).await;
    let before = sms_count(&stack, phone).await;
    let mut statuses = Vec::new();
    for n in 0..3 {
        let id = api
            .notify(&json!({"type": "otp", "recipients": [{"user_id": "rl"}], "channels": ["sms"],
                "content": {"sms": {"body": format!("code {n}")}}}))
            .await;
        let settled = |d: &Value| !matches!(d["status"].as_str(), Some("created" | "pending"));
        let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
        statuses.push(answer["deliveries"][0]["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["sent", "sent", "rate_limited"]);
    assert_eq!(sms_count(&stack, phone).await - before, 2);
    stack.stop().await;
}
