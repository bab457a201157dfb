//! `/v1/templates/{id}`: a template's versions, each a new one on PUT.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use herald_core::{delivery::templates::TemplateInput, keys::Scope, validation::ValidationErrors};

use crate::{
    AppState, Routes,
    extract::{Json, Query, json},
    problem::Problem,
};

pub fn routes() -> Routes {
    Routes::new().get("/v1/templates/{id}", Scope::TemplatesRead, get).put(
        "/v1/templates/{id}",
        Scope::TemplatesWrite,
        put,
    )
}

/// The latest version, or the one `?version=` names.
async fn get(State(app): State<AppState>, Path(id): Path<String>, Query(query): Query) -> Result<Response, Problem> {
    let version = match query.first("version") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| ValidationErrors::single("version", "must be a whole number"))?),
    };
    let template = app.templates.get(&id, version).await?.ok_or_else(|| Problem::not_found("No such template"))?;
    Ok(json(StatusCode::OK, &template))
}

async fn put(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(input): Json<TemplateInput>,
) -> Result<Response, Problem> {
    input.validate(&id)?;
    let stored = app.templates.save_new_version(&id, &input.channels).await?;
    let status = if stored.version == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &stored))
}
