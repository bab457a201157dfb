//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of this API.

use axum::{http::StatusCode, response::Response};

use crate::{Access, Routes, extract::response, openapi::OPENAPI};

pub fn routes() -> Routes {
    Routes::new().get("/v1/openapi.json", Access::AnyKey, get)
}

async fn get() -> Response {
    response(StatusCode::OK, "application/json", OPENAPI.to_owned())
}
