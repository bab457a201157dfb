//! Notifications: what a producer asks to send, validated up front, and where each of its
//! recipients is reached.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    channel::Channel,
    delivery::{Target, rendering::ChannelContent, templates::check_content},
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

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(value: serde_json::Value) -> NotificationRequest {
        serde_json::from_value(value).expect("request parses")
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
}
