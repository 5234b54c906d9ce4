//! The protocol's stable error codes.
//!
//! Every refusal the server sends is one [`ErrorCode`], carried on the wire as its snake_case
//! [`name`](ErrorCode::name) beside a short human message. Codes are part of the protocol
//! (see `docs/PROTOCOL.md`): new ones may be added, existing ones never change meaning.

use core::fmt;

/// A stable, machine-readable reason for a refusal.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON of a known message shape.
    Malformed,
    /// The line exceeded the maximum frame length.
    FrameTooLong,
    /// The request needs a logged-in session.
    NotLoggedIn,
    /// The request is not allowed once logged in (login, register).
    AlreadyLoggedIn,
    /// A message arrived that the current step of the login does not expect.
    UnexpectedMessage,
    /// Registration is closed on this server; an administrator creates users.
    RegistrationClosed,
    /// The username is taken.
    UserExists,
    /// The registration's verifier is unacceptable: iteration count below the server's
    /// minimum or above [`auth::MAX_ITERATIONS`](crate::auth::MAX_ITERATIONS), or a salt
    /// under 8 bytes.
    WeakVerifier,
    /// Login failed: wrong password, unknown user, locked account or throttled address.
    /// Deliberately one code for all of them.
    AuthFailed,
    /// A MAC did not verify; nothing changed.
    BadMac,
    /// The nonce is not outstanding: replayed, evicted, from another session or never issued.
    UnknownNonce,
    /// The amount is malformed, zero, too precise or too large.
    InvalidAmount,
    /// A username or transfer id is malformed.
    InvalidName,
    /// The sender's balance does not cover the amount.
    InsufficientFunds,
    /// The recipient has no account.
    UnknownRecipient,
    /// Sender and recipient are the same account.
    SelfTransfer,
    /// The transfer id was already used for a different transfer.
    DuplicateId,
    /// A fixed-capacity ledger is full.
    LedgerFull,
    /// The balance would overflow.
    BalanceOverflow,
    /// The server is at its connection limit.
    ServerBusy,
    /// The session was idle too long or did not log in in time.
    Timeout,
    /// Too many invalid frames; the connection is closed.
    TooManyBadFrames,
    /// The client did not read its responses; the connection is closed.
    OutputOverflow,
    /// The server could not complete the request (storage failure); retry later.
    Internal,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::Malformed,
        ErrorCode::FrameTooLong,
        ErrorCode::NotLoggedIn,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::UnexpectedMessage,
        ErrorCode::RegistrationClosed,
        ErrorCode::UserExists,
        ErrorCode::WeakVerifier,
        ErrorCode::AuthFailed,
        ErrorCode::BadMac,
        ErrorCode::UnknownNonce,
        ErrorCode::InvalidAmount,
        ErrorCode::InvalidName,
        ErrorCode::InsufficientFunds,
        ErrorCode::UnknownRecipient,
        ErrorCode::SelfTransfer,
        ErrorCode::DuplicateId,
        ErrorCode::LedgerFull,
        ErrorCode::BalanceOverflow,
        ErrorCode::ServerBusy,
        ErrorCode::Timeout,
        ErrorCode::TooManyBadFrames,
        ErrorCode::OutputOverflow,
        ErrorCode::Internal,
    ];

    /// The code's wire name.
    // Without `fast-request` (device builds) one out-of-line copy: every inlined copy of this
    // `match` brings its own 192-byte table of names on Cortex-M. The host (`fast-request`)
    // keeps the compiler's choice.
    #[cfg_attr(not(feature = "fast-request"), inline(never))]
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::FrameTooLong => "frame_too_long",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::UnexpectedMessage => "unexpected_message",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::UserExists => "user_exists",
            ErrorCode::WeakVerifier => "weak_verifier",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::BadMac => "bad_mac",
            ErrorCode::UnknownNonce => "unknown_nonce",
            ErrorCode::InvalidAmount => "invalid_amount",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::SelfTransfer => "self_transfer",
            ErrorCode::DuplicateId => "duplicate_id",
            ErrorCode::LedgerFull => "ledger_full",
            ErrorCode::BalanceOverflow => "balance_overflow",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooManyBadFrames => "too_many_bad_frames",
            ErrorCode::OutputOverflow => "output_overflow",
            ErrorCode::Internal => "internal",
        }
    }

    /// A short human explanation, sent beside the code.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "the message is not valid for this protocol",
            ErrorCode::FrameTooLong => "the line is longer than the server accepts",
            ErrorCode::NotLoggedIn => "log in first",
            ErrorCode::AlreadyLoggedIn => "already logged in",
            ErrorCode::UnexpectedMessage => "that message is not expected now",
            ErrorCode::RegistrationClosed => "registration is closed; ask an administrator",
            ErrorCode::UserExists => "that username is taken",
            ErrorCode::WeakVerifier => "the verifier's iteration count or salt is out of range",
            ErrorCode::AuthFailed => "wrong username or password, or try again later",
            ErrorCode::BadMac => "message authentication failed",
            ErrorCode::UnknownNonce => "unknown or already used nonce",
            ErrorCode::InvalidAmount => "invalid amount",
            ErrorCode::InvalidName => "invalid username or transfer id",
            ErrorCode::InsufficientFunds => "insufficient funds",
            ErrorCode::UnknownRecipient => "no such recipient",
            ErrorCode::SelfTransfer => "cannot transfer to yourself",
            ErrorCode::DuplicateId => "transfer id already used for a different transfer",
            ErrorCode::LedgerFull => "the ledger is full",
            ErrorCode::BalanceOverflow => "the balance would overflow",
            ErrorCode::ServerBusy => "the server is at its connection limit",
            ErrorCode::Timeout => "timed out",
            ErrorCode::TooManyBadFrames => "too many invalid messages",
            ErrorCode::OutputOverflow => "responses were not read",
            ErrorCode::Internal => "the server could not complete the request",
        }
    }

    /// Looks a code up by its wire name.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// True for codes after which the server closes the connection.
    pub const fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::ServerBusy
                | ErrorCode::Timeout
                | ErrorCode::TooManyBadFrames
                | ErrorCode::OutputOverflow
        )
    }

    /// True for codes that a correctly built request can only get if it was altered in
    /// transit (or replayed): a MAC that does not verify, a nonce that is not outstanding, a
    /// frame that does not parse or is too long, a name or amount that is invalid.
    ///
    /// "Correctly built" means what [`ClientSession`](crate::ClientSession) sends: names and
    /// amounts validated before sending, a frame within the protocol's limits, a MAC under
    /// the session key, and a nonce the server issued to this session and that the client has
    /// not used. A client that gets one of these codes for such a request should report
    /// tampering rather than its own mistake. Refusals that depend on the ledger (funds,
    /// recipient, ids), on policy (login, registration) or on the server's limits are never
    /// evidence of tampering.
    pub const fn means_altered_in_transit(self) -> bool {
        matches!(
            self,
            ErrorCode::BadMac
                | ErrorCode::UnknownNonce
                | ErrorCode::Malformed
                | ErrorCode::InvalidName
                | ErrorCode::InvalidAmount
                | ErrorCode::FrameTooLong
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl core::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(ErrorCode::from_name(c.name()), Some(*c));
            for d in &ErrorCode::ALL[i + 1..] {
                assert_ne!(c.name(), d.name());
            }
        }
        assert_eq!(ErrorCode::from_name("nope"), None);
    }

    /// The codes that mean "altered in transit" are exactly those a well-built request can
    /// only get from a changed frame; none of them closes the connection.
    #[test]
    fn altered_in_transit_codes() {
        let altered: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.means_altered_in_transit())
            .map(|c| c.name())
            .collect();
        assert_eq!(
            altered,
            [
                "malformed",
                "frame_too_long",
                "bad_mac",
                "unknown_nonce",
                "invalid_amount",
                "invalid_name"
            ]
        );
        for c in ErrorCode::ALL {
            assert!(!(c.means_altered_in_transit() && c.is_fatal()), "{c}");
        }
    }
}
