//! A fault-injecting proxy in front of the AWS endpoint, for the providers only: it
//! answers some SNS/SES calls with throttling, or every call of one region with 503,
//! and forwards the rest untouched. The workers' real SDK clients go through it, so the
//! SDK's retries, the pipeline's retries and the failover are all exercised for real.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Throttle this share (0..1) of calls whose body or path contains `matching`.
    Throttle { share: f64, matching: String },
    /// Answer 503 to every call signed for `region`.
    RegionDown { region: String },
}

pub struct ChaosProxy {
    pub url: String,
    pub injected: Arc<AtomicUsize>,
    pub forwarded: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Shared {
    target: String,
    fault: Fault,
    http: reqwest::Client,
    injected: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
}

impl ChaosProxy {
    pub async fn start(target: &str, fault: Fault) -> Self {
        let shared = Shared {
            target: target.trim_end_matches('/').to_owned(),
            fault,
            http: reqwest::Client::new(),
            injected: Arc::new(AtomicUsize::new(0)),
            forwarded: Arc::new(AtomicUsize::new(0)),
        };
        let (injected, forwarded) = (shared.injected.clone(), shared.forwarded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(proxy).with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{address}"), injected, forwarded }
    }
}

/// The throttling error of the service `path` is of, as that service's protocol words it.
pub fn throttled(path: &str) -> Response {
    // SES v2 speaks REST-JSON; SNS speaks the query protocol with XML errors.
    if path.starts_with("/v2/email") {
        Response::builder()
            .status(429)
            .header("x-amzn-errortype", "TooManyRequestsException")
            .header("content-type", "application/json")
            .body(r#"{"message":"Too many requests"}"#.into())
            .unwrap()
    } else {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>chaos</RequestId></ErrorResponse>";
        Response::builder().status(400).header("content-type", "text/xml").body(xml.into()).unwrap()
    }
}

async fn proxy(
    State(shared): State<Shared>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let text = String::from_utf8_lossy(&body);
    let inject = match &shared.fault {
        Fault::Throttle { share, matching } => {
            (text.contains(matching.as_str()) || path.contains(matching.as_str())) && rand::random::<f64>() < *share
        }
        Fault::RegionDown { region } => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|auth| auth.contains(&format!("/{region}/"))),
    };
    if inject {
        shared.injected.fetch_add(1, Ordering::SeqCst);
        return match shared.fault {
            Fault::Throttle { .. } => throttled(&path),
            Fault::RegionDown { .. } => Response::builder().status(503).body("Service Unavailable".into()).unwrap(),
        };
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    forward(&shared.http, &shared.target, method, &path, &headers, body).await
}

/// Sends a request on to `target` as it came (its method, path, headers and body) and
/// answers what `target` answered: a proxy's pass-through.
pub async fn forward(
    http: &reqwest::Client,
    target: &str,
    method: axum::http::Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = http.request(method, format!("{target}{path}")).body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response.body(answer.bytes().await.unwrap().into()).unwrap()
}
