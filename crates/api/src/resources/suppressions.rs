//! `/v1/suppressions`: the addresses Herald never sends to again on a channel, with why
//! (a hard bounce, a complaint, repeated soft bounces, or an operator).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use herald_core::{
    keys::Scope,
    suppressions::{self, ListedSuppression, Suppression, suppressible},
};
use serde::Serialize;

use crate::{
    AppState, Routes,
    extract::{Query, json},
    problem::Problem,
    resources::imports::list_parameters,
};

const ENTRY: &str = "/v1/suppressions/{channel}/{address}";

pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/suppressions", Scope::SuppressionsRead, list)
        .get(ENTRY, Scope::SuppressionsRead, get)
        .put(ENTRY, Scope::SuppressionsWrite, put)
        .delete(ENTRY, Scope::SuppressionsWrite, delete)
}

/// One address's entry, with the address the caller named (the store keeps only its hash).
#[derive(Serialize)]
struct Entry<'a> {
    address: &'a str,
    #[serde(flatten)]
    suppression: Suppression,
}

#[derive(Serialize)]
struct Page {
    suppressions: Vec<ListedSuppression>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

async fn get(
    State(app): State<AppState>,
    Path((channel, address)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let suppression = app.suppressions.get(suppressible(&channel)?, &address).await?;
    Ok(json(StatusCode::OK, &Entry { address: &address, suppression }))
}

/// 201 when the address was put on the list, 200 when it was there already (its entry,
/// and its reason, kept).
async fn put(
    State(app): State<AppState>,
    Path((channel, address)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let (suppression, new) = app.suppressions.suppress(suppressible(&channel)?, &address).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &Entry { address: &address, suppression }))
}

async fn delete(
    State(app): State<AppState>,
    Path((channel, address)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    app.suppressions.remove(suppressible(&channel)?, &address).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the list (of one `?channel=`), by address hash: `?limit=` (1 to 100) and the
/// `?cursor=` of the previous page. A page may hold fewer than `limit` with more to come.
async fn list(State(app): State<AppState>, Query(query): Query) -> Result<Response, Problem> {
    let channel = query.first("channel").map(suppressible).transpose()?;
    let (limit, cursor) = list_parameters(query.first("limit"), query.first("cursor"), suppressions::is_key)?;
    let page = app.suppressions.list(channel, cursor, limit).await?;
    Ok(json(StatusCode::OK, &Page { suppressions: page.suppressions, next_cursor: page.next }))
}
