//! Retry delays: fixed or exponential, capped, with optional jitter.

use std::time::Duration;

use super::config::{Jitter, RetryConfig, RetryStrategy};

/// Turns an attempt number into the delay before the next attempt.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    strategy: RetryStrategy,
    delay: Duration,
    max_delay: Duration,
    jitter: Jitter,
    limit: u32,
}

impl RetryPolicy {
    /// The policy described by the `retry` group.
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            strategy: config.strategy,
            delay: Duration::from_secs(config.delay_seconds.into()),
            max_delay: Duration::from_secs(config.max_delay_seconds.into()),
            jitter: config.jitter,
            limit: config.limit,
        }
    }

    /// Whether a message whose attempt `attempt` (1-based) just failed may
    /// run again: the first attempt plus `limit` retries.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt <= self.limit
    }

    /// Whether attempt `attempt` (1-based) is beyond what the policy allows
    /// at all, which happens when workers died while running the message.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt > self.limit.saturating_add(1)
    }

    /// The delay before retrying after attempt `attempt` (1-based) failed,
    /// without jitter. Exponential delays double per attempt from `delay`
    /// and stop at `max_delay`; no attempt number overflows.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        match self.strategy {
            RetryStrategy::Fixed => self.delay,
            RetryStrategy::Exponential => {
                let doublings = attempt.saturating_sub(1);
                let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
                self.delay
                    .checked_mul(factor)
                    .map_or(self.max_delay, |d| d.min(self.max_delay))
            }
        }
    }

    /// The delay before retrying after attempt `attempt` failed, jittered
    /// with `unit`, a uniform random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt);
        let unit = unit.clamp(0.0, 1.0);
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(unit),
            Jitter::Equal => base / 2 + (base / 2).mul_f64(unit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: RetryStrategy, delay: u32, max: u32, jitter: Jitter) -> RetryPolicy {
        RetryPolicy::new(&RetryConfig {
            limit: 3,
            strategy,
            delay_seconds: delay,
            max_delay_seconds: max,
            jitter,
        })
    }

    #[test]
    fn fixed_delay_is_the_same_for_every_attempt() {
        let p = policy(RetryStrategy::Fixed, 7, 300, Jitter::None);
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(7));
        assert_eq!(p.delay(9, 0.5), Duration::from_secs(7));
    }

    #[test]
    fn exponential_delay_doubles_then_caps() {
        let p = policy(RetryStrategy::Exponential, 3, 20, Jitter::None);
        let secs: Vec<u64> = (1..=5).map(|a| p.delay(a, 0.0).as_secs()).collect();
        assert_eq!(secs, vec![3, 6, 12, 20, 20]);
    }

    #[test]
    fn exponential_delay_of_attempt_60_is_the_cap() {
        let p = policy(RetryStrategy::Exponential, 3, 604_800, Jitter::None);
        assert_eq!(p.delay(60, 0.0), Duration::from_secs(604_800));
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(604_800));
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_delay() {
        let p = policy(RetryStrategy::Fixed, 10, 10, Jitter::Full);
        assert_eq!(p.delay(1, 0.0), Duration::ZERO);
        assert_eq!(p.delay(1, 0.25), Duration::from_millis(2_500));
        assert!(p.delay(1, 0.999_999) <= Duration::from_secs(10));
    }

    #[test]
    fn equal_jitter_keeps_at_least_half_the_delay() {
        let p = policy(RetryStrategy::Fixed, 10, 10, Jitter::Equal);
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(5));
        assert_eq!(p.delay(1, 0.5), Duration::from_millis(7_500));
        assert!(p.delay(1, 0.999_999) <= Duration::from_secs(10));
    }

    #[test]
    fn retry_limit_counts_retries_after_the_first_attempt() {
        let p = policy(RetryStrategy::Fixed, 1, 1, Jitter::None);
        assert!(p.may_retry(1));
        assert!(p.may_retry(3));
        assert!(!p.may_retry(4));
    }
}
