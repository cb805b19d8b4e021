//! The signalling vocabulary shared by the broker and the engine, with no I/O.
//!
//! - [`ConnectionCode`]: the short code a technician reads to the user over the phone: the
//!   broker's [`SessionCode`] and a secret only the peers know, bound by a PAKE ([`pake`]).
//! - [`ClientMessage`] / [`BrokerMessage`]: the typed, versioned JSON messages a peer and the
//!   broker exchange over a WebSocket, wrapped in an [`Envelope`] that carries the version.
//! - [`UnixMillis`]: wall-clock time passed in by whoever drives the logic, so expiry is tested
//!   in virtual time.
//! - [`lan`]: the target's rotating LAN password and the back-off on wrong ones.
//! - [`grant`]: unattended-access grants, their schedules in a time zone, and the check both
//!   the broker and the target run before an unattended connection.
//! - [`adhoc`]: ad-hoc support sessions: invitations, activation on a temporary host, a
//!   fixed lifetime from activation, and per-technician and per-company quotas.
#![deny(missing_docs)]

pub mod adhoc;
mod code;
mod crockford;
pub mod device;
pub mod grant;
mod hex;
pub mod lan;
mod message;
pub mod pake;
mod time;
pub mod words;

pub use code::{CodeError, ConnectionCode, SessionCode};
pub use message::{
    decode_broker, decode_client, encode, AdhocMail, BrokerMessage, ClientMessage, ConsentDecision,
    Envelope, JoinRefusal, PeerSignal, PolicyAcceptance, SessionPolicy, SignalError,
    MAX_REASON_CHARS, MAX_SDP_BYTES, MAX_SIGNAL_BYTES, VERSION,
};
pub use time::UnixMillis;

/// The WebSocket path the broker serves signalling on.
pub const SIGNAL_PATH: &str = "/v1/signal";
