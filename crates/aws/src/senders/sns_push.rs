//! Mobile push through SNS platform endpoints (APNs, FCM).

use std::sync::Arc;

use async_trait::async_trait;
use herald_core::{
    delivery::{DisabledDevices, Outgoing, SendError, SendErrorCode, SendFailure, Sender, Target},
    profiles::{DeviceToken, Platform},
};

use super::{classify, provider_name};

/// The endpoint ARN in SNS's "Endpoint <arn> already exists with the same Token, but
/// different attributes." error.
fn existing_endpoint(message: &str) -> Option<String> {
    let rest = &message[message.find("Endpoint arn:")? + "Endpoint ".len()..];
    let arn = rest.split_whitespace().next()?;
    rest[arn.len()..].trim_start().starts_with("already exists").then(|| arn.to_owned())
}

/// SNS platform applications, one per push platform (ARNs from the template's parameters).
#[derive(Clone, Debug, Default)]
pub struct PlatformApplications {
    pub apns: Option<String>,
    pub apns_sandbox: Option<String>,
    pub fcm: Option<String>,
}

#[derive(Clone)]
pub struct SnsPushSender {
    client: aws_sdk_sns::Client,
    applications: PlatformApplications,
    name: String,
    /// Told about tokens whose endpoint SNS reports disabled.
    disabled: Option<Arc<dyn DisabledDevices>>,
}

impl SnsPushSender {
    pub fn new(client: aws_sdk_sns::Client, applications: PlatformApplications) -> Self {
        let name = provider_name("sns-push", client.config().region());
        Self { client, applications, name, disabled: None }
    }

    pub fn on_disabled(self, disabled: Arc<dyn DisabledDevices>) -> Self {
        Self { disabled: Some(disabled), ..self }
    }

    fn application(&self, platform: Platform) -> Option<&str> {
        match platform {
            Platform::Apns => self.applications.apns.as_deref(),
            Platform::ApnsSandbox => self.applications.apns_sandbox.as_deref(),
            Platform::Fcm => self.applications.fcm.as_deref(),
        }
    }

    /// The SNS message: one payload per platform, as `MessageStructure=json` expects.
    fn payload(message: &Outgoing<'_>) -> String {
        let title = message.content.subject.as_deref().unwrap_or_default();
        let body = &message.content.body;
        let apns =
            serde_json::json!({"aps": {"alert": {"title": title, "body": body}}, "delivery_id": message.delivery_id})
                .to_string();
        let fcm = serde_json::json!({"notification": {"title": title, "body": body}, "data": {"delivery_id": message.delivery_id}}).to_string();
        serde_json::json!({"default": body, "APNS": apns, "APNS_SANDBOX": apns, "GCM": fcm}).to_string()
    }

    async fn send_to(&self, device: &DeviceToken, payload: &str) -> Result<String, SendError> {
        let application = self
            .application(device.platform)
            .ok_or_else(|| SendError::Permanent(SendFailure::new(SendErrorCode::NotConfigured)))?;
        // Creating an endpoint for a known token returns the existing one: SNS keeps the
        // token → endpoint mapping, so a lookup table of our own would only duplicate it.
        // Once SNS has disabled the endpoint (the push service reported the token gone),
        // the create call names it in an InvalidParameter error instead.
        let created = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(application)
            .token(&device.token)
            .send()
            .await;
        let endpoint = match created {
            Ok(output) => {
                output.endpoint_arn.ok_or(SendError::Retryable(SendFailure::new(SendErrorCode::ProviderError)))?
            }
            Err(e) => {
                let existing = e.as_service_error().and_then(|s| s.meta().message()).and_then(existing_endpoint);
                let Some(existing) = existing else { return Err(classify(e)) };
                let attributes = self
                    .client
                    .get_endpoint_attributes()
                    .endpoint_arn(&existing)
                    .send()
                    .await
                    .map_err(classify)?
                    .attributes
                    .unwrap_or_default();
                if attributes.get("Enabled").map(String::as_str) == Some("false") {
                    return Err(SendError::Permanent(SendFailure::new(SendErrorCode::EndpointDisabled)));
                }
                existing
            }
        };
        let output = self
            .client
            .publish()
            .target_arn(endpoint)
            .message_structure("json")
            .message(payload)
            .send()
            .await
            // SNS's EndpointDisabled: `classify` makes it `endpoint_disabled`.
            .map_err(classify)?;
        Ok(output.message_id.unwrap_or_default())
    }
}

#[async_trait]
impl Sender for SnsPushSender {
    fn name(&self) -> &str {
        &self.name
    }

    /// Sends to every device of the user; succeeds if any device took the message.
    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let Target::Devices(devices) = message.target else {
            return Err(SendError::Permanent(SendFailure::new(SendErrorCode::InvalidAddress)));
        };
        let payload = Self::payload(message);
        let mut ids = Vec::new();
        let mut failures = Vec::new();
        for device in devices {
            match self.send_to(device, &payload).await {
                Ok(id) => ids.push(id),
                Err(e) => {
                    if let (Some(disabled), Some(user_id), SendError::Permanent(failure)) =
                        (&self.disabled, message.user_id, &e)
                        && failure.code == SendErrorCode::EndpointDisabled
                        && let Err(store) = disabled.device_disabled(user_id, &device.token).await
                    {
                        tracing::warn!(error = %store, "a disabled device token could not be removed");
                    }
                    failures.push(e);
                }
            }
        }
        if !ids.is_empty() {
            return Ok(ids.join(","));
        }
        // A device that may have got it is not sent to again; else a retry may help. The
        // first such device's failure stands for all.
        let uncertain = failures.iter().find(|f| matches!(f, SendError::Uncertain(_)));
        let retryable = failures.iter().find(|f| matches!(f, SendError::Retryable(_)));
        let first = uncertain.or(retryable).or(failures.first()).cloned();
        Err(first.unwrap_or(SendError::Permanent(SendFailure::new(SendErrorCode::InvalidAddress))))
    }
}

#[cfg(test)]
mod tests {
    use herald_core::delivery::rendering::Rendered;

    use super::*;
    use crate::senders::canned::{EMAIL, PHONE, assert_no_personal_data, sns, sns_error};

    #[tokio::test]
    async fn a_disabled_endpoint_is_recorded_as_the_code_never_sns_s_message() {
        let created = (
            200,
            vec![("content-type", "text/xml")],
            "<CreatePlatformEndpointResponse><CreatePlatformEndpointResult><EndpointArn>arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/e1</EndpointArn></CreatePlatformEndpointResult><ResponseMetadata><RequestId>r0</RequestId></ResponseMetadata></CreatePlatformEndpointResponse>".to_owned(),
        );
        let disabled = sns_error("EndpointDisabled", &format!("Endpoint is disabled (user {EMAIL}, {PHONE})"));
        let applications = PlatformApplications {
            fcm: Some("arn:aws:sns:us-east-1:123456789012:app/GCM/app".into()),
            ..Default::default()
        };
        let sender = SnsPushSender::new(sns(vec![created, disabled]), applications);
        let content = Rendered { subject: None, body: "b".into(), html: None };
        let target = Target::Devices(vec![DeviceToken { platform: Platform::Fcm, token: "t1".into() }]);
        let outgoing = crate::senders::canned::outgoing(&target, &content);
        let error = sender.send(&outgoing).await.unwrap_err();
        assert!(matches!(error, SendError::Permanent(_)), "{error:?}");
        assert_eq!(error.failure().reason(), "endpoint_disabled/EndpointDisabled");
        assert_no_personal_data(&format!("{error} {error:?}"));
    }

    #[test]
    fn the_existing_endpoint_is_read_from_the_sns_error() {
        let message = "Invalid parameter: Token Reason: Endpoint arn:aws:sns:us-east-1:123456789012:endpoint/APNS/app/ef67 already exists with the same Token, but different attributes.";
        assert_eq!(
            existing_endpoint(message).as_deref(),
            Some("arn:aws:sns:us-east-1:123456789012:endpoint/APNS/app/ef67")
        );
        assert_eq!(existing_endpoint("Invalid parameter: Token"), None);
    }
}
