//! Pairing: the security order two ends go through before any peer connection exists.
//!
//! ```text
//!   agent (target)                         broker relay                      viewer (technician)
//!   ── Pake ───────────────────────────────────────────────────────────────> (after peer_joined)
//!   <─────────────────────────────────────────────────────────────────────── Pake
//!   <─────────────────────────────────────────────────────────────────────── Confirm (key MAC)
//!   ── CredentialsRequired (if this computer requires an administrator) ──>
//!   <─────────────────────────────────────────────────── Credentials (sealed under the key)
//!   ── AwaitingConsent (if the user is asked) ────────────────────────────>
//!   ── Offer + MAC (only after the user said yes) ─────────────────────────>
//!   <─────────────────────────────────────────────────────────────────────── Answer + MAC
//! ```
//!
//! Before all of it the agent joins the broker with the code ([`CodeJoin`]).
//!
//! Nothing reaches a peer connection before the key confirmation, the credentials and the
//! user's consent, in that order: a technician who does not know the whole code never gets
//! as far as a question to the user. [`AgentPairing`] and [`ViewerPairing`] hold that order as
//! state machines: broker messages and local results go in (`handle_*`), messages to send,
//! events and the next deadline come out (`poll_*`). The drivers in the `deskwire` crate do
//! the I/O: the signalling socket, the peer connection's offer and answer, the Argon2 check.

mod agent;
mod join;
mod viewer;

#[cfg(test)]
mod tests;

pub use agent::{AgentPairing, AgentPairingConfig, AgentPairingEvent, PairingSecret};
pub use join::{CodeJoin, CodeJoinEvent, AWAY_RETRY, MAX_AWAY_RETRIES};
pub use viewer::{
    PairingRoute, ResumeTicket, ViewerPairing, ViewerPairingConfig, ViewerPairingEvent,
    MAX_CONSENT_WAIT_MS,
};

use crate::consent::ConsentRefusal;

/// Why an attempt to pair ended without a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingEnd {
    /// The peer could not be verified (wrong code or password, or tampering on the way);
    /// the broker was told and unpairs the two. Nothing was connected; another attempt may
    /// follow.
    Unverified(String),
    /// The technician's administrator name or password was wrong (agent side): nothing was
    /// connected, and the technician was told.
    BadCredentials,
    /// The broker refused or failed; the sentence says why.
    Broker(String),
    /// A direct LAN target refused (wrong password, back-off) or could not be verified.
    Lan(String),
    /// The peer said goodbye, with its sentence.
    PeerBye(String),
    /// The broker reported that the peer left.
    PeerLeft,
    /// The target's user (or its acceptance mode) did not let the technician in.
    Consent(ConsentRefusal),
    /// The peer did not take its next step in time; the sentence says which.
    TimedOut(&'static str),
    /// The viewer did not prove the code or password (key exchange and confirmation)
    /// within the proof deadline (agent side). Nothing was connected; on the LAN a source
    /// that keeps doing it waits like one that guesses wrong.
    Unproven,
}

impl std::fmt::Display for PairingEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairingEnd::Unverified(why) => {
                write!(
                    f,
                    "the peer could not be verified ({why}); nothing was connected"
                )
            }
            PairingEnd::BadCredentials => write!(f, "{BAD_CREDENTIALS}"),
            PairingEnd::Broker(why) => write!(f, "broker: {why}"),
            PairingEnd::Lan(why) => write!(f, "LAN: {why}"),
            PairingEnd::PeerBye(why) => write!(f, "the peer ended the attempt: {why}"),
            PairingEnd::PeerLeft => write!(f, "the peer left before the session started"),
            PairingEnd::Consent(r) => write!(f, "{}", r.message()),
            PairingEnd::TimedOut(what) => write!(f, "{what}"),
            PairingEnd::Unproven => write!(
                f,
                "the viewer did not prove the code or password in time; nothing was connected"
            ),
        }
    }
}

/// What the agent says, to the technician and to its own user, when the administrator
/// credentials do not match.
pub const BAD_CREDENTIALS: &str = "the administrator name or password is wrong";
