//! Usernames and transfer ids: validated, bounded, and safe to embed in MAC inputs.
//!
//! Neither may contain a NUL byte, a comma or `=`, which keeps the NUL-separated MAC inputs
//! and the SCRAM attribute strings unambiguous without escaping.

use core::fmt;
use heapless::String;

/// The longest username, in bytes.
pub const MAX_USERNAME: usize = 32;
/// The longest transfer id, in bytes.
pub const MAX_TRANSFER_ID: usize = 32;
/// The shortest password a client accepts at registration, in characters.
pub const MIN_PASSWORD: usize = 8;
/// The longest password a client accepts, in bytes.
pub const MAX_PASSWORD: usize = 128;

/// Error returned when a username, transfer id or password is not acceptable.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Empty.
    Empty,
    /// Longer than allowed.
    TooLong,
    /// Shorter than allowed (passwords).
    TooShort,
    /// A character outside the allowed set.
    BadCharacter,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "must not be empty",
            NameError::TooLong => "too long",
            NameError::TooShort => "too short",
            NameError::BadCharacter => "contains a character that is not allowed",
        })
    }
}

impl core::error::Error for NameError {}

/// A username: 1 to 32 characters of `a-z`, `0-9`, `_`, `.`, `-`, starting with a letter
/// or digit. Input is case-insensitive: ASCII capitals are lowered by [`Username::parse`].
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String<MAX_USERNAME>);

impl Username {
    /// Validates and normalises `raw` to lowercase.
    pub fn parse(raw: &str) -> Result<Username, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_USERNAME {
            return Err(NameError::TooLong);
        }
        let mut out = String::new();
        for (i, b) in raw.bytes().enumerate() {
            let c = b.to_ascii_lowercase();
            let ok = c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || (i > 0 && matches!(c, b'_' | b'.' | b'-'));
            if !ok {
                return Err(NameError::BadCharacter);
            }
            // Length was checked above, so the push cannot fail.
            let _ = out.push(char::from(c));
        }
        Ok(Username(out))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Username {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A client-chosen transfer id (idempotency key): 1 to 32 characters of `A-Z`, `a-z`,
/// `0-9`, `_`, `.`, `:`, `-`. Case-sensitive.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(String<MAX_TRANSFER_ID>);

impl TransferId {
    /// Validates `raw`.
    pub fn parse(raw: &str) -> Result<TransferId, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_TRANSFER_ID {
            return Err(NameError::TooLong);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            return Err(NameError::BadCharacter);
        }
        let mut s = String::new();
        // Length was checked above.
        let _ = s.push_str(raw);
        Ok(TransferId(s))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for TransferId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Checks a password before a client derives anything from it: at least [`MIN_PASSWORD`]
/// characters, at most [`MAX_PASSWORD`] bytes, no control characters.
pub fn check_password(password: &str) -> Result<(), NameError> {
    if password.is_empty() {
        return Err(NameError::Empty);
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(NameError::TooShort);
    }
    if password.len() > MAX_PASSWORD {
        return Err(NameError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(Username::parse("Alice_1").unwrap().as_str(), "alice_1");
        assert_eq!(Username::parse(""), Err(NameError::Empty));
        assert_eq!(Username::parse("_x"), Err(NameError::BadCharacter));
        assert_eq!(Username::parse("a,b"), Err(NameError::BadCharacter));
        assert_eq!(Username::parse("a=b"), Err(NameError::BadCharacter));
        assert_eq!(Username::parse("añ"), Err(NameError::BadCharacter));
        assert_eq!(Username::parse(&"a".repeat(33)), Err(NameError::TooLong));
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    /// Every character a username may hold is accepted (`_`, `.`, `-` after the first), any
    /// other is refused, and the name reads back, prints and serialises lowercased.
    #[test]
    fn usernames_take_exactly_their_alphabet() {
        let all = "0abcdefghijklmnopqrstuvwxyz0123456789_.-";
        let name = Username::parse(&all.to_ascii_uppercase()[..32]).unwrap();
        assert_eq!(name.as_str(), &all[..32]);
        let tail = Username::parse(&all[26..]).unwrap();
        assert_eq!(tail.as_str(), "z0123456789_.-");
        for first in ["_", ".", "-"] {
            assert_eq!(
                Username::parse(&std::format!("{first}a")),
                Err(NameError::BadCharacter)
            );
        }
        for bad in [" ", ":", "/", "@", "\0", "A\u{e9}", "+"] {
            assert_eq!(
                Username::parse(&std::format!("a{bad}")),
                Err(NameError::BadCharacter),
                "{bad:?}"
            );
        }
        let bob = Username::parse("BoB").unwrap();
        assert_eq!(std::format!("{bob}"), "bob");
        assert_eq!(serde_json::to_string(&bob).unwrap(), "\"bob\"");
    }

    /// A transfer id is 1 to 32 characters of its alphabet, case kept, and reads back,
    /// prints and serialises as given.
    #[test]
    fn transfer_id_bounds_are_exact() {
        assert_eq!(TransferId::parse(""), Err(NameError::Empty));
        let longest = "aZ0_.:-".repeat(5);
        assert_eq!(
            TransferId::parse(&longest[..MAX_TRANSFER_ID])
                .unwrap()
                .as_str(),
            &longest[..MAX_TRANSFER_ID]
        );
        assert_eq!(
            TransferId::parse(&longest[..MAX_TRANSFER_ID + 1]),
            Err(NameError::TooLong)
        );
        for ok in ["A", "z", "9", "_", ".", ":", "-"] {
            assert_eq!(TransferId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["/", "a,b", "=", "\u{e9}", "a\n"] {
            assert_eq!(
                TransferId::parse(bad),
                Err(NameError::BadCharacter),
                "{bad:?}"
            );
        }
        let id = TransferId::parse("Tx-1").unwrap();
        assert_eq!(std::format!("{id}"), "Tx-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"Tx-1\"");
    }

    #[test]
    fn transfer_ids_are_checked() {
        assert!(TransferId::parse("Tx-2026:01.a_b").is_ok());
        assert_eq!(TransferId::parse("a b"), Err(NameError::BadCharacter));
        assert_eq!(TransferId::parse("a\0"), Err(NameError::BadCharacter));
    }

    #[test]
    fn passwords_have_a_minimum() {
        assert_eq!(check_password("short"), Err(NameError::TooShort));
        assert!(check_password("correct horse").is_ok());
        assert!(check_password("contraseña").is_ok());
    }

    /// The password bounds, exactly: at least [`MIN_PASSWORD`] characters (not bytes), at most
    /// [`MAX_PASSWORD`] bytes (not characters), never empty, no control character anywhere.
    #[test]
    fn password_bounds_are_exact() {
        assert_eq!(check_password(""), Err(NameError::Empty));
        assert_eq!(
            check_password("ñññññññ"),
            Err(NameError::TooShort),
            "7 chars, 14 bytes"
        );
        assert_eq!(check_password("ñññññññ1"), Ok(()), "8 chars");
        assert_eq!(
            check_password(&"a".repeat(MIN_PASSWORD - 1)),
            Err(NameError::TooShort)
        );
        assert_eq!(check_password(&"a".repeat(MAX_PASSWORD)), Ok(()));
        assert_eq!(
            check_password(&"a".repeat(MAX_PASSWORD + 1)),
            Err(NameError::TooLong)
        );
        let long_chars = "ñ".repeat(MAX_PASSWORD / 2 + 1);
        assert_eq!(
            check_password(&long_chars),
            Err(NameError::TooLong),
            "65 chars, 130 bytes"
        );
        assert_eq!(
            check_password("password\u{7f}"),
            Err(NameError::BadCharacter)
        );
        assert_eq!(check_password("pass\tword"), Err(NameError::BadCharacter));
    }
}
