//! The services of segments: recording behaviour events, saving segments, and the
//! segmenter that keeps every user's memberships current.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::{
    DomainEvent,
    activity::{self, Activity, ActivityEvent, ActivityRecorded},
    events::SegmentJob,
    ports::{
        ActivityStore, BackfillProgress, Evaluated, EventPublisher, MAX_ROWS_PER_WRITE, MembershipStore,
        MembershipWrite, ProfileScan, ProfileStore, Recorded, SegmentStore, StoreError, UserSegments,
    },
    segments::{
        Backfill, Catalog, Change, Definition, MAX_SEGMENTS, MEMBER_SHARDS, MembershipChange, Segment, SegmentInput,
        SegmentKind, SegmentState, check_segment_id,
    },
    validation::{self, ValidationErrors},
};

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("no such segment")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] crate::ports::PublishError),
}

/// Records behaviour events and tells the segmenter.
pub struct ActivityService {
    pub store: Arc<dyn ActivityStore>,
    pub events: Arc<dyn EventPublisher>,
}

impl ActivityService {
    /// Validates the whole batch (any bad event refuses it all), counts each new event
    /// once, then publishes `activity.recorded` for every user of the batch, counted or
    /// not, so that a retried batch that stopped before publishing still reaches the
    /// segmenter.
    pub async fn record(&self, events: &[ActivityEvent], now: DateTime<Utc>) -> Result<Recorded, SegmentError> {
        activity::check_batch(events, now)?;
        let recorded = self.store.record(events).await?;
        let mut by_user: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for event in events {
            by_user.entry(&event.user_id).or_default().insert(event.name.clone());
        }
        let notices: Vec<DomainEvent> = by_user
            .into_iter()
            .map(|(user_id, events)| {
                DomainEvent::ActivityRecorded(ActivityRecorded { user_id: user_id.to_owned(), events })
            })
            .collect();
        self.events.publish(&notices).await?;
        Ok(recorded)
    }
}

/// A page of a segment's members and where the next one starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Members {
    pub user_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct MembersCursor {
    shard: u32,
    after: Option<String>,
}

/// The saved segments, compiled; reloaded only when the catalog revision moved, so a
/// use costs one consistent read, not a scan.
pub struct CatalogCache {
    store: Arc<dyn SegmentStore>,
    /// None until first loaded.
    cached: RwLock<Option<Arc<Catalog>>>,
}

impl CatalogCache {
    pub fn new(store: Arc<dyn SegmentStore>) -> Self {
        Self { store, cached: RwLock::new(None) }
    }

    pub async fn current(&self) -> Result<Arc<Catalog>, StoreError> {
        let revision = self.store.catalog_revision().await?;
        let cached = self.cached.read().unwrap().clone();
        if let Some(cached) = cached.filter(|c| c.revision == revision) {
            return Ok(cached);
        }
        let catalog = Arc::new(Catalog::new(revision, &self.store.list().await?));
        *self.cached.write().unwrap() = Some(catalog.clone());
        Ok(catalog)
    }
}

/// Saves segments and answers who is in them.
pub struct SegmentService {
    store: Arc<dyn SegmentStore>,
    members: Arc<dyn MembershipStore>,
    events: Arc<dyn EventPublisher>,
    /// Parallel parts of a backfill's profile scan.
    backfill_parts: u32,
    catalog: CatalogCache,
}

impl SegmentService {
    pub fn new(
        store: Arc<dyn SegmentStore>,
        members: Arc<dyn MembershipStore>,
        events: Arc<dyn EventPublisher>,
        backfill_parts: u32,
    ) -> Self {
        Self { catalog: CatalogCache::new(store.clone()), store, members, events, backfill_parts }
    }

    /// Creates a segment. A dynamic one starts backfilling in the background; a static
    /// one is ready once its members are written.
    pub async fn create(
        &self,
        segment_id: Option<String>,
        input: SegmentInput,
        now: DateTime<Utc>,
    ) -> Result<Segment, SegmentError> {
        let segment_id = segment_id.unwrap_or_else(|| uuid_like(now));
        check_segment_id(&segment_id).map_err(|m| ValidationErrors::single("segment_id", m))?;
        let input = input.validate()?;
        let catalog = self.catalog.current().await?;
        if catalog.segments.len() + catalog.static_segments.len() >= MAX_SEGMENTS {
            return Err(SegmentError::Conflict(format!("a deployment holds at most {MAX_SEGMENTS} segments")));
        }
        let mut segment = Segment {
            segment_id,
            name: input.name,
            description: input.description,
            kind: SegmentKind::Dynamic,
            rule: None,
            reads: Default::default(),
            version: 1,
            state: SegmentState::Backfilling,
            backfill: Backfill::default(),
            created_at: now,
            updated_at: now,
        };
        let user_ids = define(&mut segment, input.definition, self.backfill_parts, now);
        match self.store.create(&segment).await {
            Err(StoreError::Conflict) => {
                // The repeat of a create that stopped half-way (its backfill jobs or its
                // members not all written) finishes it; anything else is a taken id.
                let existing = self.store.get(&segment.segment_id).await?.filter(|existing| {
                    existing.state == SegmentState::Backfilling
                        && (existing.kind, &existing.rule, &existing.name)
                            == (segment.kind, &segment.rule, &segment.name)
                });
                match existing {
                    Some(existing) => segment = existing,
                    None => {
                        return Err(SegmentError::Conflict(format!(
                            "segment {} exists, or existed: the ids of deleted segments are not used again",
                            segment.segment_id
                        )));
                    }
                }
            }
            other => other?,
        }
        self.start(&mut segment, user_ids).await?;
        Ok(segment)
    }

    /// Replaces a segment's name, description and rule (or members); a changed rule
    /// backfills again under a new version.
    pub async fn replace(
        &self,
        segment_id: &str,
        input: SegmentInput,
        now: DateTime<Utc>,
    ) -> Result<Segment, SegmentError> {
        let input = input.validate()?;
        let current = self.store.get(segment_id).await?.ok_or(SegmentError::NotFound)?;
        let kind = match input.definition {
            Definition::Dynamic { .. } => SegmentKind::Dynamic,
            Definition::Static { .. } => SegmentKind::Static,
        };
        if kind != current.kind {
            return Err(SegmentError::Conflict("a segment's kind cannot change; create a new segment".into()));
        }
        let mut segment = Segment {
            name: input.name,
            description: input.description,
            version: current.version + 1,
            state: SegmentState::Backfilling,
            backfill: Backfill::default(),
            updated_at: now,
            ..current.clone()
        };
        let user_ids = define(&mut segment, input.definition, self.backfill_parts, now);
        match self.store.replace(&segment, current.version).await {
            Err(StoreError::Conflict) => return Err(SegmentError::Conflict("the segment changed meanwhile".into())),
            other => other?,
        }
        if let Some(ids) = &user_ids {
            // Members no longer listed leave, then the list is written.
            let gone = self.static_members_not_in(segment_id, ids).await?;
            self.members.remove_rows(segment_id, &gone).await?;
        }
        self.start(&mut segment, user_ids).await?;
        Ok(segment)
    }

    async fn static_members_not_in(
        &self,
        segment_id: &str,
        keep: &BTreeSet<String>,
    ) -> Result<Vec<String>, SegmentError> {
        let mut gone = Vec::new();
        for shard in 0..MEMBER_SHARDS {
            let mut after = None;
            loop {
                let page = self.members.members(segment_id, shard, after.as_deref(), 1000).await?;
                gone.extend(page.user_ids.into_iter().filter(|id| !keep.contains(id)));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(gone)
    }

    /// Starts what a saved segment needs: its backfill, or its static members.
    async fn start(&self, segment: &mut Segment, user_ids: Option<BTreeSet<String>>) -> Result<(), SegmentError> {
        match user_ids {
            None => {
                let jobs: Vec<DomainEvent> = (0..segment.backfill.parts)
                    .map(|part| {
                        DomainEvent::SegmentJob(SegmentJob::Backfill {
                            segment_id: segment.segment_id.clone(),
                            version: segment.version,
                            part,
                            parts: segment.backfill.parts,
                            cursor: None,
                            sweep: false,
                        })
                    })
                    .collect();
                self.events.publish(&jobs).await?;
            }
            Some(ids) => {
                let ids: Vec<String> = ids.into_iter().collect();
                self.members.add_static(&segment.segment_id, &ids).await?;
                let progress = BackfillProgress { entered: ids.len() as u64, ..Default::default() };
                if let Some(now) = self
                    .store
                    .add_progress(&segment.segment_id, segment.version, &progress, Some(0), segment.updated_at)
                    .await?
                {
                    *segment = now;
                }
            }
        }
        Ok(())
    }

    pub async fn get(&self, segment_id: &str) -> Result<Segment, SegmentError> {
        self.store.get(segment_id).await?.ok_or(SegmentError::NotFound)
    }

    pub async fn list(&self) -> Result<Vec<Segment>, SegmentError> {
        let mut segments = self.store.list().await?;
        segments.sort_by(|a, b| a.segment_id.cmp(&b.segment_id));
        Ok(segments)
    }

    /// Deletes a segment; its members rows are removed in the background.
    pub async fn delete(&self, segment_id: &str) -> Result<(), SegmentError> {
        if !self.store.delete(segment_id).await? {
            return Err(SegmentError::NotFound);
        }
        let cleanups: Vec<DomainEvent> = (0..MEMBER_SHARDS)
            .map(|shard| {
                DomainEvent::SegmentJob(SegmentJob::Cleanup { segment_id: segment_id.to_owned(), shard, cursor: None })
            })
            .collect();
        self.events.publish(&cleanups).await?;
        Ok(())
    }

    /// A page of members, shard after shard; `cursor` is the previous page's.
    pub async fn members(&self, segment_id: &str, cursor: Option<&str>, limit: u32) -> Result<Members, SegmentError> {
        self.get(segment_id).await?;
        let bad_cursor = || ValidationErrors::single("cursor", "is not a cursor this API returned");
        let mut position = match cursor {
            None => MembersCursor { shard: 0, after: None },
            Some(c) => URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<MembersCursor>(&bytes).ok())
                .filter(|c| c.shard < MEMBER_SHARDS)
                .ok_or_else(bad_cursor)?,
        };
        let mut user_ids = Vec::new();
        while (user_ids.len() as u32) < limit {
            let want = limit - user_ids.len() as u32;
            let page = self.members.members(segment_id, position.shard, position.after.as_deref(), want).await?;
            user_ids.extend(page.user_ids);
            match page.next {
                Some(next) => position.after = Some(next),
                None if position.shard + 1 < MEMBER_SHARDS => {
                    position = MembersCursor { shard: position.shard + 1, after: None }
                }
                None => {
                    return Ok(Members { user_ids, next_cursor: None });
                }
            }
        }
        let next = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).expect("cursors serialize"));
        Ok(Members { user_ids, next_cursor: Some(next) })
    }

    /// The segments a user is in: dynamic ones as the segmenter computed them, static
    /// ones from their members rows.
    pub async fn user_segments(&self, user_id: &str) -> Result<Vec<String>, SegmentError> {
        validation::check_user_id(user_id)?;
        let catalog = self.catalog.current().await?;
        let dynamic = self.members.user_segments(user_id).await?.segments;
        let static_ids: Vec<String> = catalog.static_segments.iter().cloned().collect();
        let mut ids: BTreeSet<String> = dynamic.intersection(catalog.dynamic_ids()).cloned().collect();
        if !static_ids.is_empty() {
            ids.extend(self.members.rows_among(user_id, &static_ids).await?);
        }
        Ok(ids.into_iter().collect())
    }
}

/// Applies a validated definition to `segment`; the ids of a static one are returned for
/// writing.
fn define(segment: &mut Segment, definition: Definition, parts: u32, now: DateTime<Utc>) -> Option<BTreeSet<String>> {
    segment.backfill = Backfill { parts: parts.max(1), started_at: Some(now), ..Default::default() };
    match definition {
        Definition::Dynamic { rule, source } => {
            segment.kind = SegmentKind::Dynamic;
            segment.reads = rule.reads();
            segment.rule = Some(source);
            None
        }
        Definition::Static { user_ids } => {
            segment.kind = SegmentKind::Static;
            segment.backfill.parts = 1;
            Some(user_ids)
        }
    }
}

fn uuid_like(now: DateTime<Utc>) -> String {
    use rand::Rng;
    let random: u64 = rand::rng().random();
    format!("seg-{}-{random:016x}", now.format("%Y%m%d"))
}

/// One piece of the segmenter's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Something about a user changed: re-evaluate the segments it can affect.
    Change {
        user_id: String,
        change: Change,
    },
    Job(SegmentJob),
}

/// Profiles a backfill message reads: a page small enough to finish well within a
/// Lambda's time, large enough that a million profiles take few messages.
pub const BACKFILL_PAGE: u32 = 500;
/// Parallel parts of a profile scan, unless configured.
pub const DEFAULT_BACKFILL_PARTS: u32 = 4;
/// Users the segmenter works on at once.
const CONCURRENCY: usize = 16;
/// Attempts of a user's evaluation that lost a race with another writer.
const ATTEMPTS: usize = 8;

pub struct Segmenter {
    pub profiles: Arc<dyn ProfileStore>,
    pub scan: Arc<dyn ProfileScan>,
    pub activity: Arc<dyn ActivityStore>,
    pub segments: Arc<dyn SegmentStore>,
    pub members: Arc<dyn MembershipStore>,
    pub events: Arc<dyn EventPublisher>,
    /// Parallel parts of a sweep's profile scan.
    pub backfill_parts: u32,
    catalog: CatalogCache,
}

/// What a backfill page did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageOutcome {
    pub progress: BackfillProgress,
    /// Users whose write lost a race and were re-evaluated in full.
    pub re_evaluated: u64,
}

impl Segmenter {
    pub fn new(
        profiles: Arc<dyn ProfileStore>,
        scan: Arc<dyn ProfileScan>,
        activity: Arc<dyn ActivityStore>,
        segments: Arc<dyn SegmentStore>,
        members: Arc<dyn MembershipStore>,
        events: Arc<dyn EventPublisher>,
    ) -> Self {
        Self {
            catalog: CatalogCache::new(segments.clone()),
            profiles,
            scan,
            activity,
            segments,
            members,
            events,
            backfill_parts: DEFAULT_BACKFILL_PARTS,
        }
    }

    /// The current catalog (one consistent read, a reload when it changed).
    pub async fn catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        self.catalog.current().await
    }

    /// Does the work of a batch; one result per item, in order. Changes to one user are
    /// merged and evaluated once.
    pub async fn run(&self, work: &[Work], now: DateTime<Utc>) -> Vec<Result<(), SegmentError>> {
        let catalog = match self.catalog().await {
            Ok(catalog) => catalog,
            Err(e) => {
                let message = e.to_string();
                return work.iter().map(|_| Err(StoreError::Unavailable(message.clone()).into())).collect();
            }
        };
        let mut by_user: HashMap<String, Change> = HashMap::new();
        for item in work {
            if let Work::Change { user_id, change } = item {
                by_user.entry(user_id.clone()).or_default().merge(change.clone());
            }
        }
        let catalog = &catalog;
        // Owned keys: a stream over borrowed ones is not Send-general enough for callers
        // inside async_trait methods.
        let user_results: HashMap<String, Result<(), String>> = stream::iter(by_user)
            .map(|(user_id, change)| async move {
                let outcome = self.evaluate_user(catalog, &user_id, &change, now).await;
                (user_id, outcome.map_err(|e| e.to_string()))
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        // Jobs (backfill pages of different parts, cleanups) are independent too.
        futures_util::future::join_all(work.iter().map(|item| async {
            match item {
                Work::Change { user_id, .. } => match &user_results[user_id.as_str()] {
                    Ok(()) => Ok(()),
                    Err(message) => Err(StoreError::Unavailable(message.clone()).into()),
                },
                Work::Job(job) => self.run_job(catalog, job, now).await,
            }
        }))
        .await
    }

    async fn run_job(&self, catalog: &Catalog, job: &SegmentJob, now: DateTime<Utc>) -> Result<(), SegmentError> {
        match job {
            SegmentJob::Backfill { .. } => self.backfill_page(catalog, job, now).await.map(|_| ()),
            SegmentJob::Cleanup { segment_id, shard, cursor } => {
                let page = self.members.members(segment_id, *shard, cursor.as_deref(), 1000).await?;
                self.members.remove_rows(segment_id, &page.user_ids).await?;
                if let Some(next) = page.next {
                    let job = SegmentJob::Cleanup { segment_id: segment_id.clone(), shard: *shard, cursor: Some(next) };
                    self.events.publish(&[DomainEvent::SegmentJob(job)]).await?;
                }
                Ok(())
            }
            SegmentJob::Sweep => {
                let jobs: Vec<DomainEvent> = catalog
                    .segments
                    .iter()
                    .filter(|s| s.reads.time_relative)
                    .flat_map(|s| {
                        let parts = self.backfill_parts;
                        (0..parts).map(move |part| {
                            DomainEvent::SegmentJob(SegmentJob::Backfill {
                                segment_id: s.segment_id.clone(),
                                version: s.version,
                                part,
                                parts,
                                cursor: None,
                                sweep: true,
                            })
                        })
                    })
                    .collect();
                self.events.publish(&jobs).await?;
                Ok(())
            }
        }
    }

    /// Re-evaluates the segments `change` can affect for one user, from a consistent read
    /// of the profile and activity, and writes the difference; a write that lost a race
    /// with another writer starts over, so the last write always saw the latest state.
    pub async fn evaluate_user(
        &self,
        catalog: &Catalog,
        user_id: &str,
        change: &Change,
        now: DateTime<Utc>,
    ) -> Result<(), SegmentError> {
        let today = now.date_naive();
        let affected = catalog.affected(change);
        if affected.is_empty() && !change.everything {
            // Nothing this change can affect: not even a read.
            return Ok(());
        }
        let query = catalog.activity_query(&affected);
        let affected_ids: BTreeSet<String> = affected.iter().map(|&i| catalog.segments[i].segment_id.clone()).collect();
        for _ in 0..ATTEMPTS {
            let current = self.members.user_segments(user_id).await?;
            let stored = self.profiles.load(user_id).await?;
            let profile = stored.as_ref().and_then(|s| s.profile.as_ref());
            let activity = if query.is_empty() || profile.is_none() {
                Activity::default()
            } else {
                let ids = [user_id.to_owned()];
                self.activity.load_many(&ids, &query, today).await?.remove(user_id).unwrap_or_default()
            };
            let members = catalog.evaluate(&affected, profile, &activity, today);
            let writes =
                plan_writes(user_id, &current, &affected_ids, catalog.dynamic_ids(), &members, None, true, now);
            if profile.is_none() && change.everything {
                self.leave_static_segments(catalog, user_id).await?;
            }
            match self.write_all(&writes).await {
                Ok(()) => {
                    let (revision, pending) = match writes.last() {
                        Some(last) => (last.expected_revision + 1, last.pending.clone()),
                        None => (current.revision, current.pending.clone()),
                    };
                    return self.publish_pending(user_id, revision, &pending).await;
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable(format!("user memberships kept changing over {ATTEMPTS} attempts")).into())
    }

    async fn leave_static_segments(&self, catalog: &Catalog, user_id: &str) -> Result<(), StoreError> {
        let ids: Vec<String> = catalog.static_segments.iter().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        for segment_id in self.members.rows_among(user_id, &ids).await? {
            self.members.remove_rows(&segment_id, &[user_id.to_owned()]).await?;
        }
        Ok(())
    }

    /// Writes the steps in order; the first conflict stops (the caller starts over).
    async fn write_all(&self, writes: &[MembershipWrite]) -> Result<(), StoreError> {
        for write in writes {
            self.members.write(write).await?;
        }
        Ok(())
    }

    /// Publishes the outbox, then clears it (if nobody wrote since; else the next writer
    /// publishes it: at least once).
    async fn publish_pending(
        &self,
        user_id: &str,
        revision: u64,
        pending: &[MembershipChange],
    ) -> Result<(), SegmentError> {
        if pending.is_empty() {
            return Ok(());
        }
        let events: Vec<DomainEvent> = pending.iter().cloned().map(DomainEvent::Membership).collect();
        self.events.publish(&events).await?;
        self.members.clear_pending(user_id, revision).await?;
        Ok(())
    }

    /// One page of a backfill (or sweep): evaluates the segment for each profile of the
    /// page and writes the memberships that differ, each guarded by the profile version
    /// and activity revision it evaluated. A backfill publishes no entered/exited events:
    /// it sets up a new rule's members, nothing the users did. A sweep does: its users
    /// enter or leave because time passed.
    pub async fn backfill_page(
        &self,
        catalog: &Catalog,
        job: &SegmentJob,
        now: DateTime<Utc>,
    ) -> Result<PageOutcome, SegmentError> {
        let SegmentJob::Backfill { segment_id, version, part, parts, cursor, sweep } = job else {
            return Ok(PageOutcome::default());
        };
        let Some(segment) = self.segments.get(segment_id).await? else { return Ok(PageOutcome::default()) };
        if segment.version != *version || segment.kind != SegmentKind::Dynamic {
            return Ok(PageOutcome::default());
        }
        let compiled = Catalog::new(0, std::slice::from_ref(&segment));
        let today = now.date_naive();
        let page = self.scan.scan_page(*part, *parts, cursor.as_deref(), BACKFILL_PAGE).await?;
        let user_ids: Vec<String> = page.profiles.iter().map(|(id, _)| id.clone()).collect();
        let current = self.members.user_segments_many(&user_ids).await?;
        let query = compiled.activity_query(&[0]);
        let activity =
            if query.is_empty() { HashMap::new() } else { self.activity.load_many(&user_ids, &query, today).await? };
        let only: BTreeSet<String> = [segment_id.clone()].into();
        // The user's other segments are known too: only deleted ones are forgotten.
        let mut known = catalog.dynamic_ids().clone();
        known.insert(segment_id.clone());
        let no_activity = Activity::default();
        let mut outcome = PageOutcome {
            progress: BackfillProgress { profiles_scanned: page.profiles.len() as u64, ..Default::default() },
            ..Default::default()
        };
        let mut writes = Vec::new();
        for (user_id, stored) in &page.profiles {
            let user_activity = activity.get(user_id).unwrap_or(&no_activity);
            let members = compiled.evaluate(&[0], stored.profile.as_ref(), user_activity, today);
            let empty = UserSegments::default();
            let mine = current.get(user_id).unwrap_or(&empty);
            let guard = Evaluated {
                profile_version: stored.version,
                activity_revision: (!query.is_empty()).then_some(user_activity.revision),
            };
            let planned = plan_writes(user_id, mine, &only, &known, &members, Some(guard), *sweep, now);
            if let Some(write) = planned.into_iter().next() {
                outcome.progress.entered += u64::from(write.entered.contains(segment_id));
                outcome.progress.exited += u64::from(write.exited.contains(segment_id));
                writes.push(write);
            }
        }
        let applied = self.members.write_many(&writes).await?;
        let (written, conflicted): (Vec<_>, Vec<_>) = writes.into_iter().zip(applied).partition(|(_, ok)| *ok);
        let conflicted: Vec<String> = conflicted.into_iter().map(|(w, _)| w.user_id).collect();
        // A sweep's changes: published together, then each outbox cleared.
        let published: Vec<DomainEvent> =
            written.iter().flat_map(|(w, _)| w.pending.iter().cloned().map(DomainEvent::Membership)).collect();
        if !published.is_empty() {
            self.events.publish(&published).await?;
            // Owned items: streams over borrowed ones are not Send-general enough for
            // callers inside async_trait methods.
            let outboxes: Vec<(String, u64)> = written
                .into_iter()
                .filter(|(w, _)| !w.pending.is_empty())
                .map(|(w, _)| (w.user_id, w.expected_revision + 1))
                .collect();
            stream::iter(outboxes)
                .map(|(user_id, revision)| async move { self.members.clear_pending(&user_id, revision).await })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<bool>>()
                .await?;
        }
        // The profile or activity moved on since the scan read it: evaluate it afresh.
        let everything = Change { everything: true, ..Default::default() };
        for user_id in &conflicted {
            self.evaluate_user(catalog, user_id, &everything, now).await?;
        }
        outcome.re_evaluated = conflicted.len() as u64;
        if !sweep {
            let finished_part = page.next.is_none().then_some(*part);
            self.segments.add_progress(segment_id, *version, &outcome.progress, finished_part, now).await?;
        }
        if let Some(next) = page.next {
            let job = SegmentJob::Backfill {
                segment_id: segment_id.clone(),
                version: *version,
                part: *part,
                parts: *parts,
                cursor: Some(next),
                sweep: *sweep,
            };
            self.events.publish(&[DomainEvent::SegmentJob(job)]).await?;
        }
        Ok(outcome)
    }
}

/// The writes that move a user's memberships from `current` to `members` over the
/// `affected` segments: one step per `MAX_ROWS_PER_WRITE` rows, each step a consistent
/// state (its set matches its rows). Segments no longer `known` leave silently (their
/// rows are removed by the deletion's cleanup). `publish` adds the changes to the outbox.
#[allow(clippy::too_many_arguments)]
pub fn plan_writes(
    user_id: &str,
    current: &UserSegments,
    affected: &BTreeSet<String>,
    known: &BTreeSet<String>,
    members: &BTreeSet<String>,
    guard: Option<Evaluated>,
    publish: bool,
    now: DateTime<Utc>,
) -> Vec<MembershipWrite> {
    let entered: Vec<String> = members.difference(&current.segments).cloned().collect();
    let exited: Vec<String> =
        current.segments.iter().filter(|s| affected.contains(*s) && !members.contains(*s)).cloned().collect();
    let forgotten: Vec<String> = current.segments.iter().filter(|s| !known.contains(*s)).cloned().collect();
    if entered.is_empty() && exited.is_empty() && forgotten.is_empty() {
        return Vec::new();
    }
    let rows: Vec<(String, bool)> =
        entered.into_iter().map(|s| (s, true)).chain(exited.into_iter().map(|s| (s, false))).collect();
    let mut set = current.segments.clone();
    for gone in &forgotten {
        set.remove(gone);
    }
    let mut pending = current.pending.clone();
    let mut writes = Vec::new();
    let chunks: Vec<&[(String, bool)]> =
        if rows.is_empty() { vec![&[]] } else { rows.chunks(MAX_ROWS_PER_WRITE).collect() };
    for (revision, chunk) in (current.revision..).zip(chunks) {
        let mut write = MembershipWrite {
            user_id: user_id.to_owned(),
            expected_revision: revision,
            segments: BTreeSet::new(),
            entered: Vec::new(),
            exited: Vec::new(),
            pending: Vec::new(),
            guard: guard.clone(),
        };
        for (segment_id, entered) in chunk {
            if *entered {
                set.insert(segment_id.clone());
                write.entered.push(segment_id.clone());
            } else {
                set.remove(segment_id);
                write.exited.push(segment_id.clone());
            }
            if publish {
                pending.push(MembershipChange {
                    segment_id: segment_id.clone(),
                    user_id: user_id.to_owned(),
                    entered: *entered,
                    revision: revision + 1,
                    at: now,
                });
            }
        }
        write.segments = set.clone();
        write.pending = pending.clone();
        writes.push(write);
    }
    writes
}
