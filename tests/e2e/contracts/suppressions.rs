//! `SuppressionStore`: a list per channel of normalised addresses, each with its reason;
//! entries read, replaced, removed and listed by page; soft bounces counted once per
//! delivery in a window sliding back from each bounce, and forgotten with the entry.

use chrono::Utc;
use herald_aws::DynamoSuppressionStore;
use herald_core::{
    channel::Channel,
    suppressions::{
        SoftBouncePolicy, Suppression, SuppressionReason, SuppressionStore, address_hash, memory::MemorySuppressions,
    },
};

contract!(suppression_store: memory_suppressions, aws_suppressions;
    suppressed_among_finds_the_suppressed_addresses_only,
    an_address_is_suppressed_whatever_its_case_and_surrounding_space,
    an_address_suppressed_on_one_channel_is_not_on_another,
    an_entry_reads_back_as_written_and_a_new_one_replaces_it,
    a_removed_address_is_no_longer_suppressed,
    the_list_pages_through_every_entry_once_and_filters_by_channel,
    a_soft_bounce_counts_once_per_delivery_in_its_window,
    soft_bounces_either_side_of_a_fixed_windows_edge_add_up,
    a_soft_bounce_older_than_the_window_no_longer_counts,
    a_removed_address_counts_its_soft_bounces_afresh,
);

async fn memory_suppressions() -> Box<dyn SuppressionStore> {
    Box::new(MemorySuppressions::default())
}

async fn aws_suppressions() -> Box<dyn SuppressionStore> {
    let (clients, tables) = super::moto_tables(&["SuppressionsTable"]).await;
    Box::new(DynamoSuppressionStore::new(clients.dynamodb(), &tables["SuppressionsTable"]))
}

fn entry(channel: Channel, reason: SuppressionReason) -> Suppression {
    // A second's precision, as stored and read back.
    let suppressed_at = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    Suppression { channel, reason, suppressed_at, delivery_id: Some("d_1".into()) }
}

async fn suppressed_among_finds_the_suppressed_addresses_only(store: &dyn SuppressionStore) {
    store.suppress("bounced@example.com", &entry(Channel::Email, SuppressionReason::HardBounce)).await.unwrap();
    store.suppress("complained@example.com", &entry(Channel::Email, SuppressionReason::Complaint)).await.unwrap();

    let asked: Vec<String> =
        ["bounced@example.com", "fine@example.com", "complained@example.com"].map(str::to_owned).into();
    let found = store.suppressed_among(Channel::Email, &asked).await.unwrap();

    assert_eq!(found, ["bounced@example.com".to_owned(), "complained@example.com".to_owned()].into());
    assert!(store.suppressed_among(Channel::Email, &[]).await.unwrap().is_empty());
}

async fn an_address_is_suppressed_whatever_its_case_and_surrounding_space(store: &dyn SuppressionStore) {
    store.suppress(" Bounced@Example.COM", &entry(Channel::Email, SuppressionReason::HardBounce)).await.unwrap();

    let asked = ["bounced@example.com".to_owned(), "other@example.com".to_owned()];
    assert_eq!(
        store.suppressed_among(Channel::Email, &asked).await.unwrap(),
        ["bounced@example.com".to_owned()].into()
    );
    let asked = ["BOUNCED@example.com ".to_owned()];
    assert_eq!(
        store.suppressed_among(Channel::Email, &asked).await.unwrap(),
        ["BOUNCED@example.com ".to_owned()].into()
    );
}

async fn an_address_suppressed_on_one_channel_is_not_on_another(store: &dyn SuppressionStore) {
    store.suppress("+15550100", &entry(Channel::Sms, SuppressionReason::Manual)).await.unwrap();

    let asked = ["+15550100".to_owned()];
    assert_eq!(store.suppressed_among(Channel::Sms, &asked).await.unwrap().len(), 1);
    assert!(store.suppressed_among(Channel::Email, &asked).await.unwrap().is_empty());
    assert_eq!(store.get(Channel::Email, "+15550100").await.unwrap(), None);
}

async fn an_entry_reads_back_as_written_and_a_new_one_replaces_it(store: &dyn SuppressionStore) {
    let soft = entry(Channel::Email, SuppressionReason::SoftBounces);
    store.suppress("a@example.com", &soft).await.unwrap();
    assert_eq!(store.get(Channel::Email, "A@example.com").await.unwrap(), Some(soft));

    let complaint = Suppression { delivery_id: None, ..entry(Channel::Email, SuppressionReason::Complaint) };
    store.suppress("a@example.com", &complaint).await.unwrap();
    assert_eq!(store.get(Channel::Email, "a@example.com").await.unwrap(), Some(complaint));
    assert_eq!(store.get(Channel::Email, "b@example.com").await.unwrap(), None);
}

async fn a_removed_address_is_no_longer_suppressed(store: &dyn SuppressionStore) {
    store.suppress("a@example.com", &entry(Channel::Email, SuppressionReason::Manual)).await.unwrap();

    assert!(store.remove(Channel::Email, "a@example.com").await.unwrap());
    assert!(store.suppressed_among(Channel::Email, &["a@example.com".to_owned()]).await.unwrap().is_empty());
    assert!(!store.remove(Channel::Email, "a@example.com").await.unwrap(), "removed twice");
}

async fn the_list_pages_through_every_entry_once_and_filters_by_channel(store: &dyn SuppressionStore) {
    for i in 0..5 {
        store.suppress(&format!("u{i}@example.com"), &entry(Channel::Email, SuppressionReason::Manual)).await.unwrap();
    }
    store.suppress("+15550100", &entry(Channel::Sms, SuppressionReason::Manual)).await.unwrap();
    // A soft-bounce counter is not an entry.
    let window = SoftBouncePolicy::default().window_for(Channel::Email, "x@example.com", Utc::now());
    store.count_soft_bounce(&window, "d_9").await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(Some(Channel::Email), after.as_deref(), 2).await.unwrap();
        assert!(page.suppressions.len() <= 2, "{page:?}");
        seen.extend(page.suppressions.into_iter().map(|s| (s.address_hash, s.suppression.channel)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    let mut expected: Vec<_> =
        (0..5).map(|i| (address_hash(Channel::Email, &format!("u{i}@example.com")), Channel::Email)).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let all = store.list(None, None, 100).await.unwrap();
    assert_eq!((all.suppressions.len(), all.next), (6, None));
}

async fn a_soft_bounce_counts_once_per_delivery_in_its_window(store: &dyn SuppressionStore) {
    let window = SoftBouncePolicy::default().window_for(Channel::Email, "a@example.com", Utc::now());
    assert_eq!(store.count_soft_bounce(&window, "d_1").await.unwrap(), 1);
    assert_eq!(store.count_soft_bounce(&window, "d_1").await.unwrap(), 1, "the same delivery again");
    assert_eq!(store.count_soft_bounce(&window, "d_2").await.unwrap(), 2);
    let other = SoftBouncePolicy::default().window_for(Channel::Email, "b@example.com", Utc::now());
    assert_eq!(store.count_soft_bounce(&other, "d_3").await.unwrap(), 1);
    assert!(store.suppressed_among(Channel::Email, &["a@example.com".to_owned()]).await.unwrap().is_empty());
}

fn at(seconds: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(seconds, 0).unwrap()
}

const WEEK: i64 = 7 * 86_400;

async fn soft_bounces_either_side_of_a_fixed_windows_edge_add_up(store: &dyn SuppressionStore) {
    let policy = SoftBouncePolicy { bounces: 3, window_days: 7 };
    // Where a fixed window of a week would have started afresh.
    let edge = Utc::now().timestamp() / WEEK * WEEK;
    let before = policy.window_for(Channel::Email, "a@example.com", at(edge - 60));
    let after = policy.window_for(Channel::Email, "a@example.com", at(edge + 60));
    assert_eq!(store.count_soft_bounce(&before, "d_1").await.unwrap(), 1);
    assert_eq!(store.count_soft_bounce(&after, "d_2").await.unwrap(), 2);
}

async fn a_soft_bounce_older_than_the_window_no_longer_counts(store: &dyn SuppressionStore) {
    let policy = SoftBouncePolicy { bounces: 3, window_days: 7 };
    let now = Utc::now().timestamp();
    let first = policy.window_for(Channel::Email, "a@example.com", at(now - WEEK - 60));
    let second = policy.window_for(Channel::Email, "a@example.com", at(now - WEEK + 60));
    let third = policy.window_for(Channel::Email, "a@example.com", at(now));
    assert_eq!(store.count_soft_bounce(&first, "d_1").await.unwrap(), 1);
    assert_eq!(store.count_soft_bounce(&second, "d_2").await.unwrap(), 2);
    assert_eq!(store.count_soft_bounce(&third, "d_3").await.unwrap(), 2, "d_1 is out of the week before d_3");
    assert_eq!(store.count_soft_bounce(&third, "d_3").await.unwrap(), 2, "the same bounce again");
}

async fn a_removed_address_counts_its_soft_bounces_afresh(store: &dyn SuppressionStore) {
    let window = SoftBouncePolicy::default().window_for(Channel::Email, "a@example.com", Utc::now());
    store.count_soft_bounce(&window, "d_1").await.unwrap();
    store.count_soft_bounce(&window, "d_2").await.unwrap();
    store.suppress("a@example.com", &entry(Channel::Email, SuppressionReason::SoftBounces)).await.unwrap();
    let other = SoftBouncePolicy::default().window_for(Channel::Email, "b@example.com", Utc::now());
    store.count_soft_bounce(&other, "d_9").await.unwrap();

    assert!(store.remove(Channel::Email, "A@example.com").await.unwrap());
    assert_eq!(store.count_soft_bounce(&window, "d_3").await.unwrap(), 1);
    assert_eq!(store.count_soft_bounce(&other, "d_10").await.unwrap(), 2, "another address keeps its bounces");
}
