//! The sans-IO session core of deskwire, in the manner of quinn-proto: everything a session
//! decides, with no socket, thread, runtime or clock of its own.
//!
//! - [`wire`]: the peer-to-peer message format (video chunks, control, input).
//! - [`video`]: cutting encoded bands into chunks and putting them back together, with the
//!   keyframe-request rules.
//! - [`pairing`]: the security order before any peer connection: key exchange, key
//!   confirmation, administrator credentials, consent, MACed offer and answer.
//! - [`consent`]: the target user's consent, decided at a given time.
//! - [`input`]: the events a viewer sends and the gate that decides whether each is injected.
//! - [`clock`]: the target's clock against the viewer's, from ping/pong round trips.
//! - [`rate`] and [`pacer`]: congestion control: what the path carries, from the viewer's
//!   feedback, and the video sender that keeps to it with a queue bounded in time.
//! - [`shield`]: parity and a short reordering hold under the WebRTC stack, so SCTP does not
//!   read random loss and reordering as congestion.
//! - [`standing`]: the connection a target keeps at its broker: hello, back-off, ad-hoc lifetime.
//!
//! Time is always passed in as a `now` ([`std::time::Duration`] since the session's epoch),
//! so every rule here is tested in virtual time. The drivers in the `deskwire` crate own the
//! network, threads and clocks and feed this crate what happens.
#![deny(missing_docs)]

pub mod agent;
pub mod clock;
pub mod consent;
mod feedback;
pub mod input;
mod nack;
mod outbox;
pub mod pacer;
pub mod pair;
pub mod pairing;
pub mod pointer;
pub mod rate;
mod refresh;
pub mod shield;
pub mod standing;
mod stats;
pub mod video;
pub mod viewer;
pub mod wire;

pub use agent::{AgentSession, AgentSessionConfig, AgentSessionEvent, StreamInfo};
pub use outbox::{goodbye_words, silence_words, SessionEnd, Transmit};
pub use stats::{AgentStats, ViewerStats};
pub use viewer::{ViewerSession, ViewerSessionConfig, ViewerSessionEvent};
