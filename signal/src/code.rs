use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The broker's half of a connection code: six digits (`123 456`) naming a pending session.
///
/// The broker allocates it and sees it; the rest of the code (see [`ConnectionCode`]) is a
/// secret the broker never learns. Parsing accepts groups separated by spaces, dashes or
/// nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionCode(u32);

/// Why a typed code is not a code at all (as opposed to a code the broker does not know,
/// which is [`crate::JoinRefusal::WrongCode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Something other than digits, spaces and dashes.
    #[error("a connection code has only digits (got {0:?})")]
    NotDigits(char),
    /// Too few or too many digits.
    #[error("a code here has {expected} digits (got {got})")]
    WrongLength {
        /// Digits expected.
        expected: usize,
        /// Digits found.
        got: usize,
    },
}

impl SessionCode {
    /// Digits in a session code.
    pub const DIGITS: usize = 6;
    /// One more than the largest session code.
    pub const SPACE: u32 = 1_000_000;

    /// The session code with this numeric value, if it has at most six digits.
    pub fn from_number(n: u32) -> Option<Self> {
        (n < Self::SPACE).then_some(Self(n))
    }

    /// The numeric value.
    pub fn number(self) -> u32 {
        self.0
    }
}

impl FromStr for SessionCode {
    type Err = CodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = parse_digits(s, Self::DIGITS)?;
        Ok(Self(value as u32))
    }
}

impl fmt::Display for SessionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03} {:03}", self.0 / 1_000, self.0 % 1_000)
    }
}

impl fmt::Debug for SessionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionCode({self})")
    }
}

impl Serialize for SessionCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Digits of `s` (spaces and dashes ignored) as a number, if there are exactly `want`.
fn parse_digits(s: &str, want: usize) -> Result<u64, CodeError> {
    let mut value: u64 = 0;
    let mut digits = 0usize;
    for c in s.trim().chars() {
        match c {
            ' ' | '-' => {}
            '0'..='9' => {
                digits += 1;
                if digits <= want {
                    value = value * 10 + u64::from(c as u32 - '0' as u32);
                }
            }
            other => return Err(CodeError::NotDigits(other)),
        }
    }
    if digits != want {
        return Err(CodeError::WrongLength {
            expected: want,
            got: digits,
        });
    }
    Ok(value)
}

/// The connection code a technician reads to the user: ten digits in three groups
/// (`123 456 7890`), the broker's [`SessionCode`] followed by a four-digit secret.
///
/// The technician's side draws the secret and only the session code goes to the broker.
/// Both peers then run a PAKE on the whole code (see [`crate::pake`]): a broker that does
/// not know the secret cannot stand in the middle, and has one guess in 10 000 per attempt
/// (the code burns after three failed attempts).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionCode {
    session: SessionCode,
    secret: u16,
}

impl ConnectionCode {
    /// Digits in a connection code.
    pub const DIGITS: usize = SessionCode::DIGITS + 4;
    /// One more than the largest secret.
    pub const SECRET_SPACE: u16 = 10_000;

    /// The code for `session` with `secret`, if the secret has at most four digits.
    pub fn new(session: SessionCode, secret: u16) -> Option<Self> {
        (secret < Self::SECRET_SPACE).then_some(Self { session, secret })
    }

    /// The part the broker knows.
    pub fn session(self) -> SessionCode {
        self.session
    }

    /// The part only the two peers know.
    pub fn secret(self) -> u16 {
        self.secret
    }
}

impl FromStr for ConnectionCode {
    type Err = CodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n = parse_digits(s, Self::DIGITS)?;
        let secret = (n % u64::from(Self::SECRET_SPACE)) as u16;
        let session = SessionCode((n / u64::from(Self::SECRET_SPACE)) as u32);
        Ok(Self { session, secret })
    }
}

impl fmt::Display for ConnectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:04}", self.session, self.secret)
    }
}

impl fmt::Debug for ConnectionCode {
    // The secret stays out of logs: only the broker's half is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionCode({} ****)", self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_codes_display_in_two_groups_with_leading_zeros() {
        assert_eq!(
            SessionCode::from_number(1_002).unwrap().to_string(),
            "001 002"
        );
        assert!(SessionCode::from_number(999_999).is_some());
        assert!(SessionCode::from_number(1_000_000).is_none());
    }

    #[test]
    fn connection_codes_are_the_session_code_then_four_secret_digits() {
        let session = SessionCode::from_number(123_456).unwrap();
        let code = ConnectionCode::new(session, 42).unwrap();
        assert_eq!(code.to_string(), "123 456 0042");
        assert!(
            !format!("{code:?}").contains("0042"),
            "the secret stays out of Debug"
        );
        for s in [
            "123 456 0042",
            "123-456-0042",
            "1234560042",
            " 123 4560042 ",
        ] {
            assert_eq!(s.parse::<ConnectionCode>().unwrap(), code, "{s:?}");
        }
        assert_eq!(code.session(), session);
        assert_eq!(code.secret(), 42);
        assert!(ConnectionCode::new(session, 10_000).is_none());
    }

    #[test]
    fn rejects_letters_and_wrong_lengths_with_the_reason() {
        assert_eq!(
            "12a 456 7890".parse::<ConnectionCode>(),
            Err(CodeError::NotDigits('a'))
        );
        assert_eq!(
            "123 456".parse::<ConnectionCode>(),
            Err(CodeError::WrongLength {
                expected: 10,
                got: 6
            })
        );
        assert_eq!(
            "123 456 7890".parse::<SessionCode>(),
            Err(CodeError::WrongLength {
                expected: 6,
                got: 10
            })
        );
        assert!("".parse::<ConnectionCode>().is_err());
    }

    #[test]
    fn serde_round_trip_uses_the_grouped_text() {
        let code = SessionCode::from_number(42).unwrap();
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(json, "\"000 042\"");
        assert_eq!(serde_json::from_str::<SessionCode>(&json).unwrap(), code);
    }
}
