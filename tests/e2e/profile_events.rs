//! profile.changed reaches the bus once per effective change, and never for a no-op.

use std::time::Duration;

use herald_e2e::{Api, EventCapture, start_stack};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn each_effective_change_publishes_one_event_and_a_no_op_none() {
    let stack = start_stack().await;
    let capture = EventCapture::attach(&stack).await;
    let api = Api::new(&stack);

    api.put("/v1/users/u1", &json!({"attributes": {"tags": ["1"]}, "email": "a@example.com"})).await;
    let events = capture.collect(1, WAIT).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "profile.changed");
    assert_eq!(events[0]["source"], "herald");
    assert_eq!(
        events[0]["detail"],
        json!({"user_id": "u1", "version": 1, "changed_attributes": ["tags"], "changed_fields": ["email"], "created": true, "erased": false})
    );

    api.put("/v1/users/u1", &json!({"attributes": {"tags": ["1"]}, "email": "a@example.com"})).await;
    assert!(capture.collect(1, Duration::from_secs(2)).await.is_empty(), "a no-op publishes nothing");

    api.put("/v1/users/u1", &json!({"attributes": {"tags": ["11"]}})).await;
    let events = capture.collect(1, WAIT).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"]["changed_attributes"], json!(["tags"]));
    assert_eq!(events[0]["detail"]["changed_fields"], json!([]));
    assert_eq!(events[0]["detail"]["version"], 2);
    stack.stop().await;
}

#[tokio::test]
async fn erasing_a_profile_publishes_that_it_was_erased_naming_nothing_it_held() {
    let stack = start_stack().await;
    let capture = EventCapture::attach(&stack).await;
    let api = Api::new(&stack);
    api.put("/v1/users/u1", &json!({"attributes": {"vip": ["yes"]}, "phone": "+14155552671"})).await;
    api.delete("/v1/users/u1").await;
    let events = capture.collect(2, WAIT).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let erased = events.iter().find(|e| e["detail"]["erased"] == true).expect("an erased event");
    assert_eq!(erased["detail"]["version"], 2);
    assert_eq!(erased["detail"]["changed_attributes"], json!([]));
    assert_eq!(erased["detail"]["changed_fields"], json!([]));
    stack.stop().await;
}
