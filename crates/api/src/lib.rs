//! The REST API Lambda (API Gateway HTTP API, payload v2): an axum `Router` over core
//! services, each resource's routes in its module under `resources/`. The Lambda runtime,
//! the local stack and the tests all drive the same router.

pub mod auth;
pub mod config;
pub mod extract;
pub mod openapi;
pub mod problem;
pub mod resources;
pub mod shape;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, RawPathParams, Request, rejection::RawPathParamsRejection},
    handler::Handler,
    http::{Method, Uri, uri::PathAndQuery},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter},
};
use herald_aws::{
    Clients, DynamoActivityStore, DynamoApiKeyStore, DynamoCampaignStore, DynamoDeliveryStore, DynamoImportJobStore,
    DynamoMembershipStore, DynamoNotificationStore, DynamoPreferenceStore, DynamoProfileStore, DynamoSegmentStore,
    DynamoSuppressionStore, DynamoTemplateStore, EventBridgePublisher, SecretsManagerKeyRings, SqsDispatchQueue,
};
use herald_core::{
    activity::ActivityService,
    campaigns::CampaignService,
    delivery::{DeliveryStore, PreferenceStore, TemplateStore},
    imports::ImportJobStore,
    keys::ApiKeyStore,
    notifications::NotificationService,
    profiles::ProfileService,
    segments::{DEFAULT_BACKFILL_PARTS, SegmentService, SegmentStore},
    signing::{
        KeyRing, KeyRingStore,
        webhook::{PublicKey, WebhookSigner},
    },
    suppressions::SuppressionService,
};
use herald_wire::activity::MAX_BATCH_BYTES;
use lambda_http::RequestExt;
use tower::{ServiceExt, util::MapRequest};

pub use auth::{Access, Authenticator};
pub use config::{Config, ConfigError};
pub use problem::Problem;

/// The largest request body the API reads, but for `POST /v1/events`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
// A notification's inline content and params come from one request body and a
// recipient's target from one profile, so a channel message of one recipient always fits
// the queue (ChannelMessage::pack never makes a message it cannot send).
const _: () =
    assert!(MAX_BODY_BYTES + herald_core::profiles::MAX_PROFILE_BYTES < herald_core::delivery::MAX_MESSAGE_BYTES);

/// The largest body of `POST /v1/events`: a batch of behaviour events.
pub const MAX_EVENTS_BODY_BYTES: usize = MAX_BATCH_BYTES;

/// The services and stores the handlers work with: the router's state.
pub struct Services {
    pub profiles: ProfileService,
    pub notifications: NotificationService,
    pub templates: Arc<dyn TemplateStore>,
    pub preferences: Arc<dyn PreferenceStore>,
    pub suppressions: SuppressionService,
    pub deliveries: Arc<dyn DeliveryStore>,
    pub activity: ActivityService,
    pub segments: SegmentService,
    pub import_jobs: Arc<dyn ImportJobStore>,
    pub campaigns: CampaignService,
    /// The keys of the HMAC on tracking links.
    pub tracking_keys: KeyRing,
    /// The webhook signing keys' public halves, published at `GET /v1/webhook-keys`.
    pub webhook_keys: Vec<PublicKey>,
    pub auth: Arc<Authenticator>,
}

/// What a handler takes as `State`.
pub type AppState = Arc<Services>;

impl Services {
    /// The services over the AWS adapters named by `config`, the key rings read once from
    /// Secrets Manager (an error names the variable, never the secret's value).
    pub async fn from_aws(clients: &Clients, config: &Config) -> Result<Self, ConfigError> {
        let secrets = SecretsManagerKeyRings::new(clients.secretsmanager());
        let ring = async |var: &'static str, arn: &str| {
            secrets.key_ring(arn).await.map_err(|e| ConfigError::invalid(var, e.to_string()))
        };
        // Both at once: init time is cold-start latency.
        let (tracking_keys, webhook_keys) = tokio::try_join!(
            ring(config::TRACKING_KEYS_SECRET_ARN, &config.tracking_keys_secret),
            ring(config::WEBHOOK_SIGNING_KEYS_SECRET_ARN, &config.webhook_keys_secret),
        )?;
        let db = || clients.dynamodb();
        let profiles = Arc::new(DynamoProfileStore::new(db(), &config.profiles_table));
        let events = Arc::new(EventBridgePublisher::new(clients.eventbridge(), &config.event_bus_name));
        let templates: Arc<dyn TemplateStore> = Arc::new(DynamoTemplateStore::new(db(), &config.templates_table));
        let keys: Arc<dyn ApiKeyStore> = Arc::new(DynamoApiKeyStore::new(db(), &config.api_keys_table));
        let deliveries: Arc<dyn DeliveryStore> = Arc::new(DynamoDeliveryStore::new(db(), &config.deliveries_table));
        let activity = ActivityService {
            store: Arc::new(DynamoActivityStore::new(db(), &config.activity_table)),
            events: events.clone(),
        };
        let segment_store: Arc<dyn SegmentStore> = Arc::new(DynamoSegmentStore::new(db(), &config.segments_table));
        let campaigns = CampaignService {
            campaigns: Arc::new(DynamoCampaignStore::new(db(), &config.jobs_table)),
            dispatch: Arc::new(SqsDispatchQueue::new(clients.sqs(), &config.dispatch_queue_url)),
            templates: templates.clone(),
            segments: segment_store.clone(),
        };
        let segments = SegmentService::new(
            segment_store,
            Arc::new(DynamoMembershipStore::new(
                db(),
                &config.members_table,
                &config.profiles_table,
                &config.activity_table,
            )),
            events.clone(),
            DEFAULT_BACKFILL_PARTS,
        );
        Ok(Self {
            profiles: ProfileService::new(profiles.clone()),
            notifications: NotificationService {
                profiles,
                templates: templates.clone(),
                deliveries: deliveries.clone(),
                notifications: Arc::new(DynamoNotificationStore::new(db(), &config.notifications_table)),
                events,
                idempotency_ttl: config.idempotency_ttl,
            },
            templates,
            preferences: Arc::new(DynamoPreferenceStore::new(db(), &config.preferences_table)),
            suppressions: SuppressionService::new(Arc::new(DynamoSuppressionStore::new(
                db(),
                &config.suppressions_table,
            ))),
            deliveries,
            activity,
            segments,
            import_jobs: Arc::new(DynamoImportJobStore::new(db(), &config.jobs_table)),
            campaigns,
            tracking_keys,
            webhook_keys: WebhookSigner::new(&webhook_keys).public_keys(),
            auth: Arc::new(Authenticator::new(keys)),
        })
    }
}

/// The API as the Lambda runtime serves it: the router, routing on the raw path.
pub type ApiService = MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request>;

/// The API: its router over the services.
pub struct App {
    router: Router,
}

impl App {
    /// The app over the AWS adapters named by `config`.
    pub async fn from_aws(clients: &Clients, config: &Config) -> Result<Self, ConfigError> {
        Ok(Self::new(Services::from_aws(clients, config).await?))
    }

    pub fn new(services: Services) -> Self {
        Self::with_metrics(services, Arc::new(herald_edge::metrics::Emf::for_function("Api")))
    }

    /// The app writing each request's outcome to `metrics` (`Invocations`: `ok` below
    /// 500, `failed` from 500), flushed with the response: an invocation is one request.
    pub fn with_metrics(services: Services, metrics: Arc<herald_edge::metrics::Emf>) -> Self {
        let router = resources::routes().into_router(Arc::new(services));
        let router = router.layer(axum::middleware::map_response(move |response: axum::response::Response| {
            let metrics = metrics.clone();
            async move {
                use herald_edge::metrics::{Dimension, Metric, Metrics};
                let outcome = if response.status().is_server_error() { "failed" } else { "ok" };
                metrics.record(Metric::Invocations, &[Dimension::Outcome(outcome)], 1.0);
                metrics.flush();
                response
            }
        }));
        Self { router }
    }

    /// The router itself (it routes on the request's URI path).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// What `lambda_http::run` serves: the router, on the path API Gateway received.
    pub fn service(&self) -> ApiService {
        self.router.clone().map_request(on_raw_path as fn(lambda_http::Request) -> lambda_http::Request)
    }

    /// Answers one request as the Lambda function does: through the router, with the
    /// body converted as `lambda_http` converts it for API Gateway.
    pub async fn handle(&self, request: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
        let response = match self.service().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        lambda_http::IntoResponse::into_response(response).await
    }
}

/// lambda_http builds the request's URI by parsing `rawPath` as a URL, which resolves dot
/// segments (`/a/../b`, `%2e%2e`) and reads `\` as `/`; the API routes on the path as the
/// client sent it, as API Gateway passed it on.
fn on_raw_path(mut request: lambda_http::Request) -> lambda_http::Request {
    let raw = request.raw_http_path();
    if raw.is_empty() || raw == request.uri().path() {
        return request;
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{raw}?{query}"),
        None => raw.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Every route (path template) and the methods it allows, in the order the resources
/// declare them: what the OpenAPI document must describe.
pub fn route_table() -> Vec<(&'static str, Vec<Method>)> {
    resources::routes().table()
}

/// The routes of one or more resources: each route's path, method, access and handler,
/// spelled once. The router, its 405 answers (with `Allow`) and the route table are all
/// made of them.
#[derive(Default)]
pub struct Routes(Vec<Route>);

struct Route {
    path: &'static str,
    method: Method,
    access: Access,
    handler: MethodRouter<AppState>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: impl Into<Access>,
        handler: H,
    ) -> Self {
        self.route(path, Method::GET, access.into(), axum::routing::get(handler))
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: impl Into<Access>,
        handler: H,
    ) -> Self {
        self.route(path, Method::PUT, access.into(), axum::routing::put(handler))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: impl Into<Access>,
        handler: H,
    ) -> Self {
        self.route(path, Method::POST, access.into(), axum::routing::post(handler))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: impl Into<Access>,
        handler: H,
    ) -> Self {
        self.route(path, Method::DELETE, access.into(), axum::routing::delete(handler))
    }

    fn route(mut self, path: &'static str, method: Method, access: Access, handler: MethodRouter<AppState>) -> Self {
        self.0.push(Route { path, method, access, handler });
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.0.extend(other.0);
        self
    }

    fn table(&self) -> Vec<(&'static str, Vec<Method>)> {
        let mut table: Vec<(&'static str, Vec<Method>)> = Vec::new();
        for route in &self.0 {
            match table.iter_mut().find(|(path, _)| *path == route.path) {
                Some((_, methods)) => methods.push(route.method.clone()),
                None => table.push((route.path, vec![route.method.clone()])),
            }
        }
        table
    }

    /// The router. Unknown paths are 404 and known paths with another method 405 before
    /// any key is checked, as API Gateway would; then the route's key check, then its
    /// handler. Every answer is logged by the route's template, never its ids.
    pub fn into_router(self, app: AppState) -> Router {
        let table = self.table();
        let mut paths: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
        for Route { path, method: _, access, handler } in self.0 {
            let handler = match access {
                Access::Public => handler,
                Access::AnyKey => {
                    handler.route_layer(middleware::from_fn_with_state((app.auth.clone(), None), auth::require))
                }
                Access::Scope(scope) => {
                    handler.route_layer(middleware::from_fn_with_state((app.auth.clone(), Some(scope)), auth::require))
                }
            };
            match paths.iter_mut().find(|(p, _)| *p == path) {
                // Two routes of one path and method panic here: a route is spelled once.
                Some((_, methods)) => *methods = std::mem::take(methods).merge(handler),
                None => paths.push((path, handler)),
            }
        }
        let mut router = Router::new();
        for (path, methods) in paths {
            let allow: Vec<&'static str> = table
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, methods)| methods.iter().map(method_name).collect())
                .unwrap_or_default();
            let not_allowed = move || async move { unmatched(Problem::method_not_allowed(&allow)) };
            // axum answers HEAD with a GET route's handler; this API allows only the
            // methods it names, so HEAD is 405 like any other.
            let methods = methods.fallback(not_allowed.clone()).on(MethodFilter::HEAD, not_allowed);
            router = router.route(path, methods);
        }
        router
            .route_layer(middleware::from_fn(path_parameters))
            .fallback(no_route)
            .layer(middleware::from_fn(log))
            .with_state(app)
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => unreachable!("Routes takes GET, PUT, POST and DELETE"),
    }
}

/// Marks a response of a route that did not match after all (a 405, or a path
/// parameter that is not UTF-8): logged as `unmatched`.
#[derive(Clone, Copy)]
struct Unmatched;

fn unmatched(problem: Problem) -> Response {
    let mut response = problem.into_response();
    response.extensions_mut().insert(Unmatched);
    response
}

/// The fallback of unknown paths.
async fn no_route(request: Request) -> Response {
    no_route_for(&request)
}

/// 404 naming the path as the client sent it.
fn no_route_for(request: &Request) -> Response {
    let raw_path = match request.raw_http_path() {
        "" => request.uri().path(),
        raw => raw,
    };
    unmatched(Problem::not_found(format!("No route for {raw_path}")))
}

/// Before the method and the key are looked at: an empty path parameter (which the
/// router matches in `/v1/segments//members`) is no route, and a parameter that is not
/// UTF-8 once percent-decoded names nothing (so `Path<String>` in a handler cannot fail).
async fn path_parameters(
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    match params {
        Ok(params) if params.iter().any(|(_, value)| value.is_empty()) => no_route_for(&request),
        Ok(_) => next.run(request).await,
        Err(_) => unmatched(Problem::not_found("A path parameter is not valid UTF-8")),
    }
}

/// One line per request: the route's method and path template (from axum's
/// `MatchedPath`), never its ids; `unmatched` for the fallbacks.
async fn log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    let route = match matched {
        Some(path) if response.extensions().get::<Unmatched>().is_none() => format!("{method} {path}"),
        _ => "unmatched".to_owned(),
    };
    tracing::info!(
        route = route.as_str(),
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}
