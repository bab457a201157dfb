//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    channel::Channel,
    delivery::{
        ChannelMessage, Claim, ClaimRequest, Delivery, DeliveryStatus, DeliveryStore, PreferenceStore, StatusChange,
        TemplateStore, preferences::Preferences, rendering::ChannelContent, templates::StoredTemplate,
    },
    events::{DomainEvent, detail_type, memory::MemoryBus},
    store::StoreError,
};

/// Each delivery with the time it was claimed, if it is pending.
type ClaimedDeliveries = HashMap<String, (Delivery, Option<DateTime<Utc>>)>;

#[derive(Default)]
pub struct MemoryDeliveries {
    pub items: Mutex<ClaimedDeliveries>,
    /// Deliveries whose `error` is final: never claimed again.
    pub final_errors: Mutex<std::collections::HashSet<String>>,
    /// Rate-limit windows → sends counted.
    pub rate_counters: Mutex<HashMap<String, u64>>,
    /// Provider message id → delivery, as the adapter's index: filled by `finish`, so a
    /// lookup costs what DynamoDB's Query does, not a scan of every delivery.
    by_message: Mutex<HashMap<String, String>>,
}

impl MemoryDeliveries {
    pub fn status(&self, id: &str) -> Option<DeliveryStatus> {
        self.items.lock().unwrap().get(id).map(|(d, _)| d.status)
    }

    pub fn delivery(&self, id: &str) -> Option<Delivery> {
        self.items.lock().unwrap().get(id).map(|(d, _)| d.clone())
    }
}

#[async_trait]
impl DeliveryStore for MemoryDeliveries {
    async fn create(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap();
        for d in deliveries {
            items.insert(d.delivery_id.clone(), (d.clone(), None));
        }
        Ok(())
    }

    async fn create_if_absent(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let mut items = self.items.lock().unwrap();
        if items.contains_key(&delivery.delivery_id) {
            return Ok(false);
        }
        items.insert(delivery.delivery_id.clone(), (delivery.clone(), None));
        Ok(true)
    }

    async fn list(&self, notification_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let items = self.items.lock().unwrap();
        Ok(items.values().filter(|(d, _)| d.notification_id == notification_id).map(|(d, _)| d.clone()).collect())
    }

    async fn list_page(
        &self,
        notification_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<crate::delivery::DeliveryPage, StoreError> {
        let items = self.items.lock().unwrap();
        let final_errors = self.final_errors.lock().unwrap();
        let mut ids: Vec<&String> = items
            .iter()
            .filter(|(id, (d, _))| d.notification_id == notification_id && after.is_none_or(|a| id.as_str() > a))
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        let more = ids.len() > limit as usize;
        ids.truncate(limit as usize);
        let deliveries: Vec<crate::delivery::ListedDelivery> = ids
            .iter()
            .map(|id| crate::delivery::ListedDelivery {
                delivery: items[*id].0.clone(),
                final_error: final_errors.contains(*id),
            })
            .collect();
        let next = more.then(|| deliveries.last().map(|d| d.delivery.delivery_id.clone())).flatten();
        Ok(crate::delivery::DeliveryPage { deliveries, next })
    }

    async fn claim_all(&self, requests: &[ClaimRequest], at: DateTime<Utc>) -> Result<Vec<Claim>, StoreError> {
        let mut items = self.items.lock().unwrap();
        let mut counters = self.rate_counters.lock().unwrap();
        let mut claims = Vec::with_capacity(requests.len());
        for request in requests {
            if let (Some(new), false) = (&request.create, items.contains_key(&request.delivery_id)) {
                let mut delivery =
                    Delivery::new(&new.notification_id, &new.recipient, new.channel, DeliveryStatus::Created, None, at);
                delivery.delivery_id = request.delivery_id.clone();
                items.insert(request.delivery_id.clone(), (delivery, None));
            }
            let (delivery, claimed_at) =
                items.get_mut(&request.delivery_id).ok_or_else(|| StoreError::Fatal("no such delivery".into()))?;
            let is_final = self.final_errors.lock().unwrap().contains(&request.delivery_id);
            let claim = match delivery.status {
                status if DeliveryStatus::CLAIMABLE.contains(&status) && !is_final => {
                    // As the adapter: a request that settles counts against no window.
                    let counted = request.rate_limit.as_ref().filter(|_| request.settle.is_none());
                    let over = counted.and_then(|limit| {
                        let count = counters.entry(limit.window.key.clone()).or_default();
                        if *count >= u64::from(limit.limit) {
                            Some(limit.over.clone())
                        } else {
                            *count += 1;
                            None
                        }
                    });
                    match request.settle.clone().or(over) {
                        Some(change) => {
                            delivery.status = change.status;
                            delivery.history.push(change);
                            Claim::Settled(delivery.status)
                        }
                        None => {
                            delivery.status = DeliveryStatus::Pending;
                            delivery.history.push(StatusChange { status: DeliveryStatus::Pending, at, reason: None });
                            *claimed_at = Some(at);
                            Claim::Claimed
                        }
                    }
                }
                DeliveryStatus::Pending => Claim::InFlight { claimed_at: claimed_at.unwrap_or(at) },
                settled => Claim::AlreadySettled(settled),
            };
            claims.push(claim);
        }
        Ok(claims)
    }

    async fn finish(
        &self,
        delivery_id: &str,
        change: &StatusChange,
        provider: Option<&str>,
        message_id: Option<&str>,
        retryable: bool,
    ) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap();
        // As the adapter: a delivery that is not there is not pending either.
        let Some((delivery, _)) = items.get_mut(delivery_id) else { return Err(StoreError::Conflict) };
        if delivery.status != DeliveryStatus::Pending {
            return Err(StoreError::Conflict);
        }
        delivery.status = change.status;
        delivery.history.push(change.clone());
        if change.status == DeliveryStatus::Error && !retryable {
            self.final_errors.lock().unwrap().insert(delivery_id.to_owned());
        }
        delivery.provider = provider.map(str::to_owned).or(delivery.provider.take());
        delivery.provider_message_id = message_id.map(str::to_owned).or(delivery.provider_message_id.take());
        if let Some(message_id) = message_id {
            self.by_message.lock().unwrap().insert(message_id.to_owned(), delivery_id.to_owned());
        }
        Ok(())
    }

    async fn advance(&self, delivery_id: &str, change: &StatusChange) -> Result<bool, StoreError> {
        let mut items = self.items.lock().unwrap();
        let Some((delivery, _)) = items.get_mut(delivery_id) else { return Ok(false) };
        if !delivery.status.can_become(change.status) {
            return Ok(false);
        }
        delivery.status = change.status;
        delivery.history.push(change.clone());
        Ok(true)
    }

    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.delivery(delivery_id))
    }

    async fn find_by_provider_message(&self, provider_message_id: &str) -> Result<Option<String>, StoreError> {
        if let Some(id) = self.by_message.lock().unwrap().get(provider_message_id) {
            return Ok(Some(id.clone()));
        }
        // A delivery a test put in `items` directly is found too.
        let items = self.items.lock().unwrap();
        let found = items.values().find(|(d, _)| d.provider_message_id.as_deref() == Some(provider_message_id));
        Ok(found.map(|(d, _)| d.delivery_id.clone()))
    }
}

#[derive(Default)]
pub struct MemoryPreferences(pub Mutex<HashMap<String, Preferences>>, pub Mutex<HashMap<String, u64>>);

#[async_trait]
impl PreferenceStore for MemoryPreferences {
    async fn get(&self, user_id: &str) -> Result<Preferences, StoreError> {
        Ok(self.0.lock().unwrap().get(user_id).cloned().unwrap_or_default())
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>, StoreError> {
        let all = self.0.lock().unwrap();
        Ok(user_ids.iter().filter_map(|u| Some((u.clone(), all.get(u)?.clone()))).collect())
    }

    async fn get_versioned(&self, user_id: &str) -> Result<(Preferences, u64), StoreError> {
        let all = self.0.lock().unwrap();
        let version = self.1.lock().unwrap().get(user_id).copied().unwrap_or(0);
        Ok((all.get(user_id).cloned().unwrap_or_default(), version))
    }

    async fn put_if(&self, user_id: &str, preferences: &Preferences, version: u64) -> Result<(), StoreError> {
        let mut all = self.0.lock().unwrap();
        let mut versions = self.1.lock().unwrap();
        if versions.get(user_id).copied().unwrap_or(0) != version {
            return Err(StoreError::Conflict);
        }
        all.insert(user_id.to_owned(), preferences.clone());
        versions.insert(user_id.to_owned(), version + 1);
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryTemplates(pub Mutex<HashMap<String, Vec<StoredTemplate>>>);

#[async_trait]
impl TemplateStore for MemoryTemplates {
    async fn save_new_version(
        &self,
        template_id: &str,
        channels: &BTreeMap<Channel, ChannelContent>,
    ) -> Result<StoredTemplate, StoreError> {
        let mut templates = self.0.lock().unwrap();
        let versions = templates.entry(template_id.to_owned()).or_default();
        let stored = StoredTemplate {
            template_id: template_id.to_owned(),
            version: versions.len() as u64 + 1,
            channels: channels.clone(),
            updated_at: Utc::now(),
        };
        versions.push(stored.clone());
        Ok(stored)
    }

    async fn get(&self, template_id: &str, version: Option<u64>) -> Result<Option<StoredTemplate>, StoreError> {
        let templates = self.0.lock().unwrap();
        let Some(versions) = templates.get(template_id) else { return Ok(None) };
        Ok(match version {
            None => versions.last().cloned(),
            Some(v) => versions.iter().find(|t| t.version == v).cloned(),
        })
    }
}

/// A provider that answers from a script (then succeeds) and remembers what it sent.
#[derive(Default)]
pub struct ScriptedSender {
    pub name: String,
    pub script: Mutex<std::collections::VecDeque<Result<(), crate::delivery::SendError>>>,
    /// Delivery ids in the order they were accepted.
    pub sent: Mutex<Vec<String>>,
    /// What each accepted message said.
    pub contents: Mutex<Vec<crate::delivery::rendering::Rendered>>,
    /// The List-Unsubscribe URL each accepted message carried.
    pub list_unsubscribe: Mutex<Vec<Option<String>>>,
    pub calls: AtomicUsize,
    /// How long each send waits before it answers.
    pub hold: Mutex<std::time::Duration>,
}

impl ScriptedSender {
    pub fn named(name: &str) -> Self {
        Self { name: name.to_owned(), ..Default::default() }
    }

    pub fn then(self, result: Result<(), crate::delivery::SendError>) -> Self {
        self.script.lock().unwrap().push_back(result);
        self
    }

    pub fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl crate::delivery::Sender for ScriptedSender {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: &crate::delivery::Outgoing<'_>) -> Result<String, crate::delivery::SendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hold = *self.hold.lock().unwrap();
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        self.script.lock().unwrap().pop_front().unwrap_or(Ok(()))?;
        self.sent.lock().unwrap().push(message.delivery_id.to_owned());
        self.contents.lock().unwrap().push(message.content.clone());
        self.list_unsubscribe.lock().unwrap().push(message.list_unsubscribe.map(str::to_owned));
        Ok(format!("{}-{}", self.name, message.delivery_id))
    }
}

/// The channel messages published on a bus double, in order (events/ knows them only in
/// their wire form).
pub trait DeliveryJobs {
    fn delivery_jobs(&self) -> Vec<ChannelMessage>;
}

impl DeliveryJobs for MemoryBus {
    fn delivery_jobs(&self) -> Vec<ChannelMessage> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter_map(|e| match e {
                DomainEvent::Stored(e) if e.detail_type.starts_with(detail_type::NOTIFICATION_PREFIX) => {
                    Some(serde_json::from_str(&e.detail).expect("a channel message"))
                }
                _ => None,
            })
            .collect()
    }
}
