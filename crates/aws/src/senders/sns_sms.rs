//! SMS through SNS.

use async_trait::async_trait;
use herald_core::delivery::{Outgoing, SendError, SendErrorCode, SendFailure, Sender, Target};

use super::{classify, provider_name};

#[derive(Clone, Debug)]
pub struct SnsSmsSender {
    client: aws_sdk_sns::Client,
    name: String,
}

impl SnsSmsSender {
    pub fn new(client: aws_sdk_sns::Client) -> Self {
        let name = provider_name("sns-sms", client.config().region());
        Self { client, name }
    }
}

#[async_trait]
impl Sender for SnsSmsSender {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let Target::Phone(number) = message.target else {
            return Err(SendError::Permanent(SendFailure::new(SendErrorCode::InvalidAddress)));
        };
        let output = self
            .client
            .publish()
            .phone_number(number)
            .message(&message.content.body)
            .message_attributes(
                "AWS.SNS.SMS.SMSType",
                aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("Transactional")
                    .build()
                    .expect("data type is set"),
            )
            .send()
            .await
            .map_err(classify)?;
        Ok(output.message_id.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use herald_core::delivery::rendering::Rendered;

    use super::*;
    use crate::senders::canned::{PHONE, assert_no_personal_data, sns, sns_error};

    async fn refused_with(code: &str, message: &str) -> SendError {
        let sender = SnsSmsSender::new(sns(vec![sns_error(code, message)]));
        let content = Rendered { subject: None, body: "b".into(), html: None };
        let target = Target::Phone(PHONE.into());
        let outgoing = crate::senders::canned::outgoing(&target, &content);
        sender.send(&outgoing).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_refused_sms_is_recorded_as_the_code_never_sns_s_message() {
        let error = refused_with(
            "InvalidParameter",
            "Invalid parameter: PhoneNumber Reason: +14155550123 (someone@example.com) is not valid",
        )
        .await;
        assert!(matches!(error, SendError::Permanent(_)), "{error:?}");
        assert_eq!(error.failure().reason(), "rejected/InvalidParameter");
        assert_no_personal_data(&format!("{error} {error:?}"));
    }

    #[tokio::test]
    async fn a_throttled_sms_is_retryable_and_recorded_as_the_code() {
        let error = refused_with("Throttling", "Rate exceeded for +14155550123, someone@example.com").await;
        assert!(matches!(error, SendError::Retryable(_)), "{error:?}");
        assert_eq!(error.failure().reason(), "throttled/Throttling");
        assert_no_personal_data(&format!("{error} {error:?}"));
    }
}
