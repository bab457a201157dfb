//! A user's notification preferences: which types and channels they opted out of.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{delivery::Channel, validation::ValidationErrors};

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

    #[test]
    fn bad_type_names_are_refused() {
        let mut p = Preferences::default();
        p.opt_out("Bad Name", Channel::Sms);
        assert_eq!(p.validate().unwrap_err().0[0].field, "opt_outs.Bad Name");
    }
}
