//! The engagement event stream: every status change of a delivery, published to the bus
//! as `delivery.status_changed` (version 1). The delivery's own history is its outbox:
//! the relay reads each write of the deliveries table from its stream and publishes the
//! changes the write appended, so a change is published once it is durable, in order per
//! delivery (`sequence`), and a write that appends nothing publishes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    activity::ActivityEvent,
    channel::Channel,
    delivery::{Delivery, DeliveryStatus},
    events::{Outbox, OutboxWrite, StoredEvent, detail_type},
};

/// The version of the event's shape; a change that breaks a consumer gets a new one.
pub const VERSION: u32 = 1;

/// One status change of one delivery. The ids a consumer needs, never the message's
/// content or the recipient's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatusChanged {
    pub version: u32,
    pub delivery_id: String,
    /// The notification or campaign the delivery belongs to.
    pub notification_id: String,
    pub channel: Channel,
    /// The user; absent for a message sent to an address directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub status: DeliveryStatus,
    /// The status before (absent for `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<DeliveryStatus>,
    /// When the change happened (the provider's time for its feedback).
    pub at: DateTime<Utc>,
    /// Its place in the delivery's history, from 1: consumers order a delivery's
    /// changes by it and drop a repeat.
    pub sequence: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
}

/// The prefixes of a delivery's recipient that name an address, not a user.
const DIRECT: [&str; 3] = ["email:", "phone:", "webhook_url:"];

/// The user a delivery is for, if it is for one.
fn user_of(delivery: &Delivery) -> Option<&str> {
    let direct = DIRECT.iter().any(|prefix| delivery.recipient.starts_with(prefix));
    (!direct).then_some(delivery.recipient.as_str())
}

/// The changes a write from `before` (None: the delivery is new) to `after` appended to
/// the history, oldest first.
pub fn status_changes(before: Option<&Delivery>, after: &Delivery) -> Vec<DeliveryStatusChanged> {
    let known = before.map_or(0, |b| b.history.len()).min(after.history.len());
    after.history[known..]
        .iter()
        .enumerate()
        .map(|(offset, change)| {
            let position = known + offset;
            DeliveryStatusChanged {
                version: VERSION,
                delivery_id: after.delivery_id.clone(),
                notification_id: after.notification_id.clone(),
                channel: after.channel,
                user_id: user_of(after).map(str::to_owned),
                status: change.status,
                previous_status: position.checked_sub(1).map(|p| after.history[p].status),
                at: change.at,
                sequence: position + 1,
                reason: change.reason.clone(),
                provider: after.provider.clone(),
                provider_message_id: after.provider_message_id.clone(),
            }
        })
        .collect()
}

/// The statuses that are something the user did or that happened to their address, and
/// so count as their behaviour: segments and campaign filters can ask for them.
pub const ENGAGEMENT: [DeliveryStatus; 5] = [
    DeliveryStatus::Opened,
    DeliveryStatus::Clicked,
    DeliveryStatus::Bounced,
    DeliveryStatus::Complained,
    DeliveryStatus::Unsubscribed,
];

/// A change of `ENGAGEMENT` to a user's delivery as a behaviour event of that user:
/// `<channel>.<status>` (`email.opened`, `email.clicked`, …) with the delivery's
/// `notification_id` (the notification or campaign) and `channel` as properties, so a
/// rule such as "opened an email in the last 7 days" or "clicked campaign X" counts it.
/// Its id is the change's (delivery and sequence): recorded twice, it counts once.
pub fn engagement(change: &DeliveryStatusChanged) -> Option<ActivityEvent> {
    if !ENGAGEMENT.contains(&change.status) {
        return None;
    }
    let user_id = change.user_id.clone()?;
    let mut properties = serde_json::Map::new();
    properties.insert("notification_id".into(), change.notification_id.clone().into());
    properties.insert("channel".into(), change.channel.as_str().into());
    Some(ActivityEvent {
        event_id: format!("{}#{}", change.delivery_id, change.sequence),
        user_id,
        name: format!("{}.{}", change.channel, change.status.as_str()),
        timestamp: change.at,
        properties,
    })
}

/// An outbox's id for a delivery: its history's length, so a write that appends nothing
/// leaves the outbox as it was.
fn outbox_id(delivery: &Delivery) -> String {
    format!("{}#{}", delivery.delivery_id, delivery.history.len())
}

/// A write of a delivery as the relay reads it from the stream: its outboxes before and
/// after, the after one holding the changes the write appended, so the relay publishes
/// exactly those (`Outbox::due`).
pub fn write(before: Option<&Delivery>, after: &Delivery) -> OutboxWrite {
    let events = status_changes(before, after)
        .iter()
        .map(|change| StoredEvent {
            detail_type: detail_type::DELIVERY_STATUS_CHANGED.to_owned(),
            detail: serde_json::to_string(change).expect("status changes serialize"),
        })
        .collect();
    OutboxWrite {
        before: before.map(|b| Outbox { id: outbox_id(b), events: Vec::new() }),
        after: Some(Outbox { id: outbox_id(after), events }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::StatusChange;

    fn delivery(recipient: &str, statuses: &[DeliveryStatus]) -> Delivery {
        let mut delivery = Delivery::new("n1", recipient, Channel::Email, statuses[0], None, Utc::now());
        for status in &statuses[1..] {
            delivery.history.push(StatusChange { status: *status, at: Utc::now(), reason: None });
            delivery.status = *status;
        }
        delivery
    }

    #[test]
    fn a_write_publishes_the_changes_it_appended_in_order_with_their_place() {
        use DeliveryStatus::*;
        let before = delivery("ana", &[Created]);
        let after = delivery("ana", &[Created, Pending, Sent]);
        let changes = status_changes(Some(&before), &after);
        let seen: Vec<_> = changes.iter().map(|c| (c.status, c.previous_status, c.sequence)).collect();
        assert_eq!(seen, [(Pending, Some(Created), 2), (Sent, Some(Pending), 3)]);
        assert_eq!(changes[0].user_id.as_deref(), Some("ana"));
    }

    #[test]
    fn a_new_delivery_publishes_its_creation_and_a_write_appending_nothing_publishes_nothing() {
        let new = delivery("ana", &[DeliveryStatus::Created]);
        let created = write(None, &new);
        assert_eq!(created.due().len(), 1);
        assert_eq!(status_changes(None, &new)[0].previous_status, None);
        assert!(write(Some(&new), &new).due().is_empty());
    }

    #[test]
    fn an_open_of_a_users_email_is_their_behaviour_event_and_a_send_is_not() {
        use DeliveryStatus::*;
        let opened = status_changes(None, &delivery("ana", &[Created, Pending, Sent, Opened]));
        let event = engagement(&opened[3]).unwrap();
        assert_eq!((event.user_id.as_str(), event.name.as_str()), ("ana", "email.opened"));
        assert_eq!(event.properties["notification_id"], "n1");
        assert_eq!(event.event_id, format!("{}#4", opened[3].delivery_id));
        assert!(crate::activity::check_event_name(&event.name).is_ok());
        assert!(opened[..3].iter().all(|c| engagement(c).is_none()));
        let direct = status_changes(None, &delivery("email:bob@example.com", &[Created, Pending, Sent, Opened]));
        assert!(engagement(&direct[3]).is_none(), "no user to count it for");
    }

    #[test]
    fn a_direct_address_is_never_in_the_event() {
        let direct = delivery("email:bob@example.com", &[DeliveryStatus::Created]);
        let written = write(None, &direct);
        let event = &written.due()[0];
        assert!(!event.detail.contains("bob"), "{}", event.detail);
        assert_eq!(status_changes(None, &direct)[0].user_id, None);
    }
}
