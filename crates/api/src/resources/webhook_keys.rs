//! `GET /v1/webhook-keys`: the public keys that verify Herald's webhook signatures. Public
//! data, so no key is needed: a receiver fetches them to check `x-herald-signature`, and
//! nothing it learns here (or from a signature) can sign anything Herald accepts.

use axum::{extract::State, http::StatusCode, response::Response};
use serde_json::json;

use crate::{Access, AppState, Routes, extract::json};

pub fn routes() -> Routes {
    Routes::new().get("/v1/webhook-keys", Access::Public, get)
}

async fn get(State(app): State<AppState>) -> Response {
    let mut response = json(StatusCode::OK, &json!({ "keys": app.webhook_keys }));
    // A rotation's new key is published (verify-only) before it signs, so a short cache
    // never misses it.
    response.headers_mut().insert("cache-control", "public, max-age=300".parse().expect("a valid header"));
    response
}
