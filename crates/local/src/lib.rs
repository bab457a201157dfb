//! The local stack: the whole of Herald on one machine. It starts (or joins) an
//! AWS-compatible endpoint, creates the resources infra/template.yaml declares, and
//! serves the API as API Gateway would, calling the same handler the Lambda runs. It
//! plays Lambda's SQS event source mappings too: each worker's queue is polled and its
//! batches handed to the same handler the deployed worker runs, and so are the segmenter's
//! and the dispatcher's (campaign pages). Files written under a bucket's notified prefix
//! reach the importer the same way, as real S3 events; log groups' subscription filters
//! (SNS's SMS delivery status) reach the feedback function as CloudWatch Logs' events.

pub mod billed;
pub mod errors;
pub mod esm;
pub mod gateway;
pub mod logs;
pub mod moto;
pub mod processes;
pub mod provision;
pub mod runtime_api;
pub mod s3;
pub mod schedule;
pub mod streams;
pub mod template;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use herald_api::{App, Config};
use herald_aws::{Clients, DynamoApiKeyStore};
use herald_core::{
    channel::Channel,
    keys,
    keys::{ApiKeyStore, Scope},
};
use herald_dispatcher::{DispatcherConfig, DispatcherHandler};
use herald_feedback::{FeedbackConfig, FeedbackHandler};
use herald_importer::{ImporterConfig, ImporterHandler};
use herald_relay::{RelayConfig, RelayHandler};
use herald_segmenter::{SegmenterConfig, SegmenterHandler};
use herald_worker::{WorkerConfig, WorkerHandler};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::esm::{EventSourceMapping, SqsHandler};

pub use errors::LocalError;
pub use moto::MotoServer;
pub use provision::Deployment;
pub use template::Template;

/// The repository the binary was built from: where the template and the venv live.
pub fn repo_root() -> PathBuf {
    std::env::var_os("HERALD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The shell block of README.md between the walkthrough markers: what the tests run as a
/// user would, so the README's commands cannot go stale.
pub fn readme_walkthrough() -> std::io::Result<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    let block = readme
        .find("<!-- walkthrough:start -->")
        .zip(readme.find("<!-- walkthrough:end -->"))
        .map(|(start, end)| &readme[start..end])
        .ok_or_else(|| std::io::Error::other("README.md has no walkthrough markers"))?;
    Ok(block.lines().filter(|l| !l.starts_with("```") && !l.starts_with("<!--")).collect::<Vec<_>>().join("\n"))
}

#[derive(Clone, Debug)]
pub struct Options {
    /// An AWS-compatible endpoint to join; None starts moto.
    pub endpoint: Option<String>,
    /// Where the API listens on 127.0.0.1; 0 picks a free port.
    pub port: u16,
    /// The admin key to install; None generates one.
    pub admin_key: Option<String>,
    /// Prefix of every resource name, so several stacks can share one endpoint.
    pub stack_name: String,
    pub template: PathBuf,
    /// Extra variables for every worker and the importer, over the template's (e.g. a
    /// test's webhook CA, an import's slice size).
    pub worker_environment: BTreeMap<String, String>,
    /// Extra variables for the dispatcher, over the template's (e.g. a test's short
    /// `SETTLE_CHECK_SECONDS`).
    pub dispatcher_environment: BTreeMap<String, String>,
    /// Stretches every function's template `Timeout` (1: as deployed). moto is far slower
    /// than the services it plays, most of all under a whole suite: a test about
    /// something else than timeouts may give its functions more time.
    pub timeout_scale: f64,
    /// Where workers reach SES and SNS, when not at `endpoint` (e.g. a fault-injecting
    /// proxy in front of it).
    pub provider_endpoint: Option<String>,
    /// Counts every AWS request the stack's handlers send (benchmarks).
    pub request_counter: Option<herald_aws::RequestCounter>,
    /// The share of channel worker invocations whose timeout is drawn at random, from a
    /// tenth of the template's to nine tenths, and told to them as their deadline (chaos:
    /// timeouts that strike at any point of the work; 0 as deployed).
    pub worker_random_timeout_share: f64,
    /// Template parameter values, as `sam deploy --parameter-overrides` gives them.
    pub parameters: BTreeMap<String, String>,
    /// How the functions run: in this process (the default) or as their real binaries.
    pub functions: Functions,
}

/// How the stack runs its functions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Functions {
    /// Each handler is called in this process (what the suites use).
    #[default]
    InProcess,
    /// Each invocation goes to the function's real `bootstrap` binary, a process of its
    /// own against an emulated Lambda Runtime API ([`processes`]).
    Processes(processes::Settings),
}

impl Functions {
    /// `HERALD_LOCAL_FUNCTIONS`: `in-process` (or unset) or `processes` (then
    /// `HERALD_LOCAL_BINARIES` and `HERALD_LOCAL_FUNCTION_LOGS`, see [`processes::Settings`]).
    pub fn from_env() -> Result<Self, LocalError> {
        match std::env::var("HERALD_LOCAL_FUNCTIONS").ok().filter(|v| !v.is_empty()).as_deref() {
            None | Some("in-process") => Ok(Functions::InProcess),
            Some("processes") => Ok(Functions::Processes(processes::Settings::from_env())),
            Some(other) => {
                Err(LocalError::Config(format!("HERALD_LOCAL_FUNCTIONS={other:?} is neither in-process nor processes")))
            }
        }
    }
}

impl Options {
    /// `AWS_ENDPOINT_URL`, `HERALD_PORT` (default 3000), `HERALD_ADMIN_KEY`,
    /// `HERALD_STACK` (default `herald`), `HERALD_TEMPLATE` and `HERALD_PARAMETERS`
    /// (`Name=Value` pairs apart by spaces, e.g. `ApiThrottlingBurstLimit=1000`).
    pub fn from_env() -> Result<Self, LocalError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let port = match var("HERALD_PORT") {
            Some(p) => p.parse().map_err(|_| LocalError::Config(format!("HERALD_PORT={p:?} is not a port number")))?,
            None => 3000,
        };
        Ok(Self {
            endpoint: var("AWS_ENDPOINT_URL"),
            port,
            admin_key: var("HERALD_ADMIN_KEY"),
            stack_name: var("HERALD_STACK").unwrap_or_else(|| "herald".into()),
            template: var("HERALD_TEMPLATE")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("infra/template.yaml")),
            worker_environment: BTreeMap::new(),
            dispatcher_environment: BTreeMap::new(),
            timeout_scale: 1.0,
            provider_endpoint: None,
            request_counter: None,
            worker_random_timeout_share: 0.0,
            parameters: parse_parameters(&var("HERALD_PARAMETERS").unwrap_or_default())?,
            functions: Functions::from_env()?,
        })
    }
}

/// `Name=Value Name=Value`, as `sam deploy --parameter-overrides` takes them.
fn parse_parameters(text: &str) -> Result<BTreeMap<String, String>, LocalError> {
    text.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(LocalError::Config("HERALD_PARAMETERS holds a pair that is not Name=Value".into())),
        })
        .collect()
}

pub struct LocalStack {
    /// The AWS-compatible endpoint in use.
    pub endpoint: String,
    /// Base URL of the API, e.g. `http://127.0.0.1:3000`.
    pub api_url: String,
    pub admin_key: String,
    pub deployment: Deployment,
    pub clients: Clients,
    pub api_config: Config,
    /// The SQS event sources being polled, one per worker function.
    pub event_sources: Vec<EventSourceMapping>,
    moto: Option<MotoServer>,
    server: JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
    workers: Vec<(Channel, Arc<WorkerHandler>)>,
    segmenter: Option<Arc<SegmenterHandler>>,
    importer: Option<Arc<ImporterHandler>>,
    dispatcher: Option<Arc<DispatcherHandler>>,
    feedback: Option<Arc<FeedbackHandler>>,
    relay: Option<Arc<RelayHandler>>,
    processes: Option<processes::Processes>,
    schedules: Vec<schedule::Schedule>,
    pollers: Vec<JoinHandle<()>>,
    stop_pollers: esm::Stopper,
}

impl LocalStack {
    pub async fn start(options: Options) -> Result<Self, LocalError> {
        let mut template = Template::load(&options.template)?;
        let extra = ExtraEnvironment {
            workers: options.worker_environment.clone(),
            dispatcher: options.dispatcher_environment.clone(),
        };
        for (name, value) in &options.parameters {
            template.set_parameter(name, value.clone());
        }
        let throttle = gateway::Throttle::from_template(&template)?;
        // Bound first: tracking links in email point at this address.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|e| LocalError::Config(format!("cannot listen on 127.0.0.1:{}: {e}", options.port)))?;
        let address = listener.local_addr().map_err(|e| LocalError::Config(e.to_string()))?;
        template.set_parameter("TrackingBaseUrl", format!("http://{address}"));
        let (moto, endpoint) = match options.endpoint {
            Some(endpoint) => (None, endpoint),
            None => {
                let moto = MotoServer::start().await?;
                let endpoint = moto.endpoint.clone();
                (Some(moto), endpoint)
            }
        };
        let connect = async |endpoint: &str| {
            let config = herald_aws::local_sdk_config(endpoint).await;
            match &options.request_counter {
                Some(counter) => Clients::counted(&config, counter),
                None => Clients::new(&config),
            }
        };
        let clients = connect(&endpoint).await;
        let deployment = provision::deploy(&clients, &template, &options.stack_name).await?;
        let environment = deployment.function_environment("herald-api")?;
        let api_config = Config::from_lookup(|name| environment.get(name).cloned())
            .map_err(|e| LocalError::Config(e.to_string()))?;

        let admin_key = options.admin_key.unwrap_or_else(keys::generate_secret);
        DynamoApiKeyStore::new(clients.dynamodb(), &api_config.api_keys_table)
            .put(&keys::new_key(&admin_key, "local admin", [Scope::Admin]))
            .await
            .map_err(|e| LocalError::Aws(e.to_string()))?;

        let provider_clients = match &options.provider_endpoint {
            Some(endpoint) => connect(endpoint).await,
            None => clients.clone(),
        };
        // Only the providers (SES, SNS) go through the provider endpoint: a worker's tables
        // and its own queue (re-enqueued recipients) stay on the stack's endpoint.
        let provider_clients = provider_clients.with_stores_of(&clients);
        let retry_delay = esm::retry_delay_from_env()?;
        let concurrency_cap = esm::max_concurrency_from_env()?;
        let mut event_sources = Vec::new();
        // Per mapping, the handler of each concurrent invocation.
        let mut handlers: Vec<Vec<Arc<dyn SqsHandler>>> = Vec::new();
        let mut workers = Vec::new();
        let mut segmenter = None;
        let mut importer = None;
        let mut dispatcher = None;
        let mut feedback = None;
        let mut processes = match &options.functions {
            Functions::InProcess => None,
            Functions::Processes(settings) => Some(processes::Processes::new(
                settings.clone(),
                &endpoint,
                options.provider_endpoint.as_deref(),
                options.timeout_scale,
            )),
        };
        for mut mapping in esm::sqs_event_sources(&deployment, retry_delay, concurrency_cap)? {
            mapping.timeout = mapping.timeout.mul_f64(options.timeout_scale);
            if let Some(processes) = processes.as_mut() {
                let binary = binary_of(&mapping.function, mapping.binary.as_deref())?;
                let environment = function_environment(&deployment, binary, &extra)?;
                let function = processes.function(&deployment, binary, environment, mapping.source.concurrency)?;
                handlers.push(processes::SqsFunction::environments(function, &mapping));
                if binary.starts_with("herald-worker-") {
                    mapping.random_timeout_share = options.worker_random_timeout_share;
                }
                event_sources.push(mapping);
                continue;
            }
            let each = |handler: Arc<dyn SqsHandler>| esm::shared(handler, &mapping);
            if mapping.binary.as_deref() == Some("herald-segmenter") {
                let function = Arc::new(segmenter_for(&deployment, &clients)?);
                handlers.push(each(function.clone()));
                segmenter = Some(function);
                event_sources.push(mapping);
                continue;
            }
            if mapping.binary.as_deref() == Some("herald-importer") {
                let function = Arc::new(importer_for(&deployment, &clients, &extra)?);
                handlers.push(each(Arc::new(esm::RealS3Events(function.clone()))));
                importer = Some(function);
                event_sources.push(mapping);
                continue;
            }
            if mapping.binary.as_deref() == Some("herald-feedback") {
                let function = Arc::new(feedback_for(&deployment, &clients)?);
                handlers.push(each(function.clone()));
                feedback = Some(function);
                event_sources.push(mapping);
                continue;
            }
            if mapping.binary.as_deref() == Some("herald-dispatcher") {
                let function = Arc::new(dispatcher_for(&deployment, &clients, &extra)?);
                handlers.push(each(function.clone()));
                dispatcher = Some(function);
                event_sources.push(mapping);
                continue;
            }
            match worker_for(&deployment, &provider_clients, &mapping, &extra).await? {
                Some(worker) => {
                    // One worker per concurrent invocation, as Lambda runs each in an
                    // environment of its own: its pacer and campaign cache are its own.
                    let mut environments: Vec<Arc<dyn SqsHandler>> = vec![worker.1.clone()];
                    for _ in 1..mapping.source.concurrency.max(1) {
                        let (_, other) = worker_for(&deployment, &provider_clients, &mapping, &extra)
                            .await?
                            .expect("the same worker again");
                        environments.push(other);
                    }
                    handlers.push(environments);
                    workers.push(worker);
                    mapping.random_timeout_share = options.worker_random_timeout_share;
                    event_sources.push(mapping);
                }
                None => tracing::warn!(
                    function = %mapping.function,
                    "the local stack has no handler for this function's binary: its queue is not polled"
                ),
            }
        }

        let mut streams = Vec::new();
        let mut relay: Option<Arc<RelayHandler>> = None;
        for source in streams::stream_event_sources(&deployment, retry_delay)? {
            if let Some(processes) = processes.as_mut() {
                let binary = binary_of(&source.function, source.binary.as_deref())?;
                let environment = function_environment(&deployment, binary, &extra)?;
                let function = processes.function(&deployment, binary, environment, 1)?;
                streams
                    .push((source, Arc::new(processes::StreamFunction(function)) as Arc<dyn streams::StreamHandler>));
                continue;
            }
            match source.binary.as_deref() {
                Some("herald-relay") => {
                    // One relay for both tables' streams, as one function is deployed.
                    let function = match &relay {
                        Some(function) => function.clone(),
                        None => Arc::new(relay_for(&deployment, &clients)?),
                    };
                    relay = Some(function.clone());
                    streams.push((source, function as Arc<dyn streams::StreamHandler>));
                }
                _ => tracing::warn!(
                    function = %source.function,
                    "the local stack has no handler for this function's binary: its stream is not read"
                ),
            }
        }

        let mut subscriptions: Vec<(logs::Subscription, Arc<dyn logs::LogsHandler>)> = Vec::new();
        for subscription in logs::subscriptions(&deployment, retry_delay)? {
            let binary = binary_of(&subscription.function, subscription.binary.as_deref())?;
            let handler: Arc<dyn logs::LogsHandler> = match (processes.as_mut(), binary) {
                (Some(processes), _) => {
                    let environment = function_environment(&deployment, binary, &extra)?;
                    Arc::new(logs::Process(processes.function(&deployment, binary, environment, 1)?))
                }
                (None, "herald-feedback") => {
                    let handler = match &feedback {
                        Some(handler) => handler.clone(),
                        None => Arc::new(feedback_for(&deployment, &clients)?),
                    };
                    let function = deployment.template.function_by_binary(binary)?;
                    let timeout =
                        deployment.template.timeout(function, &deployment.physical, &deployment.stack_name)?;
                    Arc::new(logs::InProcess { handler, timeout: timeout.mul_f64(options.timeout_scale) })
                }
                (None, _) => {
                    tracing::warn!(
                        function = %subscription.function,
                        "the local stack has no handler for this function's binary: its log subscription is not played"
                    );
                    continue;
                }
            };
            subscriptions.push((subscription, handler));
        }

        let api: Arc<dyn gateway::HttpFunction> = match processes.as_mut() {
            Some(processes) => {
                let environment = function_environment(&deployment, "herald-api", &extra)?;
                let concurrency = esm::local_concurrency(None, concurrency_cap);
                Arc::new(processes::HttpApiFunction(processes.function(
                    &deployment,
                    "herald-api",
                    environment,
                    concurrency,
                )?))
            }
            None => Arc::new(
                App::from_aws(&clients, &api_config)
                    .await
                    .map_err(|e| LocalError::Config(e.to_string()).context("herald-api"))?,
            ),
        };
        let (shutdown, stopped) = oneshot::channel();
        let service = gateway::router_to(api, throttle).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, service).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the local API server failed");
            }
        });
        // Pollers start last, once nothing else can fail.
        let (stop_pollers, stop) = esm::stop_signal();
        let mut pollers: Vec<JoinHandle<()>> = event_sources
            .iter()
            .zip(handlers)
            .map(|(mapping, handlers)| esm::spawn_poller(clients.sqs(), mapping.clone(), handlers, stop.clone()))
            .collect();
        let stream_client = aws_sdk_dynamodbstreams::Client::new(&herald_aws::local_sdk_config(&endpoint).await);
        pollers.extend(streams.into_iter().map(|(source, handler)| {
            streams::spawn_poller(stream_client.clone(), clients.sqs(), source, handler, stop.clone())
        }));
        let logs_client = aws_sdk_cloudwatchlogs::Client::new(&clients.sdk_config);
        for subscription in subscriptions {
            pollers.push(logs::spawn_poller(
                logs_client.clone(),
                clients.sqs(),
                subscription.0,
                subscription.1,
                stop.clone(),
            ));
        }
        let schedules = schedule::schedules(&deployment)?;
        pollers.extend(schedules.iter().map(|s| schedule::spawn(clients.sqs(), s.clone(), stop.clone())));

        Ok(Self {
            endpoint,
            api_url: format!("http://{address}"),
            admin_key,
            deployment,
            clients,
            api_config,
            event_sources,
            moto,
            server,
            shutdown,
            workers,
            segmenter,
            importer,
            dispatcher,
            feedback,
            relay,
            processes,
            schedules,
            pollers,
            stop_pollers,
        })
    }

    /// The outbox relay the stack runs on the profiles and members tables' streams.
    pub fn relay(&self) -> Option<&RelayHandler> {
        self.relay.as_deref()
    }

    /// The functions' processes, in process mode ([`Functions::Processes`]).
    pub fn processes(&self) -> Option<&processes::Processes> {
        self.processes.as_ref()
    }

    /// The worker the stack runs for `channel`, to invoke directly (with a sample event).
    pub fn worker(&self, channel: Channel) -> Option<&WorkerHandler> {
        self.workers.iter().find(|(c, _)| *c == channel).map(|(_, worker)| worker.as_ref())
    }

    /// The segmenter the stack runs, to invoke directly (with a sample event).
    pub fn segmenter(&self) -> Option<&SegmenterHandler> {
        self.segmenter.as_deref()
    }

    /// The importer the stack runs, to invoke directly (with a sample event). The stack's
    /// own poller hands it real S3 events (see [`s3::lambda_body`]); called directly, it
    /// gets the event as given.
    pub fn importer(&self) -> Option<&ImporterHandler> {
        self.importer.as_deref()
    }

    /// The dispatcher the stack runs, to invoke directly (with a sample event).
    pub fn dispatcher(&self) -> Option<&DispatcherHandler> {
        self.dispatcher.as_deref()
    }

    /// The feedback function the stack runs on its queue (in-process mode only).
    pub fn feedback(&self) -> Option<&FeedbackHandler> {
        self.feedback.as_deref()
    }

    /// Fires the template's scheduled rule `logical_id` now (e.g. `SegmentSweepSchedule`),
    /// as EventBridge would at its time: its input goes to its target queue.
    pub async fn fire_schedule(&self, logical_id: &str) -> Result<(), LocalError> {
        let schedule = self
            .schedules
            .iter()
            .find(|s| s.rule == logical_id)
            .ok_or_else(|| LocalError::Template(format!("{logical_id} is not a scheduled rule of the template")))?;
        schedule::fire(&self.clients.sqs(), schedule).await
    }

    /// The URL of the template's queue `logical_id` (e.g. `EmailQueue`).
    pub fn queue_url(&self, logical_id: &str) -> Option<&str> {
        self.deployment.queue_url(logical_id)
    }

    /// Logical id → physical name of every resource the stack created.
    pub fn physical_names(&self) -> &BTreeMap<String, String> {
        self.deployment.names()
    }

    /// The stack's outputs as a deployed stack has them (`ApiUrl` this stack's gateway).
    pub fn outputs(&self) -> BTreeMap<String, String> {
        let mut outputs = self.deployment.outputs();
        outputs.insert("ApiUrl".into(), self.api_url.clone());
        outputs
    }

    /// What `herald --outputs <file>` reads: the stack's outputs in the shape of
    /// `aws cloudformation describe-stacks`, with the AWS endpoint beside them
    /// (`Endpoint`, which CloudFormation has not), so the CLI finds the stack's resources
    /// and the endpoint that holds them.
    pub fn outputs_document(&self) -> serde_json::Value {
        let outputs: Vec<serde_json::Value> = self
            .outputs()
            .into_iter()
            .map(|(key, value)| serde_json::json!({"OutputKey": key, "OutputValue": value}))
            .collect();
        serde_json::json!({
            "Stacks": [{"StackName": self.deployment.stack_name, "Outputs": outputs}],
            "Endpoint": self.endpoint,
        })
    }

    /// Writes [`Self::outputs_document`] to `path`, its folder made if missing.
    pub fn write_outputs(&self, path: &Path) -> Result<(), LocalError> {
        let failed = |e: std::io::Error| LocalError::Config(format!("cannot write {}: {e}", path.display()));
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(failed)?;
        }
        std::fs::write(path, format!("{:#}\n", self.outputs_document())).map_err(failed)
    }

    /// Stops the pollers (each finishes the batch in hand, within its function's timeout),
    /// stops serving, then stops moto if this stack started it.
    pub async fn stop(self) {
        self.stop_pollers.stop();
        for poller in self.pollers {
            let _ = poller.await;
        }
        let _ = self.shutdown.send(());
        let _ = self.server.await;
        if let Some(moto) = self.moto {
            moto.stop().await;
        }
    }
}

/// The segmenter, configured from the environment the template gives its function.
fn segmenter_for(deployment: &Deployment, clients: &Clients) -> Result<SegmenterHandler, LocalError> {
    let environment = deployment.function_environment("herald-segmenter")?;
    let config = SegmenterConfig::from_lookup(|name| environment.get(name).cloned())
        .map_err(|e| LocalError::Config(e.to_string()).context("herald-segmenter"))?;
    Ok(SegmenterHandler::from_aws(clients, &config))
}

/// The feedback function, configured from the environment the template gives it.
fn feedback_for(deployment: &Deployment, clients: &Clients) -> Result<FeedbackHandler, LocalError> {
    let environment = deployment.function_environment("herald-feedback")?;
    let config = FeedbackConfig::from_lookup(|name| environment.get(name).cloned())
        .map_err(|e| LocalError::Config(e.to_string()).context("herald-feedback"))?;
    Ok(FeedbackHandler::from_aws(clients, &config))
}

/// The variables `Options` adds over the template's, by function.
struct ExtraEnvironment {
    /// For every channel worker and the importer.
    workers: BTreeMap<String, String>,
    dispatcher: BTreeMap<String, String>,
}

/// The environment the stack gives the function built from `binary`, in either mode:
/// the template's, with the `Options`' extra variables over it.
fn function_environment(
    deployment: &Deployment,
    binary: &str,
    extra: &ExtraEnvironment,
) -> Result<BTreeMap<String, String>, LocalError> {
    let mut environment = deployment.function_environment(binary)?;
    if binary.starts_with("herald-worker-") || binary == "herald-importer" {
        environment.extend(extra.workers.clone());
    }
    if binary == "herald-dispatcher" {
        environment.extend(extra.dispatcher.clone());
    }
    Ok(environment)
}

/// The Cargo binary of a function (its `BuildProperties: Binary`), which the process mode
/// runs.
fn binary_of<'a>(function: &str, binary: Option<&'a str>) -> Result<&'a str, LocalError> {
    binary.ok_or_else(|| LocalError::Template(format!("{function} names no Metadata.BuildProperties.Binary")))
}

/// The importer, configured from the environment the template gives its function.
fn importer_for(
    deployment: &Deployment,
    clients: &Clients,
    extra: &ExtraEnvironment,
) -> Result<ImporterHandler, LocalError> {
    let environment = function_environment(deployment, "herald-importer", extra)?;
    let config = ImporterConfig::from_lookup(|name| environment.get(name).cloned())
        .map_err(|e| LocalError::Config(e.to_string()).context("herald-importer"))?;
    Ok(ImporterHandler::from_aws(clients, &config))
}

/// The dispatcher, configured from the environment the template gives its function.
fn dispatcher_for(
    deployment: &Deployment,
    clients: &Clients,
    extra: &ExtraEnvironment,
) -> Result<DispatcherHandler, LocalError> {
    let environment = function_environment(deployment, "herald-dispatcher", extra)?;
    let config = DispatcherConfig::from_lookup(|name| environment.get(name).cloned())
        .map_err(|e| LocalError::Config(e.to_string()).context("herald-dispatcher"))?;
    Ok(DispatcherHandler::from_aws(clients, &config))
}

/// The outbox relay, configured from the environment the template gives its function.
fn relay_for(deployment: &Deployment, clients: &Clients) -> Result<RelayHandler, LocalError> {
    let environment = deployment.function_environment("herald-relay")?;
    let config = RelayConfig::from_lookup(|name| environment.get(name).cloned())
        .map_err(|e| LocalError::Config(e.to_string()).context("herald-relay"))?;
    Ok(RelayHandler::from_aws(clients, &config))
}

/// The handler the deployed function runs, for the functions the local stack knows how to
/// run: the herald-worker-* binaries, configured from the environment the template gives.
async fn worker_for(
    deployment: &Deployment,
    clients: &Clients,
    mapping: &EventSourceMapping,
    extra: &ExtraEnvironment,
) -> Result<Option<(Channel, Arc<WorkerHandler>)>, LocalError> {
    let Some(binary) = mapping.binary.as_deref().filter(|b| b.starts_with("herald-worker-")) else {
        return Ok(None);
    };
    let environment = function_environment(deployment, binary, extra)?;
    let config = WorkerConfig::from_lookup(|name| environment.get(name).cloned())
        .map_err(|e| LocalError::Config(e.to_string()).context(binary))?;
    let worker = WorkerHandler::from_aws(clients, &config)
        .await
        .map_err(|e| LocalError::Config(e.to_string()).context(binary))?;
    Ok(Some((config.channel, Arc::new(worker))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_name_value_pairs_apart_by_spaces() {
        let parameters = parse_parameters(" ApiThrottlingBurstLimit=1000  LogRetentionDays=7 ").unwrap();
        assert_eq!(
            parameters,
            BTreeMap::from([
                ("ApiThrottlingBurstLimit".into(), "1000".into()),
                ("LogRetentionDays".into(), "7".into())
            ])
        );
    }

    #[test]
    fn a_parameter_without_a_value_is_refused() {
        assert!(matches!(parse_parameters("LogRetentionDays"), Err(LocalError::Config(_))));
        assert!(matches!(parse_parameters("=7"), Err(LocalError::Config(_))));
    }
}
