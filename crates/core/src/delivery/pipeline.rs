//! The delivery pipeline every channel worker shares: claim (dedup), preferences,
//! suppression, rate limit, render, send with retries and failover, record the outcome.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use herald_wire::backoff::Backoff;

use crate::{
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelRecipient, Claim, ClaimRequest, ContentRef, DeliveryStatus, DeliveryStore, NewDelivery,
        Outgoing, PreferenceStore, RateLimitClaim, SendError, SendErrorCode, SendFailure, Sender, StatusChange, Target,
        TemplateStore,
        failover::{CircuitBreaker, Provider},
        rate_limit::RateLimit,
        rendering,
        rendering::Rendered,
        tracking::EmailTracking,
    },
    store::StoreError,
    suppressions::SuppressionStore,
};

/// Where tracking links point and the keys that sign them.
#[derive(Clone, Debug)]
pub struct Tracking {
    pub base_url: String,
    pub keys: crate::signing::KeyRing,
}

/// What became of one recipient of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Settled by this attempt: sent, or ended in a status that is not retried.
    Done(DeliveryStatus),
    /// Settled before this attempt (a redelivered or repeated message): nothing was sent
    /// now, and nothing is to be counted again.
    AlreadySettled(DeliveryStatus),
    /// Try again later (the worker puts the recipient back on its queue).
    Retry(String),
}

impl Outcome {
    pub fn is_retry(&self) -> bool {
        matches!(self, Outcome::Retry(_))
    }
}

/// The job that tries `delivery_ids` of `job` again: the same content, only those
/// recipients, one attempt later.
pub fn retry_job(job: &ChannelMessage, delivery_ids: &[&str]) -> ChannelMessage {
    ChannelMessage {
        recipients: job.recipients.iter().filter(|r| delivery_ids.contains(&r.delivery_id.as_str())).cloned().collect(),
        attempt: job.attempt + 1,
        ..job.clone()
    }
}

pub struct Providers {
    pub primary: Arc<dyn Sender>,
    pub secondary: Option<Arc<dyn Sender>>,
}

pub struct Pipeline {
    pub channel: Channel,
    pub deliveries: Arc<dyn DeliveryStore>,
    pub preferences: Arc<dyn PreferenceStore>,
    pub suppressions: Arc<dyn SuppressionStore>,
    pub templates: Arc<dyn TemplateStore>,
    pub providers: Providers,
    pub rate_limit: Option<RateLimit>,
    /// Retries of a throttled or failing provider inside one invocation.
    pub send_retries: Backoff,
    /// How long a claim protects a send in progress; past it, a `pending` delivery is
    /// taken to be an attempt that died mid-send.
    pub claim_lease: Duration,
    /// Open pixel, click redirects and unsubscribe links in email; None sends email as
    /// rendered.
    pub tracking: Option<Tracking>,
    /// At most so many provider sends a second from this invocation (the channel's quota
    /// over the queue's maximum concurrency); None: as fast as the provider answers.
    pub pacing: Option<crate::delivery::pacing::Pacer>,
    breaker: Mutex<CircuitBreaker>,
}

/// What an invocation keeps, past its last send, for recording outcomes and counts.
pub const RECORDING_MARGIN: Duration = Duration::from_secs(2);

/// The least time a send is started with (a provider answers in well under it): with
/// less left before the margin, the send would likely be cut and end uncertain, so the
/// recipient is handed back unsent instead.
pub const MIN_SEND_TIME: Duration = Duration::from_secs(1);

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channel: Channel,
        deliveries: Arc<dyn DeliveryStore>,
        preferences: Arc<dyn PreferenceStore>,
        suppressions: Arc<dyn SuppressionStore>,
        templates: Arc<dyn TemplateStore>,
        providers: Providers,
        rate_limit: Option<RateLimit>,
    ) -> Self {
        Self {
            channel,
            deliveries,
            preferences,
            suppressions,
            templates,
            providers,
            rate_limit,
            send_retries: Backoff::new(Duration::from_millis(50), Duration::from_secs(1), 5),
            claim_lease: Duration::from_secs(30),
            tracking: None,
            pacing: None,
            breaker: Mutex::new(CircuitBreaker::new(5, Duration::from_secs(30))),
        }
    }

    /// Processes every recipient of a job, each on its own: one failure never holds back
    /// the others. The content is rendered once per job, every recipient is screened
    /// (preferences, suppression), then the job is claimed in conditional batch writes
    /// (with the rate-limit counters), and the claimed ones are sent.
    pub async fn process(&self, job: &ChannelMessage) -> Vec<(String, Outcome)> {
        self.process_until(job, None).await
    }

    /// `process` within an invocation that ends at `deadline`: no send starts, and no
    /// provider answer is awaited, past `deadline` less [`RECORDING_MARGIN`]. A send
    /// still unanswered then may have reached the provider: it ends as an uncertain
    /// error, never sent again, so a function stopped by its timeout never leaves a
    /// delivery claimed and unrecorded. A recipient not yet tried is handed back for a
    /// later attempt.
    pub async fn process_until(&self, job: &ChannelMessage, deadline: Option<Instant>) -> Vec<(String, Outcome)> {
        let content = self.render(job).await;
        let mut seen = std::collections::HashSet::new();
        let recipients: Vec<&ChannelRecipient> =
            job.recipients.iter().filter(|r| seen.insert(&r.delivery_id)).collect();
        let screened = self.screen(job, &recipients).await;
        let now = Utc::now();
        let mut requests = Vec::new();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; recipients.len()];
        for (i, (recipient, screen)) in recipients.iter().zip(screened).enumerate() {
            match screen {
                Err(reason) => outcomes[i] = Some(Outcome::Retry(reason)),
                Ok(settle) => requests.push((i, self.claim_request(job, recipient, settle, now))),
            }
        }
        // Unpaced, every claimed send starts at once. Paced, a job is claimed a wave at a
        // time, each when the pacer is ready for it, so that a claim precedes its send by
        // at most a wave's pacing: a function stopped meanwhile leaves the rest unclaimed,
        // for its message's redelivery to send, rather than claimed and never sent.
        let wave = self.pacing.as_ref().map_or(requests.len(), |p| p.sends_per_second()).max(1);
        for requests in requests.chunks(wave) {
            if let Some(pacer) = &self.pacing {
                pacer.free().await;
            }
            if deadline.is_some_and(|d| Instant::now() + RECORDING_MARGIN + MIN_SEND_TIME >= d) {
                for (i, _) in requests {
                    outcomes[*i] = Some(Outcome::Retry("the invocation's deadline came before the claim".into()));
                }
                continue;
            }
            let wanted: Vec<ClaimRequest> = requests.iter().map(|(_, r)| r.clone()).collect();
            let claimed: Vec<(usize, Claim)> = match self.deliveries.claim_all(&wanted, Utc::now()).await {
                Ok(claims) => requests.iter().map(|(i, _)| *i).zip(claims).collect(),
                Err(e) => {
                    for (i, _) in requests {
                        outcomes[*i] = Some(Outcome::Retry(format!("store: {e}")));
                    }
                    continue;
                }
            };
            let delivered = futures_util::future::join_all(claimed.into_iter().map(async |(i, claim)| {
                let outcome = match self.deliver(job, recipients[i], claim, &content, deadline).await {
                    Ok(outcome) => outcome,
                    Err(e) => Outcome::Retry(format!("store: {e}")),
                };
                (i, outcome)
            }))
            .await;
            for (i, outcome) in delivered {
                outcomes[i] = Some(outcome);
            }
        }
        recipients
            .iter()
            .zip(outcomes)
            .map(|(r, o)| (r.delivery_id.clone(), o.expect("every recipient has an outcome")))
            .collect()
    }

    /// Why each recipient must not get this message, if it must not: the user opted out,
    /// or the address is suppressed. Two batched reads for the whole job.
    async fn screen(
        &self,
        job: &ChannelMessage,
        recipients: &[&ChannelRecipient],
    ) -> Vec<Result<Option<StatusChange>, String>> {
        let users: Vec<String> = recipients.iter().filter_map(|r| r.user_id.clone()).collect();
        let addresses: Vec<String> = recipients
            .iter()
            .filter_map(|r| match &r.target {
                Target::Email(address) | Target::Phone(address) => Some(address.clone()),
                _ => None,
            })
            .collect();
        let (preferences, suppressed) = futures_util::future::join(
            self.preferences.get_many(&users),
            self.suppressions.suppressed_among(self.channel, &addresses),
        )
        .await;
        let (preferences, suppressed) = match (preferences, suppressed) {
            (Ok(p), Ok(s)) => (p, s),
            (Err(e), _) | (_, Err(e)) => return recipients.iter().map(|_| Err(format!("store: {e}"))).collect(),
        };
        let now = Utc::now();
        recipients
            .iter()
            .map(|recipient| {
                let opted_out = recipient
                    .user_id
                    .as_ref()
                    .and_then(|u| preferences.get(u))
                    .is_some_and(|p| !p.allows(&job.notification_type, self.channel));
                if opted_out {
                    let reason = format!("opted out of {} on {}", job.notification_type, self.channel);
                    return Ok(Some(StatusChange {
                        status: DeliveryStatus::Unsubscribed,
                        at: now,
                        reason: Some(reason),
                    }));
                }
                if let Target::Email(address) | Target::Phone(address) = &recipient.target
                    && suppressed.contains(address)
                {
                    let reason = "the address is on the suppression list".to_owned();
                    return Ok(Some(StatusChange {
                        status: DeliveryStatus::Suppressed,
                        at: now,
                        reason: Some(reason),
                    }));
                }
                Ok(None)
            })
            .collect()
    }

    fn claim_request(
        &self,
        job: &ChannelMessage,
        recipient: &ChannelRecipient,
        settle: Option<StatusChange>,
        now: chrono::DateTime<Utc>,
    ) -> ClaimRequest {
        let rate_limit = match (self.rate_limit, &recipient.user_id, &settle) {
            (Some(limit), Some(user_id), None) => Some(RateLimitClaim {
                window: limit.window_for(user_id, self.channel, now.timestamp().max(0) as u64),
                limit: limit.limit,
                over: StatusChange {
                    status: DeliveryStatus::RateLimited,
                    at: now,
                    reason: Some(format!("over {} {} messages per {} s", limit.limit, self.channel, limit.window)),
                },
            }),
            _ => None,
        };
        // Nobody recorded a campaign's deliveries before: the claim creates them.
        let create = job.campaign_id.as_ref().map(|_| NewDelivery {
            notification_id: job.notification_id.clone(),
            recipient: recipient.user_id.clone().unwrap_or_else(|| recipient.delivery_id.clone()),
            channel: self.channel,
        });
        ClaimRequest { delivery_id: recipient.delivery_id.clone(), settle, rate_limit, create }
    }

    async fn render(&self, job: &ChannelMessage) -> Result<Rendered, String> {
        let params = serde_json::Value::Object(job.params.clone());
        let content = match &job.content {
            ContentRef::Inline(content) => content.clone(),
            ContentRef::Template { template_id, version } => {
                let template = self
                    .templates
                    .get(template_id, Some(*version))
                    .await
                    .map_err(|e| format!("store: {e}"))?
                    .ok_or_else(|| format!("template {template_id} version {version} does not exist"))?;
                template
                    .channels
                    .get(&self.channel)
                    .cloned()
                    .ok_or_else(|| format!("template {template_id} has no {} content", self.channel))?
            }
        };
        rendering::render(&content, &params).map_err(|e| e.to_string())
    }

    /// The tracking links of an email to `recipient`, when tracking is on.
    fn links<'a>(&'a self, job: &'a ChannelMessage, recipient: &'a ChannelRecipient) -> Option<EmailTracking<'a>> {
        let tracking = self.tracking.as_ref().filter(|_| self.channel == Channel::Email)?;
        Some(EmailTracking {
            base_url: &tracking.base_url,
            keys: &tracking.keys,
            delivery_id: &recipient.delivery_id,
            user_id: recipient.user_id.as_deref(),
            notification_type: &job.notification_type,
        })
    }

    /// The email with its tracking links, when tracking is on.
    fn decorate(&self, job: &ChannelMessage, recipient: &ChannelRecipient, rendered: &Rendered) -> Option<Rendered> {
        let links = self.links(job, recipient)?;
        Some(Rendered {
            subject: rendered.subject.clone(),
            body: links.decorate_text(&rendered.body),
            html: rendered.html.as_deref().map(|h| links.decorate_html(h)),
        })
    }

    /// The URL of the List-Unsubscribe headers: the body's unsubscribe link, for mail
    /// that is not transactional (RFC 8058; bulk senders must give it).
    fn list_unsubscribe(&self, job: &ChannelMessage, recipient: &ChannelRecipient) -> Option<String> {
        if job.transactional {
            return None;
        }
        self.links(job, recipient)?.unsubscribe_link()
    }

    /// Records a final outcome: sent, or an error no later attempt will send again.
    async fn finish(
        &self,
        id: &str,
        status: DeliveryStatus,
        reason: Option<String>,
        provider: Option<(&str, Option<&str>)>,
    ) -> Result<Outcome, StoreError> {
        let change = StatusChange { status, at: Utc::now(), reason };
        self.deliveries.finish(id, &change, provider.map(|p| p.0), provider.and_then(|p| p.1), false).await?;
        Ok(Outcome::Done(status))
    }

    async fn deliver(
        &self,
        job: &ChannelMessage,
        recipient: &ChannelRecipient,
        claim: Claim,
        content: &Result<Rendered, String>,
        deadline: Option<Instant>,
    ) -> Result<Outcome, StoreError> {
        let id = recipient.delivery_id.as_str();
        match claim {
            Claim::Claimed => {}
            Claim::Settled(status) => return Ok(Outcome::Done(status)),
            Claim::AlreadySettled(status) => return Ok(Outcome::AlreadySettled(status)),
            Claim::InFlight { claimed_at } => {
                let age = (Utc::now() - claimed_at).to_std().unwrap_or_default();
                if age < self.claim_lease {
                    return Ok(Outcome::Retry("another attempt is sending this delivery".into()));
                }
                // The attempt that claimed it died between sending and recording: the
                // provider may have the message. Sending again could make a duplicate, so
                // the delivery ends here, visibly, instead.
                let reason = "interrupted during send: the provider may have accepted it; not sent again".to_owned();
                return self.finish(id, DeliveryStatus::Error, Some(reason), None).await;
            }
        }
        let rendered = match content {
            Ok(rendered) => rendered,
            Err(reason) => return self.finish(id, DeliveryStatus::Error, Some(reason.clone()), None).await,
        };
        let decorated = self.decorate(job, recipient, rendered);
        let rendered = decorated.as_ref().unwrap_or(rendered);
        let list_unsubscribe = self.list_unsubscribe(job, recipient);
        let outgoing = Outgoing {
            delivery_id: id,
            user_id: recipient.user_id.as_deref(),
            notification_type: &job.notification_type,
            target: &recipient.target,
            content: rendered,
            list_unsubscribe: list_unsubscribe.as_deref(),
        };
        let mut retry = 0;
        loop {
            let provider = self.breaker.lock().expect("breaker lock").choose(Instant::now());
            let sender = match (provider, &self.providers.secondary) {
                (Provider::Secondary, Some(secondary)) => secondary,
                _ => &self.providers.primary,
            };
            if let Some(pacer) = &self.pacing {
                pacer.ready().await;
            }
            // What is left of the invocation once its outcomes are recorded.
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).saturating_sub(RECORDING_MARGIN));
            if left.is_some_and(|left| left < MIN_SEND_TIME) {
                return self.hand_back(id, "the invocation's deadline came before the send".into()).await;
            }
            let result = match left {
                None => sender.send(&outgoing).await,
                Some(left) => match tokio::time::timeout(left, sender.send(&outgoing)).await {
                    Ok(result) => result,
                    // Webhook receivers drop repeats by Idempotency-Key: a later attempt
                    // is safe. Other providers may have taken it: never sent again.
                    Err(_) if self.channel == Channel::Webhook => {
                        return self.hand_back(id, "no answer before the invocation's deadline".into()).await;
                    }
                    Err(_) => Err(SendError::Uncertain(SendFailure::new(SendErrorCode::Timeout))),
                },
            };
            self.breaker.lock().expect("breaker lock").record(
                provider,
                !matches!(result, Err(SendError::Retryable(_))),
                Instant::now(),
            );
            if let Err(e) = &result {
                // The codes only (a `SendFailure` holds no provider text).
                let kind = match e {
                    SendError::Retryable(_) => "retryable",
                    SendError::Permanent(_) => "permanent",
                    SendError::Uncertain(_) => "uncertain",
                };
                tracing::info!(delivery_id = id, provider = sender.name(), kind, error = %e.failure(), "send failed");
            }
            match result {
                Ok(message_id) => {
                    return self.finish(id, DeliveryStatus::Sent, None, Some((sender.name(), Some(&message_id)))).await;
                }
                // Recorded as Herald's code and the provider's, never its message.
                Err(SendError::Permanent(failure)) => {
                    let reason = failure.reason();
                    return self.finish(id, DeliveryStatus::Error, Some(reason), Some((sender.name(), None))).await;
                }
                // Never sent again, nor to the secondary provider: the one retry layer
                // resends only what surely did not leave (its error is final: the
                // delivery's `final_error`).
                Err(SendError::Uncertain(failure)) => {
                    let reason = failure.reason();
                    return self.finish(id, DeliveryStatus::Error, Some(reason), Some((sender.name(), None))).await;
                }
                Err(SendError::Retryable(failure)) => {
                    // A wait that could outlast the invocation is not started.
                    let in_time = left.is_none_or(|left| self.send_retries.ceiling(retry) < left);
                    if !in_time || retry + 1 >= self.send_retries.max_attempts {
                        return self.hand_back(id, failure.reason()).await;
                    }
                    tokio::time::sleep(self.send_retries.delay(retry)).await;
                    retry += 1;
                }
            }
        }
    }

    /// Records a retryable error (the delivery can be claimed again), and hands the
    /// recipient back to the worker, which queues it again for a later attempt.
    async fn hand_back(&self, id: &str, reason: String) -> Result<Outcome, StoreError> {
        let change = StatusChange { status: DeliveryStatus::Error, at: Utc::now(), reason: Some(reason.clone()) };
        self.deliveries.finish(id, &change, None, None, true).await?;
        Ok(Outcome::Retry(reason))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        campaigns::{CampaignCounters, progress::campaign_counts},
        delivery::{Delivery, TemplateStore, memory::*, preferences::Preferences, rendering::ChannelContent},
        suppressions::{Suppression, SuppressionReason, SuppressionStore, memory::MemorySuppressions},
    };

    struct World {
        deliveries: Arc<MemoryDeliveries>,
        preferences: Arc<MemoryPreferences>,
        suppressions: Arc<MemorySuppressions>,
        templates: Arc<MemoryTemplates>,
        primary: Arc<ScriptedSender>,
        secondary: Arc<ScriptedSender>,
        pipeline: Pipeline,
    }

    fn world(primary: ScriptedSender, rate_limit: Option<RateLimit>) -> World {
        let deliveries = Arc::new(MemoryDeliveries::default());
        let preferences = Arc::new(MemoryPreferences::default());
        let suppressions = Arc::new(MemorySuppressions::default());
        let templates = Arc::new(MemoryTemplates::default());
        let primary = Arc::new(primary);
        let secondary = Arc::new(ScriptedSender::named("secondary"));
        let mut pipeline = Pipeline::new(
            Channel::Email,
            deliveries.clone(),
            preferences.clone(),
            suppressions.clone(),
            templates.clone(),
            Providers { primary: primary.clone(), secondary: Some(secondary.clone()) },
            rate_limit,
        );
        pipeline.send_retries = Backoff::new(Duration::ZERO, Duration::ZERO, 3);
        World { deliveries, preferences, suppressions, templates, primary, secondary, pipeline }
    }

    fn job(world: &World, users: &[&str], body: &str) -> ChannelMessage {
        let mut recipients = Vec::new();
        for user in users {
            let d = Delivery::new("n1", user, Channel::Email, DeliveryStatus::Created, None, Utc::now());
            recipients.push(ChannelRecipient {
                delivery_id: d.delivery_id.clone(),
                user_id: Some((*user).to_owned()),
                target: Target::Email(format!("{user}@example.com")),
            });
            world.deliveries.items.lock().unwrap().insert(d.delivery_id.clone(), (d, None));
        }
        ChannelMessage {
            notification_id: "n1".into(),
            notification_type: "payment_due".into(),
            channel: Channel::Email,
            content: ContentRef::Inline(ChannelContent { subject: Some("Hi".into()), body: body.into(), html: None }),
            params: serde_json::json!({"amount": "12"}).as_object().unwrap().clone(),
            recipients,
            campaign_id: None,
            attempt: 0,
            transactional: false,
        }
    }

    /// A campaign's job: no delivery is recorded before the worker claims it.
    fn campaign_job(users: &[&str]) -> ChannelMessage {
        let recipients = users
            .iter()
            .map(|user| ChannelRecipient {
                delivery_id: crate::delivery::delivery_id("c1", user, Channel::Email),
                user_id: Some((*user).to_owned()),
                target: Target::Email(format!("{user}@example.com")),
            })
            .collect();
        ChannelMessage {
            notification_id: "c1".into(),
            notification_type: "spring_sale".into(),
            channel: Channel::Email,
            content: ContentRef::Inline(ChannelContent { subject: Some("Hi".into()), body: "Sale".into(), html: None }),
            params: Default::default(),
            recipients,
            campaign_id: Some("c1".into()),
            attempt: 0,
            transactional: false,
        }
    }

    async fn claim_one(w: &World, id: &str, at: chrono::DateTime<Utc>) {
        let request = ClaimRequest { delivery_id: id.into(), settle: None, rate_limit: None, create: None };
        assert_eq!(w.deliveries.claim_all(&[request], at).await.unwrap(), [Claim::Claimed]);
    }

    fn statuses(outcomes: &[(String, Outcome)]) -> Vec<Outcome> {
        outcomes.iter().map(|(_, o)| o.clone()).collect()
    }

    #[tokio::test]
    async fn a_job_is_sent_once_to_each_recipient_and_recorded() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = job(&w, &["a", "b"], "Pay {{ amount }}");
        let outcomes = w.pipeline.process(&job).await;
        assert_eq!(statuses(&outcomes), [Outcome::Done(DeliveryStatus::Sent), Outcome::Done(DeliveryStatus::Sent)]);
        let d = w.deliveries.delivery(&job.recipients[0].delivery_id).unwrap();
        assert_eq!(d.provider.as_deref(), Some("ses"));
        assert!(d.provider_message_id.is_some());
        let history: Vec<_> = d.history.iter().map(|c| c.status).collect();
        assert_eq!(history, [DeliveryStatus::Created, DeliveryStatus::Pending, DeliveryStatus::Sent]);
    }

    #[tokio::test]
    async fn a_redelivered_job_sends_nothing_twice() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = job(&w, &["a"], "x");
        w.pipeline.process(&job).await;
        let again = w.pipeline.process(&job).await;
        assert_eq!(statuses(&again), [Outcome::AlreadySettled(DeliveryStatus::Sent)]);
        assert_eq!(w.primary.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_campaign_claim_creates_the_delivery_listed_under_the_campaign() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = campaign_job(&["a", "b"]);
        let outcomes = w.pipeline.process(&job).await;
        assert_eq!(statuses(&outcomes), [Outcome::Done(DeliveryStatus::Sent), Outcome::Done(DeliveryStatus::Sent)]);
        let d = w.deliveries.delivery(&job.recipients[0].delivery_id).unwrap();
        assert_eq!((d.notification_id.as_str(), d.recipient.as_str(), d.channel), ("c1", "a", Channel::Email));
        let history: Vec<_> = d.history.iter().map(|c| c.status).collect();
        assert_eq!(history, [DeliveryStatus::Created, DeliveryStatus::Pending, DeliveryStatus::Sent]);
        assert_eq!(w.deliveries.list("c1").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_second_claim_of_a_sent_campaign_delivery_sends_nothing_and_counts_nothing() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = campaign_job(&["a", "b"]);
        let first = w.pipeline.process(&job).await;
        let again = w.pipeline.process(&job).await;
        assert_eq!(w.primary.sent().len(), 2);
        let sent = DeliveryStatus::Sent;
        assert_eq!(statuses(&again), [Outcome::AlreadySettled(sent), Outcome::AlreadySettled(sent)]);
        assert_eq!(campaign_counts(first.iter().map(|(_, o)| o)).sent, 2);
        assert_eq!(campaign_counts(again.iter().map(|(_, o)| o)), CampaignCounters::default());
    }

    #[tokio::test]
    async fn an_opted_out_campaign_recipient_is_recorded_unsubscribed() {
        let w = world(ScriptedSender::named("ses"), None);
        let mut prefs = Preferences::default();
        prefs.opt_out("spring_sale", Channel::Email);
        crate::delivery::preferences::update(&*w.preferences, "a", |p| *p = prefs.clone()).await.unwrap();
        let job = campaign_job(&["a"]);
        let outcomes = w.pipeline.process(&job).await;
        assert_eq!(statuses(&outcomes), [Outcome::Done(DeliveryStatus::Unsubscribed)]);
        assert_eq!(w.deliveries.status(&job.recipients[0].delivery_id), Some(DeliveryStatus::Unsubscribed));
        assert_eq!(campaign_counts(outcomes.iter().map(|(_, o)| o)).skipped_opted_out, 1);
        assert!(w.primary.sent().is_empty());
    }

    #[tokio::test]
    async fn a_send_that_may_have_reached_the_provider_is_never_sent_again() {
        let primary =
            ScriptedSender::named("ses").then(Err(SendError::Uncertain(SendFailure::new(SendErrorCode::Timeout))));
        let w = world(primary, None);
        let job = job(&w, &["a"], "Hello");
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Error)]);
        assert_eq!(w.primary.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(w.secondary.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        let delivery = w.deliveries.get(&job.recipients[0].delivery_id).await.unwrap().unwrap();
        let reason = delivery.history.last().unwrap().reason.clone().unwrap_or_default();
        assert_eq!(reason, "timeout");
        // A redelivered message finds the delivery settled and sends nothing.
        assert!(matches!(statuses(&w.pipeline.process(&job).await)[0], Outcome::AlreadySettled(_)));
        assert_eq!(w.primary.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_campaign_send_is_claimed_again_by_its_retry() {
        let throttled = || Err(SendError::Retryable(SendFailure::new(SendErrorCode::Throttled)));
        let primary = ScriptedSender::named("ses").then(throttled()).then(throttled()).then(throttled());
        let w = world(primary, None);
        let job = campaign_job(&["a"]);
        assert!(statuses(&w.pipeline.process(&job).await)[0].is_retry());
        let retry = retry_job(&job, &[job.recipients[0].delivery_id.as_str()]);
        assert_eq!(statuses(&w.pipeline.process(&retry).await), [Outcome::Done(DeliveryStatus::Sent)]);
        assert_eq!(w.primary.sent().len(), 1);
    }

    #[test]
    fn a_retry_job_carries_only_its_recipients_one_attempt_later() {
        let job = campaign_job(&["a", "b", "c"]);
        let retry = retry_job(&job, &[job.recipients[1].delivery_id.as_str()]);
        assert_eq!(retry.recipients, [job.recipients[1].clone()]);
        assert_eq!(retry.attempt, 1);
        assert_eq!((retry.content, retry.campaign_id), (job.content, job.campaign_id));
    }

    #[tokio::test]
    async fn a_delivery_claimed_by_a_live_attempt_is_retried_later_not_sent() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = job(&w, &["a"], "x");
        claim_one(&w, &job.recipients[0].delivery_id, Utc::now()).await;
        assert!(matches!(statuses(&w.pipeline.process(&job).await)[0], Outcome::Retry(_)));
        assert!(w.primary.sent().is_empty());
    }

    #[tokio::test]
    async fn an_attempt_that_died_mid_send_is_not_sent_again() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = job(&w, &["a"], "x");
        let long_ago = Utc::now() - chrono::Duration::minutes(10);
        claim_one(&w, &job.recipients[0].delivery_id, long_ago).await;
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Error)]);
        assert!(w.primary.sent().is_empty());
    }

    #[tokio::test]
    async fn an_opted_out_user_ends_unsubscribed() {
        let w = world(ScriptedSender::named("ses"), None);
        let mut prefs = Preferences::default();
        prefs.opt_out("payment_due", Channel::Email);
        crate::delivery::preferences::update(&*w.preferences, "a", |p| *p = prefs.clone()).await.unwrap();
        let job = job(&w, &["a", "b"], "x");
        let outcomes = w.pipeline.process(&job).await;
        assert_eq!(
            statuses(&outcomes),
            [Outcome::Done(DeliveryStatus::Unsubscribed), Outcome::Done(DeliveryStatus::Sent)]
        );
    }

    #[tokio::test]
    async fn a_suppressed_address_ends_suppressed() {
        let w = world(ScriptedSender::named("ses"), None);
        let bounced = Suppression {
            channel: Channel::Email,
            reason: SuppressionReason::HardBounce,
            suppressed_at: Utc::now(),
            delivery_id: None,
        };
        w.suppressions.suppress("a@example.com", &bounced).await.unwrap();
        let job = job(&w, &["a"], "x");
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Suppressed)]);
        assert!(w.primary.sent().is_empty());
    }

    #[tokio::test]
    async fn sends_over_the_rate_limit_end_rate_limited() {
        let w = world(ScriptedSender::named("ses"), Some(RateLimit { limit: 1, window: 3600 }));
        let first = job(&w, &["a"], "x");
        w.pipeline.process(&first).await;
        let mut second = job(&w, &["a"], "x");
        second.notification_id = "n2".into();
        let d = Delivery::new("n2", "a", Channel::Email, DeliveryStatus::Created, None, Utc::now());
        second.recipients[0].delivery_id = d.delivery_id.clone();
        w.deliveries.items.lock().unwrap().insert(d.delivery_id.clone(), (d, None));
        assert_eq!(statuses(&w.pipeline.process(&second).await), [Outcome::Done(DeliveryStatus::RateLimited)]);
        assert_eq!(w.primary.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_template_with_a_missing_parameter_ends_in_error_with_the_reason() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = job(&w, &["a"], "Due {{ due_date }}");
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Error)]);
        let d = w.deliveries.delivery(&job.recipients[0].delivery_id).unwrap();
        assert!(d.history.last().unwrap().reason.as_deref().unwrap().contains("due_date"), "{d:?}");
        assert!(w.primary.sent().is_empty());
    }

    #[tokio::test]
    async fn a_render_out_of_fuel_ends_as_a_permanent_error_and_sends_nothing() {
        let w = world(ScriptedSender::named("ses"), None);
        let mut job = job(&w, &["a"], "{% for i in n %}{% for j in n %}x{% endfor %}{% endfor %}");
        job.params.insert("n".into(), serde_json::json!((0..100_000).collect::<Vec<u32>>()));
        let started = Instant::now();
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Error)]);
        assert!(started.elapsed() < Duration::from_secs(5), "the render held the worker");
        let d = w.deliveries.delivery(&job.recipients[0].delivery_id).unwrap();
        assert!(d.history.last().unwrap().reason.as_deref().unwrap().contains("more work"), "{d:?}");
        assert!(w.primary.sent().is_empty());
    }

    #[tokio::test]
    async fn a_stored_template_renders_the_pinned_version() {
        let w = world(ScriptedSender::named("ses"), None);
        let content = |body: &str| {
            BTreeMap::from([(
                Channel::Email,
                ChannelContent { subject: Some("s".into()), body: body.into(), html: None },
            )])
        };
        w.templates.save_new_version("payment_due", &content("v1 {{ amount }}")).await.unwrap();
        w.templates.save_new_version("payment_due", &content("v2 {{ missing }}")).await.unwrap();
        let mut job = job(&w, &["a"], "unused");
        job.content = ContentRef::Template { template_id: "payment_due".into(), version: 1 };
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Sent)]);
    }

    #[tokio::test]
    async fn throttling_is_retried_inside_the_invocation() {
        let primary =
            ScriptedSender::named("ses").then(Err(SendError::Retryable(SendFailure::new(SendErrorCode::Throttled))));
        let w = world(primary, None);
        let job = job(&w, &["a"], "x");
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Sent)]);
        assert_eq!(w.primary.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_provider_failing_past_the_budget_hands_the_message_back_and_a_retry_sends_it() {
        let throttled = || Err(SendError::Retryable(SendFailure::new(SendErrorCode::Throttled)));
        let primary = ScriptedSender::named("ses").then(throttled()).then(throttled()).then(throttled());
        let w = world(primary, None);
        let job = job(&w, &["a"], "x");
        assert!(matches!(statuses(&w.pipeline.process(&job).await)[0], Outcome::Retry(_)));
        assert_eq!(w.deliveries.status(&job.recipients[0].delivery_id), Some(DeliveryStatus::Error));
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Sent)]);
        assert_eq!(w.primary.sent().len(), 1);
    }

    fn in_seconds(seconds: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(seconds))
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_unanswered_before_the_deadline_ends_uncertain_and_is_never_sent_again() {
        let w = world(ScriptedSender::named("ses"), None);
        *w.primary.hold.lock().unwrap() = Duration::from_secs(60);
        let job = job(&w, &["a"], "x");
        let outcomes = w.pipeline.process_until(&job, in_seconds(10)).await;
        assert_eq!(statuses(&outcomes), [Outcome::Done(DeliveryStatus::Error)]);
        *w.primary.hold.lock().unwrap() = Duration::ZERO;
        assert!(matches!(statuses(&w.pipeline.process(&job).await)[0], Outcome::AlreadySettled(_)));
        assert_eq!(w.primary.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "never sent again");
    }

    #[tokio::test]
    async fn a_recipient_reached_within_the_recording_margin_is_handed_back_unsent() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = job(&w, &["a"], "x");
        let outcomes = w.pipeline.process_until(&job, in_seconds(1)).await;
        assert!(matches!(statuses(&outcomes)[0], Outcome::Retry(_)));
        assert_eq!(w.primary.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Sent)]);
    }

    #[tokio::test]
    async fn a_send_with_less_than_its_minimum_time_left_is_handed_back_unsent() {
        let w = world(ScriptedSender::named("ses"), None);
        let job = job(&w, &["a"], "x");
        let deadline = Some(Instant::now() + RECORDING_MARGIN + MIN_SEND_TIME / 2);
        let outcomes = w.pipeline.process_until(&job, deadline).await;
        assert!(matches!(statuses(&outcomes)[0], Outcome::Retry(_)));
        assert_eq!(w.primary.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "a send raced against the deadline");
    }

    #[tokio::test]
    async fn a_retry_wait_that_could_outlast_the_deadline_hands_the_recipient_back() {
        let primary =
            ScriptedSender::named("ses").then(Err(SendError::Retryable(SendFailure::new(SendErrorCode::Throttled))));
        let mut w = world(primary, None);
        w.pipeline.send_retries = Backoff::new(Duration::from_secs(20), Duration::from_secs(20), 5);
        let job = job(&w, &["a"], "x");
        let outcomes = w.pipeline.process_until(&job, in_seconds(10)).await;
        assert!(matches!(statuses(&outcomes)[0], Outcome::Retry(_)));
        assert_eq!(w.primary.calls.load(std::sync::atomic::Ordering::SeqCst), 1, "no second attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_job_stopped_mid_way_leaves_its_unsent_recipients_unclaimed_for_the_redelivery() {
        let mut w = world(ScriptedSender::named("ses"), None);
        w.pipeline.pacing = crate::delivery::pacing::Pacer::new(1.0);
        let pipeline = Arc::new(w.pipeline);
        let job = campaign_job(&["a", "b", "c", "d"]);
        // Lambda stops the invocation between its second and third sends.
        let running = tokio::spawn({
            let (pipeline, job) = (pipeline.clone(), job.clone());
            async move { pipeline.process(&job).await }
        });
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        running.abort();
        assert_eq!(w.primary.sent().len(), 2);
        let unsent = &job.recipients[2..];
        assert!(unsent.iter().all(|r| w.deliveries.status(&r.delivery_id).is_none()), "claimed, never sent");
        // The redelivery sends exactly the two that were not.
        let outcomes = pipeline.process(&job).await;
        let sent_now = outcomes.iter().filter(|(_, o)| *o == Outcome::Done(DeliveryStatus::Sent)).count();
        assert_eq!(sent_now, 2, "{outcomes:?}");
        assert_eq!(w.primary.sent().len(), 4);
    }

    #[tokio::test]
    async fn a_permanent_failure_is_recorded_and_not_retried() {
        let primary = ScriptedSender::named("ses")
            .then(Err(SendError::Permanent(SendFailure::new(SendErrorCode::InvalidAddress))));
        let w = world(primary, None);
        let job = job(&w, &["a"], "x");
        assert_eq!(statuses(&w.pipeline.process(&job).await), [Outcome::Done(DeliveryStatus::Error)]);
        assert_eq!(w.primary.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_primary_that_keeps_failing_fails_over_to_the_secondary() {
        let mut primary = ScriptedSender::named("ses");
        for _ in 0..20 {
            primary = primary.then(Err(SendError::Retryable(SendFailure::new(SendErrorCode::ProviderError))));
        }
        let w = world(primary, None);
        let users: Vec<String> = (0..4).map(|i| format!("u{i}")).collect();
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let job = job(&w, &users, "x");
        // The recipients' failures together open the breaker; every send then goes to
        // the secondary, each recipient once.
        let outcomes = w.pipeline.process(&job).await;
        assert!(outcomes.iter().all(|(_, o)| *o == Outcome::Done(DeliveryStatus::Sent)), "{outcomes:?}");
        assert_eq!(w.secondary.sent().len(), 4);
        assert!(w.primary.sent().is_empty());
    }

    #[tokio::test]
    async fn email_carries_signed_tracking_links_when_tracking_is_on() {
        let mut w = world(ScriptedSender::named("ses"), None);
        w.pipeline.tracking = Some(Tracking {
            base_url: "https://api.example".into(),
            keys: crate::signing::KeyRing::new([("k1", "k".repeat(32))]).unwrap(),
        });
        let mut job = job(&w, &["a"], "Pay");
        job.content = ContentRef::Inline(ChannelContent {
            subject: Some("s".into()),
            body: "Pay".into(),
            html: Some("<a href=\"https://pay.example\">Pay</a>".into()),
        });
        w.pipeline.process(&job).await;
        let sent = w.primary.contents.lock().unwrap()[0].clone();
        let html = sent.html.unwrap();
        assert!(!html.contains("href=\"https://pay.example\""), "{html}");
        assert_eq!(html.matches("https://api.example/v1/t/").count(), 3, "{html}");
        assert!(sent.body.contains("Unsubscribe: https://api.example/v1/t/"));
    }

    fn tracked_world() -> World {
        let mut w = world(ScriptedSender::named("ses"), None);
        w.pipeline.tracking = Some(Tracking {
            base_url: "https://api.example".into(),
            keys: crate::signing::KeyRing::new([("k1", "k".repeat(32))]).unwrap(),
        });
        w
    }

    #[tokio::test]
    async fn a_tracked_email_that_is_not_transactional_carries_the_one_click_unsubscribe_url() {
        let w = tracked_world();
        w.pipeline.process(&job(&w, &["a"], "Pay")).await;
        let url = w.primary.list_unsubscribe.lock().unwrap()[0].clone().expect("a List-Unsubscribe URL");
        let body = w.primary.contents.lock().unwrap()[0].body.clone();
        assert!(body.ends_with(&format!("Unsubscribe: {url}")), "the body's own link: {body}");
        let token = url.strip_prefix("https://api.example/v1/t/").expect("the API's tracking path");
        let token = crate::delivery::tracking::Token::verify(token, &w.pipeline.tracking.as_ref().unwrap().keys)
            .expect("signed");
        assert!(matches!(token.action, crate::delivery::tracking::Action::Unsubscribe { .. }));
    }

    #[tokio::test]
    async fn a_transactional_email_carries_no_list_unsubscribe_url() {
        let w = tracked_world();
        let job = ChannelMessage { transactional: true, ..job(&w, &["a"], "Your receipt") };
        w.pipeline.process(&job).await;
        assert_eq!(w.primary.list_unsubscribe.lock().unwrap().as_slice(), [None]);
    }

    #[tokio::test]
    async fn an_email_to_a_direct_address_carries_no_list_unsubscribe_url() {
        let w = tracked_world();
        let mut job = job(&w, &["a"], "Hi");
        job.recipients[0].user_id = None;
        w.pipeline.process(&job).await;
        assert_eq!(w.primary.list_unsubscribe.lock().unwrap().as_slice(), [None]);
    }

    #[tokio::test]
    async fn without_tracking_an_email_carries_no_list_unsubscribe_url() {
        let w = world(ScriptedSender::named("ses"), None);
        w.pipeline.process(&job(&w, &["a"], "Hi")).await;
        assert_eq!(w.primary.list_unsubscribe.lock().unwrap().as_slice(), [None]);
    }
}
