//! The process mode (`HERALD_LOCAL_FUNCTIONS=processes`): every invocation goes to the
//! function's real `bootstrap`, the Cargo binary its template `BuildProperties: Binary`
//! names, run as a process of its own against an emulated Lambda Runtime API
//! ([`crate::runtime_api`]), as Lambda runs it in an execution environment.
//!
//! The events are the in-process mode's, built in one place ([`crate::esm`],
//! [`crate::streams`], [`crate::gateway`]): this module only carries them to a process
//! and its answer back.
//!
//! - **Environment**: the process gets the environment the in-process mode resolves for
//!   that function (the template's, with the `Options`' extra variables), then Lambda's
//!   reserved variables (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`,
//!   `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, `AWS_LAMBDA_FUNCTION_VERSION`, `AWS_REGION`, the
//!   credentials, ...) and `AWS_ENDPOINT_URL`, the stack's endpoint (moto); nothing of
//!   herald-local's own environment.
//! - **Warm and cold**: an environment is started on an invocation that finds none idle
//!   (its init is the process's start up to its first `next`) and kept warm for the next
//!   ones; at most `max_environments` at once per function (a mapping's
//!   `MaximumConcurrency`), the others wait for one.
//! - **Timeout**: an invocation still running at its deadline (the function's template
//!   `Timeout`) has its process killed, as Lambda ends its sandbox, and fails; so does one
//!   whose process exits. A cold start's init counts toward its first invocation's
//!   deadline (Lambda gives init its own 10 s).
//! - **Logs**: each process's stdout and stderr go to herald-local's, or to
//!   `<dir>/<function>.log` (`HERALD_LOCAL_FUNCTION_LOGS`); never parsed.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use aws_lambda_events::{dynamodb::Event, sqs::BatchItemFailure, streams::DynamoDbEventResponse};
use axum::{body::Bytes, http::StatusCode, response::Response};
use base64::Engine as _;
use herald_edge::sqs::{Invocation, Retry, SqsBatchResponse, SqsEvent, SqsHandler, SqsMessage};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::{process::Child, sync::Semaphore};

use crate::{
    errors::LocalError,
    esm::{EventSourceMapping, RealS3Events},
    gateway::HttpFunction,
    provision::Deployment,
    runtime_api::{Outcome, RuntimeApi},
    streams::StreamHandler,
    template::ACCOUNT,
};

/// Where the process mode finds the binaries and puts their logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The directory of the functions' binaries (`cargo build --bins` puts them in
    /// `target/debug`).
    pub binaries: PathBuf,
    /// A directory for `<function>.log` files; None passes each process's output through.
    pub logs: Option<PathBuf>,
}

impl Settings {
    /// `HERALD_LOCAL_BINARIES` (default: the directory of the running executable, the
    /// `target/<profile>` herald-local was built into) and `HERALD_LOCAL_FUNCTION_LOGS`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            binaries: var("HERALD_LOCAL_BINARIES").unwrap_or_else(beside_this_executable),
            logs: var("HERALD_LOCAL_FUNCTION_LOGS"),
        }
    }
}

/// The directory of the running executable; a test's (`target/debug/deps`) gives its
/// parent, where Cargo puts the binaries.
pub fn beside_this_executable() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().map(Path::to_path_buf).unwrap_or(dir),
        _ => dir,
    }
}

/// Why an invocation of a process failed (never with the event or the answer, which may
/// hold personal data).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{binary} did not start: {reason}")]
    Start { binary: String, reason: String },
    #[error("Task timed out after {0:.2} seconds")]
    Timeout(f64),
    #[error("the process exited ({status}){init_error}")]
    Exited { status: String, init_error: String },
    #[error("the function answered an error of type {error_type}")]
    Function { error_type: String },
}

/// One environment's cold start: its init (process start to first `next`) and its first
/// invocation (event handed over to answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdStart {
    pub init: Duration,
    pub first_invoke: Duration,
}

/// How a function's process is started.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The function's logical id.
    pub function: String,
    pub binary: String,
    pub path: PathBuf,
    /// Everything the process gets, Lambda's variables included.
    pub environment: BTreeMap<String, String>,
    pub timeout: Duration,
    pub function_arn: String,
}

struct Environment {
    api: RuntimeApi,
    /// Killed when dropped.
    child: Child,
    started: Instant,
    invocations: u64,
}

/// A function's execution environments: warm processes kept between invocations.
pub struct Function {
    pub bootstrap: Bootstrap,
    logs: Option<PathBuf>,
    idle: Mutex<Vec<Environment>>,
    slots: Semaphore,
    cold_starts: Mutex<Vec<ColdStart>>,
    /// The process id of every environment started.
    started: Mutex<Vec<u32>>,
}

impl Function {
    pub fn new(bootstrap: Bootstrap, logs: Option<PathBuf>, max_environments: u32) -> Self {
        Self {
            bootstrap,
            logs,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max_environments.max(1) as usize),
            cold_starts: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
        }
    }

    /// The process id of every environment started so far.
    pub fn started_processes(&self) -> Vec<u32> {
        self.started.lock().expect("started lock").clone()
    }

    /// The cold starts so far, in the order they ended their first invocation.
    pub fn cold_starts(&self) -> Vec<ColdStart> {
        self.cold_starts.lock().expect("cold starts lock").clone()
    }

    /// Invokes the function with a batch `event` and reads its batch response; None (and
    /// a warning) when the invocation failed or answered something else, which fails the
    /// whole batch.
    async fn invoke_batch<E: Serialize, R: DeserializeOwned>(&self, event: &E, deadline: Instant) -> Option<R> {
        let answer = match serde_json::to_vec(event) {
            Ok(payload) => self.invoke(payload.into(), deadline).await,
            Err(e) => Err(InvokeError::Function { error_type: format!("the event does not serialize: {e}") }),
        };
        let parsed = answer.and_then(|body| {
            serde_json::from_slice::<R>(&body)
                .map_err(|_| InvokeError::Function { error_type: "an answer that is not a batch response".into() })
        });
        parsed
            .inspect_err(|e| {
                tracing::warn!(function = %self.bootstrap.function, error = %e, "the invocation failed its whole batch");
            })
            .ok()
    }

    /// Invokes the function with `payload`, in a warm environment or a new one; kills
    /// the process at `deadline`. Dropping the future kills it too (its invocation
    /// stopped by the caller).
    pub async fn invoke(&self, payload: Bytes, deadline: Instant) -> Result<Bytes, InvokeError> {
        let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
        let mut environment = match self.warm() {
            Some(environment) => environment,
            None => self.start().await?,
        };
        let outcome = {
            let Environment { api, child, .. } = &mut environment;
            tokio::select! {
                outcome = api.invoke(payload, deadline) => outcome,
                status = child.wait() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let init_error =
                        api.init_error().map(|e| format!(", init error {}", e.error_type)).unwrap_or_default();
                    return Err(InvokeError::Exited { status, init_error });
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    // The environment (and its process) is dropped: killed, as Lambda ends it.
                    return Err(InvokeError::Timeout(self.bootstrap.timeout.as_secs_f64()));
                }
            }
        };
        if environment.invocations == 0 {
            let timeline = environment.api.timeline();
            if let (Some(next), Some(event), Some(answer)) =
                (timeline.first_next, timeline.first_event, timeline.first_answer)
            {
                let cold = ColdStart { init: next - environment.started, first_invoke: answer - event };
                self.cold_starts.lock().expect("cold starts lock").push(cold);
            }
        }
        environment.invocations += 1;
        match outcome {
            Ok(Outcome::Response(body)) => {
                self.idle.lock().expect("idle lock").push(environment);
                Ok(body)
            }
            // A reported error leaves the environment as it was: Lambda reuses it.
            Ok(Outcome::Error { error_type, .. }) => {
                self.idle.lock().expect("idle lock").push(environment);
                Err(InvokeError::Function { error_type })
            }
            Err(_) => Err(InvokeError::Exited { status: "runtime API gone".into(), init_error: String::new() }),
        }
    }

    /// An idle environment whose process is still running.
    fn warm(&self) -> Option<Environment> {
        let mut idle = self.idle.lock().expect("idle lock");
        while let Some(mut environment) = idle.pop() {
            if matches!(environment.child.try_wait(), Ok(None)) {
                return Some(environment);
            }
        }
        None
    }

    async fn start(&self) -> Result<Environment, InvokeError> {
        let bootstrap = &self.bootstrap;
        let failed = |reason: String| InvokeError::Start { binary: bootstrap.binary.clone(), reason };
        let api = RuntimeApi::start(bootstrap.function_arn.clone()).await.map_err(|e| failed(e.to_string()))?;
        let mut command = tokio::process::Command::new(&bootstrap.path);
        command
            .env_clear()
            .envs(&bootstrap.environment)
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = &self.logs {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", bootstrap.function)))
                .map_err(|e| failed(format!("its log file: {e}")))?;
            let copy = file.try_clone().map_err(|e| failed(format!("its log file: {e}")))?;
            command.stdout(file).stderr(copy);
        }
        let started = Instant::now();
        let child = command.spawn().map_err(|e| failed(e.to_string()))?;
        self.started.lock().expect("started lock").extend(child.id());
        Ok(Environment { api, child, started, invocations: 0 })
    }

    /// The invocation's deadline: the caller's, or the function's timeout from now.
    pub fn deadline(&self, invocation: Option<Instant>) -> Instant {
        invocation.unwrap_or_else(|| Instant::now() + self.bootstrap.timeout)
    }
}

/// `2026/12/01/[$LATEST]<id>`, as Lambda names a log stream.
fn log_stream_name() -> String {
    format!("{}/[$LATEST]{}", chrono::Utc::now().format("%Y/%m/%d"), uuid::Uuid::new_v4().simple())
}

/// The functions of a stack in process mode, by binary.
pub struct Processes {
    settings: Settings,
    endpoint: String,
    provider_endpoint: Option<String>,
    timeout_scale: f64,
    functions: BTreeMap<String, Arc<Function>>,
}

impl Processes {
    pub fn new(settings: Settings, endpoint: &str, provider_endpoint: Option<&str>, timeout_scale: f64) -> Self {
        Self {
            settings,
            endpoint: endpoint.to_owned(),
            provider_endpoint: provider_endpoint.map(str::to_owned),
            timeout_scale,
            functions: BTreeMap::new(),
        }
    }

    /// Each function started so far, by binary.
    pub fn functions(&self) -> &BTreeMap<String, Arc<Function>> {
        &self.functions
    }

    /// The function built from `binary`, with `environment` (the template's, as the
    /// in-process mode resolves it) and room for `more_environments` more at once.
    pub fn function(
        &mut self,
        deployment: &Deployment,
        binary: &str,
        environment: BTreeMap<String, String>,
        more_environments: u32,
    ) -> Result<Arc<Function>, LocalError> {
        if let Some(function) = self.functions.get(binary) {
            function.slots.add_permits(more_environments as usize);
            return Ok(function.clone());
        }
        let path = self.settings.binaries.join(binary);
        if !path.is_file() {
            return Err(LocalError::Config(format!(
                "{} is not built: build the functions first (cargo build --bins -p herald-api -p herald-worker \
                 -p herald-segmenter -p herald-importer -p herald-dispatcher -p herald-relay -p herald-feedback), or set \
                 HERALD_LOCAL_BINARIES",
                path.display()
            )));
        }
        let template = &deployment.template;
        let resource = template.function_by_binary(binary)?;
        let (physical, stack) = (&deployment.physical, deployment.stack_name.as_str());
        let timeout = template.timeout(resource, physical, stack)?.mul_f64(self.timeout_scale);
        let memory = template.memory_size(resource, physical, stack)?;
        let name = format!("{stack}-{}", resource.logical_id);
        let mut variables = environment;
        variables.extend(lambda_variables(&name, memory, timeout, &self.settings.binaries));
        variables.insert("AWS_ENDPOINT_URL".into(), self.endpoint.clone());
        if let Some(provider) = &self.provider_endpoint {
            // Only the providers go there, as in-process (the SDK's per-service endpoints).
            variables.insert("AWS_ENDPOINT_URL_SESV2".into(), provider.clone());
            variables.insert("AWS_ENDPOINT_URL_SNS".into(), provider.clone());
        }
        let bootstrap = Bootstrap {
            function: resource.logical_id.clone(),
            binary: binary.to_owned(),
            path,
            environment: variables,
            timeout,
            function_arn: format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"),
        };
        let function = Arc::new(Function::new(bootstrap, self.settings.logs.clone(), more_environments));
        self.functions.insert(binary.to_owned(), function.clone());
        Ok(function)
    }
}

const REGION: &str = "us-east-1";

/// The variables Lambda sets in an execution environment (the runtime API's address and
/// the log stream are set per process).
fn lambda_variables(name: &str, memory: u32, timeout: Duration, task_root: &Path) -> BTreeMap<String, String> {
    let task_root = task_root.display().to_string();
    [
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        // Not set by Lambda (the Runtime Interface Emulator reads it); no function reads it.
        ("AWS_LAMBDA_FUNCTION_TIMEOUT", timeout.as_secs().max(1).to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("TZ", ":UTC".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A queue's function as its process: the SQS event in, the batch response out. A
/// function error, a crash or a timeout fails the whole batch (every message named, which
/// Lambda's `ReportBatchItemFailures` mappings, all of Herald's, treat as it treats a
/// function error).
pub struct SqsFunction(pub Arc<Function>);

impl SqsFunction {
    /// One handler per concurrent invocation of `mapping` (the environments are the
    /// function's), the importer's fed real S3 events as in-process.
    pub fn environments(function: Arc<Function>, mapping: &EventSourceMapping) -> Vec<Arc<dyn SqsHandler>> {
        let handler: Arc<dyn SqsHandler> = Arc::new(SqsFunction(function));
        let handler = match mapping.binary.as_deref() {
            Some("herald-importer") => Arc::new(RealS3Events(handler)),
            _ => handler,
        };
        vec![handler; mapping.source.concurrency.max(1) as usize]
    }
}

#[async_trait]
impl SqsHandler for SqsFunction {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let mut event = SqsEvent::default();
        event.records = messages.to_vec();
        let response = self.invoke(event, invocation).await;
        let failed = |m: &SqsMessage| {
            response.batch_item_failures.iter().any(|f| Some(&f.item_identifier) == m.message_id.as_ref())
        };
        Retry::from_handled(messages.iter().map(|m| !failed(m)))
    }

    async fn invoke(&self, event: SqsEvent, invocation: Invocation) -> SqsBatchResponse {
        let deadline = self.0.deadline(invocation.deadline);
        self.0.invoke_batch(&event, deadline).await.unwrap_or_else(|| {
            let mut response = SqsBatchResponse::default();
            for record in &event.records {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone().unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
            response
        })
    }
}

/// A stream's function as its process; a failed invocation retries the whole batch (a
/// failure naming no record).
pub struct StreamFunction(pub Arc<Function>);

#[async_trait]
impl StreamHandler for StreamFunction {
    async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let deadline = self.0.deadline(None);
        self.0.invoke_batch(&event, deadline).await.unwrap_or_else(|| {
            let mut response = DynamoDbEventResponse::default();
            response.batch_item_failures.push(Default::default());
            response
        })
    }
}

/// The API's function as its process: the API Gateway v2 event in, its response out; a
/// failed invocation is answered 500 `{"message":"Internal Server Error"}`, as the HTTP
/// API answers a function error.
pub struct HttpApiFunction(pub Arc<Function>);

#[async_trait]
impl HttpFunction for HttpApiFunction {
    async fn call(&self, event: Value) -> Response {
        let deadline = self.0.deadline(None);
        let answer = self.0.invoke(event.to_string().into(), deadline).await;
        match answer.map_err(|e| e.to_string()).and_then(|body| http_response(&body)) {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(function = %self.0.bootstrap.function, error = %e, "the API invocation failed");
                Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .header("content-type", "application/json")
                    .body(r#"{"message":"Internal Server Error"}"#.into())
                    .expect("a valid response")
            }
        }
    }
}

/// The HTTP response API Gateway makes of a payload 2.0 answer: `statusCode`, `headers`,
/// `multiValueHeaders`, `cookies` (as `set-cookie`), `body` (base64 when `isBase64Encoded`).
pub fn http_response(body: &[u8]) -> Result<Response, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| "an answer that is not JSON".to_owned())?;
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or("an answer without a valid statusCode")?;
    let mut response = Response::builder().status(status);
    let mut named = Vec::new();
    for (name, value) in answer["headers"].as_object().into_iter().flatten() {
        if let Some(value) = value.as_str() {
            response = response.header(name.as_str(), value);
            named.push(name.to_ascii_lowercase());
        }
    }
    for (name, values) in answer["multiValueHeaders"].as_object().into_iter().flatten() {
        if named.contains(&name.to_ascii_lowercase()) {
            continue;
        }
        for value in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
            response = response.header(name.as_str(), value);
        }
    }
    for cookie in answer["cookies"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        response = response.header("set-cookie", cookie);
    }
    let text = answer["body"].as_str().unwrap_or_default();
    let bytes = match answer["isBase64Encoded"].as_bool().unwrap_or(false) {
        true => base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| "a body that is not base64")?,
        false => text.as_bytes().to_vec(),
    };
    response.body(bytes.into()).map_err(|e| format!("an invalid response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(response: Response) -> String {
        String::from_utf8(axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_payload_2_answer_becomes_the_http_response_api_gateway_sends() {
        let answer = serde_json::json!({
            "statusCode": 201,
            "headers": {"content-type": "application/json", "x-one": "1"},
            "multiValueHeaders": {"x-one": ["1"], "x-two": ["a", "b"]},
            "cookies": ["s=1; Path=/"],
            "body": "{\"ok\":true}",
            "isBase64Encoded": false
        });
        let response = http_response(answer.to_string().as_bytes()).unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers().get_all("x-one").iter().count(), 1);
        assert_eq!(response.headers().get_all("x-two").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(response.headers()["set-cookie"], "s=1; Path=/");
        assert_eq!(text(response).await, r#"{"ok":true}"#);
    }

    #[tokio::test]
    async fn a_base64_body_is_decoded() {
        let answer = serde_json::json!({"statusCode": 200, "body": "aGk=", "isBase64Encoded": true, "cookies": []});
        assert_eq!(text(http_response(answer.to_string().as_bytes()).unwrap()).await, "hi");
    }

    #[test]
    fn an_answer_without_a_status_is_refused() {
        assert!(http_response(br#"{"body":"x"}"#).is_err());
        assert!(http_response(b"not json").is_err());
    }

    #[test]
    fn a_test_executable_finds_the_binaries_beside_its_deps_directory() {
        let dir = beside_this_executable();
        assert_ne!(dir.file_name().unwrap(), "deps");
        assert!(dir.join("deps").is_dir(), "{}", dir.display());
    }

    #[test]
    fn the_process_gets_lambdas_variables() {
        let variables = lambda_variables("s-EmailFunction", 256, Duration::from_secs(10), Path::new("/x"));
        assert_eq!(variables["AWS_LAMBDA_FUNCTION_NAME"], "s-EmailFunction");
        assert_eq!(variables["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(variables["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
        assert_eq!(variables["AWS_LAMBDA_FUNCTION_TIMEOUT"], "10");
        assert_eq!(variables["AWS_REGION"], "us-east-1");
    }
}
