//! An agent standing by for unattended calls: prove the device key on each connection,
//! report calls, connect again when the connection drops or the broker refuses it.

use std::collections::VecDeque;
use std::time::Duration;

use deskwire_signal::device::DeviceKey;
use deskwire_signal::{BrokerMessage, ClientMessage, SessionCode};

use super::{Backoff, Now};

/// What the driver must do or tell, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnattendedStandingEvent {
    /// Open a connection to the broker; report [`UnattendedStanding::handle_connected`] or
    /// [`UnattendedStanding::handle_lost`].
    Connect,
    /// The broker accepted the proof: calls can come.
    Online,
    /// The connection is down or was refused (drop it if still open); the core asks to
    /// connect again after `retry`.
    Offline {
        /// What happened.
        error: String,
        /// How long until the next attempt.
        retry: Duration,
    },
    /// A technician connects under `grant` (the target checks its own copy of the grant
    /// before anything connects).
    Call {
        /// The code for this connection.
        session: SessionCode,
        /// The grant they connect under.
        grant: u32,
        /// Who, as the broker names them.
        technician: String,
    },
}

enum Link {
    /// The driver is connecting.
    Connecting,
    /// Connected and the proof sent; `standing` once the broker accepted it.
    Online { standing: bool },
    /// Waiting to connect again.
    Offline { retry_at: Duration },
    /// Shut down.
    Done,
}

/// An unattended agent's standing connection, as a state machine. See the module docs.
pub struct UnattendedStanding {
    key: DeviceKey,
    link: Link,
    backoff: Backoff,
    transmits: VecDeque<ClientMessage>,
    events: VecDeque<UnattendedStandingEvent>,
}

impl std::fmt::Debug for UnattendedStanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let link = match self.link {
            Link::Connecting => "connecting",
            Link::Online { standing: false } => "proving",
            Link::Online { standing: true } => "standing by",
            Link::Offline { .. } => "offline",
            Link::Done => "done",
        };
        f.debug_struct("UnattendedStanding")
            .field("key", &self.key)
            .field("link", &link)
            .finish_non_exhaustive()
    }
}

impl UnattendedStanding {
    /// Stand by as the device holding `key`: the first
    /// [`UnattendedStandingEvent::Connect`] is queued. Waits between attempts double up to
    /// `max_retry`, and start over after a connection the broker accepted.
    pub fn new(key: DeviceKey, max_retry: Duration) -> Self {
        Self {
            key,
            link: Link::Connecting,
            backoff: Backoff::new(max_retry),
            transmits: VecDeque::new(),
            events: VecDeque::from([UnattendedStandingEvent::Connect]),
        }
    }

    // Getters.

    /// Shut down: no more connections; close any that is open.
    pub fn is_done(&self) -> bool {
        matches!(self.link, Link::Done)
    }

    // Inputs.

    /// The connection the last [`UnattendedStandingEvent::Connect`] asked for is open: the
    /// proof, signed at `now.wall` (the broker refuses one that is not recent), goes out.
    pub fn handle_connected(&mut self, now: Now) {
        if !matches!(self.link, Link::Connecting) {
            return;
        }
        self.link = Link::Online { standing: false };
        self.transmits.push_back(ClientMessage::Standby {
            device: self.key.prove_standby(now.wall),
            at: now.wall,
        });
    }

    /// A message from the broker on the standing connection.
    pub fn handle_broker(&mut self, now: Now, msg: BrokerMessage) {
        let Link::Online { standing } = &mut self.link else {
            return tracing::debug!(?msg, "ignored without a standing connection");
        };
        match msg {
            BrokerMessage::StandingBy {} => {
                *standing = true;
                self.events.push_back(UnattendedStandingEvent::Online);
            }
            BrokerMessage::UnattendedCall {
                session,
                grant,
                technician,
            } => self.events.push_back(UnattendedStandingEvent::Call {
                session,
                grant,
                technician,
            }),
            // A refusal (a stale proof, an unknown device) may pass: try again later.
            BrokerMessage::Error { message } => self.handle_lost(now, message),
            other => tracing::debug!(?other, "ignored while standing by"),
        }
    }

    /// The connection could not be opened, or dropped (or was cut), for reason `why`.
    pub fn handle_lost(&mut self, now: Now, why: String) {
        let standing = match self.link {
            Link::Connecting => false,
            Link::Online { standing } => standing,
            Link::Offline { .. } | Link::Done => return,
        };
        if standing {
            self.backoff.reset();
        }
        let retry = self.backoff.take();
        self.link = Link::Offline {
            retry_at: now.mono + retry,
        };
        self.events
            .push_back(UnattendedStandingEvent::Offline { error: why, retry });
    }

    /// Stop standing by.
    pub fn handle_shutdown(&mut self) {
        self.link = Link::Done;
    }

    /// The deadline from [`Self::poll_timeout`] passed (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        if let Link::Offline { retry_at } = self.link {
            if now.mono >= retry_at {
                self.link = Link::Connecting;
                self.events.push_back(UnattendedStandingEvent::Connect);
            }
        }
    }

    // Outputs.

    /// When [`Self::handle_timeout`] must be called next, on the monotonic clock.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.link {
            Link::Offline { retry_at } => Some(retry_at),
            Link::Connecting | Link::Online { .. } | Link::Done => None,
        }
    }

    /// The next message for the broker, on the standing connection.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<UnattendedStandingEvent> {
        self.events.pop_front()
    }
}
