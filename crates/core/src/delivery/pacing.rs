//! Pacing: at most so many provider sends per second from one worker invocation, so that a
//! channel as a whole (that rate × the queue's maximum concurrency) stays within its
//! provider's quota (SES's maximum send rate, SNS's SMS and push rates).

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Spaces sends evenly: each send takes the next free slot, `1 / rate` after the last.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer of `per_second` sends a second; None for a rate that is not positive.
    pub fn new(per_second: f64) -> Option<Self> {
        (per_second.is_finite() && per_second > 0.0)
            .then(|| Self { interval: Duration::from_secs_f64(1.0 / per_second), next: Mutex::new(None) })
    }

    /// How many more sends this pacer lets start within `budget` from now: what a
    /// deadline-aware worker claims, so that it never starts what it cannot finish.
    pub fn sends_within(&self, budget: Duration) -> usize {
        let next = *self.next.lock().expect("pacer lock");
        let backlog = next.map_or(Duration::ZERO, |n| n.saturating_duration_since(Instant::now()));
        (budget.saturating_sub(backlog).as_secs_f64() / self.interval.as_secs_f64()).floor() as usize
    }

    /// The sends of one second, at least one: what a paced worker claims at a time.
    pub fn sends_per_second(&self) -> usize {
        ((1.0 / self.interval.as_secs_f64()).ceil() as usize).max(1)
    }

    /// Waits until the next slot is due, without taking it.
    pub async fn free(&self) {
        let next = *self.next.lock().expect("pacer lock");
        if let Some(at) = next {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Waits for this send's slot.
    pub async fn ready(&self) {
        let at = {
            let mut next = self.next.lock().expect("pacer lock");
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + self.interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sends_within_a_budget_follow_the_rate() {
        let pacer = Pacer::new(2.8).unwrap();
        assert_eq!(pacer.sends_within(Duration::from_secs(8)), 22);
        assert_eq!(pacer.sends_within(Duration::ZERO), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_already_taken_leave_fewer_sends_within_a_budget() {
        let pacer = Pacer::new(1.0).unwrap();
        for _ in 0..3 {
            pacer.ready().await;
        }
        // The next free slot is a second away.
        assert_eq!(pacer.sends_within(Duration::from_secs(5)), 4);
    }

    #[test]
    fn a_second_of_sends_is_rounded_up_and_at_least_one() {
        assert_eq!(Pacer::new(2.8).unwrap().sends_per_second(), 3);
        assert_eq!(Pacer::new(0.5).unwrap().sends_per_second(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_free_slot_takes_none() {
        let pacer = Pacer::new(1.0).unwrap();
        pacer.ready().await;
        let before = tokio::time::Instant::now();
        pacer.free().await;
        pacer.free().await;
        assert_eq!(before.elapsed(), Duration::from_secs(1));
        pacer.ready().await;
        assert_eq!(before.elapsed(), Duration::from_secs(1), "the slot waited for is still free");
    }

    #[test]
    fn a_rate_that_is_not_positive_paces_nothing() {
        assert!(Pacer::new(0.0).is_none());
        assert!(Pacer::new(-1.0).is_none());
        assert!(Pacer::new(f64::NAN).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sends_are_spaced_by_the_rate_even_when_they_ask_at_once() {
        let pacer = Pacer::new(10.0).unwrap();
        let start = tokio::time::Instant::now();
        futures_util::future::join_all((0..5).map(|_| pacer.ready())).await;
        // Slots at 0, 100, 200, 300 and 400 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pacer_lets_the_next_send_go_at_once() {
        let pacer = Pacer::new(2.0).unwrap();
        pacer.ready().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = tokio::time::Instant::now();
        pacer.ready().await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}
