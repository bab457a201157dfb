//! A campaign larger than any invocation can send: members on a channel paced to 3 sends
//! a second per invocation, workers stopped at their template `Timeout` (10 s), so an
//! invocation sends 24 at most (400 and 2,000 members, both in `scripts/bench paced`).
//! Each invocation claims only what it can send before its deadline and hands the rest
//! on, so every member gets exactly one email, none is left `interrupted`, and the
//! campaign ends `done` with counters that add up.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use herald_core::delivery::{DeliveryStatus, DeliveryStore};
use herald_e2e::{Api, aws_endpoint, deliveries, sent_by_moto, start_stack_with};
use serde_json::json;

/// 3 sends a second per invocation over the channel's 5 concurrent invocations.
const SENDS_PER_SECOND: &str = "15";

/// Timing-bound: on moto shared with the whole suite, the store calls around a message's
/// sends take longer than the 2 s an invocation keeps for them, so it runs in
/// `scripts/bench paced`, on a moto of its own.
#[tokio::test]
#[ignore = "timing-bound: run by scripts/bench paced"]
async fn a_paced_campaign_of_400_sends_each_member_once_within_the_workers_timeouts() {
    paced_campaign(400).await;
}

/// The full size: over two minutes of sends, so a benchmark (`scripts/bench paced`).
#[tokio::test]
#[ignore = "slow: run by scripts/bench paced"]
async fn a_paced_campaign_of_2000_sends_each_member_once_within_the_workers_timeouts() {
    paced_campaign(2_000).await;
}

async fn paced_campaign(members: usize) {
    let stack = start_stack_with(|o| {
        o.worker_environment.insert("SENDS_PER_SECOND".into(), SENDS_PER_SECOND.into());
    })
    .await;
    let api = Api::new(&stack);
    let domain = format!("{}.example.com", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let ids: Vec<String> = (0..members).map(|i| format!("paced{i:05}")).collect();
    let mut csv = String::from("user_id,email\n");
    for id in &ids {
        csv.push_str(&format!("{id},{id}@{domain}\n"));
    }
    let bucket = stack.physical_names()["ImportsBucket"].clone();
    let put = stack.clients.s3().put_object().bucket(&bucket).key("imports/paced.csv").body(csv.into_bytes().into());
    put.send().await.unwrap();
    eventually("the audience is imported", Duration::from_secs(300), async || {
        let answer = api.get("/v1/imports").await;
        answer.body["imports"].as_array().is_some_and(|jobs| jobs.iter().any(|j| j["state"] == "done"))
    })
    .await;
    let segment = json!({"segment_id": "everyone", "name": "everyone", "kind": "static", "user_ids": ids});
    assert!(api.post("/v1/segments", &segment).await.status.is_success());
    let template = json!({"channels": {"email": {"subject": "Paced", "body": "One at a time."}}});
    assert!(api.put("/v1/templates/paced", &template).await.status.is_success());
    let campaign = json!({"name": "paced", "segment_id": "everyone", "template_id": "paced", "channels": ["email"]});
    let created = api.post("/v1/campaigns", &campaign).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let campaign_id = created.body["campaign_id"].as_str().unwrap().to_owned();

    let path = format!("/v1/campaigns/{campaign_id}");
    eventually("the campaign is done", Duration::from_secs(900), async || api.get(&path).await.body["state"] == "done")
        .await;
    let mut emails: BTreeMap<String, usize> = BTreeMap::new();
    for (_, to, _, _) in sent_by_moto(&aws_endpoint()).await.emails {
        for address in to.into_iter().filter(|a| a.ends_with(&domain)) {
            *emails.entry(address).or_insert(0) += 1;
        }
    }
    assert_eq!(emails.len(), members, "every member got an email");
    assert!(emails.values().all(|n| *n == 1), "nobody got two: {:?}", emails.iter().find(|(_, n)| **n > 1));
    let listed = deliveries(&stack).list(&campaign_id).await.unwrap();
    assert_eq!(listed.len(), members);
    let unsent: Vec<_> = listed.iter().filter(|d| d.status != DeliveryStatus::Sent).collect();
    assert!(unsent.is_empty(), "none interrupted or failed: {:?}", unsent.first().map(|d| &d.history));
    let counters = &api.get(&path).await.body["counters"];
    let members = members as u64;
    assert_eq!((counters["targeted"].as_u64(), counters["queued"].as_u64()), (Some(members), Some(members)));
    assert_eq!((counters["sent"].as_u64(), counters["failed"].as_u64()), (Some(members), Some(0)));
    stack.stop().await;
}

async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
