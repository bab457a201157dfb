//! Campaigns as the API starts and stops them: `create` stores a campaign and sends the
//! dispatcher the first page of each members shard, `get` reads it, `cancel` stops it.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use crate::{
    campaigns::{
        Campaign, CampaignCounters, CampaignRequest, CampaignState, CampaignStore, DispatchPage, DispatchQueue,
        check_campaign_id, new_campaign_id,
    },
    delivery::TemplateStore,
    segments::{MEMBER_SHARDS, SegmentStore, check_segment_id},
    store::StoreError,
    validation::ValidationErrors,
};

/// SQS delays a message 15 minutes at most; the dispatcher waits out a later `send_at`.
pub const MAX_DISPATCH_DELAY: Duration = Duration::from_secs(900);

/// The states a campaign can be cancelled from.
const CANCELLABLE: [CampaignState; 3] = [CampaignState::Scheduled, CampaignState::Dispatching, CampaignState::Sending];

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The request is invalid, or names a segment, template or channel that is not there.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("no such campaign")]
    NotFound,
    /// A campaign of this id exists, made by another request.
    #[error("campaign {0} exists with another request; choose another campaign_id")]
    Exists(String),
    /// A done campaign has nothing left to cancel.
    #[error("the campaign is done: there is nothing to cancel")]
    Done,
    /// A store or the dispatch queue failed: the only error worth retrying (a repeated
    /// create is the same request, and cancelling again changes nothing).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CampaignError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CampaignError::Store(_))
    }
}

pub struct CampaignService {
    pub campaigns: Arc<dyn CampaignStore>,
    pub dispatch: Arc<dyn DispatchQueue>,
    pub templates: Arc<dyn TemplateStore>,
    pub segments: Arc<dyn SegmentStore>,
}

/// Whether `id` could name a template (the rule `PUT /v1/templates/{id}` applies): any
/// other id names none, and is not looked up.
fn is_template_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether a stored campaign is what `request` asks for (a repeated POST).
fn same_request(campaign: &Campaign, request: &CampaignRequest) -> bool {
    campaign.name == request.name
        && campaign.segment_id == request.segment_id
        && campaign.template_id == request.template_id
        && campaign.channels == request.channels
        && campaign.send_at == request.send_at
        && campaign.filter == request.filter
        && campaign.local_window == request.local_window
}

/// How long the first pages wait: until `send_at`, at most the 15 minutes SQS allows.
pub fn dispatch_delay(send_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    match send_at {
        Some(at) if at > now => (at - now).to_std().unwrap_or_default().min(MAX_DISPATCH_DELAY),
        _ => Duration::ZERO,
    }
}

impl CampaignService {
    /// Stores the campaign `request` asks for (or finds the one a repeated request made)
    /// and sends the first page of every members shard to the dispatcher. A request that
    /// names an unknown segment or template, or a channel the template has no content
    /// for, is refused naming the field; a known `campaign_id` with another request is
    /// `Exists`.
    pub async fn create(&self, request: CampaignRequest, now: DateTime<Utc>) -> Result<Campaign, CampaignError> {
        request.validate()?;
        let mut errors = ValidationErrors::default();
        let segment = match check_segment_id(&request.segment_id) {
            Ok(()) => self.segments.get(&request.segment_id).await?,
            Err(_) => None,
        };
        if segment.is_none() {
            errors.add("segment_id", "names no segment");
        }
        let template = match is_template_id(&request.template_id) {
            true => self.templates.get(&request.template_id, None).await?,
            false => None,
        };
        match &template {
            None => errors.add("template_id", "names no template"),
            Some(template) => {
                let missing: Vec<&str> = request
                    .channels
                    .iter()
                    .filter(|channel| !template.channels.contains_key(channel))
                    .map(|channel| channel.as_str())
                    .collect();
                if !missing.is_empty() {
                    errors.add("channels", format!("the template has no content for {}", missing.join(", ")));
                }
            }
        }
        errors.into_result()?;
        let template = template.expect("checked above");

        let state = match request.send_at {
            Some(at) if at > now => CampaignState::Scheduled,
            _ => CampaignState::Dispatching,
        };
        let campaign = Campaign {
            send_at: request.send_at,
            filter: request.filter.clone(),
            local_window: request.local_window.clone(),
            state,
            ..Campaign::new(
                request.campaign_id.clone().unwrap_or_else(new_campaign_id),
                &request.name,
                &request.segment_id,
                &request.template_id,
                template.version,
                request.channels.clone(),
                now,
            )
        };
        let campaign = if self.campaigns.create(&campaign).await? {
            tracing::info!(campaign_id = %campaign.campaign_id, state = ?campaign.state, "campaign created");
            campaign
        } else {
            // A repeat: the same request gets the stored campaign (its first pages are sent
            // again only if none has been recorded yet, see below); another request is
            // refused.
            let existing = self.campaigns.get(&campaign.campaign_id).await?;
            match existing.filter(|existing| same_request(existing, &request)) {
                Some(existing) => existing,
                None => return Err(CampaignError::Exists(campaign.campaign_id)),
            }
        };
        // Once a page is recorded the fan-out is under way: a repeat must not start it
        // again. Before that, the first request may have stopped before sending its
        // pages, so they are sent (a page delivered twice records nothing twice).
        let under_way = campaign.shards_done > 0 || campaign.counters != CampaignCounters::default();
        if !under_way && !matches!(campaign.state, CampaignState::Cancelled | CampaignState::Done) {
            let pages: Vec<DispatchPage> =
                (0..MEMBER_SHARDS).map(|shard| DispatchPage::first(campaign.campaign_id.clone(), shard)).collect();
            self.dispatch.dispatch(&pages, dispatch_delay(campaign.send_at, now)).await?;
        }
        Ok(campaign)
    }

    /// The campaign `id` names; `NotFound` if none.
    pub async fn get(&self, id: &str) -> Result<Campaign, CampaignError> {
        let campaign = match check_campaign_id(id) {
            Ok(()) => self.campaigns.get(id).await?,
            Err(_) => None,
        };
        campaign.ok_or(CampaignError::NotFound)
    }

    /// Cancels a campaign that is not done: the dispatcher stops at its next page and the
    /// workers skip its queued deliveries. Cancelling again changes nothing.
    pub async fn cancel(&self, id: &str) -> Result<Campaign, CampaignError> {
        let campaign = self.get(id).await?;
        match campaign.effective_state() {
            CampaignState::Cancelled => return Ok(campaign),
            CampaignState::Done => return Err(CampaignError::Done),
            _ => {}
        }
        self.campaigns.set_state(id, CampaignState::Cancelled, &CANCELLABLE).await?;
        // Read again: the state it has now, whether this request or another moved it.
        let campaign = self.get(id).await?;
        match campaign.effective_state() {
            CampaignState::Cancelled => Ok(campaign),
            _ => Err(CampaignError::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::{
        campaigns::{
            LocalWindow,
            memory::{MemoryCampaigns, MemoryQueues},
        },
        channel::Channel,
        delivery::{memory::MemoryTemplates, rendering::ChannelContent},
        segments::{Segment, SegmentKind, SegmentState, memory::MemorySegments},
    };

    struct Fixture {
        service: CampaignService,
        campaigns: Arc<MemoryCampaigns>,
        queues: Arc<MemoryQueues>,
    }

    async fn fixture() -> Fixture {
        let campaigns = Arc::new(MemoryCampaigns::default());
        let queues = Arc::new(MemoryQueues::default());
        let templates = Arc::new(MemoryTemplates::default());
        let content = ChannelContent { subject: Some("Hi".into()), body: "Hello".into(), html: None };
        templates.save_new_version("spring", &BTreeMap::from([(Channel::Email, content)])).await.unwrap();
        let segments = Arc::new(MemorySegments::default());
        let at = Utc::now();
        let segment = Segment {
            segment_id: "vip".into(),
            name: "VIP".into(),
            description: None,
            kind: SegmentKind::Static,
            rule: None,
            reads: Default::default(),
            version: 1,
            state: SegmentState::Ready,
            backfill: Default::default(),
            created_at: at,
            updated_at: at,
        };
        segments.create(&segment).await.unwrap();
        let service = CampaignService { campaigns: campaigns.clone(), dispatch: queues.clone(), templates, segments };
        Fixture { service, campaigns, queues }
    }

    fn request(body: serde_json::Value) -> CampaignRequest {
        serde_json::from_value(body).unwrap()
    }

    fn spring() -> serde_json::Value {
        json!({"campaign_id": "c_spring", "name": "Spring", "segment_id": "vip", "template_id": "spring", "channels": ["email"]})
    }

    /// The fields an `Invalid` error names; panics on any other error.
    fn fields(error: &CampaignError) -> Vec<&str> {
        match error {
            CampaignError::Invalid(errors) => errors.0.iter().map(|e| e.field.as_str()).collect(),
            other => panic!("not an invalid request: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_campaign_is_stored_and_its_sixteen_first_pages_sent_now() {
        let f = fixture().await;
        let now = Utc::now();
        let campaign = f.service.create(request(spring()), now).await.unwrap();
        assert_eq!((campaign.state, campaign.template_version), (CampaignState::Dispatching, 1));
        assert_eq!(f.campaigns.campaigns.lock().unwrap()["c_spring"], campaign);
        let pages = f.queues.pages.lock().unwrap().clone();
        assert_eq!(pages.len(), 16);
        for (shard, (page, delay)) in pages.iter().enumerate() {
            assert_eq!(page, &DispatchPage::first("c_spring", shard as u32));
            assert_eq!(*delay, Duration::ZERO);
        }
    }

    #[tokio::test]
    async fn a_later_campaign_is_scheduled_and_its_pages_delayed_at_most_fifteen_minutes() {
        let f = fixture().await;
        let now = Utc::now();
        for (minutes, delay) in [(5, 300), (600, 900)] {
            let mut body = spring();
            body["campaign_id"] = json!(format!("c_{minutes}"));
            body["send_at"] = json!(now + chrono::Duration::minutes(minutes));
            let campaign = f.service.create(request(body), now).await.unwrap();
            assert_eq!(campaign.state, CampaignState::Scheduled);
            let pages = std::mem::take(&mut *f.queues.pages.lock().unwrap());
            assert!(pages.iter().all(|(_, d)| *d == Duration::from_secs(delay)), "{pages:?}");
        }
    }

    #[tokio::test]
    async fn unknown_segments_templates_and_channels_are_named() {
        let f = fixture().await;
        let mut body = spring();
        body["segment_id"] = json!("nope");
        body["template_id"] = json!("nope");
        let error = f.service.create(request(body), Utc::now()).await.unwrap_err();
        assert_eq!(fields(&error), vec!["segment_id", "template_id"]);
        let mut body = spring();
        body["segment_id"] = json!("not a segment id!");
        body["template_id"] = json!("Not A Template Id");
        body["channels"] = json!(["email"]);
        let error = f.service.create(request(body), Utc::now()).await.unwrap_err();
        assert_eq!(fields(&error), vec!["segment_id", "template_id"]);
        let mut body = spring();
        body["channels"] = json!(["email", "sms"]);
        let error = f.service.create(request(body), Utc::now()).await.unwrap_err();
        assert_eq!(fields(&error), vec!["channels"]);
        let CampaignError::Invalid(errors) = &error else { unreachable!("fields checked the kind") };
        assert!(errors.0[0].message.contains("sms"), "{:?}", errors.0);
        assert!(f.campaigns.campaigns.lock().unwrap().is_empty());
        assert!(f.queues.pages.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_bad_request_is_refused_before_any_lookup() {
        let f = fixture().await;
        let mut body = spring();
        body["filter"] = json!({"attribute": "plan"});
        body["channels"] = json!([]);
        let error = f.service.create(request(body), Utc::now()).await.unwrap_err();
        assert!(!error.is_retryable());
        let fields = fields(&error);
        assert!(fields.contains(&"channels") && fields.iter().any(|f| f.starts_with("filter")), "{fields:?}");
    }

    #[tokio::test]
    async fn a_repeated_request_sends_its_pages_again_and_another_request_conflicts() {
        let f = fixture().await;
        let first = f.service.create(request(spring()), Utc::now()).await.unwrap();
        let again = f.service.create(request(spring()), Utc::now()).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(f.queues.pages.lock().unwrap().len(), 32);
        let mut other = spring();
        other["name"] = json!("Autumn");
        let error = f.service.create(request(other), Utc::now()).await.unwrap_err();
        assert!(matches!(&error, CampaignError::Exists(id) if id == "c_spring"), "{error:?}");
        assert_eq!(f.queues.pages.lock().unwrap().len(), 32);
    }

    #[tokio::test]
    async fn a_repeated_request_never_starts_a_fan_out_under_way_again() {
        let f = fixture().await;
        f.service.create(request(spring()), Utc::now()).await.unwrap();
        let counts = CampaignCounters { targeted: 3, queued: 3, ..Default::default() };
        f.campaigns.record_page("c_spring", 0, None, Some("u3"), &counts, "m1").await.unwrap();
        f.service.create(request(spring()), Utc::now()).await.unwrap();
        assert_eq!(f.queues.pages.lock().unwrap().len(), 16, "the first pages were sent again");
    }

    #[tokio::test]
    async fn cancelling_stops_a_campaign_once_and_a_done_one_not_at_all() {
        let f = fixture().await;
        f.service.create(request(spring()), Utc::now()).await.unwrap();
        assert_eq!(f.service.cancel("c_spring").await.unwrap().state, CampaignState::Cancelled);
        assert_eq!(f.service.cancel("c_spring").await.unwrap().state, CampaignState::Cancelled);
        assert!(matches!(f.service.cancel("c_unknown").await.unwrap_err(), CampaignError::NotFound));
        assert!(matches!(f.service.cancel("not/an id").await.unwrap_err(), CampaignError::NotFound));

        let mut body = spring();
        body["campaign_id"] = json!("c_done");
        f.service.create(request(body), Utc::now()).await.unwrap();
        {
            let mut campaigns = f.campaigns.campaigns.lock().unwrap();
            let campaign = campaigns.get_mut("c_done").unwrap();
            campaign.state = CampaignState::Sending;
            campaign.counters.queued = 2;
            campaign.counters.sent = 2;
        }
        assert_eq!(f.service.get("c_done").await.unwrap().effective_state(), CampaignState::Done);
        assert!(matches!(f.service.cancel("c_done").await.unwrap_err(), CampaignError::Done));
        assert_eq!(f.campaigns.campaigns.lock().unwrap()["c_done"].state, CampaignState::Sending);
    }

    #[tokio::test]
    async fn a_local_window_is_stored_and_part_of_a_repeated_request() {
        let f = fixture().await;
        let mut body = spring();
        body["local_window"] = json!({"start": "22:00", "end": "06:00"});
        let campaign = f.service.create(request(body.clone()), Utc::now()).await.unwrap();
        let window = LocalWindow { start: "22:00".into(), end: "06:00".into() };
        assert_eq!(campaign.local_window.as_ref(), Some(&window));
        assert_eq!(f.campaigns.campaigns.lock().unwrap()["c_spring"].local_window.as_ref(), Some(&window));
        assert!(f.service.create(request(body.clone()), Utc::now()).await.is_ok());
        body["local_window"] = json!({"start": "21:00", "end": "06:00"});
        assert!(matches!(f.service.create(request(body), Utc::now()).await.unwrap_err(), CampaignError::Exists(_)));
    }

    #[tokio::test]
    async fn a_bad_local_window_is_refused_naming_its_times() {
        let f = fixture().await;
        for (window, expected) in [
            (json!({"start": "25:00", "end": "9:00"}), vec!["local_window.start", "local_window.end"]),
            (json!({"start": "09:00", "end": "09:00"}), vec!["local_window.end"]),
            (json!({"start": "09:60", "end": "10:00"}), vec!["local_window.start"]),
        ] {
            let mut body = spring();
            body["local_window"] = window;
            let error = f.service.create(request(body), Utc::now()).await.unwrap_err();
            assert_eq!(fields(&error), expected);
        }
        assert!(f.campaigns.campaigns.lock().unwrap().is_empty());
        assert!(
            serde_json::from_value::<CampaignRequest>({
                let mut body = spring();
                body["local_window"] = json!({"start": "09:00", "end": "17:00", "zone": "UTC"});
                body
            })
            .is_err()
        );
    }

    #[test]
    fn a_failing_store_is_the_one_retryable_error() {
        let error = CampaignError::from(StoreError::Transient("down".into()));
        assert!(error.is_retryable());
        for error in [CampaignError::NotFound, CampaignError::Done, CampaignError::Exists("c".into())] {
            assert!(!error.is_retryable(), "{error:?}");
        }
    }
}
