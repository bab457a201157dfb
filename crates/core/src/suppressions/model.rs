use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::channel::Channel;

/// Why an address is on the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// The recipient's server said the address does not exist.
    HardBounce,
    /// The recipient marked a message as spam.
    Complaint,
    /// Soft bounces (a full mailbox, say) kept coming within the policy's window.
    SoftBounces,
    /// An operator put it there (`PUT /v1/suppressions/{channel}/{address}`).
    Manual,
    /// The phone's owner opted out of SMS (SNS: "Phone has opted out").
    OptedOut,
    /// The carrier or the phone blocks SMS to the number, or it is on a blocked list.
    Blocked,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::SoftBounces => "soft_bounces",
            SuppressionReason::Manual => "manual",
            SuppressionReason::OptedOut => "opted_out",
            SuppressionReason::Blocked => "blocked",
        }
    }
}

/// One address's entry. The address itself is not kept (stores key it by a hash), so the
/// list outlives a user's erasure without holding their address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub channel: Channel,
    pub reason: SuppressionReason,
    pub suppressed_at: DateTime<Utc>,
    /// The delivery whose feedback put it there; None when an operator did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
}

/// An entry as a listing shows it: by its address's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedSuppression {
    pub address_hash: String,
    #[serde(flatten)]
    pub suppression: Suppression,
}

/// A page of the list (see `SuppressionStore::list`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuppressionPage {
    pub suppressions: Vec<ListedSuppression>,
    /// Where the next page starts; None after the last.
    pub next: Option<String>,
}

/// The channels whose addresses can be suppressed: those a provider reports bounces and
/// complaints for. (A push token the push service reports gone is disabled on the
/// user's profile instead; a webhook URL is the customer's own.)
pub const SUPPRESSIBLE: [Channel; 2] = [Channel::Email, Channel::Sms];

/// The form an address is compared in: `Bob@Example.com ` and `bob@example.com` are one.
pub fn normalised(address: &str) -> String {
    address.trim().to_lowercase()
}

/// The key of an address's entry: its channel and the SHA-256 of its normalised form.
pub fn address_hash(channel: Channel, address: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{channel}#{}", hex::encode(Sha256::digest(normalised(address).as_bytes())))
}

/// Whether `key` is one the suppressions table is keyed by (an entry's, or an address's
/// soft bounces', `soft#<entry key>`): what a listing's cursor must be. The soft-bounce
/// counters of fixed windows, `soft#<entry key>#<window start>`, are keys too until their
/// TTL removes them.
pub fn is_key(key: &str) -> bool {
    let hash = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    let entry = |k: &str| {
        k.split_once('#').is_some_and(|(channel, h)| SUPPRESSIBLE.iter().any(|c| c.as_str() == channel) && hash(h))
    };
    let Some(rest) = key.strip_prefix("soft#") else { return entry(key) };
    entry(rest)
        || rest.rsplit_once('#').is_some_and(|(entry_key, start)| {
            entry(entry_key) && !start.is_empty() && start.bytes().all(|b| b.is_ascii_digit())
        })
}

/// When soft bounces suppress an address: `bounces` distinct deliveries bounced soft
/// within `window_days` days (a sliding window: the days before each bounce).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftBouncePolicy {
    pub bounces: u32,
    pub window_days: u32,
}

impl Default for SoftBouncePolicy {
    /// SES's own guidance treats repeated soft bounces as a sign to stop; three in a week
    /// is the threshold chosen here (configurable by the template's parameters).
    fn default() -> Self {
        Self { bounces: 3, window_days: 7 }
    }
}

/// The key of an address's soft bounces: `soft#<address hash>`.
pub fn soft_bounce_key(channel: Channel, address: &str) -> String {
    format!("soft#{}", address_hash(channel, address))
}

/// One soft bounce of an address, and the window it counts in: the `window_days` before it.
/// The store keeps an address's bounces as entries `<delivery id>#<bounce time>`, so a
/// repeated report is the same entry, and bounces either side of any day add up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoftBounceWindow {
    /// `soft_bounce_key` of the address.
    pub key: String,
    /// The bounce's time, unix seconds.
    pub at: i64,
    /// Unix seconds after which the address's bounces are useless, if no other comes (the
    /// store may expire them then).
    pub expires_at: i64,
    length: i64,
}

impl SoftBounceWindow {
    /// The entry recording this bounce of `delivery_id`.
    pub fn entry(&self, delivery_id: &str) -> String {
        format!("{delivery_id}#{}", self.at)
    }

    /// Whether an entry is too old to count in this window (or any later one).
    pub fn is_stale(&self, entry: &str) -> bool {
        entry_time(entry).is_none_or(|t| t <= self.at - self.length)
    }

    /// How many distinct deliveries the entries name within the window (entries of bounces
    /// reported late, after this one, count too).
    pub fn count<'a>(&self, entries: impl IntoIterator<Item = &'a str>) -> u32 {
        let deliveries: std::collections::HashSet<&str> = entries
            .into_iter()
            .filter(|e| !self.is_stale(e))
            .filter_map(|e| e.rsplit_once('#').map(|(delivery, _)| delivery))
            .collect();
        deliveries.len() as u32
    }

    /// When the entries' newest bounce leaves the window.
    pub fn expiry_of<'a>(&self, entries: impl IntoIterator<Item = &'a str>) -> i64 {
        entries.into_iter().filter_map(entry_time).max().unwrap_or(self.at).max(self.at) + self.length
    }
}

fn entry_time(entry: &str) -> Option<i64> {
    entry.rsplit_once('#').and_then(|(_, t)| t.parse().ok())
}

impl SoftBouncePolicy {
    pub fn window_for(&self, channel: Channel, address: &str, at: DateTime<Utc>) -> SoftBounceWindow {
        let length = i64::from(self.window_days.max(1)) * 86_400;
        let at = at.timestamp();
        SoftBounceWindow { key: soft_bounce_key(channel, address), at, expires_at: at + length, length }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_hashes_alike_whatever_its_case_and_surrounding_space() {
        assert_eq!(address_hash(Channel::Email, " Bob@Example.COM"), address_hash(Channel::Email, "bob@example.com"));
    }

    #[test]
    fn the_same_address_on_two_channels_is_two_entries() {
        assert_ne!(address_hash(Channel::Email, "+33600000000"), address_hash(Channel::Sms, "+33600000000"));
    }

    #[test]
    fn an_entry_key_holds_no_address_in_clear() {
        let key = address_hash(Channel::Email, "bob@example.com");
        assert!(key.starts_with("email#") && !key.contains("bob"), "{key}");
    }

    #[test]
    fn only_the_tables_keys_are_cursors() {
        let entry = address_hash(Channel::Sms, "+33612345678");
        let soft = SoftBouncePolicy::default().window_for(Channel::Email, "a@example.com", Utc::now()).key;
        let fixed_window = format!("{soft}#1764547200");
        assert!(is_key(&entry) && is_key(&soft) && is_key(&fixed_window), "{entry} {soft}");
        for bad in [
            "",
            "email#",
            "push#00",
            "email#xyz",
            "soft#email#00#1",
            "soft#",
            &format!("{entry}#"),
            &format!("soft#{entry}#"),
        ] {
            assert!(!is_key(bad), "{bad}");
        }
    }

    #[test]
    fn a_window_counts_distinct_deliveries_of_the_days_before_its_bounce() {
        let policy = SoftBouncePolicy { bounces: 3, window_days: 7 };
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let week = 7 * 86_400;
        let window = policy.window_for(Channel::Email, "a@example.com", at(2 * week));
        assert_eq!(window.key, policy.window_for(Channel::Email, "A@example.com", at(week)).key);
        let entries = [format!("d_1#{}", week), format!("d_2#{}", week + 1), format!("d_2#{}", week + 2)];
        let entries = entries.iter().map(String::as_str);
        assert_eq!(window.count(entries.clone()), 1, "d_1 is a week old, d_2 counts once");
        assert!(window.is_stale(&format!("d_1#{week}")));
        assert_eq!(window.expiry_of(entries), 3 * week);
    }
}
