//! Email through SES v2.

use async_trait::async_trait;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use herald_core::{
    delivery::{Outgoing, SendError, Sender},
    notifications::Target,
};

use super::{classify, provider_name};

fn content(text: &str) -> Content {
    Content::builder().data(text).charset("UTF-8").build().expect("data is set")
}

#[derive(Clone, Debug)]
pub struct SesEmailSender {
    client: aws_sdk_sesv2::Client,
    from: String,
    name: String,
}

impl SesEmailSender {
    pub fn new(client: aws_sdk_sesv2::Client, from: impl Into<String>) -> Self {
        let name = provider_name("ses", client.config().region());
        Self { client, from: from.into(), name }
    }
}

#[async_trait]
impl Sender for SesEmailSender {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let Target::Email(address) = message.target else {
            return Err(SendError::Permanent("the email channel needs an email address".into()));
        };
        let mut body = Body::builder().text(content(&message.content.body));
        if let Some(html) = &message.content.html {
            body = body.html(content(html));
        }
        let email = Message::builder()
            .subject(content(message.content.subject.as_deref().unwrap_or_default()))
            .body(body.build())
            .build();
        let output = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(address).build())
            .content(EmailContent::builder().simple(email).build())
            .send()
            .await
            .map_err(classify)?;
        Ok(output.message_id.unwrap_or_default())
    }
}
