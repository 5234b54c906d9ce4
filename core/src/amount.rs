//! Money as fixed-point integers: minor units with two decimals, never floats.

use core::fmt;

/// An amount of money in minor units (cents): `Amount(1050)` is `10.50`.
///
/// Amounts on the wire are decimal strings (`"10.50"`, `"3"`, `"0.07"`) parsed with
/// [`Amount::parse`]; they are formatted back with exactly two decimals.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u64);

/// Error returned by [`Amount::parse`] for a string that is not a valid transfer amount.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AmountError {
    /// Empty, signed, exponent, stray characters, leading zeros or a misplaced point.
    Malformed,
    /// More than two digits after the decimal point.
    TooPrecise,
    /// The amount is zero; transfers must move money.
    Zero,
    /// Above [`Amount::MAX`].
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountError::Malformed => {
                "amount must be digits with an optional point and 1-2 decimals"
            }
            AmountError::TooPrecise => "amount has more than 2 decimals",
            AmountError::Zero => "amount must be greater than zero",
            AmountError::TooLarge => "amount too large",
        })
    }
}

impl core::error::Error for AmountError {}

impl Amount {
    /// The largest amount: 10^15 minor units (ten trillion). Sums of many such amounts still
    /// fit in a `u64` and in a signed 64-bit SQL integer.
    pub const MAX: Amount = Amount(1_000_000_000_000_000);

    /// Parses a positive decimal amount such as `"12"`, `"12.5"` or `"12.50"`.
    ///
    /// Rejected: zero (`"0"`, `"0.00"`), any sign (`"-1"`, `"+1"`, `"-0"`), exponents,
    /// leading zeros (`"007"`), a bare point (`".5"`, `"5."`), more than two decimals and
    /// anything above [`Amount::MAX`].
    pub fn parse(s: &str) -> Result<Amount, AmountError> {
        let amount = Self::parse_non_negative(s)?;
        if amount.0 == 0 {
            return Err(AmountError::Zero);
        }
        Ok(amount)
    }

    /// Parses a balance: like [`parse`](Self::parse) but accepts zero. Balances share the
    /// amounts' ceiling, [`Amount::MAX`]: every ledger refuses a credit past it
    /// (`ledger::MAX_BALANCE`), so a larger balance on the wire is not one a server sent.
    pub fn parse_balance(s: &str) -> Result<Amount, AmountError> {
        Self::parse_non_negative(s)
    }

    /// Like [`parse`](Self::parse) but accepts zero.
    pub fn parse_non_negative(s: &str) -> Result<Amount, AmountError> {
        Self::parse_up_to(s, Self::MAX.0)
    }

    fn parse_up_to(s: &str, max: u64) -> Result<Amount, AmountError> {
        let bytes = s.as_bytes();
        let (int, frac) = match bytes.iter().position(|&b| b == b'.') {
            Some(p) => (&bytes[..p], Some(&bytes[p + 1..])),
            None => (bytes, None),
        };
        if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
            return Err(AmountError::Malformed);
        }
        if int.len() > 1 && int[0] == b'0' {
            return Err(AmountError::Malformed);
        }
        let mut minor: u64 = 0;
        for &d in int {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(d - b'0')))
                .ok_or(AmountError::TooLarge)?;
        }
        minor = minor.checked_mul(100).ok_or(AmountError::TooLarge)?;
        if let Some(frac) = frac {
            if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
                return Err(AmountError::Malformed);
            }
            if frac.len() > 2 {
                return Err(AmountError::TooPrecise);
            }
            let mut cents = u64::from(frac[0] - b'0') * 10;
            if frac.len() == 2 {
                cents += u64::from(frac[1] - b'0');
            }
            minor = minor.checked_add(cents).ok_or(AmountError::TooLarge)?;
        }
        if minor > max {
            return Err(AmountError::TooLarge);
        }
        Ok(Amount(minor))
    }

    /// Minor units.
    pub const fn minor(self) -> u64 {
        self.0
    }

    /// Adds, failing past [`Amount::MAX`]... or `u64::MAX` for balances.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// Subtracts, failing below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// The amount formatted with two decimals, e.g. `"10.50"`.
    pub fn to_text(self) -> heapless::String<24> {
        let mut buf = [0u8; 24];
        let mut s = heapless::String::new();
        // Only ASCII digits and a point were written, at most 21 of them.
        let _ = s.push_str(core::str::from_utf8(self.write_text(&mut buf)).unwrap_or(""));
        s
    }

    /// Writes [`to_text`](Self::to_text)'s characters at the end of `buf` and returns them
    /// (the response encoder writes them without building a string).
    pub(crate) fn write_text(self, buf: &mut [u8; 24]) -> &[u8] {
        // Written right to left without `core::fmt` (it is on the path of every receipt):
        // two decimals, the point, then the units, at least one digit. A u64 has at most 18
        // digits of units, so the 21 characters always fit.
        // Characters 0 and 1 from the right are the decimals, 2 the point, 3 on the units.
        let (mut rest, mut len) = (self.0, 0);
        for (i, slot) in buf.iter_mut().rev().enumerate() {
            len = i + 1;
            if i == 2 {
                *slot = b'.';
                continue;
            }
            let (quotient, digit) = div_rem_10(rest);
            *slot = b'0' + digit;
            rest = quotient;
            if rest == 0 && i >= 3 {
                break;
            }
        }
        buf.get(buf.len() - len..).unwrap_or_default()
    }
}

/// `(n / 10, n % 10)`, for every decimal writer of a `u64` (amounts, MAC inputs, the
/// response encoder). On a 64-bit target the compiler's division (a multiplication); on a
/// 32-bit one (the devices) [`div_rem_10_by_halves`], which spares the image the runtime's
/// 64-bit division routine (`__aeabi_uldivmod`, about 0.4 KB of flash).
#[inline(always)]
pub(crate) fn div_rem_10(n: u64) -> (u64, u8) {
    if cfg!(target_pointer_width = "64") {
        (n / 10, (n % 10) as u8)
    } else {
        div_rem_10_by_halves(n)
    }
}

/// `(n / 10, n % 10)` by long division in 32-bit steps: the high word, then the low word
/// in two 16-bit limbs, each step dividing a number below 10 · 2^16 (the remainder so far,
/// then the next limb).
fn div_rem_10_by_halves(n: u64) -> (u64, u8) {
    let (high, low) = ((n >> 32) as u32, n as u32);
    let (q_high, r) = (high / 10, high % 10);
    let mid = (r << 16) | (low >> 16);
    let (q_mid, r) = (mid / 10, mid % 10);
    let bottom = (r << 16) | (low & 0xffff);
    let (q_bottom, r) = (bottom / 10, bottom % 10);
    (
        (u64::from(q_high) << 32) | u64::from((q_mid << 16) | q_bottom),
        r as u8,
    )
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The 32-bit targets' division by ten is the plain one, for any `u64`.
        #[test]
        fn div_rem_10_by_halves_divides(n in any::<u64>()) {
            prop_assert_eq!(div_rem_10_by_halves(n), (n / 10, (n % 10) as u8));
            prop_assert_eq!(div_rem_10(n), (n / 10, (n % 10) as u8));
        }
    }

    #[test]
    fn div_rem_10_by_halves_at_the_edges() {
        for n in [
            0,
            9,
            10,
            65_535,
            65_536,
            655_359,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            (1 << 48) - 1,
            u64::MAX - 5,
            u64::MAX,
        ] {
            assert_eq!(div_rem_10_by_halves(n), (n / 10, (n % 10) as u8), "{n}");
        }
    }

    #[test]
    fn accepts_plain_decimals() {
        assert_eq!(Amount::parse("12"), Ok(Amount(1200)));
        assert_eq!(Amount::parse("12.5"), Ok(Amount(1250)));
        assert_eq!(Amount::parse("0.07"), Ok(Amount(7)));
        assert_eq!(Amount::parse("10000000000000"), Ok(Amount::MAX));
    }

    #[test]
    fn rejects_everything_else() {
        use AmountError::*;
        for (s, e) in [
            ("", Malformed),
            ("0", Zero),
            ("0.00", Zero),
            ("-0", Malformed),
            ("-1", Malformed),
            ("+1", Malformed),
            ("1e3", Malformed),
            ("1.", Malformed),
            (".5", Malformed),
            ("007", Malformed),
            ("1.234", TooPrecise),
            ("1 ", Malformed),
            ("1,5", Malformed),
            ("10000000000000.01", TooLarge),
            ("99999999999999999999999", TooLarge),
            ("NaN", Malformed),
        ] {
            assert_eq!(Amount::parse(s), Err(e), "{s:?}");
        }
    }

    #[test]
    fn balances_share_the_amount_ceiling() {
        assert_eq!(Amount::parse_balance("10000000000000.00"), Ok(Amount::MAX));
        assert_eq!(
            Amount::parse_balance("10000000000000.01"),
            Err(AmountError::TooLarge)
        );
        assert_eq!(
            Amount::parse_balance("184467440737095516.15"),
            Err(AmountError::TooLarge)
        );
        assert_eq!(Amount::parse_balance("0"), Ok(Amount(0)));
    }

    #[test]
    fn formats_with_two_decimals() {
        assert_eq!(Amount(1050).to_text().as_str(), "10.50");
        assert_eq!(Amount(7).to_text().as_str(), "0.07");
        assert_eq!(Amount(0).to_text().as_str(), "0.00");
        assert_eq!(Amount(100).to_text().as_str(), "1.00");
        assert_eq!(Amount(u64::MAX).to_text().as_str(), "184467440737095516.15");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(minor in 1u64..=Amount::MAX.0) {
            prop_assert_eq!(Amount::parse(&Amount(minor).to_text()), Ok(Amount(minor)));
            let text = Amount(minor).to_text();
            prop_assert_eq!(text.as_str(), std::format!("{}", Amount(minor)));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,30}") {
            let _ = Amount::parse(&s);
        }
    }
}
