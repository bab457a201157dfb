//! Folding the rows of one user in one file into one patch, so a slice writes each user
//! once.

use crate::profiles::ProfilePatch;
use std::collections::HashMap;

use super::parsing::{Format, ParsedRow};

/// How two rows of one user in one file fold together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// CSV and JSON Lines: each row is an update of the user, applied in file order, so
    /// the last row wins every field it gives and the fields it leaves empty keep what the
    /// earlier rows gave. The same result whether or not a flush falls between the rows.
    LastRowWins,
    /// Pinpoint: each endpoint holds part of the user (one contact, its attributes), so they
    /// add up. See [`UserPatches::add`].
    MergeEndpoints,
}

impl Format {
    /// How rows of one user in this format fold together in [`UserPatches`].
    pub fn combine_rule(self) -> Combine {
        match self {
            Format::Csv | Format::JsonLines => Combine::LastRowWins,
            Format::PinpointExport => Combine::MergeEndpoints,
        }
    }
}

/// The rows read since the last flush, one per user, in the order users first appeared.
/// Bounded by the caller, who writes and [`drain`](UserPatches::drain)s it every so many
/// users.
///
/// A user whose rows straddle a flush is written twice, which gives the same profile: CSV
/// and JSON Lines rows compose in file order, and the importer adds a Pinpoint user's
/// contacts and attribute values to what is stored.
#[derive(Debug)]
pub struct UserPatches {
    rule: Combine,
    rows: Vec<ParsedRow>,
    /// How many rows went into each of `rows`.
    counts: Vec<u64>,
    index: HashMap<String, usize>,
}

impl UserPatches {
    pub fn new(rule: Combine) -> Self {
        Self { rule, rows: Vec::new(), counts: Vec::new(), index: HashMap::new() }
    }

    pub fn for_format(format: Format) -> Self {
        Self::new(format.combine_rule())
    }

    /// Adds a row, folding it into the one already held for its user. The folded row keeps
    /// the line and end of the latest row that went into it.
    pub fn add(&mut self, row: ParsedRow) {
        match self.index.get(&row.user_id) {
            Some(&at) => {
                self.counts[at] += 1;
                self.combine(at, row)
            }
            None => {
                self.index.insert(row.user_id.clone(), self.rows.len());
                self.rows.push(row);
                self.counts.push(1);
            }
        }
    }

    fn combine(&mut self, at: usize, later: ParsedRow) {
        let held = &mut self.rows[at];
        match self.rule {
            Combine::LastRowWins => compose(&mut held.patch, later.patch),
            Combine::MergeEndpoints => merge_endpoint(&mut held.patch, later.patch),
        }
        held.line = later.line;
        held.end_offset = later.end_offset;
        held.next_line = later.next_line;
    }

    /// Users held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Hands over every user held, in the order they first appeared, and empties the
    /// accumulator.
    pub fn drain(&mut self) -> impl Iterator<Item = ParsedRow> + '_ {
        self.drain_counted().map(|(row, _)| row)
    }

    /// As [`drain`](UserPatches::drain), with how many rows went into each user.
    pub fn drain_counted(&mut self) -> impl Iterator<Item = (ParsedRow, u64)> + '_ {
        self.index.clear();
        self.rows.drain(..).zip(self.counts.drain(..))
    }
}

/// One patch with the effect of `held` then `later`: every field `later` gives replaces
/// `held`'s, and its attributes replace `held`'s name by name, as a merge would. (`held`
/// removing all attributes and `later` setting some composes to setting those only.)
fn compose(held: &mut ProfilePatch, later: ProfilePatch) {
    fn given<T>(held: &mut Option<T>, later: Option<T>) {
        if later.is_some() {
            *held = later;
        }
    }
    given(&mut held.email, later.email);
    given(&mut held.phone, later.phone);
    given(&mut held.timezone, later.timezone);
    given(&mut held.device_tokens, later.device_tokens);
    given(&mut held.external_channels, later.external_channels);
    match (&mut held.attributes, later.attributes) {
        (Some(Some(held)), Some(Some(later))) => held.extend(later),
        (held, later) => given(held, later),
    }
}

/// Folds a later endpoint of a user into what the earlier ones gave: email, phone and time
/// zone from the latest endpoint that has them; device tokens, channels and each
/// attribute's values added up (endpoint attributes describe one device; the user has them
/// all).
fn merge_endpoint(held: &mut ProfilePatch, later: ProfilePatch) {
    if later.email.is_some() {
        held.email = later.email;
    }
    if later.phone.is_some() {
        held.phone = later.phone;
    }
    if later.timezone.is_some() {
        held.timezone = later.timezone;
    }
    union_field(&mut held.device_tokens, later.device_tokens);
    union_field(&mut held.external_channels, later.external_channels);
    match (&mut held.attributes, later.attributes) {
        (Some(Some(held)), Some(Some(later))) => {
            for (name, values) in later {
                union_values(held.entry(name).or_insert(None), values);
            }
        }
        (held, Some(later)) => *held = Some(later),
        (_, None) => {}
    }
}

/// A Pinpoint user's patch made to add to `stored` rather than replace: its device tokens,
/// channels and each attribute's values joined with those the profile holds. A user whose
/// endpoints were written in two flushes (or two files) keeps every endpoint, and importing
/// the same export again changes nothing.
pub fn adding_to(stored: &crate::profiles::Profile, patch: ProfilePatch) -> ProfilePatch {
    let mut base = ProfilePatch::default();
    if patch.device_tokens.is_some() {
        base.device_tokens = Some(Some(stored.device_tokens.clone()));
    }
    if patch.external_channels.is_some() {
        base.external_channels = Some(Some(stored.external_channels.clone()));
    }
    if let Some(Some(given)) = &patch.attributes {
        let held = given
            .keys()
            .filter_map(|name| Some((name.clone(), Some(stored.attributes.get(name)?.iter().cloned().collect()))))
            .collect();
        base.attributes = Some(Some(held));
    }
    merge_endpoint(&mut base, patch);
    base
}

/// A patch's list field added up with a later one's; absent in the later patch changes nothing.
fn union_field<T: PartialEq>(held: &mut Option<Option<Vec<T>>>, later: Option<Option<Vec<T>>>) {
    if let Some(later) = later {
        match held {
            Some(held) => union_values(held, later),
            None => *held = Some(later),
        }
    }
}

/// Both lists' items, each once, earlier first; a `null` on either side gives the later.
fn union_values<T: PartialEq>(held: &mut Option<Vec<T>>, later: Option<Vec<T>>) {
    match (held, later) {
        (Some(held), Some(later)) => {
            for item in later {
                if !held.contains(&item) {
                    held.push(item);
                }
            }
        }
        (held, later) => *held = later,
    }
}
