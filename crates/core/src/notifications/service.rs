//! Accepting notifications: validate everything up front, record one delivery per
//! (notification, recipient, channel), and publish the delivery jobs to the bus.

use std::{collections::BTreeMap, sync::Arc};

use chrono::Utc;

use crate::{
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelRecipient, ContentRef, Delivery, DeliveryStatus, DeliveryStore, TemplateStore, target_of,
    },
    events::{DomainEvent, EventPublisher, PublishError},
    notifications::{KeyClaim, NotificationRequest, NotificationStore, RECIPIENTS_PER_MESSAGE, Recipient, Reservation},
    profiles::ProfileStore,
    store::StoreError,
    validation::ValidationErrors,
};

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("no such notification")]
    NotFound,
    /// The idempotency key names a notification made by another request.
    #[error("the idempotency key was used for another request")]
    KeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub notification_id: String,
    /// True when the idempotency key had been used: nothing new was sent.
    pub repeated: bool,
}

#[derive(Clone)]
pub struct NotificationService {
    pub profiles: Arc<dyn ProfileStore>,
    pub templates: Arc<dyn TemplateStore>,
    pub deliveries: Arc<dyn DeliveryStore>,
    pub notifications: Arc<dyn NotificationStore>,
    pub events: Arc<dyn EventPublisher>,
    /// How long an idempotency key holds: a repeat after that is a new notification.
    pub idempotency_ttl: chrono::Duration,
}

/// How long an idempotency key holds unless configured otherwise.
pub const DEFAULT_IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::hours(24);

pub fn new_notification_id() -> String {
    format!("n_{}", hex::encode(rand::random::<[u8; 16]>()))
}

impl NotificationService {
    /// Accepts a notification. `caller` scopes the idempotency key (the API key's hash),
    /// so two producers never collide on the same key.
    pub async fn accept(&self, request: NotificationRequest, caller: &str) -> Result<Accepted, NotificationError> {
        let recipients = request.validate()?;
        let content = self.content_refs(&request).await?;
        let mut notification_id = new_notification_id();
        let mut resumed = false;
        let key = request.idempotency_key.as_ref().map(|k| format!("{caller}:{k}"));
        if let Some(key) = &key {
            let now = Utc::now();
            let request_hash = request.fingerprint();
            let claim = KeyClaim {
                notification_id: notification_id.clone(),
                request_hash: request_hash.clone(),
                now,
                expires_at: now + self.idempotency_ttl,
            };
            match self.notifications.reserve(key, &claim).await? {
                Reservation::New => {}
                // Answering with the first id would tell the caller its other request
                // was accepted when nothing of it was sent.
                Reservation::Existing { request_hash: first, .. } if first != request_hash => {
                    return Err(NotificationError::KeyReused);
                }
                Reservation::Existing { notification_id: existing, complete: true, .. } => {
                    return Ok(Accepted { notification_id: existing, repeated: true });
                }
                // The first request stopped half-way: finish its work. Every step below
                // is safe to repeat, and workers skip deliveries already sent.
                Reservation::Existing { notification_id: existing, complete: false, .. } => {
                    notification_id = existing;
                    resumed = true;
                }
            }
        }

        let now = Utc::now();
        let mut deliveries = Vec::new();
        let mut jobs: BTreeMap<Channel, Vec<ChannelRecipient>> = BTreeMap::new();
        // The users' profiles, read concurrently (up to MAX_RECIPIENTS of them).
        let user_ids: Vec<String> =
            recipients.iter().filter_map(|r| if let Recipient::User(u) = r { Some(u.clone()) } else { None }).collect();
        let mut stored = self.profiles.load_many(&user_ids).await?;
        let profiles: Vec<Option<crate::profiles::Profile>> = recipients
            .iter()
            .map(|r| match r {
                Recipient::User(user_id) => stored.remove(user_id).and_then(|s| s.profile),
                Recipient::Direct { .. } => None,
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for (recipient, profile) in recipients.into_iter().zip(profiles) {
            let planned: Vec<(String, Option<String>, Channel, Option<crate::delivery::Target>)> = match recipient {
                Recipient::Direct { key, target, channel } => vec![(key, None, channel, Some(target))],
                Recipient::User(user_id) => request
                    .channels
                    .iter()
                    .map(|c| {
                        (user_id.clone(), Some(user_id.clone()), *c, profile.as_ref().and_then(|p| target_of(p, *c)))
                    })
                    .collect(),
            };
            for (key, user_id, channel, target) in planned {
                let (status, reason) = match &target {
                    Some(_) => (DeliveryStatus::Created, None),
                    None => (DeliveryStatus::Error, Some(format!("no {channel} address for this recipient"))),
                };
                let delivery = Delivery::new(&notification_id, &key, channel, status, reason, now);
                // A recipient named twice is one delivery: once in the table, once sent.
                if !seen.insert(delivery.delivery_id.clone()) {
                    continue;
                }
                if let Some(target) = target {
                    jobs.entry(channel).or_default().push(ChannelRecipient {
                        delivery_id: delivery.delivery_id.clone(),
                        user_id,
                        target,
                    });
                }
                deliveries.push(delivery);
            }
        }
        if resumed {
            for d in &deliveries {
                self.deliveries.create_if_absent(d).await?;
            }
        } else {
            self.deliveries.create(&deliveries).await?;
        }
        let events: Vec<DomainEvent> = jobs
            .into_iter()
            .flat_map(|(channel, recipients)| {
                let content = content[&channel].clone();
                let (id, kind, params) = (&notification_id, &request.notification_type, &request.params);
                let message = ChannelMessage {
                    notification_id: id.clone(),
                    notification_type: kind.clone(),
                    channel,
                    content,
                    params: params.clone(),
                    recipients: Vec::new(),
                    campaign_id: None,
                    attempt: 0,
                    transactional: request.transactional,
                };
                message
                    .pack(&recipients, RECIPIENTS_PER_MESSAGE)
                    .into_iter()
                    .map(|job| DomainEvent::Stored(job.event()))
            })
            .collect();
        self.events.publish(&events).await?;
        if let Some(key) = &key {
            self.notifications.complete(key).await?;
        }
        Ok(Accepted { notification_id, repeated: resumed })
    }

    /// The content each channel will render: the inline content, or the latest version
    /// of the type's template, pinned so a later edit cannot change a send under way.
    async fn content_refs(
        &self,
        request: &NotificationRequest,
    ) -> Result<BTreeMap<Channel, ContentRef>, NotificationError> {
        if let Some(inline) = &request.content {
            return Ok(request.channels.iter().map(|c| (*c, ContentRef::Inline(inline[c].clone()))).collect());
        }
        let template = self.templates.get(&request.notification_type, None).await?.ok_or_else(|| {
            ValidationErrors::single("type", "no template is stored for this type: store one, or give inline content")
        })?;
        let mut errors = ValidationErrors::default();
        for c in &request.channels {
            if !template.channels.contains_key(c) {
                errors.add("channels", format!("the {} template has no {c} content", template.template_id));
            }
        }
        errors.into_result()?;
        Ok(request
            .channels
            .iter()
            .map(|c| {
                (*c, ContentRef::Template { template_id: template.template_id.clone(), version: template.version })
            })
            .collect())
    }

    /// The notification's deliveries, as its readers may see them (`Delivery::for_readers`).
    pub async fn deliveries(&self, notification_id: &str) -> Result<Vec<Delivery>, NotificationError> {
        let deliveries = self.deliveries.list(notification_id).await?;
        if deliveries.is_empty() {
            return Err(NotificationError::NotFound);
        }
        Ok(deliveries.into_iter().map(Delivery::for_readers).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{delivery::memory::*, events::memory::*, notifications::memory::*, profiles::memory::*};

    fn service() -> (NotificationService, Arc<MemoryDeliveries>, Arc<MemoryBus>) {
        let deliveries = Arc::new(MemoryDeliveries::default());
        let bus = Arc::new(MemoryBus::default());
        let service = NotificationService {
            profiles: Arc::new(MemoryProfiles::default()),
            templates: Arc::new(MemoryTemplates::default()),
            deliveries: deliveries.clone(),
            notifications: Arc::new(MemoryNotifications::default()),
            events: bus.clone(),
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
        };
        (service, deliveries, bus)
    }

    fn request(value: serde_json::Value) -> NotificationRequest {
        serde_json::from_value(value).unwrap()
    }

    fn jobs(bus: &MemoryBus) -> Vec<ChannelMessage> {
        bus.delivery_jobs()
    }

    #[tokio::test]
    async fn a_recipient_named_twice_gets_one_delivery() {
        let (service, deliveries, bus) = service();
        let phone = json!({"phone": "+14155550100"});
        let body =
            json!({"type": "t", "recipients": [phone, phone], "channels": ["sms"], "content": {"sms": {"body": "x"}}});
        let accepted = service.accept(request(body), "caller").await.unwrap();
        assert_eq!(deliveries.list(&accepted.notification_id).await.unwrap().len(), 1);
        assert_eq!(jobs(&bus)[0].recipients.len(), 1);
    }

    #[tokio::test]
    async fn recipients_are_packed_ten_to_a_job_per_channel() {
        let (service, _, bus) = service();
        let recipients: Vec<_> = (0..25).map(|i| json!({"phone": format!("+1415555{:04}", i)})).collect();
        let body =
            json!({"type": "t", "recipients": recipients, "channels": ["sms"], "content": {"sms": {"body": "x"}}});
        service.accept(request(body), "caller").await.unwrap();
        let sizes: Vec<usize> = jobs(&bus).iter().map(|j| j.recipients.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
    }

    #[tokio::test]
    async fn a_transactional_request_makes_transactional_jobs_and_others_do_not() {
        let (service, _, bus) = service();
        let body = |transactional: bool| {
            request(json!({"type": "t", "recipients": [{"email": "a@example.com"}], "channels": ["email"],
                "content": {"email": {"subject": "s", "body": "x"}}, "transactional": transactional}))
        };
        service.accept(body(true), "caller").await.unwrap();
        service.accept(body(false), "caller").await.unwrap();
        let flags: Vec<bool> = jobs(&bus).iter().map(|j| j.transactional).collect();
        assert_eq!(flags, [true, false]);
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_returns_the_first_id_and_publishes_nothing() {
        let (service, _, bus) = service();
        let body = json!({"type": "t", "recipients": [{"phone": "+14155550100"}], "channels": ["sms"],
            "content": {"sms": {"body": "x"}}, "idempotency_key": "k1"});
        let first = service.accept(request(body.clone()), "caller").await.unwrap();
        let second = service.accept(request(body.clone()), "caller").await.unwrap();
        assert_eq!((first.notification_id.clone(), second.repeated), (second.notification_id, true));
        assert_eq!(jobs(&bus).len(), 1);
        let other_caller = service.accept(request(body), "someone else").await.unwrap();
        assert_ne!(other_caller.notification_id, first.notification_id);
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_with_the_same_request_in_another_layout_is_a_repeat() {
        let (service, _, bus) = service();
        let first = r#"{"type": "t", "recipients": [{"phone": "+14155550100"}], "channels": ["sms"],
            "content": {"sms": {"body": "x"}}, "params": {"a": 1, "b": 2}, "idempotency_key": "k1"}"#;
        let second = r#"{"params":{"b":2,"a":1},"idempotency_key":"k1","channels":["sms"],
            "content":{"sms":{"body":"x"}},"recipients":[{"phone":"+14155550100"}],"type":"t"}"#;
        let first = service.accept(serde_json::from_str(first).unwrap(), "caller").await.unwrap();
        let second = service.accept(serde_json::from_str(second).unwrap(), "caller").await.unwrap();
        assert_eq!((second.notification_id, second.repeated), (first.notification_id, true));
        assert_eq!(jobs(&bus).len(), 1);
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_with_another_request_is_refused_and_sends_nothing() {
        let (service, _, bus) = service();
        let body = |text: &str| {
            request(json!({"type": "t", "recipients": [{"phone": "+14155550100"}], "channels": ["sms"],
                "content": {"sms": {"body": text}}, "idempotency_key": "k1"}))
        };
        service.accept(body("x"), "caller").await.unwrap();
        let other = service.accept(body("y"), "caller").await;
        assert!(matches!(other, Err(NotificationError::KeyReused)), "{other:?}");
        assert_eq!(jobs(&bus).len(), 1);
    }

    #[tokio::test]
    async fn an_expired_idempotency_key_makes_a_new_notification() {
        let (service, _, bus) = service();
        let service = NotificationService { idempotency_ttl: chrono::Duration::seconds(-1), ..service };
        let body = json!({"type": "t", "recipients": [{"phone": "+14155550100"}], "channels": ["sms"],
            "content": {"sms": {"body": "x"}}, "idempotency_key": "k1"});
        let first = service.accept(request(body.clone()), "caller").await.unwrap();
        let second = service.accept(request(body), "caller").await.unwrap();
        assert_ne!(second.notification_id, first.notification_id);
        assert!(!second.repeated);
        assert_eq!(jobs(&bus).len(), 2);
    }

    #[tokio::test]
    async fn a_direct_webhook_url_is_read_back_as_its_scheme_and_host_only() {
        let (service, _, _) = service();
        let url = "https://user:pw@hooks.slack.com:8443/services/T0/B0/s3cret?token=t#f";
        let body = json!({"type": "t", "recipients": [{"webhook_url": url}, {"phone": "+14155550100"}],
            "channels": ["webhook", "sms"], "content": {"webhook": {"body": "x"}, "sms": {"body": "x"}}});
        let accepted = service.accept(request(body), "caller").await.unwrap();
        let mut recipients: Vec<String> =
            service.deliveries(&accepted.notification_id).await.unwrap().into_iter().map(|d| d.recipient).collect();
        recipients.sort();
        assert_eq!(recipients, ["phone:+14155550100", "webhook_url:https://hooks.slack.com:8443/…"]);
    }

    #[tokio::test]
    async fn a_request_that_stopped_before_publishing_is_finished_by_its_repeat() {
        let (service, deliveries, bus) = service();
        let body = json!({"type": "t", "recipients": [{"phone": "+14155550100"}], "channels": ["sms"],
            "content": {"sms": {"body": "x"}}, "idempotency_key": "k1"});
        let failing =
            NotificationService { events: Arc::new(MemoryBus { fail: true, ..Default::default() }), ..service.clone() };
        assert!(failing.accept(request(body.clone()), "caller").await.is_err());
        let repeat = service.accept(request(body), "caller").await.unwrap();
        assert_eq!(deliveries.list(&repeat.notification_id).await.unwrap().len(), 1);
        assert_eq!(jobs(&bus).len(), 1);
    }
}
