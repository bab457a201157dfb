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

/// Whether `key` is one the suppressions table is keyed by (an entry's, or a soft-bounce
/// counter's): what a listing's cursor must be.
pub fn is_key(key: &str) -> bool {
    let hash = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    let entry = |k: &str| {
        k.split_once('#').is_some_and(|(channel, h)| SUPPRESSIBLE.iter().any(|c| c.as_str() == channel) && hash(h))
    };
    match key.strip_prefix("soft#").and_then(|rest| rest.rsplit_once('#')) {
        Some((entry_key, start)) => entry(entry_key) && !start.is_empty() && start.bytes().all(|b| b.is_ascii_digit()),
        None => entry(key),
    }
}

/// When soft bounces suppress an address: `bounces` distinct deliveries bounced soft
/// within one fixed window of `window_days` days.
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

/// The counter of one address's soft bounces in one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoftBounceWindow {
    /// `soft#<address hash>#<window start, unix seconds>`.
    pub key: String,
    /// Unix seconds after which the counter is useless (the store may expire it then).
    pub expires_at: i64,
}

impl SoftBouncePolicy {
    pub fn window_for(&self, channel: Channel, address: &str, at: DateTime<Utc>) -> SoftBounceWindow {
        let length = i64::from(self.window_days.max(1)) * 86_400;
        let start = at.timestamp() - at.timestamp().rem_euclid(length);
        SoftBounceWindow { key: format!("soft#{}#{start}", address_hash(channel, address)), expires_at: start + length }
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
        assert!(is_key(&entry) && is_key(&soft), "{entry} {soft}");
        for bad in
            ["", "email#", "push#00", "email#xyz", "soft#email#00#1", &format!("{entry}#"), &format!("soft#{entry}#")]
        {
            assert!(!is_key(bad), "{bad}");
        }
    }

    #[test]
    fn bounces_in_one_window_share_a_counter_and_the_next_window_starts_afresh() {
        let policy = SoftBouncePolicy { bounces: 3, window_days: 7 };
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let week = 7 * 86_400;
        let first = policy.window_for(Channel::Email, "a@example.com", at(week));
        assert_eq!(first, policy.window_for(Channel::Email, "A@example.com", at(2 * week - 1)));
        assert_eq!(first.expires_at, 2 * week);
        assert_ne!(first, policy.window_for(Channel::Email, "a@example.com", at(2 * week)));
    }
}
