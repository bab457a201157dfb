//! Lambda's Runtime API, as one execution environment serves it to its `bootstrap`
//! process (the 2018-06-01 API that `lambda_runtime` calls at `AWS_LAMBDA_RUNTIME_API`):
//!
//! - `GET /2018-06-01/runtime/invocation/next` waits for the next event and answers it
//!   (200) with `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms` (Unix
//!   milliseconds), `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`;
//! - `POST /2018-06-01/runtime/invocation/{id}/response` takes the function's answer (202),
//!   400 for an id that is not the invocation in hand, 413 past Lambda's 6 MB (the
//!   invocation then fails as `Function.ResponseSizeTooLarge`, as in Lambda);
//! - `POST /2018-06-01/runtime/invocation/{id}/error` takes a function error (202): its
//!   `Lambda-Runtime-Function-Error-Type` header and its JSON body;
//! - `POST /2018-06-01/runtime/init/error` takes an error of the init phase (202).
//!
//! One server per execution environment, as each Lambda sandbox has its own endpoint: an
//! environment holds one invocation at a time.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// Lambda's limit on a synchronous invocation's response (6 MB).
pub const RESPONSE_LIMIT_BYTES: usize = 6 * 1024 * 1024;

/// How an invocation ended, as the runtime reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The function's answer (`/response`).
    Response(Bytes),
    /// A function error (`/error`): its type and its body (`{"errorType", "errorMessage"}`).
    Error { error_type: String, body: Bytes },
}

/// When the environment reached each step, for the init and first-invoke figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    /// The runtime's first `next`: the end of its init phase.
    pub first_next: Option<Instant>,
    /// The first event handed to it.
    pub first_event: Option<Instant>,
    /// Its first answer (response or error).
    pub first_answer: Option<Instant>,
}

/// An error the runtime reported at `/init/error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitError {
    pub error_type: String,
    pub body: Bytes,
}

struct Pending {
    request_id: String,
    payload: Bytes,
    deadline: SystemTime,
    answer: oneshot::Sender<Outcome>,
}

struct Shared {
    function_arn: String,
    events: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    /// The invocation the runtime holds: its id and where its outcome goes.
    in_hand: Mutex<Option<(String, oneshot::Sender<Outcome>)>>,
    timeline: Mutex<Timeline>,
    init_error: Mutex<Option<InitError>>,
}

/// The Runtime API of one execution environment, on a port of its own on 127.0.0.1.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::Sender<Pending>,
    server: JoinHandle<()>,
}

/// The environment's runtime is gone (its server stopped) before answering.
#[derive(Debug, thiserror::Error)]
#[error("the runtime API stopped before the invocation was answered")]
pub struct Unanswered;

impl RuntimeApi {
    /// Serves the API for a function whose ARN is `function_arn`.
    pub async fn start(function_arn: impl Into<String>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (events, receiver) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            function_arn: function_arn.into(),
            events: tokio::sync::Mutex::new(receiver),
            in_hand: Mutex::new(None),
            timeline: Mutex::new(Timeline::default()),
            init_error: Mutex::new(None),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "a runtime API server failed");
            }
        });
        Ok(Self { address, shared, events, server })
    }

    /// What `AWS_LAMBDA_RUNTIME_API` is set to: `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    pub fn timeline(&self) -> Timeline {
        *self.shared.timeline.lock().expect("timeline lock")
    }

    /// What the runtime reported at `/init/error`, if it did.
    pub fn init_error(&self) -> Option<InitError> {
        self.shared.init_error.lock().expect("init error lock").clone()
    }

    /// Hands `payload` to the runtime's next `next`, with `deadline` as its
    /// `Lambda-Runtime-Deadline-Ms`; resolves with the runtime's answer.
    pub async fn invoke(&self, payload: Bytes, deadline: Instant) -> Result<Outcome, Unanswered> {
        let (answer, answered) = oneshot::channel();
        let left = deadline.saturating_duration_since(Instant::now());
        let pending = Pending {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload,
            deadline: SystemTime::now() + left,
            answer,
        };
        self.events.send(pending).await.map_err(|_| Unanswered)?;
        answered.await.map_err(|_| Unanswered)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    {
        let mut timeline = shared.timeline.lock().expect("timeline lock");
        timeline.first_next.get_or_insert_with(Instant::now);
    }
    let Some(pending) = shared.events.lock().await.recv().await else {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "the environment is shutting down");
    };
    shared.timeline.lock().expect("timeline lock").first_event.get_or_insert_with(Instant::now);
    let deadline_ms = pending.deadline.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", pending.request_id.clone());
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", shared.function_arn.clone());
    set("lambda-runtime-trace-id", trace_id());
    set("content-type", "application/json".into());
    *shared.in_hand.lock().expect("in-hand lock") = Some((pending.request_id, pending.answer));
    (StatusCode::OK, headers, pending.payload).into_response()
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, request: Request) -> Response {
    let Some(answer) = take_in_hand(&shared, &id) else { return unknown_request(&id) };
    match axum::body::to_bytes(request.into_body(), RESPONSE_LIMIT_BYTES).await {
        Ok(body) => {
            let _ = answer.send(Outcome::Response(body));
            accepted()
        }
        Err(_) => {
            let body = Bytes::from_static(
                br#"{"errorType":"Function.ResponseSizeTooLarge","errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes)."}"#,
            );
            let _ = answer.send(Outcome::Error { error_type: "Function.ResponseSizeTooLarge".into(), body });
            problem(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", "the response exceeds 6 MB")
        }
    }
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, request: Request) -> Response {
    let Some(answer) = take_in_hand(&shared, &id) else { return unknown_request(&id) };
    let error_type = error_type(request.headers());
    let body = axum::body::to_bytes(request.into_body(), RESPONSE_LIMIT_BYTES).await.unwrap_or_default();
    let _ = answer.send(Outcome::Error { error_type, body });
    accepted()
}

async fn init_error(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let error_type = error_type(request.headers());
    let body = axum::body::to_bytes(request.into_body(), RESPONSE_LIMIT_BYTES).await.unwrap_or_default();
    *shared.init_error.lock().expect("init error lock") = Some(InitError { error_type, body });
    accepted()
}

/// The invocation in hand if its id is `id`, answered once.
fn take_in_hand(shared: &Shared, id: &str) -> Option<oneshot::Sender<Outcome>> {
    let mut in_hand = shared.in_hand.lock().expect("in-hand lock");
    if in_hand.as_ref().is_some_and(|(held, _)| held == id) {
        let (_, answer) = in_hand.take()?;
        shared.timeline.lock().expect("timeline lock").first_answer.get_or_insert_with(Instant::now);
        return Some(answer);
    }
    None
}

fn error_type(headers: &HeaderMap) -> String {
    headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).unwrap_or("Unhandled").to_owned()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [("content-type", "application/json")], r#"{"status":"OK"}"#).into_response()
}

fn unknown_request(id: &str) -> Response {
    let _ = id;
    problem(StatusCode::BAD_REQUEST, "InvalidRequestID", "no invocation in hand has this request id")
}

fn problem(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a valid response")
}

/// An X-Ray trace header as Lambda sets it (`Root=1-<time>-<id>;Parent=<id>;Sampled=0`).
fn trace_id() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{seconds:08x}-{};Parent={};Sampled=0", &id[..24], &id[16..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn client_get(api: &RuntimeApi, path: &str) -> reqwest::Response {
        reqwest::get(format!("http://{}{path}", api.address())).await.unwrap()
    }

    async fn client_post(api: &RuntimeApi, path: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
        let mut request = reqwest::Client::new().post(format!("http://{}{path}", api.address())).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:s-EmailFunction";

    #[tokio::test]
    async fn next_answers_the_event_with_lambdas_headers_and_response_answers_the_invocation() {
        let api = RuntimeApi::start(ARN).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let invoked = api.invoke(Bytes::from_static(br#"{"Records":[]}"#), deadline);
        let runtime = async {
            let next = client_get(&api, "/2018-06-01/runtime/invocation/next").await;
            assert_eq!(next.status(), 200);
            let headers = next.headers().clone();
            let id = headers["lambda-runtime-aws-request-id"].to_str().unwrap().to_owned();
            assert_eq!(headers["lambda-runtime-invoked-function-arn"], ARN);
            assert!(headers["lambda-runtime-trace-id"].to_str().unwrap().starts_with("Root=1-"));
            let deadline_ms: u128 = headers["lambda-runtime-deadline-ms"].to_str().unwrap().parse().unwrap();
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
            assert!((now_ms + 9_000..=now_ms + 10_100).contains(&deadline_ms), "{deadline_ms} vs {now_ms}");
            assert_eq!(next.text().await.unwrap(), r#"{"Records":[]}"#);
            let answered =
                client_post(&api, &format!("/2018-06-01/runtime/invocation/{id}/response"), &[], r#"{"ok":1}"#).await;
            assert_eq!(answered.status(), 202);
        };
        let (outcome, ()) = tokio::join!(invoked, runtime);
        assert_eq!(outcome.unwrap(), Outcome::Response(Bytes::from_static(br#"{"ok":1}"#)));
        let timeline = api.timeline();
        assert!(timeline.first_next.is_some() && timeline.first_event.is_some() && timeline.first_answer.is_some());
    }

    #[tokio::test]
    async fn an_error_is_the_invocations_outcome_with_its_type() {
        let api = RuntimeApi::start(ARN).await.unwrap();
        let invoked = api.invoke(Bytes::from_static(b"{}"), Instant::now() + Duration::from_secs(5));
        let runtime = async {
            let next = client_get(&api, "/2018-06-01/runtime/invocation/next").await;
            let id = next.headers()["lambda-runtime-aws-request-id"].to_str().unwrap().to_owned();
            let body = r#"{"errorType":"x","errorMessage":"boom"}"#;
            let path = format!("/2018-06-01/runtime/invocation/{id}/error");
            let answered = client_post(&api, &path, &[("lambda-runtime-function-error-type", "unhandled")], body).await;
            assert_eq!(answered.status(), 202);
        };
        let (outcome, ()) = tokio::join!(invoked, runtime);
        assert!(matches!(outcome.unwrap(), Outcome::Error { error_type, .. } if error_type == "unhandled"));
    }

    #[tokio::test]
    async fn an_answer_for_another_request_id_is_refused() {
        let api = RuntimeApi::start(ARN).await.unwrap();
        let answered = client_post(&api, "/2018-06-01/runtime/invocation/nope/response", &[], "{}").await;
        assert_eq!(answered.status(), 400);
    }

    #[tokio::test]
    async fn an_init_error_is_recorded() {
        let api = RuntimeApi::start(ARN).await.unwrap();
        assert_eq!(api.init_error(), None);
        let headers = [("lambda-runtime-function-error-type", "Runtime.InitError")];
        let answered = client_post(&api, "/2018-06-01/runtime/init/error", &headers, r#"{"errorType":"e"}"#).await;
        assert_eq!(answered.status(), 202);
        assert_eq!(api.init_error().unwrap().error_type, "Runtime.InitError");
    }
}
