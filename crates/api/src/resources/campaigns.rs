//! The campaigns API: `POST /v1/campaigns` stores a campaign and sends the dispatcher the
//! first page of each members shard (core's `CampaignService`); `GET /v1/campaigns/{id}`
//! shows its state and counters; `POST /v1/campaigns/{id}/cancel` stops it.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use chrono::{DateTime, Utc};
use herald_core::{
    campaigns::{Campaign, CampaignCounters, CampaignRequest, CampaignState, LocalWindow},
    channel::Channel,
    keys::Scope,
    segments::MEMBER_SHARDS,
};
use serde::Serialize;

use crate::{
    AppState, Routes,
    extract::{Json, json, json_at},
    problem::Problem,
};

pub fn routes() -> Routes {
    Routes::new()
        .post("/v1/campaigns", Scope::CampaignsWrite, post)
        .get("/v1/campaigns/{id}", Scope::CampaignsRead, get)
        .post("/v1/campaigns/{id}/cancel", Scope::CampaignsWrite, cancel)
}

async fn post(State(app): State<AppState>, Json(body): Json<CampaignRequest>) -> Result<Response, Problem> {
    let campaign = app.campaigns.create(body, chrono::Utc::now()).await?;
    let accepted = CampaignAccepted::of(&campaign);
    Ok(json_at(StatusCode::ACCEPTED, &accepted.status_url, &accepted))
}

async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let campaign = app.campaigns.get(&id).await?;
    Ok(json(StatusCode::OK, &CampaignView::from(campaign)))
}

/// Cancels the campaign; its body, if any, is not read.
async fn cancel(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let campaign = app.campaigns.cancel(&id).await?;
    Ok(json(StatusCode::ACCEPTED, &CampaignView::from(campaign)))
}

/// The answer to `POST /v1/campaigns`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CampaignAccepted {
    pub campaign_id: String,
    pub state: CampaignState,
    pub status_url: String,
}

impl CampaignAccepted {
    pub fn of(campaign: &Campaign) -> Self {
        Self {
            campaign_id: campaign.campaign_id.clone(),
            state: campaign.effective_state(),
            status_url: status_url(&campaign.campaign_id),
        }
    }
}

/// Where a campaign is read (campaign ids are of A-Z, a-z, 0-9, _ and -: nothing to escape).
pub fn status_url(campaign_id: &str) -> String {
    format!("/v1/campaigns/{campaign_id}")
}

/// A campaign as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CampaignView {
    pub campaign_id: String,
    pub name: String,
    pub segment_id: String,
    pub template_id: String,
    pub template_version: u64,
    pub channels: Vec<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_window: Option<LocalWindow>,
    /// Done once every queued delivery settled and no member waits for their local time window.
    pub state: CampaignState,
    pub counters: CountersView,
    pub progress: Progress,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CountersView {
    pub targeted: u64,
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub skipped: Skipped,
    pub opened: u64,
    pub clicked: u64,
    /// Members waiting for their local time window (counted in `targeted`, not yet queued
    /// nor skipped); shown only while some wait.
    #[serde(skip_serializing_if = "is_zero")]
    pub deferred: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub opted_out: u64,
    pub rate_limited: u64,
    pub suppressed: u64,
    pub filtered: u64,
    pub no_address: u64,
    pub cancelled: u64,
}

/// How far the dispatcher is: members shards read to their end, of all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub shards_done: u32,
    pub shards: u32,
}

impl From<&CampaignCounters> for CountersView {
    fn from(c: &CampaignCounters) -> Self {
        Self {
            targeted: c.targeted,
            queued: c.queued,
            sent: c.sent,
            failed: c.failed,
            skipped: Skipped {
                opted_out: c.skipped_opted_out,
                rate_limited: c.skipped_rate_limited,
                suppressed: c.skipped_suppressed,
                filtered: c.skipped_filtered,
                no_address: c.skipped_no_address,
                cancelled: c.skipped_cancelled,
            },
            opened: c.opened,
            clicked: c.clicked,
            deferred: c.pending_deferred(),
        }
    }
}

impl From<Campaign> for CampaignView {
    fn from(campaign: Campaign) -> Self {
        Self {
            state: campaign.effective_state(),
            counters: CountersView::from(&campaign.counters),
            progress: Progress { shards_done: campaign.shards_done.min(MEMBER_SHARDS), shards: MEMBER_SHARDS },
            campaign_id: campaign.campaign_id,
            name: campaign.name,
            segment_id: campaign.segment_id,
            template_id: campaign.template_id,
            template_version: campaign.template_version,
            channels: campaign.channels,
            send_at: campaign.send_at,
            filter: campaign.filter,
            local_window: campaign.local_window,
            created_at: campaign.created_at,
            updated_at: campaign.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_view_groups_the_skipped_counters_and_shows_progress() {
        let at: DateTime<Utc> = "2026-11-24T09:00:00Z".parse().unwrap();
        let campaign = Campaign {
            state: CampaignState::Sending,
            shards_done: 16,
            counters: CampaignCounters {
                targeted: 10,
                queued: 8,
                sent: 5,
                skipped_no_address: 2,
                skipped_opted_out: 1,
                ..Default::default()
            },
            ..Campaign::new("c_1", "Spring", "vip", "spring", 3, vec![Channel::Email], at)
        };
        let view = serde_json::to_value(CampaignView::from(campaign)).unwrap();
        assert_eq!(view["state"], "sending");
        assert_eq!(view["progress"], json!({"shards_done": 16, "shards": 16}));
        assert_eq!(
            view["counters"],
            json!({"targeted": 10, "queued": 8, "sent": 5, "failed": 0, "opened": 0, "clicked": 0, "skipped": {
                "opted_out": 1, "rate_limited": 0, "suppressed": 0, "filtered": 0, "no_address": 2, "cancelled": 0}})
        );
        assert!(view.get("send_at").is_none() && view.get("filter").is_none() && view.get("local_window").is_none());
    }

    #[test]
    fn members_waiting_for_their_window_are_shown_and_keep_the_campaign_from_done() {
        let at: DateTime<Utc> = "2026-11-24T09:00:00Z".parse().unwrap();
        let counters = CampaignCounters {
            targeted: 3,
            queued: 1,
            sent: 1,
            deferred: 3,
            deferred_planned: 1,
            ..Default::default()
        };
        let campaign = Campaign {
            local_window: Some(LocalWindow { start: "09:00".into(), end: "17:00".into() }),
            state: CampaignState::Sending,
            shards_done: 16,
            counters,
            ..Campaign::new("c_1", "Spring", "vip", "spring", 3, vec![Channel::Email], at)
        };
        let view = serde_json::to_value(CampaignView::from(campaign)).unwrap();
        assert_eq!((view["state"].as_str(), view["counters"]["deferred"].as_u64()), (Some("sending"), Some(2)));
    }

    #[test]
    fn a_local_window_is_shown() {
        let at: DateTime<Utc> = "2026-11-24T09:00:00Z".parse().unwrap();
        let campaign = Campaign {
            local_window: Some(LocalWindow { start: "22:00".into(), end: "06:00".into() }),
            ..Campaign::new("c_1", "Spring", "vip", "spring", 3, vec![Channel::Email], at)
        };
        let view = serde_json::to_value(CampaignView::from(campaign)).unwrap();
        assert_eq!(view["local_window"], json!({"start": "22:00", "end": "06:00"}));
    }
}
