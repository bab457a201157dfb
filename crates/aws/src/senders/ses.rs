//! Email through SES v2.

use async_trait::async_trait;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag};
use herald_core::delivery::{Outgoing, SendError, SendErrorCode, SendFailure, Sender, Target};

use super::{classify, provider_name};
use crate::feedback::ses::DELIVERY_TAG;

fn content(text: &str) -> Content {
    Content::builder().data(text).charset("UTF-8").build().expect("data is set")
}

/// The most a header value may take in SES (less the name's share of its 996 characters).
const MAX_HEADER_VALUE: usize = 995;

/// RFC 8058 one-click unsubscribe: mailbox providers POST `List-Unsubscribe=One-Click` to
/// the URL. None when the URL, with its brackets, is over what SES takes in a header (a
/// very long user id): the mail then goes without them rather than being refused.
fn list_unsubscribe_headers(url: &str) -> Option<[MessageHeader; 2]> {
    let value = format!("<{url}>");
    if value.len() > MAX_HEADER_VALUE || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let header = |name: &str, value: &str| MessageHeader::builder().name(name).value(value).build().expect("both set");
    Some([header("List-Unsubscribe", &value), header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")])
}

#[derive(Clone, Debug)]
pub struct SesEmailSender {
    client: aws_sdk_sesv2::Client,
    from: String,
    name: String,
    configuration_set: Option<String>,
}

impl SesEmailSender {
    pub fn new(client: aws_sdk_sesv2::Client, from: impl Into<String>) -> Self {
        let name = provider_name("ses", client.config().region());
        Self { client, from: from.into(), name, configuration_set: None }
    }

    /// Sends through `configuration_set`, whose event destination publishes each email's
    /// deliveries, bounces and complaints (Herald's feedback).
    pub fn with_configuration_set(self, configuration_set: Option<String>) -> Self {
        Self { configuration_set, ..self }
    }
}

#[async_trait]
impl Sender for SesEmailSender {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let Target::Email(address) = message.target else {
            return Err(SendError::Permanent(SendFailure::new(SendErrorCode::InvalidAddress)));
        };
        let mut body = Body::builder().text(content(&message.content.body));
        if let Some(html) = &message.content.html {
            body = body.html(content(html));
        }
        let headers = message.list_unsubscribe.map(|url| {
            let headers = list_unsubscribe_headers(url);
            if headers.is_none() {
                tracing::warn!(
                    delivery_id = message.delivery_id,
                    "unsubscribe URL too long for a header; sent without"
                );
            }
            headers.map(Vec::from)
        });
        let email = Message::builder()
            .subject(content(message.content.subject.as_deref().unwrap_or_default()))
            .body(body.build())
            .set_headers(headers.flatten())
            .build();
        let output = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(address).build())
            .content(EmailContent::builder().simple(email).build())
            .set_configuration_set_name(self.configuration_set.clone())
            // SES returns the tags in every event about this email: its feedback finds
            // the delivery by them.
            .email_tags(MessageTag::builder().name(DELIVERY_TAG).value(message.delivery_id).build().expect("both set"))
            .send()
            .await
            .map_err(classify)?;
        Ok(output.message_id.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::{
        box_error::BoxError,
        client::{
            interceptors::{Intercept, context::BeforeTransmitInterceptorContextRef},
            runtime_components::RuntimeComponents,
        },
    };
    use aws_smithy_types::config_bag::ConfigBag;
    use herald_core::delivery::rendering::Rendered;

    use super::*;

    /// Keeps the JSON body of the request the SDK would transmit, and stops it there.
    #[derive(Debug, Default, Clone)]
    struct Capture(Arc<Mutex<Option<serde_json::Value>>>);

    impl Intercept for Capture {
        fn name(&self) -> &'static str {
            "Capture"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let body = context.request().body().bytes().expect("an in-memory body");
            *self.0.lock().unwrap() = Some(serde_json::from_slice(body)?);
            Err("captured, not sent".into())
        }
    }

    /// The `Content.Simple.Headers` of the SendEmail request the sender makes.
    async fn headers_sent(list_unsubscribe: Option<&str>) -> serde_json::Value {
        request_sent(list_unsubscribe, None).await["Content"]["Simple"]["Headers"].clone()
    }

    /// The SendEmail request the sender makes (through `configuration_set`).
    async fn request_sent(list_unsubscribe: Option<&str>, configuration_set: Option<&str>) -> serde_json::Value {
        let capture = Capture::default();
        let config = aws_sdk_sesv2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::for_tests())
            .interceptor(capture.clone())
            .build();
        let sender = SesEmailSender::new(aws_sdk_sesv2::Client::from_conf(config), "from@example.com")
            .with_configuration_set(configuration_set.map(str::to_owned));
        let content = Rendered { subject: Some("s".into()), body: "b".into(), html: None };
        let target = Target::Email("a@example.com".into());
        let outgoing = Outgoing {
            delivery_id: "d_1",
            user_id: Some("u1"),
            notification_type: "news",
            target: &target,
            content: &content,
            list_unsubscribe,
        };
        assert!(sender.send(&outgoing).await.is_err(), "the capture stops the request");
        let request = capture.0.lock().unwrap().take().expect("a request was built");
        assert_eq!(request["Content"]["Simple"]["Body"]["Text"]["Data"], "b", "the email itself");
        request
    }

    #[tokio::test]
    async fn an_email_goes_through_the_configuration_set_tagged_with_its_delivery() {
        let request = request_sent(None, Some("herald-feedback")).await;
        assert_eq!(request["ConfigurationSetName"], "herald-feedback");
        assert_eq!(request["EmailTags"], serde_json::json!([{"Name": "herald_delivery", "Value": "d_1"}]));
    }

    #[tokio::test]
    async fn an_email_with_an_unsubscribe_url_carries_the_one_click_headers() {
        let headers = headers_sent(Some("https://api.example/v1/t/abc.def")).await;
        assert_eq!(
            headers,
            serde_json::json!([
                {"Name": "List-Unsubscribe", "Value": "<https://api.example/v1/t/abc.def>"},
                {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
            ])
        );
    }

    #[tokio::test]
    async fn an_email_without_an_unsubscribe_url_carries_no_headers() {
        assert_eq!(headers_sent(None).await, serde_json::Value::Null);
    }

    #[tokio::test]
    async fn an_unsubscribe_url_too_long_for_a_header_is_left_out_and_the_email_still_goes() {
        let url = format!("https://api.example/v1/t/{}", "a".repeat(MAX_HEADER_VALUE));
        assert_eq!(headers_sent(Some(&url)).await, serde_json::Value::Null);
    }

    #[tokio::test]
    async fn a_rejected_email_is_recorded_as_the_code_never_ses_s_message() {
        use crate::senders::canned::{EMAIL, PHONE, answering, assert_no_personal_data};
        // SES names the unverified identities in its message.
        let message =
            format!("Email address is not verified. The following identities failed the check: {EMAIL}, {PHONE}");
        let answer =
            (400, vec![("x-amzn-errortype", "MessageRejected")], serde_json::json!({"message": message}).to_string());
        let config = aws_sdk_sesv2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::for_tests())
            .http_client(answering(vec![answer]))
            .build();
        let sender = SesEmailSender::new(aws_sdk_sesv2::Client::from_conf(config), "from@example.com");
        let content = Rendered { subject: Some("s".into()), body: "b".into(), html: None };
        let target = Target::Email(EMAIL.into());
        let outgoing = crate::senders::canned::outgoing(&target, &content);
        let error = sender.send(&outgoing).await.unwrap_err();
        assert!(matches!(error, SendError::Permanent(_)), "{error:?}");
        assert_eq!(error.failure().reason(), "rejected/MessageRejected");
        assert_no_personal_data(&format!("{error} {error:?}"));
    }
}
