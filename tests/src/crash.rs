//! What the kill -9 tests share (`tests/crash.rs`, one server killed; `tests/galera.rs`,
//! servers and database nodes of a cluster killed): the accounts and their money, the load's
//! random transfers, the pacing of the kills, and the checks of the ledger read directly from
//! the database afterwards. Each test keeps its own way of sending (pipelined windows, or a
//! client roaming between servers) and of killing.

use rand_core::RngCore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use txsock_core::session::ReceiptInfo;
use txsock_core::{Amount, ErrorCode};

use crate::Server;

/// The accounts the clients transfer between, one client each.
pub const ACCOUNTS: [&str; 4] = ["acct0", "acct1", "acct2", "acct3"];

/// The servers' flags giving every account [`OPENING`].
pub const OPENING_FLAGS: [&str; 2] = ["--opening-balance", "1000.00"];

/// Every account's opening balance, in minor units ([`OPENING_FLAGS`]' 1000.00).
pub const OPENING: u64 = 100_000;

/// The journal's transfers, as [`JournalRow`]s (the same SQL on SQLite and MySQL/MariaDB).
pub const JOURNAL_QUERY: &str =
    "SELECT from_user, transfer_id, to_user, amount FROM journal WHERE kind = 'transfer'";

/// Every account's balance, as (name, minor units).
pub const BALANCES_QUERY: &str = "SELECT name, balance FROM users";

/// One journaled transfer: sender, transfer id, recipient, amount (minor units).
pub type JournalRow = (String, String, String, u64);

/// What one client was told: the verified receipt of every transfer id it finished.
pub type Acknowledged = HashMap<String, ReceiptInfo>;

/// A uniformly random number below `n` (from the OS: every run loads differently).
pub fn random_below(n: u64) -> u64 {
    rand_core::OsRng.next_u64() % n
}

/// A random recipient for the client of account `ACCOUNTS[sender]`: any account but its own.
pub fn random_recipient(sender: usize) -> &'static str {
    ACCOUNTS[(sender + 1 + random_below(ACCOUNTS.len() as u64 - 1) as usize) % ACCOUNTS.len()]
}

/// A random amount, up to 300.00: large enough that some transfers are refused for want of
/// funds, so refusals are under test too.
pub fn random_amount() -> Amount {
    Amount(1 + random_below(30_000))
}

/// Receipts equal as far as the outcome goes: result, recipient, amount, balance after.
pub fn same_outcome(a: &ReceiptInfo, b: &ReceiptInfo) -> bool {
    (a.result, &a.to, a.amount, a.balance) == (b.result, &b.to, b.amount, b.balance)
}

/// Checks that a transfer id sent again got the original outcome (`again`, after the `first`
/// answer); `what` says which id and when, for the message.
pub fn assert_same_outcome(what: &str, again: &ReceiptInfo, first: &ReceiptInfo) {
    assert!(
        same_outcome(again, first),
        "{what}: {again:?}, first answer {first:?}"
    );
}

/// Checks the one answer a transfer of the load may get: committed, or refused for want of
/// funds (anything else means the kills leaked into answers).
pub fn assert_committed_or_short_of_funds(id: &str, receipt: &ReceiptInfo) {
    assert!(
        receipt.result.is_ok() || receipt.result == Err(ErrorCode::InsufficientFunds),
        "{id}: {receipt:?}"
    );
}

/// The kills of the long form: `TXSOCK_CRASH_ROUNDS` (set by `cargo xtask crash --rounds N`),
/// default 20.
pub fn long_rounds() -> usize {
    std::env::var("TXSOCK_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(20)
}

/// The progress of the load, shared by the client threads and the killer.
#[derive(Default)]
pub struct Load {
    /// Receipts verified so far, by all clients.
    acknowledged: AtomicUsize,
    /// Set once the killer is done.
    killing_done: AtomicBool,
}

impl Load {
    /// Counts one verified receipt.
    pub fn acknowledge(&self) {
        self.acknowledged.fetch_add(1, Ordering::Release);
    }

    /// Whether a client that has sent `sent` transfers goes on: until it has sent
    /// `min_transfers` and every kill has hit the load, but never past 50 times that.
    pub fn goes_on(&self, sent: usize, min_transfers: usize) -> bool {
        (sent < min_transfers || !self.killing_done.load(Ordering::Acquire))
            && sent < 50 * min_transfers
    }

    /// Tells the clients that no more kills come.
    pub fn killing_done(&self) {
        self.killing_done.store(true, Ordering::Release);
    }

    /// Waits for a random moment under load for the next kill: a random number of new
    /// receipts (on average `gap`), then a random few milliseconds. False when the clients
    /// have all finished or `deadline` has passed (no load left to kill under).
    pub fn wait_for_progress<T>(
        &self,
        gap: u64,
        deadline: Instant,
        clients: &[JoinHandle<T>],
    ) -> bool {
        let all_finished = || clients.iter().all(|c| c.is_finished());
        let wait_for =
            self.acknowledged.load(Ordering::Acquire) + 1 + random_below(2 * gap) as usize;
        while self.acknowledged.load(Ordering::Acquire) < wait_for
            && Instant::now() < deadline
            && !all_finished()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(random_below(25)));
        !all_finished() && Instant::now() < deadline
    }
}

/// Sends every acknowledged transfer id once more, each client's ids in a thread of its own:
/// `resend(i, user, acked)` sends those of the `i`th client (`user`, who was told `acked`) and
/// checks that each gets its original answer. Returns how many ids were sent.
pub fn resend_all<'a>(
    told: impl IntoIterator<Item = (&'a str, &'a Acknowledged)>,
    resend: impl Fn(usize, &'a str, &'a Acknowledged) + Sync,
) -> usize {
    std::thread::scope(|scope| {
        let resend = &resend;
        let checkers: Vec<_> = told
            .into_iter()
            .enumerate()
            .map(|(i, (user, acked))| {
                scope.spawn(move || {
                    resend(i, user, acked);
                    acked.len()
                })
            })
            .collect();
        checkers
            .into_iter()
            .map(|c| c.join().expect("checker"))
            .sum()
    })
}

/// What [`check_ledger`] found acknowledged, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Acknowledged as committed (each journaled exactly once).
    pub committed: usize,
    /// Acknowledged as refused (none journaled).
    pub refused: usize,
}

/// Checks a ledger read directly from its database against what the clients were told
/// (`told`: user and receipts by id): the journal holds exactly the acknowledged transfers,
/// each once and as acknowledged, and nothing else; money is conserved; no balance is
/// negative. `ledger` names what was read in the messages (e.g. `sqlite`, `node 1 after the
/// load`); `history(id)` adds what is known of the events around transfer `id` (or nothing).
pub fn check_ledger<'a>(
    ledger: &str,
    journal: Vec<JournalRow>,
    balances: &[(String, i64)],
    told: impl IntoIterator<Item = (&'a str, &'a Acknowledged)>,
    history: &dyn Fn(&str) -> String,
) -> Tally {
    let mut journaled: HashMap<(String, String), Vec<(String, u64)>> = HashMap::new();
    for (from, id, to, amount) in journal {
        journaled.entry((from, id)).or_default().push((to, amount));
    }
    let mut tally = Tally::default();
    for (user, acked) in told {
        for (id, receipt) in acked {
            let rows = journaled
                .remove(&(user.to_string(), id.clone()))
                .unwrap_or_default();
            match receipt.result {
                Ok(()) => {
                    tally.committed += 1;
                    assert_eq!(
                        rows,
                        [(receipt.to.to_string(), receipt.amount.minor())],
                        "{ledger}: {user}/{id} acknowledged as {receipt:?}, journaled as \
                         {rows:?}{}",
                        history(id)
                    );
                }
                Err(_) => {
                    tally.refused += 1;
                    assert!(
                        rows.is_empty(),
                        "{ledger}: {user}/{id} refused but journaled {rows:?}{}",
                        history(id)
                    );
                }
            }
        }
    }
    assert!(
        journaled.is_empty(),
        "{ledger}: journaled transfers nobody was told about: {journaled:?}"
    );
    let total: i64 = balances.iter().map(|(_, b)| b).sum();
    assert_eq!(
        total as u64,
        OPENING * ACCOUNTS.len() as u64,
        "{ledger}: money not conserved: {balances:?}"
    );
    assert!(
        balances.iter().all(|(_, b)| *b >= 0),
        "{ledger}: negative balance: {balances:?}"
    );
    tally
}

/// Checks that `txsock ledger check` passes with `server`'s configuration (its `--db`);
/// `ledger` names the database in the message.
pub fn assert_ledger_check_passes(server: &Server, ledger: &str) {
    let check = server.admin(&["ledger", "check"], "");
    assert!(
        check.status.success(),
        "ledger check on {ledger}: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}
