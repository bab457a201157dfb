//! Webhook delivery: an HTTPS POST of the rendered message, signed with HMAC-SHA256 so the
//! receiver can tell it came from Herald and was not altered or replayed.

use std::time::Duration;

use async_trait::async_trait;
use herald_core::{
    delivery::{Outgoing, SendError, Sender},
    notifications::Target,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long one POST may take before it counts as a temporary failure.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct WebhookSender {
    http: reqwest::Client,
    secret: Vec<u8>,
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the header receivers verify.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSender {
    /// `extra_root_pem` adds a trusted certificate authority (local stacks and tests that
    /// run their own HTTPS receiver); production uses the system's roots only.
    pub fn new(secret: &str, extra_root_pem: Option<&str>) -> Result<Self, reqwest::Error> {
        // No redirects: a 307 or 308 would replay the signed body to whatever host the
        // receiver names; a redirect is the receiver's answer, recorded as such.
        let mut builder =
            reqwest::Client::builder().timeout(TIMEOUT).https_only(true).redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = extra_root_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        Ok(Self { http: builder.build()?, secret: secret.as_bytes().to_vec() })
    }

    async fn post(&self, url: &str, body: &str, delivery_id: &str) -> Result<(), SendError> {
        let signature = signature(&self.secret, chrono::Utc::now().timestamp(), body);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-herald-signature", signature)
            // Receivers that dedup on it make a retried POST harmless.
            .header("idempotency-key", delivery_id)
            .body(body.to_owned())
            .send()
            .await
            // reqwest's errors name the URL, which may hold a secret (Slack's do).
            .map_err(|e| SendError::Retryable(format!("POST failed: {}", e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Retryable(format!("the receiver answered {status}")))
        } else {
            Err(SendError::Permanent(format!("the receiver answered {status}")))
        }
    }
}

#[async_trait]
impl Sender for WebhookSender {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let Target::Webhooks(urls) = message.target else {
            return Err(SendError::Permanent("the webhook channel needs webhook URLs".into()));
        };
        let body = serde_json::json!({
            "text": message.content.body,
            "subject": message.content.subject,
            "type": message.notification_type,
            "delivery_id": message.delivery_id,
        })
        .to_string();
        for url in urls {
            self.post(url, &body, message.delivery_id).await?;
        }
        Ok(message.delivery_id.to_owned())
    }
}
