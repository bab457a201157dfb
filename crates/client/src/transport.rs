//! Sending one request with retries: exponential backoff with full jitter, at least a
//! `429`'s `Retry-After`; then telling the listener, and the error callback what was given up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_wire::{
    activity::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH as MAX_BATCH_EVENTS},
    backoff::Backoff,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    body::events_body,
    config::ClientConfig,
    error::SendError,
    event::Event,
    report::{BatchReport, Counted, Failure, Outcome, RequestKind},
};

/// Sends to the API; shared by the background task and its requests in flight.
pub(crate) struct Sender {
    pub(crate) http: reqwest::Client,
    pub(crate) base: url::Url,
    pub(crate) config: ClientConfig,
}

enum Attempt {
    Done(StatusCode, Option<Counted>),
    Refused(StatusCode, String),
    Retry(String, Option<Duration>),
}

impl Sender {
    pub(crate) async fn events(&self, batch: Vec<(Event, Vec<u8>)>) {
        let body = events_body(batch.iter().map(|(_, json)| json.as_slice()));
        debug_assert!(body.len() <= MAX_BATCH_BYTES && batch.len() <= MAX_BATCH_EVENTS);
        let url = self.url(&["v1", "events"]);
        let size = batch.len();
        let result = self.send(reqwest::Method::POST, url, body, RequestKind::Events, size).await;
        if let Err(error) = result {
            self.fail(error, batch.into_iter().map(|(event, _)| event).collect(), None);
        }
    }

    pub(crate) async fn identify(&self, user_id: String, patch: Value) {
        let body = serde_json::to_vec(&patch).expect("a JSON value serialises");
        let url = self.url(&["v1", "users", &user_id]);
        let kind = RequestKind::Identify { user_id: user_id.clone() };
        if let Err(error) = self.send(reqwest::Method::PUT, url, body, kind, 1).await {
            self.fail(error, Vec::new(), Some((user_id, patch)));
        }
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in Client::new").pop_if_empty().extend(segments);
        url
    }

    /// Sends with retries; reports the outcome to the listener.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Vec<u8>,
        kind: RequestKind,
        size: usize,
    ) -> Result<(), SendError> {
        let bytes = body.len();
        let report = |attempts, outcome, counted| {
            self.report(BatchReport { kind: kind.clone(), size, bytes, attempts, outcome, counted });
        };
        let backoff =
            Backoff::new(self.config.retry_base, self.config.retry_cap, self.config.max_retries.saturating_add(1));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (last, retry_after) = match self.attempt(method.clone(), url.clone(), body.clone()).await {
                Attempt::Done(status, counted) => {
                    report(attempts, Outcome::Sent { status: status.as_u16() }, counted);
                    return Ok(());
                }
                Attempt::Refused(status, text) => {
                    report(attempts, Outcome::Rejected { status: status.as_u16() }, None);
                    return Err(SendError::Rejected { status: status.as_u16(), body: text });
                }
                Attempt::Retry(last, retry_after) => (last, retry_after),
            };
            let retry = attempts - 1;
            if attempts >= backoff.max_attempts {
                report(attempts, Outcome::Failed, None);
                return Err(SendError::RetriesExhausted { attempts, last });
            }
            tracing::debug!(attempts, %last, "herald-client: retrying");
            let jitter = backoff.delay(retry);
            let wait = match retry_after {
                Some(after) => after.min(self.config.max_retry_after).max(jitter),
                None => jitter,
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, method: reqwest::Method, url: url::Url, body: Vec<u8>) -> Attempt {
        let request = self
            .http
            .request(method, url)
            .bearer_auth(&self.config.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Retry(error.to_string(), None),
        };
        let status = response.status();
        if status.is_success() {
            // Only `POST /v1/events` answers with counts; other bodies are not ours to read.
            let counted = response.bytes().await.ok().and_then(|body| serde_json::from_slice(&body).ok());
            return Attempt::Done(status, counted);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.text().await.unwrap_or_default();
        let retriable = status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 425 | 429);
        if retriable {
            Attempt::Retry(
                format!("{status}: {text}"),
                if status == StatusCode::TOO_MANY_REQUESTS { retry_after } else { None },
            )
        } else {
            Attempt::Refused(status, text)
        }
    }

    pub(crate) fn report(&self, report: BatchReport) {
        if let Some(listener) = &self.config.on_batch {
            listener(&report);
        }
    }

    pub(crate) fn fail(&self, error: SendError, events: Vec<Event>, identify: Option<(String, Value)>) {
        tracing::warn!(%error, events = events.len(), "herald-client: gave up");
        if let Some(on_error) = &self.config.on_error {
            on_error(Failure { error, events, identify });
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 10 "), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = parse_retry_after(&later).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
