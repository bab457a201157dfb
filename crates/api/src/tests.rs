//! The router over memory stores, driven with API Gateway v2 events as Lambda gets them:
//! what matches, in which order requests are refused, and what is logged.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use herald_core::{
    activity::{ActivityService, memory::MemoryActivity},
    campaigns::{
        CampaignService,
        memory::{MemoryCampaigns, MemoryQueues},
    },
    delivery::memory::{MemoryDeliveries, MemoryPreferences, MemoryTemplates},
    events::memory::MemoryBus,
    imports::memory::MemoryImportJobs,
    keys::{ApiKey, ApiKeyStore, Scope, new_key},
    notifications::{NotificationService, memory::MemoryNotifications},
    profiles::{ProfileService, memory::MemoryProfiles},
    segments::{
        SegmentService,
        memory::{MemoryMemberships, MemorySegments},
    },
    store::StoreError,
};
use serde_json::{Value, json};

use super::*;

const ADMIN: &str = "hk_admin";

/// The app's tracking keys, and its webhook keys under the same id: the secrets differ.
fn tracking_keys() -> KeyRing {
    KeyRing::new([("k1", "tracking-secret-0123456789abcdef0123456789")]).unwrap()
}

fn webhook_keys() -> KeyRing {
    KeyRing::new([("k1", "webhook-secret-0123456789abcdef0123456789")]).unwrap()
}

struct Keys(HashMap<String, ApiKey>);

#[async_trait::async_trait]
impl ApiKeyStore for Keys {
    async fn find(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self.0.get(key_hash).cloned())
    }
    async fn put(&self, _: &ApiKey) -> Result<(), StoreError> {
        unimplemented!("the API never stores keys")
    }
}

/// An app over memory stores; `keys` are (secret, scopes).
fn app(keys: &[(&str, &[Scope])]) -> App {
    let bus = Arc::new(MemoryBus::default());
    let profiles = Arc::new(MemoryProfiles::default());
    let templates = Arc::new(MemoryTemplates::default());
    let deliveries = Arc::new(MemoryDeliveries::default());
    let segments = Arc::new(MemorySegments::default());
    let mut stored: HashMap<String, ApiKey> = HashMap::new();
    for (secret, scopes) in [(ADMIN, &[Scope::Admin][..])].iter().chain(keys) {
        let key = new_key(secret, "test", scopes.iter().copied());
        stored.insert(key.key_hash.clone(), key);
    }
    App::new(Services {
        profiles: ProfileService::new(profiles.clone()),
        notifications: NotificationService {
            profiles,
            templates: templates.clone(),
            deliveries: deliveries.clone(),
            notifications: Arc::new(MemoryNotifications::default()),
            events: bus.clone(),
            idempotency_ttl: herald_core::notifications::DEFAULT_IDEMPOTENCY_TTL,
        },
        templates: templates.clone(),
        preferences: Arc::new(MemoryPreferences::default()),
        suppressions: herald_core::suppressions::SuppressionService::new(Arc::new(
            herald_core::suppressions::memory::MemorySuppressions::default(),
        )),
        deliveries,
        activity: ActivityService { store: Arc::new(MemoryActivity::default()), events: bus.clone() },
        segments: SegmentService::new(segments.clone(), Arc::new(MemoryMemberships::default()), bus, 1),
        import_jobs: Arc::new(MemoryImportJobs::default()),
        campaigns: CampaignService {
            campaigns: Arc::new(MemoryCampaigns::default()),
            dispatch: Arc::new(MemoryQueues::default()),
            templates,
            segments,
        },
        tracking_keys: tracking_keys(),
        webhook_keys: WebhookSigner::new(&webhook_keys()).public_keys(),
        auth: Arc::new(Authenticator::new(Arc::new(Keys(stored)))),
    })
}

/// A request as lambda_http decodes API Gateway's event for it.
struct Call {
    method: &'static str,
    raw_path: String,
    query: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
}

fn call(method: &'static str, raw_path: &str) -> Call {
    Call { method, raw_path: raw_path.into(), query: String::new(), headers: Vec::new(), body: None }
}

impl Call {
    fn key(mut self, secret: &str) -> Self {
        self.headers.push(("authorization", format!("Bearer {secret}")));
        self
    }
    fn admin(self) -> Self {
        self.key(ADMIN)
    }
    fn query(mut self, query: &str) -> Self {
        self.query = query.into();
        self
    }
    fn body(mut self, content_type: &str, body: impl Into<String>) -> Self {
        self.headers.push(("content-type", content_type.into()));
        self.body = Some(body.into());
        self
    }
    fn json(self, body: Value) -> Self {
        self.body("application/json", body.to_string())
    }

    fn event(&self) -> String {
        let headers: serde_json::Map<String, Value> =
            self.headers.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect();
        json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": self.raw_path,
            "rawQueryString": self.query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012", "apiId": "local", "domainName": "localhost", "domainPrefix": "local",
                "http": {"method": self.method, "path": self.raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
                "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0
            },
            "body": self.body,
            "isBase64Encoded": false,
        })
        .to_string()
    }

    async fn send(self, app: &App) -> Answer {
        let request = lambda_http::request::from_str(&self.event()).expect("an API Gateway event");
        let response = app.handle(request).await;
        let text = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Answer {
    fn problem(&self) -> (u16, &str, &str) {
        assert_eq!(self.headers["content-type"], "application/problem+json", "{self:?}");
        assert_eq!(self.body["status"], self.status, "{self:?}");
        (self.status, self.body["type"].as_str().unwrap(), self.body["detail"].as_str().unwrap())
    }
}

#[tokio::test]
async fn user_ids_are_percent_decoded() {
    let app = app(&[]);
    let answer = call("PUT", "/v1/users/ana%40example.com").admin().json(json!({})).send(&app).await;
    assert_eq!((answer.status, answer.body["user_id"].as_str()), (201, Some("ana@example.com")));
    // An encoded slash is part of the id (which no user id may hold).
    let answer = call("GET", "/v1/users/a%2Fb").admin().send(&app).await;
    assert_eq!(answer.body["errors"][0]["field"], "user_id", "{answer:?}");
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = app(&[]);
    let paths = [
        "/",
        "/v1",
        "/v1/users",
        "/v1/users/",
        "/v1/users/a/b",
        "/v1/users/a/",
        "/v2/users/a",
        "/v1/templates",
        "/v1/segments/",
        "/v1/segments/a/b",
        "/v1/segments//members",
        "/v1/events/x",
        "/v1/imports/",
        "/v1/imports/a/b",
        "//v1/users/a",
        "/v1/openapi%2Ejson",
        // Routed on the path as sent: dot segments are not resolved.
        "/v1/users/x/../../segments",
        "/v1/segments/x/%2e%2e",
    ];
    for path in paths {
        for answer in [call("GET", path).send(&app).await, call("GET", path).admin().send(&app).await] {
            let (status, kind, detail) = answer.problem();
            assert_eq!((status, kind), (404, "urn:herald:problem:not-found"), "{path}");
            assert_eq!(detail, format!("No route for {path}"), "{path}");
        }
    }
}

#[tokio::test]
async fn known_paths_with_another_method_are_405_before_the_key_is_checked() {
    let app = app(&[]);
    for (method, path, allow) in [
        ("POST", "/v1/users/a", "GET, PUT, DELETE"),
        ("GET", "/v1/notifications", "POST"),
        ("GET", "/v1/events", "POST"),
        ("PATCH", "/v1/segments/s", "GET, PUT, DELETE"),
        ("DELETE", "/v1/segments", "GET, POST"),
        ("POST", "/v1/users/a/preferences", "GET, PUT"),
        ("OPTIONS", "/v1/templates/t", "GET, PUT"),
        // axum would answer HEAD with the GET handler; this API does not.
        ("HEAD", "/v1/users/a", "GET, PUT, DELETE"),
        ("HEAD", "/v1/t/x", "GET, POST"),
    ] {
        let answer = call(method, path).send(&app).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.headers["allow"], allow, "{method} {path}");
        if method == "HEAD" {
            // axum sends no body in answer to HEAD, as HTTP has it.
            continue;
        }
        let (_, kind, detail) = answer.problem();
        assert_eq!(kind, "urn:herald:problem:method-not-allowed", "{method} {path}");
        assert_eq!(detail, format!("This resource allows {allow}"), "{method} {path}");
    }
}

#[tokio::test]
async fn a_path_parameter_that_is_not_utf8_is_404_before_the_method_and_the_key() {
    let app = app(&[]);
    for (method, path) in [("GET", "/v1/users/%FF"), ("POST", "/v1/users/%FF"), ("GET", "/v1/t/%C3")] {
        let answer = call(method, path).send(&app).await;
        assert_eq!(answer.problem(), (404, "urn:herald:problem:not-found", "A path parameter is not valid UTF-8"));
    }
}

#[tokio::test]
async fn segment_routes_name_their_ids() {
    let app = app(&[]);
    let segment = json!({"segment_id": "vip", "name": "VIP", "kind": "static", "user_ids": ["a@b"]});
    let created = call("POST", "/v1/segments").admin().json(segment).send(&app).await;
    assert_eq!(
        (created.status, created.headers["location"].to_str().unwrap()),
        (202, "/v1/segments/vip"),
        "{created:?}"
    );
    let members = call("GET", "/v1/segments/vip/members").admin().send(&app).await;
    assert_eq!((members.status, &members.body["user_ids"]), (200, &json!(["a@b"])), "{members:?}");
    let user = call("GET", "/v1/users/a%40b/segments").admin().send(&app).await;
    assert_eq!((user.status, &user.body["user_id"]), (200, &json!("a@b")), "{user:?}");
    let absent = call("GET", "/v1/segments/not%20an%20id").admin().send(&app).await;
    assert_eq!(absent.problem().2, "No such segment");
}

#[tokio::test]
async fn import_routes_are_read_only_and_need_imports_read() {
    let app = app(&[("reader", &[Scope::ImportsRead]), ("other", &[Scope::SegmentsRead])]);
    assert_eq!(call("GET", "/v1/imports").key("reader").send(&app).await.status, 200);
    let answer = call("GET", "/v1/imports/imp_1").key("reader").send(&app).await;
    assert_eq!(answer.problem().2, "No such import");
    for path in ["/v1/imports", "/v1/imports/imp_1"] {
        let answer = call("GET", path).key("other").send(&app).await;
        assert_eq!(answer.problem().0, 403, "{path}");
        assert!(answer.problem().2.contains("imports:read"), "{answer:?}");
        let answer = call("POST", path).key("reader").send(&app).await;
        assert_eq!((answer.status, answer.problem().2), (405, "This resource allows GET"), "{path}");
    }
    let answer = call("GET", "/v1/imports").key("reader").query("limit=0").send(&app).await;
    assert_eq!(answer.body["errors"][0]["field"], "limit", "{answer:?}");
}

#[tokio::test]
async fn campaign_routes_name_their_ids_and_scopes() {
    let app = app(&[("reader", &[Scope::CampaignsRead]), ("writer", &[Scope::CampaignsWrite])]);
    assert_eq!(call("GET", "/v1/campaigns/c_1").key("reader").send(&app).await.problem().2, "No such campaign");
    assert_eq!(call("GET", "/v1/campaigns/c_1").key("writer").send(&app).await.problem().0, 403);
    let cancel = call("POST", "/v1/campaigns/c_1/cancel");
    assert_eq!(cancel.key("writer").send(&app).await.problem().2, "No such campaign");
    assert_eq!(call("POST", "/v1/campaigns/c_1/cancel").key("reader").send(&app).await.problem().0, 403);
    let body = json!({"name": "Spring", "segment_id": "vip", "template_id": "spring", "channels": ["email"]});
    assert_eq!(call("POST", "/v1/campaigns").key("reader").json(body.clone()).send(&app).await.problem().0, 403);
    let refused = call("POST", "/v1/campaigns").key("writer").json(body).send(&app).await;
    assert_eq!(refused.problem().0, 400);
    for (method, path, allow) in [
        ("GET", "/v1/campaigns", "POST"),
        ("DELETE", "/v1/campaigns/c_1", "GET"),
        ("GET", "/v1/campaigns/c_1/cancel", "POST"),
    ] {
        let answer = call(method, path).send(&app).await;
        assert_eq!(answer.problem().2, format!("This resource allows {allow}"), "{path}");
    }
    for path in ["/v1/campaigns/", "/v1/campaigns//cancel", "/v1/campaigns/c_1/x"] {
        assert_eq!(call("POST", path).send(&app).await.problem().0, 404, "{path}");
    }
}

#[tokio::test]
async fn the_suppression_routes_need_their_scopes_and_refuse_a_channel_without_a_list() {
    let app = app(&[("reader", &[Scope::SuppressionsRead]), ("writer", &[Scope::SuppressionsWrite])]);
    let entry = "/v1/suppressions/email/bob@example.com";
    assert_eq!(call("PUT", entry).key("reader").send(&app).await.problem().0, 403);
    assert_eq!(call("PUT", entry).key("writer").send(&app).await.status, 201);
    assert_eq!(call("PUT", entry).key("writer").send(&app).await.status, 200, "already there");
    assert_eq!(call("GET", entry).key("writer").send(&app).await.problem().0, 403);
    let read = call("GET", entry).key("reader").send(&app).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        (read.body["address"].clone(), read.body["reason"].clone()),
        (json!("bob@example.com"), json!("manual"))
    );
    let listed = call("GET", "/v1/suppressions").query("channel=email").key("reader").send(&app).await;
    assert_eq!(listed.body["suppressions"][0]["channel"], "email");
    assert_eq!(call("DELETE", entry).key("writer").send(&app).await.status, 204);
    assert_eq!(call("GET", entry).key("reader").send(&app).await.problem().0, 404);
    for path in ["/v1/suppressions/push/token", "/v1/suppressions/sms/bob@example.com"] {
        assert_eq!(call("GET", path).key("reader").send(&app).await.problem().0, 400, "{path}");
    }
    for query in ["cursor=x", "channel=push", "limit=0"] {
        let refused = call("GET", "/v1/suppressions").query(query).key("reader").send(&app).await;
        assert_eq!(refused.problem().0, 400, "{query}");
    }
}

#[tokio::test]
async fn every_route_in_the_table_answers_each_of_its_methods() {
    let app = app(&[]);
    let table = route_table();
    assert_eq!(table.len(), 20);
    for (template, methods) in table {
        let path =
            template.replace("{id}", "x").replace("{token}", "x").replace("{channel}", "x").replace("{address}", "x");
        for method in methods {
            let method = method.as_str().to_owned().leak();
            let answer = call(method, &path).send(&app).await;
            if template == "/v1/t/{token}" {
                assert_eq!(answer.problem().2, "Unknown link", "public: {method} {path}");
            } else if template == "/v1/webhook-keys" {
                assert_eq!(answer.status, 200, "public: {method} {path}");
            } else {
                assert_eq!(answer.problem().0, 401, "{method} {path}");
                assert_eq!(answer.headers["www-authenticate"], "Bearer");
            }
        }
    }
}

#[tokio::test]
async fn the_key_is_checked_before_the_body_is_read() {
    let app = app(&[("reader", &[Scope::ProfilesRead])]);
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let put = || call("PUT", "/v1/users/u1");
    assert_eq!(put().body("application/json", big.clone()).send(&app).await.problem().0, 401);
    assert_eq!(put().key("reader").body("application/xml", big.clone()).send(&app).await.problem().0, 403);
    let too_large = put().admin().body("application/xml", big.clone()).send(&app).await;
    assert_eq!(too_large.problem(), (413, "urn:herald:problem:too-large", "The body must be at most 262144 bytes"));
    let answer = put().admin().body("text/plain", "email=a@example.com").send(&app).await;
    assert_eq!(
        answer.problem(),
        (415, "urn:herald:problem:unsupported-media-type", "Send the body as application/json")
    );
    let answer = put().admin().body("application/json; charset=utf-8", " ").send(&app).await;
    assert_eq!(answer.problem(), (400, "urn:herald:problem:malformed-json", "The body must be a JSON object"));
    // Routes that read no body take any.
    let answer = call("DELETE", "/v1/users/u1").admin().body("application/xml", big).send(&app).await;
    assert_eq!(answer.problem().2, "No profile for this user");
}

#[tokio::test]
async fn preferences_check_the_user_id_before_the_body() {
    let app = app(&[]);
    let answer = call("PUT", "/v1/users/a%01b/preferences").admin().body("application/json", "{").send(&app).await;
    let (status, kind, _) = answer.problem();
    assert_eq!((status, kind), (400, "urn:herald:problem:invalid-request"), "{answer:?}");
}

#[tokio::test]
async fn events_take_a_body_of_up_to_a_mebibyte() {
    let app = app(&[]);
    let padding = "x".repeat(MAX_BODY_BYTES);
    let answer = call("POST", "/v1/events").admin().json(json!({"events": [], "pad": padding})).send(&app).await;
    assert_eq!(answer.problem().0, 400, "over 256 KiB is not too large here");
    let padding = "x".repeat(MAX_EVENTS_BODY_BYTES);
    let answer = call("POST", "/v1/events").admin().json(json!({"events": [], "pad": padding})).send(&app).await;
    assert_eq!(answer.problem().2, format!("The body must be at most {MAX_EVENTS_BODY_BYTES} bytes"));
}

#[tokio::test]
async fn segments_take_json_or_a_file_of_user_ids() {
    let app = app(&[]);
    let post = || call("POST", "/v1/segments").admin();
    let answer =
        post().query("name=Spring%20list&segment_id=spring").body("text/csv", "user_id\nana\nbo\n").send(&app).await;
    assert_eq!(
        (answer.status, answer.headers["location"].to_str().unwrap()),
        (202, "/v1/segments/spring"),
        "{answer:?}"
    );
    assert_eq!(answer.body["name"], "Spring list");
    let answer = post().body("text/plain; charset=utf-8", "ana\nb/c\n").send(&app).await;
    let fields: Vec<&str> =
        answer.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "line 2"]);
    // Another media type is 415 whatever its size.
    let answer = post().body("application/xml", "x".repeat(MAX_BODY_BYTES + 1)).send(&app).await;
    assert_eq!(answer.problem().0, 415);
    assert!(answer.problem().2.contains("text/csv"));
    assert_eq!(post().body("text/csv", "x".repeat(MAX_BODY_BYTES + 1)).send(&app).await.problem().0, 413);
    let answer =
        post().json(json!({"segment_id": 7, "name": "x", "kind": "static", "user_ids": ["a"]})).send(&app).await;
    assert_eq!(answer.body["errors"][0]["field"], "segment_id");
}

#[tokio::test]
async fn templates_read_a_version_from_the_query() {
    let app = app(&[]);
    let template = json!({"channels": {"email": {"subject": "Hi", "body": "Hello"}}});
    assert_eq!(call("PUT", "/v1/templates/spring").admin().json(template.clone()).send(&app).await.status, 201);
    assert_eq!(call("PUT", "/v1/templates/spring").admin().json(template).send(&app).await.status, 200);
    let answer = call("GET", "/v1/templates/spring").admin().query("version=1").send(&app).await;
    assert_eq!((answer.status, &answer.body["version"]), (200, &json!(1)));
    let answer = call("GET", "/v1/templates/spring").admin().query("version=x").send(&app).await;
    assert_eq!(answer.body["errors"][0]["field"], "version");
    let answer = call("GET", "/v1/templates/spring").admin().query("version=3").send(&app).await;
    assert_eq!(answer.problem().2, "No such template");
}

#[tokio::test]
async fn a_template_with_nested_100000_step_loops_is_refused() {
    let app = app(&[]);
    let body = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    let template = json!({"channels": {"sms": {"body": body}}});
    let answer = call("PUT", "/v1/templates/loops").admin().json(template).send(&app).await;
    // Validation errors are 400 invalid-request throughout the API (README, "Errors").
    assert_eq!(answer.problem().0, 400);
    assert_eq!(answer.body["errors"][0]["field"], "channels.sms.body");
    assert!(answer.body["errors"][0]["message"].as_str().unwrap().contains("more work than a render may"));
}

#[tokio::test]
async fn a_click_link_to_a_url_with_a_control_character_is_refused() {
    use herald_core::delivery::tracking::{Action, Token};
    let app = app(&[]);
    let token = Token { delivery_id: "d_1".into(), action: Action::Click { url: "https://x.example/a\u{7}b".into() } };
    let answer = call("GET", &format!("/v1/t/{}", token.sign(&tracking_keys()))).send(&app).await;
    assert_eq!(answer.problem().0, 400);
    assert_eq!(answer.body["errors"][0]["field"], "token");
}

fn unsubscribe_link() -> String {
    use herald_core::{
        channel::Channel,
        delivery::tracking::{Action, Token},
    };
    let action =
        Action::Unsubscribe { user_id: "ana".into(), notification_type: "news".into(), channel: Channel::Email };
    format!("/v1/t/{}", Token { delivery_id: "d_1".into(), action }.sign(&tracking_keys()))
}

#[tokio::test]
async fn an_unsubscribe_get_shows_a_form_and_changes_nothing() {
    let app = app(&[]);
    let answer = call("GET", &unsubscribe_link()).send(&app).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.as_str().unwrap().contains("<form method=\"post\">"), "{answer:?}");
    let preferences = call("GET", "/v1/users/ana/preferences").admin().send(&app).await;
    assert_eq!(preferences.body, json!({"opt_outs": {}}));
}

#[tokio::test]
async fn an_unsubscribe_post_opts_the_user_out() {
    let app = app(&[]);
    let answer = call("POST", &unsubscribe_link())
        .body("application/x-www-form-urlencoded", "List-Unsubscribe=One-Click")
        .send(&app)
        .await;
    assert_eq!(answer.status, 200);
    let preferences = call("GET", "/v1/users/ana/preferences").admin().send(&app).await;
    assert_eq!(preferences.body, json!({"opt_outs": {"news": ["email"]}}));
}

#[tokio::test]
async fn the_webhook_public_keys_are_published_without_a_key_and_verify_a_signature() {
    use herald_core::signing::webhook::{PublicKey, verify};
    let app = app(&[]);
    let answer = call("GET", "/v1/webhook-keys").send(&app).await;
    assert_eq!(answer.status, 200);
    let keys: Vec<PublicKey> = serde_json::from_value(answer.body["keys"].clone()).unwrap();
    assert_eq!((keys[0].kid.as_str(), keys[0].alg.as_str()), ("k1", "Ed25519"));
    let header = WebhookSigner::new(&webhook_keys()).sign(1_700_000_000, "{}");
    assert_eq!(verify(&header, "{}", &keys), Some(1_700_000_000));
    assert_eq!(verify(&header, "{ }", &keys), None);
}

/// `kid.payload.signature` of an unsubscribe of ana from news, signed as `sign` says.
fn forged_unsubscribe(kid: &str, sign: impl FnOnce(&str) -> Vec<u8>) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let token = serde_json::to_vec(
        &json!({"d": "d_1", "a": "unsubscribe", "user_id": "ana", "notification_type": "news", "channel": "email"}),
    )
    .unwrap();
    let payload = URL_SAFE_NO_PAD.encode(token);
    let signature = URL_SAFE_NO_PAD.encode(sign(&format!("{kid}.{payload}")));
    format!("/v1/t/{kid}.{payload}.{signature}")
}

#[tokio::test]
async fn a_tracking_token_minted_with_anything_of_the_webhook_keys_is_refused_and_changes_nothing() {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use herald_core::{
        channel::Channel,
        delivery::tracking::{Action, Token},
    };
    use hmac::{Hmac, Mac};
    let app = app(&[]);
    let published = call("GET", "/v1/webhook-keys").send(&app).await.body["keys"][0]["public_key"].clone();
    let public_key = published.as_str().unwrap().to_owned();
    let hmac = |key: Vec<u8>| {
        move |signed: &str| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
            mac.update(signed.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    let signer = WebhookSigner::new(&webhook_keys());
    let unsubscribe =
        Action::Unsubscribe { user_id: "ana".into(), notification_type: "news".into(), channel: Channel::Email };
    let forged = [
        // What every receiver holds: the published public key, as text and as bytes.
        forged_unsubscribe("k1", hmac(public_key.clone().into_bytes())),
        forged_unsubscribe("k1", hmac(STANDARD.decode(&public_key).unwrap())),
        // A signature a receiver got, over the token's text.
        forged_unsubscribe("k1", |signed| {
            let header = signer.sign(0, signed);
            STANDARD.decode(header.rsplit_once("v1=").unwrap().1).unwrap()
        }),
        // Even the webhook ring's secret itself (receivers never see it), under its kid.
        format!("/v1/t/{}", Token { delivery_id: "d_1".into(), action: unsubscribe }.sign(&webhook_keys())),
    ];
    for link in forged {
        assert_eq!(call("POST", &link).send(&app).await.problem().2, "Unknown link", "{link}");
        assert_eq!(call("GET", &link).send(&app).await.problem().0, 404, "{link}");
    }
    let preferences = call("GET", "/v1/users/ana/preferences").admin().send(&app).await;
    assert_eq!(preferences.body, json!({"opt_outs": {}}));
    // The same forgery with the tracking key is accepted: the refusals were about the key.
    let genuine = forged_unsubscribe("k1", hmac(tracking_keys().current().secret().to_vec()));
    assert_eq!(call("POST", &genuine).send(&app).await.status, 200);
}

#[tokio::test]
async fn the_openapi_document_needs_any_key() {
    let app = app(&[("narrow", &[Scope::EventsWrite])]);
    let answer = call("GET", "/v1/openapi.json").key("narrow").send(&app).await;
    assert_eq!((answer.status, &answer.body["openapi"]), (200, &json!("3.1.0")));
    assert_eq!(call("GET", "/v1/openapi.json").send(&app).await.problem().0, 401);
}

/// Log lines written while the test runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_request_is_logged_by_its_route_template_and_never_its_ids() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests' threads may have cached the log callsite's interest without this
    // subscriber: computed again, so no line of this test is filtered out.
    tracing::callsite::rebuild_interest_cache();
    let app = app(&[]);
    call("PUT", "/v1/users/ana%40example.com").admin().json(json!({})).send(&app).await;
    call("GET", "/v1/users/ana%40example.com/segments").send(&app).await;
    call("POST", "/v1/users/ana%40example.com").send(&app).await;
    call("GET", "/v1/nothing/ana%40example.com").send(&app).await;
    call("GET", "/v1/users/%FF").send(&app).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["fields"]["message"] == "request")
        .map(|l| json!([l["fields"]["route"], l["fields"]["status"]]))
        .collect();
    assert_eq!(
        lines,
        [
            json!(["PUT /v1/users/{id}", 201]),
            json!(["GET /v1/users/{id}/segments", 401]),
            json!(["unmatched", 405]),
            json!(["unmatched", 404]),
            json!(["unmatched", 404]),
        ]
    );
    assert!(!text.contains("ana"), "{text}");
}

// serde fills a struct from an array, field by field, and a unit variant from
// `{"name": null}`: the OpenAPI document refuses both, and so does the API.

#[tokio::test]
async fn a_device_token_given_as_an_array_is_refused_and_stores_nothing() {
    let app = app(&[]);
    let token = "7c5e6b1a9f0d4e3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b";
    let answer = call("PUT", "/v1/users/u1").admin().json(json!({"device_tokens": [[token, "apns"]]})).send(&app).await;
    assert_eq!(answer.problem().0, 400);
    assert_eq!(
        answer.body["errors"],
        json!([{"field": "device_tokens[0]", "message": "must be an object, not an array"}])
    );
    assert_eq!(call("GET", "/v1/users/u1").admin().send(&app).await.status, 404);
}

#[tokio::test]
async fn an_external_channel_given_as_an_array_is_refused() {
    let app = app(&[]);
    let channels = json!({"external_channels": [["slack", "https://hooks.slack.com/services/T0/B0/X", true]]});
    let answer = call("PUT", "/v1/users/u1").admin().json(channels).send(&app).await;
    assert_eq!(answer.body["errors"][0]["field"], "external_channels[0]", "{answer:?}");
}

#[tokio::test]
async fn a_notification_channel_given_as_an_object_is_refused() {
    let app = app(&[]);
    let request = json!({"type": "otp", "recipients": [{"phone": "+14155552671"}], "channels": [{"sms": null}],
                         "content": {"sms": {"body": "Your code"}}});
    let answer = call("POST", "/v1/notifications").admin().json(request).send(&app).await;
    assert_eq!(answer.problem().0, 400);
    assert_eq!(answer.body["errors"], json!([{"field": "channels[0]", "message": "must be a string, not an object"}]));
}

#[tokio::test]
async fn an_event_given_as_an_array_is_refused() {
    let app = app(&[]);
    let batch = json!({"events": [["e1", "u1", "order", "2026-12-01T00:00:00Z"]]});
    let answer = call("POST", "/v1/events").admin().json(batch).send(&app).await;
    assert_eq!(answer.body["errors"][0]["field"], "events[0]", "{answer:?}");
}

#[tokio::test]
async fn a_campaign_window_given_as_an_array_is_refused() {
    let app = app(&[]);
    let request = json!({"name": "n", "segment_id": "s1", "template_id": "t", "channels": ["sms"],
                         "local_window": ["09:00", "17:00"]});
    let answer = call("POST", "/v1/campaigns").admin().json(request).send(&app).await;
    assert_eq!(answer.body["errors"], json!([{"field": "local_window", "message": "must be an object, not an array"}]));
}

#[tokio::test]
async fn a_segment_kind_given_as_an_object_is_refused_and_creates_nothing() {
    let app = app(&[]);
    let segment = json!({"segment_id": "s1", "name": "n", "kind": {"static": null}, "user_ids": ["u1"]});
    let answer = call("POST", "/v1/segments").admin().json(segment).send(&app).await;
    assert_eq!(answer.problem().0, 400);
    assert_eq!(answer.body["errors"][0]["field"], "kind", "{answer:?}");
    assert_eq!(call("GET", "/v1/segments/s1").admin().send(&app).await.status, 404);
}

#[tokio::test]
async fn a_null_where_the_document_allows_none_is_refused() {
    let app = app(&[]);
    let template = json!({"channels": {"email": {"subject": "Hi", "body": "Hello", "html": null}}});
    let answer = call("PUT", "/v1/templates/welcome").admin().json(template).send(&app).await;
    assert_eq!(
        answer.body["errors"],
        json!([{"field": "channels.email.html", "message": "must be a string, not null"}]),
        "{answer:?}"
    );
}
