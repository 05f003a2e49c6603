//! Points in time as the core sees them.
//!
//! The core never reads a clock: every event arrives with "now", taken by the
//! driver from the port. Times are whole milliseconds since the Unix epoch.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The time `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time left from `self` until `later`, zero if `later` has passed.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        let ms = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, rhs: Duration) -> Timestamp {
        let ms = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_zero_once_the_time_has_passed() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.until(Timestamp::from_millis(400)), Duration::ZERO);
        assert_eq!(
            t.until(Timestamp::from_millis(1_250)),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn adding_a_huge_duration_saturates() {
        let t = Timestamp::from_millis(5) + Duration::from_secs(u64::MAX);
        assert_eq!(t, Timestamp::from_millis(u64::MAX));
    }
}
