//! The server engine alone, as a device server would link it: one default
//! [`ServerSession`], a [`ServerShared`] and a [`MemLedger<4, 32>`], and no client session, no
//! self-test and no test vectors.
//!
//! It drives the session with a canned transcript (registration, login, a wrong proof, ping, a
//! request that needs a login, a malformed frame, an over-long line, ping again) and checks that
//! each request gets exactly one response line of the expected kind. Then it prints
//!
//! ```text
//! server_engine ok: steps=<n> server_shared=<bytes> mem_ledger=<bytes>
//! server_engine flash=<bytes> ram=<bytes> stack_peak=<bytes> server_session=<bytes>
//! ```
//!
//! and exits with success; on a mismatch it prints `server_engine FAILED: <step>: ...` and
//! exits with failure.
//!
//! `flash` is the whole image, runtime included; `cargo xtask qemu` subtracts the `baseline`
//! image (the runtime alone) to get the engine's own flash. The session, the shared state and
//! the ledger live on the stack, so they are in `stack_peak`, not in `ram`.
//!
//! The full login is not completed (that would need the client's proof computation), but the
//! wrong proof runs the server's proof verification, and every request kind is dispatched by
//! [`ServerSession::handle_input`], so transfers, nonces, balance and history are linked.
//!
//! The random numbers come from [`TestRng`], a fixed-seed SHA-256 counter generator: fine for a
//! test image, wrong for a device. A device seeds a cryptographic RNG (e.g. ChaCha) from its
//! TRNG, which costs a little more flash than `TestRng`.

#![no_std]
#![no_main]

#[path = "../runtime.rs"]
mod runtime;

use core::mem::size_of;

use cortex_m_rt::entry;
use runtime::{exit, print, Footprint};
use txsock_core::lockout::PeerAddr;
use txsock_core::selftest::TestRng;
use txsock_core::session::{ServerConfig, ServerShared};
use txsock_core::{Amount, Duration, Instant, MemLedger, ServerSession};

/// The name in failure messages.
const IMAGE: &str = "server_engine";

/// Peer addresses whose failed logins the server remembers.
const ADDRS: usize = 8;

/// The ledger of a small device: 4 accounts, 32 journal entries.
type DeviceLedger = MemLedger<4, 32>;

/// The longest line the session accepts (`DEFAULT_MAX_FRAME`); the over-long line exceeds it.
const OVERSIZE: usize = 600;

/// What one step sends.
enum Send {
    /// These bytes, newline included.
    Line(&'static [u8]),
    /// `OVERSIZE` bytes of `x`, then a newline.
    OverlongLine,
}

/// One request and what its single response line must look like.
struct Step {
    name: &'static str,
    send: Send,
    /// The response line starts with this.
    starts_with: &'static [u8],
    /// The response line also contains this (empty: no further check).
    contains: &'static [u8],
}

/// The transcript. The registration is txsock's protocol vector (`docs/vectors.json`): user
/// `alice`, salt `000102..0f`, 4096 iterations, and the StoredKey and ServerKey derived from
/// the password `correct horse battery`.
const STEPS: &[Step] = &[
    Step {
        name: "register",
        send: Send::Line(
            b"{\"op\":\"register\",\"user\":\"alice\",\"salt\":\"AAECAwQFBgcICQoLDA0ODw==\",\
              \"iterations\":4096,\"stored_key\":\"DSORcG4dNUxAHTEo5BL20ymSoLgt8C8jLZ09S+VUVlM=\",\
              \"server_key\":\"9hLrfnf7zvCtDB9drkVXkMgUsd4vpHfg5YQJDrbaZ30=\"}\n",
        ),
        starts_with: b"{\"op\":\"registered\",\"user\":\"alice\"}\n",
        contains: b"",
    },
    Step {
        name: "login",
        send: Send::Line(
            b"{\"op\":\"login\",\"user\":\"alice\",\"nonce\":\"fyko+d2lbbFgONRv9qkxdawL\"}\n",
        ),
        // The server extends the client's nonce; the salt and iterations are the registered ones.
        starts_with: b"{\"op\":\"challenge\",\"nonce\":\"fyko+d2lbbFgONRv9qkxdawL",
        contains: b"\",\"salt\":\"AAECAwQFBgcICQoLDA0ODw==\",\"iterations\":4096}\n",
    },
    Step {
        name: "wrong proof",
        send: Send::Line(
            b"{\"op\":\"proof\",\"proof\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}\n",
        ),
        starts_with: b"{\"op\":\"error\",\"code\":\"auth_failed\"",
        contains: b"",
    },
    Step {
        name: "ping",
        send: Send::Line(b"{\"op\":\"ping\"}\n"),
        starts_with: b"{\"op\":\"pong\"}\n",
        contains: b"",
    },
    Step {
        name: "nonces before login",
        send: Send::Line(b"{\"op\":\"nonces\",\"count\":4}\n"),
        starts_with: b"{\"op\":\"error\",\"code\":\"not_logged_in\"",
        contains: b"",
    },
    Step {
        name: "malformed frame",
        send: Send::Line(b"{\"op\":\"transfer\",\"id\":\n"),
        starts_with: b"{\"op\":\"error\",\"code\":\"malformed\"",
        contains: b"",
    },
    Step {
        name: "over-long line",
        send: Send::OverlongLine,
        starts_with: b"{\"op\":\"error\",\"code\":\"frame_too_long\"",
        contains: b"",
    },
    Step {
        name: "ping after the over-long line",
        send: Send::Line(b"{\"op\":\"ping\"}\n"),
        starts_with: b"{\"op\":\"pong\"}\n",
        contains: b"",
    },
];

/// A device server's state, and a virtual clock.
struct Server {
    shared: ServerShared<TestRng, ADDRS>,
    session: ServerSession,
    ledger: DeviceLedger,
    now: Instant,
}

impl Server {
    /// Delivers `input` as if read from the peer and runs the session (ledger included) until
    /// it is quiet, as a device's driver loop would. Returns the bytes the session wrote, or
    /// `None` if they did not fit in `out` or the session left input unconsumed.
    fn receive<'o>(&mut self, input: &[u8], out: &'o mut [u8]) -> Option<&'o [u8]> {
        let mut written = 0;
        // The core's drive loop; a device would log the events it drops here.
        let transmit = |pending: &[u8]| {
            let n = pending.len().min(out.len() - written);
            out[written..written + n].copy_from_slice(&pending[..n]);
            written += n;
            Ok::<_, core::convert::Infallible>(n)
        };
        let Ok(used) = self.session.drive(
            &mut self.shared,
            &mut self.ledger,
            self.now,
            input,
            transmit,
            |_| {},
        );
        let drained = self.session.poll_transmit().is_empty();
        (used == input.len() && drained).then_some(&out[..written])
    }
}

/// Runs the transcript; `Err` names the step that failed and how.
fn run(server: &mut Server) -> Result<usize, (&'static str, &'static str)> {
    let mut overlong = [b'x'; OVERSIZE + 1];
    overlong[OVERSIZE] = b'\n';
    let mut out = [0u8; 1024];
    for step in STEPS {
        server.now = server.now + Duration::from_millis(100);
        let input: &[u8] = match step.send {
            Send::Line(line) => line,
            Send::OverlongLine => &overlong,
        };
        let response = server
            .receive(input, &mut out)
            .ok_or((step.name, "input not consumed or output overflowed"))?;
        let lines = response.iter().filter(|&&b| b == b'\n').count();
        if lines != 1 || response.last() != Some(&b'\n') {
            return Err((step.name, "expected exactly one response line"));
        }
        if !response.starts_with(step.starts_with) || !contains(response, step.contains) {
            return Err((step.name, "unexpected response"));
        }
        if server.session.is_closing() {
            return Err((step.name, "the session closed"));
        }
    }
    Ok(STEPS.len())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[entry]
fn main() -> ! {
    let config = ServerConfig {
        min_iterations: 4096,
        unknown_user_iterations: 4096,
        ..ServerConfig::default()
    };
    let mut server = Server {
        shared: ServerShared::new(config, TestRng::new(0x5e55_10e5), [7; 32]),
        session: ServerSession::new(PeerAddr::ipv4([192, 0, 2, 1]), Instant::ZERO),
        ledger: MemLedger::new(Amount(10_000)),
        now: Instant::ZERO,
    };
    match run(&mut server) {
        Ok(steps) => {
            let footprint = Footprint::measure();
            print(format_args!(
                "server_engine ok: steps={steps} server_shared={} mem_ledger={}\n",
                size_of::<ServerShared<TestRng, ADDRS>>(),
                size_of::<DeviceLedger>()
            ));
            print(format_args!(
                "server_engine flash={} ram={} stack_peak={} server_session={}\n",
                footprint.flash,
                footprint.ram,
                footprint.stack_peak,
                size_of::<ServerSession>()
            ));
            exit(true)
        }
        Err((step, what)) => {
            print(format_args!("server_engine FAILED: {step}: {what}\n"));
            exit(false)
        }
    }
}
