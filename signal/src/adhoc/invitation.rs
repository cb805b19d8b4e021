//! What a technician hands the user: a bearer token for the link and a short security code
//! to type when the temporary host activates the session.
//!
//! The book keeps neither in clear, only digests ([`Digest`]): a copy of the broker's
//! records is not enough to activate anyone's session. The code's digest is salted with the
//! token, so its 40 bits cannot be searched offline without the 128 bits that are not
//! stored either.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{AdhocError, AdhocId};
use crate::crockford::{self, CodeTextError};
use crate::hex;
use crate::time::UnixMillis;

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 16;

/// Characters in a security code.
const CODE_CHARS: usize = 8;

/// Domain separation, so a digest of a token can never be mistaken for one of a code.
const TOKEN_DOMAIN: &[u8] = b"deskwire adhoc invitation token v1\0";
const CODE_DOMAIN: &[u8] = b"deskwire adhoc security code v1\0";

/// The bearer token in an invitation link: 128 random bits, written as 32 lowercase hex
/// digits (URL-safe as it stands).
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationToken([u8; TOKEN_BYTES]);

impl InvitationToken {
    /// Bits of entropy in a token.
    pub const ENTROPY_BITS: u32 = 128;

    /// A token from random bytes the caller drew from a cryptographic source.
    pub fn from_random(bytes: [u8; TOKEN_BYTES]) -> Self {
        Self(bytes)
    }

    /// Read a token as it came in a link or was pasted: 32 hex digits, any case, with
    /// surrounding whitespace ignored (pasting often adds some).
    pub fn parse(text: &str) -> Result<Self, AdhocError> {
        let trimmed = text.trim();
        // Only the length is echoed: a near-miss token is still most of a secret.
        let invalid = || AdhocError::Invalid {
            field: "invitation.token",
            value: format!("{} characters", trimmed.chars().count()),
            expected: format!("{} hex digits", TOKEN_BYTES * 2),
        };
        let bytes = hex::decode(trimmed).ok_or_else(invalid)?;
        let bytes: [u8; TOKEN_BYTES] = bytes.try_into().map_err(|_| invalid())?;
        Ok(Self(bytes))
    }

    /// What the book keeps instead of the token.
    pub(super) fn digest(&self) -> Digest {
        let mut h = Sha256::new();
        h.update(TOKEN_DOMAIN);
        h.update(self.0);
        Digest(h.finalize().into())
    }
}

impl fmt::Display for InvitationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for InvitationToken {
    /// Never the token: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InvitationToken(..)")
    }
}

impl std::str::FromStr for InvitationToken {
    type Err = AdhocError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for InvitationToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InvitationToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The "predefined password" the user types into the temporary host: 40 random bits as
/// eight Crockford base-32 characters in two groups (`7KQM-2X9P`).
///
/// Forty bits suffice because the code is a second factor next to the 128-bit token, and a
/// few wrong codes burn the invitation ([`super::AdhocLimits::max_code_attempts`]): a guesser
/// holding the link has a handful of tries at 2^40.
#[derive(Clone, PartialEq, Eq)]
pub struct SecurityCode([u8; CODE_CHARS]);

impl SecurityCode {
    /// Bits of entropy in a generated code.
    pub const ENTROPY_BITS: u32 = 40;

    /// A code from the low 40 bits of `random`, which the caller drew from a cryptographic
    /// source.
    pub fn from_random(random: u64) -> Self {
        Self(crockford::from_random(random))
    }

    /// Read a code as a person typed it: any case, with or without dashes and spaces; O reads
    /// as 0 and I or L as 1, the digits they are mistaken for.
    pub fn parse(text: &str) -> Result<Self, AdhocError> {
        crockford::parse(text).map(Self).map_err(|e| match e {
            CodeTextError::Character(ch) => AdhocError::Invalid {
                field: "security_code",
                value: format!("{ch:?}"),
                expected: "letters and digits only, no U".into(),
            },
            CodeTextError::Length(n) => AdhocError::Invalid {
                field: "security_code",
                value: format!("{n} characters"),
                expected: format!("{CODE_CHARS} characters (dashes and spaces do not count)"),
            },
        })
    }

    /// What the book keeps instead of the code, salted with the token it goes with.
    pub(super) fn digest(&self, token: &InvitationToken) -> Digest {
        let mut h = Sha256::new();
        h.update(CODE_DOMAIN);
        h.update(token.0);
        h.update(self.0);
        Digest(h.finalize().into())
    }
}

impl fmt::Display for SecurityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crockford::write_grouped(f, &self.0)
    }
}

impl fmt::Debug for SecurityCode {
    /// Never the code: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecurityCode(..)")
    }
}

impl std::str::FromStr for SecurityCode {
    type Err = AdhocError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SecurityCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecurityCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The random bits one invitation needs, drawn by the caller from a cryptographic source.
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationEntropy {
    /// The token's 128 bits.
    pub token: [u8; TOKEN_BYTES],
    /// The security code's bits (the low 40 are used).
    pub code: u64,
}

impl fmt::Debug for InvitationEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InvitationEntropy(..)")
    }
}

/// An invitation as issued: shown once to the technician, who passes the link (with the
/// token) and the code to the user. The book keeps only digests, so it cannot show it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    /// The session it activates.
    pub session: AdhocId,
    /// The bearer token for the link.
    pub token: InvitationToken,
    /// The code the user types.
    pub code: SecurityCode,
    /// The first instant it no longer activates anything (if not activated by then).
    pub expires_at: UnixMillis,
}

/// A SHA-256 digest, kept and written as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Digest(pub(super) [u8; 32]);

impl Digest {
    /// Compares without an early exit. The inputs are digests, which an attacker cannot
    /// steer bit by bit, so this is caution rather than a proven need.
    pub(super) fn matches(&self, other: &Digest) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", hex::encode(&self.0))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(&s)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Digest)
            .ok_or_else(|| {
                serde::de::Error::custom(AdhocError::Invalid {
                    field: "session.invitation digest",
                    value: excerpt(&s),
                    expected: "64 hex digits (a SHA-256 digest)".into(),
                })
            })
    }
}

/// At most 40 characters of untrusted text, for an error message.
pub(super) fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}
