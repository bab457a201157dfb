//! Campaigns on the local stack: the API stores a campaign and sends its pages to the
//! dispatcher's queue; the dispatcher fans the segment out onto the channel queues; the
//! workers send, each recipient once, and count what happened.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use herald_aws::{
    Clients, DynamoActivityStore, DynamoCampaignStore, DynamoMembershipStore, DynamoProfileStore, SqsChannelQueues,
    SqsDispatchQueue, local_sdk_config,
};
use herald_core::{
    campaigns::{
        Campaign, CampaignCounters, CampaignStore, DispatchMessage, DispatchPage, DispatchQueue,
        dispatcher::{DispatchOutcome, Dispatcher},
    },
    channel::Channel,
    delivery::{ChannelMessage, ChannelQueues},
    segments::MEMBER_SHARDS,
    store::StoreError,
};
use herald_e2e::{Api, aws_endpoint, sent_by_moto, start_stack_with, tracking_links};
use herald_local::LocalStack;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(300);

struct World {
    stack: LocalStack,
    api: Api,
    clients: Clients,
    /// Makes this test's addresses its own in moto's shared record of sent email.
    domain: String,
}

async fn world() -> World {
    // A settle check every 5 s (the template waits 300): a count lost by a worker stopped
    // at its timeout is recounted within the test's wait. These tests are about fan-out,
    // counts and crashes, not timeouts (paced_campaign.rs is): on moto, slowed by the
    // whole suite, a 50-recipient message can take longer than a worker's 10 s, so the
    // functions get ten times their template's timeouts.
    let stack = start_stack_with(|o| {
        o.dispatcher_environment.insert("SETTLE_CHECK_SECONDS".into(), "5".into());
        o.timeout_scale = 10.0;
    })
    .await;
    let api = Api::new(&stack);
    let clients = Clients::new(&local_sdk_config(&aws_endpoint()).await);
    let domain = format!("{}.example.com", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    World { stack, api, clients, domain }
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl World {
    fn name(&self, logical_id: &str) -> String {
        self.stack.physical_names()[logical_id].clone()
    }

    fn campaigns(&self) -> DynamoCampaignStore {
        DynamoCampaignStore::new(self.clients.dynamodb(), self.name("JobsTable"))
    }

    /// `count` users with an email each (every third on plan `pro`), imported from a CSV,
    /// in a static segment `everyone`; and a template `launch` with email content.
    async fn audience(&self, count: usize) -> Vec<String> {
        let ids: Vec<String> = (0..count).map(|i| format!("cmp{i:05}")).collect();
        let mut csv = String::from("user_id,email,attr.plan\n");
        for (i, id) in ids.iter().enumerate() {
            csv.push_str(&format!("{id},{id}@{},{}\n", self.domain, if i % 3 == 0 { "pro" } else { "free" }));
        }
        let bucket = self.name("ImportsBucket");
        self.clients
            .s3()
            .put_object()
            .bucket(&bucket)
            .key("imports/audience.csv")
            .body(csv.into_bytes().into())
            .send()
            .await
            .unwrap();
        eventually("the audience is imported", || async {
            let answer = self.api.get("/v1/imports").await;
            answer.body["imports"].as_array().is_some_and(|jobs| jobs.iter().any(|j| j["state"] == "done"))
        })
        .await;
        let segment = json!({"segment_id": "everyone", "name": "everyone", "kind": "static", "user_ids": ids});
        let answer = self.api.post("/v1/segments", &segment).await;
        assert!(answer.status.is_success(), "{:?}", answer.body);
        let html = "<p>Come and <a href=\"https://example.com/launch\">see</a>.</p>";
        let template =
            json!({"channels": {"email": {"subject": "We launched", "body": "Come and see.", "html": html}}});
        let answer = self.api.put("/v1/templates/launch", &template).await;
        assert!(answer.status.is_success(), "{:?}", answer.body);
        ids
    }

    /// The body of an email moto sent to `address`.
    async fn html_to(&self, address: &str) -> String {
        let emails = sent_by_moto(&aws_endpoint()).await.emails;
        emails.into_iter().find(|(_, to, _, _)| to.iter().any(|a| a == address)).expect("an email").3
    }

    /// Emails moto sent to this test's addresses, by address.
    async fn emails(&self) -> BTreeMap<String, usize> {
        let mut by_address = BTreeMap::new();
        for (_, to, _, _) in sent_by_moto(&aws_endpoint()).await.emails {
            for address in to.into_iter().filter(|a| a.ends_with(&self.domain)) {
                *by_address.entry(address).or_insert(0) += 1;
            }
        }
        by_address
    }

    async fn counters(&self, campaign_id: &str) -> CampaignCounters {
        self.campaigns().get(campaign_id).await.unwrap().expect("the campaign").counters
    }
}

fn campaign(campaign_id: &str) -> Campaign {
    Campaign::new(campaign_id, "launch", "everyone", "launch", 1, vec![Channel::Email], Utc::now())
}

/// The channel queues, failing from the `fail_at`-th call on: a dispatcher that dies.
struct DyingQueues {
    inner: SqsChannelQueues,
    calls: AtomicUsize,
    fail_at: usize,
}

#[async_trait::async_trait]
impl ChannelQueues for DyingQueues {
    async fn enqueue(&self, jobs: &[ChannelMessage], delay: Duration) -> Result<(), StoreError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_at {
            return Err(StoreError::Transient("the dispatcher died".into()));
        }
        self.inner.enqueue(jobs, delay).await
    }
}

fn first_pages(campaign_id: &str) -> Vec<DispatchPage> {
    (0..MEMBER_SHARDS).map(|shard| DispatchPage::first(campaign_id, shard)).collect()
}

#[tokio::test]
async fn a_campaign_to_5000_members_emails_each_once_despite_a_dispatcher_crash_and_redelivered_pages() {
    let w = world().await;
    w.audience(5000).await;
    w.campaigns().create(&campaign("c_crash")).await.unwrap();
    let channel_queues: BTreeMap<Channel, String> = [
        (Channel::Email, "EmailQueue"),
        (Channel::Sms, "SmsQueue"),
        (Channel::Push, "PushQueue"),
        (Channel::Webhook, "WebhookQueue"),
    ]
    .into_iter()
    .map(|(channel, queue)| (channel, w.stack.queue_url(queue).unwrap().to_owned()))
    .collect();
    let dispatch_queue = w.stack.queue_url("DispatchQueue").unwrap().to_owned();
    let db = || w.clients.dynamodb();
    let dying = Dispatcher::new(
        Arc::new(w.campaigns()),
        Arc::new(DynamoMembershipStore::new(
            db(),
            w.name("MembersTable"),
            w.name("ProfilesTable"),
            w.name("ActivityTable"),
        )),
        Arc::new(DynamoProfileStore::new(db(), w.name("ProfilesTable"))),
        Arc::new(DynamoActivityStore::new(db(), w.name("ActivityTable"))),
        Arc::new(DyingQueues {
            inner: SqsChannelQueues::new(w.clients.sqs(), channel_queues),
            calls: AtomicUsize::new(0),
            fail_at: 6,
        }),
        Arc::new(SqsDispatchQueue::new(w.clients.sqs(), &dispatch_queue)),
    );
    // Five pages go out (their next pages reach the stack's dispatcher), then it dies.
    let pages = first_pages("c_crash");
    let mut died_at = None;
    for (i, page) in pages.iter().enumerate() {
        if dying.run(page, &format!("m{i}"), Utc::now()).await.is_err() {
            died_at = Some(i);
            break;
        }
    }
    assert_eq!(died_at, Some(5), "the sixth page fails");
    // SQS delivers the unfinished pages again, and one finished page a second time.
    let redelivered: Vec<DispatchPage> = pages[4..].to_vec();
    SqsDispatchQueue::new(w.clients.sqs(), &dispatch_queue).dispatch(&redelivered, Duration::ZERO).await.unwrap();

    eventually("5000 emails are sent", || async { w.counters("c_crash").await.sent >= 5000 }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let emails = w.emails().await;
    assert_eq!(emails.len(), 5000, "every member got an email");
    assert!(emails.values().all(|n| *n == 1), "nobody got two: {:?}", emails.iter().find(|(_, n)| **n > 1));
    let counters = w.counters("c_crash").await;
    assert_eq!((counters.targeted, counters.queued, counters.sent, counters.failed), (5000, 5000, 5000, 0));
    let answer = w.api.get("/v1/campaigns/c_crash").await;
    assert_eq!(answer.body["state"], "done", "{:?}", answer.body);
    w.stack.stop().await;
}

async fn create(w: &World, body: Value) -> String {
    let answer = w.api.post("/v1/campaigns", &body).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    answer.body["campaign_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_send_time_filter_skips_the_members_it_excludes_and_counts_them() {
    let w = world().await;
    w.audience(30).await;
    let filter = json!({"attribute": "plan", "any_of": ["pro"]});
    let body = json!({"name": "pros", "segment_id": "everyone", "template_id": "launch", "channels": ["email"], "filter": filter});
    let id = create(&w, body).await;
    eventually("the campaign is done", || async {
        w.api.get(&format!("/v1/campaigns/{id}")).await.body["state"] == "done"
    })
    .await;
    let counters = w.counters(&id).await;
    assert_eq!((counters.targeted, counters.queued, counters.skipped_filtered, counters.sent), (30, 10, 20, 10));
    let emails = w.emails().await;
    assert_eq!(emails.len(), 10);
    assert!(emails.keys().all(|a| a.trim_start_matches("cmp")[..5].parse::<usize>().unwrap() % 3 == 0), "{emails:?}");
    w.stack.stop().await;
}

#[tokio::test]
async fn opens_and_clicks_of_a_campaigns_emails_are_counted_once_each() {
    let w = world().await;
    w.audience(3).await;
    let body = json!({"name": "launch", "segment_id": "everyone", "template_id": "launch", "channels": ["email"]});
    let id = create(&w, body).await;
    eventually("the campaign is done", || async {
        w.api.get(&format!("/v1/campaigns/{id}")).await.body["state"] == "done"
    })
    .await;
    let links = tracking_links(&w.html_to(&format!("cmp00001@{}", w.domain)).await);
    assert_eq!(links.len(), 3, "{links:?}");
    let (click, open) = (&links[0], &links[2]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for link in [open, open, click, click, open] {
        assert!(http.get(link).send().await.unwrap().status().is_success() || link == click);
    }
    let counters = w.counters(&id).await;
    assert_eq!((counters.sent, counters.opened, counters.clicked), (3, 1, 1));
    w.stack.stop().await;
}

#[tokio::test]
async fn a_cancelled_campaign_sends_nothing_more() {
    let w = world().await;
    w.audience(20).await;
    let send_at = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({"name": "later", "segment_id": "everyone", "template_id": "launch", "channels": ["email"], "send_at": send_at});
    let id = create(&w, body).await;
    assert_eq!(w.api.get(&format!("/v1/campaigns/{id}")).await.body["state"], "scheduled");
    let answer = w.api.post(&format!("/v1/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    // Its pages come back (as when the delay ends): the dispatcher sees the cancel.
    let dispatch_queue = w.stack.queue_url("DispatchQueue").unwrap().to_owned();
    SqsDispatchQueue::new(w.clients.sqs(), &dispatch_queue).dispatch(&first_pages(&id), Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(w.api.get(&format!("/v1/campaigns/{id}")).await.body["state"], "cancelled");
    assert_eq!(w.counters(&id).await.queued, 0);
    assert!(w.emails().await.is_empty());
    w.stack.stop().await;
}

/// A page SQS delivers twice (its function stopped before deleting it, after or before
/// marking its next page sent) sends its next page at most once more, and that copy stops
/// at once: no shard's chain forks. The dispatcher runs here, with pages of two members, on
/// a queue of the test's own; the stack's workers send.
#[tokio::test]
async fn pages_sqs_delivers_twice_run_each_shards_chain_once() {
    let w = world().await;
    w.audience(30).await;
    w.campaigns().create(&campaign("c_twice")).await.unwrap();
    let sqs = &w.clients.sqs();
    let queue = sqs.create_queue().queue_name(format!("{}-pages", w.stack.deployment.stack_name)).send().await;
    let queue_url = queue.unwrap().queue_url.unwrap();
    let channel_queues = BTreeMap::from([(Channel::Email, w.stack.queue_url("EmailQueue").unwrap().to_owned())]);
    let db = || w.clients.dynamodb();
    let members =
        DynamoMembershipStore::new(db(), w.name("MembersTable"), w.name("ProfilesTable"), w.name("ActivityTable"));
    let mut dispatcher = Dispatcher::new(
        Arc::new(w.campaigns()),
        Arc::new(members.clone()),
        Arc::new(DynamoProfileStore::new(db(), w.name("ProfilesTable"))),
        Arc::new(DynamoActivityStore::new(db(), w.name("ActivityTable"))),
        Arc::new(SqsChannelQueues::new(sqs.clone(), channel_queues)),
        Arc::new(SqsDispatchQueue::new(sqs.clone(), &queue_url)),
    );
    dispatcher.page_size = 2;
    SqsDispatchQueue::new(sqs.clone(), &queue_url).dispatch(&first_pages("c_twice"), Duration::ZERO).await.unwrap();

    let mut outcomes = Vec::new();
    let mut kept = std::collections::HashSet::new();
    loop {
        let received = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(1);
        let messages = received.send().await.unwrap().messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let (id, receipt) = (message.message_id().unwrap(), message.receipt_handle().unwrap());
            let outcome = match serde_json::from_str(message.body().unwrap()).unwrap() {
                DispatchMessage::Page(page) => {
                    let outcome = dispatcher.run(&page, id, Utc::now()).await.unwrap();
                    let sent_on = matches!(outcome, DispatchOutcome::Dispatched { recorded: true, .. });
                    if sent_on && kept.insert(id.to_owned()) {
                        // Every other one also stopped before marking its next page sent.
                        if kept.len() % 2 == 0 {
                            unmark_followed_up(&w, "c_twice", page.shard).await;
                        }
                        sqs.change_message_visibility()
                            .queue_url(&queue_url)
                            .receipt_handle(receipt)
                            .visibility_timeout(0)
                            .send()
                            .await
                            .unwrap();
                        outcomes.push(outcome);
                        continue;
                    }
                    Some(outcome)
                }
                DispatchMessage::Settle(_) => None,
            };
            outcomes.extend(outcome);
            sqs.delete_message().queue_url(&queue_url).receipt_handle(receipt).send().await.unwrap();
        }
    }

    let mut pages = 0;
    for shard in 0..MEMBER_SHARDS {
        let mut cursor = None;
        loop {
            pages += 1;
            let page =
                herald_core::segments::MembershipStore::members(&members, "everyone", shard, cursor.as_deref(), 2)
                    .await
                    .unwrap();
            let Some(next) = page.next else { break };
            cursor = Some(next);
        }
    }
    let recorded = outcomes.iter().filter(|o| matches!(o, DispatchOutcome::Dispatched { recorded: true, .. })).count();
    assert_eq!(recorded, pages, "each page dispatched once: {outcomes:?}");
    assert!(!outcomes.iter().any(|o| matches!(o, DispatchOutcome::Dispatched { recorded: false, .. })), "{outcomes:?}");
    assert!(kept.len() > 4, "pages delivered twice: {}", kept.len());
    let count = |wanted: DispatchOutcome| outcomes.iter().filter(|o| **o == wanted).count();
    assert_eq!(count(DispatchOutcome::FollowedUp), kept.len() / 2, "the unmarked ones sent their next page again");
    // Each marked one stops at once; each unmarked one's second next page stops at once.
    let duplicates = count(DispatchOutcome::Duplicate);
    assert!((kept.len() - kept.len() / 2..=kept.len()).contains(&duplicates), "{duplicates} of {}", kept.len());

    eventually("30 emails are sent", || async { w.counters("c_twice").await.sent >= 30 }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let emails = w.emails().await;
    assert!(emails.len() == 30 && emails.values().all(|n| *n == 1), "{emails:?}");
    let counters = w.counters("c_twice").await;
    assert_eq!((counters.targeted, counters.queued, counters.sent), (30, 30, 30));
    assert_eq!(w.api.get("/v1/campaigns/c_twice").await.body["state"], "done");
    w.stack.stop().await;
}

/// What a function that stopped before marking a page's record followed up leaves.
async fn unmark_followed_up(w: &World, campaign_id: &str, shard: u32) {
    w.clients
        .dynamodb()
        .update_item()
        .table_name(w.name("JobsTable"))
        .key("job_id", aws_sdk_dynamodb::types::AttributeValue::S(campaign_id.into()))
        .update_expression("SET #page.followed_up = :false")
        .expression_attribute_names("#page", format!("page_{shard}"))
        .expression_attribute_values(":false", aws_sdk_dynamodb::types::AttributeValue::Bool(false))
        .send()
        .await
        .unwrap();
}
