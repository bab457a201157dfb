//! A user's notification preferences: which types and channels they opted out of.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{channel::Channel, delivery::PreferenceStore, store::StoreError, validation::ValidationErrors};

/// Attempts of one read-modify-write before a conflict is reported: concurrent writes
/// to one user's preferences are rare, a handful of retries outlasts them.
pub const UPDATE_ATTEMPTS: usize = 5;

/// Applies `change` to a user's stored preferences with a conditional write, reading and
/// applying again when another write came first, so concurrent changes all stand.
pub async fn update(
    store: &dyn PreferenceStore,
    user_id: &str,
    change: impl Fn(&mut Preferences),
) -> Result<Preferences, StoreError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let (mut preferences, version) = store.get_versioned(user_id).await?;
        change(&mut preferences);
        match store.put_if(user_id, &preferences, version).await {
            Ok(()) => return Ok(preferences),
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// Stands for every notification type in `opt_outs`.
pub const ALL_TYPES: &str = "*";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Notification type (or `*` for all) → channels the user does not want it on.
    #[serde(default)]
    pub opt_outs: BTreeMap<String, BTreeSet<Channel>>,
}

impl Preferences {
    pub fn allows(&self, notification_type: &str, channel: Channel) -> bool {
        ![notification_type, ALL_TYPES].iter().any(|t| self.opt_outs.get(*t).is_some_and(|c| c.contains(&channel)))
    }

    pub fn opt_out(&mut self, notification_type: &str, channel: Channel) {
        self.opt_outs.entry(notification_type.to_owned()).or_default().insert(channel);
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        for name in self.opt_outs.keys() {
            let ok = name == ALL_TYPES
                || ((1..=64).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')));
            if !ok {
                errors.add(format!("opt_outs.{name}"), "must be * or a notification type (a-z, 0-9, '_', '-', '.')");
            }
        }
        errors.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opt_out_covers_its_type_and_channel_only() {
        let mut p = Preferences::default();
        p.opt_out("marketing", Channel::Email);
        assert!(!p.allows("marketing", Channel::Email));
        assert!(p.allows("marketing", Channel::Sms));
        assert!(p.allows("payment_due", Channel::Email));
    }

    #[test]
    fn an_opt_out_of_all_types_covers_every_type_on_that_channel() {
        let mut p = Preferences::default();
        p.opt_out(ALL_TYPES, Channel::Sms);
        assert!(!p.allows("payment_due", Channel::Sms));
        assert!(p.allows("payment_due", Channel::Push));
    }

    /// Reads like any store, but lets another opt-out land between each read and write.
    struct Racing {
        inner: crate::delivery::memory::MemoryPreferences,
        rival: std::sync::Mutex<Option<(&'static str, Channel)>>,
    }

    #[async_trait::async_trait]
    impl PreferenceStore for Racing {
        async fn get(&self, user_id: &str) -> Result<Preferences, StoreError> {
            self.inner.get(user_id).await
        }
        async fn get_many(&self, ids: &[String]) -> Result<std::collections::HashMap<String, Preferences>, StoreError> {
            self.inner.get_many(ids).await
        }
        async fn get_versioned(&self, user_id: &str) -> Result<(Preferences, u64), StoreError> {
            let read = self.inner.get_versioned(user_id).await?;
            let rival = self.rival.lock().unwrap().take();
            if let Some((notification_type, channel)) = rival {
                update(&self.inner, user_id, |p| p.opt_out(notification_type, channel)).await?;
            }
            Ok(read)
        }
        async fn put_if(&self, user_id: &str, p: &Preferences, version: u64) -> Result<(), StoreError> {
            self.inner.put_if(user_id, p, version).await
        }
    }

    #[tokio::test]
    async fn two_concurrent_opt_outs_both_stand() {
        let store = Racing { inner: Default::default(), rival: std::sync::Mutex::new(Some(("news", Channel::Sms))) };
        update(&store, "u1", |p| p.opt_out("marketing", Channel::Email)).await.unwrap();
        let stored = store.get("u1").await.unwrap();
        assert!(!stored.allows("marketing", Channel::Email));
        assert!(!stored.allows("news", Channel::Sms), "the concurrent opt-out was lost: {stored:?}");
    }

    #[test]
    fn bad_type_names_are_refused() {
        let mut p = Preferences::default();
        p.opt_out("Bad Name", Channel::Sms);
        assert_eq!(p.validate().unwrap_err().0[0].field, "opt_outs.Bad Name");
    }
}
