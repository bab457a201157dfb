//! RFC 9457 problem details: every error the API answers, in one shape.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use herald_core::{
    activity::ActivityError,
    campaigns::CampaignError,
    notifications::NotificationError,
    profiles::ProfileError,
    segments::SegmentError,
    store::StoreError,
    suppressions::SuppressionError,
    validation::{FieldError, ValidationErrors},
};
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The fields at fault, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    headers: Vec<(&'static str, String)>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { kind, title, status: status.as_u16(), detail: detail.into(), errors: Vec::new(), headers: Vec::new() }
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let detail = format!("Invalid field(s): {}", fields.join(", "));
        Self {
            errors,
            ..Self::new(StatusCode::BAD_REQUEST, "urn:herald:problem:invalid-request", "Invalid request", detail)
        }
    }

    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "urn:herald:problem:malformed-json", "Malformed JSON", detail)
    }

    pub fn unsupported_media_type() -> Self {
        Self::unsupported_media_type_because("Send the body as application/json")
    }

    /// 415 with `detail` naming the media types the route takes.
    pub fn unsupported_media_type_because(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "urn:herald:problem:unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "urn:herald:problem:too-large",
            "Request body too large",
            format!("The body must be at most {limit} bytes"),
        )
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        let mut p =
            Self::new(StatusCode::UNAUTHORIZED, "urn:herald:problem:unauthenticated", "Unauthenticated", detail);
        p.headers.push(("www-authenticate", "Bearer".into()));
        p
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "urn:herald:problem:forbidden", "Forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "urn:herald:problem:not-found", "Not found", detail)
    }

    pub fn method_not_allowed(allow: &[&str]) -> Self {
        let mut p = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "urn:herald:problem:method-not-allowed",
            "Method not allowed",
            format!("This resource allows {}", allow.join(", ")),
        );
        p.headers.push(("allow", allow.join(", ")));
        p
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "urn:herald:problem:conflict", "Conflict", detail)
    }

    /// 422: the request is well formed but contradicts what was stored before.
    pub fn unprocessable(kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, kind, title, detail)
    }

    /// A backing service refused the request for good: retrying the same request cannot
    /// help, so no Retry-After.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "urn:herald:problem:internal",
            "Internal server error",
            "A backing service refused the request",
        )
    }

    pub fn unavailable() -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:herald:problem:unavailable",
            "Service unavailable",
            "A backing service failed; the request may be retried",
        );
        p.headers.push(("retry-after", "1".into()));
        p
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).expect("problems carry valid status codes")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut builder = Response::builder().status(self.status()).header("content-type", CONTENT_TYPE);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        let body = serde_json::to_string(&self).expect("problems serialize");
        builder.body(body.into()).expect("a valid response")
    }
}

impl From<ProfileError> for Problem {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::Invalid(errors) => Problem::invalid(errors.0),
            ProfileError::NotFound => Problem::not_found("No profile for this user"),
            ProfileError::Contention => Problem::conflict(e.to_string()),
            ProfileError::Store(_) => {
                tracing::error!(error = %e, "backing service failed");
                Problem::unavailable()
            }
        }
    }
}

impl From<SuppressionError> for Problem {
    fn from(e: SuppressionError) -> Self {
        match e {
            SuppressionError::Invalid(errors) => Problem::invalid(errors.0),
            SuppressionError::NotFound => Problem::not_found("The address is not on the suppression list"),
            SuppressionError::Store(e) => e.into(),
        }
    }
}

impl From<ValidationErrors> for Problem {
    fn from(errors: ValidationErrors) -> Self {
        Problem::invalid(errors.0)
    }
}

impl From<NotificationError> for Problem {
    fn from(e: NotificationError) -> Self {
        match e {
            NotificationError::Invalid(errors) => Problem::invalid(errors.0),
            NotificationError::NotFound => Problem::not_found("No such notification"),
            NotificationError::KeyReused => Problem::unprocessable(
                "urn:herald:problem:idempotency-key-reused",
                "Idempotency key reused",
                "This idempotency key was used for another request; use a new key for a new notification",
            ),
            NotificationError::Store(_) | NotificationError::Publish(_) => {
                tracing::error!(error = %e, "backing service failed");
                Problem::unavailable()
            }
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, retryable = e.is_retryable(), "backing service failed");
        if e.is_retryable() { Problem::unavailable() } else { Problem::internal() }
    }
}

impl From<SegmentError> for Problem {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Invalid(errors) => Problem::invalid(errors.0),
            SegmentError::NotFound => Problem::not_found("No such segment"),
            SegmentError::Conflict(detail) => Problem::conflict(detail),
            SegmentError::Store(_) | SegmentError::Publish(_) => {
                tracing::error!(error = %e, "backing service failed");
                Problem::unavailable()
            }
        }
    }
}

impl From<ActivityError> for Problem {
    fn from(e: ActivityError) -> Self {
        match e {
            ActivityError::Invalid(errors) => Problem::invalid(errors.0),
            ActivityError::Store(_) | ActivityError::Publish(_) => {
                tracing::error!(error = %e, "backing service failed");
                Problem::unavailable()
            }
        }
    }
}

impl From<CampaignError> for Problem {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Invalid(errors) => Problem::invalid(errors.0),
            CampaignError::NotFound => Problem::not_found("No such campaign"),
            CampaignError::Exists(_) => Problem::conflict(e.to_string()),
            CampaignError::Done => Problem::conflict("The campaign is done: there is nothing to cancel"),
            CampaignError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_errors_answer_as_before_they_left_the_api() {
        let invalid = Problem::from(CampaignError::Invalid(ValidationErrors::single("segment_id", "names no segment")));
        assert_eq!((invalid.status, invalid.errors[0].field.as_str()), (400, "segment_id"));
        let not_found = Problem::from(CampaignError::NotFound);
        assert_eq!((not_found.status, not_found.detail.as_str()), (404, "No such campaign"));
        let exists = Problem::from(CampaignError::Exists("c_spring".into()));
        assert_eq!(
            (exists.status, exists.detail.as_str()),
            (409, "campaign c_spring exists with another request; choose another campaign_id")
        );
        let done = Problem::from(CampaignError::Done);
        assert_eq!((done.status, done.detail.as_str()), (409, "The campaign is done: there is nothing to cancel"));
        let failed = Problem::from(CampaignError::Store(StoreError::Transient("down".into())));
        assert_eq!(failed.status, 503);
        assert_eq!(failed.into_response().headers()["retry-after"], "1");
    }
}
