//! Failed-login policy: exponential backoff per account and per peer address.
//!
//! The policy is the core's; the clock is the driver's. An account's [`LockoutState`] lives
//! in the ledger (so it survives restarts when the ledger is durable); the per-address
//! [`AddressThrottle`] lives in the server's shared state. A driver that persists lockouts
//! must pass instants from a clock that also survives restarts (the host uses Unix time).
//!
//! During a lockout every login fails with the same generic error, even with the right
//! password, and failures then do not extend the lock. A throttled address's attempts are
//! refused before they touch any account, so one address cannot keep a victim locked out
//! for longer than it keeps itself throttled.

use crate::time::{Duration, Instant};

/// Backoff parameters.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive failures that start the first lock: the `lock_after`-th failure locks.
    pub lock_after: u32,
    /// Length of the first lock; each further failure doubles it.
    pub base: Duration,
    /// The longest lock.
    pub max: Duration,
    /// A quiet period after which past failures are forgotten.
    pub forget_after: Duration,
}

impl Backoff {
    /// Default for accounts: the 5th consecutive failure locks for 1 s, each further one
    /// doubles that (2 s, 4 s …) up to 15 minutes; failures are forgotten after a quiet hour.
    pub const ACCOUNT: Backoff = Backoff {
        lock_after: 5,
        base: Duration::from_secs(1),
        max: Duration::from_secs(15 * 60),
        forget_after: Duration::from_secs(60 * 60),
    };

    /// Default for peer addresses: the 20th failure (a shared NAT has several users)
    /// throttles for 1 s, doubling up to 15 minutes; forgotten after a quiet hour.
    pub const ADDRESS: Backoff = Backoff {
        lock_after: 20,
        base: Duration::from_secs(1),
        max: Duration::from_secs(15 * 60),
        forget_after: Duration::from_secs(60 * 60),
    };

    /// The lock after `failures` consecutive failures.
    pub fn lock_for(&self, failures: u32) -> Duration {
        if failures < self.lock_after {
            return Duration::ZERO;
        }
        let doublings = (failures - self.lock_after).min(40);
        let millis = self.base.millis().saturating_mul(1u64 << doublings);
        Duration::from_millis(millis.min(self.max.millis()))
    }
}

/// Failed-login record of one account or address.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockoutState {
    /// Consecutive failures not yet forgotten.
    pub failures: u32,
    /// When the last failure happened.
    pub last_failure: Instant,
    /// Logins are refused before this instant.
    pub locked_until: Instant,
}

impl LockoutState {
    /// True while logins must be refused.
    pub fn is_locked(&self, now: Instant) -> bool {
        now < self.locked_until
    }

    /// Records a failed login at `now`. Returns true if this failure started a lock.
    pub fn record_failure(&mut self, now: Instant, policy: &Backoff) -> bool {
        if now.saturating_since(self.last_failure) > policy.forget_after {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        let lock = policy.lock_for(self.failures);
        if lock > Duration::ZERO {
            self.locked_until = now + lock;
            return true;
        }
        false
    }

    /// Records a successful login: the count starts over.
    pub fn record_success(&mut self) {
        *self = LockoutState::default();
    }
}

/// A peer address as 16 bytes (IPv4 addresses are IPv4-mapped IPv6).
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerAddr(pub [u8; 16]);

impl PeerAddr {
    /// An IPv4 address, IPv4-mapped.
    pub const fn ipv4(octets: [u8; 4]) -> PeerAddr {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12] = octets[0];
        a[13] = octets[1];
        a[14] = octets[2];
        a[15] = octets[3];
        PeerAddr(a)
    }
}

/// Failed-login records of up to `N` peer addresses.
///
/// When full, the entry whose last failure is oldest is replaced. Memory is fixed at
/// `N * 48` bytes or so; size `N` for the number of distinct attacking addresses you want to
/// remember (the host defaults to 4096).
#[derive(Debug, Clone)]
pub struct AddressThrottle<const N: usize> {
    entries: heapless::Vec<(PeerAddr, LockoutState), N>,
}

impl<const N: usize> Default for AddressThrottle<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> AddressThrottle<N> {
    /// An empty table.
    pub const fn new() -> Self {
        const { assert!(N > 0, "an address throttle needs a non-zero capacity") };
        AddressThrottle {
            entries: heapless::Vec::new(),
        }
    }

    /// True while `addr` is throttled.
    pub fn is_throttled(&self, addr: PeerAddr, now: Instant) -> bool {
        self.entries
            .iter()
            .any(|(a, s)| *a == addr && s.is_locked(now))
    }

    /// Records a failed login from `addr`. Returns true if this failure started a throttle.
    pub fn record_failure(&mut self, addr: PeerAddr, now: Instant, policy: &Backoff) -> bool {
        if let Some((_, s)) = self.entries.iter_mut().find(|(a, _)| *a == addr) {
            return s.record_failure(now, policy);
        }
        let mut state = LockoutState::default();
        let started = state.record_failure(now, policy);
        if self.entries.is_full() {
            // Replace the entry idle longest; it is the least useful to remember.
            if let Some(oldest) = self.entries.iter_mut().min_by_key(|(_, s)| s.last_failure) {
                *oldest = (addr, state);
            }
        } else {
            // Not full, so the push succeeds.
            let _ = self.entries.push((addr, state));
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn backoff_grows_then_caps_and_success_resets() {
        let p = Backoff {
            lock_after: 2,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            forget_after: Duration::from_secs(60),
        };
        let mut s = LockoutState::default();
        assert!(!s.record_failure(t(0), &p));
        assert!(s.record_failure(t(1), &p));
        assert_eq!(s.locked_until, t(101));
        assert!(s.is_locked(t(100)));
        assert!(!s.is_locked(t(101)));
        s.record_failure(t(200), &p);
        assert_eq!(s.locked_until, t(400));
        for i in 0..10 {
            s.record_failure(t(500 + i), &p);
        }
        assert_eq!(s.locked_until, t(509 + 1000));
        s.record_success();
        assert!(!s.is_locked(t(510)));
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn quiet_period_forgets() {
        let p = Backoff {
            lock_after: 2,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            forget_after: Duration::from_secs(1),
        };
        let mut s = LockoutState::default();
        s.record_failure(t(0), &p);
        assert!(!s.record_failure(t(5000), &p));
        assert_eq!(s.failures, 1);
    }

    #[test]
    fn throttle_tracks_addresses_in_fixed_memory() {
        let p = Backoff {
            lock_after: 1,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            forget_after: Duration::from_secs(60),
        };
        let mut th = AddressThrottle::<2>::new();
        let a = PeerAddr::ipv4([127, 0, 0, 1]);
        let b = PeerAddr::ipv4([127, 0, 0, 2]);
        let c = PeerAddr::ipv4([127, 0, 0, 3]);
        assert!(th.record_failure(a, t(0), &p));
        assert!(th.is_throttled(a, t(50)));
        assert!(!th.is_throttled(b, t(50)));
        th.record_failure(b, t(10), &p);
        th.record_failure(c, t(20), &p);
        assert_eq!(th.entries.len(), 2);
        assert!(!th.is_throttled(a, t(50)), "oldest entry replaced");
        assert!(th.is_throttled(b, t(50)), "the newer entry kept");
        assert!(th.is_throttled(c, t(50)));
    }

    /// Past failures are kept through a quiet period of exactly `forget_after` and forgotten
    /// one millisecond later.
    #[test]
    fn forgetting_happens_exactly_after_forget_after() {
        let p = Backoff {
            lock_after: 10,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            forget_after: Duration::from_secs(1),
        };
        let mut s = LockoutState::default();
        s.record_failure(t(10), &p);
        s.record_failure(t(1_010), &p);
        assert_eq!(
            s.failures, 2,
            "a quiet period of exactly forget_after keeps them"
        );
        s.record_failure(t(2_011), &p);
        assert_eq!(s.failures, 1, "one millisecond more forgets them");
        assert_eq!(s.last_failure, t(2_011));
    }

    /// An address's failures count across its attempts and stop at its own throttle; other
    /// addresses are unaffected.
    #[test]
    fn an_address_is_throttled_at_its_own_lock_after() {
        let p = Backoff {
            lock_after: 3,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            forget_after: Duration::from_secs(60),
        };
        let mut th = AddressThrottle::<4>::new();
        let a = PeerAddr::ipv4([10, 0, 0, 1]);
        let b = PeerAddr::ipv4([10, 0, 0, 2]);
        assert!(!th.record_failure(a, t(0), &p));
        assert!(!th.record_failure(b, t(0), &p));
        assert!(!th.record_failure(a, t(1), &p));
        assert!(!th.is_throttled(a, t(1)));
        assert!(th.record_failure(a, t(2), &p));
        assert!(th.is_throttled(a, t(2)));
        assert!(!th.is_throttled(a, t(102)));
        assert!(!th.is_throttled(b, t(2)));
    }

    /// The documented defaults, as the lock lengths they give: an account locks at the 5th
    /// failure for 1 s, doubling up to 15 minutes; an address at the 20th, the same way; both
    /// forget after a quiet hour.
    #[test]
    fn default_policies_are_what_the_docs_say() {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        for (policy, lock_after) in [(Backoff::ACCOUNT, 5), (Backoff::ADDRESS, 20)] {
            assert_eq!(policy.lock_for(lock_after - 1), Duration::ZERO);
            assert_eq!(policy.lock_for(lock_after), Duration::from_secs(1));
            assert_eq!(policy.lock_for(lock_after + 1), Duration::from_secs(2));
            assert_eq!(policy.lock_for(lock_after + 9), Duration::from_secs(512));
            assert_eq!(policy.lock_for(lock_after + 10), minutes(15));
            assert_eq!(policy.lock_for(u32::MAX), minutes(15));
            assert_eq!(policy.forget_after, minutes(60));
        }
    }
}
