//! The local stack: the whole of Herald on one machine. It starts (or joins) an
//! AWS-compatible endpoint, creates the resources infra/template.yaml declares, and
//! serves the API as API Gateway would, calling the same handler the Lambda runs.

pub mod gateway;
pub mod moto;
pub mod provision;
pub mod template;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use herald_api::{App, Config};
use herald_aws::{Clients, DynamoApiKeyStore};
use herald_core::{Scope, keys, ports::ApiKeyStore};
use tokio::{sync::oneshot, task::JoinHandle};

pub use moto::MotoServer;
pub use provision::Deployment;
pub use template::Template;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("template: {0}")]
    Template(String),
    #[error("moto: {0}")]
    Moto(String),
    #[error("AWS: {0}")]
    Aws(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Context { context: String, source: Box<LocalError> },
}

impl LocalError {
    pub fn context(self, context: &str) -> Self {
        LocalError::Context { context: context.to_owned(), source: Box::new(self) }
    }
}

/// The repository the binary was built from: where the template and the venv live.
pub fn repo_root() -> PathBuf {
    std::env::var_os("HERALD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
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
}

impl Options {
    /// `AWS_ENDPOINT_URL`, `HERALD_PORT` (default 3000), `HERALD_ADMIN_KEY`,
    /// `HERALD_STACK` (default `herald`) and `HERALD_TEMPLATE`.
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
        })
    }
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
    moto: Option<MotoServer>,
    server: JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
}

impl LocalStack {
    pub async fn start(options: Options) -> Result<Self, LocalError> {
        let mut template = Template::load(&options.template)?;
        // A fresh secret per local stack; deployments pass their own.
        template.set_parameter("SigningSecret", keys::generate_secret());
        let (moto, endpoint) = match options.endpoint {
            Some(endpoint) => (None, endpoint),
            None => {
                let moto = MotoServer::start().await?;
                let endpoint = moto.endpoint.clone();
                (Some(moto), endpoint)
            }
        };
        let clients = Clients::new(&herald_aws::local_sdk_config(&endpoint).await);
        let deployment = provision::deploy(&clients, &template, &options.stack_name).await?;
        let environment = deployment.function_environment("herald-api")?;
        let api_config = Config::from_lookup(|name| environment.get(name).cloned())
            .map_err(|e| LocalError::Config(e.to_string()))?;

        let admin_key = options.admin_key.unwrap_or_else(keys::generate_secret);
        DynamoApiKeyStore::new(clients.dynamodb.clone(), &api_config.api_keys_table)
            .put(&keys::new_key(&admin_key, "local admin", [Scope::Admin]))
            .await
            .map_err(|e| LocalError::Aws(e.to_string()))?;

        let app = Arc::new(App::from_aws(&clients, &api_config));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|e| LocalError::Config(format!("cannot listen on 127.0.0.1:{}: {e}", options.port)))?;
        let address = listener.local_addr().map_err(|e| LocalError::Config(e.to_string()))?;
        let (shutdown, stopped) = oneshot::channel();
        let service = gateway::router(app).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, service).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the local API server failed");
            }
        });
        Ok(Self {
            endpoint,
            api_url: format!("http://{address}"),
            admin_key,
            deployment,
            clients,
            api_config,
            moto,
            server,
            shutdown,
        })
    }

    /// Stops serving, then stops moto if this stack started it.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.server.await;
        if let Some(moto) = self.moto {
            moto.stop().await;
        }
    }
}
