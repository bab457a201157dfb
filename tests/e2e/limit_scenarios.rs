//! Herald's own batches at AWS's limits, end to end on a local stack that refuses what
//! AWS refuses (scripts/moto_patches.py): big emails to many recipients, a campaign to
//! profiles near their size limit, and an import whose one slice publishes more events
//! than one PutEvents takes.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use herald_aws::{Clients, DynamoCampaignStore, local_sdk_config};
use herald_core::{
    campaigns::CampaignStore,
    profiles::{MAX_PROFILE_BYTES, Profile},
};
use herald_e2e::{Api, EventCapture, aws_endpoint, sent_by_moto, start_stack, start_stack_with, wait_for_deliveries};
use herald_local::LocalStack;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);

/// A domain of this test alone in moto's shared record of sent email.
fn domain() -> String {
    format!("{}.example.com", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Emails moto sent to `domain`'s addresses, by address.
async fn emails_to(domain: &str) -> BTreeMap<String, usize> {
    let mut by_address = BTreeMap::new();
    for (_, to, _, _) in sent_by_moto(&aws_endpoint()).await.emails {
        for address in to.into_iter().filter(|a| a.ends_with(domain)) {
            *by_address.entry(address).or_insert(0) += 1;
        }
    }
    by_address
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_200_kb_email_to_100_recipients_is_delivered_once_to_each() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let domain = domain();
    let html = format!("<p>{}</p>", "Read all about it. ".repeat((200 * 1024_usize).div_ceil(19)));
    assert!(html.len() >= 200 * 1024);
    let recipients: Vec<Value> = (0..100).map(|i| json!({"email": format!("r{i:03}@{domain}")})).collect();

    // Inline, the content rides in every channel message (ten recipients each): ten
    // entries of over 200 KB, more than one PutEvents takes.
    let content = json!({"email": {"subject": "The digest", "body": "The digest", "html": html}});
    let body = json!({"type": "digest", "recipients": recipients, "channels": ["email"], "content": content});
    let id = api.notify(&body).await;
    let answer = wait_for_deliveries(&api, &id, WAIT, |d| d["status"] == "sent").await;

    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 100, "{}", answer["deliveries"]);
    assert!(deliveries.iter().all(|d| d["status"] == "sent"), "{}", answer["deliveries"]);
    let emails = emails_to(&domain).await;
    assert_eq!(emails.len(), 100, "every recipient got the email: {emails:?}");
    assert!(emails.values().all(|n| *n == 1), "nobody got two: {emails:?}");
    stack.stop().await;
}

/// A profile of `user_id` with an email at `domain` and attributes that bring it near
/// `MAX_PROFILE_BYTES`, as the API takes it.
fn near_the_limit(user_id: &str, domain: &str) -> Value {
    let mut profile = Profile::new(user_id);
    profile.email = Some(format!("{user_id}@{domain}"));
    for a in 0..10 {
        let values = (0..60).map(|v| format!("{a:02}{v:02}{}", "x".repeat(96))).collect();
        profile.attributes.insert(format!("note{a}"), values);
    }
    let bytes = profile.stored_bytes();
    assert!(bytes > MAX_PROFILE_BYTES * 9 / 10 && bytes <= MAX_PROFILE_BYTES, "{bytes}");
    json!({"email": profile.email, "attributes": profile.attributes})
}

#[tokio::test]
async fn a_campaign_to_profiles_near_the_size_limit_is_delivered() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let domain = domain();
    // Twenty such profiles: more than one SQS message or PutEvents entry can hold whole.
    let ids: Vec<String> = (0..20).map(|i| format!("big{i:02}")).collect();
    for id in &ids {
        let answer = api.put(&format!("/v1/users/{id}"), &near_the_limit(id, &domain)).await;
        assert!(answer.status.is_success(), "{id}: {:?}", answer.body);
    }
    let segment = json!({"segment_id": "big", "name": "big", "kind": "static", "user_ids": ids});
    assert!(api.post("/v1/segments", &segment).await.status.is_success());
    let template = json!({"channels": {"email": {"subject": "Hello", "body": "Hello", "html": "<p>Hello</p>"}}});
    assert!(api.put("/v1/templates/hello", &template).await.status.is_success());

    let body = json!({"name": "big", "segment_id": "big", "template_id": "hello", "channels": ["email"]});
    let answer = api.post("/v1/campaigns", &body).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.body["campaign_id"].as_str().unwrap().to_owned();
    eventually("the campaign is done", || async {
        api.get(&format!("/v1/campaigns/{id}")).await.body["state"] == "done"
    })
    .await;

    let campaigns = DynamoCampaignStore::new(stack.clients.dynamodb(), &stack.api_config.jobs_table);
    let counters = campaigns.get(&id).await.unwrap().expect("the campaign").counters;
    assert_eq!((counters.targeted, counters.sent, counters.failed), (20, 20, 0));
    let emails = emails_to(&domain).await;
    assert_eq!(emails.len(), 20, "every member got the email");
    assert!(emails.values().all(|n| *n == 1), "nobody got two: {emails:?}");
    stack.stop().await;
}

async fn import_stack() -> LocalStack {
    start_stack_with(|o| {
        o.worker_environment.insert("IMPORT_USERS_PER_SLICE".into(), "10000".into());
    })
    .await
}

#[tokio::test]
async fn an_import_of_one_10000_user_slice_imports_all_and_publishes_every_user_once() {
    let users: usize = 10_000;
    let stack = import_stack().await;
    let capture = EventCapture::attach(&stack).await;
    let api = Api::new(&stack);
    let clients = Clients::new(&local_sdk_config(&aws_endpoint()).await);
    // Ids of 128 characters: the slice's events (1,000 users each) add up to more than
    // one PutEvents takes, so they go in several.
    let ids: Vec<String> = (0..users).map(|i| format!("{i:06}{}", "u".repeat(122))).collect();
    let mut csv = String::from("user_id,attr.plan\n");
    for id in &ids {
        csv.push_str(&format!("{id},pro\n"));
    }
    let bucket = stack.physical_names()["ImportsBucket"].clone();
    let s3 = clients.s3().put_object().bucket(&bucket).key("imports/many.csv").body(csv.into_bytes().into());
    s3.send().await.unwrap();

    let deadline = Instant::now() + WAIT;
    let job = loop {
        let answer = api.get("/v1/imports").await;
        let job = answer.body["imports"].as_array().and_then(|jobs| jobs.first().cloned()).unwrap_or_default();
        if !job.is_null() && job["state"] != "running" {
            break job;
        }
        assert!(Instant::now() < deadline, "the import did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((job["state"].as_str(), job["imported"].as_u64()), (Some("done"), Some(users as u64)), "{job}");

    let expected_events = users.div_ceil(1000);
    let events = capture.collect(expected_events, WAIT).await;
    let imported: Vec<&Value> = events.iter().filter(|e| e["detail-type"] == "profiles.imported").collect();
    assert_eq!(imported.len(), expected_events);
    let mut published: Vec<&str> = imported
        .iter()
        .flat_map(|e| e["detail"]["user_ids"].as_array().unwrap())
        .map(|u| u.as_str().unwrap())
        .collect();
    published.sort_unstable();
    assert_eq!(published, ids.iter().map(String::as_str).collect::<Vec<_>>(), "every user once");
    stack.stop().await;
}
