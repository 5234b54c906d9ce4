//! The nonce ring: server-issued one-time nonces that make every transfer unreplayable.
//!
//! The ring holds nonces *issued and not yet used*, never nonces *seen*. A nonce is accepted
//! only while it is in the ring and is removed by its first valid use, so its memory is
//! exactly `N` nonces whatever the peer does. When the ring is full, issuing evicts the
//! oldest outstanding nonce, which can then never be accepted: the ring fails closed.

use crate::crypto::ct_eq;
use rand_core::{CryptoRng, RngCore};

/// Length of a nonce in bytes (128 bits: collisions and guesses are out of reach).
pub const NONCE_LEN: usize = 16;

/// The default ring capacity: outstanding nonces per session.
pub const DEFAULT_NONCES: usize = 16;

/// A server-issued nonce.
pub type Nonce = [u8; NONCE_LEN];

/// Error returned by [`NonceRing::consume`].
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayError;

impl core::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("nonce is not outstanding (replayed, evicted or never issued)")
    }
}

impl core::error::Error for ReplayError {}

/// At most `N` outstanding nonces, oldest first.
#[derive(Debug, Clone)]
pub struct NonceRing<const N: usize = DEFAULT_NONCES> {
    slots: [Nonce; N],
    len: usize,
    /// Outstanding nonces allowed now, at most `N` (see [`set_limit`](Self::set_limit)).
    limit: usize,
}

impl<const N: usize> Default for NonceRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> NonceRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        const { assert!(N > 0, "a nonce ring needs a non-zero capacity") };
        NonceRing {
            slots: [[0; NONCE_LEN]; N],
            len: 0,
            limit: N,
        }
    }

    /// Number of outstanding nonces.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True when no nonce is outstanding.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lowers the number of outstanding nonces to `limit` (clamped to `1..=N`), for drivers
    /// that configure it at run time within a compiled capacity. Excess nonces, oldest
    /// first, are evicted at the next issue.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, N);
    }

    /// Outstanding nonces allowed now.
    pub const fn limit(&self) -> usize {
        self.limit
    }

    /// Draws a fresh nonce from `rng` and makes it outstanding, evicting the oldest
    /// outstanding nonce if the ring is full.
    pub fn issue<R: RngCore + CryptoRng>(&mut self, rng: &mut R) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        while self.len >= self.limit {
            self.remove(0);
        }
        // The loop above left `len` below the limit, which is at most `N`.
        if let Some(slot) = self.slots.get_mut(self.len) {
            *slot = nonce;
            self.len += 1;
        }
        nonce
    }

    /// Removes `nonce` if outstanding; call only after the frame carrying it verified.
    pub fn consume(&mut self, nonce: &Nonce) -> Result<(), ReplayError> {
        let mut at = None;
        for (i, s) in self.slots[..self.len].iter().enumerate() {
            if ct_eq(s, nonce) {
                at = Some(i);
            }
        }
        let i = at.ok_or(ReplayError)?;
        self.remove(i);
        Ok(())
    }

    /// Removes the outstanding nonce in slot `i`, the younger ones moving down a slot (the
    /// ring stays oldest first). Slot by slot rather than `copy_within`, whose `memmove` (about
    /// 0.65 KB of a device's flash) nothing else in a device server needs; a ring holds a few
    /// dozen nonces at most.
    fn remove(&mut self, i: usize) {
        let len = self.len.min(N);
        let mut j = i;
        while j + 1 < len {
            self.slots[j] = self.slots[j + 1];
            j += 1;
        }
        self.len = len.saturating_sub(1);
    }

    /// Forgets every outstanding nonce (at logout).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use std::collections::HashSet;

    #[derive(Debug, Clone)]
    enum Op {
        Issue,
        UseIssued(usize),
        UseForeign([u8; NONCE_LEN]),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Issue),
            3 => any::<usize>().prop_map(Op::UseIssued),
            1 => any::<[u8; NONCE_LEN]>().prop_map(Op::UseForeign),
        ]
    }

    proptest! {
        /// Never accepts a nonce twice, one it did not issue, or one it evicted; and its
        /// length never exceeds N.
        #[test]
        fn ring_accepts_each_issued_nonce_at_most_once(seed: u64, ops in proptest::collection::vec(op(), 0..200)) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut ring = NonceRing::<4>::new();
            let mut issued: Vec<Nonce> = Vec::new();
            let mut outstanding: Vec<Nonce> = Vec::new(); // model: oldest first
            let mut used: HashSet<Nonce> = HashSet::new();
            for op in ops {
                match op {
                    Op::Issue => {
                        let n = ring.issue(&mut rng);
                        issued.push(n);
                        if outstanding.len() == 4 { outstanding.remove(0); }
                        outstanding.push(n);
                    }
                    Op::UseIssued(i) if !issued.is_empty() => {
                        let n = issued[i % issued.len()];
                        let accepted = ring.consume(&n).is_ok();
                        prop_assert_eq!(accepted, outstanding.contains(&n));
                        if accepted {
                            prop_assert!(used.insert(n), "nonce accepted twice");
                            outstanding.retain(|o| *o != n);
                        }
                    }
                    Op::UseIssued(_) => {}
                    Op::UseForeign(n) => {
                        if !issued.contains(&n) {
                            prop_assert!(ring.consume(&n).is_err());
                        }
                    }
                }
                prop_assert!(ring.len() <= 4);
                prop_assert_eq!(ring.len(), outstanding.len());
            }
        }
    }

    #[test]
    fn evicted_nonce_is_refused() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut ring = NonceRing::<2>::new();
        let first = ring.issue(&mut rng);
        let second = ring.issue(&mut rng);
        let third = ring.issue(&mut rng);
        assert_eq!(ring.consume(&first), Err(ReplayError));
        assert_eq!(ring.consume(&third), Ok(()));
        assert_eq!(ring.consume(&third), Err(ReplayError));
        assert_eq!(ring.consume(&second), Ok(()));
    }

    /// A cleared ring (a logout) accepts none of the nonces it issued before, and issues
    /// fresh ones as a new ring does.
    #[test]
    fn a_cleared_ring_accepts_nothing_it_issued_before() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut ring = NonceRing::<4>::new();
        let issued: Vec<Nonce> = (0..3).map(|_| ring.issue(&mut rng)).collect();
        assert!(!ring.is_empty());
        ring.clear();
        assert!(ring.is_empty());
        for nonce in &issued {
            assert_eq!(ring.consume(nonce), Err(ReplayError));
        }
        let fresh = ring.issue(&mut rng);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.consume(&fresh), Ok(()));
    }

    /// A run-time limit below the capacity is what the ring keeps: with a limit of 2, a
    /// third issue evicts the oldest, which is then refused. The limit is clamped to
    /// `1..=N`.
    #[test]
    fn a_lowered_limit_keeps_only_that_many() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut ring = NonceRing::<4>::new();
        ring.set_limit(2);
        assert_eq!(ring.limit(), 2);
        let first = ring.issue(&mut rng);
        let second = ring.issue(&mut rng);
        let third = ring.issue(&mut rng);
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.consume(&first), Err(ReplayError));
        assert_eq!(ring.consume(&second), Ok(()));
        assert_eq!(ring.consume(&third), Ok(()));
        ring.set_limit(0);
        assert_eq!(ring.limit(), 1);
        ring.set_limit(99);
        assert_eq!(ring.limit(), 4);
    }
}
