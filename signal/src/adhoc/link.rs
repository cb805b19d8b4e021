//! The invitation link the technician hands the user: the broker's bearer token and a secret
//! the technician's side drew itself.
//!
//! `deskwire://adhoc/<token>#<secret>`: the token (32 hex digits) names the session to the
//! broker; the secret (32 hex digits) never goes to the broker when the technician passes the
//! link on themselves. Each connection's key exchange runs on it ([`crate::pake::Pake::start_adhoc`]),
//! so a broker that knows the token and the security code still cannot stand between the
//! technician and the temporary host. An invitation the broker e-mails is the exception: it
//! reads the link once to send it, and keeps nothing.

use std::fmt;

use super::{AdhocError, InvitationToken};
use crate::hex;

const SCHEME: &str = "deskwire://adhoc/";

/// An invitation link: the token and the technician's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AdhocLink {
    /// The broker's bearer token.
    pub token: InvitationToken,
    /// The technician's secret: the key exchange's password for every connection.
    pub secret: [u8; 16],
}

impl AdhocLink {
    /// Read a link as pasted (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, AdhocError> {
        let text = text.trim();
        let invalid = |why: &str| AdhocError::Invalid {
            field: "invitation link",
            // Only the shape is echoed: most of a link is secret.
            value: format!("of {} characters ({why})", text.chars().count()),
            expected: format!("{SCHEME}<32 hex digits>#<32 hex digits>"),
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("it does not start with deskwire://adhoc/"))?;
        let (token, secret) = rest
            .split_once('#')
            .ok_or_else(|| invalid("the #secret part is missing"))?;
        let token =
            InvitationToken::parse(token).map_err(|_| invalid("the token is not 32 hex digits"))?;
        let secret = hex::decode(secret)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| invalid("the secret is not 32 hex digits"))?;
        Ok(Self { token, secret })
    }
}

impl fmt::Display for AdhocLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}#{}", self.token, hex::encode(&self.secret))
    }
}

impl fmt::Debug for AdhocLink {
    /// Never the secret: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdhocLink(..)")
    }
}

impl std::str::FromStr for AdhocLink {
    type Err = AdhocError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> AdhocLink {
        AdhocLink {
            token: InvitationToken::from_random([0xab; 16]),
            secret: [0x01; 16],
        }
    }

    #[test]
    fn a_link_reads_back_as_written_even_with_whitespace_around_it() {
        let text = link().to_string();
        assert_eq!(
            text,
            "deskwire://adhoc/abababababababababababababababab#01010101010101010101010101010101"
        );
        assert_eq!(AdhocLink::parse(&format!("  {text}\n")).unwrap(), link());
    }

    #[test]
    fn malformed_links_say_what_is_wrong_without_echoing_the_secret() {
        let good = link().to_string();
        let cases = [
            ("https://example.com/x", "does not start"),
            (&good[..good.find('#').unwrap()], "secret part is missing"),
            (&good.replace("#0101", "#zz01"), "secret is not"),
            (&good.replacen("abab", "xyxy", 1), "token is not"),
        ];
        for (text, why) in cases {
            let e = AdhocLink::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(!e.contains("0101010101"), "{e}");
        }
        assert_eq!(format!("{:?}", link()), "AdhocLink(..)");
    }
}
