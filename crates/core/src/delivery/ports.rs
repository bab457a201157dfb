//! What delivery needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::{
    channel::Channel,
    delivery::{
        Delivery, DeliveryStatus, StatusChange, Target,
        preferences::Preferences,
        rate_limit::WindowKey,
        rendering::{ChannelContent, Rendered},
        templates::StoredTemplate,
    },
    profiles::{ProfileError, ProfileService},
    store::StoreError,
};

#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores `channels` as the template's next version and returns it.
    async fn save_new_version(
        &self,
        template_id: &str,
        channels: &std::collections::BTreeMap<Channel, ChannelContent>,
    ) -> Result<StoredTemplate, StoreError>;

    /// The given version, or the latest when `version` is None.
    async fn get(&self, template_id: &str, version: Option<u64>) -> Result<Option<StoredTemplate>, StoreError>;
}

#[async_trait]
pub trait PreferenceStore: Send + Sync {
    /// A user's preferences; the defaults (nothing opted out) when none were saved.
    async fn get(&self, user_id: &str) -> Result<Preferences, StoreError>;
    /// The preferences of several users at once (adapters batch the reads); users who saved
    /// none are absent from the map.
    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>, StoreError>;
    /// The preferences with their version: 0 when none were saved with one.
    async fn get_versioned(&self, user_id: &str) -> Result<(Preferences, u64), StoreError>;
    /// Writes them as version `version + 1` if the stored version is still `version`;
    /// `StoreError::Conflict` if another write came first.
    async fn put_if(&self, user_id: &str, preferences: &Preferences, version: u64) -> Result<(), StoreError>;
}

/// A rate-limit window a claim counts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitClaim {
    pub window: WindowKey,
    pub limit: u32,
    /// How the delivery ends if the window is full.
    pub over: StatusChange,
}

/// One delivery of a job to claim for sending, or to settle without sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub delivery_id: String,
    /// Settle now with this status (e.g. unsubscribed) instead of claiming for sending.
    pub settle: Option<StatusChange>,
    /// Counted with the claim; a claim past the limit settles as `over` instead.
    pub rate_limit: Option<RateLimitClaim>,
    /// Records the delivery with the claim when it does not exist yet (campaign jobs,
    /// whose deliveries the dispatcher never writes); None: the delivery must exist.
    pub create: Option<NewDelivery>,
}

/// What a claim records of a delivery it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// The notification or campaign the delivery belongs to (what `list` finds it by).
    pub notification_id: String,
    /// The user id.
    pub recipient: String,
    pub channel: Channel,
}

/// A page of deliveries (see `DeliveryStore::list_page`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryPage {
    pub deliveries: Vec<ListedDelivery>,
    pub next: Option<String>,
}

/// A delivery as a page lists it: with whether its `error` is final (never claimed again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedDelivery {
    pub delivery: Delivery,
    pub final_error: bool,
}

/// What claiming a delivery for sending found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This worker owns the send now (the delivery moved to `pending`).
    Claimed,
    /// Settled by this very request (its `settle` status, or rate-limited): nothing to
    /// send.
    Settled(DeliveryStatus),
    /// Ended before this request (sent or settled by an earlier attempt, e.g. of a
    /// redelivered message): nothing to send, and nothing new happened.
    AlreadySettled(DeliveryStatus),
    /// Another attempt claimed it and has not finished: it may be sending right now, or
    /// it died between the provider's answer and the status write.
    InFlight { claimed_at: DateTime<Utc> },
}

#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Records new deliveries (batched to the store's limit).
    async fn create(&self, deliveries: &[Delivery]) -> Result<(), StoreError>;
    /// Records one delivery unless it exists (a conditional write), for the rare repeat of
    /// a request that stopped half-way; true when it was written.
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<bool, StoreError>;
    async fn list(&self, notification_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// One page of a notification's (or campaign's) deliveries: at most `limit`, from
    /// after the delivery id `after` (None: the first page), in the store's order; `next`
    /// is where the following page starts, None after the last. Eventually consistent.
    async fn list_page(
        &self,
        notification_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeliveryPage, StoreError>;
    /// Claims a job's deliveries at once (adapters make it one conditional batch write):
    /// each request moves its delivery from `created` or `error` (or, with `create`, from
    /// not existing) to `pending`, or to its `settle` status, and counts its rate limit.
    /// The dedup of redelivered messages: a delivery already claimed or settled is
    /// reported as such and not touched. One answer per request, in order.
    async fn claim_all(&self, requests: &[ClaimRequest], at: DateTime<Utc>) -> Result<Vec<Claim>, StoreError>;
    /// Records the outcome of a claimed delivery, with the provider that handled it and
    /// the provider's message id when it accepted the message. `retryable` marks an
    /// `error` a later attempt may cure: only such an error may be claimed again; any
    /// other (refused, interrupted, possibly received) is final, so a redelivered message
    /// never sends it again.
    async fn finish(
        &self,
        delivery_id: &str,
        change: &StatusChange,
        provider: Option<&str>,
        message_id: Option<&str>,
        retryable: bool,
    ) -> Result<(), StoreError>;
    /// Moves a delivery forward (opened, clicked, unsubscribed) if `change.status` may
    /// follow its status; false when it may not.
    async fn advance(&self, delivery_id: &str, change: &StatusChange) -> Result<bool, StoreError>;
    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>, StoreError>;
    /// The delivery whose provider's message id is `provider_message_id`, for a provider
    /// report that names nothing else (SNS's SMS delivery status). Found only among the
    /// deliveries a store recorded for this lookup (the SMS worker's); eventually
    /// consistent, so a delivery just sent may not be found yet.
    async fn find_by_provider_message(&self, provider_message_id: &str) -> Result<Option<String>, StoreError>;
}

/// How a provider refused a message: a word of Herald's and the provider's own error
/// code, never the provider's message, which may quote the address (SES's
/// `MessageRejected` names the unverified recipient). The delivery's `reason`, its
/// `delivery.status_changed` event and the logs hold `SendFailure::reason` only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Throttling, timeouts, 5xx: the same message may succeed later.
    #[error("temporary failure: {0}")]
    Retryable(SendFailure),
    /// Invalid address, rejected content: sending again cannot help.
    #[error("permanent failure: {0}")]
    Permanent(SendFailure),
    /// The request may have reached the provider (it timed out, or the connection broke,
    /// after it was sent): sending again could deliver the message twice, so it is not.
    #[error("the provider may have received it: {0}")]
    Uncertain(SendFailure),
}

impl SendError {
    /// What is recorded of it.
    pub fn failure(&self) -> &SendFailure {
        match self {
            SendError::Retryable(f) | SendError::Permanent(f) | SendError::Uncertain(f) => f,
        }
    }
}

/// Why a send failed, in Herald's words: a stable snake_case word each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendErrorCode {
    /// The provider asked to slow down (throttling, HTTP 429).
    Throttled,
    /// The provider refused the message or the request (SES's `MessageRejected`, an HTTP
    /// 4xx from a webhook receiver).
    Rejected,
    /// The target is not one the channel sends to (no email address on the email
    /// channel, …).
    InvalidAddress,
    /// The push service reported the device token gone.
    EndpointDisabled,
    /// The webhook's address is loopback, private, link-local or metadata: refused.
    ForbiddenDestination,
    /// The provider could not be reached (connection failed).
    Unreachable,
    /// No answer in time.
    Timeout,
    /// Herald is not set up for it (no SNS platform application for the device's
    /// platform, a client that cannot build the request).
    NotConfigured,
    /// Any other failure of the provider (5xx, an answer it could not read).
    ProviderError,
}

impl SendErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            SendErrorCode::Throttled => "throttled",
            SendErrorCode::Rejected => "rejected",
            SendErrorCode::InvalidAddress => "invalid_address",
            SendErrorCode::EndpointDisabled => "endpoint_disabled",
            SendErrorCode::ForbiddenDestination => "forbidden_destination",
            SendErrorCode::Unreachable => "unreachable",
            SendErrorCode::Timeout => "timeout",
            SendErrorCode::NotConfigured => "not_configured",
            SendErrorCode::ProviderError => "provider_error",
        }
    }
}

impl std::fmt::Display for SendErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider's own error code (SES's `MessageRejected`, SNS's `EndpointDisabled`, a
/// webhook's HTTP status): a short token of ASCII letters, digits, `_`, `.` and `-`, with
/// no run of more than four digits, so no free text, address or phone number can pass as
/// one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProviderCode(String);

impl ProviderCode {
    /// The longest code kept.
    pub const MAX_LEN: usize = 64;

    /// `code` if it is such a token; None otherwise (it is then not recorded).
    pub fn new(code: &str) -> Option<Self> {
        let token = !code.is_empty()
            && code.len() <= Self::MAX_LEN
            && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && code.split(|c: char| !c.is_ascii_digit()).all(|digits| digits.len() <= 4);
        token.then(|| Self(code.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is kept of a failed send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendFailure {
    pub code: SendErrorCode,
    pub provider_code: Option<ProviderCode>,
}

impl SendFailure {
    /// A failure with no provider code (Herald's own refusal, a connection that failed).
    pub fn new(code: SendErrorCode) -> Self {
        Self { code, provider_code: None }
    }

    /// A failure with the provider's code, kept if it is a short token.
    pub fn with_provider_code(code: SendErrorCode, provider_code: &str) -> Self {
        Self { code, provider_code: ProviderCode::new(provider_code) }
    }

    /// What a delivery records as its `reason`: `<code>` or `<code>/<provider code>`, e.g.
    /// `rejected/MessageRejected`.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.provider_code {
            None => write!(f, "{}", self.code),
            Some(provider) => write!(f, "{}/{}", self.code, provider.as_str()),
        }
    }
}

/// Told when a push service reports a device token as gone.
#[async_trait]
pub trait DisabledDevices: Send + Sync {
    async fn device_disabled(&self, user_id: &str, token: &str) -> Result<(), StoreError>;
}

/// A gone device token leaves its user's profile.
#[async_trait::async_trait]
impl DisabledDevices for ProfileService {
    async fn device_disabled(&self, user_id: &str, token: &str) -> Result<(), StoreError> {
        match self.remove_device_token(user_id, token).await {
            Ok(_) | Err(ProfileError::NotFound) => Ok(()),
            Err(ProfileError::Store(e)) => Err(e),
            Err(e) => Err(StoreError::Transient(e.to_string())),
        }
    }
}

/// One message on its way to a provider.
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    pub delivery_id: &'a str,
    /// The user it is for; None for a direct address.
    pub user_id: Option<&'a str>,
    pub notification_type: &'a str,
    pub target: &'a Target,
    pub content: &'a Rendered,
    /// The one-click unsubscribe URL (RFC 8058: it takes a POST) an email gives in its
    /// List-Unsubscribe headers; None for transactional mail, direct addresses, other
    /// channels, or without tracking.
    pub list_unsubscribe: Option<&'a str>,
}

/// A provider of one channel: SES for email, SNS for SMS and push, HTTPS for webhooks.
#[async_trait]
pub trait Sender: Send + Sync {
    /// A short name recorded on the delivery, e.g. `ses`.
    fn name(&self) -> &str;
    /// Sends the message; returns the provider's message id.
    async fn send(&self, message: &Outgoing<'_>) -> Result<String, SendError>;
}

/// The channel queues, written straight to (no bus in between): a campaign's deliveries,
/// and a worker's recipients to try again.
#[async_trait]
pub trait ChannelQueues: Send + Sync {
    /// Sends each job to its channel's queue, as few requests as possible (SendMessageBatch
    /// of 10), delivered after `delay` (at most 15 minutes).
    async fn enqueue(
        &self,
        jobs: &[crate::delivery::ChannelMessage],
        delay: std::time::Duration,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_code_is_a_short_token() {
        for code in ["MessageRejected", "EndpointDisabled", "404", "Throttling.Rate-1", "a_b"] {
            assert_eq!(ProviderCode::new(code).map(|c| c.as_str().to_owned()), Some(code.to_owned()));
        }
    }

    #[test]
    fn free_text_an_address_or_a_number_is_no_provider_code() {
        let long = "A".repeat(ProviderCode::MAX_LEN + 1);
        for text in ["", "someone@example.com", "+14155550123", "14155550123", "not verified", long.as_str()] {
            assert_eq!(ProviderCode::new(text), None, "{text}");
        }
    }

    #[test]
    fn a_failure_reads_as_its_code_then_the_provider_s() {
        let failure = SendFailure::with_provider_code(SendErrorCode::Rejected, "MessageRejected");
        assert_eq!(failure.reason(), "rejected/MessageRejected");
        assert_eq!(SendFailure::new(SendErrorCode::Timeout).reason(), "timeout");
        assert_eq!(
            SendFailure::with_provider_code(SendErrorCode::Rejected, "someone@example.com").reason(),
            "rejected"
        );
    }
}
