//! Deliveries: one per (notification or campaign, user, channel), with a status that only
//! moves forward. The delivery id is derived from those three, so a retried or redelivered
//! message always names the same delivery and a conditional write deduplicates it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::channel::Channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Created,
    Pending,
    Sent,
    Opened,
    Clicked,
    Error,
    RateLimited,
    Suppressed,
    Unsubscribed,
    /// The provider handed it to the recipient's server or device (its feedback says so).
    Delivered,
    /// The recipient's server refused it: hard (the address does not exist) or soft
    /// (a full mailbox); `reason` says which.
    Bounced,
    /// The recipient marked it as spam.
    Complained,
    /// The provider accepted the send, then refused to deliver it (e.g. a virus).
    Rejected,
    /// The recipient's server has not taken it yet; the provider keeps trying.
    DeliveryDelayed,
    /// The provider could not deliver it (an SMS carrier's failure, a rendering failure).
    Failed,
}

impl DeliveryStatus {
    /// The status as stored and serialized (`rate_limited`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Created => "created",
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Opened => "opened",
            DeliveryStatus::Clicked => "clicked",
            DeliveryStatus::Error => "error",
            DeliveryStatus::RateLimited => "rate_limited",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Unsubscribed => "unsubscribed",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Complained => "complained",
            DeliveryStatus::Rejected => "rejected",
            DeliveryStatus::DeliveryDelayed => "delivery_delayed",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Whether a delivery in this status may move to `next`. Statuses move forward only,
    /// so a late or repeated message can never undo what already happened.
    pub fn can_become(self, next: DeliveryStatus) -> bool {
        use DeliveryStatus::*;
        match (self, next) {
            (Created, Pending) => true,
            // A send attempt ends in one of these; `error` may be retried.
            (Created | Pending | Error, Sent | Error | RateLimited | Suppressed | Unsubscribed) => true,
            (Error, Pending) => true,
            // The provider's feedback on a sent message. A delay may end either way; a
            // bounce may come after the delivery (an asynchronous bounce).
            (Sent, Delivered | Bounced | Complained | Rejected | DeliveryDelayed | Failed) => true,
            (DeliveryDelayed, Delivered | Bounced | Failed) => true,
            // The provider accepted the message, then its own suppression list stopped it
            // (SES's account-level list): never sent to the recipient.
            (Sent, Suppressed) => true,
            (Delivered, Bounced) => true,
            // Engagement: a click implies an open; the open pixel may never load; an open
            // implies a delivery, whose feedback may come later (and is then not recorded).
            (Sent | Delivered | DeliveryDelayed, Opened | Clicked) | (Opened, Clicked) => true,
            // A complaint about a message read or not.
            (Delivered | Opened | Clicked, Complained) => true,
            // The unsubscribe link of a delivered email.
            (Sent | Delivered | Opened | Clicked, Unsubscribed) => true,
            _ => false,
        }
    }

    pub const ALL: [DeliveryStatus; 15] = [
        DeliveryStatus::Created,
        DeliveryStatus::Pending,
        DeliveryStatus::Sent,
        DeliveryStatus::Opened,
        DeliveryStatus::Clicked,
        DeliveryStatus::Error,
        DeliveryStatus::RateLimited,
        DeliveryStatus::Suppressed,
        DeliveryStatus::Unsubscribed,
        DeliveryStatus::Delivered,
        DeliveryStatus::Bounced,
        DeliveryStatus::Complained,
        DeliveryStatus::Rejected,
        DeliveryStatus::DeliveryDelayed,
        DeliveryStatus::Failed,
    ];

    /// The statuses a provider's feedback on a sent message moves it to.
    pub const FEEDBACK: [DeliveryStatus; 6] = [
        DeliveryStatus::Delivered,
        DeliveryStatus::Bounced,
        DeliveryStatus::Complained,
        DeliveryStatus::Rejected,
        DeliveryStatus::DeliveryDelayed,
        DeliveryStatus::Failed,
    ];

    /// The statuses a send may be claimed from: never sent yet, or failed and retried. Any
    /// other status means the message has left, is leaving, or will never leave, so a
    /// redelivered message for it must not be sent again.
    pub const CLAIMABLE: [DeliveryStatus; 2] = [DeliveryStatus::Created, DeliveryStatus::Error];

    /// The statuses that may move to `self`.
    pub fn predecessors(self) -> Vec<DeliveryStatus> {
        Self::ALL.into_iter().filter(|s| s.can_become(self)).collect()
    }
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

/// `d_` and 32 hex characters of SHA-256 over the three parts, separated so that
/// ("a", "bc") and ("ab", "c") never collide.
pub fn delivery_id(source_id: &str, user_id: &str, channel: Channel) -> String {
    let mut hash = Sha256::new();
    for part in [source_id, user_id, channel.as_str()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    format!("d_{}", &hex::encode(hash.finalize())[..32])
}

#[cfg(test)]
mod tests {
    use super::{DeliveryStatus::*, *};

    #[test]
    fn a_status_names_itself_as_it_serializes() {
        for status in DeliveryStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn the_same_triple_always_names_the_same_delivery() {
        assert_eq!(delivery_id("n1", "u1", Channel::Email), delivery_id("n1", "u1", Channel::Email));
    }

    #[test]
    fn any_difference_in_the_triple_names_another_delivery() {
        let base = delivery_id("n1", "u1", Channel::Email);
        assert_ne!(base, delivery_id("n2", "u1", Channel::Email));
        assert_ne!(base, delivery_id("n1", "u2", Channel::Email));
        assert_ne!(base, delivery_id("n1", "u1", Channel::Sms));
        assert_ne!(delivery_id("a", "bc", Channel::Push), delivery_id("ab", "c", Channel::Push));
    }

    #[test]
    fn the_happy_path_moves_forward() {
        for (from, to) in [(Created, Pending), (Pending, Sent), (Sent, Opened), (Opened, Clicked), (Sent, Clicked)] {
            assert!(from.can_become(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn statuses_never_move_backwards() {
        for (from, to) in [(Sent, Pending), (Opened, Sent), (Clicked, Opened), (Sent, Created), (Suppressed, Sent)] {
            assert!(!from.can_become(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn feedback_moves_a_sent_message_forward_once() {
        for status in DeliveryStatus::FEEDBACK {
            assert!(Sent.can_become(status), "{status:?}");
            assert!(!status.can_become(Sent) && !status.can_become(Pending), "{status:?}");
            assert!(!DeliveryStatus::CLAIMABLE.contains(&status), "{status:?}");
        }
        for (from, to) in [
            (DeliveryDelayed, Delivered),
            (Delivered, Bounced),
            (Delivered, Opened),
            (Opened, Complained),
            (Sent, Suppressed),
        ] {
            assert!(from.can_become(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn late_feedback_never_undoes_engagement_or_an_end() {
        for (from, to) in [
            (Opened, Delivered),
            (Clicked, Delivered),
            (Bounced, Delivered),
            (Complained, Bounced),
            (Delivered, DeliveryDelayed),
            (Suppressed, Bounced),
            (Pending, Delivered),
            (Delivered, Suppressed),
            (Opened, Suppressed),
        ] {
            assert!(!from.can_become(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn an_error_may_be_retried_but_a_send_is_settled() {
        assert!(Error.can_become(Pending) && Error.can_become(Sent));
        assert!(DeliveryStatus::CLAIMABLE.contains(&Error) && !DeliveryStatus::CLAIMABLE.contains(&Pending));
        for settled in [Sent, RateLimited, Suppressed] {
            assert!(!DeliveryStatus::CLAIMABLE.contains(&settled), "{settled:?}");
        }
    }
}
