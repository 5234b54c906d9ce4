//! The core's own notion of time: milliseconds on a monotonic clock the driver reads.
//!
//! The core never reads a clock. Every method that depends on time takes `now: Instant`,
//! so a simulation can run on virtual time and a board can use any tick source.

use core::ops::{Add, Sub};

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

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}
