//! What the cores hand their drivers: messages to send and why a session ended.

use std::time::Duration;

use bytes::BytesMut;

use crate::wire::{ByeReason, Channel};

/// A message for the driver to send on one of the three data channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The channel it belongs on.
    pub channel: Channel,
    /// The encoded message.
    pub data: BytesMut,
}

/// Why an established session ended, as far as the core can tell. The driver adds the
/// endings it alone sees (the transport failed, the broker went away).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// This side closed the session.
    Local,
    /// The peer said goodbye.
    PeerBye {
        /// Its reason code.
        reason: ByeReason,
        /// Its sentence.
        detail: String,
    },
    /// Nothing was heard from the peer for this long.
    PeerTimeout(Duration),
    /// The peer sent something no correct peer sends (the sentence says what).
    ProtocolViolation(String),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Local => write!(f, "ended on this side"),
            SessionEnd::PeerBye { reason, detail } => {
                write!(f, "the peer ended the session ({reason:?}: {detail})")
            }
            SessionEnd::PeerTimeout(d) => write!(f, "nothing heard from the peer for {d:?}"),
            SessionEnd::ProtocolViolation(why) => write!(f, "the peer broke the protocol: {why}"),
        }
    }
}

pub(crate) fn control(msg: &crate::wire::ControlMessage) -> Transmit {
    let mut data = BytesMut::with_capacity(64);
    msg.encode(&mut data);
    Transmit {
        channel: Channel::Control,
        data,
    }
}
