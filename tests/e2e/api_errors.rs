//! Every refused request answers problem+json naming what is wrong, and writes nothing.

use aws_sdk_dynamodb::types::AttributeValue;
use herald_aws::DynamoApiKeyStore;
use herald_core::{
    keys,
    keys::{ApiKeyStore, Scope},
};
use herald_e2e::{Answer, Api, assert_problem, start_stack};
use herald_local::LocalStack;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The profiles table's items, to prove a refused request left it as it was.
async fn profile_items(stack: &LocalStack) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let mut items = stack
        .clients
        .dynamodb()
        .scan()
        .table_name(&stack.api_config.profiles_table)
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    items.sort_by_key(|i| format!("{i:?}"));
    items
}

/// Starts a stack with one stored profile and checks that `request` is refused with
/// `status` and leaves the table as it was.
async fn assert_refused_and_nothing_written(status: StatusCode, request: impl AsyncFnOnce(&Api) -> Answer) -> Answer {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/u1", &json!({"email": "a@example.com", "attributes": {"tags": ["1"]}})).await;
    let before = profile_items(&stack).await;
    let answer = request(&api).await;
    assert_problem(&answer, status);
    assert_eq!(profile_items(&stack).await, before, "a refused request wrote something");
    stack.stop().await;
    answer
}

#[tokio::test]
async fn a_request_without_a_key_is_401() {
    let answer = assert_refused_and_nothing_written(StatusCode::UNAUTHORIZED, async |api: &Api| {
        api.with_key(None).put("/v1/users/u1", &json!({"email": "b@example.com"})).await
    })
    .await;
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn a_request_with_an_unknown_key_is_401() {
    assert_refused_and_nothing_written(StatusCode::UNAUTHORIZED, async |api: &Api| {
        api.with_key(Some("hk_not_a_key")).put("/v1/users/u1", &json!({"email": "b@example.com"})).await
    })
    .await;
}

#[tokio::test]
async fn a_stored_key_past_its_expiry_is_401_and_writes_nothing() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/u1", &json!({"email": "a@example.com"})).await;
    let secret = keys::generate_secret();
    let expired = keys::new_key(&secret, "expired", [Scope::Admin]).expiring_at(chrono::Utc::now());
    DynamoApiKeyStore::new(stack.clients.dynamodb(), &stack.api_config.api_keys_table).put(&expired).await.unwrap();
    let before = profile_items(&stack).await;
    let answer = api.with_key(Some(&secret)).put("/v1/users/u1", &json!({"email": "b@example.com"})).await;
    assert_problem(&answer, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["detail"], "Expired API key");
    assert_eq!(profile_items(&stack).await, before);
    stack.stop().await;
}

#[tokio::test]
async fn a_key_without_the_write_scope_is_403_on_put_and_delete_but_may_read() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/u1", &json!({"email": "a@example.com"})).await;
    let secret = keys::generate_secret();
    DynamoApiKeyStore::new(stack.clients.dynamodb(), &stack.api_config.api_keys_table)
        .put(&keys::new_key(&secret, "reader", [Scope::ProfilesRead]))
        .await
        .unwrap();
    let reader = api.with_key(Some(&secret));
    let before = profile_items(&stack).await;
    assert_problem(&reader.put("/v1/users/u1", &json!({"email": "b@example.com"})).await, StatusCode::FORBIDDEN);
    assert_problem(&reader.delete("/v1/users/u1").await, StatusCode::FORBIDDEN);
    assert_eq!(profile_items(&stack).await, before);
    assert_eq!(reader.get("/v1/users/u1").await.status, StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    assert_refused_and_nothing_written(StatusCode::BAD_REQUEST, async |api: &Api| {
        api.send(Method::PUT, "/v1/users/u1", Some(br#"{"email": "b@example.com""#.to_vec())).await
    })
    .await;
}

#[tokio::test]
async fn a_json_array_as_a_profile_is_400() {
    let answer = assert_refused_and_nothing_written(StatusCode::BAD_REQUEST, async |api: &Api| {
        api.send(Method::PUT, "/v1/users/u1", Some(b"[null, null]".to_vec())).await
    })
    .await;
    assert_eq!(answer.fields_at_fault(), ["body"]);
}

#[tokio::test]
async fn a_wrong_type_is_400_naming_the_field() {
    let answer = assert_refused_and_nothing_written(StatusCode::BAD_REQUEST, async |api: &Api| {
        api.put("/v1/users/u1", &json!({"email": "b@example.com", "attributes": {"tags": [1]}})).await
    })
    .await;
    assert_eq!(answer.fields_at_fault(), ["attributes.tags[0]"]);
}

#[tokio::test]
async fn invalid_contacts_are_400_naming_every_field_at_fault() {
    let answer = assert_refused_and_nothing_written(StatusCode::BAD_REQUEST, async |api: &Api| {
        api.put(
            "/v1/users/u1",
            &json!({
                "email": "not-an-email",
                "phone": "555-0100",
                "device_tokens": [{"token": "short", "platform": "apns"}],
                "external_channels": [{"platform": "slack", "url": "http://hooks.example/x"}]
            }),
        )
        .await
    })
    .await;
    let mut fields = answer.fields_at_fault();
    fields.sort();
    assert_eq!(fields, ["device_tokens[0].token", "email", "external_channels[0].url", "phone"]);
}

#[tokio::test]
async fn an_unknown_field_is_400() {
    assert_refused_and_nothing_written(StatusCode::BAD_REQUEST, async |api: &Api| {
        api.put("/v1/users/u1", &json!({"emial": "b@example.com"})).await
    })
    .await;
}

#[tokio::test]
async fn a_body_over_256_kib_is_413() {
    assert_refused_and_nothing_written(StatusCode::PAYLOAD_TOO_LARGE, async |api: &Api| {
        let big = json!({"attributes": {"notes": vec!["x".repeat(90); 3000]}});
        api.put("/v1/users/u1", &big).await
    })
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    assert_refused_and_nothing_written(StatusCode::UNSUPPORTED_MEDIA_TYPE, async |api: &Api| {
        api.send_as(Method::PUT, "/v1/users/u1", "text/plain", Some(b"email=b@example.com".to_vec())).await
    })
    .await;
}

#[tokio::test]
async fn an_unknown_route_is_404() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    assert_problem(&api.get("/v1/nothing-here").await, StatusCode::NOT_FOUND);
    assert_problem(&api.with_key(None).get("/v2/users/u1").await, StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn a_missing_profile_is_404() {
    let stack = start_stack().await;
    assert_problem(&Api::new(&stack).get("/v1/users/nobody").await, StatusCode::NOT_FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn another_method_on_a_known_route_is_405_with_allow() {
    let stack = start_stack().await;
    let answer = Api::new(&stack).send(Method::POST, "/v1/users/u1", Some(b"{}".to_vec())).await;
    assert_problem(&answer, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["allow"], "GET, PUT, DELETE");
    stack.stop().await;
}

#[tokio::test]
async fn api_keys_are_stored_only_as_sha256_hashes() {
    let stack = start_stack().await;
    let items = stack
        .clients
        .dynamodb()
        .scan()
        .table_name(&stack.api_config.api_keys_table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap();
    assert_eq!(items.len(), 1);
    let item = format!("{:?}", items[0]);
    assert!(!item.contains(&stack.admin_key), "the secret is stored in clear");
    assert_eq!(items[0]["key_hash"], AttributeValue::S(keys::hash_secret(&stack.admin_key)));
    stack.stop().await;
}
