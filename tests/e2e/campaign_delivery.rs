//! Campaign jobs as the dispatcher queues them, straight onto a channel queue with no
//! delivery recorded before: the worker's claim records each delivery, sends it once,
//! adds the message's outcomes to the campaign's counters once, puts a failing recipient
//! back on the queue alone, and sends nothing for a cancelled campaign. A count a worker
//! lost is recounted by the reconciler, which settles the campaign.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response};
use herald_aws::DynamoCampaignStore;
use herald_core::{
    campaigns::{Campaign, CampaignCounters, CampaignState, CampaignStore, SettleCheck},
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelRecipient, ContentRef, DeliveryStatus, DeliveryStore, Target, delivery_id,
        rendering::ChannelContent,
    },
    segments::MEMBER_SHARDS,
};
use herald_e2e::{Api, aws_endpoint, deliveries, sent_by_moto, start_stack, start_stack_with, wait_for_status};
use herald_local::LocalStack;

const WAIT: Duration = Duration::from_secs(90);

fn campaigns(stack: &LocalStack) -> DynamoCampaignStore {
    DynamoCampaignStore::new(stack.clients.dynamodb(), &stack.api_config.jobs_table)
}

/// A campaign in `state`, recorded as the API would.
async fn create_campaign(stack: &LocalStack, state: CampaignState) -> String {
    let campaign_id = format!("c_{}", stack.deployment.stack_name);
    let campaign = Campaign {
        state,
        ..Campaign::new(&campaign_id, "spring sale", "s1", "spring", 1, vec![Channel::Sms], chrono::Utc::now())
    };
    assert!(campaigns(stack).create(&campaign).await.unwrap());
    campaign_id
}

/// A campaign's job for `phones` (user `u<phone>` each), as the dispatcher makes them.
fn campaign_job(campaign_id: &str, phones: &[String]) -> ChannelMessage {
    ChannelMessage {
        notification_id: campaign_id.into(),
        notification_type: "spring_sale".into(),
        channel: Channel::Sms,
        content: ContentRef::Inline(ChannelContent { subject: None, body: "Spring sale".into(), html: None }),
        params: Default::default(),
        recipients: phones
            .iter()
            .map(|phone| {
                let user = format!("u{phone}");
                ChannelRecipient {
                    delivery_id: delivery_id(campaign_id, &user, Channel::Sms),
                    user_id: Some(user),
                    target: Target::Phone(phone.clone()),
                }
            })
            .collect(),
        campaign_id: Some(campaign_id.into()),
        attempt: 0,
        transactional: false,
    }
}

fn phones(first: u32, count: u32) -> Vec<String> {
    (first..first + count).map(|i| format!("+1415555{i:04}")).collect()
}

async fn send_to_sms_queue(stack: &LocalStack, bodies: Vec<String>) {
    let entries = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body).build().unwrap());
    stack
        .clients
        .sqs()
        .send_message_batch()
        .queue_url(stack.queue_url("SmsQueue").unwrap())
        .set_entries(Some(entries.collect()))
        .send()
        .await
        .unwrap();
}

/// Messages moto sent to each of `phones`.
async fn sms_counts(stack: &LocalStack, phones: &[String]) -> BTreeMap<String, usize> {
    let sent = sent_by_moto(&stack.endpoint).await;
    phones.iter().map(|p| (p.clone(), sent.sms.iter().filter(|s| &s.1 == p).count())).collect()
}

fn once_each(phones: &[String]) -> BTreeMap<String, usize> {
    phones.iter().map(|p| (p.clone(), 1)).collect()
}

async fn counters(stack: &LocalStack, campaign_id: &str) -> CampaignCounters {
    campaigns(stack).get(campaign_id).await.unwrap().expect("the campaign exists").counters
}

/// Polls the campaign's counters until `done` holds, or fails the test.
async fn wait_for_counters(
    stack: &LocalStack,
    campaign_id: &str,
    done: impl Fn(&CampaignCounters) -> bool,
) -> CampaignCounters {
    let deadline = Instant::now() + WAIT;
    loop {
        let counters = counters(stack, campaign_id).await;
        if done(&counters) {
            return counters;
        }
        assert!(Instant::now() < deadline, "the counters never got there: {counters:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_campaign_job_delivers_each_recipient_once_and_its_counters_add_up() {
    let stack = start_stack().await;
    let campaign_id = create_campaign(&stack, CampaignState::Sending).await;
    let phones = phones(600, 12);
    let job = campaign_job(&campaign_id, &phones);
    send_to_sms_queue(&stack, vec![serde_json::to_string(&job).unwrap()]).await;

    let counters = wait_for_counters(&stack, &campaign_id, |c| c.sent == 12).await;
    assert_eq!(counters, CampaignCounters { sent: 12, ..Default::default() });
    assert_eq!(sms_counts(&stack, &phones).await, once_each(&phones));
    // The deliveries the claims recorded are listed under the campaign, as a
    // notification's are.
    let answer = Api::new(&stack).get(&format!("/v1/notifications/{campaign_id}")).await;
    let listed = answer.body["deliveries"].as_array().unwrap();
    assert_eq!(listed.len(), 12, "{}", answer.body);
    for d in listed {
        assert_eq!(d["status"], "sent", "{d}");
        assert_eq!(d["channel"], "sms", "{d}");
        assert!(d["recipient"].as_str().unwrap().starts_with("u+1415555"), "{d}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_same_campaign_message_delivered_twice_sends_and_counts_each_recipient_once() {
    let stack = start_stack().await;
    let campaign_id = create_campaign(&stack, CampaignState::Sending).await;
    let phones = phones(620, 5);
    let body = serde_json::to_string(&campaign_job(&campaign_id, &phones)).unwrap();
    // Twice in one batch, then once more after it settled.
    send_to_sms_queue(&stack, vec![body.clone(), body.clone()]).await;
    wait_for_counters(&stack, &campaign_id, |c| c.sent == 5).await;
    send_to_sms_queue(&stack, vec![body]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    assert_eq!(counters(&stack, &campaign_id).await, CampaignCounters { sent: 5, ..Default::default() });
    assert_eq!(sms_counts(&stack, &phones).await, once_each(&phones));
    stack.stop().await;
}

#[tokio::test]
async fn a_failing_recipient_is_queued_again_alone_and_counted_once_it_is_sent() {
    let phones = phones(630, 4);
    let blocked = phones[1].clone();
    let proxy = BlockingProxy::start(&aws_endpoint(), blocked.trim_start_matches('+')).await;
    let stack = start_stack_with(|o| o.provider_endpoint = Some(proxy.url.clone())).await;
    let campaign_id = create_campaign(&stack, CampaignState::Sending).await;
    let job = campaign_job(&campaign_id, &phones);
    let blocked_delivery = job.recipients[1].delivery_id.clone();
    send_to_sms_queue(&stack, vec![serde_json::to_string(&job).unwrap()]).await;

    // The first attempt sends the others and records the blocked one as failed for now.
    wait_for_counters(&stack, &campaign_id, |c| c.sent == 3).await;
    wait_for_status(&stack, &blocked_delivery, DeliveryStatus::Error, WAIT).await;
    assert!(proxy.injected.load(Ordering::SeqCst) > 0, "no fault was injected");
    proxy.blocking.store(false, Ordering::SeqCst);

    // Its retry, queued on its own, sends it alone.
    wait_for_status(&stack, &blocked_delivery, DeliveryStatus::Sent, WAIT).await;
    let counters = wait_for_counters(&stack, &campaign_id, |c| c.sent == 4).await;
    assert_eq!(counters, CampaignCounters { sent: 4, ..Default::default() });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sms_counts(&stack, &phones).await, once_each(&phones));
    let history: Vec<DeliveryStatus> =
        deliveries(&stack).get(&blocked_delivery).await.unwrap().unwrap().history.iter().map(|c| c.status).collect();
    use DeliveryStatus::*;
    assert_eq!(history, [Created, Pending, Error, Pending, Sent]);
    for other in job.recipients.iter().filter(|r| r.delivery_id != blocked_delivery) {
        let history: Vec<DeliveryStatus> = deliveries(&stack)
            .get(&other.delivery_id)
            .await
            .unwrap()
            .unwrap()
            .history
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(history, [Created, Pending, Sent], "{}", other.delivery_id);
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_cancelled_campaigns_job_sends_nothing_and_counts_its_recipients_skipped() {
    let stack = start_stack().await;
    let campaign_id = create_campaign(&stack, CampaignState::Cancelled).await;
    let phones = phones(640, 6);
    send_to_sms_queue(&stack, vec![serde_json::to_string(&campaign_job(&campaign_id, &phones)).unwrap()]).await;

    let counters = wait_for_counters(&stack, &campaign_id, |c| c.skipped_cancelled > 0).await;
    assert_eq!(counters, CampaignCounters { skipped_cancelled: 6, ..Default::default() });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sms_counts(&stack, &phones).await, phones.iter().map(|p| (p.clone(), 0)).collect());
    assert!(deliveries(&stack).list(&campaign_id).await.unwrap().is_empty(), "nothing is settled");
    stack.stop().await;
}

#[tokio::test]
async fn a_count_a_worker_lost_is_recounted_and_the_campaign_settled_with_counts_that_add_up() {
    let stack = start_stack_with(|o| {
        o.dispatcher_environment.insert("SETTLE_CHECK_SECONDS".into(), "1".into());
    })
    .await;
    let campaign_id = format!("c_{}", stack.deployment.stack_name);
    let phones = phones(650, 5);
    // Fanned out: every shard read, five deliveries queued.
    let campaign = Campaign {
        state: CampaignState::Sending,
        shards_done: MEMBER_SHARDS,
        counters: CampaignCounters { targeted: 5, queued: 5, ..Default::default() },
        ..Campaign::new(&campaign_id, "spring sale", "s1", "spring", 1, vec![Channel::Sms], chrono::Utc::now())
    };
    assert!(campaigns(&stack).create(&campaign).await.unwrap());
    send_to_sms_queue(&stack, vec![serde_json::to_string(&campaign_job(&campaign_id, &phones)).unwrap()]).await;
    wait_for_counters(&stack, &campaign_id, |c| c.sent == 5).await;
    // A worker that died after settling a delivery and before counting it.
    stack
        .clients
        .dynamodb()
        .update_item()
        .table_name(&stack.api_config.jobs_table)
        .key("job_id", aws_sdk_dynamodb::types::AttributeValue::S(campaign_id.clone()))
        .update_expression("ADD counters.sent :minus_one")
        .expression_attribute_values(":minus_one", aws_sdk_dynamodb::types::AttributeValue::N("-1".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(Api::new(&stack).get(&format!("/v1/campaigns/{campaign_id}")).await.body["state"], "sending");

    // The check the last page sends: it waits a check for the counts to stall, recounts.
    let check = serde_json::to_string(&SettleCheck::first(&campaign_id)).unwrap();
    stack
        .clients
        .sqs()
        .send_message()
        .queue_url(stack.queue_url("DispatchQueue").unwrap())
        .message_body(check)
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while campaigns(&stack).get(&campaign_id).await.unwrap().unwrap().state != CampaignState::Done {
        assert!(Instant::now() < deadline, "the campaign was never settled");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let expected = CampaignCounters { targeted: 5, queued: 5, sent: 5, ..Default::default() };
    assert_eq!(counters(&stack, &campaign_id).await, expected);
    let answer = Api::new(&stack).get(&format!("/v1/campaigns/{campaign_id}")).await;
    assert_eq!((answer.body["state"].as_str(), answer.body["counters"]["sent"].as_u64()), (Some("done"), Some(5)));

    // The lost count arrives late after all: it does not push the campaign over.
    let late = CampaignCounters { sent: 1, ..Default::default() };
    assert!(!campaigns(&stack).add_outcomes(&campaign_id, &late).await.unwrap());
    assert_eq!(counters(&stack, &campaign_id).await, expected);
    assert_eq!(sms_counts(&stack, &phones).await, once_each(&phones));
    stack.stop().await;
}

/// A proxy in front of the AWS endpoint that throttles every SNS Publish naming `phone`
/// while `blocking` is set, and forwards everything else.
struct BlockingProxy {
    url: String,
    blocking: Arc<AtomicBool>,
    injected: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    phone: String,
    http: reqwest::Client,
    blocking: Arc<AtomicBool>,
    injected: Arc<AtomicUsize>,
}

impl BlockingProxy {
    async fn start(target: &str, phone: &str) -> Self {
        let state = ProxyState {
            target: target.trim_end_matches('/').to_owned(),
            phone: phone.to_owned(),
            http: reqwest::Client::new(),
            blocking: Arc::new(AtomicBool::new(true)),
            injected: Arc::new(AtomicUsize::new(0)),
        };
        let (blocking, injected) = (state.blocking.clone(), state.injected.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{address}"), blocking, injected }
    }
}

async fn forward(
    State(state): State<ProxyState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let text = String::from_utf8_lossy(&body);
    if state.blocking.load(Ordering::SeqCst) && text.contains("Action=Publish") && text.contains(&state.phone) {
        state.injected.fetch_add(1, Ordering::SeqCst);
        return herald_e2e::chaos::throttled(&path);
    }
    herald_e2e::chaos::forward(&state.http, &state.target, method, &path, &headers, body).await
}
