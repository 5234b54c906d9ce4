//! The ledger contract: what a server session asks of storage, and a fixed-capacity
//! in-memory ledger that fulfils it.
//!
//! A [`ServerSession`](crate::session::ServerSession) never touches storage. When it needs
//! the ledger it hands out a [`LedgerRequest`] from `poll_ledger` and waits for the driver
//! to answer with the matching [`LedgerReply`]. The host answers asynchronously from SQL,
//! batching many sessions' transfers into one durable commit; the firmware answers at once
//! from a [`MemLedger`]. Both must honour the contract documented on each variant.

use crate::amount::Amount;
use crate::auth::Verifier;
use crate::error::ErrorCode;
use crate::lockout::{Backoff, LockoutState};
use crate::message::HISTORY_PAGE;
use crate::names::{TransferId, Username};
use crate::time::Instant;

/// A request from a server session to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerRequest {
    /// Create `user` with `verifier` and the ledger's opening balance.
    /// Reply: [`LedgerReply::Registered`]; `Err(UserExists)` if taken, `Err(LedgerFull)`
    /// if out of capacity.
    Register {
        /// New user.
        user: Username,
        /// Their verifier.
        verifier: Verifier,
    },
    /// Look up `user`'s verifier and lockout state. Reply: [`LedgerReply::Credentials`]
    /// (`verifier: None` for an unknown user).
    Credentials {
        /// The user logging in.
        user: Username,
    },
    /// Record a failed login for `user` at `now` under `policy`
    /// ([`LockoutState::record_failure`]), atomically. Reply: [`LedgerReply::Recorded`]
    /// with the new state. An unknown `user` has nothing to record (the reply is the default
    /// state), but a durable ledger does the same storage work for it as for a known user
    /// (a write of the same size, synced with the batch), so that the time to the
    /// `auth_failed` answer does not tell whether the name exists.
    LoginFailed {
        /// The user.
        user: Username,
        /// When.
        now: Instant,
        /// The backoff policy to apply.
        policy: Backoff,
    },
    /// Record a successful login (reset the lockout state). Reply: [`LedgerReply::Recorded`].
    LoginSucceeded {
        /// The user.
        user: Username,
    },
    /// Move `amount` from `from` to `to`, atomically and durably, exactly once per
    /// `(from, id)`. Reply: [`LedgerReply::Transfer`].
    ///
    /// - If `(from, id)` already has a final outcome (committed, or refused for one of the
    ///   reasons below): move nothing; reply with that original outcome and the balance
    ///   recorded with it if `to` and `amount` match, else `Err(DuplicateId)`.
    /// - Else refuse, moving nothing, with `SelfTransfer` (`from == to`),
    ///   `UnknownRecipient`, `InsufficientFunds` or `BalanceOverflow`, and record that
    ///   refusal as the id's final outcome (so a retry after a lost reply gets the same
    ///   answer even if the balances have changed since).
    /// - Else debit, credit and journal the transfer in one transaction.
    /// - `LedgerFull` (no room to record anything) is not final: a later retry may succeed.
    /// - A sender without an account (only possible if the account went away after the
    ///   login) gets `Err(NotLoggedIn)` with balance 0; nothing is recorded, as there is no
    ///   account to record it for.
    ///
    /// The reply's `balance` is the sender's balance after the transfer (or at the refusal).
    /// [`decide_transfer`] is this contract as code: every ledger calls it.
    Transfer {
        /// The logged-in user; always the debited account.
        from: Username,
        /// Idempotency key.
        id: TransferId,
        /// Recipient.
        to: Username,
        /// Amount.
        amount: Amount,
    },
    /// `user`'s balance. Reply: [`LedgerReply::Balance`]; `Err(NotLoggedIn)` if `user` has
    /// no account.
    Balance {
        /// The user.
        user: Username,
    },
    /// Up to [`HISTORY_PAGE`] journal entries involving `user`, newest first, after skipping
    /// `offset`. Reply: [`LedgerReply::History`].
    History {
        /// The user.
        user: Username,
        /// Entries to skip.
        offset: u32,
        /// True to list the deposits made to `user` among the transfers (the `statement`
        /// request); false for transfers only (`history`). A ledger that does not journal
        /// deposits one by one ([`MemLedger`], a board's flash ledger) lists none either way.
        deposits: bool,
    },
}

/// One committed transfer as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Idempotency key, unique per sender.
    pub id: TransferId,
    /// Sender.
    pub from: Username,
    /// Recipient.
    pub to: Username,
    /// Amount.
    pub amount: Amount,
    /// The sender's balance right after this transfer (or at its refusal).
    pub balance_after: Amount,
    /// Commit time, milliseconds since the Unix epoch (0 where the ledger has no clock).
    pub at: u64,
    /// `Some` for a recorded refusal: nothing moved, the id's outcome is this code.
    pub refused: Option<ErrorCode>,
}

impl JournalEntry {
    /// True if this entry moved money.
    pub fn is_committed(&self) -> bool {
        self.refused.is_none()
    }
}

/// The outcome of a [`LedgerRequest::Transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOutcome {
    /// `Ok` if committed (now or by an earlier request with the same id).
    pub result: Result<(), ErrorCode>,
    /// The sender's balance after the transfer, or now if refused.
    pub balance: Amount,
}

/// The highest balance an account may hold: [`Amount::MAX`] (10^15 minor units), the same
/// bound as a single amount, so that every balance is a valid wire amount and sums of
/// balances fit a signed 64-bit SQL integer. A credit past it is refused with
/// [`ErrorCode::BalanceOverflow`] by every path that adds money: transfers, deposits and
/// opening balances.
pub const MAX_BALANCE: Amount = Amount::MAX;

/// Adds `amount` to `balance`, or [`ErrorCode::BalanceOverflow`] past [`MAX_BALANCE`].
pub fn credit(balance: Amount, amount: Amount) -> Result<Amount, ErrorCode> {
    balance
        .checked_add(amount)
        .filter(|sum| *sum <= MAX_BALANCE)
        .ok_or(ErrorCode::BalanceOverflow)
}

/// A transfer id's final outcome as a ledger recorded it: the transfer it was for, its result
/// and the sender's balance with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedOutcome<'a> {
    /// Recipient of the recorded transfer.
    pub to: &'a str,
    /// Amount of the recorded transfer.
    pub amount: Amount,
    /// `Ok` if it committed, else the refusal.
    pub result: Result<(), ErrorCode>,
    /// The sender's balance recorded with it.
    pub balance: Amount,
}

/// What a ledger has read, inside its transaction, before it decides a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferFacts<'a> {
    /// The sender's balance, `None` if the sender has no account.
    pub sender: Option<Amount>,
    /// The recipient's balance, `None` if the recipient has no account.
    pub recipient: Option<Amount>,
    /// The id's final outcome, if `(sender, id)` already has one.
    pub earlier: Option<RecordedOutcome<'a>>,
}

/// What [`decide_transfer`] tells a ledger to do: the reply, and the only writes to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferDecision {
    /// Reply with this outcome and write nothing: a repeat of a recorded id (its original
    /// outcome, or [`ErrorCode::DuplicateId`] for another transfer under that id), or a
    /// sender without an account ([`ErrorCode::NotLoggedIn`], not final: nothing can be
    /// recorded for an account that does not exist).
    Answer(TransferOutcome),
    /// Record this refusal as the id's final outcome (with the recipient, the amount, the
    /// code and the sender's balance now), move nothing, and reply with it.
    Refuse(TransferOutcome),
    /// Debit the sender to `sender_after`, credit the recipient to `recipient_after`,
    /// journal the transfer with `sender_after`, all in one transaction, and reply `Ok`.
    Commit {
        /// The sender's balance after the transfer.
        sender_after: Amount,
        /// The recipient's balance after the transfer.
        recipient_after: Amount,
    },
}

impl TransferDecision {
    /// The reply the ledger sends once it has made the decision's writes.
    pub fn outcome(&self) -> TransferOutcome {
        match *self {
            TransferDecision::Answer(outcome) | TransferDecision::Refuse(outcome) => outcome,
            TransferDecision::Commit { sender_after, .. } => TransferOutcome {
                result: Ok(()),
                balance: sender_after,
            },
        }
    }
}

/// The money rule: decides a [`LedgerRequest::Transfer`] of `amount` from `from` to `to` from
/// the `facts` a ledger read, following the contract documented there. Every ledger
/// ([`MemLedger`], the host's SQLite and MySQL stores, a board's flash ledger) reads the rows,
/// calls this, and writes what it says; none decides anything itself.
///
/// In order: an id with a recorded outcome is answered from it; a sender without an account
/// is [`ErrorCode::NotLoggedIn`]; then the final refusals, in this order: `SelfTransfer`,
/// `UnknownRecipient`, `InsufficientFunds`, `BalanceOverflow` (the recipient would pass
/// [`MAX_BALANCE`]); else the transfer commits.
pub fn decide_transfer(
    from: &Username,
    to: &Username,
    amount: Amount,
    facts: TransferFacts<'_>,
) -> TransferDecision {
    let Some(sender) = facts.sender else {
        return TransferDecision::Answer(TransferOutcome {
            result: Err(ErrorCode::NotLoggedIn),
            balance: Amount(0),
        });
    };
    if let Some(earlier) = facts.earlier {
        return TransferDecision::Answer(
            if earlier.to == to.as_str() && earlier.amount == amount {
                TransferOutcome {
                    result: earlier.result,
                    balance: earlier.balance,
                }
            } else {
                TransferOutcome {
                    result: Err(ErrorCode::DuplicateId),
                    balance: sender,
                }
            },
        );
    }
    let refuse = |code| {
        TransferDecision::Refuse(TransferOutcome {
            result: Err(code),
            balance: sender,
        })
    };
    if from == to {
        return refuse(ErrorCode::SelfTransfer);
    }
    let Some(recipient) = facts.recipient else {
        return refuse(ErrorCode::UnknownRecipient);
    };
    let Some(sender_after) = sender.checked_sub(amount) else {
        return refuse(ErrorCode::InsufficientFunds);
    };
    match credit(recipient, amount) {
        Ok(recipient_after) => TransferDecision::Commit {
            sender_after,
            recipient_after,
        },
        Err(code) => refuse(code),
    }
}

/// What moved the money of a [`HistoryEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A transfer with idempotency key `id`, sent by `from`.
    Transfer {
        /// Transfer id.
        id: TransferId,
        /// Sender.
        from: Username,
    },
    /// Money created for the recipient by the operator: an administrator's deposit or an
    /// account's opening balance. It has no sender and no id.
    Deposit,
}

/// One journal entry as history shows it: a transfer, or (in a statement) a deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Transfer (with its id and sender) or deposit.
    pub kind: EntryKind,
    /// Recipient (the account credited).
    pub to: Username,
    /// Amount.
    pub amount: Amount,
    /// Commit time, milliseconds since the Unix epoch (0 where the ledger has no clock).
    pub at: u64,
}

impl HistoryEntry {
    /// A transfer entry.
    pub fn transfer(id: TransferId, from: Username, to: Username, amount: Amount, at: u64) -> Self {
        HistoryEntry {
            kind: EntryKind::Transfer { id, from },
            to,
            amount,
            at,
        }
    }

    /// The transfer id, `None` for a deposit.
    pub fn id(&self) -> Option<&TransferId> {
        match &self.kind {
            EntryKind::Transfer { id, .. } => Some(id),
            EntryKind::Deposit => None,
        }
    }

    /// The sender, `None` for a deposit.
    pub fn from(&self) -> Option<&Username> {
        match &self.kind {
            EntryKind::Transfer { from, .. } => Some(from),
            EntryKind::Deposit => None,
        }
    }
}

impl From<&JournalEntry> for HistoryEntry {
    fn from(e: &JournalEntry) -> Self {
        HistoryEntry::transfer(e.id.clone(), e.from.clone(), e.to.clone(), e.amount, e.at)
    }
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// Newest first.
    pub entries: heapless::Vec<HistoryEntry, HISTORY_PAGE>,
    /// True if older entries exist.
    pub more: bool,
}

/// The ledger's answer to a [`LedgerRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerReply {
    /// Answer to `Register`.
    Registered(Result<(), ErrorCode>),
    /// Answer to `Credentials`.
    Credentials {
        /// `None` if the user does not exist.
        verifier: Option<Verifier>,
        /// The account's lockout state (default for unknown users).
        lockout: LockoutState,
    },
    /// Answer to `LoginFailed` and `LoginSucceeded`.
    Recorded(LockoutState),
    /// Answer to `Transfer`.
    Transfer(TransferOutcome),
    /// Answer to `Balance`.
    Balance(Result<Amount, ErrorCode>),
    /// Answer to `History`.
    History(Result<HistoryPage, ErrorCode>),
    /// The ledger could not answer at all (storage failure). The session reports
    /// [`ErrorCode::Internal`] and, for a transfer, the client must retry with the same id.
    Unavailable,
}

/// A ledger that answers synchronously.
pub trait Ledger {
    /// Executes `request` and answers it, following the contract on [`LedgerRequest`].
    fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply;
}

/// One account of a [`MemLedger`].
#[derive(Debug, Clone)]
pub struct MemAccount {
    /// Username.
    pub user: Username,
    /// SCRAM verifier.
    pub verifier: Verifier,
    /// Balance.
    pub balance: Amount,
    /// Failed-login state.
    pub lockout: LockoutState,
}

/// A fixed-capacity in-memory ledger: at most `USERS` accounts and `TRANSFERS` journal
/// entries. Running out of either is a clean [`ErrorCode::LedgerFull`] refusal.
///
/// Size: roughly `USERS * 190 + TRANSFERS * 130` bytes. It keeps no clock, so journal
/// entries carry `at = 0`.
#[derive(Debug)]
pub struct MemLedger<const USERS: usize, const TRANSFERS: usize> {
    accounts: heapless::Vec<MemAccount, USERS>,
    journal: heapless::Vec<JournalEntry, TRANSFERS>,
    opening_balance: Amount,
    minted: Amount,
}

impl<const USERS: usize, const TRANSFERS: usize> MemLedger<USERS, TRANSFERS> {
    /// An empty ledger whose new accounts start with `opening_balance` (minted money).
    pub const fn new(opening_balance: Amount) -> Self {
        const { assert!(USERS > 0 && TRANSFERS > 0, "a ledger needs capacity") };
        MemLedger {
            accounts: heapless::Vec::new(),
            journal: heapless::Vec::new(),
            opening_balance,
            minted: Amount(0),
        }
    }

    fn account(&self, user: &Username) -> Option<usize> {
        self.accounts.iter().position(|a| a.user == *user)
    }

    // The accounts are reached by `get`/`find` rather than by index, here and below: an index
    // is a bounds check with a panic location in every device image, for an index that
    // `account` has just found.

    /// The account of `user`, if any.
    fn find(&self, user: &Username) -> Option<&MemAccount> {
        self.accounts.iter().find(|a| a.user == *user)
    }

    /// The account of `user`, if any, for a change.
    fn find_mut(&mut self, user: &Username) -> Option<&mut MemAccount> {
        self.accounts.iter_mut().find(|a| a.user == *user)
    }

    /// The balance of account `i`, if there is one.
    fn balance_of(&self, i: Option<usize>) -> Option<Amount> {
        Some(self.accounts.get(i?)?.balance)
    }

    /// Adds `amount` to `user` (money created by an administrator); returns the new balance.
    /// `UnknownRecipient` for no such account, `BalanceOverflow` past [`MAX_BALANCE`].
    pub fn deposit(&mut self, user: &Username, amount: Amount) -> Result<Amount, ErrorCode> {
        let minted = self.minted.checked_add(amount);
        let a = self.find_mut(user).ok_or(ErrorCode::UnknownRecipient)?;
        let minted = minted.ok_or(ErrorCode::BalanceOverflow)?;
        a.balance = credit(a.balance, amount)?;
        let balance = a.balance;
        self.minted = minted;
        Ok(balance)
    }

    /// Creates `user` with `verifier` and `balance` (minted money), as an administrator
    /// provisions an account. `UserExists`, `LedgerFull` when out of accounts, and
    /// `BalanceOverflow` past [`MAX_BALANCE`].
    pub fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
    ) -> Result<(), ErrorCode> {
        if self.find(user).is_some() {
            return Err(ErrorCode::UserExists);
        }
        let balance = credit(Amount(0), balance)?;
        let minted = self
            .minted
            .checked_add(balance)
            .ok_or(ErrorCode::BalanceOverflow)?;
        let account = MemAccount {
            user: user.clone(),
            verifier: verifier.clone(),
            balance,
            lockout: LockoutState::default(),
        };
        self.accounts
            .push(account)
            .map_err(|_| ErrorCode::LedgerFull)?;
        self.minted = minted;
        Ok(())
    }

    /// Mutable access to one account (an administrator's lock, a test's corruption); `None`
    /// for an unknown user. Changing a balance here bypasses the money rule.
    pub fn account_mut(&mut self, user: &Username) -> Option<&mut MemAccount> {
        self.find_mut(user)
    }

    /// All accounts.
    pub fn accounts(&self) -> &[MemAccount] {
        &self.accounts
    }

    /// The journal, oldest first.
    pub fn journal(&self) -> &[JournalEntry] {
        &self.journal
    }

    /// Sum of all balances.
    pub fn total(&self) -> u128 {
        self.accounts
            .iter()
            .map(|a| u128::from(a.balance.minor()))
            .sum()
    }

    /// Money created: opening balances plus deposits. Equals [`total`](Self::total) always.
    pub fn minted(&self) -> u128 {
        u128::from(self.minted.minor())
    }

    fn transfer(
        &mut self,
        from: &Username,
        id: &TransferId,
        to: &Username,
        amount: Amount,
    ) -> TransferOutcome {
        let sender = self.account(from);
        let recipient = self.account(to);
        let earlier = self
            .journal
            .iter()
            .find(|e| e.from == *from && e.id == *id)
            .map(|e| RecordedOutcome {
                to: e.to.as_str(),
                amount: e.amount,
                result: e.refused.map_or(Ok(()), Err),
                balance: e.balance_after,
            });
        let facts = TransferFacts {
            sender: self.balance_of(sender),
            recipient: self.balance_of(recipient),
            earlier,
        };
        let decision = decide_transfer(from, to, amount, facts);
        let outcome = decision.outcome();
        let entry = |balance_after, refused| JournalEntry {
            id: id.clone(),
            from: from.clone(),
            to: to.clone(),
            amount,
            balance_after,
            at: 0,
            refused,
        };
        match decision {
            TransferDecision::Answer(_) => outcome,
            TransferDecision::Refuse(refusal) => {
                // Recorded so a retry gets the same answer; a full journal only loses that.
                let _ = self
                    .journal
                    .push(entry(refusal.balance, refusal.result.err()));
                outcome
            }
            TransferDecision::Commit {
                sender_after,
                recipient_after,
            } => {
                // Both accounts exist: the rule commits only with both balances read.
                let (Some(fi), Some(ti)) = (sender, recipient) else {
                    return TransferOutcome {
                        result: Err(ErrorCode::Internal),
                        balance: outcome.balance,
                    };
                };
                if self.journal.push(entry(sender_after, None)).is_err() {
                    return TransferOutcome {
                        result: Err(ErrorCode::LedgerFull),
                        balance: self.balance_of(Some(fi)).unwrap_or(outcome.balance),
                    };
                }
                // `account` found both indices.
                if let Some(sender) = self.accounts.get_mut(fi) {
                    sender.balance = sender_after;
                }
                if let Some(recipient) = self.accounts.get_mut(ti) {
                    recipient.balance = recipient_after;
                }
                outcome
            }
        }
    }
}

impl<const USERS: usize, const TRANSFERS: usize> Ledger for MemLedger<USERS, TRANSFERS> {
    fn execute(&mut self, request: &LedgerRequest, _now: Instant) -> LedgerReply {
        match request {
            LedgerRequest::Register { user, verifier } => {
                LedgerReply::Registered(self.add_user(user, verifier, self.opening_balance))
            }
            LedgerRequest::Credentials { user } => match self.find(user) {
                Some(a) => LedgerReply::Credentials {
                    verifier: Some(a.verifier.clone()),
                    lockout: a.lockout,
                },
                None => LedgerReply::Credentials {
                    verifier: None,
                    lockout: LockoutState::default(),
                },
            },
            LedgerRequest::LoginFailed { user, now, policy } => {
                let mut state = LockoutState::default();
                if let Some(a) = self.find_mut(user) {
                    a.lockout.record_failure(*now, policy);
                    state = a.lockout;
                }
                LedgerReply::Recorded(state)
            }
            LedgerRequest::LoginSucceeded { user } => {
                if let Some(a) = self.find_mut(user) {
                    a.lockout.record_success();
                }
                LedgerReply::Recorded(LockoutState::default())
            }
            LedgerRequest::Transfer {
                from,
                id,
                to,
                amount,
            } => LedgerReply::Transfer(self.transfer(from, id, to, *amount)),
            LedgerRequest::Balance { user } => LedgerReply::Balance(
                self.find(user)
                    .map(|a| a.balance)
                    .ok_or(ErrorCode::NotLoggedIn),
            ),
            // This ledger keeps deposits as a total only ([`Self::minted`]): none listed.
            LedgerRequest::History { user, offset, .. } => {
                let mut page = HistoryPage::default();
                let mine = self
                    .journal
                    .iter()
                    .rev()
                    .filter(|e| e.is_committed() && (e.from == *user || e.to == *user));
                for (n, e) in mine.skip(*offset as usize).enumerate() {
                    if n == HISTORY_PAGE {
                        page.more = true;
                        break;
                    }
                    // n < HISTORY_PAGE, so there is room.
                    let _ = page.entries.push(e.into());
                }
                LedgerReply::History(Ok(page))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    fn verifier() -> Verifier {
        Verifier {
            salt: heapless::Vec::new(),
            iterations: 1,
            stored_key: [0; 32],
            server_key: [0; 32],
        }
    }

    fn ledger() -> MemLedger<4, 8> {
        let mut l = MemLedger::new(Amount(1000));
        for u in ["a", "b", "c"] {
            let r = l.execute(
                &LedgerRequest::Register {
                    user: user(u),
                    verifier: verifier(),
                },
                Instant::ZERO,
            );
            assert_eq!(r, LedgerReply::Registered(Ok(())));
        }
        l
    }

    fn send(
        l: &mut MemLedger<4, 8>,
        from: &str,
        id: &str,
        to: &str,
        amount: u64,
    ) -> TransferOutcome {
        let req = LedgerRequest::Transfer {
            from: user(from),
            id: TransferId::parse(id).unwrap(),
            to: user(to),
            amount: Amount(amount),
        };
        match l.execute(&req, Instant::ZERO) {
            LedgerReply::Transfer(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transfer_contract() {
        let mut l = ledger();
        assert_eq!(
            send(&mut l, "a", "1", "b", 300),
            TransferOutcome {
                result: Ok(()),
                balance: Amount(700)
            }
        );
        // Idempotent retry: same outcome, no second move.
        assert_eq!(
            send(&mut l, "a", "1", "b", 300),
            TransferOutcome {
                result: Ok(()),
                balance: Amount(700)
            }
        );
        assert_eq!(
            send(&mut l, "a", "1", "c", 300).result,
            Err(ErrorCode::DuplicateId)
        );
        assert_eq!(
            send(&mut l, "a", "2", "a", 1).result,
            Err(ErrorCode::SelfTransfer)
        );
        assert_eq!(
            send(&mut l, "a", "3", "zed", 1).result,
            Err(ErrorCode::UnknownRecipient)
        );
        assert_eq!(
            send(&mut l, "a", "4", "b", 701).result,
            Err(ErrorCode::InsufficientFunds)
        );
        // The same id from another sender is a different transfer.
        assert_eq!(send(&mut l, "b", "1", "a", 1).result, Ok(()));
        assert_eq!(l.journal().iter().filter(|e| e.is_committed()).count(), 2);
        // A refusal is final too: after funds arrive, the same id still answers the refusal.
        l.deposit(&user("a"), Amount(10_000)).unwrap();
        assert_eq!(
            send(&mut l, "a", "4", "b", 701).result,
            Err(ErrorCode::InsufficientFunds)
        );
        assert_eq!(send(&mut l, "a", "5", "b", 701).result, Ok(()));
        assert_eq!(l.total(), l.minted());
    }

    #[test]
    fn capacity_exhaustion_is_clean() {
        let mut l = ledger();
        for i in 0..8 {
            assert_eq!(send(&mut l, "a", &i.to_string(), "b", 1).result, Ok(()));
        }
        assert_eq!(
            send(&mut l, "a", "x", "b", 1).result,
            Err(ErrorCode::LedgerFull)
        );
        let r = l.execute(
            &LedgerRequest::Register {
                user: user("d"),
                verifier: verifier(),
            },
            Instant::ZERO,
        );
        assert_eq!(r, LedgerReply::Registered(Ok(())));
        let r = l.execute(
            &LedgerRequest::Register {
                user: user("e"),
                verifier: verifier(),
            },
            Instant::ZERO,
        );
        assert_eq!(r, LedgerReply::Registered(Err(ErrorCode::LedgerFull)));
        assert_eq!(l.total(), l.minted());
    }

    #[test]
    fn history_pages_newest_first() {
        let mut l = ledger();
        for i in 0..5 {
            send(&mut l, "a", &i.to_string(), "b", 1);
        }
        let LedgerReply::History(Ok(p)) = l.execute(
            &LedgerRequest::History {
                user: user("b"),
                offset: 1,
                deposits: true,
            },
            Instant::ZERO,
        ) else {
            panic!()
        };
        assert_eq!(
            p.entries
                .iter()
                .map(|e| e.id().map(TransferId::as_str))
                .collect::<Vec<_>>(),
            [Some("3"), Some("2")]
        );
        assert!(p.more);
    }

    fn facts(sender: Option<u64>, recipient: Option<u64>) -> TransferFacts<'static> {
        TransferFacts {
            sender: sender.map(Amount),
            recipient: recipient.map(Amount),
            earlier: None,
        }
    }

    fn decide(from: &str, to: &str, amount: u64, facts: TransferFacts<'_>) -> TransferDecision {
        decide_transfer(&user(from), &user(to), Amount(amount), facts)
    }

    fn refusal(code: ErrorCode, balance: u64) -> TransferDecision {
        TransferDecision::Refuse(TransferOutcome {
            result: Err(code),
            balance: Amount(balance),
        })
    }

    #[test]
    fn money_rule_commits_and_refuses_in_order() {
        assert_eq!(
            decide("a", "b", 30, facts(Some(100), Some(5))),
            TransferDecision::Commit {
                sender_after: Amount(70),
                recipient_after: Amount(35)
            }
        );
        // The whole balance may go; one minor unit more may not.
        assert!(matches!(
            decide("a", "b", 100, facts(Some(100), Some(0))),
            TransferDecision::Commit {
                sender_after: Amount(0),
                ..
            }
        ));
        assert_eq!(
            decide("a", "b", 101, facts(Some(100), Some(0))),
            refusal(ErrorCode::InsufficientFunds, 100)
        );
        // Self-transfer comes before everything else that is final, even a missing recipient.
        assert_eq!(
            decide("a", "a", 1, facts(Some(100), None)),
            refusal(ErrorCode::SelfTransfer, 100)
        );
        assert_eq!(
            decide("a", "b", 1000, facts(Some(100), None)),
            refusal(ErrorCode::UnknownRecipient, 100)
        );
        // Insufficient funds comes before the recipient's ceiling.
        assert_eq!(
            decide("a", "b", 101, facts(Some(100), Some(MAX_BALANCE.0))),
            refusal(ErrorCode::InsufficientFunds, 100)
        );
        // The recipient may reach the ceiling but not pass it.
        assert_eq!(
            decide("a", "b", 10, facts(Some(100), Some(MAX_BALANCE.0 - 10))),
            TransferDecision::Commit {
                sender_after: Amount(90),
                recipient_after: MAX_BALANCE
            }
        );
        assert_eq!(
            decide("a", "b", 11, facts(Some(100), Some(MAX_BALANCE.0 - 10))),
            refusal(ErrorCode::BalanceOverflow, 100)
        );
        assert_eq!(
            decide("a", "b", 1, facts(Some(100), Some(u64::MAX))),
            refusal(ErrorCode::BalanceOverflow, 100)
        );
    }

    #[test]
    fn money_rule_answers_recorded_ids_and_unknown_senders_without_writing() {
        let earlier = RecordedOutcome {
            to: "b",
            amount: Amount(30),
            result: Err(ErrorCode::InsufficientFunds),
            balance: Amount(20),
        };
        let with = |earlier| TransferFacts {
            sender: Some(Amount(500)),
            recipient: Some(Amount(0)),
            earlier: Some(earlier),
        };
        // The same transfer: its recorded outcome and balance, even though it would commit now.
        assert_eq!(
            decide("a", "b", 30, with(earlier)),
            TransferDecision::Answer(TransferOutcome {
                result: Err(ErrorCode::InsufficientFunds),
                balance: Amount(20)
            })
        );
        // Another transfer under that id: DuplicateId with the balance now.
        let duplicate = TransferDecision::Answer(TransferOutcome {
            result: Err(ErrorCode::DuplicateId),
            balance: Amount(500),
        });
        assert_eq!(decide("a", "c", 30, with(earlier)), duplicate);
        assert_eq!(decide("a", "b", 31, with(earlier)), duplicate);
        // A sender without an account: not_logged_in, not final, nothing written.
        assert_eq!(
            decide("ghost", "b", 1, facts(None, Some(0))),
            TransferDecision::Answer(TransferOutcome {
                result: Err(ErrorCode::NotLoggedIn),
                balance: Amount(0)
            })
        );
    }

    #[test]
    fn credits_stop_at_the_ceiling() {
        assert_eq!(credit(Amount(1), Amount(2)), Ok(Amount(3)));
        assert_eq!(credit(Amount(0), MAX_BALANCE), Ok(MAX_BALANCE));
        assert_eq!(
            credit(MAX_BALANCE, Amount(1)),
            Err(ErrorCode::BalanceOverflow)
        );
        assert_eq!(
            credit(Amount(u64::MAX), Amount(1)),
            Err(ErrorCode::BalanceOverflow)
        );
        let mut l = ledger();
        assert_eq!(
            l.deposit(&user("a"), Amount(MAX_BALANCE.0 - 1000)),
            Ok(MAX_BALANCE)
        );
        assert_eq!(
            l.deposit(&user("a"), Amount(1)),
            Err(ErrorCode::BalanceOverflow)
        );
        assert_eq!(
            l.add_user(&user("d"), &verifier(), Amount(MAX_BALANCE.0 + 1)),
            Err(ErrorCode::BalanceOverflow)
        );
        assert_eq!(l.total(), l.minted());
    }

    proptest! {
        /// Whatever transfers are attempted, the sum of balances equals the money minted.
        #[test]
        fn conserves_money(ops in proptest::collection::vec((0usize..4, 0usize..4, 0u64..600, 0u8..12), 0..60)) {
            let mut l = ledger();
            let names = ["a", "b", "c", "nobody"];
            for (f, t, amount, id) in ops {
                let _ = send(&mut l, names[f.min(2)], &id.to_string(), names[t], amount.max(1));
                prop_assert_eq!(l.total(), l.minted());
            }
        }
    }

    fn history(l: &mut MemLedger<4, 8>, who: &str, offset: u32) -> HistoryPage {
        match l.execute(
            &LedgerRequest::History {
                user: user(who),
                offset,
                deposits: false,
            },
            Instant::ZERO,
        ) {
            LedgerReply::History(Ok(page)) => page,
            other => panic!("{other:?}"),
        }
    }

    /// The whole balance may be sent: it commits, empties the sender and credits the
    /// recipient with all of it; one minor unit more than the balance is refused.
    #[test]
    fn the_whole_balance_can_be_sent() {
        let mut l = ledger();
        assert_eq!(
            send(&mut l, "a", "all", "b", 1000),
            TransferOutcome {
                result: Ok(()),
                balance: Amount(0)
            }
        );
        assert_eq!(l.accounts()[1].balance, Amount(2000));
        assert_eq!(
            send(&mut l, "b", "over", "c", 2001).result,
            Err(ErrorCode::InsufficientFunds)
        );
        assert_eq!(l.total(), l.minted());
    }

    /// A user's history holds the transfers they sent and those they received, and nothing
    /// between other users, nor recorded refusals.
    #[test]
    fn history_shows_both_directions_and_nobody_elses() {
        let mut l = ledger();
        send(&mut l, "a", "out", "b", 10);
        send(&mut l, "b", "in", "a", 20);
        send(&mut l, "b", "theirs", "c", 30);
        send(&mut l, "c", "theirs-too", "b", 40);
        send(&mut l, "a", "refused", "b", 100_000);
        let ids = |page: HistoryPage| {
            page.entries
                .iter()
                .map(|e| match &e.kind {
                    EntryKind::Transfer { id, from } => (id.to_string(), from.to_string()),
                    EntryKind::Deposit => panic!("a deposit in {e:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(history(&mut l, "a", 0)),
            [("in".into(), "b".into()), ("out".into(), "a".into())]
        );
        let c = history(&mut l, "c", 0);
        assert!(!c.more);
        assert_eq!(
            ids(c),
            [
                ("theirs-too".into(), "c".into()),
                ("theirs".into(), "b".into())
            ]
        );
    }

    /// A deposit credits exactly its amount, is minted money, and refuses unknown users.
    #[test]
    fn deposits_credit_the_account_and_count_as_minted() {
        let mut l = ledger();
        let minted = l.minted();
        assert_eq!(l.deposit(&user("b"), Amount(250)), Ok(Amount(1250)));
        assert_eq!(l.accounts()[1].balance, Amount(1250));
        assert_eq!(l.minted(), minted + 250);
        assert_eq!(l.total(), l.minted());
        assert_eq!(
            l.deposit(&user("zed"), Amount(1)),
            Err(ErrorCode::UnknownRecipient)
        );
        assert_eq!(l.minted(), minted + 250);
    }

    /// `account_mut` reaches the named account and no other (an administrator's lock is
    /// what the next login sees), and nothing for an unknown name.
    #[test]
    fn account_mut_reaches_the_named_account() {
        let mut l = ledger();
        let until = Instant::from_millis(60_000);
        l.account_mut(&user("b")).unwrap().lockout.locked_until = until;
        let lockout = |l: &mut MemLedger<4, 8>, who: &str| match l.execute(
            &LedgerRequest::Credentials { user: user(who) },
            Instant::ZERO,
        ) {
            LedgerReply::Credentials { lockout, .. } => lockout,
            other => panic!("{other:?}"),
        };
        assert_eq!(lockout(&mut l, "b").locked_until, until);
        assert_eq!(lockout(&mut l, "a"), LockoutState::default());
        assert!(l.account_mut(&user("zed")).is_none());
    }
}
