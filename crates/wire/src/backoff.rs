//! Exponential backoff with full jitter (the AWS Architecture Blog's recommendation):
//! the n-th wait is uniform in [0, min(cap, base * 2^n)], so retrying clients spread out
//! instead of hammering a throttled service in lockstep.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration, max_attempts: u32) -> Self {
        Self { base, cap, max_attempts }
    }

    /// The ceiling of the wait before retry number `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random wait in [0, ceiling(retry)].
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry).as_nanos() as u64;
        Duration::from_nanos(rand::random_range(0..=ceiling))
    }

    /// Sleeps before retry number `retry`; false once the attempts are spent.
    pub async fn wait(&self, retry: u32) -> bool {
        if retry + 1 >= self.max_attempts {
            return false;
        }
        tokio::time::sleep(self.delay(retry)).await;
        true
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(25), Duration::from_secs(2), 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(70), 10);
        let ceilings: Vec<_> = (0..5).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [10, 20, 40, 70, 70]);
    }

    #[test]
    fn delay_never_exceeds_its_ceiling() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 10);
        for n in 0..8 {
            for _ in 0..100 {
                assert!(b.delay(n) <= b.ceiling(n));
            }
        }
    }

    #[test]
    fn huge_retry_numbers_do_not_overflow() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(u32::MAX), b.cap);
    }

    #[tokio::test]
    async fn wait_refuses_once_attempts_are_spent() {
        let b = Backoff::new(Duration::ZERO, Duration::ZERO, 3);
        assert!(b.wait(0).await);
        assert!(b.wait(1).await);
        assert!(!b.wait(2).await);
    }
}
