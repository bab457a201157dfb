//! What a channel queue carries: one notification's (or campaign's) content for one
//! channel and a few recipients, each with its delivery id and where it goes. Notifications
//! and the campaign dispatcher produce it; the delivery pipeline consumes it.

use serde::{Deserialize, Serialize};

use crate::{
    channel::Channel,
    delivery::rendering::ChannelContent,
    events::StoredEvent,
    profiles::{DeviceToken, Profile},
};

/// Where one delivery goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Email(String),
    Phone(String),
    Devices(Vec<DeviceToken>),
    Webhooks(Vec<String>),
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

    /// The job as the bus carries it, its `detail-type` and JSON `detail`.
    pub fn event(&self) -> StoredEvent {
        StoredEvent {
            detail_type: self.detail_type(),
            detail: serde_json::to_string(self).expect("domain events serialize"),
        }
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

    #[test]
    fn a_message_queued_without_the_transactional_flag_is_not_transactional() {
        let queued = json!({"notification_id": "n1", "notification_type": "t", "channel": "email",
            "content": {"template": {"template_id": "t", "version": 1}}, "recipients": []});
        let message: ChannelMessage = serde_json::from_value(queued).unwrap();
        assert!(!message.transactional);
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
