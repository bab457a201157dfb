//! The channel providers: SES v2 for email, SNS for SMS and mobile push, and signed HTTPS
//! webhooks. Each is an implementation of core's `Sender` port.

mod ses;
mod sns_push;
mod sns_sms;
pub mod webhook;

pub use ses::SesEmailSender;
pub use sns_push::{PlatformApplications, SnsPushSender};
pub use sns_sms::SnsSmsSender;

use herald_core::delivery::SendError;

/// Throttling, server faults and transport failures may pass on a later try; the rest
/// (invalid address, rejected content) never will.
pub(crate) fn classify<E>(e: aws_sdk_sesv2::error::SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>) -> SendError
where
    E: aws_sdk_sesv2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    const THROTTLING: [&str; 6] = [
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "LimitExceededException",
        "RequestLimitExceeded",
    ];
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default().to_owned();
    let message = crate::describe(&e);
    let retryable = match (&e, status) {
        (aws_sdk_sesv2::error::SdkError::ServiceError(_), Some(status)) => {
            status >= 500 || status == 429 || THROTTLING.contains(&code.as_str())
        }
        (aws_sdk_sesv2::error::SdkError::ServiceError(_), None) => THROTTLING.contains(&code.as_str()),
        _ => true,
    };
    if retryable { SendError::Retryable(message) } else { SendError::Permanent(message) }
}

/// `service@region`, the provider name recorded on deliveries: with a secondary provider
/// in another region, it tells which one sent.
pub(crate) fn provider_name(service: &str, region: Option<&aws_sdk_sns::config::Region>) -> String {
    format!("{service}@{}", region.map(|r| r.as_ref()).unwrap_or("default"))
}
