//! What the handlers read from a request and how they answer: JSON bodies refused as
//! problems, query parameters as API Gateway gave them, JSON responses.

use std::convert::Infallible;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, MatchedPath, Request},
    http::{HeaderMap, StatusCode, request::Parts},
    response::Response,
};
use herald_core::validation::ValidationErrors;
use lambda_http::{RequestExt, aws_lambda_events::query_map::QueryMap};
use serde::{Serialize, de::DeserializeOwned};

use crate::{MAX_BODY_BYTES, problem::Problem, shape};

/// A JSON body of `T`, at most `LIMIT` bytes. Refused, in this order: a larger body 413,
/// another media type 415, a blank body or malformed JSON 400, a wrong type or unknown
/// field 400 naming its path, a shape the route's schema in the OpenAPI document refuses
/// 400 naming its path (see `shape`).
///
/// The limit is applied here rather than by `DefaultBodyLimit` because the 413 names it,
/// and because only the routes that read a body refuse a large one (after the key check).
pub struct Json<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S> for Json<T, LIMIT> {
    type Rejection = Problem;

    async fn from_request(request: Request, _: &S) -> Result<Self, Problem> {
        let media_type = media_type(request.headers());
        let schema = body_schema(&request);
        let body = read_body(request, LIMIT).await?;
        if media_type.is_some_and(|essence| essence != "application/json") {
            return Err(Problem::unsupported_media_type());
        }
        let value = parse_json(&body)?;
        if let Some(schema) = schema {
            let json: serde_json::Value = serde_json::from_slice(&body).expect("parsed as T already");
            shape::check(schema, &json)?;
        }
        Ok(Json(value))
    }
}

/// The OpenAPI document's schema of the body of the route `request` matched.
pub fn body_schema(request: &Request) -> Option<&'static serde_json::Value> {
    let path = request.extensions().get::<MatchedPath>()?;
    shape::request_schema(request.method(), path.as_str())
}

/// The whole body, or 413 if it is over `limit` bytes.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, Problem> {
    // The body is in memory already (API Gateway sent it whole): the only error is the limit.
    axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| Problem::too_large(limit))
}

/// Parses a JSON body: blank is malformed, JSON other than an object is a shape error of
/// `body`, the rest as `deserialize_fields`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(Problem::malformed_json("The body must be a JSON object"));
    };
    // serde fills a struct from an array too, field by field in order ([null, null] is a
    // patch removing attributes and email): every body of this API is an object.
    if *first != b'{' && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return Err(ValidationErrors::single("body", "must be a JSON object").into());
    }
    deserialize_fields(&mut serde_json::Deserializer::from_slice(body))
}

/// Deserializes `T`, naming the path of a field of the wrong type or unknown (`body` for
/// the whole); syntax errors are malformed JSON.
pub fn deserialize_fields<'de, T: serde::Deserialize<'de>>(
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

/// The essence of the request's media type, lower-cased (`text/csv` of
/// `text/csv; charset=utf-8`); None without a Content-Type.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("content-type")?;
    let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// The query parameters as lambda_http parsed them from API Gateway's `rawQueryString`
/// (`first` is the first of a repeated name).
pub struct Query(pub QueryMap);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Query(parts.extensions.query_string_parameters()))
    }
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    response(status, "application/json", serde_json::to_string(value).expect("responses serialize"))
}

/// `json` with a `Location` header.
pub fn json_at(status: StatusCode, location: &str, value: &impl Serialize) -> Response {
    let mut response = json(status, value);
    response.headers_mut().insert("location", location.parse().expect("a valid header"));
    response
}

pub fn response(status: StatusCode, content_type: &str, body: String) -> Response {
    Response::builder().status(status).header("content-type", content_type).body(body.into()).expect("a valid response")
}

pub fn no_content() -> Response {
    Response::builder().status(StatusCode::NO_CONTENT).body(Default::default()).expect("a valid response")
}
