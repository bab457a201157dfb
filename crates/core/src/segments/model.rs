//! Segments: saved rules (dynamic) or saved lists of users (static), and the catalog that
//! tells which segments a change can affect.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    activity::{Activity, ActivityQuery},
    profiles::Profile,
    segments::rules::{Reads, Rule, Subject},
    validation::ValidationErrors,
};

/// Members are spread over this many partitions, so that a million members never make a
/// hot partition and a campaign reads the shards in parallel.
pub const MEMBER_SHARDS: u32 = 16;
pub const MAX_SEGMENTS: usize = 1000;
/// Ids a static segment may be created with in one request.
pub const MAX_STATIC_MEMBERS: usize = 10_000;

/// The members shard of a user: stable across processes and releases.
pub fn shard_of(user_id: &str) -> u32 {
    let digest = Sha256::digest(user_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % MEMBER_SHARDS
}

/// The prefix under which stores keep each user's own records beside segments' rows:
/// the members table keys a segment's rows `<segment_id>#<shard>` and a user's record
/// `user#<user_id>`, so a segment of this id would share the partitions of users `0` to
/// `15` (and deleting it would delete their records). It is no segment id.
pub const USER_RECORDS: &str = "user";

pub fn check_segment_id(id: &str) -> Result<(), String> {
    let valid =
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !valid {
        return Err("segment ids are 1 to 64 characters of A-Z, a-z, 0-9, _ and -".into());
    }
    if id == USER_RECORDS {
        return Err(format!("{USER_RECORDS} is reserved; choose another segment id"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    Dynamic,
    Static,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    /// Its members are being computed over every profile; changes are tracked meanwhile.
    Backfilling,
    Ready,
}

/// Progress of a backfill: the profile scan runs in `parts` parallel parts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    pub parts: u32,
    pub parts_done: u32,
    pub profiles_scanned: u64,
    /// Users whose membership the backfill changed.
    pub entered: u64,
    pub exited: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub segment_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub kind: SegmentKind,
    /// The rule as saved (validated); dynamic segments only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<serde_json::Value>,
    /// What the rule reads (dynamic segments only).
    #[serde(default)]
    pub reads: Reads,
    /// Grows with every change of the rule; a backfill of an older version stops.
    pub version: u64,
    pub state: SegmentState,
    #[serde(default)]
    pub backfill: Backfill,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `POST /v1/segments` and `PUT /v1/segments/{id}` take.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentInput {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub kind: SegmentKind,
    #[serde(default)]
    pub rule: Option<serde_json::Value>,
    /// The members of a static segment.
    #[serde(default)]
    pub user_ids: Option<Vec<String>>,
}

/// A validated input: the parsed rule of a dynamic segment, or the ids of a static one.
pub struct ValidSegmentInput {
    pub name: String,
    pub description: Option<String>,
    pub definition: Definition,
}

pub enum Definition {
    Dynamic { rule: Rule, source: serde_json::Value },
    Static { user_ids: BTreeSet<String> },
}

impl SegmentInput {
    pub fn validate(self) -> Result<ValidSegmentInput, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            errors.add("name", "must be 1 to 200 characters");
        }
        if self.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
            errors.add("description", "may be at most 1000 characters");
        }
        let definition = match (self.kind, self.rule, self.user_ids) {
            (SegmentKind::Dynamic, Some(source), None) => match Rule::parse(&source) {
                Ok(rule) => Some(Definition::Dynamic { rule, source }),
                Err(e) => {
                    errors.0.extend(e.0);
                    None
                }
            },
            (SegmentKind::Dynamic, _, Some(_)) => {
                errors.add("user_ids", "a dynamic segment's members come from its rule");
                None
            }
            (SegmentKind::Dynamic, None, None) => {
                errors.add("rule", "a dynamic segment needs a rule");
                None
            }
            (SegmentKind::Static, Some(_), _) => {
                errors.add("rule", "a static segment has no rule");
                None
            }
            (SegmentKind::Static, None, ids) => {
                let ids = ids.unwrap_or_default();
                if ids.len() > MAX_STATIC_MEMBERS {
                    errors.add("user_ids", format!("may hold at most {MAX_STATIC_MEMBERS} ids per request"));
                }
                for (i, id) in ids.iter().enumerate() {
                    errors.check(format!("user_ids[{i}]"), crate::validation::user_id(id));
                }
                Some(Definition::Static { user_ids: ids.into_iter().collect() })
            }
        };
        errors.into_result()?;
        Ok(ValidSegmentInput {
            name: self.name,
            description: self.description,
            definition: definition.expect("no errors means a definition"),
        })
    }
}

/// A dynamic segment ready to evaluate.
#[derive(Clone, Debug)]
pub struct CompiledSegment {
    pub segment_id: String,
    pub version: u64,
    pub rule: Rule,
    pub reads: Reads,
}

/// The dynamic segments, indexed by what they read.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub revision: u64,
    pub segments: Vec<CompiledSegment>,
    /// Ids of static segments.
    pub static_segments: BTreeSet<String>,
    /// Ids of the dynamic ones (built once: every evaluation reads it).
    dynamic_ids: BTreeSet<String>,
    by_attribute: HashMap<String, Vec<usize>>,
    by_field: HashMap<String, Vec<usize>>,
    by_event: HashMap<String, Vec<usize>>,
}

/// What changed for one user.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Change {
    pub attributes: BTreeSet<String>,
    pub fields: BTreeSet<String>,
    pub events: BTreeSet<String>,
    /// Created, erased, or unknown: every segment is affected.
    pub everything: bool,
}

impl Change {
    pub fn merge(&mut self, other: Change) {
        self.attributes.extend(other.attributes);
        self.fields.extend(other.fields);
        self.events.extend(other.events);
        self.everything |= other.everything;
    }
}

impl Catalog {
    /// Compiles the saved segments; a stored rule that no longer parses is skipped with
    /// an error log rather than stopping every other segment.
    pub fn new(revision: u64, segments: &[Segment]) -> Self {
        let mut catalog = Catalog { revision, ..Default::default() };
        for segment in segments {
            match (segment.kind, &segment.rule) {
                (SegmentKind::Static, _) => {
                    catalog.static_segments.insert(segment.segment_id.clone());
                }
                (SegmentKind::Dynamic, Some(source)) => match Rule::parse(source) {
                    Ok(rule) => catalog.add(CompiledSegment {
                        segment_id: segment.segment_id.clone(),
                        version: segment.version,
                        reads: rule.reads(),
                        rule,
                    }),
                    Err(_) => tracing::error!(segment = %segment.segment_id, "a stored rule does not parse"),
                },
                (SegmentKind::Dynamic, None) => {
                    tracing::error!(segment = %segment.segment_id, "a dynamic segment has no rule")
                }
            }
        }
        catalog
    }

    fn add(&mut self, segment: CompiledSegment) {
        let i = self.segments.len();
        for name in &segment.reads.attributes {
            self.by_attribute.entry(name.clone()).or_default().push(i);
        }
        for field in &segment.reads.fields {
            self.by_field.entry(field.clone()).or_default().push(i);
        }
        for event in &segment.reads.events {
            self.by_event.entry(event.clone()).or_default().push(i);
        }
        self.dynamic_ids.insert(segment.segment_id.clone());
        self.segments.push(segment);
    }

    pub fn dynamic_ids(&self) -> &BTreeSet<String> {
        &self.dynamic_ids
    }

    /// Indexes of the segments `change` can affect, in catalog order.
    pub fn affected(&self, change: &Change) -> Vec<usize> {
        if change.everything {
            return (0..self.segments.len()).collect();
        }
        let mut hit = vec![false; self.segments.len()];
        let lists = [
            (&self.by_attribute, &change.attributes),
            (&self.by_field, &change.fields),
            (&self.by_event, &change.events),
        ];
        for (index, names) in lists {
            for name in names {
                for &i in index.get(name).into_iter().flatten() {
                    hit[i] = true;
                }
            }
        }
        hit.iter().enumerate().filter(|(_, h)| **h).map(|(i, _)| i).collect()
    }

    /// What to load of a user's activity to evaluate `segments`.
    pub fn activity_query(&self, segments: &[usize]) -> ActivityQuery {
        let mut query = ActivityQuery::default();
        for &i in segments {
            let segment = &self.segments[i];
            segment.rule.counters(&mut query.counters);
            query.days = query.days.max(segment.rule.window_days());
            segment.rule.last_seen_events(&mut query.last_seen);
        }
        query
    }

    /// The ids among `segments` that `profile` with `activity` is a member of.
    pub fn evaluate(
        &self,
        segments: &[usize],
        profile: Option<&Profile>,
        activity: &Activity,
        today: NaiveDate,
    ) -> BTreeSet<String> {
        let subject = Subject { profile, activity, today };
        segments
            .iter()
            .map(|&i| &self.segments[i])
            .filter(|s| s.rule.evaluate(&subject))
            .map(|s| s.segment_id.clone())
            .collect()
    }
}
