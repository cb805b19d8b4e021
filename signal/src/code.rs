use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A connection code: nine digits, shown and read in three groups (`123 456 789`).
///
/// Digits only, so it survives being read over the phone; groups of three, so a listener
/// can repeat it back. Parsing accepts the groups separated by spaces, dashes or nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionCode(u32);

/// Why a typed code is not a connection code at all (as opposed to a code the broker does
/// not know, which is [`crate::JoinRefusal::WrongCode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Something other than digits, spaces and dashes.
    #[error("a connection code has only digits (got {0:?})")]
    NotDigits(char),
    /// Too few or too many digits.
    #[error("a connection code has {expected} digits (got {got})", expected = ConnectionCode::DIGITS)]
    WrongLength {
        /// Digits found.
        got: usize,
    },
}

impl ConnectionCode {
    /// Digits in a code.
    pub const DIGITS: usize = 9;
    /// One more than the largest code.
    pub const SPACE: u32 = 1_000_000_000;

    /// The code with this numeric value, if it has at most nine digits.
    pub fn from_number(n: u32) -> Option<Self> {
        (n < Self::SPACE).then_some(Self(n))
    }

    /// The numeric value.
    pub fn number(self) -> u32 {
        self.0
    }
}

impl FromStr for ConnectionCode {
    type Err = CodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut value: u32 = 0;
        let mut digits = 0usize;
        for c in s.trim().chars() {
            match c {
                ' ' | '-' => {}
                '0'..='9' => {
                    digits += 1;
                    if digits <= Self::DIGITS {
                        value = value * 10 + (c as u32 - '0' as u32);
                    }
                }
                other => return Err(CodeError::NotDigits(other)),
            }
        }
        if digits != Self::DIGITS {
            return Err(CodeError::WrongLength { got: digits });
        }
        Ok(Self(value))
    }
}

impl fmt::Display for ConnectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        write!(
            f,
            "{:03} {:03} {:03}",
            n / 1_000_000,
            n / 1_000 % 1_000,
            n % 1_000
        )
    }
}

impl fmt::Debug for ConnectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionCode({self})")
    }
}

impl Serialize for ConnectionCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConnectionCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_in_three_groups_with_leading_zeros() {
        let code = ConnectionCode::from_number(1_002_003).unwrap();
        assert_eq!(code.to_string(), "001 002 003");
    }

    #[test]
    fn parses_grouped_dashed_and_bare_forms_alike() {
        let want = ConnectionCode::from_number(123_456_789).unwrap();
        for s in ["123 456 789", "123-456-789", "123456789", "  123 456789 "] {
            assert_eq!(s.parse::<ConnectionCode>().unwrap(), want, "{s:?}");
        }
    }

    #[test]
    fn rejects_letters_and_wrong_lengths_with_the_reason() {
        assert_eq!(
            "12a 456 789".parse::<ConnectionCode>(),
            Err(CodeError::NotDigits('a'))
        );
        assert_eq!(
            "123 456".parse::<ConnectionCode>(),
            Err(CodeError::WrongLength { got: 6 })
        );
        assert_eq!(
            "123 456 789 0".parse::<ConnectionCode>(),
            Err(CodeError::WrongLength { got: 10 })
        );
        assert!("".parse::<ConnectionCode>().is_err());
    }

    #[test]
    fn numbers_beyond_nine_digits_are_not_codes() {
        assert!(ConnectionCode::from_number(999_999_999).is_some());
        assert!(ConnectionCode::from_number(1_000_000_000).is_none());
    }

    #[test]
    fn serde_round_trip_uses_the_grouped_text() {
        let code = ConnectionCode::from_number(42).unwrap();
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(json, "\"000 000 042\"");
        assert_eq!(serde_json::from_str::<ConnectionCode>(&json).unwrap(), code);
    }
}
