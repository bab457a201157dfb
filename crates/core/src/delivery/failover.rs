//! A circuit breaker for provider failover: after `threshold` consecutive failures of the
//! primary provider, sends go to the secondary for `cooldown`; then one trial send goes to
//! the primary, and its outcome closes or re-opens the circuit.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Primary,
    Secondary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A trial send is with the primary; others keep using the secondary until it reports.
    HalfOpen,
}

#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: State,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { threshold: threshold.max(1), cooldown, state: State::Closed { failures: 0 } }
    }

    /// Which provider the next send should use.
    pub fn choose(&mut self, now: Instant) -> Provider {
        match self.state {
            State::Closed { .. } => Provider::Primary,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Provider::Primary
            }
            State::Open { .. } | State::HalfOpen => Provider::Secondary,
        }
    }

    pub fn record(&mut self, provider: Provider, succeeded: bool, now: Instant) {
        if provider == Provider::Secondary {
            return;
        }
        self.state = match (self.state, succeeded) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => {
                State::Closed { failures: failures + 1 }
            }
            (_, false) => State::Open { until: now + self.cooldown },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn fail_primary(breaker: &mut CircuitBreaker, times: u32, now: Instant) {
        for _ in 0..times {
            let provider = breaker.choose(now);
            breaker.record(provider, false, now);
        }
    }

    #[test]
    fn the_primary_serves_while_failures_stay_under_the_threshold() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(3, COOLDOWN);
        fail_primary(&mut breaker, 2, now);
        assert_eq!(breaker.choose(now), Provider::Primary);
    }

    #[test]
    fn a_success_resets_the_count_of_failures() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(3, COOLDOWN);
        fail_primary(&mut breaker, 2, now);
        breaker.record(Provider::Primary, true, now);
        fail_primary(&mut breaker, 2, now);
        assert_eq!(breaker.choose(now), Provider::Primary);
    }

    #[test]
    fn repeated_failures_send_traffic_to_the_secondary() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(3, COOLDOWN);
        fail_primary(&mut breaker, 3, now);
        assert_eq!(breaker.choose(now), Provider::Secondary);
        assert_eq!(breaker.choose(now + COOLDOWN / 2), Provider::Secondary);
    }

    #[test]
    fn after_the_cooldown_one_trial_goes_to_the_primary() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(3, COOLDOWN);
        fail_primary(&mut breaker, 3, now);
        let later = now + COOLDOWN;
        assert_eq!(breaker.choose(later), Provider::Primary);
        assert_eq!(breaker.choose(later), Provider::Secondary, "only one trial at a time");
    }

    #[test]
    fn a_successful_trial_closes_the_circuit_and_a_failed_one_reopens_it() {
        let now = Instant::now();
        let mut ok = CircuitBreaker::new(1, COOLDOWN);
        fail_primary(&mut ok, 1, now);
        let trial = ok.choose(now + COOLDOWN);
        ok.record(trial, true, now + COOLDOWN);
        assert_eq!(ok.choose(now + COOLDOWN), Provider::Primary);

        let mut bad = CircuitBreaker::new(1, COOLDOWN);
        fail_primary(&mut bad, 1, now);
        let trial = bad.choose(now + COOLDOWN);
        bad.record(trial, false, now + COOLDOWN);
        assert_eq!(bad.choose(now + COOLDOWN + COOLDOWN / 2), Provider::Secondary);
    }

    #[test]
    fn outcomes_of_the_secondary_do_not_move_the_circuit() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(1, COOLDOWN);
        breaker.record(Provider::Secondary, false, now);
        assert_eq!(breaker.choose(now), Provider::Primary);
    }
}
