//! `/v1/users/{id}`: a user's profile, created or patched, read, and erased.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use herald_core::{
    keys::Scope,
    profiles::{ProfilePatch, Upserted},
};

use crate::{
    AppState, Routes,
    extract::{Json, json, no_content},
    problem::Problem,
};

pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/users/{id}", Scope::ProfilesRead, get)
        .put("/v1/users/{id}", Scope::ProfilesWrite, put)
        .delete("/v1/users/{id}", Scope::ProfilesWrite, delete)
}

async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    Ok(json(StatusCode::OK, &app.profiles.get(&id).await?))
}

async fn put(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(patch): Json<ProfilePatch>,
) -> Result<Response, Problem> {
    Ok(match app.profiles.upsert(&id, patch).await? {
        Upserted::Created(p) => json(StatusCode::CREATED, &p),
        Upserted::Updated(p) | Upserted::Unchanged(p) => json(StatusCode::OK, &p),
    })
}

async fn delete(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    app.profiles.erase(&id).await?;
    Ok(no_content())
}
