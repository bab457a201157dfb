//! The channel providers: SES v2 for email, SNS for SMS and mobile push, and signed HTTPS
//! webhooks. Each is an implementation of core's `Sender` port.

mod ses;
mod sns_push;
mod sns_sms;
pub mod webhook;

pub use ses::SesEmailSender;
pub use sns_push::{PlatformApplications, SnsPushSender};
pub use sns_sms::SnsSmsSender;

use herald_core::delivery::{SendError, SendErrorCode, SendFailure};

/// Throttling and server faults may pass on a later try; a request the provider refused
/// (invalid address, rejected content) or that could not be built never will; a timeout,
/// a broken connection or an unreadable answer may come after the provider took the
/// message, so it is uncertain and never sent again (the SDK clients make one attempt per
/// call: the pipeline's retries are the only layer).
///
/// What is kept is a code of Herald's and the service's error code (`code()`), never its
/// message nor the error's Display: SES's `MessageRejected` quotes the recipient.
pub(crate) fn classify<E>(e: aws_sdk_sesv2::error::SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>) -> SendError
where
    E: aws_sdk_sesv2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_sesv2::error::SdkError;
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default().to_owned();
    let transient = crate::errors::TRANSIENT_CODES.contains(&code.as_str());
    let failure = |herald| match (code.as_str(), status) {
        ("", Some(status)) => SendFailure::with_provider_code(herald, &status.to_string()),
        ("", None) => SendFailure::new(herald),
        (code, _) => SendFailure::with_provider_code(herald, code),
    };
    match (&e, status) {
        (SdkError::ServiceError(_), _) if status == Some(429) || (transient && !code.contains("Timeout")) => {
            SendError::Retryable(failure(SendErrorCode::Throttled))
        }
        (SdkError::ServiceError(_), _) if transient => SendError::Retryable(failure(SendErrorCode::Timeout)),
        (SdkError::ServiceError(_), Some(status)) if status >= 500 => {
            SendError::Retryable(failure(SendErrorCode::ProviderError))
        }
        (SdkError::ServiceError(_), _) if code.starts_with("EndpointDisabled") => {
            SendError::Permanent(failure(SendErrorCode::EndpointDisabled))
        }
        (SdkError::ServiceError(_), _) => SendError::Permanent(failure(SendErrorCode::Rejected)),
        (SdkError::ConstructionFailure(_), _) => SendError::Permanent(failure(SendErrorCode::NotConfigured)),
        (SdkError::DispatchFailure(failure_), _) if failure_.is_user() => {
            SendError::Permanent(failure(SendErrorCode::NotConfigured))
        }
        (SdkError::DispatchFailure(failure_), _) if failure_.is_io() && !failure_.is_timeout() => {
            SendError::Uncertain(failure(SendErrorCode::Unreachable))
        }
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => {
            SendError::Uncertain(failure(SendErrorCode::Timeout))
        }
        _ => SendError::Uncertain(failure(SendErrorCode::ProviderError)),
    }
}

/// `service@region`, the provider name recorded on deliveries: with a secondary provider
/// in another region, it tells which one sent.
pub(crate) fn provider_name(service: &str, region: Option<&aws_sdk_sns::config::Region>) -> String {
    format!("{service}@{}", region.map(|r| r.as_ref()).unwrap_or("default"))
}

/// An HTTP client for the SDK that answers from a list instead of the network.
#[cfg(test)]
pub(crate) mod canned {
    use std::sync::{Arc, Mutex};

    use aws_sdk_sesv2::config::http::HttpResponse;
    use aws_smithy_runtime_api::{
        client::{
            http::{HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn},
            orchestrator::HttpRequest,
        },
        http::StatusCode,
    };
    use aws_smithy_types::body::SdkBody;

    /// What a provider's own error message says in these tests: an address and a number
    /// that must never reach a delivery, an event or a log.
    pub(crate) const EMAIL: &str = "someone@example.com";
    pub(crate) const PHONE: &str = "+14155550123";

    /// One answer: status, headers, body.
    pub(crate) type Answer = (u16, Vec<(&'static str, &'static str)>, String);

    #[derive(Clone, Debug)]
    struct Canned(Arc<Mutex<Vec<Answer>>>);

    impl HttpConnector for Canned {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let mut answers = self.0.lock().unwrap();
            // The last answer repeats.
            let (status, headers, body) = if answers.len() > 1 { answers.remove(0) } else { answers[0].clone() };
            let mut response = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
            for (name, value) in headers {
                response.headers_mut().insert(name, value);
            }
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    /// A client that gives `answers` in order, the last one to every later request.
    pub(crate) fn answering(answers: Vec<Answer>) -> SharedHttpClient {
        let canned = Canned(Arc::new(Mutex::new(answers)));
        http_client_fn(move |_, _| SharedHttpConnector::new(canned.clone()))
    }

    /// SNS's (awsQuery) error answer with `code` and `message`.
    pub(crate) fn sns_error(code: &str, message: &str) -> Answer {
        let body = format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
        );
        (400, vec![("content-type", "text/xml")], body)
    }

    /// An SNS client over `answers`.
    pub(crate) fn sns(answers: Vec<Answer>) -> aws_sdk_sns::Client {
        let config = aws_sdk_sns::Config::builder()
            .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
            .region(aws_sdk_sns::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sns::config::Credentials::for_tests())
            .http_client(answering(answers))
            .build();
        aws_sdk_sns::Client::from_conf(config)
    }

    /// A message of `content` to `target`, as the pipeline hands one to a sender.
    pub(crate) fn outgoing<'a>(
        target: &'a herald_core::delivery::Target,
        content: &'a herald_core::delivery::rendering::Rendered,
    ) -> herald_core::delivery::Outgoing<'a> {
        herald_core::delivery::Outgoing {
            delivery_id: "d_1",
            user_id: Some("u1"),
            notification_type: "news",
            target,
            content,
            list_unsubscribe: None,
        }
    }

    /// Fails if `text` holds the address or the number.
    pub(crate) fn assert_no_personal_data(text: &str) {
        assert!(!text.contains(EMAIL) && !text.contains(PHONE), "personal data in: {text}");
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sesv2::{
        config::http::HttpResponse,
        error::{ErrorMetadata, SdkError},
        operation::send_email::SendEmailError,
    };
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn refused(status: u16, code: &str) -> SdkError<SendEmailError, HttpResponse> {
        let error = SendEmailError::generic(ErrorMetadata::builder().code(code).build());
        SdkError::service_error(error, HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()))
    }

    #[test]
    fn throttling_and_server_faults_are_retried() {
        assert!(matches!(classify(refused(400, "ThrottlingException")), SendError::Retryable(_)));
        assert!(matches!(classify(refused(503, "ServiceUnavailable")), SendError::Retryable(_)));
    }

    #[test]
    fn a_refused_request_is_permanent() {
        assert!(matches!(classify(refused(400, "MessageRejected")), SendError::Permanent(_)));
    }

    #[test]
    fn a_refusal_keeps_the_service_s_code_never_its_message() {
        let metadata = ErrorMetadata::builder()
            .code("MessageRejected")
            .message(format!("identities failed the check: {}, {}", canned::EMAIL, canned::PHONE))
            .build();
        let error = SendEmailError::generic(metadata);
        let refused =
            SdkError::service_error(error, HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::empty()));
        let error = classify(refused);
        assert_eq!(error.failure().reason(), "rejected/MessageRejected");
        canned::assert_no_personal_data(&format!("{error} {error:?}"));
    }

    #[test]
    fn a_timeout_may_have_reached_the_provider_and_is_not_sent_again() {
        let timed_out: SdkError<SendEmailError, HttpResponse> = SdkError::timeout_error("no answer in time");
        let error = classify(timed_out);
        assert!(matches!(error, SendError::Uncertain(_)));
        assert_eq!(error.failure().reason(), "timeout");
    }
}
