//! `txsock-embassy-tap`: the embassy-net server on a Linux TAP interface, so that the real
//! `txsock client` can reach it from another network namespace (`firmware-sim/tap-netns.sh`).
//!
//! The desktop plays the board: embassy-executor's std platform runs the tasks, embassy-time's
//! std driver is the clock, embassy-net-tuntap is the Ethernet driver, and the RNG is seeded
//! from the operating system (a board seeds it from its TRNG). The server, its tasks and their
//! sizes are the ones a board runs: [`SESSIONS`] session tasks and one refusal task.

use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::process::ExitCode;

use embassy_executor::{Executor, Spawner};
use embassy_net::tcp::TcpSocket;
use embassy_net::{Config, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use static_cell::StaticCell;
use txsock_core::lockout::PeerAddr;
use txsock_core::session::{ServerConfig, ServerEvent};
use txsock_core::{Amount, MemLedger};
use txsock_embassy::{Event, Server, SocketBuffers, DEFAULT_PORT};

const HELP: &str = "\
txsock-embassy-tap: txsock's embassy-net server on a Linux TAP interface

USAGE:
    txsock-embassy-tap --tap NAME [OPTIONS]

Serves real clients (`txsock client --server A.B.C.D:11002`) through the TAP interface NAME,
which must exist (firmware-sim/tap-netns.sh creates one in a network namespace; needs
/dev/net/tun, usually root). Prints `listening on ...` once ready, then one line per event.

OPTIONS:
    --tap NAME            the TAP interface
    --address A.B.C.D/P   the server's IPv4 address [default: 192.0.2.2/24]
    --seed N              seed of the server's RNG [default: from /dev/urandom, as a board
                          seeds it from its TRNG]
    --serve-for SECS      stop after this many seconds [default: run until killed]
    -h, --help            print this help
";

/// Session tasks, as in the device: a client beyond them gets `server_busy`.
const SESSIONS: usize = 4;
/// Receive and transmit buffer of each session socket, as in the device.
const SOCKET_RX: usize = 1024;
const SOCKET_TX: usize = 1024;
/// The PBKDF2 floor: the simulator's, which `txsock client --min-iterations 4096` accepts.
const ITERATIONS: u32 = 4096;
/// Opening balance of accounts registered here: 100.00, as on the device's TAP bridge.
const OPENING: Amount = Amount(10_000);

type TapLedger = MemLedger<16, 256>;
type TapServer = Server<NoopRawMutex, TapLedger, ChaCha20Rng>;

struct Options {
    tap: String,
    address: Ipv4Addr,
    prefix_len: u8,
    seed: Option<u64>,
    serve_for: Option<u64>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        tap: String::new(),
        address: Ipv4Addr::new(192, 0, 2, 2),
        prefix_len: 24,
        seed: None,
        serve_for: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--tap" => options.tap = value("--tap")?,
            "--address" => {
                let text = value("--address")?;
                let (ip, prefix) = text.split_once('/').unwrap_or((&text, "24"));
                options.address = ip
                    .parse()
                    .map_err(|_| format!("--address: `{text}` is not A.B.C.D/P"))?;
                options.prefix_len = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| format!("--address: `{text}` has no prefix length 0-32"))?;
            }
            "--seed" => {
                let text = value("--seed")?;
                let seed = text
                    .parse()
                    .map_err(|_| format!("--seed: `{text}` is not a number"))?;
                options.seed = Some(seed);
            }
            "--serve-for" => {
                let text = value("--serve-for")?;
                let secs = text
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--serve-for: `{text}` is not a positive number"))?;
                options.serve_for = Some(secs);
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if options.tap.is_empty() {
        return Err("--tap NAME is required (see --help)".into());
    }
    Ok(options)
}

fn os_seed() -> Result<u64, String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn ip(peer: &PeerAddr) -> Ipv4Addr {
    Ipv4Addr::new(peer.0[12], peer.0[13], peer.0[14], peer.0[15])
}

/// One line per event, in the device's words (the TAP tests wait for them).
fn describe(event: Event<'_>) {
    match event {
        Event::Accepted { slot, peer } => {
            say(format_args!("session {slot}: {} connected", ip(&peer)))
        }
        Event::Refused { peer } => say(format_args!("refused {}: server_busy", ip(&peer))),
        Event::Closed { slot } => say(format_args!("session {slot}: closed")),
        Event::Session { slot, event } => match event {
            ServerEvent::Registered { user } => {
                say(format_args!("session {slot}: registered {}", user.as_str()))
            }
            ServerEvent::LoggedIn { user } => {
                say(format_args!("session {slot}: {} logged in", user.as_str()))
            }
            ServerEvent::LoggedOut { user } => {
                say(format_args!("session {slot}: {} logged out", user.as_str()))
            }
            other => say(format_args!("session {slot}: {other:?}")),
        },
        other => say(format_args!("{other:?}")),
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, TunTapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task(pool_size = SESSIONS)]
async fn session_task(
    server: &'static TapServer,
    slot: usize,
    mut socket: TcpSocket<'static>,
) -> ! {
    server.serve(slot, &mut socket, describe).await
}

#[embassy_executor::task]
async fn refusal_task(server: &'static TapServer, mut socket: TcpSocket<'static>) -> ! {
    server.refuse(&mut socket, describe).await
}

/// Stops the process after `secs`, with a summary line.
#[embassy_executor::task]
async fn stop_task(server: &'static TapServer, secs: u64) {
    embassy_time::Timer::after_secs(secs).await;
    let stats = server.stats();
    let ledger = server.ledger().lock().await;
    let committed = ledger.journal().iter().filter(|e| e.is_committed()).count();
    say(format_args!(
        "stopped: {} connections, {} refused, {} transfers committed, money conserved: {}",
        stats.accepted,
        stats.refused,
        committed,
        ledger.total() == ledger.minted()
    ));
    std::process::exit(0);
}

#[embassy_executor::task]
async fn main_task(spawner: Spawner, options: Options, device: TunTapDevice, seed: u64) {
    static RESOURCES: StaticCell<StackResources<{ SESSIONS + 2 }>> = StaticCell::new();
    static SERVER: StaticCell<TapServer> = StaticCell::new();
    static BUFFERS: StaticCell<SocketBuffers<SESSIONS, SOCKET_RX, SOCKET_TX>> = StaticCell::new();

    let config = Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(options.address, options.prefix_len),
        gateway: None,
        dns_servers: Default::default(),
    });
    let (stack, runner) =
        embassy_net::new(device, config, RESOURCES.init(StackResources::new()), seed);
    spawner.spawn(net_task(runner).unwrap());

    let server_config = ServerConfig {
        min_iterations: ITERATIONS,
        unknown_user_iterations: ITERATIONS,
        ..ServerConfig::default()
    };
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(seed ^ 0x5ec2e7).to_le_bytes());
    let server: &'static TapServer = SERVER.init(Server::new(
        server_config,
        ChaCha20Rng::seed_from_u64(seed),
        secret,
        TapLedger::new(OPENING),
        DEFAULT_PORT,
    ));
    let (sessions, refusal) = BUFFERS.init(SocketBuffers::new()).sockets(stack);
    for (slot, socket) in sessions.into_iter().enumerate() {
        spawner.spawn(session_task(server, slot, socket).unwrap());
    }
    spawner.spawn(refusal_task(server, refusal).unwrap());
    if let Some(secs) = options.serve_for {
        spawner.spawn(stop_task(server, secs).unwrap());
    }
    say(format_args!(
        "listening on {}:{DEFAULT_PORT} via {} ({SESSIONS} session tasks and a refusal task, \
         embassy-net)",
        options.address, options.tap
    ));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let options = match parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("txsock-embassy-tap: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = match options.seed.map_or_else(os_seed, Ok) {
        Ok(seed) => seed,
        Err(e) => {
            eprintln!("txsock-embassy-tap: {e}");
            return ExitCode::from(1);
        }
    };
    let device = match TunTapDevice::new(&options.tap) {
        Ok(device) => device,
        Err(e) => {
            eprintln!(
                "txsock-embassy-tap: TAP interface {}: {e} (create it with firmware-sim/tap-netns.sh, as root)",
                options.tap
            );
            return ExitCode::from(1);
        }
    };
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    let executor = EXECUTOR.init(Executor::new());
    executor.run(|spawner| {
        spawner.spawn(main_task(spawner, options, device, seed).unwrap());
    })
}
