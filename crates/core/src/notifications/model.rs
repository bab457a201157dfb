//! Notifications: what a producer asks to send, validated up front, and the delivery jobs
//! that carry it to the channel workers.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    channel::Channel,
    delivery::{DeliveryStatus, delivery_id, rendering, rendering::ChannelContent},
    profiles::{DeviceToken, Profile},
    validation,
    validation::ValidationErrors,
};

/// How many recipients one request may name; larger audiences are campaigns.
pub const MAX_RECIPIENTS: usize = 100;
/// How many recipients one delivery job carries: small enough for any event or message
/// size limit, large enough to amortise the queue's per-request cost.
pub const RECIPIENTS_PER_MESSAGE: usize = 10;

/// The body of `POST /v1/notifications`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    /// e.g. `payment_due`; names the template when no inline content is given, and the
    /// preference a user can opt out of.
    #[serde(rename = "type")]
    pub notification_type: String,
    pub recipients: Vec<RecipientInput>,
    pub channels: Vec<Channel>,
    /// Inline content per channel; without it, the stored template of the type is used.
    #[serde(default)]
    pub content: Option<BTreeMap<Channel, ChannelContent>>,
    /// Template parameters.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// A receipt, reset or alert the user asked for: its email carries no
    /// List-Unsubscribe headers. Left out when false, so the fingerprint of a request
    /// that does not name it stays what it was.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transactional: bool,
    /// Not part of the request's fingerprint: the header may give it instead.
    #[serde(default, skip_serializing)]
    pub idempotency_key: Option<String>,
}

/// A user of Herald, or a direct address for a one-off send.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub webhook_url: Option<String>,
}

/// Where one delivery goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Email(String),
    Phone(String),
    Devices(Vec<DeviceToken>),
    Webhooks(Vec<String>),
}

/// A recipient after validation: a user id, or an address standing alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    User(String),
    Direct { key: String, target: Target, channel: Channel },
}

fn valid_type(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err("must be 1 to 64 characters of a-z, 0-9, '_', '-' and '.'".into()) }
}

impl NotificationRequest {
    /// SHA-256 (hex) of the request re-serialized, without its idempotency key: the same
    /// request hashes the same whatever its whitespace, key order or where the key came
    /// from, so a key reused for another request can be told apart.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::to_vec(self).expect("a request serializes");
        hex::encode(Sha256::digest(canonical))
    }

    /// Checks the whole request and returns its recipients, or every fault at once.
    pub fn validate(&self) -> Result<Vec<Recipient>, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        errors.check("type", valid_type(&self.notification_type));
        if self.channels.is_empty() {
            errors.add("channels", "name at least one channel");
        }
        if self.channels.iter().collect::<BTreeSet<_>>().len() != self.channels.len() {
            errors.add("channels", "a channel is named twice");
        }
        if self.recipients.is_empty() || self.recipients.len() > MAX_RECIPIENTS {
            errors.add("recipients", format!("give 1 to {MAX_RECIPIENTS} recipients"));
        }
        if let Some(key) = &self.idempotency_key
            && !(1..=128).contains(&key.len())
        {
            errors.add("idempotency_key", "must be 1 to 128 characters");
        }
        if let Some(content) = &self.content {
            for channel in self.channels.iter().collect::<BTreeSet<_>>() {
                match content.get(channel) {
                    None => errors.add(format!("content.{channel}"), "inline content must cover every channel named"),
                    Some(c) => check_content(*channel, c, &format!("content.{channel}"), &mut errors),
                }
            }
        }
        let recipients: Vec<Recipient> = self
            .recipients
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.validate(i, &self.channels).map_err(|e| errors.0.extend(e.0)).ok())
            .collect();
        errors.into_result().map(|()| recipients)
    }
}

/// Checks that content parses and has what its channel needs.
pub fn check_content(channel: Channel, content: &ChannelContent, field: &str, errors: &mut ValidationErrors) {
    if channel == Channel::Email && content.subject.is_none() {
        errors.add(format!("{field}.subject"), "email needs a subject");
    }
    if content.body.trim().is_empty() {
        errors.add(format!("{field}.body"), "must not be empty");
    }
    if let Err(e) = rendering::check(content) {
        errors.add(format!("{field}.{}", e.part), e.message);
    }
}

impl RecipientInput {
    fn validate(&self, index: usize, channels: &[Channel]) -> Result<Recipient, ValidationErrors> {
        let field = |name: &str| format!("recipients[{index}].{name}");
        let given = [self.user_id.is_some(), self.email.is_some(), self.phone.is_some(), self.webhook_url.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ValidationErrors::single(
                format!("recipients[{index}]"),
                "give exactly one of user_id, email, phone or webhook_url",
            ));
        }
        let direct = |channel: Channel, name: &str, target: Target, key: &str| {
            if channels.contains(&channel) {
                Ok(Recipient::Direct { key: format!("{name}:{key}"), target, channel })
            } else {
                Err(ValidationErrors::single(field(name), format!("a direct {name} needs the {channel} channel")))
            }
        };
        if let Some(id) = &self.user_id {
            validation::user_id(id).map_err(|m| ValidationErrors::single(field("user_id"), m))?;
            Ok(Recipient::User(id.clone()))
        } else if let Some(email) = &self.email {
            validation::email(email).map_err(|m| ValidationErrors::single(field("email"), m))?;
            direct(Channel::Email, "email", Target::Email(email.clone()), email)
        } else if let Some(phone) = &self.phone {
            let e164 = validation::phone_e164(phone).map_err(|m| ValidationErrors::single(field("phone"), m))?;
            direct(Channel::Sms, "phone", Target::Phone(e164.clone()), &e164)
        } else {
            let url = self.webhook_url.as_deref().unwrap_or_default();
            validation::https_url(url).map_err(|m| ValidationErrors::single(field("webhook_url"), m))?;
            direct(Channel::Webhook, "webhook_url", Target::Webhooks(vec![url.to_owned()]), url)
        }
    }
}

/// Where a user's profile sends `channel`, if anywhere.
pub fn target_of(profile: &Profile, channel: Channel) -> Option<Target> {
    match channel {
        Channel::Email => profile.email.clone().map(Target::Email),
        Channel::Sms => profile.phone.clone().map(Target::Phone),
        Channel::Push => (!profile.device_tokens.is_empty()).then(|| Target::Devices(profile.device_tokens.clone())),
        Channel::Webhook => {
            let urls: Vec<String> =
                profile.external_channels.iter().filter(|c| c.enabled).map(|c| c.url.clone()).collect();
            (!urls.is_empty()).then_some(Target::Webhooks(urls))
        }
    }
}

/// What a delivery sends: a stored template's version, or inline content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentRef {
    Template { template_id: String, version: u64 },
    Inline(ChannelContent),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: DeliveryStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One delivery: a (notification, recipient, channel) and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: String,
    pub notification_id: String,
    /// The user id, or the direct address key (`email:…`).
    pub recipient: String,
    pub channel: Channel,
    pub status: DeliveryStatus,
    pub history: Vec<StatusChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
}

impl Delivery {
    pub fn new(
        notification_id: &str,
        recipient: &str,
        channel: Channel,
        status: DeliveryStatus,
        reason: Option<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            delivery_id: delivery_id(notification_id, recipient, channel),
            notification_id: notification_id.to_owned(),
            recipient: recipient.to_owned(),
            channel,
            status,
            history: vec![StatusChange { status, at, reason }],
            provider: None,
            provider_message_id: None,
        }
    }

    /// The delivery as a reader of notifications sees it: a direct webhook URL may carry
    /// a secret in its path or query (Slack's do), so only its scheme and host are shown.
    pub fn for_readers(mut self) -> Self {
        if let Some(url) = self.recipient.strip_prefix(WEBHOOK_KEY) {
            self.recipient = format!("{WEBHOOK_KEY}{}", origin_of(url));
        }
        self
    }
}

/// How a direct webhook recipient's key begins (`webhook_url:https://…`).
const WEBHOOK_KEY: &str = "webhook_url:";

/// `https://host[:port]/…` of a URL, without user, path, query or fragment.
fn origin_of(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", url.scheme(), url.host_str().unwrap_or_default())
        }
        Err(_) => "…".into(),
    }
}

/// One recipient of a delivery job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecipient {
    pub delivery_id: String,
    /// Set for users (preferences, rate limits); None for direct addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub target: Target,
}

/// The message a channel worker receives: one notification, one channel, a few recipients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMessage {
    pub notification_id: String,
    pub notification_type: String,
    pub channel: Channel,
    pub content: ContentRef,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    pub recipients: Vec<ChannelRecipient>,
    /// The campaign the job delivers, whose counters its outcomes add to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// How many times a worker put these recipients back on the queue to try again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// The notification is transactional: no List-Unsubscribe headers on its email.
    /// Campaigns never are. False when absent, as in messages queued before it existed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub transactional: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Room for what the bus wraps a channel message in on its way to the queue (the event's
/// id, source, account, time, region, detail type).
const ENVELOPE_BYTES: usize = 4 * 1024;

/// The most a channel message's JSON may take: it is an EventBridge entry's detail (or,
/// from the dispatcher, an SQS body) and then an SQS message inside the bus's envelope.
pub const MAX_MESSAGE_BYTES: usize = {
    let (sqs, bus) = (crate::limits::sqs::MESSAGE_BYTES, crate::limits::eventbridge::PUT_EVENTS_BYTES);
    (if sqs < bus { sqs } else { bus }) - ENVELOPE_BYTES
};

impl ChannelMessage {
    /// `recipients` in messages like `self` (whose own recipients are ignored), each of
    /// at most `per_message` recipients and `MAX_MESSAGE_BYTES` of JSON, in order. A
    /// recipient goes alone if it fills a message by itself; the limits on requests and
    /// profiles keep such a message within the queue's size.
    pub fn pack(&self, recipients: &[ChannelRecipient], per_message: usize) -> Vec<ChannelMessage> {
        let empty = ChannelMessage { recipients: Vec::new(), ..self.clone() };
        let base = serde_json::to_vec(&empty).map_or(0, |json| json.len());
        // Each recipient's JSON and the comma before it.
        let sizes: Vec<usize> =
            recipients.iter().map(|r| serde_json::to_vec(r).map_or(0, |json| json.len()) + 1).collect();
        crate::limits::pack(&sizes, per_message, MAX_MESSAGE_BYTES.saturating_sub(base))
            .into_iter()
            .map(|range| ChannelMessage { recipients: recipients[range].to_vec(), ..empty.clone() })
            .collect()
    }

    /// The EventBridge `detail-type` that routes this job to its channel's queue.
    pub fn detail_type(&self) -> String {
        format!("{}{}", crate::events::detail_type::NOTIFICATION_PREFIX, self.channel)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message() -> ChannelMessage {
        ChannelMessage {
            notification_id: "n1".into(),
            notification_type: "payment_due".into(),
            channel: Channel::Push,
            content: ContentRef::Template { template_id: "payment_due".into(), version: 1 },
            params: Default::default(),
            recipients: Vec::new(),
            campaign_id: None,
            attempt: 0,
            transactional: false,
        }
    }

    fn recipient(i: usize, token_chars: usize, tokens: usize) -> ChannelRecipient {
        let token = DeviceToken { token: "t".repeat(token_chars), platform: crate::profiles::Platform::Fcm };
        ChannelRecipient {
            delivery_id: format!("d{i}"),
            user_id: Some(format!("u{i}")),
            target: Target::Devices(vec![token; tokens]),
        }
    }

    #[test]
    fn recipients_are_packed_by_count() {
        let recipients: Vec<_> = (0..23).map(|i| recipient(i, 40, 1)).collect();
        let sizes: Vec<usize> = message().pack(&recipients, 10).iter().map(|m| m.recipients.len()).collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn recipients_with_many_large_tokens_are_packed_by_bytes_within_the_queues_limit() {
        // 50 recipients of 16 tokens of 4,096 characters: 3.3 MB, far over one message.
        let recipients: Vec<_> = (0..50).map(|i| recipient(i, 4096, 16)).collect();
        let messages = message().pack(&recipients, 50);
        assert!(messages.len() >= 4, "{}", messages.len());
        assert_eq!(messages.iter().map(|m| m.recipients.len()).sum::<usize>(), 50);
        for m in &messages {
            assert!(serde_json::to_vec(m).unwrap().len() <= MAX_MESSAGE_BYTES);
        }
        let order: Vec<&str> = messages.iter().flat_map(|m| &m.recipients).map(|r| r.delivery_id.as_str()).collect();
        assert_eq!(order, (0..50).map(|i| format!("d{i}")).collect::<Vec<_>>());
    }

    fn request(value: serde_json::Value) -> NotificationRequest {
        serde_json::from_value(value).expect("request parses")
    }

    #[test]
    fn a_message_queued_without_the_transactional_flag_is_not_transactional() {
        let queued = json!({"notification_id": "n1", "notification_type": "t", "channel": "email",
            "content": {"template": {"template_id": "t", "version": 1}}, "recipients": []});
        let message: ChannelMessage = serde_json::from_value(queued).unwrap();
        assert!(!message.transactional);
    }

    #[test]
    fn a_request_is_not_transactional_unless_it_says_so_and_then_fingerprints_as_before() {
        let without = json!({"type": "t", "recipients": [{"user_id": "u"}], "channels": ["sms"]});
        let mut with_false = without.clone();
        with_false["transactional"] = json!(false);
        let mut with_true = without.clone();
        with_true["transactional"] = json!(true);
        assert!(!request(without.clone()).transactional);
        assert!(request(with_true.clone()).transactional);
        assert_eq!(request(with_false).fingerprint(), request(without.clone()).fingerprint());
        let serialized = serde_json::to_value(request(without.clone())).unwrap();
        assert!(serialized.get("transactional").is_none(), "the fingerprinted form gains nothing: {serialized}");
        assert_ne!(request(with_true).fingerprint(), request(without).fingerprint());
    }

    fn faults(value: serde_json::Value) -> Vec<String> {
        let mut f: Vec<String> = request(value).validate().unwrap_err().0.into_iter().map(|e| e.field).collect();
        f.sort();
        f
    }

    #[test]
    fn a_request_to_users_with_a_template_is_valid() {
        let r = request(
            json!({"type": "payment_due", "recipients": [{"user_id": "u1"}, {"user_id": "u2"}], "channels": ["email", "sms"]}),
        );
        assert_eq!(r.validate().unwrap(), [Recipient::User("u1".into()), Recipient::User("u2".into())]);
    }

    #[test]
    fn direct_addresses_are_normalised_and_keyed() {
        let r = request(json!({"type": "otp", "recipients": [{"phone": "+1 415 555 2671"}], "channels": ["sms"],
            "content": {"sms": {"body": "Code {{ code }}"}}}));
        assert_eq!(
            r.validate().unwrap(),
            [Recipient::Direct {
                key: "phone:+14155552671".into(),
                target: Target::Phone("+14155552671".into()),
                channel: Channel::Sms
            }]
        );
    }

    #[test]
    fn every_fault_is_reported() {
        let f = faults(
            json!({"type": "Bad Type", "recipients": [{"email": "nope"}, {}, {"user_id": "u", "email": "a@b.co"}],
            "channels": ["email", "email"], "content": {"email": {"body": "{{ x"}}, "idempotency_key": ""}),
        );
        assert_eq!(
            f,
            [
                "channels",
                "content.email.body",
                "content.email.subject",
                "idempotency_key",
                "recipients[0].email",
                "recipients[1]",
                "recipients[2]",
                "type"
            ]
        );
    }

    #[test]
    fn inline_content_must_cover_every_channel() {
        let f = faults(json!({"type": "t", "recipients": [{"user_id": "u"}], "channels": ["email", "sms"],
            "content": {"sms": {"body": "hi"}}}));
        assert_eq!(f, ["content.email"]);
    }

    #[test]
    fn a_direct_address_needs_its_channel() {
        let f = faults(
            json!({"type": "t", "recipients": [{"email": "a@example.com"}], "channels": ["sms"], "content": {"sms": {"body": "x"}}}),
        );
        assert_eq!(f, ["recipients[0].email"]);
    }

    #[test]
    fn too_many_or_no_recipients_are_refused() {
        let many: Vec<_> = (0..=MAX_RECIPIENTS).map(|i| json!({"user_id": format!("u{i}")})).collect();
        assert_eq!(faults(json!({"type": "t", "recipients": many, "channels": ["sms"]})), ["recipients"]);
        assert_eq!(faults(json!({"type": "t", "recipients": [], "channels": ["sms"]})), ["recipients"]);
    }

    #[test]
    fn profiles_give_each_channel_its_target() {
        let mut p = Profile::new("u1");
        p.email = Some("a@example.com".into());
        p.external_channels = vec![
            crate::profiles::ExternalChannel {
                platform: "slack".into(),
                url: "https://h.example/1".into(),
                enabled: true,
            },
            crate::profiles::ExternalChannel {
                platform: "slack".into(),
                url: "https://h.example/2".into(),
                enabled: false,
            },
        ];
        assert_eq!(target_of(&p, Channel::Email), Some(Target::Email("a@example.com".into())));
        assert_eq!(target_of(&p, Channel::Sms), None);
        assert_eq!(target_of(&p, Channel::Push), None);
        assert_eq!(target_of(&p, Channel::Webhook), Some(Target::Webhooks(vec!["https://h.example/1".into()])));
    }
}
