//! Session MAC keys leave no trace of the key in memory once dropped.
//!
//! [`MacKey`] holds HMAC's keyed inner and outer SHA-256 states, which are as good as the key
//! to anyone who reads them. It zeroizes them when dropped; this test drops a key in place and
//! reads the memory it occupied. (`Key` and `Tag` derive `ZeroizeOnDrop`; the core's unit
//! tests check their `zeroize`.)

use core::mem::{size_of, ManuallyDrop};
use txsock_core::crypto::{Key, MacKey};

/// The bytes of the value at `value`, which stay readable after an in-place drop because
/// `ManuallyDrop` keeps the storage.
fn bytes_of(value: &ManuallyDrop<MacKey>) -> Vec<u8> {
    let pointer = (&**value as *const MacKey).cast::<u8>();
    // SAFETY: the pointer is to `size_of::<MacKey>()` bytes owned by `value`, borrowed for
    // the whole call. `MacKey` holds block-hash states made of integers and byte arrays;
    // they are read here as plain bytes and copied out.
    unsafe { std::slice::from_raw_parts(pointer, size_of::<MacKey>()) }.to_vec()
}

#[test]
fn a_dropped_mac_key_holds_no_keyed_state() {
    let mut secret = ManuallyDrop::new(MacKey::new(&Key::from_bytes([0x5a; 32])));
    // HMAC pads a key to the block with zeros, so the all-zero key's state is the empty
    // key's: the state of no secret at all (and not zeros either).
    let empty = ManuallyDrop::new(MacKey::new(&Key::from_bytes([0; 32])));
    let keyed = bytes_of(&secret);
    assert_ne!(
        keyed,
        bytes_of(&empty),
        "the keyed state differs from no key's"
    );
    // SAFETY: `secret` is dropped exactly once and never used as a `MacKey` afterwards; only
    // its storage is read.
    unsafe { ManuallyDrop::drop(&mut secret) };
    assert_eq!(
        bytes_of(&secret),
        vec![0; size_of::<MacKey>()],
        "after drop the memory holds zeros"
    );
}
