//! Plays API Gateway (HTTP API, payload format 2.0): each HTTP request becomes the event
//! Lambda would receive, decoded by lambda_http and answered by the API's router exactly
//! as in the deployed function.

use std::{net::SocketAddr, sync::Arc};

use axum::{body::Body as AxumBody, extract::ConnectInfo, http::StatusCode, response::Response};
use base64::Engine as _;
use herald_api::App;
use lambda_http::Body;
use serde_json::{Map, Value, json};

use herald_core::limits::api_gateway::PAYLOAD_BYTES as GATEWAY_MAX_BODY;

pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new().fallback(move |ConnectInfo(peer): ConnectInfo<SocketAddr>, request: axum::extract::Request| {
        let app = app.clone();
        async move { invoke(&app, peer, request).await }
    })
}

async fn invoke(app: &App, peer: SocketAddr, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, GATEWAY_MAX_BODY).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let event = api_gateway_v2_event(&parts, &body, peer);
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("not a valid API Gateway event: {e}")),
    };
    let response = app.handle(request).await;
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Empty => AxumBody::empty(),
        Body::Text(t) => AxumBody::from(t),
        Body::Binary(b) => AxumBody::from(b),
        _ => AxumBody::empty(),
    };
    Response::from_parts(parts, body)
}

/// The payload API Gateway sends a Lambda for an HTTP API `$default` route.
pub fn api_gateway_v2_event(parts: &axum::http::request::Parts, body: &[u8], peer: SocketAddr) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(value.split("; ").map(str::to_owned));
            continue;
        }
        // Repeated headers arrive joined by commas in payload 2.0.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let query = parts.uri.query().unwrap_or_default();
    let mut parameters = Map::new();
    for (k, v) in url_pairs(query) {
        match parameters.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                parameters.insert(k, Value::String(v));
            }
        }
    }
    let (body, is_base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    let now = chrono::Utc::now();
    let user_agent = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": query,
        "cookies": if cookies.is_empty() { Value::Null } else { json!(cookies) },
        "headers": headers,
        "queryStringParameters": if parameters.is_empty() { Value::Null } else { Value::Object(parameters) },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("localhost"),
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": format!("{:?}", parts.version),
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn plain(status: StatusCode, message: &str) -> Response {
    Response::builder().status(status).body(AxumBody::from(message.to_owned())).expect("a valid response")
}
