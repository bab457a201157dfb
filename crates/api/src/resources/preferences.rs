//! `/v1/users/{id}/preferences`: a user's notification preferences.

use axum::{
    extract::{FromRequest, Path, Request, State},
    http::StatusCode,
    response::Response,
};
use herald_core::{
    delivery::preferences::{Preferences, update},
    keys::Scope,
    validation::check_user_id,
};

use crate::{
    AppState, Routes,
    extract::{Json, json},
    problem::Problem,
};

pub fn routes() -> Routes {
    Routes::new().get("/v1/users/{id}/preferences", Scope::ProfilesRead, get).put(
        "/v1/users/{id}/preferences",
        Scope::ProfilesWrite,
        put,
    )
}

async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    check_user_id(&id)?;
    Ok(json(StatusCode::OK, &app.preferences.get(&id).await?))
}

async fn put(State(app): State<AppState>, Path(id): Path<String>, request: Request) -> Result<Response, Problem> {
    // The user id is checked before the body is read.
    check_user_id(&id)?;
    let Json(preferences) = Json::<Preferences>::from_request(request, &()).await?;
    preferences.validate()?;
    let stored = update(&*app.preferences, &id, |p| *p = preferences.clone()).await?;
    Ok(json(StatusCode::OK, &stored))
}
