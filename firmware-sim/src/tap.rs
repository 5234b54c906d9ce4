//! The device on a Linux TAP interface, so that real clients (`txsock client`, or anything
//! speaking the protocol over TCP) can reach it.
//!
//! The desktop plays the board: it lends the device a smoltcp `TunTapInterface` as its
//! network device, reads the monotonic clock for "now", and seeds the device's RNG from the
//! operating system (a board uses its TRNG). The device is the simulator's: same sessions,
//! socket buffers and ledger. `firmware-sim/tap-netns.sh` creates a TAP interface inside a
//! network namespace, bridged to a second namespace for the client, with documentation
//! addresses only (192.0.2.0/24) and no route out.

use std::fs::File;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use smoltcp::iface::SocketStorage;
use smoltcp::phy::{Medium, TunTapInterface};
use txsock_core::session::ServerEvent;
use txsock_core::{Duration, Instant};

use crate::device::{DeviceEvent, DeviceParts, SocketBuffers, DEFAULT_PORT};
use crate::sim::{device_config, SimDevice, SimLedger, SESSIONS, SOCKET_RX, SOCKET_TX};

/// How the TAP device runs.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// The TAP interface (it must exist; `tap-netns.sh` creates it).
    pub interface: String,
    /// The device's IPv4 address.
    pub address: [u8; 4],
    /// Its prefix length.
    pub prefix_len: u8,
    /// Seed of the device's RNG; `None`: from the operating system.
    pub seed: Option<u64>,
    /// Stop after this long; `None`: run until killed.
    pub serve_for: Option<Duration>,
}

/// Opening balance of accounts registered on the TAP device: 100.00.
const OPENING: txsock_core::Amount = txsock_core::Amount(10_000);

fn os_seed() -> Result<u64, String> {
    let mut bytes = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn ip(address: [u8; 4]) -> std::net::Ipv4Addr {
    address.into()
}

fn describe(event: &DeviceEvent<'_>) -> String {
    let peer = |p: &txsock_core::lockout::PeerAddr| ip([p.0[12], p.0[13], p.0[14], p.0[15]]);
    match event {
        DeviceEvent::Accepted { slot, peer: p } => format!("session {slot}: {} connected", peer(p)),
        DeviceEvent::Refused { peer: p } => format!("refused {}: server_busy", peer(p)),
        DeviceEvent::Closed { slot } => format!("session {slot}: closed"),
        DeviceEvent::Session { slot, event } => match event {
            ServerEvent::Registered { user } => {
                format!("session {slot}: registered {}", user.as_str())
            }
            ServerEvent::LoggedIn { user } => {
                format!("session {slot}: {} logged in", user.as_str())
            }
            ServerEvent::LoggedOut { user } => {
                format!("session {slot}: {} logged out", user.as_str())
            }
            other => format!("session {slot}: {other:?}"),
        },
    }
}

/// Serves on the TAP interface until killed (or for `serve_for`). Prints one line when it
/// is ready (`listening on A.B.C.D:PORT via NAME`), then one per event.
pub fn serve(config: &TapConfig) -> Result<(), String> {
    let mut tap = TunTapInterface::new(&config.interface, Medium::Ethernet)
        .map_err(|e| format!("TAP interface {}: {e}", config.interface))?;
    let fd = tap.as_raw_fd();
    let seed = match config.seed {
        Some(seed) => seed,
        None => os_seed()?,
    };
    let started = std::time::Instant::now();
    let clock = || Instant::from_millis(started.elapsed().as_millis() as u64);

    let mut ledger = Box::new(SimLedger::new(OPENING));
    let mut buffers = Box::new(SocketBuffers::<SESSIONS, SOCKET_RX, SOCKET_TX>::new());
    let mut sockets = [SocketStorage::EMPTY; SESSIONS + 1];
    let mut slot = Box::new(MaybeUninit::<SimDevice<'_>>::uninit());
    let mut device_config = device_config(config.address, seed);
    device_config.prefix_len = config.prefix_len;
    let device = SimDevice::init(
        &mut *slot,
        DeviceParts {
            sockets: &mut sockets,
            buffers: &mut buffers,
            ledger: &mut ledger,
        },
        ChaCha20Rng::seed_from_u64(seed),
        &device_config,
        &mut tap,
        clock(),
    );
    let budget = device.memory_budget::<SOCKET_RX, SOCKET_TX>();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "listening on {}:{DEFAULT_PORT} via {} ({SESSIONS} sessions, {} bytes of device memory)",
        ip(config.address),
        config.interface,
        budget.total()
    );
    let _ = out.flush();
    loop {
        let now = clock();
        device.poll_with(now, &mut tap, |event| {
            let _ = writeln!(out, "{}", describe(&event));
        });
        let _ = out.flush();
        if let Some(limit) = config.serve_for {
            if now.saturating_since(Instant::ZERO) >= limit {
                break;
            }
        }
        let wait_ms = device
            .poll_at(now)
            .map_or(1000, |at| at.saturating_since(now).millis().min(1000));
        smoltcp::phy::wait(fd, Some(smoltcp::time::Duration::from_millis(wait_ms)))
            .map_err(|e| format!("waiting for the TAP interface: {e}"))?;
    }
    let stats = device.stats();
    let ledger = device.ledger();
    let _ = writeln!(
        out,
        "stopped: {} connections, {} refused, {} logins, {} transfers committed, money \
         conserved: {}",
        stats.accepted,
        stats.refused,
        stats.logins,
        ledger
            .journal()
            .iter()
            .filter(|e| e.refused.is_none())
            .count(),
        ledger.total() == ledger.minted()
    );
    Ok(())
}
