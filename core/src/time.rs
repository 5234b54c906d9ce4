//! The core's own notion of time: milliseconds on a monotonic clock the driver reads.
//!
//! The core never reads a clock. Every method that depends on time takes `now: Instant`,
//! so a simulation can run on virtual time and a board can use any tick source.

use core::ops::Add;

/// A point on the driver's monotonic clock, in milliseconds since an arbitrary origin.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    millis: u64,
}

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant { millis: 0 };

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant { millis }
    }

    /// Milliseconds since the origin.
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.millis.saturating_sub(earlier.millis))
    }
}

/// A span of time in milliseconds.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    millis: u64,
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { millis: 0 };

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration { millis }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            millis: secs.saturating_mul(1000),
        }
    }

    /// The duration in milliseconds.
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// The duration in whole seconds (rounded down).
    pub const fn secs(self) -> u64 {
        self.millis / 1000
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates instead of overflowing, so a far-future deadline stays far in the future.
    fn add(self, rhs: Duration) -> Instant {
        Instant {
            millis: self.millis.saturating_add(rhs.millis),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_origin_and_zero_are_nothing() {
        assert_eq!(Instant::ZERO.millis(), 0);
        assert_eq!(Instant::default(), Instant::ZERO);
        assert_eq!(Duration::ZERO.millis(), 0);
        assert_eq!(Duration::default(), Duration::ZERO);
    }

    #[test]
    fn seconds_are_a_thousand_milliseconds_rounded_down() {
        assert_eq!(Duration::from_secs(1).millis(), 1000);
        assert_eq!(Duration::from_secs(300).millis(), 300_000);
        assert_eq!(Duration::from_millis(999).secs(), 0);
        assert_eq!(Duration::from_millis(1000).secs(), 1);
        assert_eq!(Duration::from_millis(1999).secs(), 1);
        assert_eq!(Duration::from_millis(2000).secs(), 2);
        // A seconds count too large for milliseconds saturates instead of wrapping.
        assert_eq!(Duration::from_secs(u64::MAX).millis(), u64::MAX);
    }

    #[test]
    fn a_far_future_deadline_stays_in_the_future() {
        let late = Instant::from_millis(u64::MAX - 5);
        assert_eq!((late + Duration::from_millis(10)).millis(), u64::MAX);
        assert!(late + Duration::from_secs(u64::MAX) > late);
    }

    proptest! {
        #[test]
        fn milliseconds_round_trip(ms in any::<u64>()) {
            prop_assert_eq!(Instant::from_millis(ms).millis(), ms);
            prop_assert_eq!(Duration::from_millis(ms).millis(), ms);
            prop_assert_eq!(Duration::from_millis(ms).secs(), ms / 1000);
        }

        #[test]
        fn adding_then_measuring_gives_the_duration_back(
            start in 0u64..1 << 62,
            span in 0u64..1 << 62,
        ) {
            let t = Instant::from_millis(start);
            let later = t + Duration::from_millis(span);
            prop_assert_eq!(later.millis(), start + span);
            prop_assert_eq!(later.saturating_since(t).millis(), span);
            // Measured the other way round, time does not run backwards: zero.
            prop_assert_eq!(t.saturating_since(later), Duration::ZERO);
            prop_assert_eq!(Duration::from_secs(span / 1000).secs(), span / 1000);
        }
    }
}
