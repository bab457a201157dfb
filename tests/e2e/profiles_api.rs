//! The profiles API over real HTTP, as a producer uses it.

use herald_e2e::{Api, start_stack};
use reqwest::StatusCode;
use serde_json::json;

const APNS_TOKEN: &str = "7c5e6b1a9f0d4e3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b";
const FCM_TOKEN: &str = "fGx1ZmQ5cTJ0YTRsbzNtZw:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx_ZnFwqXk8jLkQw";

#[tokio::test]
async fn a_profile_with_every_contact_kind_reads_back_as_written() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let body = json!({
        "attributes": {"tags": ["1", "2"], "plan": ["pro"]},
        "email": "ana@example.com",
        "phone": "+1 415 555 2671",
        "timezone": "Europe/Paris",
        "device_tokens": [{"token": APNS_TOKEN, "platform": "apns"}, {"token": FCM_TOKEN, "platform": "fcm"}],
        "external_channels": [{"platform": "slack", "url": "https://hooks.slack.com/services/T0/B0/X", "enabled": true}]
    });
    let created = api.put("/v1/users/ana", &body).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let read = api.get("/v1/users/ana").await;
    assert_eq!(read.status, StatusCode::OK);
    let profile = read.body;
    assert_eq!(profile["user_id"], "ana");
    assert_eq!(profile["version"], 1);
    assert_eq!(profile["attributes"], json!({"plan": ["pro"], "tags": ["1", "2"]}));
    assert_eq!(profile["email"], "ana@example.com");
    assert_eq!(profile["phone"], "+14155552671");
    assert_eq!(profile["timezone"], "Europe/Paris");
    assert_eq!(profile["device_tokens"], body["device_tokens"]);
    assert_eq!(profile["external_channels"], body["external_channels"]);
    stack.stop().await;
}

#[tokio::test]
async fn an_update_merges_into_the_stored_profile() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put(
        "/v1/users/u1",
        &json!({"attributes": {"plan": ["free"], "tags": ["1"]}, "email": "a@example.com", "phone": "+14155552671"}),
    )
    .await;
    let updated = api.put("/v1/users/u1", &json!({"attributes": {"plan": ["pro"]}, "phone": null})).await;
    assert_eq!(updated.status, StatusCode::OK);
    let profile = api.get("/v1/users/u1").await.body;
    assert_eq!(profile["attributes"], json!({"plan": ["pro"], "tags": ["1"]}));
    assert_eq!(profile["email"], "a@example.com");
    assert!(profile.get("phone").is_none(), "{profile}");
    assert_eq!(profile["version"], 2);
    stack.stop().await;
}

#[tokio::test]
async fn a_write_that_changes_nothing_keeps_the_version() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let body = json!({"attributes": {"tags": ["1", "2"]}, "email": "a@example.com"});
    api.put("/v1/users/u1", &body).await;
    let again = api.put("/v1/users/u1", &json!({"attributes": {"tags": ["2", "1"]}, "email": "a@example.com"})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["version"], 1);
    stack.stop().await;
}

#[tokio::test]
async fn concurrent_updates_to_one_profile_are_all_kept() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/busy", &json!({})).await;
    let writers = 8;
    let updates = (0..writers).map(|i| {
        let api = api.clone();
        tokio::spawn(async move {
            api.put("/v1/users/busy", &json!({"attributes": {format!("a{i}"): [i.to_string()]}})).await
        })
    });
    for update in updates {
        assert_eq!(update.await.unwrap().status, StatusCode::OK);
    }
    let profile = api.get("/v1/users/busy").await.body;
    let names: Vec<&String> = profile["attributes"].as_object().unwrap().keys().collect();
    assert_eq!(names.len(), writers, "{profile}");
    assert_eq!(profile["version"], 1 + writers);
    stack.stop().await;
}

#[tokio::test]
async fn delete_erases_the_profile_and_a_new_one_continues_its_versions() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/gone", &json!({"email": "gone@example.com", "attributes": {"a": ["1"]}})).await;
    assert_eq!(api.delete("/v1/users/gone").await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v1/users/gone").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.delete("/v1/users/gone").await.status, StatusCode::NOT_FOUND);

    let item = stack
        .clients
        .dynamodb()
        .get_item()
        .table_name(&stack.api_config.profiles_table)
        .key("user_id", aws_sdk_dynamodb::types::AttributeValue::S("gone".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut kept: Vec<&str> = item.keys().map(String::as_str).collect();
    kept.sort();
    assert_eq!(kept, ["erased", "outbox", "user_id", "version"], "only a tombstone remains");
    // The erasure's event, which names nothing the profile held.
    let outbox: herald_core::events::Outbox = serde_dynamo::from_attribute_value(item["outbox"].clone()).unwrap();
    let detail: serde_json::Value = serde_json::from_str(&outbox.events[0].detail).unwrap();
    assert_eq!(
        detail,
        json!({"user_id": "gone", "version": 2, "changed_attributes": [], "changed_fields": [], "created": false, "erased": true})
    );

    let recreated = api.put("/v1/users/gone", &json!({"email": "back@example.com"})).await;
    assert_eq!(recreated.status, StatusCode::CREATED);
    assert_eq!(recreated.body["version"], 3);
    assert!(recreated.body["attributes"].as_object().unwrap().is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn user_ids_may_hold_url_escaped_characters() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    assert_eq!(api.put("/v1/users/ana%40example.com", &json!({})).await.status, StatusCode::CREATED);
    assert_eq!(api.get("/v1/users/ana%40example.com").await.body["user_id"], "ana@example.com");
    stack.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let stack = start_stack().await;
    let answer = Api::new(&stack).get("/v1/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["openapi"], "3.1.0");
    for (path, methods) in herald_api::route_table() {
        for method in methods {
            let operation = &answer.body["paths"][path][method.as_str().to_lowercase()];
            assert!(operation.is_object(), "{method} {path} is not documented");
        }
    }
    stack.stop().await;
}
