//! The REST API Lambda (API Gateway HTTP API, payload v2). `handle` is a plain async
//! function over core services, so the Lambda runtime, the local stack and the tests all
//! run the same code.

pub mod auth;
pub mod campaigns;
pub mod config;
pub mod import;
pub mod imports;
pub mod problem;
pub mod routes;

use std::sync::Arc;

use herald_aws::{
    Clients, DynamoActivityStore, DynamoApiKeyStore, DynamoCampaignStore, DynamoDeliveryStore, DynamoImportJobStore,
    DynamoMembershipStore, DynamoNotificationStore, DynamoPreferenceStore, DynamoProfileStore, DynamoSegmentStore,
    DynamoTemplateStore, EventBridgePublisher, SqsDispatchQueue,
};
use herald_core::{
    activity::{ActivityEvent, MAX_BATCH_BYTES},
    campaigns::{CampaignCounters, CampaignRequest},
    delivery::{
        DeliveryStatus, DeliveryStore, PreferenceStore, TemplateStore,
        preferences::Preferences,
        templates::TemplateInput,
        tracking::{Action, Token},
    },
    imports::ImportJobStore,
    keys::ApiKeyStore,
    notifications::{NotificationRequest, NotificationService, StatusChange},
    profiles::{ProfilePatch, ProfileService, Upserted},
    segments::{
        ActivityService, DEFAULT_BACKFILL_PARTS, SegmentInput, SegmentKind, SegmentService, SegmentStore,
        check_segment_id,
    },
    validation::{ValidationErrors, check_user_id},
};
use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use auth::Authenticator;
pub use campaigns::CampaignService;
pub use config::Config;
pub use problem::Problem;
pub use routes::Route;

/// The largest request body the API reads, but for `POST /v1/events`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The largest body of `POST /v1/events`: a batch of behaviour events.
pub const MAX_EVENTS_BODY_BYTES: usize = MAX_BATCH_BYTES;
/// Members a page of `GET /v1/segments/{id}/members` holds unless `limit` says otherwise,
/// and the most it may hold.
pub const DEFAULT_MEMBERS_LIMIT: u32 = 100;
pub const MAX_MEMBERS_LIMIT: u32 = 1000;

/// The OpenAPI 3.1 description of this API, served at `GET /v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub struct App {
    profiles: ProfileService,
    notifications: NotificationService,
    templates: Arc<dyn TemplateStore>,
    preferences: Arc<dyn PreferenceStore>,
    deliveries: Arc<dyn DeliveryStore>,
    activity: ActivityService,
    segments: SegmentService,
    import_jobs: Arc<dyn ImportJobStore>,
    campaigns: CampaignService,
    signing_secret: Vec<u8>,
    auth: Authenticator,
}

/// The body of `POST /v1/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBatch {
    events: Vec<ActivityEvent>,
}

impl App {
    /// The app over the AWS adapters named by `config`.
    pub fn from_aws(clients: &Clients, config: &Config) -> Self {
        let db = || clients.dynamodb.clone();
        let profiles = Arc::new(DynamoProfileStore::new(db(), &config.profiles_table));
        let events = Arc::new(EventBridgePublisher::new(clients.eventbridge.clone(), &config.event_bus_name));
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
            dispatch: Arc::new(SqsDispatchQueue::new(clients.sqs.clone(), &config.dispatch_queue_url)),
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
        Self {
            profiles: ProfileService::new(profiles.clone(), events.clone()),
            notifications: NotificationService {
                profiles,
                templates: templates.clone(),
                deliveries: deliveries.clone(),
                notifications: Arc::new(DynamoNotificationStore::new(db(), &config.notifications_table)),
                events,
            },
            templates,
            preferences: Arc::new(DynamoPreferenceStore::new(db(), &config.preferences_table)),
            deliveries,
            activity,
            segments,
            import_jobs: Arc::new(DynamoImportJobStore::new(db(), &config.jobs_table)),
            campaigns,
            signing_secret: config.signing_secret.as_bytes().to_vec(),
            auth: Authenticator::new(keys),
        }
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
        if let Route::Track(token) = &route {
            return self.track(token).await;
        }
        let key = self.auth.authorize(request.headers(), route.scope()).await?;
        match route {
            Route::Track(_) => unreachable!("answered above"),
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
            Route::GetPreferences(id) => {
                check_user_id(&id)?;
                Ok(json(StatusCode::OK, &self.preferences.get(&id).await?))
            }
            Route::PutPreferences(id) => {
                check_user_id(&id)?;
                let preferences = parse_json_body::<Preferences>(request)?;
                preferences.validate()?;
                self.preferences.put(&id, &preferences).await?;
                Ok(json(StatusCode::OK, &preferences))
            }
            Route::PostNotification => {
                let mut body = parse_json_body::<NotificationRequest>(request)?;
                if let Some(key) = request.headers().get("idempotency-key").and_then(|v| v.to_str().ok()) {
                    body.idempotency_key = Some(key.to_owned());
                }
                let accepted = self.notifications.accept(body, &key.key_hash).await?;
                let id = &accepted.notification_id;
                let status_url = format!("/v1/notifications/{id}");
                let mut response =
                    json(StatusCode::ACCEPTED, &serde_json::json!({"notification_id": id, "status_url": status_url}));
                response.headers_mut().insert("location", status_url.parse().expect("a valid header"));
                Ok(response)
            }
            Route::GetNotification(id) => {
                let deliveries = self.notifications.deliveries(&id).await?;
                Ok(json(StatusCode::OK, &serde_json::json!({"notification_id": id, "deliveries": deliveries})))
            }
            Route::GetTemplate(id) => {
                let version = match request.query_string_parameters().first("version") {
                    None => None,
                    Some(v) => Some(
                        v.parse::<u64>().map_err(|_| ValidationErrors::single("version", "must be a whole number"))?,
                    ),
                };
                let template =
                    self.templates.get(&id, version).await?.ok_or_else(|| Problem::not_found("No such template"))?;
                Ok(json(StatusCode::OK, &template))
            }
            Route::PutTemplate(id) => {
                let input = parse_json_body::<TemplateInput>(request)?;
                input.validate(&id)?;
                let stored = self.templates.save_new_version(&id, &input.channels).await?;
                let status = if stored.version == 1 { StatusCode::CREATED } else { StatusCode::OK };
                Ok(json(status, &stored))
            }
            Route::PostEvents => {
                let batch = parse_json_body_within::<EventBatch>(request, MAX_EVENTS_BODY_BYTES)?;
                let recorded = self.activity.record(&batch.events, chrono::Utc::now()).await?;
                let body = serde_json::json!({"counted": recorded.counted, "duplicates": recorded.duplicates});
                Ok(json(StatusCode::ACCEPTED, &body))
            }
            Route::ListSegments => {
                let segments = self.segments.list().await?;
                Ok(json(StatusCode::OK, &serde_json::json!({"segments": segments})))
            }
            Route::PostSegment => {
                let (segment_id, input) = new_segment(request)?;
                let segment = self.segments.create(segment_id, input, chrono::Utc::now()).await?;
                // Segment ids are of A-Z, a-z, 0-9, _ and -: nothing to escape.
                let location = format!("/v1/segments/{}", segment.segment_id);
                let mut response = json(StatusCode::ACCEPTED, &segment);
                response.headers_mut().insert("location", location.parse().expect("a valid header"));
                Ok(response)
            }
            Route::GetSegment(id) => Ok(json(StatusCode::OK, &self.segments.get(known_segment_id(&id)?).await?)),
            Route::PutSegment(id) => {
                let input = parse_json_body::<SegmentInput>(request)?;
                let segment = self.segments.replace(known_segment_id(&id)?, input, chrono::Utc::now()).await?;
                Ok(json(StatusCode::OK, &segment))
            }
            Route::DeleteSegment(id) => {
                self.segments.delete(known_segment_id(&id)?).await?;
                Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).expect("a valid response"))
            }
            Route::GetSegmentMembers(id) => {
                let query = request.query_string_parameters();
                let limit = match query.first("limit") {
                    None => DEFAULT_MEMBERS_LIMIT,
                    Some(v) => {
                        v.parse::<u32>().ok().filter(|n| (1..=MAX_MEMBERS_LIMIT).contains(n)).ok_or_else(|| {
                            ValidationErrors::single(
                                "limit",
                                format!("must be a whole number from 1 to {MAX_MEMBERS_LIMIT}"),
                            )
                        })?
                    }
                };
                let members = self.segments.members(known_segment_id(&id)?, query.first("cursor"), limit).await?;
                Ok(json(StatusCode::OK, &members))
            }
            Route::GetUserSegments(id) => {
                let segment_ids = self.segments.user_segments(&id).await?;
                Ok(json(StatusCode::OK, &serde_json::json!({"user_id": id, "segment_ids": segment_ids})))
            }
            Route::ListImports => {
                let query = request.query_string_parameters();
                let (limit, cursor) = imports::list_parameters(
                    query.first("limit"),
                    query.first("cursor"),
                    herald_aws::dynamo::import_jobs::is_valid_cursor,
                )?;
                let page = self.import_jobs.list(limit, cursor).await?;
                Ok(json(StatusCode::OK, &imports::ImportList::from(page)))
            }
            Route::GetImport(id) => {
                // An id that could not name a job is not looked up.
                let job = if imports::is_job_id(&id) { self.import_jobs.get(&id).await? } else { None };
                let job = job.ok_or_else(|| Problem::not_found("No such import"))?;
                Ok(json(StatusCode::OK, &imports::ImportView::from(job)))
            }
            Route::PostCampaign => {
                let body = parse_json_body::<CampaignRequest>(request)?;
                let campaign = self.campaigns.create(body, chrono::Utc::now()).await?;
                let accepted = campaigns::CampaignAccepted::of(&campaign);
                let location = accepted.status_url.clone();
                let mut response = json(StatusCode::ACCEPTED, &accepted);
                response.headers_mut().insert("location", location.parse().expect("a valid header"));
                Ok(response)
            }
            Route::GetCampaign(id) => {
                let campaign = self.campaigns.get(&id).await?;
                Ok(json(StatusCode::OK, &campaigns::CampaignView::from(campaign)))
            }
            Route::CancelCampaign(id) => {
                let campaign = self.campaigns.cancel(&id).await?;
                Ok(json(StatusCode::ACCEPTED, &campaigns::CampaignView::from(campaign)))
            }
        }
    }
}

/// A segment id from a path: one that could not have been created names no segment.
fn known_segment_id(id: &str) -> Result<&str, Problem> {
    check_segment_id(id).map(|()| id).map_err(|_| Problem::not_found("No such segment"))
}

/// The id (if chosen) and definition of a new segment: JSON, or an imported file of user
/// ids (text/csv or text/plain) that makes a static segment named by the query.
fn new_segment(request: &Request) -> Result<(Option<String>, SegmentInput), Problem> {
    match media_type(request).as_deref() {
        None | Some("application/json") => {
            let mut body = parse_json_body::<serde_json::Map<String, Value>>(request)?;
            let segment_id = match body.remove("segment_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id),
                Some(_) => return Err(ValidationErrors::single("segment_id", "must be a string").into()),
            };
            // SegmentInput refuses unknown fields and names the path of a wrong type.
            let input = deserialize_fields(Value::Object(body))?;
            Ok((segment_id, input))
        }
        Some("text/csv" | "text/plain") => {
            let body: &[u8] = request.body().as_ref();
            if body.len() > MAX_BODY_BYTES {
                return Err(Problem::too_large(MAX_BODY_BYTES));
            }
            let query = request.query_string_parameters();
            let mut errors = ValidationErrors::default();
            let name = query.first("name").filter(|n| !n.trim().is_empty());
            if name.is_none() {
                errors.add("name", "is required: name the imported segment with the name query parameter");
            }
            let user_ids = match import::user_ids(body) {
                Ok(ids) => ids,
                Err(faults) => {
                    errors.0.extend(faults.0);
                    Vec::new()
                }
            };
            errors.into_result()?;
            let input = SegmentInput {
                name: name.unwrap_or_default().to_owned(),
                description: query.first("description").map(str::to_owned),
                kind: SegmentKind::Static,
                rule: None,
                user_ids: Some(user_ids),
            };
            Ok((query.first("segment_id").map(str::to_owned), input))
        }
        Some(_) => Err(Problem::unsupported_media_type_because(
            "Send a segment as application/json, or a file of user ids as text/csv or text/plain",
        )),
    }
}

/// The essence of the request's media type, lower-cased (`text/csv` of
/// `text/csv; charset=utf-8`); None without a Content-Type.
fn media_type(request: &Request) -> Option<String> {
    let value = request.headers().get("content-type")?;
    let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// A transparent 1×1 GIF: the open pixel.
const PIXEL: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

impl App {
    /// Follows a tracking link. A token that does not verify is 404 and changes nothing;
    /// a valid one moves its delivery forward (never back) and answers as the link
    /// promised: the pixel, the redirect, or the unsubscribe confirmation.
    async fn track(&self, token: &str) -> Result<Response<Body>, Problem> {
        let token = Token::verify(token, &self.signing_secret).ok_or_else(|| Problem::not_found("Unknown link"))?;
        let (status, response) = match &token.action {
            Action::Open => (
                DeliveryStatus::Opened,
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "image/gif")
                    .header("cache-control", "no-store")
                    .body(Body::Binary(PIXEL.to_vec())),
            ),
            Action::Click { url } => (
                DeliveryStatus::Clicked,
                Response::builder().status(StatusCode::FOUND).header("location", url.as_str()).body(Body::Empty),
            ),
            Action::Unsubscribe { user_id, notification_type, channel } => {
                let mut preferences = self.preferences.get(user_id).await?;
                preferences.opt_out(notification_type, *channel);
                self.preferences.put(user_id, &preferences).await?;
                let page = format!(
                    "<!doctype html><title>Unsubscribed</title><p>You will no longer get {notification_type} messages by {channel}.</p>"
                );
                (
                    DeliveryStatus::Unsubscribed,
                    Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", "text/html; charset=utf-8")
                        .body(Body::Text(page)),
                )
            }
        };
        let change = StatusChange { status, at: chrono::Utc::now(), reason: None };
        // A repeated open or a click after an unsubscribe changes nothing: statuses only
        // move forward.
        let moved = self.deliveries.advance(&token.delivery_id, &change).await?;
        if moved && matches!(status, DeliveryStatus::Opened | DeliveryStatus::Clicked) {
            self.count_engagement(&token.delivery_id, status).await?;
        }
        Ok(response.expect("a valid response"))
    }

    /// Adds a campaign delivery's first open or click to its campaign's counters (a
    /// delivery counts each once: its status moved forward only now).
    async fn count_engagement(&self, delivery_id: &str, status: DeliveryStatus) -> Result<(), Problem> {
        let Some(delivery) = self.deliveries.get(delivery_id).await? else { return Ok(()) };
        let campaigns = &self.campaigns.campaigns;
        if campaigns.get(&delivery.notification_id).await?.is_none() {
            return Ok(());
        }
        let counts = match status {
            DeliveryStatus::Opened => CampaignCounters { opened: 1, ..Default::default() },
            _ => CampaignCounters { clicked: 1, ..Default::default() },
        };
        campaigns.add_counts(&delivery.notification_id, &counts).await?;
        Ok(())
    }
}

/// Reads a JSON body, refusing oversized bodies, other media types, malformed JSON and
/// wrong types, naming the field at fault.
fn parse_json_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Problem> {
    parse_json_body_within(request, MAX_BODY_BYTES)
}

/// `parse_json_body` with a body limit of `limit` bytes.
fn parse_json_body_within<T: serde::de::DeserializeOwned>(request: &Request, limit: usize) -> Result<T, Problem> {
    let body: &[u8] = request.body().as_ref();
    if body.len() > limit {
        return Err(Problem::too_large(limit));
    }
    if media_type(request).is_some_and(|essence| essence != "application/json") {
        return Err(Problem::unsupported_media_type());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::malformed_json("The body must be a JSON object"));
    }
    deserialize_fields(&mut serde_json::Deserializer::from_slice(body))
}

/// Deserializes `T`, naming the path of a field of the wrong type or unknown (`body` for
/// the whole); syntax errors are malformed JSON.
fn deserialize_fields<'de, T: serde::Deserialize<'de>>(
    deserializer: impl serde::Deserializer<'de, Error = serde_json::Error>,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Problem::malformed_json(inner.to_string())
        } else {
            let field = if path == "." { "body".to_owned() } else { path };
            ValidationErrors::single(field, inner.to_string()).into()
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
