//! A fault-injecting proxy in front of the AWS endpoint, for the providers only: it
//! answers some SNS/SES calls with throttling, or every call of one region with 503,
//! and forwards the rest untouched. The workers' real SDK clients go through it, so the
//! SDK's retries, the pipeline's retries and the failover are all exercised for real.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Throttle this share (0..1) of calls whose body, path or `X-Amz-Target` contains
    /// `matching`.
    Throttle { share: f64, matching: String },
    /// Hold this share (0..1) of calls matching as `Throttle` does for `by` before
    /// forwarding them: a slow provider, which makes functions reach their timeout.
    Delay { share: f64, matching: String, by: std::time::Duration },
    /// Every fault of the list, the first that applies to a call.
    All(Vec<Fault>),
    /// Answer 503 to every call signed for `region`.
    RegionDown { region: String },
    /// While `on`, answer an internal error to every call whose `X-Amz-Target` is
    /// `target` (e.g. `AWSEvents.PutEvents`: the bus is down).
    Outage { target: String, on: Arc<AtomicBool> },
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
    let call = Call { path: &path, headers: &headers, body: &String::from_utf8_lossy(&body) };
    let mut delay = std::time::Duration::ZERO;
    if let Some(fault) = applying(&shared.fault, &call) {
        shared.injected.fetch_add(1, Ordering::SeqCst);
        let target = headers.get("x-amz-target").is_some();
        match fault {
            Fault::Throttle { .. } if target => return json_error(400, "ThrottlingException", "Rate exceeded"),
            Fault::Throttle { .. } => return throttled(&path),
            Fault::RegionDown { .. } => {
                return Response::builder().status(503).body("Service Unavailable".into()).unwrap();
            }
            Fault::Outage { .. } => return json_error(500, "InternalException", "chaos: the service is down"),
            Fault::Delay { by, .. } => delay = *by,
            Fault::All(_) => unreachable!("applying answers a single fault"),
        }
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    // A provider handles a request it received even if the caller stops waiting (a
    // function stopped by its timeout): the call goes on in a task of its own.
    let forwarded = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        forward(&shared.http, &shared.target, method, &path, &headers, body).await
    });
    forwarded.await.unwrap()
}

/// What a fault sees of a call.
struct Call<'a> {
    path: &'a str,
    headers: &'a HeaderMap,
    body: &'a str,
}

impl Call<'_> {
    fn matches(&self, matching: &str) -> bool {
        let target = self.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
        self.body.contains(matching) || self.path.contains(matching) || target.contains(matching)
    }
}

/// The fault to inject into `call`, if any (shares drawn at random).
fn applying<'a>(fault: &'a Fault, call: &Call) -> Option<&'a Fault> {
    let applies = match fault {
        Fault::Throttle { share, matching } | Fault::Delay { share, matching, .. } => {
            call.matches(matching) && rand::random::<f64>() < *share
        }
        Fault::RegionDown { region } => call
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|auth| auth.contains(&format!("/{region}/"))),
        Fault::Outage { target, on } => {
            on.load(Ordering::SeqCst)
                && call.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) == Some(target.as_str())
        }
        Fault::All(faults) => return faults.iter().find_map(|f| applying(f, call)),
    };
    applies.then_some(fault)
}

/// An error of a JSON-protocol service (EventBridge, DynamoDB, SQS).
fn json_error(status: u16, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(format!(r#"{{"__type":"{code}","message":"{message}"}}"#).into())
        .unwrap()
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
