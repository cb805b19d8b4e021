//! Binding the session to the connection code, so the broker cannot stand in the middle.
//!
//! Both peers know the whole [`ConnectionCode`]; the broker knows only its [`SessionCode`]
//! half. Each peer runs symmetric SPAKE2 (Ed25519 group) with the whole code as password and
//! the session code as identity, exchanging one message each through the broker. Matching
//! codes give both sides the same key; anything else gives unrelated keys, and a broker that
//! relays or replaces the messages learns nothing it can test offline: it gets one online
//! guess of the four secret digits per attempt.
//!
//! The key then authenticates the SDP, which carries the DTLS certificate fingerprint: the
//! offer and the answer each travel with an HMAC-SHA256 under a key of their own direction.
//! A peer applies a description only after its MAC checks out, so a swapped SDP (a broker
//! putting its own DTLS certificate in the middle) or a wrong code ends the attempt before
//! any frame or input can flow.
//!
//! [`SessionCode`]: crate::SessionCode

use hmac::{Hmac, Mac};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::code::ConnectionCode;
use crate::hex;

type HmacSha256 = Hmac<Sha256>;

/// What the controller's key confirmation authenticates.
const CONFIRM: &str = "deskwire key confirmation v1";

/// Length of a PAKE message in hex: 33 bytes.
pub const PAKE_MESSAGE_HEX: usize = 66;
/// Length of a description MAC in hex: 32 bytes.
pub const MAC_HEX: usize = 64;

/// Why the exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PakeError {
    /// The peer's message is not one of ours (wrong length, not hex, not a group element).
    #[error("the peer's key-exchange message is malformed")]
    Malformed,
    /// The MAC on a description does not match: a different code, or a tampered SDP.
    #[error("the session description failed verification: the code differs or the description was altered in transit")]
    Mismatch,
}

/// One side of the exchange, before the peer's message arrived.
pub struct Pake {
    state: Spake2<Ed25519Group>,
}

impl std::fmt::Debug for Pake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pake").finish_non_exhaustive()
    }
}

impl Pake {
    /// Start with the code the user typed or was shown; returns the message for the peer.
    pub fn start(code: &ConnectionCode) -> (Self, String) {
        let password = Password::new(format!("deskwire-code-v1:{code}"));
        let identity = Identity::new(format!("deskwire-session-v1:{}", code.session()).as_bytes());
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(&password, &identity);
        (Self { state }, hex::encode(&msg))
    }

    /// Start with a target's LAN password ([`crate::lan`]): the same exchange, under an
    /// identity of its own so a password and a code can never stand in for each other.
    pub fn start_lan(password: &crate::lan::LanPassword) -> (Self, String) {
        let mut secret = b"deskwire-lan-v1:".to_vec();
        secret.extend_from_slice(password.canonical());
        let password = Password::new(secret);
        let identity = Identity::new(b"deskwire-lan-v1");
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(&password, &identity);
        (Self { state }, hex::encode(&msg))
    }

    /// Start with an unattended-access grant's secret (which the target made when its user
    /// approved the grant, and gave only to the technician): an identity of its own, bound
    /// to the grant's number.
    pub fn start_grant(grant: u32, secret: &[u8; 16]) -> (Self, String) {
        let mut password = b"deskwire-grant-v1:".to_vec();
        password.extend_from_slice(secret);
        let password = Password::new(password);
        let identity = Identity::new(format!("deskwire-grant-v1:{grant}").as_bytes());
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(&password, &identity);
        (Self { state }, hex::encode(&msg))
    }

    /// Start one connection of an ad-hoc support session: the password is the secret in the
    /// invitation link ([`crate::adhoc::AdhocLink`]), bound to this connection's session code
    /// so each connection runs its own exchange.
    pub fn start_adhoc(session: crate::SessionCode, secret: &[u8; 16]) -> (Self, String) {
        let mut password = b"deskwire-adhoc-v1:".to_vec();
        password.extend_from_slice(secret);
        let password = Password::new(password);
        let identity = Identity::new(format!("deskwire-adhoc-v1:{session}").as_bytes());
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(&password, &identity);
        (Self { state }, hex::encode(&msg))
    }

    /// Finish with the peer's message.
    pub fn finish(self, peer_msg: &str) -> Result<SessionKeys, PakeError> {
        if peer_msg.len() != PAKE_MESSAGE_HEX {
            return Err(PakeError::Malformed);
        }
        let msg = hex::decode(peer_msg).ok_or(PakeError::Malformed)?;
        let key = self.state.finish(&msg).map_err(|_| PakeError::Malformed)?;
        Ok(SessionKeys {
            confirm: derive(&key, b"deskwire/v1/confirm"),
            offer: derive(&key, b"deskwire/v1/offer"),
            answer: derive(&key, b"deskwire/v1/answer"),
            credentials: derive(&key, b"deskwire/v1/credentials"),
        })
    }
}

/// The keys both peers derived; equal on both sides only if their codes were.
#[derive(Clone)]
pub struct SessionKeys {
    confirm: [u8; 32],
    offer: [u8; 32],
    answer: [u8; 32],
    credentials: [u8; 32],
}

/// Longest user name or password that can be sealed, in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 256;

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// The controller's key confirmation.
    pub fn mac_confirm(&self) -> String {
        hex::encode(&mac(&self.confirm, CONFIRM).finalize().into_bytes())
    }

    /// Check the controller's key confirmation (in constant time).
    pub fn verify_confirm(&self, tag: &str) -> Result<(), PakeError> {
        verify(&self.confirm, CONFIRM, tag)
    }

    /// MAC for the target's offer.
    pub fn mac_offer(&self, sdp: &str) -> String {
        hex::encode(&mac(&self.offer, sdp).finalize().into_bytes())
    }

    /// MAC for the controller's answer.
    pub fn mac_answer(&self, sdp: &str) -> String {
        hex::encode(&mac(&self.answer, sdp).finalize().into_bytes())
    }

    /// Check an offer's MAC (in constant time).
    pub fn verify_offer(&self, sdp: &str, tag: &str) -> Result<(), PakeError> {
        verify(&self.offer, sdp, tag)
    }

    /// Seal the target's admin credentials for it (ChaCha20-Poly1305 under a key of their
    /// own; `nonce` from the caller's CSPRNG): whoever relays them (a broker) reads nothing
    /// and can change nothing unnoticed. Hex of nonce and ciphertext. Over-long fields are
    /// cut to [`MAX_CREDENTIAL_BYTES`] (and then fail verification at the target).
    pub fn seal_credentials(&self, user: &str, password: &str, nonce: [u8; 12]) -> String {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let cut = |s: &str| -> Vec<u8> {
            s.as_bytes()
                .iter()
                .take(MAX_CREDENTIAL_BYTES)
                .copied()
                .collect()
        };
        let (user, password) = (cut(user), cut(password));
        let mut plain = Vec::with_capacity(4 + user.len() + password.len());
        plain.extend_from_slice(&(user.len() as u16).to_le_bytes());
        plain.extend_from_slice(&user);
        plain.extend_from_slice(&(password.len() as u16).to_le_bytes());
        plain.extend_from_slice(&password);
        let cipher = chacha20poly1305::ChaCha20Poly1305::new((&self.credentials).into());
        let sealed = cipher
            .encrypt((&nonce).into(), plain.as_slice())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        hex::encode(&out)
    }

    /// Open what [`SessionKeys::seal_credentials`] sealed: `(user, password)`.
    pub fn open_credentials(&self, sealed: &str) -> Result<(String, String), PakeError> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        if sealed.len() > 2 * (12 + 16 + 4 + 2 * MAX_CREDENTIAL_BYTES) {
            return Err(PakeError::Malformed);
        }
        let bytes = hex::decode(sealed).ok_or(PakeError::Malformed)?;
        if bytes.len() < 12 + 16 {
            return Err(PakeError::Malformed);
        }
        let (nonce, body) = bytes.split_at(12);
        let cipher = chacha20poly1305::ChaCha20Poly1305::new((&self.credentials).into());
        let plain = cipher
            .decrypt(nonce.into(), body)
            .map_err(|_| PakeError::Mismatch)?;
        let mut rest = plain.as_slice();
        let mut field = || -> Result<String, PakeError> {
            let (len, tail) = rest.split_first_chunk::<2>().ok_or(PakeError::Malformed)?;
            let len = usize::from(u16::from_le_bytes(*len));
            if tail.len() < len {
                return Err(PakeError::Malformed);
            }
            let (text, tail) = tail.split_at(len);
            rest = tail;
            String::from_utf8(text.to_vec()).map_err(|_| PakeError::Malformed)
        };
        let user = field()?;
        let password = field()?;
        Ok((user, password))
    }

    /// Check an answer's MAC (in constant time).
    pub fn verify_answer(&self, sdp: &str, tag: &str) -> Result<(), PakeError> {
        verify(&self.answer, sdp, tag)
    }
}

fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(label);
    m.finalize().into_bytes().into()
}

fn mac(key: &[u8; 32], sdp: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(sdp.as_bytes());
    m
}

fn verify(key: &[u8; 32], sdp: &str, tag: &str) -> Result<(), PakeError> {
    let tag = (tag.len() == MAC_HEX)
        .then(|| hex::decode(tag))
        .flatten()
        .ok_or(PakeError::Mismatch)?;
    mac(key, sdp)
        .verify_slice(&tag)
        .map_err(|_| PakeError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::SessionCode;

    fn code(secret: u16) -> ConnectionCode {
        ConnectionCode::new(SessionCode::from_number(123_456).unwrap(), secret).unwrap()
    }

    fn keys(a: ConnectionCode, b: ConnectionCode) -> (SessionKeys, SessionKeys) {
        let (pa, ma) = Pake::start(&a);
        let (pb, mb) = Pake::start(&b);
        (pa.finish(&mb).unwrap(), pb.finish(&ma).unwrap())
    }

    #[test]
    fn the_same_code_on_both_sides_verifies_both_descriptions() {
        let (target, controller) = keys(code(42), code(42));
        target.verify_confirm(&controller.mac_confirm()).unwrap();
        let offer = "v=0 offer with a=fingerprint:sha-256 AA:BB";
        controller
            .verify_offer(offer, &target.mac_offer(offer))
            .unwrap();
        let answer = "v=0 answer";
        target
            .verify_answer(answer, &controller.mac_answer(answer))
            .unwrap();
    }

    #[test]
    fn an_adhoc_exchange_needs_the_same_link_secret_and_the_same_connection() {
        let session = SessionCode::from_number(654_321).unwrap();
        let other = SessionCode::from_number(654_322).unwrap();
        let run = |a: (SessionCode, [u8; 16]), b: (SessionCode, [u8; 16])| {
            let (pa, ma) = Pake::start_adhoc(a.0, &a.1);
            let (pb, mb) = Pake::start_adhoc(b.0, &b.1);
            let (ka, kb) = (pa.finish(&mb).unwrap(), pb.finish(&ma).unwrap());
            ka.verify_confirm(&kb.mac_confirm())
        };
        assert_eq!(run((session, [7; 16]), (session, [7; 16])), Ok(()));
        assert_eq!(
            run((session, [7; 16]), (session, [8; 16])),
            Err(PakeError::Mismatch)
        );
        assert_eq!(
            run((session, [7; 16]), (other, [7; 16])),
            Err(PakeError::Mismatch)
        );
    }

    #[test]
    fn a_different_secret_fails_verification() {
        let (target, controller) = keys(code(42), code(43));
        assert_eq!(
            target.verify_confirm(&controller.mac_confirm()),
            Err(PakeError::Mismatch)
        );
        let offer = "v=0 offer";
        assert_eq!(
            controller.verify_offer(offer, &target.mac_offer(offer)),
            Err(PakeError::Mismatch)
        );
    }

    #[test]
    fn an_altered_description_or_a_mac_of_the_other_direction_fails() {
        let (target, controller) = keys(code(7), code(7));
        let offer = "a=fingerprint:sha-256 AA:BB";
        let tag = target.mac_offer(offer);
        let swapped = "a=fingerprint:sha-256 CC:DD";
        assert_eq!(
            controller.verify_offer(swapped, &tag),
            Err(PakeError::Mismatch)
        );
        // An offer's MAC does not pass as an answer's (no reflection).
        assert_eq!(
            controller.verify_answer(offer, &tag),
            Err(PakeError::Mismatch)
        );
        assert_eq!(
            controller.verify_offer(offer, "zz"),
            Err(PakeError::Mismatch)
        );
    }

    #[test]
    fn credentials_open_only_under_the_same_code_and_unaltered() {
        let (target, controller) = keys(code(5), code(5));
        let sealed = controller.seal_credentials("admin", "s3cret pass", [1; 12]);
        assert!(!sealed.contains(&hex::encode(b"s3cret")));
        assert_eq!(
            target.open_credentials(&sealed).unwrap(),
            ("admin".to_owned(), "s3cret pass".to_owned())
        );
        let (other, _) = keys(code(6), code(6));
        assert_eq!(other.open_credentials(&sealed), Err(PakeError::Mismatch));
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(target.open_credentials(&flipped), Err(PakeError::Mismatch));
        for bad in ["", "zz", &"00".repeat(20), &"ab".repeat(5000)] {
            assert!(target.open_credentials(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grant_secrets_agree_only_for_the_same_grant_and_secret() {
        let run = |a: (u32, [u8; 16]), b: (u32, [u8; 16])| {
            let (pa, ma) = Pake::start_grant(a.0, &a.1);
            let (pb, mb) = Pake::start_grant(b.0, &b.1);
            let (ka, kb) = (pa.finish(&mb).unwrap(), pb.finish(&ma).unwrap());
            ka.verify_confirm(&kb.mac_confirm())
        };
        assert_eq!(run((1, [7; 16]), (1, [7; 16])), Ok(()));
        assert_eq!(run((1, [7; 16]), (1, [8; 16])), Err(PakeError::Mismatch));
        assert_eq!(run((1, [7; 16]), (2, [7; 16])), Err(PakeError::Mismatch));
    }

    #[test]
    fn lan_passwords_agree_only_when_equal() {
        use crate::lan::LanPassword;
        let run = |a: u64, b: u64| {
            let (pa, ma) = Pake::start_lan(&LanPassword::from_random(a));
            let (pb, mb) = Pake::start_lan(&LanPassword::from_random(b));
            let (ka, kb) = (pa.finish(&mb).unwrap(), pb.finish(&ma).unwrap());
            ka.verify_confirm(&kb.mac_confirm())
        };
        assert_eq!(run(99, 99), Ok(()));
        assert_eq!(run(99, 98), Err(PakeError::Mismatch));
    }

    #[test]
    fn malformed_peer_messages_are_refused_without_panicking() {
        for bad in [
            "",
            "00",
            &"zz".repeat(33),
            &"00".repeat(33),
            &"ab".repeat(40),
        ] {
            let (p, _) = Pake::start(&code(1));
            assert_eq!(p.finish(bad).unwrap_err(), PakeError::Malformed, "{bad:?}");
        }
    }
}
