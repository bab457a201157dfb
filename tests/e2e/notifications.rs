//! Notifications end to end: the API accepts, the bus routes each channel to its queue,
//! the local stack's pollers run the workers, and moto records what was sent.

use std::time::Duration;

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use herald_aws::SecretsManagerKeyRings;
use herald_core::{
    channel::Channel,
    delivery::tracking::{Action, Token},
    keys::Scope,
    signing::{
        KeyRing, KeyRingStore,
        webhook::{PublicKey, WebhookSigner, verify},
    },
};
use herald_e2e::{
    Api, assert_problem, key_with, sent_by_moto, start_stack, start_stack_with, tracking_links, wait_for_deliveries,
    webhook_sink::WebhookSink,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const APNS_TOKEN: &str = "7c5e6b1a9f0d4e3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b";
const FCM_TOKEN: &str = "fGx1ZmQ5cTJ0YTRsbzNtZw:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx_ZnFwqXk8jLkQw";
const WAIT: Duration = Duration::from_secs(30);

fn settled(d: &Value) -> bool {
    !matches!(d["status"].as_str(), Some("created" | "pending"))
}

async fn store_template(api: &Api) {
    let template = json!({"channels": {
        "email": {"subject": "Payment due {{ due_date }}", "body": "Pay {{ amount }}", "html": "<p>Pay <b>{{ amount }}</b></p>"},
        "sms": {"body": "Pay {{ amount }} by {{ due_date }}"},
        "push": {"subject": "Payment due", "body": "Pay {{ amount }}"}
    }});
    assert_eq!(api.put("/v1/templates/payment_due", &template).await.status, StatusCode::CREATED);
}

fn delivery<'a>(answer: &'a Value, channel: &str) -> &'a Value {
    answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == channel)
        .unwrap_or_else(|| panic!("no {channel} delivery in {answer}"))
}

/// A stack whose webhook worker trusts the test receiver's certificate.
async fn stack_trusting(sink: &WebhookSink) -> herald_local::LocalStack {
    start_stack_with(|o| {
        o.worker_environment.insert("WEBHOOK_ROOT_CA_PEM".into(), sink.ca_pem.clone());
        // The receiver runs on loopback, which deployed workers refuse.
        o.worker_environment.insert("WEBHOOK_PRIVATE_DESTINATIONS".into(), "allow".into());
    })
    .await
}

/// The keys a receiver verifies webhook signatures with, as the API publishes them (no
/// API key needed).
async fn webhook_keys(stack: &herald_local::LocalStack) -> Vec<PublicKey> {
    let answer = Api::new(stack).with_key(None).get("/v1/webhook-keys").await;
    assert_eq!(answer.status, StatusCode::OK);
    serde_json::from_value(answer.body["keys"].clone()).unwrap()
}

#[tokio::test]
async fn a_notification_reaches_every_channel_of_a_user_once() {
    let sink = WebhookSink::start(vec![]).await;
    let stack = stack_trusting(&sink).await;
    let api = Api::new(&stack);
    store_template(&api).await;
    let template = json!({"channels": {"webhook": {"body": "Payment of {{ amount }} due"}}});
    api.put("/v1/templates/payment_due", &json!({"channels": {
        "email": {"subject": "Payment due {{ due_date }}", "body": "Pay {{ amount }}", "html": "<p>Pay <b>{{ amount }}</b></p>"},
        "sms": {"body": "Pay {{ amount }} by {{ due_date }}"},
        "push": {"subject": "Payment due", "body": "Pay {{ amount }}"},
        "webhook": template["channels"]["webhook"]
    }}))
    .await;
    api.put(
        "/v1/users/ana",
        &json!({"email": "ana@example.com", "phone": "+14155552671",
        "device_tokens": [{"token": APNS_TOKEN, "platform": "apns"}, {"token": FCM_TOKEN, "platform": "fcm"}],
        "external_channels": [
            {"platform": "slack", "url": format!("{}/services/T0/B0/X", sink.url), "enabled": true},
            {"platform": "slack", "url": format!("{}/services/disabled", sink.url), "enabled": false}
        ]}),
    )
    .await;
    let id = api.notify(&json!({"type": "payment_due", "recipients": [{"user_id": "ana"}], "channels": ["email", "sms", "push", "webhook"],
            "params": {"amount": "12.50", "due_date": "2026-12-01"}}),
    )
    .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    for channel in ["email", "sms", "push", "webhook"] {
        assert_eq!(delivery(&answer, channel)["status"], "sent", "{answer}");
    }

    let sent = sent_by_moto(&stack.endpoint).await;
    let email_id = delivery(&answer, "email")["provider_message_id"].as_str().unwrap();
    let emails: Vec<_> = sent.emails.iter().filter(|e| e.0 == email_id).collect();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].1, ["ana@example.com"]);
    assert_eq!(emails[0].2, "Payment due 2026-12-01");

    let sms_id = delivery(&answer, "sms")["provider_message_id"].as_str().unwrap();
    let sms: Vec<_> = sent.sms.iter().filter(|s| s.0 == sms_id).collect();
    assert_eq!(sms.len(), 1);
    assert_eq!((sms[0].1.as_str(), sms[0].2.as_str()), ("+14155552671", "Pay 12.50 by 2026-12-01"));

    let push_ids: Vec<&str> = delivery(&answer, "push")["provider_message_id"].as_str().unwrap().split(',').collect();
    let mut tokens: Vec<&str> =
        sent.pushes.iter().filter(|p| push_ids.contains(&p.0.as_str())).map(|p| p.1.as_str()).collect();
    tokens.sort();
    let mut expected = vec![APNS_TOKEN, FCM_TOKEN];
    expected.sort();
    assert_eq!(tokens, expected);

    // The webhook went once, to the enabled channel only, signed by the stack's current
    // key, which verifies with its published public key (and not the body altered).
    let posts = sink.received();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let body: Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(body["text"], "Payment of 12.50 due");
    let signature = posts[0].headers["x-herald-signature"].to_str().unwrap();
    let keys = webhook_keys(&stack).await;
    assert!(signature.contains(&format!(",kid={},", keys[0].kid)), "{signature}");
    let signed_at = verify(signature, &posts[0].body, &keys).expect("a signature by a published key");
    assert!((chrono::Utc::now().timestamp() - signed_at).abs() < 300);
    assert_eq!(verify(signature, &posts[0].body.replace("12.50", "1250"), &keys), None);
    assert_eq!(posts[0].headers["idempotency-key"], delivery(&answer, "webhook")["delivery_id"].as_str().unwrap());
    sink.stop();
    stack.stop().await;
}

#[tokio::test]
async fn a_webhook_receiver_failing_with_5xx_is_retried_until_it_accepts() {
    let sink = WebhookSink::start(vec![503, 502]).await;
    let stack = stack_trusting(&sink).await;
    let api = Api::new(&stack);
    let id = api.notify(&json!({"type": "alert", "recipients": [{"webhook_url": format!("{}/hook", sink.url)}], "channels": ["webhook"],
        "content": {"webhook": {"body": "disk full"}}}),
    )
    .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    assert_eq!(delivery(&answer, "webhook")["status"], "sent", "{answer}");
    let posts = sink.received();
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|p| p.headers["idempotency-key"] == posts[0].headers["idempotency-key"]));
    sink.stop();
    stack.stop().await;
}

#[tokio::test]
async fn a_direct_webhook_url_is_read_back_without_its_path() {
    let sink = WebhookSink::start(vec![200]).await;
    let stack = stack_trusting(&sink).await;
    let api = Api::new(&stack);
    let id = api
        .notify(
            &json!({"type": "alert", "recipients": [{"webhook_url": format!("{}/services/T0/B0/s3cret", sink.url)}],
        "channels": ["webhook"], "content": {"webhook": {"body": "x"}}}),
        )
        .await;
    let reader = api.with_key(Some(&key_with(&stack, [Scope::NotificationsRead]).await));

    let answer = wait_for_deliveries(&reader, &id, WAIT, settled).await;

    assert_eq!(delivery(&answer, "webhook")["recipient"], format!("webhook_url:{}/…", sink.url), "{answer}");
    assert!(!answer.to_string().contains("s3cret"), "{answer}");
    assert_eq!(sink.received().len(), 1, "the send still goes to the whole URL");
    sink.stop();
    stack.stop().await;
}

#[tokio::test]
async fn a_webhook_receiver_refusing_with_4xx_is_recorded_and_not_retried() {
    let sink = WebhookSink::start(vec![410]).await;
    let stack = stack_trusting(&sink).await;
    let api = Api::new(&stack);
    let id = api.notify(&json!({"type": "alert", "recipients": [{"webhook_url": format!("{}/gone", sink.url)}], "channels": ["webhook"],
        "content": {"webhook": {"body": "x"}}}),
    )
    .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    let webhook = delivery(&answer, "webhook");
    assert_eq!(webhook["status"], "error", "{answer}");
    assert!(webhook["history"].as_array().unwrap().last().unwrap()["reason"].as_str().unwrap().contains("410"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 1);
    sink.stop();
    stack.stop().await;
}

#[tokio::test]
async fn webhooks_to_loopback_private_and_metadata_addresses_are_refused() {
    // A worker as deployed: public destinations only.
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let sink = WebhookSink::start(vec![]).await;
    let port = sink.url.rsplit(':').next().unwrap().to_owned();
    let urls = [
        format!("https://127.0.0.1:{port}/hook"),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://10.0.0.1/hook".to_owned(),
        format!("https://[::1]:{port}/hook"),
        // A name that resolves to loopback: refused on the address it resolves to.
        format!("https://localhost:{port}/hook"),
    ];
    let recipients: Vec<Value> = urls.iter().map(|u| json!({"webhook_url": u})).collect();
    let id = api
        .notify(&json!({"type": "alert", "recipients": recipients, "channels": ["webhook"],
            "content": {"webhook": {"body": "x"}}}))
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), urls.len(), "{answer}");
    for d in deliveries {
        assert_eq!(d["status"], "error", "{d}");
        let reason = d["history"].as_array().unwrap().last().unwrap()["reason"].as_str().unwrap();
        assert_eq!(reason, "forbidden_destination", "{d}");
    }
    assert!(sink.received().is_empty(), "a refused destination was reached");
    sink.stop();
    stack.stop().await;
}

#[tokio::test]
async fn each_webhook_url_settles_on_its_own_and_a_retry_posts_only_to_the_failed_one() {
    let sink = WebhookSink::start_per_path(vec![("/flaky", vec![503, 503])]).await;
    let stack = stack_trusting(&sink).await;
    let api = Api::new(&stack);
    let channels: Vec<Value> = ["/first", "/flaky", "/third"]
        .iter()
        .map(|path| json!({"platform": "slack", "url": format!("{}{path}", sink.url), "enabled": true}))
        .collect();
    let created = api.put("/v1/users/hooked", &json!({"external_channels": channels})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = api
        .notify(&json!({"type": "alert", "recipients": [{"user_id": "hooked"}], "channels": ["webhook"],
            "content": {"webhook": {"body": "x"}}}))
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    assert_eq!(delivery(&answer, "webhook")["status"], "sent", "{answer}");
    let posts = |path: &str| sink.received().iter().filter(|p| p.path == path).count();
    assert_eq!((posts("/first"), posts("/flaky"), posts("/third")), (1, 3, 1));
    sink.stop();
    stack.stop().await;
}

#[tokio::test]
async fn a_webhook_redirect_is_not_followed() {
    // A 307 would replay the signed body to wherever the receiver points.
    let sink = WebhookSink::start(vec![307]).await;
    let stack = stack_trusting(&sink).await;
    let api = Api::new(&stack);
    let id = api.notify(&json!({"type": "alert", "recipients": [{"webhook_url": format!("{}/moved", sink.url)}], "channels": ["webhook"],
        "content": {"webhook": {"body": "x"}}}),
    )
    .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    let webhook = delivery(&answer, "webhook");
    assert_eq!(webhook["status"], "error", "{answer}");
    assert!(webhook["history"].as_array().unwrap().last().unwrap()["reason"].as_str().unwrap().contains("307"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 1, "the redirect was followed");
    sink.stop();
    stack.stop().await;
}

#[tokio::test]
async fn the_status_history_of_each_delivery_is_kept() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let id = api
        .notify(&json!({"type": "otp", "recipients": [{"phone": "+14155550123"}], "channels": ["sms"],
        "content": {"sms": {"body": "Your code is {{ code }}"}}, "params": {"code": "123456"}}))
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    let history: Vec<&str> =
        delivery(&answer, "sms")["history"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["created", "pending", "sent"]);
    stack.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_id_and_sends_nothing_new() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let body = json!({"type": "otp", "recipients": [{"phone": "+14155550100"}], "channels": ["sms"],
        "content": {"sms": {"body": "code 1"}}, "idempotency_key": "otp-1"});
    // moto outlives a test run: count what this test adds.
    let sms_to_number =
        async || sent_by_moto(&stack.endpoint).await.sms.iter().filter(|s| s.1 == "+14155550100").count();
    let before = sms_to_number().await;
    let first = api.notify(&body.clone()).await;
    wait_for_deliveries(&api, &first, WAIT, settled).await;
    let second = api.notify(&body).await;
    assert_eq!(first, second);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sms_to_number().await - before, 1);
    stack.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_body_is_refused_and_sends_nothing() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let body = |code: &str| {
        json!({"type": "otp", "recipients": [{"phone": "+14155550101"}], "channels": ["sms"],
            "content": {"sms": {"body": code}}, "idempotency_key": "otp-2"})
    };
    let sms_to_number =
        async || sent_by_moto(&stack.endpoint).await.sms.iter().filter(|s| s.1 == "+14155550101").count();
    let before = sms_to_number().await;
    let first = api.notify(&body("code 1")).await;
    wait_for_deliveries(&api, &first, WAIT, settled).await;

    let other = api.post("/v1/notifications", &body("code 2")).await;

    assert_problem(&other, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.body["type"], "urn:herald:problem:idempotency-key-reused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sms_to_number().await - before, 1);
    stack.stop().await;
}

#[tokio::test]
async fn opt_out_and_a_missing_template_parameter_end_in_their_status_unsent() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    store_template(&api).await;
    api.put("/v1/users/bo", &json!({"email": "bo@example.com", "phone": "+14155550111"})).await;
    // moto outlives a test run: compare what it holds before and after.
    let to_bo = async || {
        let sent = sent_by_moto(&stack.endpoint).await;
        let emails = sent.emails.iter().filter(|e| e.1 == ["bo@example.com"]).count();
        (emails, sent.sms.iter().filter(|s| s.1 == "+14155550111").count())
    };
    let before = to_bo().await;
    assert_eq!(
        api.put("/v1/users/bo/preferences", &json!({"opt_outs": {"payment_due": ["sms"]}})).await.status,
        StatusCode::OK
    );
    // `due_date` is missing: the email and SMS templates both use it.
    let id = api
        .notify(&json!({"type": "payment_due", "recipients": [{"user_id": "bo"}], "channels": ["email", "sms"],
        "params": {"amount": "3"}}))
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    assert_eq!(delivery(&answer, "sms")["status"], "unsubscribed", "{answer}");
    let email = delivery(&answer, "email");
    assert_eq!(email["status"], "error", "{answer}");
    assert!(email["history"].as_array().unwrap().last().unwrap()["reason"].as_str().unwrap().contains("due_date"));
    assert_eq!(to_bo().await, before, "nothing was sent to bo");
    stack.stop().await;
}

#[tokio::test]
async fn a_user_without_an_address_for_a_channel_gets_an_error_delivery_and_the_rest_is_sent() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/cy", &json!({"phone": "+14155550122"})).await;
    let id = api
        .notify(
            &json!({"type": "t", "recipients": [{"user_id": "cy"}, {"user_id": "nobody"}], "channels": ["sms", "email"],
        "content": {"sms": {"body": "hi"}, "email": {"subject": "s", "body": "b"}}}),
        )
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    let statuses: Vec<(String, String, String)> = answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["recipient"].as_str().unwrap().into(),
                d["channel"].as_str().unwrap().into(),
                d["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut statuses = statuses;
    statuses.sort();
    let expected: Vec<(String, String, String)> =
        [("cy", "email", "error"), ("cy", "sms", "sent"), ("nobody", "email", "error"), ("nobody", "sms", "error")]
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
    assert_eq!(statuses, expected);
    stack.stop().await;
}

#[tokio::test]
async fn an_invalid_notification_is_400_with_every_field_and_records_nothing() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    let answer = api
        .post("/v1/notifications", &json!({"type": "Bad", "recipients": [{"email": "nope"}], "channels": ["email"]}))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let mut fields = answer.fields_at_fault();
    fields.sort();
    assert_eq!(fields, ["recipients[0].email", "type"]);
    let items = stack.clients.dynamodb().scan().table_name(&stack.api_config.deliveries_table).send().await.unwrap();
    assert_eq!(items.count, 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_type_without_a_template_and_without_inline_content_is_400() {
    let stack = start_stack().await;
    let answer = Api::new(&stack)
        .post(
            "/v1/notifications",
            &json!({"type": "unknown_type", "recipients": [{"user_id": "u"}], "channels": ["sms"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.fields_at_fault(), ["type"]);
    stack.stop().await;
}

/// The key ring the stack keeps in its secret `logical_id`, read as the functions read it.
async fn key_ring(stack: &herald_local::LocalStack, logical_id: &str) -> KeyRing {
    let arn = stack.deployment.physical.reference(logical_id).unwrap();
    SecretsManagerKeyRings::new(stack.clients.secretsmanager()).key_ring(arn).await.unwrap()
}

#[tokio::test]
async fn an_unsubscribe_token_minted_with_the_webhook_keys_is_refused_and_changes_nothing() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/eve", &json!({"email": "eve@example.com"})).await;
    let token = Token {
        delivery_id: "d_forged".into(),
        action: Action::Unsubscribe {
            user_id: "eve".into(),
            notification_type: "news".into(),
            channel: Channel::Email,
        },
    };
    // What a receiver holds: the published public key (and its kid); a signature it got,
    // as the token's signature. Then the webhook ring itself, which no receiver sees.
    let published = &webhook_keys(&stack).await[0];
    let by_public_key = token.sign(&KeyRing::new([(published.kid.clone(), published.public_key.clone())]).unwrap());
    let webhook_ring = key_ring(&stack, "WebhookSigningKeysSecret").await;
    let (kid_and_payload, _) = by_public_key.rsplit_once('.').unwrap();
    let received = WebhookSigner::new(&webhook_ring).sign(0, kid_and_payload);
    let signature = STANDARD.decode(received.rsplit_once("v1=").unwrap().1).unwrap();
    let by_signature = format!("{kid_and_payload}.{}", URL_SAFE_NO_PAD.encode(signature));
    let by_webhook_ring = token.sign(&webhook_ring);
    let http = reqwest::Client::new();
    let unsubscribe = async |token: &str| {
        let url = format!("{}/v1/t/{token}", stack.api_url);
        http.post(url).body("List-Unsubscribe=One-Click").send().await.unwrap().status()
    };
    for forged in [&by_public_key, &by_signature, &by_webhook_ring] {
        assert_eq!(unsubscribe(forged).await, StatusCode::NOT_FOUND, "{forged}");
    }
    assert_eq!(api.get("/v1/users/eve/preferences").await.body, json!({"opt_outs": {}}));

    // Signed with the stack's tracking ring, as the email worker signs, it is accepted.
    assert_eq!(unsubscribe(&token.sign(&key_ring(&stack, "TrackingKeysSecret").await)).await, StatusCode::OK);
    assert_eq!(api.get("/v1/users/eve/preferences").await.body, json!({"opt_outs": {"news": ["email"]}}));
    stack.stop().await;
}

#[tokio::test]
async fn email_tracking_links_move_the_delivery_forward_and_unsubscribe_sets_the_preference() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/dee", &json!({"email": "dee@example.com"})).await;
    let id = api.notify(&json!({"type": "newsletter", "recipients": [{"user_id": "dee"}], "channels": ["email"],
        "content": {"email": {"subject": "News", "body": "Read it", "html": "<a href=\"https://news.example/a?x=1&amp;y=2\">Read</a>"}}}))
    .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    let email_id = delivery(&answer, "email")["provider_message_id"].as_str().unwrap().to_owned();
    let html = sent_by_moto(&stack.endpoint).await.emails.into_iter().find(|e| e.0 == email_id).unwrap().3;
    let links = tracking_links(&html);
    assert_eq!(links.len(), 3, "{html}");
    let (click, unsubscribe, open) = (&links[0], &links[1], &links[2]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let status_now = async || wait_for_deliveries(&api, &id, WAIT, settled).await["deliveries"][0]["status"].clone();

    // A forged token changes nothing.
    let forged = format!("{}x", &open[..open.len() - 1]);
    assert_eq!(http.get(&forged).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(status_now().await, "sent");

    let pixel = http.get(open).send().await.unwrap();
    assert_eq!(pixel.status(), StatusCode::OK);
    assert_eq!(pixel.headers()["content-type"], "image/gif");
    assert_eq!(status_now().await, "opened");

    let redirect = http.get(click).send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(redirect.headers()["location"], "https://news.example/a?x=1&y=2");
    assert_eq!(status_now().await, "clicked");

    // Opening again later does not move the delivery back.
    http.get(open).send().await.unwrap();
    assert_eq!(status_now().await, "clicked");

    // A scanner's GET of the unsubscribe link only shows the form; the mailbox's RFC 8058
    // one-click POST (what the List-Unsubscribe headers name) opts out.
    assert_eq!(http.get(unsubscribe).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(status_now().await, "clicked");
    let one_click = http
        .post(unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), StatusCode::OK);
    assert_eq!(status_now().await, "unsubscribed");
    let preferences = api.get("/v1/users/dee/preferences").await.body;
    assert_eq!(preferences["opt_outs"]["newsletter"], json!(["email"]));
    stack.stop().await;
}

/// moto keeps no message headers (the SES sender's unit tests check them on the request):
/// here, a transactional notification is taken by the API and its email sent all the same.
#[tokio::test]
async fn a_transactional_email_is_accepted_and_sent() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    api.put("/v1/users/tia", &json!({"email": "tia@example.com"})).await;
    let id = api
        .notify(&json!({"type": "receipt", "recipients": [{"user_id": "tia"}], "channels": ["email"],
        "transactional": true, "content": {"email": {"subject": "Receipt", "body": "Paid"}}}))
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    assert_eq!(delivery(&answer, "email")["status"], "sent", "{answer}");
    stack.stop().await;
}

#[tokio::test]
async fn a_device_whose_endpoint_sns_disabled_leaves_the_profile_and_the_others_still_get_the_push() {
    let stack = start_stack().await;
    let api = Api::new(&stack);
    // moto matches tokens across all applications and stacks: this test's own token keeps
    // the endpoint it disables away from the other tests.
    let apns_token = uuid::Uuid::new_v4().simple().to_string().repeat(2);
    api.put(
        "/v1/users/eve",
        &json!({"device_tokens": [{"token": apns_token, "platform": "apns"}, {"token": FCM_TOKEN, "platform": "fcm"}]}),
    )
    .await;
    // The APNs endpoint exists and SNS has disabled it (as after APNs reported the token
    // unregistered).
    let apns_app = stack.deployment.template.parameter("ApnsPlatformApplicationArn").unwrap().to_owned();
    let endpoint = stack
        .clients
        .sns()
        .create_platform_endpoint()
        .platform_application_arn(apns_app)
        .token(&apns_token)
        .send()
        .await
        .unwrap()
        .endpoint_arn
        .unwrap();
    stack
        .clients
        .sns()
        .set_endpoint_attributes()
        .endpoint_arn(endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();

    let id = api
        .notify(&json!({"type": "news", "recipients": [{"user_id": "eve"}], "channels": ["push"],
        "content": {"push": {"subject": "Hi", "body": "News"}}}))
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    assert_eq!(delivery(&answer, "push")["status"], "sent", "{answer}");
    let profile = api.get("/v1/users/eve").await.body;
    assert_eq!(profile["device_tokens"], json!([{"token": FCM_TOKEN, "platform": "fcm"}]), "{profile}");
    assert_eq!(profile["version"], 2);
    stack.stop().await;
}
