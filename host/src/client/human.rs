//! Human words for everything the server or the session can say: one sentence per error code
//! and per integrity failure, plus the loud warning printed when an answer was forged.

use txsock_core::session::IntegrityError;
use txsock_core::ErrorCode;

/// What a refusal means for the person at the keyboard, and what to do about it.
pub fn refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::AuthFailed => {
            "wrong username or password, or the account is locked: for a while after \
             repeated failed logins, or by an administrator until unlocked. The server gives \
             every one of these the same answer, so that a password guesser learns nothing. If \
             the password is right, wait a few minutes and try once more; if it is still \
             refused, ask the administrator"
        }
        ErrorCode::InsufficientFunds => {
            "insufficient funds: your balance does not cover this amount; nothing was moved"
        }
        ErrorCode::UnknownRecipient => {
            "unknown recipient: there is no account with that name; nothing was moved"
        }
        ErrorCode::SelfTransfer => "you cannot send money to yourself",
        ErrorCode::DuplicateId => {
            "this transfer id was already used for a different transfer; use a new id"
        }
        ErrorCode::BadMac => {
            "the server could not verify the transfer's MAC: it was altered on the way; \
             the server moved nothing"
        }
        ErrorCode::UnknownNonce => {
            "the server refused a replayed or unknown one-time nonce; it moved nothing"
        }
        ErrorCode::UserExists => "that username is already taken; choose another",
        ErrorCode::RegistrationClosed => {
            "this server does not allow self-registration; ask its administrator for an account"
        }
        ErrorCode::WeakVerifier => {
            "the server wants more PBKDF2 iterations than this client used (raise --min-iterations)"
        }
        ErrorCode::InvalidAmount => {
            "the server refused the amount (positive, at most two decimals, e.g. 12.50)"
        }
        ErrorCode::InvalidName => "the server refused a username or transfer id as malformed",
        ErrorCode::Malformed | ErrorCode::FrameTooLong => {
            "the server could not read the request (it may have been corrupted on the way)"
        }
        ErrorCode::NotLoggedIn => "the server says this session is not logged in; log in again",
        ErrorCode::AlreadyLoggedIn => "already logged in on this connection",
        ErrorCode::UnexpectedMessage => "the server did not expect that message at this step",
        ErrorCode::LedgerFull => "the server's ledger is full; nothing was moved",
        ErrorCode::BalanceOverflow => "the recipient's balance would overflow; nothing was moved",
        ErrorCode::ServerBusy => {
            "limit reached: the server is at its connection limit; try again shortly"
        }
        ErrorCode::Timeout => "limit reached: the server closed an idle or too slow connection",
        ErrorCode::TooManyBadFrames => {
            "limit reached: the server closed the connection after too many invalid requests"
        }
        ErrorCode::OutputOverflow => {
            "limit reached: the server closed the connection because answers were not read"
        }
        ErrorCode::Internal => "the server could not complete the request (storage failure)",
        // The enum is non-exhaustive: a newer server may send a code this build does not know.
        _ => code.message(),
    }
}

/// A stable snake_case name for an integrity failure, for `--json`.
pub fn integrity_name(e: IntegrityError) -> &'static str {
    match e {
        IntegrityError::IterationsTooLow { .. } => "iterations_too_low",
        IntegrityError::IterationsTooHigh { .. } => "iterations_too_high",
        IntegrityError::NonceMismatch => "nonce_mismatch",
        IntegrityError::BadServerSignature => "bad_server_signature",
        IntegrityError::ForgedReceipt => "forged_receipt",
        IntegrityError::ForgedResponse => "forged_response",
        IntegrityError::BadSequence => "bad_sequence",
        IntegrityError::Reordered => "reordered",
        IntegrityError::UnexpectedResponse => "unexpected_response",
        _ => "integrity_failure",
    }
}

/// What an integrity failure means, in words.
pub fn integrity(e: IntegrityError, min_iterations: u32) -> String {
    match e {
        IntegrityError::ForgedReceipt => {
            "the server's confirmation was forged or altered: its receipt MAC does not verify"
                .into()
        }
        IntegrityError::ForgedResponse => {
            "the server's answer was forged or altered: its MAC does not verify".into()
        }
        IntegrityError::BadSequence => {
            "an authenticated answer was dropped, replayed or reordered on the way".into()
        }
        IntegrityError::Reordered => "the server's genuine receipts came back in another order \
             than this client sent the transfers: someone on the way reordered them (their \
             outcomes are re-checked with the same ids)"
            .into(),
        IntegrityError::BadServerSignature => {
            "the server could not prove it holds this account's verifier: it is not the server \
             the account was registered with, or someone is impersonating it"
                .into()
        }
        IntegrityError::IterationsTooLow { offered } => format!(
            "the login challenge asked for only {offered} PBKDF2 iterations (this client \
             requires at least {min_iterations}): someone may be trying to make the password \
             cheap to crack; the password was not used"
        ),
        IntegrityError::IterationsTooHigh { offered } => format!(
            "the login challenge asked for {offered} PBKDF2 iterations, more than this client \
             will run"
        ),
        IntegrityError::NonceMismatch => {
            "the login challenge does not belong to this login (replayed or forged)".into()
        }
        IntegrityError::UnexpectedResponse => {
            "the server sent an answer that matches no request (injected, reordered or \
             corrupted on the way)"
                .into()
        }
        other => other.to_string(),
    }
}

/// The loud, multi-line warning for a detected attack.
pub fn warning(what: &str, advice: &str) -> String {
    let bar = "!".repeat(78);
    format!("{bar}\n!!! SECURITY WARNING: {what}.\n!!! {advice}\n{bar}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_its_own_sentence() {
        for code in ErrorCode::ALL {
            let text = refusal(code);
            assert_ne!(text, code.message(), "{code:?} has no human sentence");
            assert!(text.len() > 15, "{code:?}: {text}");
        }
        assert!(refusal(ErrorCode::AuthFailed).contains("locked"));
        assert!(refusal(ErrorCode::ServerBusy).starts_with("limit reached"));
    }

    #[test]
    fn the_forged_receipt_warning_says_so() {
        let text = integrity(IntegrityError::ForgedReceipt, 600_000);
        assert!(text.contains("the server's confirmation was forged or altered"));
        let w = warning(&text, "Do not trust it.");
        assert!(
            w.contains("SECURITY WARNING") && w.lines().count() == 4,
            "{w}"
        );
        assert_eq!(integrity_name(IntegrityError::BadSequence), "bad_sequence");
    }
}
