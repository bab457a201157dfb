//! The API's edge as the local stack plays it from the template: route throttling.

use herald_e2e::{Api, start_stack_with};
use herald_local::repo_root;
use reqwest::StatusCode;
use serde_json::json;

/// The template with the API's throttling defaults replaced: a burst of 2 and a rate so
/// low that no token comes back during the test.
fn template_with_burst_of_two() -> std::path::PathBuf {
    let template = std::fs::read_to_string(repo_root().join("infra/template.yaml")).unwrap();
    let throttled = template
        .replacen(
            "  ApiThrottlingRateLimit:\n    Type: Number\n    Default: 100\n",
            "  ApiThrottlingRateLimit:\n    Type: Number\n    Default: 0.001\n",
            1,
        )
        .replacen(
            "  ApiThrottlingBurstLimit:\n    Type: Number\n    Default: 200\n",
            "  ApiThrottlingBurstLimit:\n    Type: Number\n    Default: 2\n",
            1,
        );
    assert_eq!(throttled.matches("Default: 0.001\n").count() + throttled.matches("Default: 2\n").count(), 2);
    let path = std::env::temp_dir().join(format!("herald-throttled-{}.yaml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, throttled).unwrap();
    path
}

#[tokio::test]
async fn requests_over_the_templates_burst_are_429_from_the_gateway_and_reach_no_function() {
    let template = template_with_burst_of_two();
    let stack = start_stack_with(|options| options.template = template.clone()).await;
    std::fs::remove_file(template).unwrap();
    let api = Api::new(&stack);
    assert_eq!(api.get("/v1/users/u1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/v1/users/u1").await.status, StatusCode::NOT_FOUND);
    let refused = api.put("/v1/users/u1", &json!({"email": "a@example.com"})).await;
    assert_eq!(
        (refused.status, &refused.body),
        (StatusCode::TOO_MANY_REQUESTS, &json!({"message": "Too Many Requests"}))
    );
    let profiles =
        stack.clients.dynamodb().scan().table_name(&stack.api_config.profiles_table).send().await.unwrap().count;
    assert_eq!(profiles, 0, "the refused PUT reached the function");
    stack.stop().await;
}
