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
