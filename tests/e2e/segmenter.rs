//! Dynamic segments on the local stack: profile changes and behaviour events reach the
//! segmenter through the bus and its queue, and memberships follow within moments.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::{Duration as Days, Utc};
use herald_core::{
    activity::Activity,
    profiles::Profile,
    segments::rules::{Rule, Subject},
};
use herald_e2e::{Api, EventCapture, start_stack, start_stack_with};
use herald_local::{LocalStack, esm::SqsHandler as _};
use serde_json::{Value, json};

/// How long something that should happen may take on a loaded CI machine.
const WAIT: Duration = Duration::from_secs(60);
/// How long to watch for something that should not happen.
const QUIET: Duration = Duration::from_secs(3);

async fn eventually<F: Future<Output = bool>>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a dynamic segment and waits until its backfill is done.
async fn ready_segment(api: &Api, id: &str, rule: Value, timeout: Duration) {
    let answer =
        api.post("/v1/segments", &json!({"segment_id": id, "name": id, "kind": "dynamic", "rule": rule})).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    eventually(&format!("segment {id} is ready"), timeout, || async {
        api.get(&format!("/v1/segments/{id}")).await.body["state"] == "ready"
    })
    .await;
}

async fn segments_of(api: &Api, user_id: &str) -> Vec<String> {
    let answer = api.get(&format!("/v1/users/{user_id}/segments")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    serde_json::from_value(answer.body["segment_ids"].clone()).unwrap()
}

async fn all_members(api: &Api, segment_id: &str) -> Vec<String> {
    let mut members = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/segments/{segment_id}/members?limit=1000&cursor={c}"),
            None => format!("/v1/segments/{segment_id}/members?limit=1000"),
        };
        let answer = api.get(&path).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        members.extend(answer.body["user_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return members,
        }
    }
}

/// The membership events among what the capture collected: (type, segment, user).
fn memberships(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|e| e["detail-type"].as_str().is_some_and(|t| t.starts_with("segment.") && t != "segment.job"))
        .map(|e| {
            let field = |name: &str| e["detail"][name].as_str().unwrap().to_owned();
            (e["detail-type"].as_str().unwrap().to_owned(), field("segment_id"), field("user_id"))
        })
        .collect()
}

async fn wait_for_memberships(capture: &EventCapture, count: usize) -> Vec<(String, String, String)> {
    collect_memberships(capture, count, WAIT).await
}

/// The membership events that arrive while watching for `QUIET`: none is expected.
async fn unexpected_memberships(capture: &EventCapture) -> Vec<(String, String, String)> {
    collect_memberships(capture, 1, QUIET).await
}

async fn collect_memberships(capture: &EventCapture, count: usize, timeout: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + timeout;
    let mut found = Vec::new();
    while found.len() < count && Instant::now() < deadline {
        found.extend(memberships(&capture.collect(1, Duration::from_secs(1)).await));
    }
    found
}

fn entered(segment: &str, user: &str) -> (String, String, String) {
    ("segment.entered".into(), segment.into(), user.into())
}

fn exited(segment: &str, user: &str) -> (String, String, String) {
    ("segment.exited".into(), segment.into(), user.into())
}

#[tokio::test]
async fn a_matching_profile_enters_and_leaves_when_changed_back() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let rule = json!({"all": [{"attribute": "org", "any_of": ["ABC"]}, {"attribute": "tag", "any_of": ["vip"]}]});
    ready_segment(&api, "abc-vip", rule, WAIT).await;
    let capture = EventCapture::attach(&stack).await;

    api.put("/v1/users/u1", &json!({"attributes": {"org": ["ABC"], "tag": ["vip", "beta"]}})).await;
    eventually("u1 is a member", WAIT, || async { segments_of(&api, "u1").await == ["abc-vip"] }).await;
    assert_eq!(all_members(&api, "abc-vip").await, ["u1"]);
    assert_eq!(wait_for_memberships(&capture, 1).await, [entered("abc-vip", "u1")]);

    api.put("/v1/users/u1", &json!({"attributes": {"tag": ["beta"]}})).await;
    eventually("u1 left", WAIT, || async { segments_of(&api, "u1").await.is_empty() }).await;
    assert!(all_members(&api, "abc-vip").await.is_empty());
    assert_eq!(wait_for_memberships(&capture, 1).await, [exited("abc-vip", "u1")]);
    stack.stop().await;
}

#[tokio::test]
async fn the_third_order_over_yesterday_and_today_enters_the_segment() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let rule = json!({"event": "order", "window": {"last_days": 2}, "count": {"gt": 2}});
    ready_segment(&api, "frequent-buyers", rule, WAIT).await;
    api.put("/v1/users/buyer", &json!({"email": "buyer@example.com"})).await;
    let capture = EventCapture::attach(&stack).await;

    let now = Utc::now();
    let order = |id: &str, at: chrono::DateTime<Utc>| json!({"event_id": id, "user_id": "buyer", "name": "order", "timestamp": at, "properties": {"total": 12.5}});
    let post = |events: Vec<Value>| {
        let api = &api;
        async move {
            let answer = api.post("/v1/events", &json!({"events": events})).await;
            assert_eq!(answer.status, 202, "{:?}", answer.body);
        }
    };
    // Two days ago is outside "yesterday and today"; the same order sent twice counts once.
    post(vec![order("o0", now - Days::days(2)), order("o1", now - Days::days(1))]).await;
    post(vec![order("o2", now), order("o2", now)]).await;
    post(vec![order("o1", now - Days::days(1))]).await;
    assert!(unexpected_memberships(&capture).await.is_empty(), "two orders are not more than two");
    assert!(segments_of(&api, "buyer").await.is_empty());

    post(vec![order("o3", now)]).await;
    assert_eq!(wait_for_memberships(&capture, 1).await, [entered("frequent-buyers", "buyer")]);
    assert_eq!(segments_of(&api, "buyer").await, ["frequent-buyers"]);
    stack.stop().await;
}

#[tokio::test]
async fn tag_1_never_matches_tag_11() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    // One user exists before the segment (found by the backfill), one after (the segmenter).
    api.put("/v1/users/eleven", &json!({"attributes": {"tag": ["11", "111"]}})).await;
    ready_segment(&api, "tag-1", json!({"attribute": "tag", "any_of": ["1"]}), WAIT).await;
    api.put("/v1/users/eleven-too", &json!({"attributes": {"tag": ["11"]}})).await;
    api.put("/v1/users/one", &json!({"attributes": {"tag": ["1"]}})).await;

    eventually("one is a member", WAIT, || async { segments_of(&api, "one").await == ["tag-1"] }).await;
    assert_eq!(all_members(&api, "tag-1").await, ["one"]);
    assert!(segments_of(&api, "eleven").await.is_empty());
    assert!(segments_of(&api, "eleven-too").await.is_empty());
    stack.stop().await;
}

/// Profiles written straight to the table, as a bulk load would: no profile.changed, so
/// only the backfill can find their members.
async fn write_profiles(stack: &LocalStack, profiles: &[Profile]) {
    let table = &stack.api_config.profiles_table;
    let items = profiles.iter().map(|p| serde_dynamo::to_item(p).unwrap()).collect();
    herald_aws::dynamo::batch::put_all(&stack.clients.dynamodb(), table, items, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn a_backfill_over_10000_profiles_matches_a_direct_evaluation() {
    // A moto of its own: ten thousand profiles would slow the shared one for every other
    // test running beside this one.
    let stack = start_stack_with(|options| options.endpoint = None).await;
    let api = Api::new(&stack);
    let profiles: Vec<Profile> = (0..10_000)
        .map(|i| {
            let mut profile = Profile::new(format!("user-{i:05}"));
            profile.version = 1;
            profile.attributes.insert("plan".into(), [["free", "pro", "team"][i % 3].to_owned()].into());
            profile.attributes.insert("age".into(), [(18 + i % 50).to_string()].into());
            if i % 4 == 0 {
                profile.email = Some(format!("user{i}@example.com"));
            }
            profile
        })
        .collect();
    write_profiles(&stack, &profiles).await;

    let rule = json!({"any": [
        {"attribute": "plan", "any_of": ["pro"]},
        {"all": [{"attribute": "age", "gte": 50}, {"has": "email"}]}
    ]});
    let parsed = Rule::parse(&rule).unwrap();
    let activity = Activity::default();
    let expected: BTreeSet<String> = profiles
        .iter()
        .filter(|p| parsed.evaluate(&Subject { profile: Some(p), activity: &activity, today: Utc::now().date_naive() }))
        .map(|p| p.user_id.clone())
        .collect();
    assert!(expected.len() > 3000, "the rule picks a good share: {}", expected.len());

    ready_segment(&api, "pro-or-senior", rule, Duration::from_secs(240)).await;
    let members = all_members(&api, "pro-or-senior").await;
    let found: BTreeSet<String> = members.iter().cloned().collect();
    assert_eq!(found.len(), members.len(), "no member is listed twice");
    assert_eq!(found, expected);
    let segment = api.get("/v1/segments/pro-or-senior").await.body;
    assert_eq!(segment["backfill"]["profiles_scanned"], 10_000);
    stack.stop().await;
}

/// A queue message carrying `detail` as the bus would deliver it.
fn bus_message(id: &str, detail_type: &str, detail: Value) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.to_owned());
    message.body = Some(json!({"source": "herald", "detail-type": detail_type, "detail": detail}).to_string());
    message
}

#[tokio::test]
async fn an_imported_slice_past_the_deadline_is_handed_on_through_the_queue_and_evaluated_later() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    ready_segment(&api, "handed-gold", json!({"attribute": "tier", "any_of": ["gold"]}), WAIT).await;
    let users: Vec<String> = (0..600).map(|i| format!("handed-{i:04}")).collect();
    let profiles: Vec<Profile> = users
        .iter()
        .map(|user_id| {
            let mut profile = Profile::new(user_id.clone());
            profile.version = 1;
            profile.attributes.insert("tier".into(), ["gold".to_owned()].into());
            profile
        })
        .collect();
    write_profiles(&stack, &profiles).await;
    let slice = json!({"job_id": "imp_handed", "user_ids": users, "changed_attributes": ["tier"],
        "changed_fields": [], "everything": false});
    // An invocation that is as good as out of time evaluates none of it and hands it on.
    let invocation = herald_local::esm::Invocation { deadline: Some(Instant::now() + Duration::from_secs(1)) };
    let segmenter = stack.segmenter().expect("the stack runs the segmenter");
    let retry = segmenter.handle_batch(&[bus_message("m1", "profiles.imported", slice)], invocation).await;
    assert!(retry.is_empty());
    // The queue's next invocations evaluate every user of the slice (the profiles were
    // written without events: nothing else would).
    eventually("the handed-on users are members", WAIT, || async {
        all_members(&api, "handed-gold").await.len() == users.len()
    })
    .await;
    let members: BTreeSet<String> = all_members(&api, "handed-gold").await.into_iter().collect();
    assert_eq!(members, users.iter().cloned().collect());
    stack.stop().await;
}

#[tokio::test]
async fn redelivered_and_out_of_order_changes_leave_membership_right() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    ready_segment(&api, "gold", json!({"attribute": "tier", "any_of": ["gold"]}), WAIT).await;
    let capture = EventCapture::attach(&stack).await;

    api.put("/v1/users/u3", &json!({"attributes": {"tier": ["gold"]}})).await;
    assert_eq!(wait_for_memberships(&capture, 1).await, [entered("gold", "u3")]);
    api.put("/v1/users/u3", &json!({"attributes": {"tier": ["silver"]}})).await;
    assert_eq!(wait_for_memberships(&capture, 1).await, [exited("gold", "u3")]);

    // The first change arrives again, late and twice: the segmenter reads the profile as
    // it is now, so nothing moves.
    let stale = json!({"user_id": "u3", "version": 1, "changed_attributes": ["tier"], "changed_fields": [],
        "created": true, "erased": false});
    let mut event = SqsEvent::default();
    event.records =
        vec![bus_message("m1", "profile.changed", stale.clone()), bus_message("m2", "profile.changed", stale)];
    let segmenter = stack.segmenter().expect("the stack runs the segmenter");
    assert!(segmenter.handle(event.clone()).await.batch_item_failures.is_empty());
    assert!(segmenter.handle(event).await.batch_item_failures.is_empty());

    assert!(segments_of(&api, "u3").await.is_empty());
    assert!(all_members(&api, "gold").await.is_empty());
    assert!(unexpected_memberships(&capture).await.is_empty(), "no event for a change that changed nothing");
    stack.stop().await;
}

#[tokio::test]
async fn an_erased_profile_leaves_its_segments() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    ready_segment(&api, "has-email", json!({"has": "email"}), WAIT).await;
    let capture = EventCapture::attach(&stack).await;
    api.put("/v1/users/gone", &json!({"email": "gone@example.com"})).await;
    assert_eq!(wait_for_memberships(&capture, 1).await, [entered("has-email", "gone")]);

    assert_eq!(api.delete("/v1/users/gone").await.status, 204);
    assert_eq!(wait_for_memberships(&capture, 1).await, [exited("has-email", "gone")]);
    assert!(all_members(&api, "has-email").await.is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn the_daily_sweep_lets_members_leave_as_time_passes() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let capture = EventCapture::attach(&stack).await;
    // "Signed up within the last 3 days": a member whose sign-up is older only leaves when
    // the sweep re-evaluates, since nothing about the profile changes.
    let rule = json!({"attribute": "signed_up", "within_last_days": 3});
    let old = (Utc::now() - Days::days(10)).format("%Y-%m-%d").to_string();
    let recent = Utc::now().format("%Y-%m-%d").to_string();
    // Written straight to the table: only the backfill finds this member, silently.
    let mut profile = Profile::new("new");
    profile.version = 1;
    profile.attributes.insert("signed_up".into(), [recent].into());
    write_profiles(&stack, &[profile]).await;
    ready_segment(&api, "new-users", rule, WAIT).await;
    assert_eq!(all_members(&api, "new-users").await, ["new"]);

    // Backdate the member straight in the table (no event), as the passing of days would.
    let mut profile = Profile::new("new");
    profile.version = 2;
    profile.attributes.insert("signed_up".into(), [old].into());
    write_profiles(&stack, &[profile]).await;
    stack.fire_schedule("SegmentSweepSchedule").await.unwrap();

    assert_eq!(wait_for_memberships(&capture, 1).await, [exited("new-users", "new")]);
    assert!(all_members(&api, "new-users").await.is_empty());
    assert!(segments_of(&api, "new").await.is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn concurrent_changes_to_one_user_end_with_the_latest_state() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    ready_segment(&api, "gold", json!({"attribute": "tier", "any_of": ["gold"]}), WAIT).await;
    let segmenter = stack.segmenter().expect("the stack runs the segmenter");
    let change = json!({"user_id": "racer", "version": 1, "changed_attributes": ["tier"], "changed_fields": [],
        "created": false, "erased": false});

    // Twenty writes race each other, and direct segmenter invocations race the stack's
    // own poller for the same user.
    let writes = (0..20).map(|i| {
        let api = &api;
        async move {
            let tier = if i % 2 == 0 { "gold" } else { "silver" };
            api.put("/v1/users/racer", &json!({"attributes": {"tier": [tier]}})).await;
        }
    });
    let invocations = (0..8).map(|i| {
        let mut event = SqsEvent::default();
        event.records = vec![bus_message(&format!("race-{i}"), "profile.changed", change.clone())];
        async move { assert!(segmenter.handle(event).await.batch_item_failures.is_empty()) }
    });
    tokio::join!(futures_util::future::join_all(writes), futures_util::future::join_all(invocations));

    let tier = api.get("/v1/users/racer").await.body["attributes"]["tier"][0].as_str().unwrap().to_owned();
    let expected: Vec<String> = if tier == "gold" { vec!["gold".into()] } else { vec![] };
    eventually("membership follows the last write", WAIT, || async { segments_of(&api, "racer").await == expected })
        .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(segments_of(&api, "racer").await, expected, "and stays so");
    let rows: Vec<String> = if tier == "gold" { vec!["racer".into()] } else { vec![] };
    assert_eq!(all_members(&api, "gold").await, rows, "the members rows agree with the user's record");
    stack.stop().await;
}

/// A stack whose PutEvents `down` refuses while set (behind the proxy that does it), with
/// a ready segment `gold` of the tier `gold`.
async fn stack_with_a_bus_switch() -> (Arc<AtomicBool>, herald_e2e::chaos::ChaosProxy, LocalStack) {
    use herald_e2e::chaos::{ChaosProxy, Fault};

    let down = Arc::new(AtomicBool::new(false));
    let fault = Fault::Outage { target: "AWSEvents.PutEvents".into(), on: down.clone() };
    let proxy = ChaosProxy::start(&herald_e2e::aws_endpoint(), fault).await;
    let stack = start_stack_with(|o| o.endpoint = Some(proxy.url.clone())).await;
    ready_segment(&Api::new(&stack), "gold", json!({"attribute": "tier", "any_of": ["gold"]}), WAIT).await;
    (down, proxy, stack)
}

/// PutEvents refused for 20 s while 200 profiles change: every change waits in its
/// profile's outbox, reaches the segmenter once the bus is back, and memberships end
/// exactly right.
#[tokio::test]
async fn profile_changes_during_a_20_s_bus_outage_reach_the_segmenter_after_it() {
    let (down, proxy, stack) = stack_with_a_bus_switch().await;
    let api = Api::new(&stack);

    down.store(true, Ordering::SeqCst);
    let outage = Instant::now();
    let mut gold = Vec::new();
    for i in 0..200 {
        let user_id = format!("u{i:03}");
        let tier = if i % 2 == 0 { "gold" } else { "silver" };
        let answer = api.put(&format!("/v1/users/{user_id}"), &json!({"attributes": {"tier": [tier]}})).await;
        assert!(answer.status == 201, "a profile write does not wait for the bus: {:?}", answer.body);
        if tier == "gold" {
            gold.push(user_id);
        }
    }
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed())).await;
    assert!(all_members(&api, "gold").await.is_empty(), "nothing reached the segmenter while the bus was down");
    assert!(proxy.injected.load(Ordering::SeqCst) > 0, "the relay tried the bus and was refused");
    down.store(false, Ordering::SeqCst);

    eventually("every gold profile is a member", WAIT, || async { all_members(&api, "gold").await.len() >= 100 }).await;
    tokio::time::sleep(QUIET).await;
    let mut members = all_members(&api, "gold").await;
    members.sort();
    assert_eq!(members, gold);
    stack.stop().await;
}

/// PutEvents refused while the segmenter moves 20 users into a segment: it writes their
/// memberships at once (it publishes nothing itself), and every `segment.entered` reaches
/// the bus once it is back, from the membership records' outboxes, each once.
#[tokio::test]
async fn entered_events_written_during_a_bus_outage_reach_the_bus_after_it() {
    let (down, proxy, stack) = stack_with_a_bus_switch().await;
    let api = Api::new(&stack);
    let capture = EventCapture::attach(&stack).await;

    down.store(true, Ordering::SeqCst);
    let users: Vec<String> = (0..20).map(|i| format!("g{i:02}")).collect();
    for user_id in &users {
        let answer = api.put(&format!("/v1/users/{user_id}"), &json!({"attributes": {"tier": ["gold"]}})).await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    // Their changes, as the segmenter's queue would hand them over.
    let mut event = SqsEvent::default();
    event.records = users
        .iter()
        .map(|user_id| {
            let change = json!({"user_id": user_id, "version": 1, "changed_attributes": ["tier"],
                "changed_fields": [], "created": true, "erased": false});
            bus_message(&format!("m-{user_id}"), "profile.changed", change)
        })
        .collect();
    let answer = stack.segmenter().expect("the stack runs the segmenter").handle(event).await;
    assert!(answer.batch_item_failures.is_empty(), "the segmenter does not wait for the bus");
    let mut members = all_members(&api, "gold").await;
    members.sort();
    assert_eq!(members, users);
    assert!(unexpected_memberships(&capture).await.is_empty(), "nothing is published while the bus is down");
    assert!(proxy.injected.load(Ordering::SeqCst) > 0, "the relay tried the bus and was refused");
    down.store(false, Ordering::SeqCst);

    let mut published = wait_for_memberships(&capture, users.len()).await;
    published.extend(unexpected_memberships(&capture).await);
    published.sort();
    let expected: Vec<_> = users.iter().map(|user_id| entered("gold", user_id)).collect();
    assert_eq!(published, expected, "each entered once");
    stack.stop().await;
}
