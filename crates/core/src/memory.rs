//! In-memory implementations of the ports, for fast tests of core logic and for
//! benchmarks that stub the stores. Not a substitute for the AWS adapters' own tests.

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
    DomainEvent, Profile,
    delivery::{Channel, DeliveryStatus},
    notification::{Delivery, StatusChange},
    ports::{
        Claim, ClaimRequest, DeliveryStore, EventPublisher, NotificationStore, PreferenceStore, ProfileStore,
        PublishError, Reservation, StoreError, StoredProfile, SuppressionStore, TemplateStore,
    },
    preferences::Preferences,
    rendering::ChannelContent,
    templates::StoredTemplate,
};

/// Each delivery with the time it was claimed, if it is pending.
type ClaimedDeliveries = HashMap<String, (Delivery, Option<DateTime<Utc>>)>;

#[derive(Default)]
pub struct MemoryDeliveries {
    pub items: Mutex<ClaimedDeliveries>,
    /// Rate-limit windows → sends counted.
    pub rate_counters: Mutex<HashMap<String, u64>>,
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
            let (delivery, claimed_at) = items
                .get_mut(&request.delivery_id)
                .ok_or_else(|| StoreError::Unavailable("no such delivery".into()))?;
            let claim = match delivery.status {
                status if DeliveryStatus::CLAIMABLE.contains(&status) => {
                    let over = request.rate_limit.as_ref().and_then(|limit| {
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
    ) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap();
        let (delivery, _) =
            items.get_mut(delivery_id).ok_or_else(|| StoreError::Unavailable("no such delivery".into()))?;
        if delivery.status != DeliveryStatus::Pending {
            return Err(StoreError::Conflict);
        }
        delivery.status = change.status;
        delivery.history.push(change.clone());
        delivery.provider = provider.map(str::to_owned).or(delivery.provider.take());
        delivery.provider_message_id = message_id.map(str::to_owned).or(delivery.provider_message_id.take());
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
}

#[derive(Default)]
pub struct MemoryPreferences(pub Mutex<HashMap<String, Preferences>>);

#[async_trait]
impl PreferenceStore for MemoryPreferences {
    async fn get(&self, user_id: &str) -> Result<Preferences, StoreError> {
        Ok(self.0.lock().unwrap().get(user_id).cloned().unwrap_or_default())
    }

    async fn get_many(&self, user_ids: &[String]) -> Result<HashMap<String, Preferences>, StoreError> {
        let all = self.0.lock().unwrap();
        Ok(user_ids.iter().filter_map(|u| Some((u.clone(), all.get(u)?.clone()))).collect())
    }

    async fn put(&self, user_id: &str, preferences: &Preferences) -> Result<(), StoreError> {
        self.0.lock().unwrap().insert(user_id.to_owned(), preferences.clone());
        Ok(())
    }
}

#[derive(Default)]
pub struct MemorySuppressions(pub Mutex<HashMap<String, String>>);

#[async_trait]
impl SuppressionStore for MemorySuppressions {
    async fn suppressed_among(&self, addresses: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        let list = self.0.lock().unwrap();
        Ok(addresses.iter().filter(|a| list.contains_key(*a)).cloned().collect())
    }

    async fn suppress(&self, address: &str, reason: &str) -> Result<(), StoreError> {
        self.0.lock().unwrap().insert(address.to_owned(), reason.to_owned());
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

#[derive(Default)]
pub struct MemoryNotifications(pub Mutex<HashMap<String, (String, bool)>>);

#[async_trait]
impl NotificationStore for MemoryNotifications {
    async fn reserve(&self, key: &str, notification_id: &str) -> Result<Reservation, StoreError> {
        let mut keys = self.0.lock().unwrap();
        if let Some((existing, complete)) = keys.get(key) {
            return Ok(Reservation::Existing { notification_id: existing.clone(), complete: *complete });
        }
        keys.insert(key.to_owned(), (notification_id.to_owned(), false));
        Ok(Reservation::New)
    }

    async fn complete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.0.lock().unwrap().get_mut(key) {
            entry.1 = true;
        }
        Ok(())
    }
}

/// An in-memory store that can make the next saves lose a race, as a concurrent
/// writer would.
#[derive(Default)]
pub struct MemoryProfiles {
    pub records: Mutex<HashMap<String, StoredProfile>>,
    pub conflicts_to_inject: AtomicUsize,
}

#[async_trait]
impl ProfileStore for MemoryProfiles {
    async fn load(&self, user_id: &str) -> Result<Option<StoredProfile>, StoreError> {
        Ok(self.records.lock().unwrap().get(user_id).cloned())
    }

    async fn load_many(&self, user_ids: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError> {
        let records = self.records.lock().unwrap();
        Ok(user_ids.iter().filter_map(|u| Some((u.clone(), records.get(u)?.clone()))).collect())
    }

    async fn save(&self, profile: &Profile, expected_version: u64) -> Result<(), StoreError> {
        self.put(
            &profile.user_id,
            StoredProfile { version: profile.version, profile: Some(profile.clone()) },
            expected_version,
        )
    }

    async fn erase(&self, user_id: &str, version: u64, expected_version: u64) -> Result<(), StoreError> {
        self.put(user_id, StoredProfile { version, profile: None }, expected_version)
    }
}

impl MemoryProfiles {
    fn put(&self, user_id: &str, record: StoredProfile, expected_version: u64) -> Result<(), StoreError> {
        if self.conflicts_to_inject.load(Ordering::SeqCst) > 0 {
            self.conflicts_to_inject.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Conflict);
        }
        let mut records = self.records.lock().unwrap();
        if records.get(user_id).map_or(0, |r| r.version) != expected_version {
            return Err(StoreError::Conflict);
        }
        records.insert(user_id.to_owned(), record);
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryBus {
    pub published: Mutex<Vec<DomainEvent>>,
    pub fail: bool,
}

impl MemoryBus {
    pub fn profile_changes(&self) -> Vec<crate::ProfileChanged> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter_map(|e| if let DomainEvent::ProfileChanged(c) = e { Some(c.clone()) } else { None })
            .collect()
    }

    pub fn delivery_jobs(&self) -> Vec<crate::notification::DeliveryJob> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter_map(|e| if let DomainEvent::DeliveryJob(j) = e { Some(j.clone()) } else { None })
            .collect()
    }
}

#[async_trait]
impl EventPublisher for MemoryBus {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), PublishError> {
        if self.fail {
            return Err(PublishError("bus down".into()));
        }
        self.published.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

/// A provider that answers from a script (then succeeds) and remembers what it sent.
#[derive(Default)]
pub struct ScriptedSender {
    pub name: String,
    pub script: Mutex<std::collections::VecDeque<Result<(), crate::ports::SendError>>>,
    /// Delivery ids in the order they were accepted.
    pub sent: Mutex<Vec<String>>,
    /// What each accepted message said.
    pub contents: Mutex<Vec<crate::rendering::Rendered>>,
    pub calls: AtomicUsize,
}

impl ScriptedSender {
    pub fn named(name: &str) -> Self {
        Self { name: name.to_owned(), ..Default::default() }
    }

    pub fn then(self, result: Result<(), crate::ports::SendError>) -> Self {
        self.script.lock().unwrap().push_back(result);
        self
    }

    pub fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl crate::ports::Sender for ScriptedSender {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: &crate::ports::Outgoing<'_>) -> Result<String, crate::ports::SendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.script.lock().unwrap().pop_front().unwrap_or(Ok(()))?;
        self.sent.lock().unwrap().push(message.delivery_id.to_owned());
        self.contents.lock().unwrap().push(message.content.clone());
        Ok(format!("{}-{}", self.name, message.delivery_id))
    }
}

/// Profiles scanned in user id order, split into parts by a stable hash.
#[async_trait]
impl crate::ports::ProfileScan for MemoryProfiles {
    async fn scan_page(
        &self,
        part: u32,
        parts: u32,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<crate::ports::ScanPage, StoreError> {
        let records = self.records.lock().unwrap();
        let mut ids: Vec<&String> = records
            .keys()
            .filter(|id| crate::segments::shard_of(id) % parts.max(1) == part)
            .filter(|id| cursor.is_none_or(|c| id.as_str() > c))
            .collect();
        ids.sort();
        let page: Vec<(String, StoredProfile)> =
            ids.iter().take(limit as usize).map(|id| ((*id).clone(), records[*id].clone())).collect();
        let next = (ids.len() > limit as usize).then(|| page.last().map(|(id, _)| id.clone())).flatten();
        Ok(crate::ports::ScanPage { profiles: page, next })
    }
}

/// Activity per user, with the ids of the events already counted.
#[derive(Default)]
pub struct MemoryActivity {
    pub users: Mutex<HashMap<String, (crate::activity::Activity, std::collections::HashSet<String>)>>,
}

#[async_trait]
impl crate::ports::ActivityStore for MemoryActivity {
    async fn record(&self, events: &[crate::activity::ActivityEvent]) -> Result<crate::ports::Recorded, StoreError> {
        let mut users = self.users.lock().unwrap();
        let mut recorded = crate::ports::Recorded::default();
        let mut fresh: HashMap<&str, Vec<crate::activity::ActivityEvent>> = HashMap::new();
        for event in events {
            let (_, seen) = users.entry(event.user_id.clone()).or_default();
            if seen.insert(event.event_id.clone()) {
                recorded.counted += 1;
                fresh.entry(&event.user_id).or_default().push(event.clone());
            } else {
                recorded.duplicates += 1;
            }
        }
        for (user_id, events) in fresh {
            users.get_mut(user_id).expect("entry made above").0.record(&events);
        }
        Ok(recorded)
    }

    async fn load_many(
        &self,
        user_ids: &[String],
        _query: &crate::activity::ActivityQuery,
        _today: chrono::NaiveDate,
    ) -> Result<HashMap<String, crate::activity::Activity>, StoreError> {
        let users = self.users.lock().unwrap();
        Ok(user_ids.iter().map(|id| (id.clone(), users.get(id).map(|(a, _)| a.clone()).unwrap_or_default())).collect())
    }
}

#[derive(Default)]
pub struct MemorySegments {
    pub segments: Mutex<BTreeMap<String, crate::segments::Segment>>,
    pub revision: AtomicUsize,
    /// Ids of deleted segments (tombstones).
    pub deleted: Mutex<std::collections::HashSet<String>>,
    /// (segment, version, part) of the parts counted as finished.
    pub finished_parts: Mutex<std::collections::HashSet<(String, u64, u32)>>,
}

#[async_trait]
impl crate::ports::SegmentStore for MemorySegments {
    async fn create(&self, segment: &crate::segments::Segment) -> Result<(), StoreError> {
        let mut segments = self.segments.lock().unwrap();
        if segments.contains_key(&segment.segment_id) || self.deleted.lock().unwrap().contains(&segment.segment_id) {
            return Err(StoreError::Conflict);
        }
        segments.insert(segment.segment_id.clone(), segment.clone());
        self.revision.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn replace(&self, segment: &crate::segments::Segment, expected_version: u64) -> Result<(), StoreError> {
        let mut segments = self.segments.lock().unwrap();
        if segments.get(&segment.segment_id).map(|s| s.version) != Some(expected_version) {
            return Err(StoreError::Conflict);
        }
        segments.insert(segment.segment_id.clone(), segment.clone());
        self.revision.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn delete(&self, segment_id: &str) -> Result<bool, StoreError> {
        let mut deleted = self.deleted.lock().unwrap();
        let removed = self.segments.lock().unwrap().remove(segment_id).is_some() || deleted.contains(segment_id);
        if removed {
            deleted.insert(segment_id.to_owned());
            self.revision.fetch_add(1, Ordering::SeqCst);
        }
        Ok(removed)
    }

    async fn get(&self, segment_id: &str) -> Result<Option<crate::segments::Segment>, StoreError> {
        Ok(self.segments.lock().unwrap().get(segment_id).cloned())
    }

    async fn list(&self) -> Result<Vec<crate::segments::Segment>, StoreError> {
        Ok(self.segments.lock().unwrap().values().cloned().collect())
    }

    async fn catalog_revision(&self) -> Result<u64, StoreError> {
        Ok(self.revision.load(Ordering::SeqCst) as u64)
    }

    async fn add_progress(
        &self,
        segment_id: &str,
        version: u64,
        progress: &crate::ports::BackfillProgress,
        finished_part: Option<u32>,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::segments::Segment>, StoreError> {
        let mut segments = self.segments.lock().unwrap();
        let Some(segment) = segments.get_mut(segment_id).filter(|s| s.version == version) else { return Ok(None) };
        if let Some(part) = finished_part {
            let mut finished = self.finished_parts.lock().unwrap();
            if !finished.insert((segment_id.to_owned(), version, part)) {
                return Ok(Some(segment.clone()));
            }
        }
        let backfill = &mut segment.backfill;
        backfill.profiles_scanned += progress.profiles_scanned;
        backfill.entered += progress.entered;
        backfill.exited += progress.exited;
        if finished_part.is_some() {
            backfill.parts_done += 1;
            if backfill.parts_done >= backfill.parts {
                backfill.finished_at = Some(at);
                segment.state = crate::segments::SegmentState::Ready;
            }
        }
        Ok(Some(segment.clone()))
    }
}

/// Tells whether a guarded write's evaluation is still current (user id, guard).
pub type GuardCheck = Box<dyn Fn(&str, &crate::ports::Evaluated) -> bool + Send>;

/// Memberships: each user's record and the members rows, segment → user ids.
#[derive(Default)]
pub struct MemoryMemberships {
    pub users: Mutex<HashMap<String, crate::ports::UserSegments>>,
    pub rows: Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
    /// Profile versions and activity revisions guards are checked against.
    pub guard_check: Mutex<Option<GuardCheck>>,
}

impl MemoryMemberships {
    pub fn members_of(&self, segment_id: &str) -> std::collections::BTreeSet<String> {
        self.rows.lock().unwrap().get(segment_id).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl crate::ports::MembershipStore for MemoryMemberships {
    async fn user_segments(&self, user_id: &str) -> Result<crate::ports::UserSegments, StoreError> {
        Ok(self.users.lock().unwrap().get(user_id).cloned().unwrap_or_default())
    }

    async fn user_segments_many(
        &self,
        user_ids: &[String],
    ) -> Result<HashMap<String, crate::ports::UserSegments>, StoreError> {
        let users = self.users.lock().unwrap();
        Ok(user_ids.iter().filter_map(|id| Some((id.clone(), users.get(id)?.clone()))).collect())
    }

    async fn write(&self, write: &crate::ports::MembershipWrite) -> Result<(), StoreError> {
        let mut users = self.users.lock().unwrap();
        let record = users.entry(write.user_id.clone()).or_default();
        if record.revision != write.expected_revision {
            return Err(StoreError::Conflict);
        }
        if let (Some(guard), Some(check)) = (&write.guard, self.guard_check.lock().unwrap().as_ref())
            && !check(&write.user_id, guard)
        {
            return Err(StoreError::Conflict);
        }
        *record = crate::ports::UserSegments {
            revision: write.expected_revision + 1,
            segments: write.segments.clone(),
            pending: write.pending.clone(),
        };
        let mut rows = self.rows.lock().unwrap();
        for segment_id in &write.entered {
            rows.entry(segment_id.clone()).or_default().insert(write.user_id.clone());
        }
        for segment_id in &write.exited {
            rows.entry(segment_id.clone()).or_default().remove(&write.user_id);
        }
        Ok(())
    }

    async fn write_many(&self, writes: &[crate::ports::MembershipWrite]) -> Result<Vec<bool>, StoreError> {
        let mut applied = Vec::with_capacity(writes.len());
        for write in writes {
            applied.push(match crate::ports::MembershipStore::write(self, write).await {
                Ok(()) => true,
                Err(StoreError::Conflict) => false,
                Err(e) => return Err(e),
            });
        }
        Ok(applied)
    }

    async fn clear_pending(&self, user_id: &str, revision: u64) -> Result<bool, StoreError> {
        let mut users = self.users.lock().unwrap();
        match users.get_mut(user_id).filter(|u| u.revision == revision) {
            Some(user) => {
                user.pending.clear();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn members(
        &self,
        segment_id: &str,
        shard: u32,
        after: Option<&str>,
        limit: u32,
    ) -> Result<crate::ports::MembersPage, StoreError> {
        let rows = self.rows.lock().unwrap();
        let ids: Vec<String> = rows
            .get(segment_id)
            .into_iter()
            .flatten()
            .filter(|id| crate::segments::shard_of(id) == shard && after.is_none_or(|a| id.as_str() > a))
            .cloned()
            .collect();
        let page: Vec<String> = ids.iter().take(limit as usize).cloned().collect();
        let next = (ids.len() > limit as usize).then(|| page.last().cloned()).flatten();
        Ok(crate::ports::MembersPage { user_ids: page, next })
    }

    async fn add_static(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        self.rows.lock().unwrap().entry(segment_id.to_owned()).or_default().extend(user_ids.iter().cloned());
        Ok(())
    }

    async fn remove_rows(&self, segment_id: &str, user_ids: &[String]) -> Result<(), StoreError> {
        if let Some(rows) = self.rows.lock().unwrap().get_mut(segment_id) {
            for id in user_ids {
                rows.remove(id);
            }
        }
        Ok(())
    }

    async fn rows_among(
        &self,
        user_id: &str,
        segment_ids: &[String],
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let rows = self.rows.lock().unwrap();
        Ok(segment_ids.iter().filter(|s| rows.get(*s).is_some_and(|r| r.contains(user_id))).cloned().collect())
    }
}

/// Objects by (bucket, key).
#[derive(Default)]
pub struct MemoryFiles {
    pub objects: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryFiles {
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.objects.lock().unwrap().insert((bucket.to_owned(), key.to_owned()), body.into());
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().unwrap().get(&(bucket.to_owned(), key.to_owned())).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().map(|(_, key)| key.clone()).collect()
    }
}

#[async_trait]
impl crate::ports::ImportFiles for MemoryFiles {
    async fn read_from(
        &self,
        bucket: &str,
        key: &str,
        from: u64,
    ) -> Result<Option<crate::ports::ObjectReader>, StoreError> {
        Ok(self.get(bucket, key).map(|body| {
            let tail = body.get(from as usize..).unwrap_or_default().to_vec();
            Box::new(std::io::Cursor::new(tail)) as crate::ports::ObjectReader
        }))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.insert(bucket, key, body);
        Ok(())
    }

    async fn concatenate(&self, bucket: &str, prefix: &str, head: Vec<u8>, key: &str) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().unwrap();
        let parts: Vec<(String, String)> =
            objects.keys().filter(|(b, k)| b == bucket && k.starts_with(prefix)).cloned().collect();
        if parts.is_empty() {
            return Ok(());
        }
        let mut joined = head;
        for part in &parts {
            joined.extend(objects.remove(part).unwrap_or_default());
        }
        objects.insert((bucket.to_owned(), key.to_owned()), joined);
        Ok(())
    }
}

/// Import jobs by id; `fail_saves` fails that many saves (an invocation dying mid-file).
#[derive(Default)]
pub struct MemoryImportJobs {
    pub jobs: Mutex<BTreeMap<String, crate::importing::ImportJob>>,
    pub fail_saves: AtomicUsize,
}

#[async_trait]
impl crate::ports::ImportJobStore for MemoryImportJobs {
    async fn create(&self, job: &crate::importing::ImportJob) -> Result<bool, StoreError> {
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.contains_key(&job.job_id) {
            return Ok(false);
        }
        jobs.insert(job.job_id.clone(), job.clone());
        Ok(true)
    }

    async fn get(&self, job_id: &str) -> Result<Option<crate::importing::ImportJob>, StoreError> {
        Ok(self.jobs.lock().unwrap().get(job_id).cloned())
    }

    async fn save(&self, job: &crate::importing::ImportJob, expected_checkpoint: u64) -> Result<(), StoreError> {
        if self.fail_saves.load(Ordering::SeqCst) > 0 {
            self.fail_saves.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("injected failure".into()));
        }
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.get(&job.job_id).map(|j| j.resume.checkpoint) != Some(expected_checkpoint) {
            return Err(StoreError::Conflict);
        }
        jobs.insert(job.job_id.clone(), job.clone());
        Ok(())
    }

    async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<crate::ports::ImportJobsPage, StoreError> {
        let mut jobs: Vec<_> = self.jobs.lock().unwrap().values().cloned().collect();
        jobs.sort_by(|a, b| (b.started_at, &b.job_id).cmp(&(a.started_at, &a.job_id)));
        let skip = cursor.and_then(|c| c.parse().ok()).unwrap_or(0usize);
        let page: Vec<_> = jobs.iter().skip(skip).take(limit as usize).cloned().collect();
        let next = (skip + page.len() < jobs.len()).then(|| (skip + page.len()).to_string());
        Ok(crate::ports::ImportJobsPage { jobs: page, next })
    }
}

/// The continuation messages sent, by job id.
#[derive(Default)]
pub struct MemoryImportQueue(pub Mutex<Vec<String>>);

#[async_trait]
impl crate::ports::ImportQueue for MemoryImportQueue {
    async fn continue_job(&self, job_id: &str) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(job_id.to_owned());
        Ok(())
    }
}

/// Campaigns by id, with each shard's recorded cursor.
#[derive(Default)]
pub struct MemoryCampaigns {
    pub campaigns: Mutex<BTreeMap<String, crate::campaigns::Campaign>>,
    /// (campaign, shard) → the cursor of the next page to record; absent: the shard's start.
    pub cursors: Mutex<HashMap<(String, u32), Option<String>>>,
}

fn add_counters(into: &mut crate::campaigns::CampaignCounters, counts: &crate::campaigns::CampaignCounters) {
    let c = counts;
    into.targeted += c.targeted;
    into.queued += c.queued;
    into.sent += c.sent;
    into.failed += c.failed;
    into.skipped_opted_out += c.skipped_opted_out;
    into.skipped_rate_limited += c.skipped_rate_limited;
    into.skipped_suppressed += c.skipped_suppressed;
    into.skipped_filtered += c.skipped_filtered;
    into.skipped_no_address += c.skipped_no_address;
    into.skipped_cancelled += c.skipped_cancelled;
    into.opened += c.opened;
    into.clicked += c.clicked;
    into.deferred += c.deferred;
    into.deferred_planned += c.deferred_planned;
}

#[async_trait]
impl crate::ports::CampaignStore for MemoryCampaigns {
    async fn create(&self, campaign: &crate::campaigns::Campaign) -> Result<bool, StoreError> {
        let mut campaigns = self.campaigns.lock().unwrap();
        if campaigns.contains_key(&campaign.campaign_id) {
            return Ok(false);
        }
        campaigns.insert(campaign.campaign_id.clone(), campaign.clone());
        Ok(true)
    }

    async fn get(&self, campaign_id: &str) -> Result<Option<crate::campaigns::Campaign>, StoreError> {
        Ok(self.campaigns.lock().unwrap().get(campaign_id).cloned())
    }

    async fn set_state(
        &self,
        campaign_id: &str,
        state: crate::campaigns::CampaignState,
        from: &[crate::campaigns::CampaignState],
    ) -> Result<bool, StoreError> {
        let mut campaigns = self.campaigns.lock().unwrap();
        match campaigns.get_mut(campaign_id) {
            Some(campaign) if from.contains(&campaign.state) => {
                campaign.state = state;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn record_page(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<Option<u32>, StoreError> {
        let mut cursors = self.cursors.lock().unwrap();
        let key = (campaign_id.to_owned(), shard);
        // Recorded cursors: Some(cursor) of the next page; Some(None) stands for "done".
        let expected: Option<Option<String>> = Some(cursor.map(str::to_owned));
        let current = match cursors.get(&key) {
            None => Some(None),
            Some(Some(c)) if c == DONE => None,
            Some(c) => Some(c.clone()),
        };
        if current != expected {
            return Ok(None);
        }
        cursors.insert(key, Some(next.unwrap_or(DONE).to_owned()));
        let mut campaigns = self.campaigns.lock().unwrap();
        let campaign = campaigns.get_mut(campaign_id).ok_or(StoreError::Conflict)?;
        add_counters(&mut campaign.counters, counts);
        if next.is_none() {
            campaign.shards_done += 1;
        }
        Ok(Some(campaign.shards_done))
    }

    async fn add_counts(
        &self,
        campaign_id: &str,
        counts: &crate::campaigns::CampaignCounters,
    ) -> Result<(), StoreError> {
        if let Some(campaign) = self.campaigns.lock().unwrap().get_mut(campaign_id) {
            add_counters(&mut campaign.counters, counts);
        }
        Ok(())
    }
}

const DONE: &str = "\u{0}done";

/// Jobs and dispatch pages sent, with their delays, and how many requests the SQS adapters
/// would have made for them (SendMessageBatch of 10).
#[derive(Default)]
pub struct MemoryQueues {
    pub jobs: Mutex<Vec<crate::notification::DeliveryJob>>,
    pub pages: Mutex<Vec<(crate::campaigns::DispatchPage, std::time::Duration)>>,
    pub requests: AtomicUsize,
    /// Keeps only the counts (benchmarks of millions of recipients).
    pub discard: bool,
}

#[async_trait]
impl crate::ports::JobQueues for MemoryQueues {
    async fn enqueue(
        &self,
        jobs: &[crate::notification::DeliveryJob],
        _delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut by_channel = std::collections::BTreeMap::new();
        for job in jobs {
            *by_channel.entry(job.channel).or_insert(0usize) += 1;
        }
        self.requests.fetch_add(by_channel.values().map(|n| n.div_ceil(10)).sum(), Ordering::SeqCst);
        if !self.discard {
            self.jobs.lock().unwrap().extend_from_slice(jobs);
        }
        Ok(())
    }
}

#[async_trait]
impl crate::ports::DispatchQueue for MemoryQueues {
    async fn dispatch(
        &self,
        pages: &[crate::campaigns::DispatchPage],
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.requests.fetch_add(pages.len().div_ceil(10), Ordering::SeqCst);
        self.pages.lock().unwrap().extend(pages.iter().map(|p| (p.clone(), delay)));
        Ok(())
    }
}
