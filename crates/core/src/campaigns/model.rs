//! Campaigns: one template sent to a segment's members, fanned out by the dispatcher a
//! page of a members shard at a time, straight onto the channel queues.

use std::collections::BTreeSet;

use chrono::{DateTime, Days, LocalResult, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::{channel::Channel, segments::rules::Rule, validation::ValidationErrors};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Waiting for its `send_at`.
    Scheduled,
    /// The dispatcher is reading the segment and queueing deliveries.
    Dispatching,
    /// Every recipient is queued; workers are sending.
    Sending,
    /// Every queued delivery settled.
    Done,
    Cancelled,
}

/// What happened to a campaign's recipients, added up. Updated in aggregate: a dispatched
/// page adds its own counts once, a worker adds a message's outcomes in one write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignCounters {
    /// Members read from the segment (each with every channel of the campaign).
    pub targeted: u64,
    /// Deliveries put on a channel queue.
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub skipped_opted_out: u64,
    pub skipped_rate_limited: u64,
    pub skipped_suppressed: u64,
    /// Not matching the campaign's send-time filter.
    pub skipped_filtered: u64,
    /// No address for the channel (no email, no phone, no device).
    pub skipped_no_address: u64,
    /// Queued, then not sent because the campaign was cancelled.
    pub skipped_cancelled: u64,
    pub opened: u64,
    pub clicked: u64,
    /// Members put off to their local time window, in deferred batches (a member put off
    /// twice counts twice). Not a final state: see `deferred_planned`.
    #[serde(default)]
    pub deferred: u64,
    /// Members of deferred batches the dispatcher planned (queued, skipped or put off
    /// again). `deferred - deferred_planned` members are waiting for their window.
    #[serde(default)]
    pub deferred_planned: u64,
}

impl CampaignCounters {
    /// Deliveries that reached an end: sent, failed or skipped by a worker.
    pub fn settled(&self) -> u64 {
        self.sent
            + self.failed
            + self.skipped_opted_out
            + self.skipped_rate_limited
            + self.skipped_suppressed
            + self.skipped_cancelled
    }

    /// The counters a worker adds as it settles deliveries (what a recount of the
    /// deliveries gives back): (name, value) pairs.
    pub fn outcomes(&self) -> [(&'static str, u64); 5] {
        [
            ("sent", self.sent),
            ("failed", self.failed),
            ("skipped_opted_out", self.skipped_opted_out),
            ("skipped_rate_limited", self.skipped_rate_limited),
            ("skipped_suppressed", self.skipped_suppressed),
        ]
    }

    /// These counters with the outcome counters of `outcomes` in place of their own.
    pub fn with_outcomes(&self, outcomes: &CampaignCounters) -> CampaignCounters {
        CampaignCounters {
            sent: outcomes.sent,
            failed: outcomes.failed,
            skipped_opted_out: outcomes.skipped_opted_out,
            skipped_rate_limited: outcomes.skipped_rate_limited,
            skipped_suppressed: outcomes.skipped_suppressed,
            ..self.clone()
        }
    }

    /// Members waiting in deferred batches for their local time window.
    pub fn pending_deferred(&self) -> u64 {
        self.deferred.saturating_sub(self.deferred_planned)
    }

    /// The counters as (name, value) pairs, for stores that add them up field by field.
    pub fn fields(&self) -> [(&'static str, u64); 14] {
        [
            ("targeted", self.targeted),
            ("queued", self.queued),
            ("sent", self.sent),
            ("failed", self.failed),
            ("skipped_opted_out", self.skipped_opted_out),
            ("skipped_rate_limited", self.skipped_rate_limited),
            ("skipped_suppressed", self.skipped_suppressed),
            ("skipped_filtered", self.skipped_filtered),
            ("skipped_no_address", self.skipped_no_address),
            ("skipped_cancelled", self.skipped_cancelled),
            ("opened", self.opened),
            ("clicked", self.clicked),
            ("deferred", self.deferred),
            ("deferred_planned", self.deferred_planned),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub campaign_id: String,
    pub name: String,
    pub segment_id: String,
    pub template_id: String,
    /// The template version current when the campaign was created: every recipient gets
    /// the same content even if the template changes meanwhile.
    pub template_version: u64,
    pub channels: Vec<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<DateTime<Utc>>,
    /// A segment rule evaluated per recipient at send time (validated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
    /// Sends each recipient only within this window of their local time (validated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_window: Option<LocalWindow>,
    pub state: CampaignState,
    /// Members shards whose every page was dispatched.
    #[serde(default)]
    pub shards_done: u32,
    #[serde(default)]
    pub counters: CampaignCounters,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Campaign {
    /// A campaign created `now`, to be dispatched at once: no send time, filter or local
    /// window, nothing counted yet. Set other fields with struct update syntax.
    pub fn new(
        campaign_id: impl Into<String>,
        name: impl Into<String>,
        segment_id: impl Into<String>,
        template_id: impl Into<String>,
        template_version: u64,
        channels: Vec<Channel>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            campaign_id: campaign_id.into(),
            name: name.into(),
            segment_id: segment_id.into(),
            template_id: template_id.into(),
            template_version,
            channels,
            send_at: None,
            filter: None,
            local_window: None,
            state: CampaignState::Dispatching,
            shards_done: 0,
            counters: CampaignCounters::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The state to show: a campaign whose every queued delivery settled, and that has no
    /// member waiting for their local time window, is done.
    pub fn effective_state(&self) -> CampaignState {
        match self.state {
            CampaignState::Sending
                if self.counters.settled() >= self.counters.queued && self.counters.pending_deferred() == 0 =>
            {
                CampaignState::Done
            }
            state => state,
        }
    }
}

/// The body of `POST /v1/campaigns`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    /// Optional: a retried POST with the same id creates nothing twice.
    #[serde(default)]
    pub campaign_id: Option<String>,
    pub name: String,
    pub segment_id: String,
    pub template_id: String,
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    #[serde(default)]
    pub local_window: Option<LocalWindow>,
}

pub const MAX_NAME_CHARS: usize = 200;

impl CampaignRequest {
    /// Every fault of the request itself (not whether its segment and template exist).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if let Some(id) = &self.campaign_id {
            errors.check("campaign_id", check_campaign_id(id));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            errors.add("name", format!("must be 1 to {MAX_NAME_CHARS} characters"));
        }
        if self.segment_id.is_empty() {
            errors.add("segment_id", "must not be empty");
        }
        if self.template_id.is_empty() {
            errors.add("template_id", "must not be empty");
        }
        let distinct: BTreeSet<_> = self.channels.iter().collect();
        if self.channels.is_empty() || distinct.len() != self.channels.len() {
            errors.add("channels", "must name at least one channel, each once");
        }
        if let Some(filter) = &self.filter
            && let Err(faults) = Rule::parse(filter)
        {
            for fault in faults.0 {
                errors.add(fault.field.replacen("rule", "filter", 1), fault.message);
            }
        }
        if let Some(window) = &self.local_window {
            errors.check("local_window.start", parse_hhmm(&window.start).map(drop));
            errors.check("local_window.end", parse_hhmm(&window.end).map(drop));
            if window.start == window.end {
                errors.add("local_window.end", "must differ from local_window.start");
            }
        }
        errors.into_result()
    }
}

/// Campaign ids: `c_` and 1 to 64 characters of `A-Za-z0-9_-` after it, or any such id the
/// caller chose.
pub fn check_campaign_id(id: &str) -> Result<(), String> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Ok(())
    } else {
        Err("must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -".into())
    }
}

pub fn new_campaign_id() -> String {
    format!("c_{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// A window of each recipient's local time, `{"start": "HH:MM", "end": "HH:MM"}`: from
/// `start` (included) to `end` (excluded), wrapping midnight when `end` is earlier (e.g.
/// 22:00 to 06:00). Local time is the profile's `timezone`, UTC when it has none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalWindow {
    pub start: String,
    pub end: String,
}

impl LocalWindow {
    /// The window's times; None if either is not `HH:MM` (a validated window always parses).
    pub fn times(&self) -> Option<WindowTimes> {
        Some(WindowTimes { start: parse_hhmm(&self.start).ok()?, end: parse_hhmm(&self.end).ok()? })
    }
}

/// A parsed [`LocalWindow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowTimes {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl WindowTimes {
    /// Whether a local time of day is within the window.
    pub fn contains(&self, time: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// None if `now` is within the window in `tz`; else when the window next starts there.
    /// A start skipped by a daylight-saving change is taken as the first local time after
    /// the gap; a start that happens twice, as the first one.
    pub fn next_start(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz).naive_local();
        if self.contains(local.time()) {
            return None;
        }
        let mut at = local.date().and_time(self.start);
        if at <= local {
            at = at + Days::new(1);
        }
        // Gaps last an hour at most (30 minutes in a few zones): step through them.
        for _ in 0..=8 {
            match tz.from_local_datetime(&at) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return Some(t.with_timezone(&Utc)),
                LocalResult::None => at += chrono::Duration::minutes(15),
            }
        }
        Some(now + chrono::Duration::days(1))
    }
}

/// A time of day written `HH:MM` (00:00 to 23:59).
pub fn parse_hhmm(text: &str) -> Result<NaiveTime, String> {
    let fault = || "must be a time HH:MM, from 00:00 to 23:59".to_owned();
    let b = text.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return Err(fault());
    }
    let hours = u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0');
    let minutes = u32::from(b[3] - b'0') * 10 + u32::from(b[4] - b'0');
    NaiveTime::from_hms_opt(hours, minutes, 0).filter(|_| minutes < 60).ok_or_else(fault)
}

/// A member's time zone: the profile's, UTC when it has none (or an unknown one).
pub fn time_zone_of(timezone: Option<&str>) -> Tz {
    timezone.and_then(|name| name.parse().ok()).unwrap_or(Tz::UTC)
}

/// Users per deferred batch: 1,000 ids of at most 128 characters stay well under the
/// 256 KiB of an SQS message.
pub const MAX_DEFERRED_USERS: usize = 1000;

/// The dispatcher's unit of work: the page of a members shard after `cursor`, or a
/// deferred batch: `users` put off until `not_before`, the start of their local time window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchPage {
    pub campaign_id: String,
    /// The shard the page reads; for a deferred batch, the shard its users came from.
    pub shard: u32,
    #[serde(default)]
    pub cursor: Option<String>,
    /// A deferred batch's users (at most [`MAX_DEFERRED_USERS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Set on a deferred batch only: when its users' window starts. A deferred batch is not
    /// a page of its shard: it records no cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

impl DispatchPage {
    /// The first page of a shard.
    pub fn first(campaign_id: impl Into<String>, shard: u32) -> Self {
        Self { campaign_id: campaign_id.into(), shard, cursor: None, users: Vec::new(), not_before: None }
    }

    /// A deferred batch of `users`, due at `not_before`.
    pub fn deferred(campaign_id: impl Into<String>, shard: u32, users: Vec<String>, not_before: DateTime<Utc>) -> Self {
        Self { campaign_id: campaign_id.into(), shard, cursor: None, users, not_before: Some(not_before) }
    }

    pub fn is_deferred_batch(&self) -> bool {
        self.not_before.is_some()
    }
}

/// Where a members shard's fan-out stands: the next page to record, and the last page
/// recorded, by which message (see `Dispatcher::run`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardProgress {
    pub next: ShardCursor,
    pub last: Option<PageRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ShardCursor {
    /// No page recorded yet: the next is the shard's first.
    #[default]
    Start,
    /// The cursor of the next page to record.
    At(String),
    /// The shard's last page is recorded.
    Done,
}

/// A shard's last recorded page: the cursor it read from (None: the shard's start), the id
/// of the queue message that recorded it, and whether that message then sent the next
/// page (or, for a shard's last page, did what the campaign's last page does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRecord {
    pub cursor: Option<String>,
    pub message_id: String,
    pub followed_up: bool,
}

/// What a page message finds of its page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Not recorded yet: the message is to dispatch it.
    ToRecord,
    /// Recorded by this very message, delivered again: only its follow-up may be left.
    RecordedByThis { followed_up: bool },
    /// Recorded by another copy of the page (or the shard is past it): nothing to do.
    RecordedElsewhere,
}

impl ShardProgress {
    /// What the page that reads from `cursor`, in the message `message_id`, finds.
    pub fn page(&self, cursor: Option<&str>, message_id: &str) -> PageState {
        let to_record = match &self.next {
            ShardCursor::Start => cursor.is_none(),
            ShardCursor::At(next) => cursor == Some(next.as_str()),
            ShardCursor::Done => false,
        };
        if to_record {
            return PageState::ToRecord;
        }
        match &self.last {
            Some(last) if last.cursor.as_deref() == cursor && last.message_id == message_id => {
                PageState::RecordedByThis { followed_up: last.followed_up }
            }
            _ => PageState::RecordedElsewhere,
        }
    }

    /// The cursor the shard's next page reads from; None when the shard is done (or not
    /// started).
    pub fn next_cursor(&self) -> Option<&str> {
        match &self.next {
            ShardCursor::At(next) => Some(next),
            ShardCursor::Start | ShardCursor::Done => None,
        }
    }
}

/// The reconciler's message on the dispatch queue: `{"job": "settle", "campaign_id": …}`,
/// sent by the page that ends a campaign's fan-out and again by each check until the
/// campaign is done (see `campaigns::reconciler`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleCheck {
    pub job: SettleJob,
    pub campaign_id: String,
    /// The settled deliveries the campaign's counters showed at the previous check (None:
    /// the first check). Unchanged at the next check, the counts have stalled: recount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<u64>,
    /// A recount under way, continued in a new message when the invocation's time ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recount: Option<Recount>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettleJob {
    Settle,
}

/// How far a recount of a campaign's deliveries got: where to go on from, and what the
/// deliveries before it came to (the workers' outcome counters only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recount {
    /// The last delivery id counted (None: none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    pub deliveries: u64,
    pub counted: CampaignCounters,
}

impl SettleCheck {
    /// The first check of a campaign.
    pub fn first(campaign_id: impl Into<String>) -> Self {
        Self { job: SettleJob::Settle, campaign_id: campaign_id.into(), seen: None, recount: None }
    }
}

/// A message of the dispatch queue: a page (or deferred batch), or a settle check.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DispatchMessage {
    Settle(SettleCheck),
    Page(DispatchPage),
}
