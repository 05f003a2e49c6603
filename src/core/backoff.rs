//! Capped, jittered exponential backoff for database calls that failed.

use std::time::Duration;

/// First delay after a transient database error.
pub const DB_BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest delay between two tries of a failing database call.
pub const DB_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Consecutive failures of one kind of call, and the delay they earn.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure and returns how long to wait before trying again:
    /// the base doubled per consecutive failure, capped, with equal jitter
    /// from `unit` (uniform in `[0, 1)`) so that workers do not retry in step.
    pub fn fail(&mut self, unit: f64) -> Duration {
        let doublings = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let capped = (DB_BACKOFF_BASE * (1u32 << doublings)).min(DB_BACKOFF_MAX);
        capped / 2 + (capped / 2).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Forgets earlier failures after a call succeeded.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_max() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..12).map(|_| b.fail(1.0)).collect();
        assert_eq!(delays[0], DB_BACKOFF_BASE);
        assert_eq!(delays[1], DB_BACKOFF_BASE * 2);
        assert_eq!(delays[11], DB_BACKOFF_MAX);
    }

    #[test]
    fn backoff_jitter_keeps_at_least_half() {
        let mut b = Backoff::default();
        assert_eq!(b.fail(0.0), DB_BACKOFF_BASE / 2);
    }

    #[test]
    fn success_resets_the_backoff() {
        let mut b = Backoff::default();
        b.fail(1.0);
        b.fail(1.0);
        b.succeed();
        assert_eq!(b.fail(1.0), DB_BACKOFF_BASE);
    }
}
