//! The Cortex-M4 image's scripted session, run on the desktop with the same device, sizes and
//! seeds (`cargo xtask qemu` runs it under QEMU).

use std::mem::MaybeUninit;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use smoltcp::iface::SocketStorage;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::client::{ClientNet, SimClock};
use txsock_firmware_sim::device::DeviceParts;
use txsock_firmware_sim::link::Side;
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::{self, Scenario, OPENING};

/// The seed the image uses.
const SEED: u64 = 0x7853_6f63;

#[test]
fn board_scenario_passes_with_transfers_replay_and_tamper() {
    let mut link = Box::new(BoardLink::new(link_config(SEED)));
    let mut ledger = Box::new(BoardLedger::new(OPENING));
    let mut buffers = Box::new(BoardBuffers::new());
    let mut sockets = [SocketStorage::EMPTY; SOCKETS];
    let mut slot = Box::new(MaybeUninit::<BoardDevice<'_>>::uninit());
    let device = BoardDevice::init(
        &mut *slot,
        DeviceParts {
            sockets: &mut sockets,
            buffers: &mut buffers,
            ledger: &mut ledger,
        },
        ChaCha20Rng::seed_from_u64(SEED),
        &device_config(SEED),
        &mut link.end(Side::A),
        Instant::ZERO,
    );
    let mut client_sockets = [SocketStorage::EMPTY; 1];
    let mut client_buffers = Box::new(ClientBuffers::new());
    let mut net = ClientNet::new(
        &mut client_sockets,
        &mut client_buffers,
        &client_config(SEED),
        &mut link.end(Side::B),
        Instant::ZERO,
    );
    let mut script = Scenario::new(SEED);
    let mut clock = SimClock::new(Instant::ZERO);
    let report = scenario::run(
        device,
        &mut net,
        &mut link,
        &mut script,
        &mut clock,
        Duration::from_secs(600),
        |_, step| step(),
    )
    .unwrap_or_else(|e| panic!("scenario failed at {}: {e}", script.step_name()));
    assert_eq!(report.transfers, 6);
    assert!(report.checks >= 25, "{report:?}");
    assert!(
        link.stats().lost > 0,
        "the link should have lost frames: {:?}",
        link.stats()
    );
    println!("{report:?} {:?}", link.stats());
    // What the device counted: one client, served (not refused), two registrations and one
    // login, the replayed and the tampered frames rejected, no error closing the session,
    // nothing cut off.
    let stats = *device.stats();
    assert_eq!(
        (stats.accepted, stats.refused, stats.peak_sessions),
        (1, 0, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.registered, stats.logins, stats.failed_logins),
        (2, 1, 0),
        "{stats:?}"
    );
    assert!(stats.rejected >= 2, "{stats:?}");
    assert_eq!((stats.closed_by_error, stats.aborted), (0, 0), "{stats:?}");
    // Every ledger request: 2 registrations, credentials and the login's success, the 6
    // transfers, the replay's (answered from the journal) and a balance at least.
    assert!(stats.ledger_requests >= 11, "{stats:?}");
    // The memory budget adds up: the sessions live in the device, the buffers are as
    // documented, and the total is every part once.
    let budget = device.memory_budget::<RX, TX>();
    assert_eq!(budget.sessions, SESSIONS);
    assert_eq!(
        budget.socket_buffers,
        SESSIONS * (RX + TX)
            + txsock_firmware_sim::device::REFUSAL_RX
            + txsock_firmware_sim::device::REFUSAL_TX
    );
    assert!(
        budget.device >= SESSIONS * budget.session_bytes,
        "{budget:?}"
    );
    assert!(budget.socket_storage > 0 && budget.ledger > 0, "{budget:?}");
    assert_eq!(
        budget.total(),
        budget.socket_buffers + budget.socket_storage + budget.device + budget.ledger
    );
}
