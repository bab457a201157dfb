//! `/v1/segments`: segments (dynamic by rule, or static lists of users), their members,
//! and `/v1/users/{id}/segments`, the segments a user is in.

use axum::{
    extract::{Path, Request, State},
    http::StatusCode,
    response::Response,
};
use herald_core::{
    keys::Scope,
    segments::{SegmentInput, check_segment_id},
    validation::ValidationErrors,
};
use serde_json::Value;

use crate::{
    AppState, MAX_BODY_BYTES, Routes,
    extract::{
        Json, Query, body_schema, deserialize_fields, json, json_at, media_type, no_content, parse_json, read_body,
    },
    problem::Problem,
    resources::segment_upload,
    shape,
};

/// Members a page of `GET /v1/segments/{id}/members` holds unless `limit` says otherwise,
/// and the most it may hold.
pub const DEFAULT_MEMBERS_LIMIT: u32 = 100;
pub const MAX_MEMBERS_LIMIT: u32 = 1000;

pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/users/{id}/segments", Scope::SegmentsRead, user_segments)
        .get("/v1/segments", Scope::SegmentsRead, list)
        .post("/v1/segments", Scope::SegmentsWrite, post)
        .get("/v1/segments/{id}", Scope::SegmentsRead, get)
        .put("/v1/segments/{id}", Scope::SegmentsWrite, put)
        .delete("/v1/segments/{id}", Scope::SegmentsWrite, delete)
        .get("/v1/segments/{id}/members", Scope::SegmentsRead, members)
}

/// A segment id from a path: one that could not have been created names no segment.
fn known_segment_id(id: &str) -> Result<&str, Problem> {
    check_segment_id(id).map(|()| id).map_err(|_| Problem::not_found("No such segment"))
}

async fn list(State(app): State<AppState>) -> Result<Response, Problem> {
    let segments = app.segments.list().await?;
    Ok(json(StatusCode::OK, &serde_json::json!({"segments": segments})))
}

/// A new segment: JSON, or a file of user ids (text/csv or text/plain) that makes a
/// static segment named by the query.
async fn post(State(app): State<AppState>, Query(query): Query, request: Request) -> Result<Response, Problem> {
    let (segment_id, input) = match media_type(request.headers()).as_deref() {
        None | Some("application/json") => {
            let schema = body_schema(&request);
            let whole: serde_json::Map<String, Value> = parse_json(&read_body(request, MAX_BODY_BYTES).await?)?;
            let mut body = whole.clone();
            let segment_id = match body.remove("segment_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id),
                Some(_) => return Err(ValidationErrors::single("segment_id", "must be a string").into()),
            };
            // SegmentInput refuses unknown fields and names the path of a wrong type.
            let input = deserialize_fields(Value::Object(body))?;
            if let Some(schema) = schema {
                shape::check(schema, &Value::Object(whole))?;
            }
            (segment_id, input)
        }
        Some("text/csv" | "text/plain") => segment_upload::segment(&read_body(request, MAX_BODY_BYTES).await?, &query)?,
        Some(_) => {
            return Err(Problem::unsupported_media_type_because(
                "Send a segment as application/json, or a file of user ids as text/csv or text/plain",
            ));
        }
    };
    let segment = app.segments.create(segment_id, input, chrono::Utc::now()).await?;
    // Segment ids are of A-Z, a-z, 0-9, _ and -: nothing to escape.
    let location = format!("/v1/segments/{}", segment.segment_id);
    Ok(json_at(StatusCode::ACCEPTED, &location, &segment))
}

async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    Ok(json(StatusCode::OK, &app.segments.get(known_segment_id(&id)?).await?))
}

async fn put(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(input): Json<SegmentInput>,
) -> Result<Response, Problem> {
    let segment = app.segments.replace(known_segment_id(&id)?, input, chrono::Utc::now()).await?;
    Ok(json(StatusCode::OK, &segment))
}

async fn delete(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    app.segments.delete(known_segment_id(&id)?).await?;
    Ok(no_content())
}

/// A page of members: `?limit=` (1 to 1000) and the `?cursor=` of the previous page.
async fn members(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query,
) -> Result<Response, Problem> {
    let limit = match query.first("limit") {
        None => DEFAULT_MEMBERS_LIMIT,
        Some(v) => v.parse::<u32>().ok().filter(|n| (1..=MAX_MEMBERS_LIMIT).contains(n)).ok_or_else(|| {
            ValidationErrors::single("limit", format!("must be a whole number from 1 to {MAX_MEMBERS_LIMIT}"))
        })?,
    };
    let members = app.segments.members(known_segment_id(&id)?, query.first("cursor"), limit).await?;
    Ok(json(StatusCode::OK, &members))
}

async fn user_segments(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let segment_ids = app.segments.user_segments(&id).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({"user_id": id, "segment_ids": segment_ids})))
}
