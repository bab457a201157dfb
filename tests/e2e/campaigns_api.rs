//! The campaigns API over real HTTP: a campaign is refused with the field at fault, stored,
//! and its first pages (one per members shard) sent to the dispatcher's queue; it is read
//! with its counters and progress, cancelled, and guarded by the `campaigns:*` scopes.
//!
//! The stack's own dispatcher polls its DispatchQueue, so the pages the API sends there
//! are seen as the delayed messages of a campaign scheduled later, which no one can receive
//! yet; their bodies are read from a queue of the test's own, which an App configured
//! for it sends them to.

use chrono::{DateTime, Duration, Utc};
use herald_api::{App, Config};
use herald_aws::DynamoCampaignStore;
use herald_core::{
    campaigns::{CampaignCounters, CampaignState, CampaignStore, DispatchPage},
    keys::Scope,
};
use herald_e2e::{Api, assert_problem, key_with, start_stack};
use herald_local::{LocalStack, repo_root};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn store(stack: &LocalStack) -> DynamoCampaignStore {
    DynamoCampaignStore::new(stack.clients.dynamodb(), &stack.api_config.jobs_table)
}

/// A static segment `vip` of two users and a template `spring` with email content.
async fn segment_and_template(api: &Api) {
    let segment = json!({"segment_id": "vip", "name": "VIP", "kind": "static", "user_ids": ["ana", "bo"]});
    let answer = api.post("/v1/segments", &segment).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let template = json!({"channels": {"email": {"subject": "Spring", "body": "Our spring sale starts now."}}});
    let answer = api.put("/v1/templates/spring", &template).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

/// A campaign of `vip` with `spring` by email, due at `send_at`.
fn campaign(campaign_id: &str, send_at: Option<DateTime<Utc>>) -> Value {
    let mut body = json!({
        "campaign_id": campaign_id,
        "name": "Spring sale",
        "segment_id": "vip",
        "template_id": "spring",
        "channels": ["email"],
    });
    if let Some(at) = send_at {
        body["send_at"] = json!(at.to_rfc3339());
    }
    body
}

fn later() -> Option<DateTime<Utc>> {
    Some(Utc::now() + Duration::minutes(30))
}

async fn delayed_messages(stack: &LocalStack, queue: &str) -> String {
    let name = aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed;
    let url = stack.queue_url(queue).unwrap();
    let answer = stack.clients.sqs().get_queue_attributes().queue_url(url).attribute_names(name.clone()).send().await;
    answer.unwrap().attributes.and_then(|mut a| a.remove(&name)).unwrap_or_default()
}

#[tokio::test]
async fn a_campaign_is_accepted_stored_and_its_sixteen_first_pages_queued() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    segment_and_template(&api).await;

    let answer = api.post("/v1/campaigns", &campaign("c_spring", later())).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"campaign_id": "c_spring", "state": "scheduled", "status_url": "/v1/campaigns/c_spring"})
    );
    assert_eq!(answer.headers["location"], "/v1/campaigns/c_spring");
    // Sixteen pages wait for the campaign's time on the stack's dispatch queue.
    assert_eq!(delayed_messages(&stack, "DispatchQueue").await, "16");

    let read = api.get("/v1/campaigns/c_spring").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let view = &read.body;
    assert_eq!((view["state"].as_str(), view["template_version"].as_u64()), (Some("scheduled"), Some(1)));
    assert_eq!((view["name"].as_str(), view["segment_id"].as_str()), (Some("Spring sale"), Some("vip")));
    assert_eq!((view["template_id"].as_str(), &view["channels"]), (Some("spring"), &json!(["email"])));
    assert_eq!(view["progress"], json!({"shards_done": 0, "shards": 16}));
    assert_eq!(view["counters"]["targeted"], 0);

    // The same request again: 202, and its pages sent again (a page is recorded once).
    let send_at = view["send_at"].as_str().map(|t| t.parse().unwrap());
    let again = api.post("/v1/campaigns", &campaign("c_spring", send_at)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["campaign_id"], "c_spring");
    assert_eq!(delayed_messages(&stack, "DispatchQueue").await, "32");
    // Another request under the same id: 409, nothing sent.
    let mut other = campaign("c_spring", later());
    other["name"] = json!("Autumn sale");
    assert_problem(&api.post("/v1/campaigns", &other).await, StatusCode::CONFLICT);
    assert_eq!(delayed_messages(&stack, "DispatchQueue").await, "32");

    // Without an id, one is made.
    let mut unnamed = campaign("x", later());
    unnamed.as_object_mut().unwrap().remove("campaign_id");
    let answer = api.post("/v1/campaigns", &unnamed).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let id = answer.body["campaign_id"].as_str().unwrap();
    assert!(id.starts_with("c_") && id != "c_spring", "{id}");
    assert_eq!(answer.headers["location"].to_str().unwrap(), format!("/v1/campaigns/{id}"));
    stack.stop().await;
}

/// An API Gateway event for `method path` with `body`, after the sample events.
fn gateway_event(method: &str, path: &str, body: &Value, key: &str) -> lambda_http::Request {
    let text = std::fs::read_to_string(repo_root().join("events/api-post-campaign.json")).unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["headers"]["authorization"] = json!(format!("Bearer {key}"));
    event["body"] = json!(body.to_string());
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

#[tokio::test]
async fn the_first_pages_are_one_per_shard_from_its_start_and_due_now() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    segment_and_template(&api).await;
    let sqs = &stack.clients.sqs();
    let name = format!("{}-pages", stack.deployment.stack_name);
    let queue_url = sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
    let config = Config { dispatch_queue_url: queue_url.clone(), ..stack.api_config.clone() };
    let app = App::from_aws(&stack.clients, &config).await.unwrap();

    let response = app.handle(gateway_event("POST", "/v1/campaigns", &campaign("c_now", None), &stack.admin_key)).await;
    assert_eq!(response.status().as_u16(), 202, "{:?}", response.body());
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["state"], "dispatching");

    let mut pages: Vec<DispatchPage> = Vec::new();
    for _ in 0..10 {
        let output =
            sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(0).send().await;
        let messages = output.unwrap().messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        pages.extend(messages.iter().map(|m| serde_json::from_str::<DispatchPage>(m.body().unwrap()).unwrap()));
    }
    pages.sort_by_key(|p| p.shard);
    let expected: Vec<DispatchPage> = (0..16).map(|shard| DispatchPage::first("c_now", shard)).collect();
    assert_eq!(pages, expected);
    stack.stop().await;
}

#[tokio::test]
async fn a_campaign_is_refused_naming_the_field_at_fault() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    segment_and_template(&api).await;
    let fields = async |body: Value| {
        let answer = api.post("/v1/campaigns", &body).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        answer.fields_at_fault()
    };

    let mut body = campaign("c_bad", None);
    body["segment_id"] = json!("nobody");
    assert_eq!(fields(body).await, ["segment_id"]);
    let mut body = campaign("c_bad", None);
    body["template_id"] = json!("autumn");
    assert_eq!(fields(body).await, ["template_id"]);
    let mut body = campaign("c_bad", None);
    body["channels"] = json!(["email", "sms"]);
    assert_eq!(fields(body).await, ["channels"]);
    let mut body = campaign("c_bad", None);
    body["filter"] = json!({"attribute": "plan", "between": ["a"]});
    let faults = fields(body).await;
    assert!(!faults.is_empty() && faults.iter().all(|f| f.starts_with("filter")), "{faults:?}");
    let mut body = campaign("c bad!", None);
    body["name"] = json!("");
    body["channels"] = json!([]);
    assert_eq!(fields(body).await, ["campaign_id", "name", "channels"]);
    let mut body = campaign("c_bad", None);
    body["colour"] = json!("red");
    assert!(!fields(body).await.is_empty(), "unknown fields are refused");

    // Nothing was stored or sent.
    assert_problem(&api.get("/v1/campaigns/c_bad").await, StatusCode::NOT_FOUND);
    assert_eq!(delayed_messages(&stack, "DispatchQueue").await, "0");
    stack.stop().await;
}

#[tokio::test]
async fn a_campaign_shows_its_counters_and_progress() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    segment_and_template(&api).await;
    let answer = api.post("/v1/campaigns", &campaign("c_counted", later())).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);

    // What the dispatcher and the workers would record.
    let store = store(&stack);
    let page = CampaignCounters { targeted: 2, queued: 1, skipped_no_address: 1, ..Default::default() };
    assert_eq!(store.record_page("c_counted", 4, None, None, &page, "m1").await.unwrap(), Some(1));
    let outcomes = CampaignCounters { sent: 1, opened: 1, skipped_cancelled: 0, ..Default::default() };
    store.add_counts("c_counted", &outcomes).await.unwrap();

    let read = api.get("/v1/campaigns/c_counted").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(
        read.body["counters"],
        json!({"targeted": 2, "queued": 1, "sent": 1, "failed": 0, "opened": 1, "clicked": 0, "skipped": {
            "opted_out": 0, "rate_limited": 0, "suppressed": 0, "filtered": 0, "no_address": 1, "cancelled": 0}})
    );
    assert_eq!(read.body["progress"], json!({"shards_done": 1, "shards": 16}));

    // Every queued delivery settled while sending: done.
    assert!(store.set_state("c_counted", CampaignState::Sending, &[CampaignState::Scheduled]).await.unwrap());
    assert_eq!(api.get("/v1/campaigns/c_counted").await.body["state"], "done");
    assert_problem(&api.get("/v1/campaigns/c_unknown").await, StatusCode::NOT_FOUND);
    assert_problem(&api.get("/v1/campaigns/not%20an%20id").await, StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn a_campaign_is_cancelled_once_and_a_done_one_not_at_all() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    segment_and_template(&api).await;
    api.post("/v1/campaigns", &campaign("c_stop", later())).await;

    let answer = api.post("/v1/campaigns/c_stop/cancel", &json!({})).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(
        (answer.body["campaign_id"].as_str(), answer.body["state"].as_str()),
        (Some("c_stop"), Some("cancelled"))
    );
    let again = api.post("/v1/campaigns/c_stop/cancel", &json!({})).await;
    assert_eq!((again.status, again.body["state"].as_str()), (StatusCode::ACCEPTED, Some("cancelled")));
    assert_eq!(api.get("/v1/campaigns/c_stop").await.body["state"], "cancelled");
    assert_eq!(store(&stack).get("c_stop").await.unwrap().unwrap().state, CampaignState::Cancelled);
    assert_problem(&api.post("/v1/campaigns/c_unknown/cancel", &json!({})).await, StatusCode::NOT_FOUND);

    // A campaign whose every delivery settled is done: nothing to cancel.
    api.post("/v1/campaigns", &campaign("c_done", later())).await;
    let store = store(&stack);
    assert!(store.set_state("c_done", CampaignState::Sending, &[CampaignState::Scheduled]).await.unwrap());
    store.add_counts("c_done", &CampaignCounters { queued: 2, sent: 2, ..Default::default() }).await.unwrap();
    assert_problem(&api.post("/v1/campaigns/c_done/cancel", &json!({})).await, StatusCode::CONFLICT);
    assert_eq!(store.get("c_done").await.unwrap().unwrap().state, CampaignState::Sending);
    stack.stop().await;
}

#[tokio::test]
async fn campaigns_need_the_campaigns_scopes() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    segment_and_template(&api).await;
    api.post("/v1/campaigns", &campaign("c_scoped", later())).await;

    let other = api.with_key(Some(&key_with(&stack, [Scope::SegmentsWrite, Scope::TemplatesWrite]).await));
    assert_problem(&other.post("/v1/campaigns", &campaign("c_other", later())).await, StatusCode::FORBIDDEN);
    assert_problem(&other.get("/v1/campaigns/c_scoped").await, StatusCode::FORBIDDEN);
    assert_problem(&other.post("/v1/campaigns/c_scoped/cancel", &json!({})).await, StatusCode::FORBIDDEN);
    assert_problem(&api.with_key(None).get("/v1/campaigns/c_scoped").await, StatusCode::UNAUTHORIZED);

    let reader = api.with_key(Some(&key_with(&stack, [Scope::CampaignsRead]).await));
    assert_eq!(reader.get("/v1/campaigns/c_scoped").await.status, StatusCode::OK);
    assert_problem(&reader.post("/v1/campaigns", &campaign("c_other", later())).await, StatusCode::FORBIDDEN);
    assert_problem(&reader.post("/v1/campaigns/c_scoped/cancel", &json!({})).await, StatusCode::FORBIDDEN);

    let writer = api.with_key(Some(&key_with(&stack, [Scope::CampaignsWrite]).await));
    let answer = writer.post("/v1/campaigns", &campaign("c_written", later())).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(writer.post("/v1/campaigns/c_written/cancel", &json!({})).await.status, StatusCode::ACCEPTED);
    assert_problem(&writer.get("/v1/campaigns/c_written").await, StatusCode::FORBIDDEN);
    stack.stop().await;
}
