//! The events and segments API over real HTTP: recording behaviour events, saving
//! segments, importing a static segment from a file, and reading members. (Dynamic
//! memberships appear through the segmenter and are tested with it.)

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use herald_core::keys::Scope;
use herald_e2e::{Answer, Api, assert_problem, key_with, start_stack};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn event(event_id: &str, user_id: &str, name: &str) -> Value {
    json!({"event_id": event_id, "user_id": user_id, "name": name, "timestamp": Utc::now().to_rfc3339()})
}

/// Reads every page of a segment's members, `limit` at a time; returns the ids in page
/// order and how many pages it took.
async fn all_members(api: &Api, segment_id: &str, limit: u32) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/segments/{segment_id}/members?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        let user_ids = page.body["user_ids"].as_array().unwrap();
        assert!(user_ids.len() <= limit as usize, "a page holds at most limit ids: {}", page.body);
        ids.extend(user_ids.iter().map(|v| v.as_str().unwrap().to_owned()));
        match page.body.get("next_cursor") {
            None => return (ids, pages),
            Some(next) => cursor = Some(next.as_str().unwrap().to_owned()),
        }
        assert!(pages < 1000, "the cursors never end");
    }
}

fn sorted(ids: &[String]) -> Vec<String> {
    ids.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

async fn create_static(api: &Api, segment_id: &str, user_ids: &[String]) -> Answer {
    let body = json!({"segment_id": segment_id, "name": segment_id, "kind": "static", "user_ids": user_ids});
    let answer = api.post("/v1/segments", &body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    answer
}

#[tokio::test]
async fn posted_events_are_counted_once_and_a_repeated_batch_counts_none() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let batch =
        json!({"events": [event("e1", "u1", "order"), event("e2", "u1", "order"), event("e3", "u2", "app_open")]});
    let first = api.post("/v1/events", &batch).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.body, json!({"counted": 3, "duplicates": 0}));
    let again = api.post("/v1/events", &batch).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body, json!({"counted": 0, "duplicates": 3}));
    stack.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_bad_event_is_refused_whole_naming_the_field_and_counts_nothing() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let mut events: Vec<Value> = (0..4).map(|i| event(&format!("e{i}"), "u1", "order")).collect();
    events[3]["timestamp"] = (Utc::now() - Duration::days(100)).to_rfc3339().into();
    let refused = api.post("/v1/events", &json!({"events": events})).await;
    assert_problem(&refused, StatusCode::BAD_REQUEST);
    assert_eq!(refused.fields_at_fault(), ["events[3].timestamp"]);

    events[3]["timestamp"] = Utc::now().to_rfc3339().into();
    let fixed = api.post("/v1/events", &json!({"events": events})).await;
    assert_eq!(fixed.status, StatusCode::ACCEPTED, "{}", fixed.body);
    assert_eq!(fixed.body, json!({"counted": 4, "duplicates": 0}), "the refused batch counted something");
    stack.stop().await;
}

#[tokio::test]
async fn an_event_of_the_wrong_shape_is_400_naming_its_path() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let mut unknown = event("e2", "u1", "order");
    unknown["colour"] = "red".into();
    let answer = api.post("/v1/events", &json!({"events": [event("e1", "u1", "order"), unknown]})).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(answer.fields_at_fault(), ["events[1].colour"]);

    let mut not_a_date = event("e2", "u1", "order");
    not_a_date["timestamp"] = "yesterday".into();
    let answer = api.post("/v1/events", &json!({"events": [event("e1", "u1", "order"), not_a_date]})).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(answer.fields_at_fault(), ["events[1].timestamp"]);
    stack.stop().await;
}

#[tokio::test]
async fn a_batch_of_more_than_500_events_is_400() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let events: Vec<Value> = (0..501).map(|i| event(&format!("e{i}"), "u1", "order")).collect();
    let answer = api.post("/v1/events", &json!({"events": events})).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(answer.fields_at_fault(), ["events"]);
    stack.stop().await;
}

#[tokio::test]
async fn an_events_body_over_256_kib_is_accepted_up_to_1_mib_and_413_beyond() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    // 40 counted properties of 20 characters each: ~1 KiB an event. One user: moto's
    // TransactWriteItems is not safe under concurrency, and the store writes several
    // users' transactions concurrently.
    let properties: serde_json::Map<String, Value> =
        (0..40).map(|p| (format!("property_{p:02}"), Value::from(format!("{p:020}")))).collect();
    let batch = |count: usize| {
        let events: Vec<Value> = (0..count)
            .map(|i| {
                let mut e = event(&format!("e{i}"), "u1", "order");
                e["properties"] = Value::Object(properties.clone());
                e
            })
            .collect();
        serde_json::to_vec(&json!({"events": events})).unwrap()
    };
    let within = batch(300);
    assert!(within.len() > 256 * 1024 && within.len() < 1024 * 1024, "{}", within.len());
    let accepted = api.send(Method::POST, "/v1/events", Some(within)).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    assert_eq!(accepted.body["counted"], 300);

    let mut over = batch(300);
    let padding = b" ".repeat(1024 * 1024 + 1 - over.len());
    over.extend(padding);
    assert_eq!(over.len(), 1024 * 1024 + 1);
    assert_problem(&api.send(Method::POST, "/v1/events", Some(over)).await, StatusCode::PAYLOAD_TOO_LARGE);
    stack.stop().await;
}

#[tokio::test]
async fn creating_a_dynamic_segment_answers_202_backfilling_with_its_location() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let rule = json!({"all": [
        {"attribute": "plan", "any_of": ["pro", "team"]},
        {"event": "order", "count": {"gt": 2}, "window": {"last_days": 2}}
    ]});
    let body = json!({"name": "VIP buyers", "kind": "dynamic", "rule": rule});
    let created = api.post("/v1/segments", &body).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let segment = &created.body;
    let id = segment["segment_id"].as_str().unwrap();
    assert_eq!(created.headers["location"], format!("/v1/segments/{id}").as_str());
    assert_eq!(segment["kind"], "dynamic");
    assert_eq!(segment["state"], "backfilling");
    assert_eq!(segment["version"], 1);
    assert_eq!(segment["rule"], rule);
    assert_eq!(segment["reads"]["attributes"], json!(["plan"]));
    assert_eq!(segment["reads"]["events"], json!(["order"]));
    let read = api.get(&format!("/v1/segments/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["name"], "VIP buyers");
    stack.stop().await;
}

#[tokio::test]
async fn an_invalid_rule_is_400_naming_every_node_at_fault() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let rule = json!({"all": [
        {"attribute": "plan", "any_of": []},
        {"event": "order", "count": {"gt": 2}, "window": {"last_days": 400}}
    ]});
    let answer = api.post("/v1/segments", &json!({"name": "Broken", "kind": "dynamic", "rule": rule})).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    let mut fields = answer.fields_at_fault();
    fields.sort();
    assert_eq!(fields, ["rule.all[0].any_of", "rule.all[1].window.last_days"]);
    assert_eq!(api.get("/v1/segments").await.body, json!({"segments": []}), "a refused segment was saved");
    stack.stop().await;
}

#[tokio::test]
async fn an_unknown_segment_field_is_400_naming_it() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let answer = api.post("/v1/segments", &json!({"name": "x", "kind": "static", "members": ["u1"]})).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(answer.fields_at_fault(), ["members"]);
    let answer = api.post("/v1/segments", &json!({"name": "x", "kind": "static", "user_ids": ["u1", 2]})).await;
    assert_eq!(answer.fields_at_fault(), ["user_ids[1]"]);
    stack.stop().await;
}

#[tokio::test]
async fn a_segment_reads_lists_replaces_and_deletes() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let created = create_static(&api, "beta", &["u1".into(), "u2".into()]).await;
    assert_eq!(created.headers["location"], "/v1/segments/beta");
    assert_eq!(created.body["kind"], "static");
    assert_eq!(created.body["state"], "ready");

    let read = api.get("/v1/segments/beta").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, created.body);
    let listed = api.get("/v1/segments").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body, json!({"segments": [created.body]}));

    let replaced = api
        .put("/v1/segments/beta", &json!({"name": "Beta testers", "kind": "static", "user_ids": ["u2", "u3"]}))
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["name"], "Beta testers");
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(api.get("/v1/segments/beta").await.body, replaced.body);
    assert_eq!(sorted(&all_members(&api, "beta", 100).await.0), ["u2", "u3"]);

    let rule = json!({"has": "email"});
    let kind_change = api.put("/v1/segments/beta", &json!({"name": "Beta", "kind": "dynamic", "rule": rule})).await;
    assert_problem(&kind_change, StatusCode::CONFLICT);

    assert_eq!(api.delete("/v1/segments/beta").await.status, StatusCode::NO_CONTENT);
    assert_problem(&api.get("/v1/segments/beta").await, StatusCode::NOT_FOUND);
    // A repeated delete is answered as the first (its cleanup runs again); the id stays
    // taken, so rows still being removed never join a new segment.
    assert_eq!(api.delete("/v1/segments/beta").await.status, StatusCode::NO_CONTENT);
    let again = api.post("/v1/segments", &json!({"segment_id": "beta", "name": "Beta", "kind": "static"})).await;
    assert_problem(&again, StatusCode::CONFLICT);
    assert_problem(&api.delete("/v1/segments/never").await, StatusCode::NOT_FOUND);
    assert_problem(&api.get("/v1/segments/beta/members").await, StatusCode::NOT_FOUND);
    let absent = api.put("/v1/segments/beta", &json!({"name": "Beta", "kind": "static"})).await;
    assert_problem(&absent, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/v1/segments").await.body, json!({"segments": []}));
    stack.stop().await;
}

#[tokio::test]
async fn the_segment_id_user_is_refused_as_the_key_of_users_records() {
    let stack = start_stack().await;
    let api = Api::new(&stack);

    let answer = api.post("/v1/segments", &json!({"segment_id": "user", "name": "Users", "kind": "static"})).await;

    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(answer.fields_at_fault(), ["segment_id"]);
    assert_eq!(api.get("/v1/segments/user").await.status, StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn a_taken_segment_id_is_409() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    create_static(&api, "taken", &["u1".into()]).await;
    let again = api.post("/v1/segments", &json!({"segment_id": "taken", "name": "Other", "kind": "static"})).await;
    assert_problem(&again, StatusCode::CONFLICT);
    assert_eq!(api.get("/v1/segments/taken").await.body["name"], "taken");
    stack.stop().await;
}

#[tokio::test]
async fn a_static_segment_lists_exactly_its_members_over_chained_pages() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let ids: Vec<String> = (0..37).map(|i| format!("user-{i:03}")).collect();
    create_static(&api, "many", &ids).await;
    let (members, pages) = all_members(&api, "many", 5).await;
    assert!(pages >= 8, "37 members at 5 a page took {pages} pages");
    assert_eq!(members.len(), ids.len(), "a member was listed twice or missed: {members:?}");
    assert_eq!(sorted(&members), ids);
    let (in_one, pages) = all_members(&api, "many", 1000).await;
    assert_eq!(pages, 1);
    assert_eq!(sorted(&in_one), ids);
    stack.stop().await;
}

#[tokio::test]
async fn a_bad_members_limit_or_cursor_is_400_naming_it() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    create_static(&api, "s", &["u1".into()]).await;
    for limit in ["0", "1001", "ten", "-1"] {
        let answer = api.get(&format!("/v1/segments/s/members?limit={limit}")).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert_eq!(answer.fields_at_fault(), ["limit"], "{limit}");
    }
    for cursor in ["not-a-cursor", "eyJ9", ""] {
        let answer = api.get(&format!("/v1/segments/s/members?cursor={cursor}")).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert_eq!(answer.fields_at_fault(), ["cursor"], "{cursor:?}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn an_imported_csv_segment_has_exactly_the_listed_members() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let file = "\u{feff}User.UserId\r\nana@example.com\r\n\r\nben-42\r\n  chloe  \r\n\r\nana@example.com\r\n\r\n";
    let answer = api
        .send_as(
            Method::POST,
            "/v1/segments?name=Spring%20list&segment_id=spring",
            "text/csv; charset=utf-8",
            Some(file.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.headers["location"], "/v1/segments/spring");
    assert_eq!(answer.body["name"], "Spring list");
    assert_eq!(answer.body["kind"], "static");
    assert_eq!(answer.body["state"], "ready");
    let (members, _) = all_members(&api, "spring", 100).await;
    assert_eq!(sorted(&members), ["ana@example.com", "ben-42", "chloe"]);
    assert_eq!(members.len(), 3);
    stack.stop().await;
}

#[tokio::test]
async fn an_imported_file_of_several_columns_takes_the_ids_from_the_named_column() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let file = "ChannelType,Address,User.UserId\nEMAIL,ana@example.com,ana\nSMS,+14155552671,\"ben,42\"\n";
    let answer =
        api.send_as(Method::POST, "/v1/segments?name=Export", "text/csv", Some(file.as_bytes().to_vec())).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let id = answer.body["segment_id"].as_str().unwrap();
    assert_eq!(sorted(&all_members(&api, id, 100).await.0), ["ana", "ben,42"]);
    stack.stop().await;
}

#[tokio::test]
async fn an_imported_file_with_bad_ids_is_400_naming_their_lines_and_creates_nothing() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let too_long = "x".repeat(129);
    let file = format!("user_id\nok-1\nbad/id\n\n{too_long}\nok-2\n");
    let answer = api.send_as(Method::POST, "/v1/segments?name=Bad", "text/plain", Some(file.into_bytes())).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(answer.fields_at_fault(), ["line 3", "line 5"]);

    let unnamed = api.send_as(Method::POST, "/v1/segments", "text/plain", Some(b"u1\n".to_vec())).await;
    assert_problem(&unnamed, StatusCode::BAD_REQUEST);
    assert_eq!(unnamed.fields_at_fault(), ["name"]);
    let other = api.send_as(Method::POST, "/v1/segments?name=x", "application/xml", Some(b"<u/>".to_vec())).await;
    assert_problem(&other, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api.get("/v1/segments").await.body, json!({"segments": []}));
    stack.stop().await;
}

#[tokio::test]
async fn a_users_segments_list_the_static_segments_they_are_in() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    create_static(&api, "first", &["ana@example.com".into(), "ben".into()]).await;
    create_static(&api, "second", &["ben".into()]).await;
    let answer = api.get("/v1/users/ana%40example.com/segments").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, json!({"user_id": "ana@example.com", "segment_ids": ["first"]}));
    let ben = api.get("/v1/users/ben/segments").await;
    assert_eq!(ben.body["segment_ids"], json!(["first", "second"]));
    let nobody = api.get("/v1/users/nobody/segments").await;
    assert_eq!(nobody.body, json!({"user_id": "nobody", "segment_ids": []}));
    stack.stop().await;
}

#[tokio::test]
async fn a_key_without_the_events_or_segments_scope_is_403() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    create_static(&api, "s", &["u1".into()]).await;
    let reader = api.with_key(Some(&key_with(&stack, [Scope::SegmentsRead]).await));
    let batch = json!({"events": [event("e1", "u1", "order")]});
    assert_problem(&reader.post("/v1/events", &batch).await, StatusCode::FORBIDDEN);
    let body = json!({"name": "x", "kind": "static"});
    assert_problem(&reader.post("/v1/segments", &body).await, StatusCode::FORBIDDEN);
    assert_problem(&reader.put("/v1/segments/s", &body).await, StatusCode::FORBIDDEN);
    assert_problem(&reader.delete("/v1/segments/s").await, StatusCode::FORBIDDEN);
    assert_eq!(reader.get("/v1/segments/s/members").await.status, StatusCode::OK);
    assert_eq!(reader.get("/v1/users/u1/segments").await.status, StatusCode::OK);

    let profiles = api.with_key(Some(&key_with(&stack, [Scope::ProfilesRead, Scope::ProfilesWrite]).await));
    assert_problem(&profiles.get("/v1/segments").await, StatusCode::FORBIDDEN);
    assert_problem(&profiles.get("/v1/users/u1/segments").await, StatusCode::FORBIDDEN);
    assert_problem(&profiles.post("/v1/events", &batch).await, StatusCode::FORBIDDEN);

    let producer = api.with_key(Some(&key_with(&stack, [Scope::EventsWrite]).await));
    assert_eq!(producer.post("/v1/events", &batch).await.status, StatusCode::ACCEPTED);
    assert_problem(&producer.get("/v1/segments").await, StatusCode::FORBIDDEN);
    assert_eq!(api.get("/v1/segments").await.body["segments"].as_array().unwrap().len(), 1);
    stack.stop().await;
}
