//! `POST /v1/events`: a batch of behaviour events, counted for segments.

use axum::{extract::State, http::StatusCode, response::Response};
use herald_core::{activity::ActivityEvent, keys::Scope};
use serde::Deserialize;

use crate::{
    AppState, MAX_EVENTS_BODY_BYTES, Routes,
    extract::{Json, json},
    problem::Problem,
};

pub fn routes() -> Routes {
    Routes::new().post("/v1/events", Scope::EventsWrite, post)
}

/// The body of `POST /v1/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBatch {
    events: Vec<ActivityEvent>,
}

async fn post(
    State(app): State<AppState>,
    Json(batch): Json<EventBatch, MAX_EVENTS_BODY_BYTES>,
) -> Result<Response, Problem> {
    let recorded = app.activity.record(&batch.events, chrono::Utc::now()).await?;
    let body = serde_json::json!({"counted": recorded.counted, "duplicates": recorded.duplicates});
    Ok(json(StatusCode::ACCEPTED, &body))
}
