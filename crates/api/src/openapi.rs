//! The OpenAPI 3.1 description of this API, in its own module because both the route that
//! serves it (`resources::openapi`) and the body check (`shape`) read it, and `shape` is
//! read by the extractors every resource uses.

use std::sync::LazyLock;

use serde_json::Value;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// `OPENAPI` parsed.
pub static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(OPENAPI).expect("openapi.json is JSON (tests parse it)"));
