//! The temporary host's standing connection: activate or re-attach, report calls, and end
//! the ad-hoc session (at the broker's word, the user's "end now", or the lifetime).

use std::collections::VecDeque;
use std::time::Duration;

use deskwire_signal::adhoc::{Activation, AdhocId, InvitationToken};
use deskwire_signal::{BrokerMessage, ClientMessage, SessionCode, UnixMillis};

use super::{Backoff, Now, WALL_CLOCK_RECHECK};

/// How long the broker may take to acknowledge the user's "end now" before the host ends
/// anyway: the answer is a courtesy, the folder goes either way.
const LEAVE_COURTESY: Duration = Duration::from_secs(2);

const USER_ENDED: &str = "the user ended the session";
// Offline, the broker hears of it when its own clock runs out.
const USER_ENDED_OFFLINE: &str = "the user ended the session (offline)";
const LIFETIME_ENDED: &str = "the ad-hoc session reached the end of its lifetime";

/// What a temporary host starts from.
#[derive(Clone)]
pub enum AdhocStart {
    /// Activate an invitation; sent again on each connection until the broker answers.
    Activate {
        /// The token from the link.
        token: InvitationToken,
        /// The security code the user typed.
        code: String,
        /// This computer's device id.
        device: String,
        /// A permanent agent runs on this computer (the broker refuses then).
        permanent_agent: bool,
    },
    /// Take up a session activated earlier (after a restart of the host's process), from
    /// what [`AdhocStandingEvent::Activated`] gave.
    Reattach {
        /// The ad-hoc session.
        session: AdhocId,
        /// The host token the activation gave.
        host_token: String,
        /// When the session ends by itself.
        expires_at: UnixMillis,
    },
}

impl std::fmt::Debug for AdhocStart {
    // The code and the host token end up in logs through this otherwise.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdhocStart::Activate {
                permanent_agent, ..
            } => f
                .debug_struct("Activate")
                .field("permanent_agent", permanent_agent)
                .finish_non_exhaustive(),
            AdhocStart::Reattach {
                session,
                expires_at,
                ..
            } => f
                .debug_struct("Reattach")
                .field("session", session)
                .field("expires_at", expires_at)
                .finish_non_exhaustive(),
        }
    }
}

/// What the driver must do or tell, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdhocStandingEvent {
    /// Open a connection to the broker; report [`AdhocStanding::handle_connected`] or
    /// [`AdhocStanding::handle_lost`].
    Connect,
    /// The session is active on this computer: keep `host_token` (with the link's secret)
    /// where a restarted process finds it, then tell the user. Comes once.
    Activated {
        /// The session, its deadline and capabilities.
        activation: Activation,
        /// What later connections re-attach with.
        host_token: String,
    },
    /// The standing connection is back after a drop or a restart.
    Reattached,
    /// A technician is connecting.
    Call {
        /// The code for this connection.
        session: SessionCode,
        /// Who.
        technician: String,
    },
    /// The connection is down (drop it if still open); the core asks to connect again
    /// after `retry`.
    Offline {
        /// What happened.
        error: String,
        /// How long until the next attempt.
        retry: Duration,
    },
    /// The session is over: remove the host's folder, close the connection. Nothing
    /// follows.
    Ended {
        /// Why, for a human.
        reason: String,
    },
    /// The broker refused the activation: remove the host's folder, close the connection.
    /// Nothing follows.
    Refused {
        /// The broker's reason.
        reason: String,
    },
}

/// Who this host is to the broker.
enum Identity {
    /// Not activated yet: this activation goes out on each connection.
    Activating(ClientMessage),
    /// Activated: connections re-attach.
    Attached(Attached),
    /// Ended or refused.
    Gone,
}

/// The session once activated.
struct Attached {
    session: AdhocId,
    host_token: String,
    expires_at: UnixMillis,
}

enum Link {
    /// The driver is connecting.
    Connecting,
    /// Connected; the hello went out.
    Online,
    /// The user ended the session; waiting (briefly) for the broker's acknowledgement.
    Leaving { until: Duration },
    /// Waiting to connect again.
    Offline { retry_at: Duration },
    /// Ended, refused or shut down.
    Done,
}

/// The temporary host's standing connection, as a state machine. See the module docs.
pub struct AdhocStanding {
    identity: Identity,
    link: Link,
    backoff: Backoff,
    /// The latest input's time, which the expiry is converted to a deadline from.
    last: Now,
    transmits: VecDeque<ClientMessage>,
    events: VecDeque<AdhocStandingEvent>,
}

impl std::fmt::Debug for AdhocStanding {
    // The host token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let link = match self.link {
            Link::Connecting => "connecting",
            Link::Online => "online",
            Link::Leaving { .. } => "leaving",
            Link::Offline { .. } => "offline",
            Link::Done => "done",
        };
        f.debug_struct("AdhocStanding")
            .field("link", &link)
            .field("session", &self.attached().map(|a| a.session))
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

impl AdhocStanding {
    /// Start at `now`: the first [`AdhocStandingEvent::Connect`] is queued. Waits between
    /// attempts double up to `max_retry`.
    pub fn new(start: AdhocStart, max_retry: Duration, now: Now) -> Self {
        let identity = match start {
            AdhocStart::Activate {
                token,
                code,
                device,
                permanent_agent,
            } => Identity::Activating(ClientMessage::ActivateAdhoc {
                token,
                code,
                device,
                permanent_agent,
            }),
            AdhocStart::Reattach {
                session,
                host_token,
                expires_at,
            } => Identity::Attached(Attached {
                session,
                host_token,
                expires_at,
            }),
        };
        Self {
            identity,
            link: Link::Connecting,
            backoff: Backoff::new(max_retry),
            last: now,
            transmits: VecDeque::new(),
            events: VecDeque::from([AdhocStandingEvent::Connect]),
        }
    }

    // Getters.

    /// When the session ends by itself, once activated.
    pub fn expires_at(&self) -> Option<UnixMillis> {
        self.attached().map(|a| a.expires_at)
    }

    /// Ended, refused or shut down: no more connections; close any that is open.
    pub fn is_done(&self) -> bool {
        matches!(self.link, Link::Done)
    }

    // Inputs. Each first settles what time alone decides (the lifetime), then the input.

    /// The connection the last [`AdhocStandingEvent::Connect`] asked for is open.
    pub fn handle_connected(&mut self, now: Now) {
        if self.pass_time(now) || !matches!(self.link, Link::Connecting) {
            return;
        }
        // Once activated, every connection re-attaches with the saved token; before, the
        // activation is simply sent again.
        let hello = match &self.identity {
            Identity::Activating(activate) => activate.clone(),
            Identity::Attached(a) => ClientMessage::ReattachAdhoc {
                session: a.session,
                host_token: a.host_token.clone(),
            },
            // Gone only together with Done, which returned above.
            Identity::Gone => return,
        };
        self.link = Link::Online;
        self.transmits.push_back(hello);
    }

    /// A message from the broker on the standing connection.
    pub fn handle_broker(&mut self, now: Now, msg: BrokerMessage) {
        if self.pass_time(now) {
            return;
        }
        match self.link {
            Link::Online => {}
            // Whatever the broker says to "leave" (or any error) ends the courtesy wait.
            Link::Leaving { .. } => return self.end(USER_ENDED),
            Link::Connecting | Link::Offline { .. } | Link::Done => {
                return tracing::debug!(?msg, "ignored without a standing connection");
            }
        }
        match msg {
            BrokerMessage::AdhocActivated {
                activation,
                host_token,
            } => match (host_token, self.attached().is_some()) {
                (Some(host_token), false) => {
                    self.identity = Identity::Attached(Attached {
                        session: activation.session,
                        host_token: host_token.clone(),
                        expires_at: activation.expires_at,
                    });
                    self.events.push_back(AdhocStandingEvent::Activated {
                        activation,
                        host_token,
                    });
                }
                (_, true) => self.events.push_back(AdhocStandingEvent::Reattached),
                // Nothing to re-attach with later: not an activation this host can use.
                (None, false) => tracing::debug!("an activation without a host token, ignored"),
            },
            BrokerMessage::AdhocCall {
                session,
                technician,
            } => self.events.push_back(AdhocStandingEvent::Call {
                session,
                technician,
            }),
            BrokerMessage::AdhocEnded { reason, .. } => self.end(&reason),
            // Before the activation took, the broker refuses it; after, the session is over.
            BrokerMessage::Error { message } if self.attached().is_none() => {
                self.identity = Identity::Gone;
                self.link = Link::Done;
                self.events
                    .push_back(AdhocStandingEvent::Refused { reason: message });
            }
            BrokerMessage::Error { message } => self.end(&message),
            other => tracing::debug!(?other, "ignored on the standing connection"),
        }
    }

    /// The connection could not be opened, or dropped (or was cut), for reason `why`.
    pub fn handle_lost(&mut self, now: Now, why: String) {
        if self.pass_time(now) {
            return;
        }
        match self.link {
            Link::Connecting | Link::Online => {
                let retry = self.backoff.take();
                self.link = Link::Offline {
                    retry_at: now.mono + retry,
                };
                self.events
                    .push_back(AdhocStandingEvent::Offline { error: why, retry });
            }
            Link::Leaving { .. } => self.end(USER_ENDED),
            Link::Offline { .. } | Link::Done => {}
        }
    }

    /// The user ends the session now: the broker is told if it can be, then it ends.
    pub fn handle_end_now(&mut self, now: Now) {
        if self.pass_time(now) {
            return;
        }
        match self.link {
            Link::Online => {
                self.transmits.push_back(ClientMessage::LeaveAdhoc {});
                self.link = Link::Leaving {
                    until: now.mono + LEAVE_COURTESY,
                };
            }
            Link::Connecting | Link::Offline { .. } => self.end(USER_ENDED_OFFLINE),
            Link::Leaving { .. } | Link::Done => {}
        }
    }

    /// This process stops without ending the session (the folder stays for a restart),
    /// unless the user's "end now" is under way: that ends now.
    pub fn handle_shutdown(&mut self) {
        match self.link {
            Link::Leaving { .. } => self.end(USER_ENDED),
            _ => self.link = Link::Done,
        }
    }

    /// The deadline from [`Self::poll_timeout`] passed (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        if self.pass_time(now) {
            return;
        }
        match self.link {
            Link::Leaving { until } if now.mono >= until => self.end(USER_ENDED),
            Link::Offline { retry_at } if now.mono >= retry_at => {
                self.link = Link::Connecting;
                self.events.push_back(AdhocStandingEvent::Connect);
            }
            _ => {}
        }
    }

    // Outputs.

    /// When [`Self::handle_timeout`] must be called next, on the monotonic clock: the
    /// earlier of the next attempt and the session's expiry, and no later than
    /// [`WALL_CLOCK_RECHECK`] while there is an expiry.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let lifetime = || {
            self.attached().map(|a| {
                let left = a.expires_at.since(self.last.wall);
                self.last.mono + left.min(WALL_CLOCK_RECHECK)
            })
        };
        match self.link {
            Link::Connecting | Link::Done => None,
            Link::Leaving { until } => Some(until),
            Link::Online => lifetime(),
            Link::Offline { retry_at } => Some(lifetime().map_or(retry_at, |at| at.min(retry_at))),
        }
    }

    /// The next message for the broker, on the standing connection.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<AdhocStandingEvent> {
        self.events.pop_front()
    }

    /// Note `now`, and end the session if its lifetime is over by this computer's clock
    /// (returns whether it did). The user's "end now" under way keeps its own reason.
    fn pass_time(&mut self, now: Now) -> bool {
        self.last = now;
        let over = self.attached().is_some_and(|a| now.wall >= a.expires_at);
        match self.link {
            Link::Done => true,
            Link::Leaving { .. } => false,
            _ if over => {
                self.end(LIFETIME_ENDED);
                true
            }
            _ => false,
        }
    }

    fn attached(&self) -> Option<&Attached> {
        match &self.identity {
            Identity::Attached(a) => Some(a),
            Identity::Activating(_) | Identity::Gone => None,
        }
    }

    fn end(&mut self, reason: &str) {
        self.identity = Identity::Gone;
        self.link = Link::Done;
        self.events.push_back(AdhocStandingEvent::Ended {
            reason: reason.to_owned(),
        });
    }
}
