//! `DeliveryStore`, `TemplateStore`, `PreferenceStore` and `ChannelQueues`:
//! deliveries claimed once (the dedup of redelivered messages) and counted against their
//! rate limits, outcomes recorded only for claimed deliveries, statuses moving forward only;
//! immutable template versions; preferences with defaults; jobs received on their
//! channel's queue.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use herald_aws::{DynamoDeliveryStore, DynamoPreferenceStore, DynamoTemplateStore, SqsChannelQueues};
use herald_core::{
    campaigns::memory::MemoryQueues,
    channel::Channel,
    delivery::{
        ChannelMessage, ChannelQueues, ChannelRecipient, Claim, ClaimRequest, ContentRef, Delivery, DeliveryStatus,
        DeliveryStore, ListedDelivery, NewDelivery, PreferenceStore, RateLimitClaim, StatusChange, Target,
        TemplateStore,
        memory::{MemoryDeliveries, MemoryPreferences, MemoryTemplates},
        preferences::Preferences,
        rate_limit::WindowKey,
        rendering::ChannelContent,
    },
    store::StoreError,
};

use super::{Inbox, SqsInbox};

contract!(delivery_store: memory_deliveries, aws_deliveries;
    a_delivery_round_trips_and_is_listed_by_its_notification,
    getting_an_unknown_delivery_is_none,
    create_if_absent_writes_a_delivery_once,
    a_claim_moves_a_created_delivery_to_pending_once,
    a_claim_with_settle_ends_the_delivery_without_sending,
    a_claim_with_create_records_a_delivery_that_was_not_there,
    claiming_a_delivery_that_is_not_there_fails,
    claims_past_a_rate_limit_settle_as_the_limit_says,
    a_claim_of_a_delivery_claimed_before_counts_against_no_rate_limit,
    a_settled_claim_counts_against_no_rate_limit,
    finish_records_the_outcome_of_a_claimed_delivery,
    finish_of_a_delivery_not_claimed_is_a_conflict,
    a_delivery_that_failed_can_be_claimed_again,
    a_final_error_is_never_claimed_again,
    advance_moves_a_delivery_forward_only,
    list_page_lists_each_delivery_once_in_pages_of_at_most_the_limit,
    list_page_tells_a_final_error_from_one_to_try_again,
    a_sent_delivery_is_found_by_its_providers_message_id,
    an_unknown_provider_message_id_finds_no_delivery,
);

contract!(template_store: memory_templates, aws_templates;
    template_versions_count_from_one_and_each_stays_as_saved,
    an_unknown_template_or_version_is_none,
);

contract!(preference_store: memory_preferences, aws_preferences;
    preferences_never_saved_are_the_defaults,
    saved_preferences_replace_the_previous_ones,
    get_many_returns_the_users_who_saved_preferences,
    a_write_from_a_stale_read_is_a_conflict_and_changes_nothing,
);

contract!(channel_queues: memory_queues, aws_queues;
    each_job_is_received_once_on_its_channels_queue,
);

async fn memory_deliveries() -> Box<dyn DeliveryStore> {
    Box::new(MemoryDeliveries::default())
}

async fn aws_deliveries() -> Box<dyn DeliveryStore> {
    let (clients, tables) = super::moto_tables(&["DeliveriesTable", "RateLimitsTable"]).await;
    let store = DynamoDeliveryStore::new(clients.dynamodb(), &tables["DeliveriesTable"]);
    Box::new(store.with_rate_limits(&tables["RateLimitsTable"]).with_receipt_lookup())
}

async fn memory_templates() -> Box<dyn TemplateStore> {
    Box::new(MemoryTemplates::default())
}

async fn aws_templates() -> Box<dyn TemplateStore> {
    let (clients, tables) = super::moto_tables(&["TemplatesTable"]).await;
    Box::new(DynamoTemplateStore::new(clients.dynamodb(), &tables["TemplatesTable"]))
}

async fn memory_preferences() -> Box<dyn PreferenceStore> {
    Box::new(MemoryPreferences::default())
}

async fn aws_preferences() -> Box<dyn PreferenceStore> {
    let (clients, tables) = super::moto_tables(&["PreferencesTable"]).await;
    Box::new(DynamoPreferenceStore::new(clients.dynamodb(), &tables["PreferencesTable"]))
}

struct Queues {
    queues: Box<dyn ChannelQueues>,
    inbox: Box<dyn Inbox<(Channel, ChannelMessage)>>,
}

struct SharedQueues(Arc<MemoryQueues>);

#[async_trait::async_trait]
impl ChannelQueues for SharedQueues {
    async fn enqueue(&self, jobs: &[ChannelMessage], delay: Duration) -> Result<(), StoreError> {
        self.0.enqueue(jobs, delay).await
    }
}

#[async_trait::async_trait]
impl Inbox<(Channel, ChannelMessage)> for SharedQueues {
    async fn take(&self, _expected: usize) -> Vec<(Channel, ChannelMessage)> {
        self.0.jobs.lock().unwrap().drain(..).map(|job| (job.channel, job)).collect()
    }
}

async fn memory_queues() -> Box<Queues> {
    let queues = Arc::new(MemoryQueues::default());
    Box::new(Queues { queues: Box::new(SharedQueues(queues.clone())), inbox: Box::new(SharedQueues(queues)) })
}

/// Each channel's queue, read as the channel's worker reads it.
struct ChannelInboxes(Vec<(Channel, SqsInbox<ChannelMessage>)>);

#[async_trait::async_trait]
impl Inbox<(Channel, ChannelMessage)> for ChannelInboxes {
    async fn take(&self, expected: usize) -> Vec<(Channel, ChannelMessage)> {
        let mut taken = Vec::new();
        for (channel, inbox) in &self.0 {
            let wanted = expected.saturating_sub(taken.len());
            taken.extend(inbox.take(wanted.min(1)).await.into_iter().map(|job| (*channel, job)));
        }
        taken
    }
}

async fn aws_queues() -> Box<Queues> {
    let clients = super::moto().await;
    let mut urls = BTreeMap::new();
    let mut inboxes = Vec::new();
    for channel in [Channel::Email, Channel::Sms] {
        let queue_url = super::sqs_queue(&clients, channel.as_str()).await;
        urls.insert(channel, queue_url.clone());
        let parse = |body: &str| serde_json::from_str(body).expect("a delivery job");
        inboxes.push((channel, SqsInbox { sqs: clients.sqs(), queue_url, parse }));
    }
    Box::new(Queues {
        queues: Box::new(SqsChannelQueues::new(clients.sqs(), urls)),
        inbox: Box::new(ChannelInboxes(inboxes)),
    })
}

fn at(second: u32) -> DateTime<Utc> {
    format!("2026-05-01T10:00:{second:02}.123456Z").parse().unwrap()
}

fn delivery(notification_id: &str, user: &str) -> Delivery {
    Delivery::new(notification_id, user, Channel::Email, DeliveryStatus::Created, None, at(0))
}

fn claim(delivery: &Delivery) -> ClaimRequest {
    ClaimRequest { delivery_id: delivery.delivery_id.clone(), settle: None, rate_limit: None, create: None }
}

fn change(status: DeliveryStatus, second: u32) -> StatusChange {
    StatusChange { status, at: at(second), reason: None }
}

fn limited(request: ClaimRequest, limit: u32) -> ClaimRequest {
    let window = WindowKey { key: "u#email#2026-05-01".into(), expires_at: 1_900_000_000 };
    let over = StatusChange { status: DeliveryStatus::RateLimited, at: at(1), reason: Some("rate limit".into()) };
    ClaimRequest { rate_limit: Some(RateLimitClaim { window, limit, over }), ..request }
}

async fn sorted(store: &dyn DeliveryStore, notification_id: &str) -> Vec<Delivery> {
    let mut listed = store.list(notification_id).await.unwrap();
    listed.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    listed
}

async fn a_delivery_round_trips_and_is_listed_by_its_notification(store: &dyn DeliveryStore) {
    let mut sent = delivery("n1", "u1");
    sent.status = DeliveryStatus::Sent;
    sent.history.push(StatusChange { reason: Some("accepted".into()), ..change(DeliveryStatus::Sent, 2) });
    sent.provider = Some("ses".into());
    sent.provider_message_id = Some("m-1".into());
    let mut mine = vec![sent, delivery("n1", "u2"), delivery("n1", "u3")];
    store.create(&mine).await.unwrap();
    store.create(&[delivery("n2", "u1")]).await.unwrap();

    assert_eq!(store.get(&mine[0].delivery_id).await.unwrap().as_ref(), Some(&mine[0]));
    mine.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    assert_eq!(sorted(store, "n1").await, mine);
    assert_eq!(sorted(store, "n2").await.len(), 1);
    assert!(store.list("n-none").await.unwrap().is_empty());
    store.create(&[]).await.unwrap();
}

async fn getting_an_unknown_delivery_is_none(store: &dyn DeliveryStore) {
    assert_eq!(store.get("d_none").await.unwrap(), None);
}

async fn create_if_absent_writes_a_delivery_once(store: &dyn DeliveryStore) {
    let first = delivery("n1", "u1");
    let mut again = first.clone();
    again.status = DeliveryStatus::Error;

    assert!(store.create_if_absent(&first).await.unwrap());
    assert!(!store.create_if_absent(&again).await.unwrap());

    assert_eq!(store.get(&first.delivery_id).await.unwrap(), Some(first));
}

async fn a_claim_moves_a_created_delivery_to_pending_once(store: &dyn DeliveryStore) {
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();

    assert_eq!(store.claim_all(&[claim(&d)], at(5)).await.unwrap(), [Claim::Claimed]);
    let read = store.get(&d.delivery_id).await.unwrap().unwrap();
    assert_eq!(read.status, DeliveryStatus::Pending);
    assert_eq!(read.history, [change(DeliveryStatus::Created, 0), change(DeliveryStatus::Pending, 5)]);

    // A redelivered message finds it in flight, claimed when the first claim was made.
    assert_eq!(store.claim_all(&[claim(&d)], at(9)).await.unwrap(), [Claim::InFlight { claimed_at: at(5) }]);
    assert_eq!(store.get(&d.delivery_id).await.unwrap(), Some(read));
    assert_eq!(store.claim_all(&[], at(9)).await.unwrap(), []);
}

async fn a_claim_with_settle_ends_the_delivery_without_sending(store: &dyn DeliveryStore) {
    let (d1, d2) = (delivery("n1", "u1"), delivery("n1", "u2"));
    store.create(&[d1.clone(), d2.clone()]).await.unwrap();
    let unsubscribed = StatusChange { reason: Some("opted out".into()), ..change(DeliveryStatus::Unsubscribed, 3) };
    let settle = ClaimRequest { settle: Some(unsubscribed.clone()), ..claim(&d1) };

    let claims = store.claim_all(&[settle.clone(), claim(&d2)], at(3)).await.unwrap();

    assert_eq!(claims, [Claim::Settled(DeliveryStatus::Unsubscribed), Claim::Claimed]);
    let read = store.get(&d1.delivery_id).await.unwrap().unwrap();
    assert_eq!((read.status, read.history.last()), (DeliveryStatus::Unsubscribed, Some(&unsubscribed)));
    // Asked again (a redelivered message): ended already, and nothing new happens.
    // (One request per call: a call may name a delivery once.)
    let ended = Claim::AlreadySettled(DeliveryStatus::Unsubscribed);
    assert_eq!(store.claim_all(&[settle], at(4)).await.unwrap(), std::slice::from_ref(&ended));
    assert_eq!(store.claim_all(&[claim(&d1)], at(4)).await.unwrap(), [ended]);
    assert_eq!(store.get(&d1.delivery_id).await.unwrap(), Some(read));
}

async fn a_claim_with_create_records_a_delivery_that_was_not_there(store: &dyn DeliveryStore) {
    let existing = delivery("c_1", "u1");
    store.create(std::slice::from_ref(&existing)).await.unwrap();
    let absent = delivery("c_1", "u2");
    let create = |d: &Delivery| ClaimRequest {
        create: Some(NewDelivery { notification_id: "c_1".into(), recipient: d.recipient.clone(), channel: d.channel }),
        ..claim(d)
    };

    let claims = store.claim_all(&[create(&existing), create(&absent)], at(4)).await.unwrap();

    assert_eq!(claims, [Claim::Claimed, Claim::Claimed]);
    let created = store.get(&absent.delivery_id).await.unwrap().unwrap();
    assert_eq!((created.notification_id.as_str(), created.recipient.as_str()), ("c_1", "u2"));
    assert_eq!((created.channel, created.status), (Channel::Email, DeliveryStatus::Pending));
    assert_eq!(created.history, [change(DeliveryStatus::Created, 4), change(DeliveryStatus::Pending, 4)]);
    assert_eq!((created.provider, created.provider_message_id), (None, None));
    let kept = store.get(&existing.delivery_id).await.unwrap().unwrap();
    assert_eq!(kept.history, [change(DeliveryStatus::Created, 0), change(DeliveryStatus::Pending, 4)]);
    assert_eq!(sorted(store, "c_1").await.len(), 2);
    let again = store.claim_all(&[create(&absent)], at(6)).await.unwrap();
    assert_eq!(again, [Claim::InFlight { claimed_at: at(4) }]);
}

async fn claiming_a_delivery_that_is_not_there_fails(store: &dyn DeliveryStore) {
    let result = store.claim_all(&[claim(&delivery("n1", "ghost"))], at(1)).await;
    assert!(matches!(result, Err(StoreError::Fatal(_))), "{result:?}");
    assert_eq!(store.get(&delivery("n1", "ghost").delivery_id).await.unwrap(), None);
}

async fn claims_past_a_rate_limit_settle_as_the_limit_says(store: &dyn DeliveryStore) {
    let ds: Vec<Delivery> = (0..4).map(|i| delivery(&format!("n{i}"), "u1")).collect();
    store.create(&ds).await.unwrap();

    // One claim per call: one transaction may not count a window twice.
    let mut claims = Vec::new();
    for d in &ds[..3] {
        claims.extend(store.claim_all(&[limited(claim(d), 2)], at(2)).await.unwrap());
    }

    assert_eq!(claims, [Claim::Claimed, Claim::Claimed, Claim::Settled(DeliveryStatus::RateLimited)]);
    let over = store.get(&ds[2].delivery_id).await.unwrap().unwrap();
    assert_eq!(over.status, DeliveryStatus::RateLimited);
    assert_eq!(over.history.last().unwrap().reason.as_deref(), Some("rate limit"));
    // The refused claim counted nothing: a higher limit on the window lets one more through.
    assert_eq!(store.claim_all(&[limited(claim(&ds[3]), 3)], at(3)).await.unwrap(), [Claim::Claimed]);
}

async fn a_claim_of_a_delivery_claimed_before_counts_against_no_rate_limit(store: &dyn DeliveryStore) {
    let (d1, d2) = (delivery("n1", "u1"), delivery("n2", "u1"));
    store.create(&[d1.clone(), d2.clone()]).await.unwrap();
    assert_eq!(store.claim_all(&[limited(claim(&d1), 2)], at(1)).await.unwrap(), [Claim::Claimed]);

    // A redelivered job claims d1 again: it is in flight, and its window keeps one send.
    assert_eq!(
        store.claim_all(&[limited(claim(&d1), 2)], at(2)).await.unwrap(),
        [Claim::InFlight { claimed_at: at(1) }]
    );
    assert_eq!(store.claim_all(&[limited(claim(&d2), 2)], at(3)).await.unwrap(), [Claim::Claimed]);
}

async fn a_settled_claim_counts_against_no_rate_limit(store: &dyn DeliveryStore) {
    let (d1, d2) = (delivery("n1", "u1"), delivery("n2", "u1"));
    store.create(&[d1.clone(), d2.clone()]).await.unwrap();
    let settle = ClaimRequest { settle: Some(change(DeliveryStatus::Suppressed, 1)), ..claim(&d1) };

    assert_eq!(
        store.claim_all(&[limited(settle, 1)], at(1)).await.unwrap(),
        [Claim::Settled(DeliveryStatus::Suppressed)]
    );
    assert_eq!(store.claim_all(&[limited(claim(&d2), 1)], at(2)).await.unwrap(), [Claim::Claimed]);
}

async fn finish_records_the_outcome_of_a_claimed_delivery(store: &dyn DeliveryStore) {
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();
    store.claim_all(&[claim(&d)], at(1)).await.unwrap();

    store.finish(&d.delivery_id, &change(DeliveryStatus::Sent, 2), Some("ses"), Some("m-1"), false).await.unwrap();

    let read = store.get(&d.delivery_id).await.unwrap().unwrap();
    assert_eq!(read.status, DeliveryStatus::Sent);
    assert_eq!(read.history.last(), Some(&change(DeliveryStatus::Sent, 2)));
    assert_eq!((read.provider.as_deref(), read.provider_message_id.as_deref()), (Some("ses"), Some("m-1")));
    assert_eq!(store.claim_all(&[claim(&d)], at(3)).await.unwrap(), [Claim::AlreadySettled(DeliveryStatus::Sent)]);
}

async fn a_sent_delivery_is_found_by_its_providers_message_id(store: &dyn DeliveryStore) {
    let (d, other) = (delivery("n1", "u1"), delivery("n1", "u2"));
    store.create(&[d.clone(), other.clone()]).await.unwrap();
    store.claim_all(&[claim(&d), claim(&other)], at(1)).await.unwrap();
    store.finish(&d.delivery_id, &change(DeliveryStatus::Sent, 2), Some("sns-sms"), Some("m-1"), false).await.unwrap();
    store
        .finish(&other.delivery_id, &change(DeliveryStatus::Sent, 2), Some("sns-sms"), Some("m-2"), false)
        .await
        .unwrap();

    assert_eq!(store.find_by_provider_message("m-1").await.unwrap(), Some(d.delivery_id));
    assert_eq!(store.find_by_provider_message("m-2").await.unwrap(), Some(other.delivery_id));
}

async fn an_unknown_provider_message_id_finds_no_delivery(store: &dyn DeliveryStore) {
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();
    store.claim_all(&[claim(&d)], at(1)).await.unwrap();
    store.finish(&d.delivery_id, &change(DeliveryStatus::Sent, 2), Some("sns-sms"), Some("m-1"), false).await.unwrap();

    assert_eq!(store.find_by_provider_message("m-unknown").await.unwrap(), None);
}

async fn finish_of_a_delivery_not_claimed_is_a_conflict(store: &dyn DeliveryStore) {
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();

    let created = store.finish(&d.delivery_id, &change(DeliveryStatus::Sent, 2), Some("ses"), None, false).await;
    let missing = store.finish("d_none", &change(DeliveryStatus::Sent, 2), Some("ses"), None, false).await;

    assert!(matches!(created, Err(StoreError::Conflict)), "{created:?}");
    assert!(matches!(missing, Err(StoreError::Conflict)), "{missing:?}");
    assert_eq!(store.get(&d.delivery_id).await.unwrap(), Some(d));
    assert_eq!(store.get("d_none").await.unwrap(), None);
}

async fn a_delivery_that_failed_can_be_claimed_again(store: &dyn DeliveryStore) {
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();
    store.claim_all(&[claim(&d)], at(1)).await.unwrap();
    store.finish(&d.delivery_id, &change(DeliveryStatus::Error, 2), Some("ses"), None, true).await.unwrap();

    assert_eq!(store.claim_all(&[claim(&d)], at(3)).await.unwrap(), [Claim::Claimed]);
    store.finish(&d.delivery_id, &change(DeliveryStatus::Sent, 4), Some("ses"), Some("m-2"), false).await.unwrap();

    let read = store.get(&d.delivery_id).await.unwrap().unwrap();
    let statuses: Vec<DeliveryStatus> = read.history.iter().map(|c| c.status).collect();
    use DeliveryStatus::*;
    assert_eq!(statuses, [Created, Pending, Error, Pending, Sent]);
    assert_eq!(read.provider_message_id.as_deref(), Some("m-2"));
}

async fn a_final_error_is_never_claimed_again(store: &dyn DeliveryStore) {
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();
    store.claim_all(&[claim(&d)], at(1)).await.unwrap();
    store.finish(&d.delivery_id, &change(DeliveryStatus::Error, 2), Some("ses"), None, false).await.unwrap();

    assert_eq!(store.claim_all(&[claim(&d)], at(3)).await.unwrap(), [Claim::AlreadySettled(DeliveryStatus::Error)]);
    let read = store.get(&d.delivery_id).await.unwrap().unwrap();
    assert_eq!(read.status, DeliveryStatus::Error);
    assert_eq!(read.history.len(), 3, "the refused claim wrote nothing");
}

async fn advance_moves_a_delivery_forward_only(store: &dyn DeliveryStore) {
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();
    use DeliveryStatus::*;
    assert!(!store.advance(&d.delivery_id, &change(Opened, 1)).await.unwrap(), "not sent yet");
    store.claim_all(&[claim(&d)], at(1)).await.unwrap();
    store.finish(&d.delivery_id, &change(Sent, 2), Some("ses"), Some("m-1"), false).await.unwrap();

    assert!(store.advance(&d.delivery_id, &change(Opened, 3)).await.unwrap());
    assert!(!store.advance(&d.delivery_id, &change(Opened, 4)).await.unwrap(), "opened once");
    assert!(store.advance(&d.delivery_id, &change(Clicked, 5)).await.unwrap());
    assert!(!store.advance(&d.delivery_id, &change(Opened, 6)).await.unwrap(), "never backwards");
    assert!(!store.advance(&d.delivery_id, &change(Created, 6)).await.unwrap(), "nothing becomes created");
    assert!(store.advance(&d.delivery_id, &change(Unsubscribed, 7)).await.unwrap());
    assert!(!store.advance("d_none", &change(Opened, 8)).await.unwrap());

    let read = store.get(&d.delivery_id).await.unwrap().unwrap();
    let statuses: Vec<DeliveryStatus> = read.history.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Created, Pending, Sent, Opened, Clicked, Unsubscribed]);
    assert_eq!(read.status, Unsubscribed);
    assert_eq!(store.get("d_none").await.unwrap(), None);
}

fn content(body: &str) -> BTreeMap<Channel, ChannelContent> {
    let email =
        ChannelContent { subject: Some("Hi {{name}}".into()), body: body.into(), html: Some("<p>hi</p>".into()) };
    let sms = ChannelContent { subject: None, body: format!("sms: {body}"), html: None };
    [(Channel::Email, email), (Channel::Sms, sms)].into()
}

async fn template_versions_count_from_one_and_each_stays_as_saved(store: &dyn TemplateStore) {
    let v1 = store.save_new_version("welcome", &content("one")).await.unwrap();
    let v2 = store.save_new_version("welcome", &content("two")).await.unwrap();
    let other = store.save_new_version("other", &content("x")).await.unwrap();

    assert_eq!((v1.version, v2.version, other.version), (1, 2, 1));
    assert_eq!((v1.template_id.as_str(), v1.channels.clone()), ("welcome", content("one")));
    assert_eq!(store.get("welcome", None).await.unwrap(), Some(v2.clone()));
    assert_eq!(store.get("welcome", Some(1)).await.unwrap(), Some(v1));
    assert_eq!(store.get("welcome", Some(2)).await.unwrap(), Some(v2));
    assert_eq!(store.get("other", None).await.unwrap(), Some(other));
}

async fn an_unknown_template_or_version_is_none(store: &dyn TemplateStore) {
    store.save_new_version("welcome", &content("one")).await.unwrap();
    assert_eq!(store.get("nope", None).await.unwrap(), None);
    assert_eq!(store.get("nope", Some(1)).await.unwrap(), None);
    assert_eq!(store.get("welcome", Some(2)).await.unwrap(), None);
}

fn opted_out(pairs: &[(&str, Channel)]) -> Preferences {
    let mut preferences = Preferences::default();
    for (notification_type, channel) in pairs {
        preferences.opt_out(notification_type, *channel);
    }
    preferences
}

/// Saves `preferences` as the API does, whatever was there.
async fn save(store: &dyn PreferenceStore, user_id: &str, preferences: &Preferences) {
    herald_core::delivery::preferences::update(store, user_id, |p| *p = preferences.clone()).await.unwrap();
}

async fn preferences_never_saved_are_the_defaults(store: &dyn PreferenceStore) {
    assert_eq!(store.get("nobody").await.unwrap(), Preferences::default());
}

async fn saved_preferences_replace_the_previous_ones(store: &dyn PreferenceStore) {
    let first = opted_out(&[("marketing", Channel::Email), ("marketing", Channel::Sms), ("*", Channel::Push)]);
    save(store, "u1", &first).await;
    assert_eq!(store.get("u1").await.unwrap(), first);

    let second = opted_out(&[("digest", Channel::Webhook)]);
    save(store, "u1", &second).await;
    assert_eq!(store.get("u1").await.unwrap(), second);
    save(store, "u1", &Preferences::default()).await;
    assert_eq!(store.get("u1").await.unwrap(), Preferences::default());
}

async fn a_write_from_a_stale_read_is_a_conflict_and_changes_nothing(store: &dyn PreferenceStore) {
    let (_, never) = store.get_versioned("u1").await.unwrap();
    store.put_if("u1", &opted_out(&[("news", Channel::Sms)]), never).await.unwrap();
    let stale = store.put_if("u1", &opted_out(&[("marketing", Channel::Email)]), never).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let (stored, version) = store.get_versioned("u1").await.unwrap();
    assert_eq!((stored, version), (opted_out(&[("news", Channel::Sms)]), never + 1));
    assert_eq!(store.get("u1").await.unwrap(), opted_out(&[("news", Channel::Sms)]));
}

async fn get_many_returns_the_users_who_saved_preferences(store: &dyn PreferenceStore) {
    let mine = opted_out(&[("marketing", Channel::Email)]);
    save(store, "u1", &mine).await;
    save(store, "u2", &Preferences::default()).await;

    let asked = ["u1".to_owned(), "u2".to_owned(), "u3".to_owned(), "u1".to_owned()];
    let many = store.get_many(&asked).await.unwrap();

    assert_eq!(many.len(), 2, "{many:?}");
    assert_eq!((&many["u1"], &many["u2"]), (&mine, &Preferences::default()));
    assert!(store.get_many(&[]).await.unwrap().is_empty());
}

fn job(notification_id: &str, channel: Channel, recipients: usize) -> ChannelMessage {
    let target = |i: usize| match channel {
        Channel::Sms => Target::Phone(format!("+1555010{i}")),
        _ => Target::Email(format!("u{i}@example.com")),
    };
    ChannelMessage {
        notification_id: notification_id.into(),
        notification_type: "marketing".into(),
        channel,
        content: ContentRef::Template { template_id: "spring".into(), version: 3 },
        params: serde_json::json!({"name": "Ada", "n": 1.5}).as_object().unwrap().clone(),
        recipients: (0..recipients)
            .map(|i| ChannelRecipient {
                delivery_id: format!("d_{notification_id}_{i}"),
                user_id: Some(format!("u{i}")),
                target: target(i),
            })
            .collect(),
        campaign_id: Some("c_1".into()),
        attempt: 1,
        transactional: false,
    }
}

async fn each_job_is_received_once_on_its_channels_queue(subject: &Queues) {
    let mut jobs: Vec<ChannelMessage> = (0..12).map(|i| job(&format!("n{i}"), Channel::Email, 2)).collect();
    jobs.extend((0..3).map(|i| job(&format!("s{i}"), Channel::Sms, 1)));

    subject.queues.enqueue(&jobs, Duration::ZERO).await.unwrap();
    subject.queues.enqueue(&[], Duration::ZERO).await.unwrap();

    let mut received = subject.inbox.take(jobs.len()).await;
    received.sort_by(|a, b| a.1.notification_id.cmp(&b.1.notification_id));
    jobs.sort_by(|a, b| a.notification_id.cmp(&b.notification_id));
    assert!(received.iter().all(|(queue, job)| *queue == job.channel), "each job on its channel's queue");
    assert_eq!(received.into_iter().map(|(_, job)| job).collect::<Vec<_>>(), jobs);
    assert!(subject.inbox.take(0).await.is_empty(), "each job once");
}

/// Every page of `notification_id`'s deliveries, `limit` at most each.
async fn pages(store: &dyn DeliveryStore, notification_id: &str, limit: u32) -> Vec<Vec<ListedDelivery>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_page(notification_id, after.as_deref(), limit).await.unwrap();
        pages.push(page.deliveries);
        match page.next {
            Some(next) => after = Some(next),
            None => return pages,
        }
    }
}

async fn list_page_lists_each_delivery_once_in_pages_of_at_most_the_limit(store: &dyn DeliveryStore) {
    let mut mine: Vec<Delivery> = (0..5).map(|i| delivery("n1", &format!("u{i}"))).collect();
    store.create(&mine).await.unwrap();
    store.create(&[delivery("n2", "u1")]).await.unwrap();

    let pages = pages(store, "n1", 2).await;
    assert!(pages.len() >= 3 && pages.iter().all(|p| p.len() <= 2), "{pages:?}");
    let mut listed: Vec<Delivery> = pages.into_iter().flatten().map(|l| l.delivery).collect();
    listed.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    mine.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    assert_eq!(listed, mine);
    let none = store.list_page("n3", None, 2).await.unwrap();
    assert_eq!((none.deliveries.len(), none.next), (0, None));
}

async fn list_page_tells_a_final_error_from_one_to_try_again(store: &dyn DeliveryStore) {
    let (refused, throttled) = (delivery("n1", "u1"), delivery("n1", "u2"));
    store.create(&[refused.clone(), throttled.clone()]).await.unwrap();
    store.claim_all(&[claim(&refused), claim(&throttled)], at(1)).await.unwrap();
    store.finish(&refused.delivery_id, &change(DeliveryStatus::Error, 2), None, None, false).await.unwrap();
    store.finish(&throttled.delivery_id, &change(DeliveryStatus::Error, 2), None, None, true).await.unwrap();

    let listed: Vec<(String, bool)> =
        pages(store, "n1", 10).await.into_iter().flatten().map(|l| (l.delivery.delivery_id, l.final_error)).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&(refused.delivery_id, true)) && listed.contains(&(throttled.delivery_id, false)));
}

/// The receipt index is sparse: a store not built `with_receipt_lookup` (every worker but
/// SMS) writes nothing to it, so its sends cost no index write.
#[tokio::test]
async fn a_store_without_the_receipt_lookup_puts_no_delivery_in_the_receipt_index() {
    let (clients, tables) = super::moto_tables(&["DeliveriesTable"]).await;
    let store = DynamoDeliveryStore::new(clients.dynamodb(), &tables["DeliveriesTable"]);
    let d = delivery("n1", "u1");
    store.create(std::slice::from_ref(&d)).await.unwrap();
    store.claim_all(&[claim(&d)], at(1)).await.unwrap();
    store.finish(&d.delivery_id, &change(DeliveryStatus::Sent, 2), Some("ses"), Some("m-1"), false).await.unwrap();

    assert_eq!(store.find_by_provider_message("m-1").await.unwrap(), None);
    assert_eq!(store.get(&d.delivery_id).await.unwrap().unwrap().provider_message_id.as_deref(), Some("m-1"));
}
