//! What providers report after they accepted a message: delivered, bounced, complained,
//! rejected, delayed, failed. Each report moves its delivery forward (never back: a late
//! report is recorded nowhere) and suppresses the address when it must not be mailed
//! again: at once for a hard bounce or a complaint, after repeated soft bounces; an SMS
//! number at once when SNS says it opted out, is blocked or is invalid.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use herald_wire::backoff::Backoff;

use crate::{
    channel::Channel,
    delivery::{DeliveryStatus, DeliveryStore, StatusChange},
    store::StoreError,
    suppressions::{SoftBouncePolicy, Suppression, SuppressionReason, SuppressionStore},
};

/// What the provider says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedbackKind {
    Delivered,
    /// `permanent`: the address does not exist (a hard bounce); else a soft bounce.
    Bounced {
        permanent: bool,
    },
    Complained,
    /// The provider did not send the message: the address is on the provider's own
    /// suppression list (SES's account-level list). Neither a complaint nor a bounce of
    /// this message, so it puts nothing on Herald's list.
    ProviderSuppressed,
    Rejected,
    DeliveryDelayed,
    Failed,
}

impl FeedbackKind {
    pub fn status(self) -> DeliveryStatus {
        match self {
            FeedbackKind::Delivered => DeliveryStatus::Delivered,
            FeedbackKind::Bounced { .. } => DeliveryStatus::Bounced,
            FeedbackKind::Complained => DeliveryStatus::Complained,
            FeedbackKind::ProviderSuppressed => DeliveryStatus::Suppressed,
            FeedbackKind::Rejected => DeliveryStatus::Rejected,
            FeedbackKind::DeliveryDelayed => DeliveryStatus::DeliveryDelayed,
            FeedbackKind::Failed => DeliveryStatus::Failed,
        }
    }
}

/// One provider report about one recipient of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback {
    pub delivery_id: String,
    pub channel: Channel,
    /// The recipient's address the report is about (what a suppression keys on).
    pub address: Option<String>,
    pub kind: FeedbackKind,
    pub at: DateTime<Utc>,
    /// The provider's classification (`Permanent/General`), recorded as the status's
    /// reason. Never the provider's diagnostic text, which may quote the address.
    pub detail: Option<String>,
}

/// A provider's report that names its message by the provider's id alone (SNS's SMS
/// delivery status): the delivery is looked up by that id first.
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider_message_id: String,
    pub channel: Channel,
    pub kind: FeedbackKind,
    pub at: DateTime<Utc>,
    /// Why the message did not arrive, recorded as the status's reason.
    pub failure: Option<SmsFailure>,
    /// The number the report is about, given with a failure: the key of its suppression
    /// when the failure suppresses (hashed there), else unused. Never stored or logged.
    pub address: Option<String>,
}

/// Without the number: a receipt's Debug may reach a log.
impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("provider_message_id", &self.provider_message_id)
            .field("channel", &self.channel)
            .field("kind", &self.kind)
            .field("at", &self.at)
            .field("failure", &self.failure)
            .field("address", &self.address.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why an SMS did not arrive, as SNS's provider response says (`sns_sms` reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsFailure {
    OptedOut,
    CarrierBlocked,
    PhoneBlocked,
    BlockedList,
    InvalidNumber,
    PhoneUnreachable,
    CarrierUnreachable,
    MaxPriceExceeded,
    Unknown,
}

impl SmsFailure {
    /// The word a failed delivery records as its reason.
    pub fn as_str(self) -> &'static str {
        match self {
            SmsFailure::OptedOut => "OptedOut",
            SmsFailure::CarrierBlocked => "CarrierBlocked",
            SmsFailure::PhoneBlocked => "PhoneBlocked",
            SmsFailure::BlockedList => "BlockedList",
            SmsFailure::InvalidNumber => "InvalidNumber",
            SmsFailure::PhoneUnreachable => "PhoneUnreachable",
            SmsFailure::CarrierUnreachable => "CarrierUnreachable",
            SmsFailure::MaxPriceExceeded => "MaxPriceExceeded",
            SmsFailure::Unknown => "Unknown",
        }
    }

    /// The failures that will fail again for every message to the number: an opt-out, a
    /// block, a number that does not exist (a hard bounce's like). Each retry would be
    /// billed and count against the sender with carriers. An unreachable phone or carrier,
    /// a price cap or an unknown error is a moment's state: nothing is suppressed.
    pub fn suppression(self) -> Option<SuppressionReason> {
        match self {
            SmsFailure::OptedOut => Some(SuppressionReason::OptedOut),
            SmsFailure::CarrierBlocked | SmsFailure::PhoneBlocked | SmsFailure::BlockedList => {
                Some(SuppressionReason::Blocked)
            }
            SmsFailure::InvalidNumber => Some(SuppressionReason::HardBounce),
            SmsFailure::PhoneUnreachable
            | SmsFailure::CarrierUnreachable
            | SmsFailure::MaxPriceExceeded
            | SmsFailure::Unknown => None,
        }
    }
}

/// What applying a report did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The delivery moved to the report's status (false: it was already past it, or is
    /// not Herald's).
    pub moved: bool,
    /// The address was put on the list, and why.
    pub suppressed: Option<SuppressionReason>,
}

pub struct FeedbackService {
    deliveries: Arc<dyn DeliveryStore>,
    suppressions: Arc<dyn SuppressionStore>,
    soft_bounces: SoftBouncePolicy,
    /// How long a report that arrives before its send's outcome is recorded waits for it.
    pub early: Backoff,
}

/// The wait for a send's outcome (a provider may report a delivery before the worker has
/// recorded its answer): at most five retries, about 1.5 s in all.
pub const EARLY_REPORT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(800), 6);

/// A send older than this is recorded (the worker writes its outcome as the provider
/// answers): a receipt for it that finds no delivery waits for none.
pub const RECENT_SEND: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

impl FeedbackService {
    pub fn new(
        deliveries: Arc<dyn DeliveryStore>,
        suppressions: Arc<dyn SuppressionStore>,
        soft_bounces: SoftBouncePolicy,
    ) -> Self {
        Self { deliveries, suppressions, soft_bounces, early: EARLY_REPORT_BACKOFF }
    }

    /// Applies one report. Every step is idempotent (a conditional status move, a put, a
    /// set of bounced deliveries), so a report delivered twice, or retried after a
    /// failure half-way, ends as if applied once. A report about a delivery whose send is
    /// still being recorded (`pending`) waits for it, then fails as transient, so its
    /// queue delivers it again rather than dropping it.
    pub async fn apply(&self, feedback: &Feedback) -> Result<Applied, StoreError> {
        let suppressed = match (&feedback.address, feedback.kind) {
            (Some(address), kind) => self.suppression_for(feedback, address, kind).await?,
            (None, _) => None,
        };
        if let (Some(reason), Some(address)) = (suppressed, &feedback.address) {
            let entry = Suppression {
                channel: feedback.channel,
                reason,
                suppressed_at: feedback.at,
                delivery_id: Some(feedback.delivery_id.clone()),
            };
            self.suppressions.suppress(address, &entry).await?;
        }
        let change = StatusChange { status: feedback.kind.status(), at: feedback.at, reason: feedback.detail.clone() };
        let mut retry = 0;
        loop {
            if self.deliveries.advance(&feedback.delivery_id, &change).await? {
                return Ok(Applied { moved: true, suppressed });
            }
            // Still being sent, or recorded since the move was refused: try again.
            let status = self.deliveries.get(&feedback.delivery_id).await?.map(|d| d.status);
            let worth_again = |s: DeliveryStatus| {
                matches!(s, DeliveryStatus::Created | DeliveryStatus::Pending) || s.can_become(change.status)
            };
            if !status.is_some_and(worth_again) {
                return Ok(Applied { moved: false, suppressed });
            }
            if !self.early.wait(retry).await {
                return Err(StoreError::Transient("the send's outcome is not recorded yet".into()));
            }
            retry += 1;
        }
    }

    /// Applies a report that names its message by the provider's id. For a message sent
    /// moments ago the lookup waits, as `apply` does, for a send still being recorded; a
    /// message not found then is not Herald's (the provider reports every message of the
    /// account) and is applied nowhere, its number suppressed by no one. A failure that
    /// will fail again (`SmsFailure::suppression`) suppresses the receipt's number first,
    /// as `apply` suppresses before it moves.
    pub async fn apply_receipt(&self, receipt: &Receipt) -> Result<Applied, StoreError> {
        let recent = Utc::now().signed_duration_since(receipt.at) < RECENT_SEND;
        let mut retry = 0;
        let delivery_id = loop {
            if let Some(id) = self.deliveries.find_by_provider_message(&receipt.provider_message_id).await? {
                break id;
            }
            if !recent || !self.early.wait(retry).await {
                return Ok(Applied { moved: false, suppressed: None });
            }
            retry += 1;
        };
        let suppressed = match (receipt.failure.and_then(SmsFailure::suppression), &receipt.address) {
            (Some(reason), Some(address)) => {
                let entry = Suppression {
                    channel: receipt.channel,
                    reason,
                    suppressed_at: receipt.at,
                    delivery_id: Some(delivery_id.clone()),
                };
                self.suppressions.suppress(address, &entry).await?;
                Some(reason)
            }
            _ => None,
        };
        let feedback = Feedback {
            delivery_id,
            channel: receipt.channel,
            address: None,
            kind: receipt.kind,
            at: receipt.at,
            detail: receipt.failure.map(|f| f.as_str().to_owned()),
        };
        let applied = self.apply(&feedback).await?;
        Ok(Applied { suppressed, ..applied })
    }

    async fn suppression_for(
        &self,
        feedback: &Feedback,
        address: &str,
        kind: FeedbackKind,
    ) -> Result<Option<SuppressionReason>, StoreError> {
        Ok(match kind {
            FeedbackKind::Bounced { permanent: true } => Some(SuppressionReason::HardBounce),
            FeedbackKind::Complained => Some(SuppressionReason::Complaint),
            FeedbackKind::Bounced { permanent: false } => {
                let window = self.soft_bounces.window_for(feedback.channel, address, feedback.at);
                let count = self.suppressions.count_soft_bounce(&window, &feedback.delivery_id).await?;
                (count >= self.soft_bounces.bounces).then_some(SuppressionReason::SoftBounces)
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        delivery::{Delivery, memory::MemoryDeliveries},
        suppressions::memory::MemorySuppressions,
    };

    struct World {
        deliveries: Arc<MemoryDeliveries>,
        suppressions: Arc<MemorySuppressions>,
        service: FeedbackService,
    }

    fn world() -> World {
        let deliveries = Arc::new(MemoryDeliveries::default());
        let suppressions = Arc::new(MemorySuppressions::default());
        let service = FeedbackService::new(
            deliveries.clone(),
            suppressions.clone(),
            SoftBouncePolicy { bounces: 2, window_days: 7 },
        );
        World { deliveries, suppressions, service }
    }

    /// A delivery of notification `n` to user `user`, sent.
    async fn sent(w: &World, user: &str) -> String {
        let delivery = Delivery::new("n", user, Channel::Email, DeliveryStatus::Sent, None, Utc::now());
        w.deliveries.create(std::slice::from_ref(&delivery)).await.unwrap();
        delivery.delivery_id
    }

    fn report(delivery_id: &str, kind: FeedbackKind) -> Feedback {
        Feedback {
            delivery_id: delivery_id.to_owned(),
            channel: Channel::Email,
            address: Some("a@example.com".into()),
            kind,
            at: Utc::now(),
            detail: None,
        }
    }

    async fn is_suppressed(w: &World) -> Option<SuppressionReason> {
        w.suppressions.get(Channel::Email, "a@example.com").await.unwrap().map(|s| s.reason)
    }

    #[tokio::test]
    async fn a_delivery_report_moves_the_delivery_to_delivered_and_suppresses_nothing() {
        let w = world();
        let id = sent(&w, "u1").await;
        let applied = w.service.apply(&report(&id, FeedbackKind::Delivered)).await.unwrap();
        assert_eq!(applied, Applied { moved: true, suppressed: None });
        assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Delivered));
        assert_eq!(is_suppressed(&w).await, None);
    }

    #[tokio::test]
    async fn a_hard_bounce_ends_bounced_and_suppresses_the_address_naming_the_delivery() {
        let w = world();
        let id = sent(&w, "u1").await;
        let mut bounce = report(&id, FeedbackKind::Bounced { permanent: true });
        bounce.detail = Some("Permanent/General".into());
        w.service.apply(&bounce).await.unwrap();
        assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Bounced));
        let entry = w.suppressions.get(Channel::Email, "A@example.com").await.unwrap().unwrap();
        assert_eq!((entry.reason, entry.delivery_id.as_deref()), (SuppressionReason::HardBounce, Some(id.as_str())));
        let delivery = w.deliveries.get(&id).await.unwrap().unwrap();
        assert_eq!(delivery.history.last().unwrap().reason.as_deref(), Some("Permanent/General"));
    }

    #[tokio::test]
    async fn a_complaint_suppresses_even_after_the_message_was_opened() {
        let w = world();
        let id = sent(&w, "u1").await;
        let opened = StatusChange { status: DeliveryStatus::Opened, at: Utc::now(), reason: None };
        w.deliveries.advance(&id, &opened).await.unwrap();
        let applied = w.service.apply(&report(&id, FeedbackKind::Complained)).await.unwrap();
        assert_eq!(applied, Applied { moved: true, suppressed: Some(SuppressionReason::Complaint) });
        assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Complained));
    }

    #[tokio::test]
    async fn a_message_the_providers_own_list_stopped_ends_suppressed_and_adds_nothing_to_the_list() {
        let w = world();
        let id = sent(&w, "u1").await;
        let mut stopped = report(&id, FeedbackKind::ProviderSuppressed);
        stopped.detail = Some("OnAccountSuppressionList".into());
        let applied = w.service.apply(&stopped).await.unwrap();
        assert_eq!(applied, Applied { moved: true, suppressed: None });
        assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Suppressed));
        assert_eq!(is_suppressed(&w).await, None);
    }

    #[tokio::test]
    async fn soft_bounces_suppress_once_they_reach_the_policys_count_of_distinct_deliveries() {
        let w = world();
        let (first, second) = (sent(&w, "u1").await, sent(&w, "u2").await);
        let soft = FeedbackKind::Bounced { permanent: false };
        assert_eq!(w.service.apply(&report(&first, soft)).await.unwrap().suppressed, None);
        // The same report again is the same bounce.
        assert_eq!(w.service.apply(&report(&first, soft)).await.unwrap().suppressed, None);
        assert_eq!(is_suppressed(&w).await, None);
        assert_eq!(
            w.service.apply(&report(&second, soft)).await.unwrap().suppressed,
            Some(SuppressionReason::SoftBounces)
        );
        assert_eq!(is_suppressed(&w).await, Some(SuppressionReason::SoftBounces));
    }

    #[tokio::test]
    async fn a_report_that_comes_before_the_send_is_recorded_waits_for_it() {
        let w = world();
        let delivery = Delivery::new("n", "u1", Channel::Email, DeliveryStatus::Pending, None, Utc::now());
        w.deliveries.create(std::slice::from_ref(&delivery)).await.unwrap();
        let id = delivery.delivery_id.clone();
        let deliveries = w.deliveries.clone();
        let worker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let sent = StatusChange { status: DeliveryStatus::Sent, at: Utc::now(), reason: None };
            deliveries.finish(&delivery.delivery_id, &sent, Some("ses"), Some("m1"), false).await.unwrap();
        });
        assert!(w.service.apply(&report(&id, FeedbackKind::Delivered)).await.unwrap().moved);
        worker.await.unwrap();
        assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Delivered));
    }

    #[tokio::test]
    async fn a_report_whose_send_is_never_recorded_fails_as_transient_after_its_wait() {
        let mut w = world();
        w.service.early = Backoff::new(Duration::from_millis(1), Duration::from_millis(1), 3);
        let delivery = Delivery::new("n", "u1", Channel::Email, DeliveryStatus::Pending, None, Utc::now());
        w.deliveries.create(std::slice::from_ref(&delivery)).await.unwrap();
        let error = w.service.apply(&report(&delivery.delivery_id, FeedbackKind::Delivered)).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
    }

    #[tokio::test]
    async fn a_late_delivery_report_leaves_an_opened_message_opened() {
        let w = world();
        let id = sent(&w, "u1").await;
        let opened = StatusChange { status: DeliveryStatus::Opened, at: Utc::now(), reason: None };
        w.deliveries.advance(&id, &opened).await.unwrap();
        assert!(!w.service.apply(&report(&id, FeedbackKind::Delivered)).await.unwrap().moved);
        assert_eq!(w.deliveries.status(&id), Some(DeliveryStatus::Opened));
    }

    #[tokio::test]
    async fn a_report_for_a_delivery_herald_does_not_know_moves_nothing_but_still_suppresses() {
        let w = world();
        let applied = w.service.apply(&report("d_unknown", FeedbackKind::Bounced { permanent: true })).await.unwrap();
        assert_eq!(applied, Applied { moved: false, suppressed: Some(SuppressionReason::HardBounce) });
        assert!(w.deliveries.get("d_unknown").await.unwrap().is_none());
    }

    fn receipt(provider_message_id: &str, kind: FeedbackKind) -> Receipt {
        Receipt {
            provider_message_id: provider_message_id.to_owned(),
            channel: Channel::Sms,
            kind,
            at: Utc::now(),
            failure: None,
            address: None,
        }
    }

    /// An SMS delivery, sent, with the provider's message id `message_id`.
    async fn sms_sent(w: &World, message_id: &str) -> String {
        let delivery = Delivery::new("n", "u1", Channel::Sms, DeliveryStatus::Pending, None, Utc::now());
        w.deliveries.create(std::slice::from_ref(&delivery)).await.unwrap();
        let sent = StatusChange { status: DeliveryStatus::Sent, at: Utc::now(), reason: None };
        w.deliveries.finish(&delivery.delivery_id, &sent, Some("sns-sms"), Some(message_id), false).await.unwrap();
        delivery.delivery_id
    }

    fn sms_failure(provider_message_id: &str, failure: SmsFailure) -> Receipt {
        Receipt {
            failure: Some(failure),
            address: Some("+14155550198".into()),
            ..receipt(provider_message_id, FeedbackKind::Failed)
        }
    }

    #[tokio::test]
    async fn a_receipt_moves_the_delivery_its_message_id_names_with_the_failure_as_reason() {
        let w = world();
        let id = sms_sent(&w, "sns-1").await;
        w.service.apply_receipt(&sms_failure("sns-1", SmsFailure::PhoneUnreachable)).await.unwrap();
        let delivery = w.deliveries.get(&id).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Failed);
        assert_eq!(delivery.history.last().unwrap().reason.as_deref(), Some("PhoneUnreachable"));
    }

    #[tokio::test]
    async fn an_unreachable_phone_suppresses_nothing() {
        let w = world();
        sms_sent(&w, "sns-1").await;
        let applied = w.service.apply_receipt(&sms_failure("sns-1", SmsFailure::PhoneUnreachable)).await.unwrap();
        assert_eq!(applied, Applied { moved: true, suppressed: None });
        assert_eq!(w.suppressions.get(Channel::Sms, "+14155550198").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_blocked_number_is_suppressed_naming_the_delivery_and_its_delivery_fails() {
        let w = world();
        let id = sms_sent(&w, "sns-1").await;
        let applied = w.service.apply_receipt(&sms_failure("sns-1", SmsFailure::CarrierBlocked)).await.unwrap();
        assert_eq!(applied, Applied { moved: true, suppressed: Some(SuppressionReason::Blocked) });
        let entry = w.suppressions.get(Channel::Sms, "+14155550198").await.unwrap().unwrap();
        assert_eq!((entry.reason, entry.delivery_id.as_deref()), (SuppressionReason::Blocked, Some(id.as_str())));
        let delivery = w.deliveries.get(&id).await.unwrap().unwrap();
        assert_eq!(delivery.status, DeliveryStatus::Failed);
        assert_eq!(delivery.history.last().unwrap().reason.as_deref(), Some("CarrierBlocked"));
    }

    #[test]
    fn opt_outs_blocks_and_invalid_numbers_suppress_a_moments_state_does_not() {
        use SmsFailure::*;
        let reasons: Vec<_> =
            [OptedOut, CarrierBlocked, PhoneBlocked, BlockedList, InvalidNumber].map(SmsFailure::suppression).into();
        let (opted_out, blocked, hard) =
            (Some(SuppressionReason::OptedOut), Some(SuppressionReason::Blocked), Some(SuppressionReason::HardBounce));
        assert_eq!(reasons, [opted_out, blocked, blocked, blocked, hard]);
        for moment in [PhoneUnreachable, CarrierUnreachable, MaxPriceExceeded, Unknown] {
            assert_eq!(moment.suppression(), None, "{moment:?}");
        }
    }

    #[tokio::test]
    async fn a_blocked_receipt_for_a_message_herald_did_not_send_suppresses_nothing() {
        let mut w = world();
        w.service.early = Backoff::new(Duration::from_millis(1), Duration::from_millis(1), 3);
        let applied = w.service.apply_receipt(&sms_failure("sns-other", SmsFailure::PhoneBlocked)).await.unwrap();
        assert_eq!(applied, Applied { moved: false, suppressed: None });
        assert_eq!(w.suppressions.get(Channel::Sms, "+14155550198").await.unwrap(), None);
    }

    #[test]
    fn a_receipts_debug_leaves_its_number_out() {
        let shown = format!("{:?}", sms_failure("sns-1", SmsFailure::OptedOut));
        assert!(!shown.contains("0198"), "{shown}");
    }

    #[tokio::test]
    async fn a_receipt_for_an_old_message_herald_did_not_send_waits_for_nothing() {
        let mut w = world();
        // Waits that would fail this test if taken.
        w.service.early = Backoff::new(Duration::from_secs(60), Duration::from_secs(60), 3);
        let mut old = receipt("sns-other", FeedbackKind::Delivered);
        old.at = Utc::now() - RECENT_SEND * 2;
        let applied = tokio::time::timeout(Duration::from_secs(5), w.service.apply_receipt(&old)).await;
        assert_eq!(applied.expect("no wait").unwrap(), Applied { moved: false, suppressed: None });
    }

    #[tokio::test]
    async fn a_receipt_for_a_message_herald_did_not_send_is_applied_nowhere_after_its_wait() {
        let mut w = world();
        w.service.early = Backoff::new(Duration::from_millis(1), Duration::from_millis(1), 3);
        sms_sent(&w, "sns-1").await;
        let applied = w.service.apply_receipt(&receipt("sns-other", FeedbackKind::Delivered)).await.unwrap();
        assert_eq!(applied, Applied { moved: false, suppressed: None });
    }
}
