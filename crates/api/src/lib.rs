//! The REST API Lambda (API Gateway HTTP API, payload v2). `handle` is a plain async
//! function over core services, so the Lambda runtime, the local stack and the tests all
//! run the same code.

pub mod auth;
pub mod config;
pub mod problem;
pub mod routes;

use std::sync::Arc;

use herald_aws::{Clients, DynamoApiKeyStore, DynamoProfileStore, EventBridgePublisher};
use herald_core::{ProfilePatch, ProfileService, Upserted, ports::ApiKeyStore};
use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};
use serde::Serialize;

pub use auth::Authenticator;
pub use config::Config;
pub use problem::Problem;
pub use routes::Route;

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The OpenAPI 3.1 description of this API, served at `GET /v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub struct App {
    profiles: ProfileService,
    auth: Authenticator,
}

impl App {
    pub fn new(profiles: ProfileService, keys: Arc<dyn ApiKeyStore>) -> Self {
        Self { profiles, auth: Authenticator::new(keys) }
    }

    /// The app over the AWS adapters named by `config`.
    pub fn from_aws(clients: &Clients, config: &Config) -> Self {
        let store = DynamoProfileStore::new(clients.dynamodb.clone(), &config.profiles_table);
        let events = EventBridgePublisher::new(clients.eventbridge.clone(), &config.event_bus_name);
        let keys = DynamoApiKeyStore::new(clients.dynamodb.clone(), &config.api_keys_table);
        Self::new(ProfileService::new(Arc::new(store), Arc::new(events)), Arc::new(keys))
    }

    /// Answers one request. Every error becomes a problem+json response here, at the edge.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = std::time::Instant::now();
        let (name, response) = match Route::parse(request.method(), request.raw_http_path()) {
            Ok(route) => (route.name(), self.route(route, &request).await.unwrap_or_else(Problem::into_response)),
            Err(problem) => ("unmatched", problem.into_response()),
        };
        tracing::info!(
            route = name,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        response
    }

    async fn route(&self, route: Route, request: &Request) -> Result<Response<Body>, Problem> {
        self.auth.authorize(request.headers(), route.scope()).await?;
        match route {
            Route::OpenApi => Ok(response(StatusCode::OK, "application/json", OPENAPI.to_owned())),
            Route::GetUser(id) => Ok(json(StatusCode::OK, &self.profiles.get(&id).await?)),
            Route::PutUser(id) => {
                let patch = parse_json_body::<ProfilePatch>(request)?;
                Ok(match self.profiles.upsert(&id, patch).await? {
                    Upserted::Created(p) => json(StatusCode::CREATED, &p),
                    Upserted::Updated(p) | Upserted::Unchanged(p) => json(StatusCode::OK, &p),
                })
            }
            Route::DeleteUser(id) => {
                self.profiles.erase(&id).await?;
                Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).expect("a valid response"))
            }
        }
    }
}

/// Reads a JSON body, refusing oversized bodies, other media types, malformed JSON and
/// wrong types, naming the field at fault.
fn parse_json_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Problem> {
    let body: &[u8] = request.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(Problem::too_large(MAX_BODY_BYTES));
    }
    if let Some(content_type) = request.headers().get("content-type") {
        let essence = content_type.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Problem::unsupported_media_type());
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::malformed_json("The body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Problem::malformed_json(inner.to_string())
        } else {
            let field = if path == "." { "body".to_owned() } else { path };
            Problem::invalid(vec![herald_core::FieldError { field, message: inner.to_string() }])
        }
    })
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    response(status, "application/json", serde_json::to_string(value).expect("responses serialize"))
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::Text(body))
        .expect("a valid response")
}
