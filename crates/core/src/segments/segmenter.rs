//! The segmenter: keeps every user's memberships current as profiles and behaviour change,
//! and backfills new segments page by page. Its entered/exited events ride on each
//! membership write's outbox (the relay publishes them from the members table's stream);
//! it publishes only its own jobs (backfill pages, cleanups).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};

use super::service::*;
use crate::{
    activity::{Activity, ActivityStore},
    events::{DomainEvent, EventPublisher, MembershipChange, SegmentTask},
    profiles::{ProfileScan, ProfileStore},
    segments::{
        BackfillProgress, Catalog, Change, Evaluated, MAX_ROWS_PER_WRITE, MembershipStore, MembershipWrite,
        SegmentKind, SegmentStore, UserSegments,
    },
    store::StoreError,
};

/// One piece of the segmenter's input.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Something about a user changed: re-evaluate the segments it can affect.
    Change {
        user_id: String,
        change: Change,
    },
    Task(SegmentTask),
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
                return work.iter().map(|_| Err(StoreError::Transient(message.clone()).into())).collect();
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
                    Err(message) => Err(StoreError::Transient(message.clone()).into()),
                },
                Work::Task(job) => self.run_job(catalog, job, now).await,
            }
        }))
        .await
    }

    async fn run_job(&self, catalog: &Catalog, job: &SegmentTask, now: DateTime<Utc>) -> Result<(), SegmentError> {
        match job {
            SegmentTask::Backfill { .. } => self.backfill_page(catalog, job, now).await.map(|_| ()),
            SegmentTask::Cleanup { segment_id, shard, cursor } => {
                let page = self.members.members(segment_id, *shard, cursor.as_deref(), 1000).await?;
                self.members.remove_rows(segment_id, &page.user_ids).await?;
                if let Some(next) = page.next {
                    let job =
                        SegmentTask::Cleanup { segment_id: segment_id.clone(), shard: *shard, cursor: Some(next) };
                    self.events.publish(&[DomainEvent::SegmentTask(job)]).await?;
                }
                Ok(())
            }
            SegmentTask::Sweep => {
                let jobs: Vec<DomainEvent> = catalog
                    .segments
                    .iter()
                    .filter(|s| s.reads.time_relative)
                    .flat_map(|s| {
                        let parts = self.backfill_parts;
                        (0..parts).map(move |part| {
                            DomainEvent::SegmentTask(SegmentTask::Backfill {
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
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Transient(format!("user memberships kept changing over {ATTEMPTS} attempts")).into())
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

    /// One page of a backfill (or sweep): evaluates the segment for each profile of the
    /// page and writes the memberships that differ, each guarded by the profile version
    /// and activity revision it evaluated. A backfill's writes carry no entered/exited
    /// events: it sets up a new rule's members, nothing the users did. A sweep's do: its
    /// users enter or leave because time passed.
    pub async fn backfill_page(
        &self,
        catalog: &Catalog,
        job: &SegmentTask,
        now: DateTime<Utc>,
    ) -> Result<PageOutcome, SegmentError> {
        let SegmentTask::Backfill { segment_id, version, part, parts, cursor, sweep } = job else {
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
        let conflicted: Vec<String> =
            writes.into_iter().zip(applied).filter(|(_, ok)| !*ok).map(|(w, _)| w.user_id).collect();
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
            let job = SegmentTask::Backfill {
                segment_id: segment_id.clone(),
                version: *version,
                part: *part,
                parts: *parts,
                cursor: Some(next),
                sweep: *sweep,
            };
            self.events.publish(&[DomainEvent::SegmentTask(job)]).await?;
        }
        Ok(outcome)
    }
}

/// The writes that move a user's memberships from `current` to `members` over the
/// `affected` segments: one step per `MAX_ROWS_PER_WRITE` rows, each step a consistent
/// state (its set matches its rows). Segments no longer `known` leave silently (their
/// rows are removed by the deletion's cleanup). `publish` puts each step's changes in its
/// outbox; a record's legacy `pending` goes in the first step's, so even a user with
/// nothing else to change gets a write that publishes it.
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
    if entered.is_empty() && exited.is_empty() && forgotten.is_empty() && current.legacy_pending.is_empty() {
        return Vec::new();
    }
    let rows: Vec<(String, bool)> =
        entered.into_iter().map(|s| (s, true)).chain(exited.into_iter().map(|s| (s, false))).collect();
    let mut set = current.segments.clone();
    for gone in &forgotten {
        set.remove(gone);
    }
    let mut legacy = current.legacy_pending.clone();
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
            outbox: std::mem::take(&mut legacy),
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
                write.outbox.push(MembershipChange {
                    segment_id: segment_id.clone(),
                    user_id: user_id.to_owned(),
                    entered: *entered,
                    revision: revision + 1,
                    at: now,
                });
            }
        }
        write.segments = set.clone();
        writes.push(write);
    }
    writes
}
