//! The sample events in events/ are real API Gateway v2 payloads: fed to the handler in
//! order, they create, read and erase a user and fetch the OpenAPI document.

use herald_api::App;
use herald_e2e::start_stack_with_key;
use herald_local::repo_root;

/// The key the sample events carry in their Authorization header.
const SAMPLE_KEY: &str = "hk_sample_events_key";

#[tokio::test]
async fn every_sample_event_gets_its_expected_answer() {
    let stack = start_stack_with_key(Some(SAMPLE_KEY.into())).await;
    let app = App::from_aws(&stack.clients, &stack.api_config);
    let expectations = [
        ("api-put-user.json", 201),
        ("api-get-user.json", 200),
        ("api-delete-user.json", 204),
        ("api-get-user.json", 404),
        ("api-get-openapi.json", 200),
    ];
    for (file, status) in expectations {
        let text = std::fs::read_to_string(repo_root().join("events").join(file)).unwrap();
        let request =
            lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file} is not an API Gateway event: {e}"));
        let response = app.handle(request).await;
        assert_eq!(response.status().as_u16(), status, "{file}: {:?}", response.body());
    }
    stack.stop().await;
}

#[test]
fn every_sample_event_is_tested() {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("api-"))
        .collect();
    files.sort();
    assert_eq!(files, ["api-delete-user.json", "api-get-openapi.json", "api-get-user.json", "api-put-user.json"]);
}
