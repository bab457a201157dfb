//! Per-user, per-channel rate limits over fixed windows: at most `limit` sends in each
//! window of `window` seconds. The counter lives in a store (an atomic increment with an
//! expiry); this module only names the window and judges the count.

use serde::{Deserialize, Serialize};

use crate::channel::Channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    /// Window length in seconds.
    pub window: u64,
}

/// One counter: which user, channel and window it counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowKey {
    pub key: String,
    /// Unix seconds after which the counter is useless (the store may expire it then).
    pub expires_at: u64,
}

impl RateLimit {
    /// The counter a send at `now` (unix seconds) increments.
    pub fn window_for(&self, user_id: &str, channel: Channel, now: u64) -> WindowKey {
        let window = self.window.max(1);
        let start = now - now % window;
        WindowKey { key: format!("{user_id}#{channel}#{start}"), expires_at: start + window }
    }

    /// Whether the send that brought the counter to `count` may go.
    pub fn allows(&self, count: u64) -> bool {
        count <= u64::from(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOURLY_3: RateLimit = RateLimit { limit: 3, window: 3600 };

    #[test]
    fn sends_in_one_window_share_a_counter() {
        let a = HOURLY_3.window_for("u1", Channel::Sms, 7200);
        let b = HOURLY_3.window_for("u1", Channel::Sms, 7200 + 3599);
        assert_eq!(a, b);
        assert_eq!(a.expires_at, 10800);
    }

    #[test]
    fn the_next_window_starts_a_new_counter() {
        assert_ne!(HOURLY_3.window_for("u1", Channel::Sms, 7199), HOURLY_3.window_for("u1", Channel::Sms, 7200));
    }

    #[test]
    fn users_and_channels_are_counted_apart() {
        let base = HOURLY_3.window_for("u1", Channel::Sms, 100);
        assert_ne!(base, HOURLY_3.window_for("u2", Channel::Sms, 100));
        assert_ne!(base, HOURLY_3.window_for("u1", Channel::Email, 100));
    }

    #[test]
    fn the_limit_is_inclusive() {
        assert!(HOURLY_3.allows(3));
        assert!(!HOURLY_3.allows(4));
    }
}
