//! The service behind the segment routes: saving segments.

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    events::{DomainEvent, EventPublisher, SegmentTask},
    segments::{
        Backfill, BackfillProgress, Catalog, Definition, MAX_SEGMENTS, MEMBER_SHARDS, MembershipStore, Segment,
        SegmentInput, SegmentKind, SegmentState, SegmentStore, check_segment_id,
    },
    store::StoreError,
    validation,
    validation::ValidationErrors,
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
    Publish(#[from] crate::events::PublishError),
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
                        DomainEvent::SegmentTask(SegmentTask::Backfill {
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
                DomainEvent::SegmentTask(SegmentTask::Cleanup {
                    segment_id: segment_id.to_owned(),
                    shard,
                    cursor: None,
                })
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
