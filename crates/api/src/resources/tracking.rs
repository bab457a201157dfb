//! `GET /v1/t/{token}`: the links in messages (open pixel, click redirect, unsubscribe).
//! Public: the signed token is the proof.

use axum::{
    body::Body,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use herald_core::{
    campaigns::CampaignCounters,
    delivery::{
        DeliveryStatus, StatusChange,
        preferences::update,
        tracking::{Action, Token, redirect_target},
    },
    validation::ValidationErrors,
};

use crate::{Access, AppState, Routes, Services, problem::Problem};

pub fn routes() -> Routes {
    Routes::new().get("/v1/t/{token}", Access::Public, track).post("/v1/t/{token}", Access::Public, unsubscribe)
}

/// A transparent 1×1 GIF: the open pixel.
const PIXEL: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

/// Follows a tracking link. A token that does not verify is 404 and changes nothing;
/// a valid one moves its delivery forward (never back) and answers as the link
/// promised: the pixel, the redirect, or the unsubscribe confirmation.
async fn track(State(app): State<AppState>, Path(token): Path<String>) -> Result<Response, Problem> {
    let token = Token::verify(&token, &app.tracking_keys).ok_or_else(|| Problem::not_found("Unknown link"))?;
    let (status, response) = match &token.action {
        Action::Open => (
            DeliveryStatus::Opened,
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "image/gif")
                .header("cache-control", "no-store")
                .body(Body::from(PIXEL)),
        ),
        Action::Click { url } => {
            // A signed link to a URL no Location header can carry (a control character):
            // refused, and the delivery is not marked clicked.
            let target = redirect_target(url).ok_or_else(|| {
                Problem::from(ValidationErrors::single("token", "the link's target is not a valid http(s) URL"))
            })?;
            (
                DeliveryStatus::Clicked,
                Response::builder().status(StatusCode::FOUND).header("location", target).body(Body::empty()),
            )
        }
        // Mail scanners follow links: a GET only shows a form that POSTs back.
        Action::Unsubscribe { .. } => return Ok(html(CONFIRM_PAGE)),
    };
    let change = StatusChange { status, at: chrono::Utc::now(), reason: None };
    // A repeated open or a click after an unsubscribe changes nothing: statuses only
    // move forward.
    let moved = app.deliveries.advance(&token.delivery_id, &change).await?;
    if moved && matches!(status, DeliveryStatus::Opened | DeliveryStatus::Clicked) {
        count_engagement(&app, &token.delivery_id, status).await?;
    }
    Ok(response.expect("a valid response"))
}

/// The unsubscribe confirmation: a form posting to the same URL (a relative action, so
/// nothing from the token is echoed into the page).
const CONFIRM_PAGE: &str = "<!doctype html><title>Unsubscribe</title><form method=\"post\"><p>Stop these messages?</p><button type=\"submit\">Unsubscribe</button></form>";
const DONE_PAGE: &str = "<!doctype html><title>Unsubscribed</title><p>You are unsubscribed from these messages.</p>";

fn html(page: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Body::from(page))
        .expect("a static response")
}

/// `POST /v1/t/{token}` of an unsubscribe token: the form's submit, or a mailbox's RFC 8058
/// one-click (`List-Unsubscribe=One-Click` body, which needs no reading). Opts the user out
/// with a conditional write, so concurrent opt-outs all stand.
async fn unsubscribe(State(app): State<AppState>, Path(token): Path<String>) -> Result<Response, Problem> {
    let token = Token::verify(&token, &app.tracking_keys).ok_or_else(|| Problem::not_found("Unknown link"))?;
    let Action::Unsubscribe { user_id, notification_type, channel } = &token.action else {
        return Err(Problem::not_found("Unknown link"));
    };
    update(&*app.preferences, user_id, |p| p.opt_out(notification_type, *channel)).await?;
    let change = StatusChange { status: DeliveryStatus::Unsubscribed, at: chrono::Utc::now(), reason: None };
    app.deliveries.advance(&token.delivery_id, &change).await?;
    Ok(html(DONE_PAGE))
}

/// Adds a campaign delivery's first open or click to its campaign's counters (a
/// delivery counts each once: its status moved forward only now).
async fn count_engagement(app: &Services, delivery_id: &str, status: DeliveryStatus) -> Result<(), Problem> {
    let Some(delivery) = app.deliveries.get(delivery_id).await? else { return Ok(()) };
    let campaigns = &app.campaigns.campaigns;
    if campaigns.get(&delivery.notification_id).await?.is_none() {
        return Ok(());
    }
    let counts = match status {
        DeliveryStatus::Opened => CampaignCounters { opened: 1, ..Default::default() },
        _ => CampaignCounters { clicked: 1, ..Default::default() },
    };
    campaigns.add_counts(&delivery.notification_id, &counts).await?;
    Ok(())
}
