//! Campaigns: one template sent to a segment's members, fanned out by the dispatcher a
//! page of a members shard at a time, straight onto the channel queues.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ValidationErrors, delivery::Channel, rules::Rule};

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

    /// The counters as (name, value) pairs, for stores that add them up field by field.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
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
    /// The state to show: a campaign whose every queued delivery settled is done.
    pub fn effective_state(&self) -> CampaignState {
        match self.state {
            CampaignState::Sending if self.counters.settled() >= self.counters.queued => CampaignState::Done,
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

/// The dispatcher's unit of work: the page of a members shard after `cursor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchPage {
    pub campaign_id: String,
    pub shard: u32,
    #[serde(default)]
    pub cursor: Option<String>,
}
