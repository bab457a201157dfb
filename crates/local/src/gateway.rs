//! Plays API Gateway (HTTP API, payload format 2.0): each HTTP request becomes the event
//! Lambda would receive, decoded by lambda_http and answered by the API's router exactly
//! as in the deployed function.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{body::Body as AxumBody, extract::ConnectInfo, http::StatusCode, response::Response};
use base64::Engine as _;
use herald_api::App;
use lambda_http::Body;
use serde_json::{Map, Value, json};

use herald_core::limits::api_gateway::PAYLOAD_BYTES as GATEWAY_MAX_BODY;

use crate::{
    errors::LocalError,
    template::{Physical, Template},
};

/// What the API's integration invokes with each request's payload 2.0 event: the
/// router in-process, or the function's process ([`crate::processes`]).
#[async_trait::async_trait]
pub trait HttpFunction: Send + Sync {
    async fn call(&self, event: Value) -> Response;
}

/// The API's router in this process, decoding the event as lambda_http does in the
/// deployed function.
#[async_trait::async_trait]
impl HttpFunction for App {
    async fn call(&self, event: Value) -> Response {
        let request = match lambda_http::request::from_str(&event.to_string()) {
            Ok(r) => r,
            Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("not a valid API Gateway event: {e}")),
        };
        let response = self.handle(request).await;
        let (parts, body) = response.into_parts();
        let body = match body {
            Body::Empty => AxumBody::empty(),
            Body::Text(t) => AxumBody::from(t),
            Body::Binary(b) => AxumBody::from(b),
            _ => AxumBody::empty(),
        };
        Response::from_parts(parts, body)
    }
}

/// The API as the stage serves it: throttled as the template's `DefaultRouteSettings` say
/// (none: unthrottled), then each request handed to the function.
pub fn router(app: Arc<App>, throttle: Option<Throttle>) -> axum::Router {
    router_to(app, throttle)
}

/// [`router`] for any function behind the API.
pub fn router_to(function: Arc<dyn HttpFunction>, throttle: Option<Throttle>) -> axum::Router {
    let router = axum::Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, request: axum::extract::Request| {
            let function = function.clone();
            async move { invoke(function.as_ref(), peer, request).await }
        },
    );
    match throttle {
        Some(throttle) => throttled(router, throttle),
        None => router,
    }
}

/// Answers 429 as API Gateway does, before the function is invoked, to what is over the
/// bucket.
pub fn throttled(router: axum::Router, throttle: Throttle) -> axum::Router {
    let bucket = Arc::new(Mutex::new(throttle.bucket()));
    router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let admitted = bucket.lock().expect("bucket lock").admit(Instant::now());
        async move {
            if admitted {
                next.run(request).await
            } else {
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("content-type", "application/json")
                    .body(AxumBody::from(r#"{"message":"Too Many Requests"}"#))
                    .expect("a valid response")
            }
        }
    }))
}

/// An HTTP API stage's route throttling: a token bucket of `burst` tokens, refilled at
/// `rate` a second, one token per request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    pub rate: f64,
    pub burst: f64,
}

impl Throttle {
    /// The `DefaultRouteSettings` of the template's HTTP API, parameters resolved; None
    /// when it sets no throttling (API Gateway then applies only the account's quota,
    /// which the local stack does not play).
    pub fn from_template(template: &Template) -> Result<Option<Self>, LocalError> {
        let Some(api) = template.resources_of_type("AWS::Serverless::HttpApi").next() else {
            return Ok(None);
        };
        let settings = &api.properties["DefaultRouteSettings"];
        let number = |name: &str| -> Result<Option<f64>, LocalError> {
            let Some(value) = settings.get(name) else { return Ok(None) };
            let text = template.resolve(value, &Physical::default(), "")?;
            let number = text.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0);
            number.map(Some).ok_or_else(|| {
                LocalError::Template(format!("{}: {name} {text:?} is not a number of requests", api.logical_id))
            })
        };
        Ok(match (number("ThrottlingRateLimit")?, number("ThrottlingBurstLimit")?) {
            (None, None) => None,
            // One set alone leaves the other unbounded, as API Gateway does.
            (rate, burst) => Some(Self { rate: rate.unwrap_or(f64::INFINITY), burst: burst.unwrap_or(f64::INFINITY) }),
        })
    }

    fn bucket(self) -> TokenBucket {
        TokenBucket { throttle: self, tokens: self.burst, filled_at: None }
    }
}

/// Starts full; `admit` takes a token if there is one.
#[derive(Debug)]
struct TokenBucket {
    throttle: Throttle,
    tokens: f64,
    filled_at: Option<Instant>,
}

impl TokenBucket {
    fn admit(&mut self, now: Instant) -> bool {
        if let Some(filled_at) = self.filled_at {
            let refill = now.saturating_duration_since(filled_at).as_secs_f64() * self.throttle.rate;
            self.tokens = (self.tokens + refill).min(self.throttle.burst);
        }
        self.filled_at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The API function's logical id in the template (what its invocations are billed as).
pub const API_FUNCTION: &str = "ApiFunction";

async fn invoke(function: &dyn HttpFunction, peer: SocketAddr, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, GATEWAY_MAX_BODY).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let started = std::time::Instant::now();
    let response = function.call(api_gateway_v2_event(&parts, &body, peer)).await;
    crate::billed::record(API_FUNCTION, started);
    response
}

/// The payload API Gateway sends a Lambda for an HTTP API `$default` route.
pub fn api_gateway_v2_event(parts: &axum::http::request::Parts, body: &[u8], peer: SocketAddr) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(value.split("; ").map(str::to_owned));
            continue;
        }
        // Repeated headers arrive joined by commas in payload 2.0.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let query = parts.uri.query().unwrap_or_default();
    let mut parameters = Map::new();
    for (k, v) in url_pairs(query) {
        match parameters.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                parameters.insert(k, Value::String(v));
            }
        }
    }
    let (body, is_base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    let now = chrono::Utc::now();
    let user_agent = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": query,
        "cookies": if cookies.is_empty() { Value::Null } else { json!(cookies) },
        "headers": headers,
        "queryStringParameters": if parameters.is_empty() { Value::Null } else { Value::Object(parameters) },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("localhost"),
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": format!("{:?}", parts.version),
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn plain(status: StatusCode, message: &str) -> Response {
    Response::builder().status(status).body(AxumBody::from(message.to_owned())).expect("a valid response")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt as _;

    use super::*;

    fn bucket(rate: f64, burst: f64) -> TokenBucket {
        Throttle { rate, burst }.bucket()
    }

    #[test]
    fn a_full_bucket_admits_its_burst_at_once_then_refuses() {
        let mut bucket = bucket(1.0, 3.0);
        let now = Instant::now();
        assert_eq!((0..4).map(|_| bucket.admit(now)).collect::<Vec<_>>(), [true, true, true, false]);
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let mut bucket = bucket(10.0, 1.0);
        let start = Instant::now();
        assert!(bucket.admit(start));
        assert!(!bucket.admit(start + Duration::from_millis(50)));
        assert!(bucket.admit(start + Duration::from_millis(150)));
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_its_burst() {
        let mut bucket = bucket(100.0, 2.0);
        let later = Instant::now() + Duration::from_secs(3600);
        bucket.admit(later - Duration::from_secs(3600));
        assert_eq!((0..3).map(|_| bucket.admit(later)).collect::<Vec<_>>(), [true, true, false]);
    }

    #[test]
    fn a_burst_of_zero_refuses_everything() {
        assert!(!bucket(100.0, 0.0).admit(Instant::now()));
    }

    #[tokio::test]
    async fn a_request_over_the_limit_is_answered_429_as_api_gateway_does_without_invoking() {
        let invoked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = invoked.clone();
        let function = axum::Router::new().fallback(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "invoked" }
        });
        let router = throttled(function, Throttle { rate: 0.001, burst: 1.0 });
        let get = || axum::http::Request::get("/v1/users/u").body(AxumBody::empty()).unwrap();

        assert_eq!(router.clone().oneshot(get()).await.unwrap().status(), StatusCode::OK);
        let refused = router.oneshot(get()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(refused.into_body(), 1024).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"message": "Too Many Requests"}));
        assert_eq!(invoked.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    fn real_template() -> Template {
        Template::load(&crate::repo_root().join("infra/template.yaml")).unwrap()
    }

    #[test]
    fn the_template_throttles_the_api_at_100_a_second_in_bursts_of_200_by_default() {
        assert_eq!(Throttle::from_template(&real_template()).unwrap(), Some(Throttle { rate: 100.0, burst: 200.0 }));
    }

    #[test]
    fn the_throttle_follows_the_template_parameters() {
        let mut template = real_template();
        template.set_parameter("ApiThrottlingRateLimit", "5");
        template.set_parameter("ApiThrottlingBurstLimit", "7");
        assert_eq!(Throttle::from_template(&template).unwrap(), Some(Throttle { rate: 5.0, burst: 7.0 }));
    }

    #[test]
    fn an_api_without_route_settings_is_not_throttled() {
        let template =
            Template::parse("Resources:\n  Api: {Type: AWS::Serverless::HttpApi, Properties: {}}\n").unwrap();
        assert_eq!(Throttle::from_template(&template).unwrap(), None);
    }
}
