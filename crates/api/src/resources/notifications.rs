//! `/v1/notifications`: a notification accepted for delivery, and its deliveries.

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use herald_core::{
    keys::{ApiKey, Scope},
    notifications::NotificationRequest,
};

use crate::{
    AppState, Routes,
    extract::{Json, json, json_at},
    problem::Problem,
};

pub fn routes() -> Routes {
    Routes::new().post("/v1/notifications", Scope::NotificationsSend, post).get(
        "/v1/notifications/{id}",
        Scope::NotificationsRead,
        get,
    )
}

async fn post(
    State(app): State<AppState>,
    Extension(key): Extension<ApiKey>,
    headers: HeaderMap,
    Json(mut body): Json<NotificationRequest>,
) -> Result<Response, Problem> {
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        body.idempotency_key = Some(key.to_owned());
    }
    let accepted = app.notifications.accept(body, &key.key_hash).await?;
    let id = &accepted.notification_id;
    let status_url = format!("/v1/notifications/{id}");
    let body = serde_json::json!({"notification_id": id, "status_url": status_url});
    Ok(json_at(StatusCode::ACCEPTED, &status_url, &body))
}

async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let deliveries = app.notifications.deliveries(&id).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({"notification_id": id, "deliveries": deliveries})))
}
