//! Webhook delivery: an HTTPS POST of the rendered message, signed with Ed25519
//! (`herald_core::signing::webhook`) so the receiver can tell, with Herald's published
//! public key, that it came from Herald and was not altered or replayed.
//!
//! Destinations are public addresses only: a webhook URL is the user's input, and a
//! function inside the account must not become a way to reach loopback, private networks
//! or the instance metadata service. The check is on the addresses the client actually
//! connects to (the resolver hands it only public ones), so a name that resolves to a
//! public address once and a private one later (DNS rebinding) is refused too.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use herald_core::{
    delivery::{Outgoing, SendError, SendErrorCode, SendFailure, Sender, Target},
    signing::webhook::{SIGNATURE_HEADER, WebhookSigner},
};

/// Deliveries whose accepted URLs one sender remembers at most.
const MAX_REMEMBERED: usize = 10_000;

/// How long one POST may take before it counts as a temporary failure.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct WebhookSender {
    http: reqwest::Client,
    signer: WebhookSigner,
    destinations: Destinations,
    /// The URLs that accepted each delivery still retrying. An entry lives until its
    /// delivery settles, so it is bounded by the deliveries in flight.
    accepted: Mutex<HashMap<String, HashSet<String>>>,
}

/// Which addresses a webhook may be sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destinations {
    /// Public addresses only: what a deployed worker uses.
    Public,
    /// Any address, loopback and private ones included: for a local stack or a test whose
    /// receivers run on this machine.
    Any,
}

/// A destination refused: a loopback, private, link-local, unique-local or metadata
/// address (recorded as the code alone, never the URL: a webhook URL may carry a secret).
fn refused() -> SendError {
    SendError::Permanent(SendFailure::new(SendErrorCode::ForbiddenDestination))
}

/// Whether `ip` is an address a webhook must never reach: loopback, unspecified, private,
/// shared (carrier-grade NAT), link-local (the instance metadata service at
/// 169.254.169.254), unique-local (fd00:ec2::254), multicast, broadcast or documentation.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_forbidden(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || v6.is_multicast()
            }
        },
    }
}

/// The resolver's answer for a name with no public address.
#[derive(Debug, thiserror::Error)]
#[error("the webhook destination is a loopback, private, link-local, unique-local or metadata address: refused")]
struct Refused;

/// Resolves names to their public addresses only; a name with none is an error.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved.into_iter().filter(|a| !is_forbidden(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl WebhookSender {
    /// `extra_root_pem` adds a trusted certificate authority (local stacks and tests that
    /// run their own HTTPS receiver); production uses the system's roots only.
    pub fn new(
        signer: WebhookSigner,
        extra_root_pem: Option<&str>,
        destinations: Destinations,
    ) -> Result<Self, reqwest::Error> {
        // No redirects: a 307 or 308 would replay the signed body to whatever host the
        // receiver names; a redirect is the receiver's answer, recorded as such. No proxy
        // either: the address connected to is the one the resolver checked.
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if destinations == Destinations::Public {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        if let Some(pem) = extra_root_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        Ok(Self { http: builder.build()?, signer, destinations, accepted: Mutex::default() })
    }

    /// An address given as the URL's host is not resolved, so it is checked here.
    fn check_literal(&self, url: &str) -> Result<(), SendError> {
        if self.destinations == Destinations::Any {
            return Ok(());
        }
        let url = reqwest::Url::parse(url).ok();
        let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default();
        // IPv6 hosts come in brackets.
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        match literal {
            Some(ip) if is_forbidden(ip) => Err(refused()),
            _ => Ok(()),
        }
    }

    async fn post(&self, url: &str, body: &str, delivery_id: &str) -> Result<(), SendError> {
        self.check_literal(url)?;
        let signature = self.signer.sign(chrono::Utc::now().timestamp(), body);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            // Receivers that dedup on it make a retried POST harmless.
            .header("idempotency-key", delivery_id)
            .body(body.to_owned())
            .send()
            .await
            // Its kind only: reqwest's errors name the URL, which may hold a secret
            // (Slack's do).
            .map_err(|e| {
                if is_refused(&e) {
                    refused()
                } else if e.is_timeout() {
                    SendError::Retryable(SendFailure::new(SendErrorCode::Timeout))
                } else if e.is_connect() {
                    SendError::Retryable(SendFailure::new(SendErrorCode::Unreachable))
                } else {
                    SendError::Retryable(SendFailure::new(SendErrorCode::ProviderError))
                }
            })?;
        answered(response.status())
    }
}

/// What a receiver's answer makes of a POST: its status is the provider's code; the
/// body, the receiver's own text, is never read.
fn answered(status: reqwest::StatusCode) -> Result<(), SendError> {
    let failure = |code| SendFailure::with_provider_code(code, status.as_str());
    if status.is_success() {
        Ok(())
    } else if status.as_u16() == 429 {
        Err(SendError::Retryable(failure(SendErrorCode::Throttled)))
    } else if status.is_server_error() {
        Err(SendError::Retryable(failure(SendErrorCode::ProviderError)))
    } else {
        Err(SendError::Permanent(failure(SendErrorCode::Rejected)))
    }
}

/// Whether the request failed because the resolver refused every address of its host.
fn is_refused(e: &reqwest::Error) -> bool {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |cause| cause.source())
        .any(|cause| cause.is::<Refused>())
}

#[async_trait]
impl Sender for WebhookSender {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError> {
        let Target::Webhooks(urls) = message.target else {
            return Err(SendError::Permanent(SendFailure::new(SendErrorCode::InvalidAddress)));
        };
        let body = serde_json::json!({
            "text": message.content.body,
            "subject": message.content.subject,
            "type": message.notification_type,
            "delivery_id": message.delivery_id,
        })
        .to_string();
        // Each URL settles on its own: the URLs that accepted are remembered, so the
        // pipeline's retry of this delivery posts only to the ones still failing.
        let accepted = self.accepted.lock().expect("not poisoned").get(message.delivery_id).cloned();
        let mut accepted = accepted.unwrap_or_default();
        let (mut retryable, mut permanent) = (None, None);
        for url in urls {
            if accepted.contains(url) {
                continue;
            }
            match self.post(url, &body, message.delivery_id).await {
                Ok(()) => {
                    accepted.insert(url.clone());
                }
                // A receiver dedups a repeat on its Idempotency-Key, so even an uncertain
                // POST is retried.
                Err(SendError::Retryable(failure) | SendError::Uncertain(failure)) => retryable = Some(failure),
                Err(SendError::Permanent(failure)) => permanent = Some(failure),
            }
        }
        let mut remembered = self.accepted.lock().expect("not poisoned");
        match (permanent, retryable) {
            (Some(reason), _) => {
                remembered.remove(message.delivery_id);
                Err(SendError::Permanent(reason))
            }
            (None, Some(reason)) => {
                // A delivery handed back to its queue may come back to another instance;
                // receivers dedup on its Idempotency-Key then, and memory stays bounded.
                if remembered.len() >= MAX_REMEMBERED {
                    remembered.clear();
                }
                remembered.insert(message.delivery_id.to_owned(), accepted);
                Err(SendError::Retryable(reason))
            }
            (None, None) => {
                remembered.remove(message.delivery_id);
                Ok(message.delivery_id.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(ip: &str) -> bool {
        is_forbidden(ip.parse().unwrap())
    }

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(forbidden(ip), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in ["93.184.216.34", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111"] {
            assert!(!forbidden(ip), "{ip}");
        }
    }

    fn reason(status: u16) -> Option<String> {
        answered(reqwest::StatusCode::from_u16(status).unwrap()).err().map(|e| e.failure().reason())
    }

    #[test]
    fn a_refusing_receiver_is_recorded_as_its_status() {
        assert_eq!(reason(404).as_deref(), Some("rejected/404"));
        assert!(matches!(answered(reqwest::StatusCode::GONE), Err(SendError::Permanent(_))));
    }

    #[test]
    fn a_failing_or_throttling_receiver_is_retryable_and_recorded_as_its_status() {
        assert_eq!(reason(503).as_deref(), Some("provider_error/503"));
        assert_eq!(reason(429).as_deref(), Some("throttled/429"));
        assert!(matches!(answered(reqwest::StatusCode::BAD_GATEWAY), Err(SendError::Retryable(_))));
        assert_eq!(reason(204), None);
    }
}
