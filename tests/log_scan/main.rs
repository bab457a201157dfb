//! What the stack logs holds no personal data: a walkthrough through herald-local
//! (profiles with an email, a phone, device tokens and attributes; a notification by email,
//! SMS, push and webhook; a tracking link followed; an import; an API key created and used)
//! runs under a global subscriber that keeps every line the process logs, as JSON and at
//! debug level for Herald's crates, then fails if any email, phone, token, key secret,
//! attribute value or URL it used appears. A binary of its own: the e2e binary's stacks
//! install their own subscriber.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use herald_aws::{Clients, local_sdk_config};
use herald_core::keys::Scope;
use herald_e2e::{
    Api, aws_endpoint, key_with, sent_by_moto, start_stack_with, tracking_links, wait_for_deliveries,
    webhook_sink::WebhookSink,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps everything the process logs from now on, as the functions log it (JSON).
fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = "info,herald_api=debug,herald_aws=debug,herald_core=debug,herald_edge=debug,herald_worker=debug,\
        herald_segmenter=debug,herald_importer=debug,herald_dispatcher=debug,herald_relay=debug,herald_local=debug";
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");
    captured
}

fn settled(d: &Value) -> bool {
    !matches!(d["status"].as_str(), Some("created" | "pending"))
}

const EMAIL: &str = "zoe.scan@example.com";
const PHONE: &str = "+14155550177";
const APNS_TOKEN: &str = "5d4c3b2a1908f7e6d5c4b7c5e6b1a9f0d4e3c2b1a09f8e7d6c5b4a3928170f6e";
const TIER: &str = "obsidian-tier-7731";
const IMPORTED_EMAIL: &str = "imported.scan@example.com";
const IMPORTED_CITY: &str = "Quuxville-9182";

#[tokio::test]
async fn a_walkthrough_logs_no_email_phone_token_key_attribute_value_or_url() {
    let logs = capture_logs();
    let sink = WebhookSink::start(vec![]).await;
    let stack = start_stack_with(|o| {
        o.worker_environment.insert("WEBHOOK_ROOT_CA_PEM".into(), sink.ca_pem.clone());
        o.worker_environment.insert("WEBHOOK_PRIVATE_DESTINATIONS".into(), "allow".into());
    })
    .await;
    let key = key_with(&stack, [Scope::Admin]).await;
    let api = Api::new(&stack).with_key(Some(&key));
    let webhook_url = format!("{}/services/T0/B0/scanSecret", sink.url);

    let profile = json!({"email": EMAIL, "phone": PHONE, "attributes": {"tier": [TIER]},
        "device_tokens": [{"token": APNS_TOKEN, "platform": "apns"}],
        "external_channels": [{"platform": "slack", "url": webhook_url, "enabled": true}]});
    let answer = api.put("/v1/users/zoe", &profile).await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let id = api
        .notify(&json!({"type": "scan", "recipients": [{"user_id": "zoe"}], "channels": ["email", "sms", "push", "webhook"],
            "content": {"email": {"subject": "Hi", "body": "Read", "html": "<a href=\"https://news.example/scan-article\">Read</a>"},
                "sms": {"body": "Hi"}, "push": {"subject": "Hi", "body": "Hi"}, "webhook": {"body": "Hi"}}}))
        .await;
    let answer = wait_for_deliveries(&api, &id, WAIT, settled).await;
    let statuses: Vec<&Value> = answer["deliveries"].as_array().unwrap().iter().map(|d| &d["status"]).collect();
    assert!(statuses.iter().all(|s| *s == "sent"), "{answer}");

    // The email's tracking link, followed.
    let email_id = answer["deliveries"].as_array().unwrap().iter().find(|d| d["channel"] == "email").unwrap()
        ["provider_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let html = sent_by_moto(&stack.endpoint).await.emails.into_iter().find(|e| e.0 == email_id).unwrap().3;
    let links = tracking_links(&html);
    assert!(!links.is_empty(), "{html}");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    assert!(http.get(&links[0]).send().await.unwrap().status().is_redirection());
    let token = links[0].rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();

    // An import, one row rejected.
    let clients = Clients::new(&local_sdk_config(&aws_endpoint()).await);
    let bucket = stack.physical_names().get("ImportsBucket").unwrap().clone();
    let csv =
        format!("user_id,email,city\nimp1,{IMPORTED_EMAIL},{IMPORTED_CITY}\nimp2,not-an-email-scan,{IMPORTED_CITY}\n");
    clients
        .s3()
        .put_object()
        .bucket(&bucket)
        .key("imports/scan.csv")
        .body(csv.into_bytes().into())
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let jobs = api.get("/v1/imports?limit=10").await.body;
        if jobs["imports"].as_array().is_some_and(|j| j.iter().any(|j| j["state"] == "done")) {
            break;
        }
        assert!(Instant::now() < deadline, "the import did not finish: {jobs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sink.stop();
    stack.stop().await;

    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.lines().count() > 10, "the capture saw the stack's logs:\n{logged}");
    let used = [
        EMAIL,
        PHONE,
        APNS_TOKEN,
        TIER,
        &webhook_url,
        "scanSecret",
        "https://news.example/scan-article",
        &links[0],
        &token,
        &key,
        IMPORTED_EMAIL,
        IMPORTED_CITY,
        "not-an-email-scan",
    ];
    let found: Vec<&str> = used.iter().copied().filter(|value| logged.contains(value)).collect();
    assert!(found.is_empty(), "the logs hold {found:?}:\n{}", lines_with(&logged, &found));
}

fn lines_with(logged: &str, found: &[&str]) -> String {
    logged.lines().filter(|line| found.iter().any(|f| line.contains(f))).take(20).collect::<Vec<_>>().join("\n")
}
