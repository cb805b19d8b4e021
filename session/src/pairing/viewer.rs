//! The viewer's (technician's) side of pairing: open the route (a code to read out, a call,
//! or a LAN greeting), run the key exchange and confirm it, answer a request for
//! administrator credentials, and accept only an offer whose MAC verifies.

use std::collections::VecDeque;
use std::time::Duration;

use deskwire_signal::adhoc::AdhocId;
use deskwire_signal::lan::LanPassword;
use deskwire_signal::pake::{Pake, SessionKeys};
use deskwire_signal::{
    BrokerMessage, ClientMessage, ConnectionCode, ConsentDecision, PeerSignal, UnixMillis,
};

use super::PairingEnd;

/// The longest a target may say its user takes to answer (a hostile target cannot make the
/// viewer wait for ever).
pub const MAX_CONSENT_WAIT_MS: u64 = 10 * 60 * 1000;

/// How the viewer reaches its target.
#[derive(Clone)]
pub enum PairingRoute {
    /// Create a code for the target's user to type.
    Code {
        /// The technician's API token, for a broker with accounts.
        token: Option<String>,
        /// Ask for a resume token, so a broker restart does not cost the code.
        resumable: bool,
    },
    /// Call a device's agent through the broker under an unattended-access grant.
    Unattended {
        /// The technician's API token.
        token: String,
        /// The device id (`dev-...`).
        device: String,
        /// The grant's number.
        grant: u32,
        /// The grant's secret, which the key exchange runs on.
        secret: [u8; 16],
    },
    /// Call an ad-hoc session's temporary host.
    Adhoc {
        /// The technician's API token.
        token: String,
        /// The ad-hoc session.
        session: AdhocId,
        /// The invitation link's secret, which the key exchange runs on with the code.
        secret: [u8; 16],
    },
    /// Greet a LAN target directly (it answers as a broker would); its password, or a
    /// grant's number and secret, takes the code's place.
    Lan {
        /// The target's current password.
        password: LanPassword,
        /// Connect under this grant instead of the password.
        grant: Option<(u32, [u8; 16])>,
    },
}

impl std::fmt::Debug for PairingRoute {
    // Secrets end up in logs through configs; only the route and public parts may.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairingRoute::Code { resumable, .. } => {
                write!(f, "Code {{ resumable: {resumable} }}")
            }
            PairingRoute::Unattended { device, grant, .. } => {
                write!(f, "Unattended {{ device: {device:?}, grant: {grant} }}")
            }
            PairingRoute::Adhoc { session, .. } => write!(f, "Adhoc {{ session: {session:?} }}"),
            PairingRoute::Lan { grant, .. } => {
                write!(f, "Lan {{ grant: {:?} }}", grant.map(|g| g.0))
            }
        }
    }
}

/// What one attempt starts from.
#[derive(Clone)]
pub struct ViewerPairingConfig {
    /// How the target is reached.
    pub route: PairingRoute,
    /// The target's administrator name and password, for a target that requires them.
    pub admin: Option<(String, String)>,
    /// How long the target may take for each of its steps once it joined.
    pub timeout: Duration,
    /// The code's secret half, drawn by the driver; it never goes to the broker.
    pub code_secret: u16,
    /// A fresh nonce for sealing the credentials.
    pub credentials_nonce: [u8; 12],
    /// The wall clock at the attempt's `now`, to turn the code's expiry into a deadline.
    pub unix_at_start: UnixMillis,
}

/// What the driver must do or show, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerPairingEvent {
    /// The code to read out to the target's user (not for calls).
    Code {
        /// The whole code.
        code: ConnectionCode,
        /// When it expires.
        expires_at: UnixMillis,
    },
    /// A target joined; the key exchange runs.
    PeerJoined,
    /// The target asks its user; this is how long they may take.
    AwaitingConsent {
        /// Bounded by [`MAX_CONSENT_WAIT_MS`].
        timeout: Duration,
        /// Silence lets the technician in at the end of the wait.
        starts_on_its_own: bool,
        /// The computer's own setting, stricter than the group's, decided the wait.
        by_computer: bool,
    },
    /// The target's user (or its mode) settled whether to let the technician in.
    ConsentDecided {
        /// How.
        decision: ConsentDecision,
    },
    /// An attempt failed verification; nothing was connected, the code may be typed again.
    VerificationFailed {
        /// The sentence to show.
        why: String,
    },
    /// The target's offer verified: answer it and hand the gathered answer to
    /// [`ViewerPairing::handle_local_answer`].
    Offer {
        /// The offer's SDP.
        sdp: String,
        /// When the target joined (or its user was asked), to measure the set-up time.
        joined_at: Duration,
    },
    /// The attempt is over without a connection.
    Ended(PairingEnd),
}

/// Where the attempt stands.
enum Phase {
    /// Before a verified offer.
    Pairing,
    /// The driver builds the answer.
    Answering(SessionKeys),
    /// The answer went out; the target may still refuse it.
    Answered,
    /// Ended (or connected: the driver stops feeding it).
    Done,
}

/// A resumable code, for re-attaching after the broker connection was lost.
#[derive(Debug, Clone)]
pub struct ResumeTicket {
    /// The code waiting for its target.
    pub code: ConnectionCode,
    /// Proves to a restarted broker that this side created the code.
    pub token: String,
    /// When the code expires.
    pub expires_at: Option<UnixMillis>,
}

impl std::fmt::Debug for ViewerPairingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerPairingConfig")
            .field("route", &self.route)
            .field("admin", &self.admin.as_ref().map(|(user, _)| user))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ViewerPairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Pairing => "pairing",
            Phase::Answering(_) => "answering",
            Phase::Answered => "answered",
            Phase::Done => "done",
        };
        f.debug_struct("ViewerPairing")
            .field("route", &self.config.route)
            .field("phase", &phase)
            .field("joined_at", &self.joined_at)
            .finish_non_exhaustive()
    }
}

/// The viewer's pairing state machine for one attempt.
pub struct ViewerPairing {
    config: ViewerPairingConfig,
    phase: Phase,
    started: Duration,
    code: Option<ConnectionCode>,
    expires_at: Option<UnixMillis>,
    resume: Option<String>,
    joined_at: Option<Duration>,
    pake: Option<Pake>,
    keys: Option<SessionKeys>,
    /// While the target's user is being asked, how long they may take.
    consent_wait: Duration,
    transmits: VecDeque<ClientMessage>,
    events: VecDeque<ViewerPairingEvent>,
}

impl ViewerPairing {
    /// Start an attempt at `now`: the route's opening message is queued (a LAN target is
    /// greeted by the connection itself).
    pub fn new(config: ViewerPairingConfig, now: Duration) -> Self {
        let opening = match &config.route {
            PairingRoute::Lan { .. } => None,
            PairingRoute::Unattended {
                token,
                device,
                grant,
                ..
            } => Some(ClientMessage::CallUnattended {
                token: token.clone(),
                device: device.clone(),
                grant: *grant,
            }),
            PairingRoute::Adhoc { token, session, .. } => Some(ClientMessage::CallAdhoc {
                token: token.clone(),
                session: *session,
            }),
            PairingRoute::Code { token, resumable } => Some(ClientMessage::CreateSession {
                token: token.clone(),
                resumable: *resumable,
            }),
        };
        Self {
            config,
            phase: Phase::Pairing,
            started: now,
            code: None,
            expires_at: None,
            resume: None,
            joined_at: None,
            pake: None,
            keys: None,
            consent_wait: Duration::ZERO,
            transmits: opening.into_iter().collect(),
            events: VecDeque::new(),
        }
    }

    fn lan(&self) -> bool {
        matches!(self.config.route, PairingRoute::Lan { .. })
    }

    /// A refusal, worded for where it came from.
    fn refused(&self, message: String) -> PairingEnd {
        if self.lan() {
            PairingEnd::Lan(message)
        } else {
            PairingEnd::Broker(message)
        }
    }

    /// A message from the broker (or the LAN target speaking as one).
    pub fn handle_broker(&mut self, now: Duration, msg: BrokerMessage) {
        match self.phase {
            Phase::Pairing => self.pairing(now, msg),
            Phase::Answered => self.answered(msg),
            Phase::Answering(_) | Phase::Done => {}
        }
    }

    fn pairing(&mut self, now: Duration, msg: BrokerMessage) {
        let mut failed: Option<String> = None;
        match msg {
            BrokerMessage::SessionCreated {
                session,
                expires_at,
                resume,
            } => {
                let Some(full) = ConnectionCode::new(session, self.config.code_secret) else {
                    return self.end(PairingEnd::Broker(
                        "the code's secret is out of range".into(),
                    ));
                };
                self.resume = resume;
                self.code = Some(full);
                self.expires_at = Some(expires_at);
                // A call gets a code made for its target, not for reading out.
                if matches!(self.config.route, PairingRoute::Code { .. }) {
                    self.events.push_back(ViewerPairingEvent::Code {
                        code: full,
                        expires_at,
                    });
                }
            }
            BrokerMessage::PeerJoined {} => self.joined(now),
            BrokerMessage::Relay { signal } => match signal {
                PeerSignal::Pake { msg } => match self.pake.take().map(|p| p.finish(&msg)) {
                    Some(Ok(k)) => {
                        // Prove we hold the key before the target asks its user.
                        self.relay(PeerSignal::Confirm {
                            mac: k.mac_confirm(),
                        });
                        self.keys = Some(k);
                    }
                    Some(Err(e)) => failed = Some(e.to_string()),
                    None => failed = Some("an unexpected key-exchange message".into()),
                },
                PeerSignal::CredentialsRequired {} => {
                    match (self.keys.as_ref(), self.config.admin.as_ref()) {
                        (Some(k), Some((user, password))) => {
                            let sealed =
                                k.seal_credentials(user, password, self.config.credentials_nonce);
                            self.relay(PeerSignal::Credentials { sealed });
                        }
                        _ => {
                            self.relay(PeerSignal::Bye {
                                reason: "no administrator credentials".into(),
                            });
                            let why =
                                "the target asks for one of its administrators' name and password";
                            return self.end(self.refused(why.into()));
                        }
                    }
                }
                PeerSignal::AwaitingConsent {
                    for_ms,
                    starts_on_its_own,
                    by_computer,
                } => {
                    let timeout = Duration::from_millis(for_ms.min(MAX_CONSENT_WAIT_MS));
                    self.consent_wait = timeout;
                    self.joined_at = Some(now);
                    self.events.push_back(ViewerPairingEvent::AwaitingConsent {
                        timeout,
                        starts_on_its_own,
                        by_computer,
                    });
                }
                PeerSignal::Offer { sdp, mac } => {
                    match self.keys.as_ref().map(|k| k.verify_offer(&sdp, &mac)) {
                        Some(Ok(())) => {
                            if let Some(keys) = self.keys.take() {
                                self.phase = Phase::Answering(keys);
                                self.events.push_back(ViewerPairingEvent::Offer {
                                    sdp,
                                    joined_at: self.joined_at.unwrap_or(now),
                                });
                            }
                        }
                        Some(Err(e)) => failed = Some(e.to_string()),
                        None => failed = Some("an offer before the key exchange".into()),
                    }
                }
                PeerSignal::ConsentDecided { decision } => {
                    self.events
                        .push_back(ViewerPairingEvent::ConsentDecided { decision });
                }
                PeerSignal::Bye { reason } => return self.end(PairingEnd::PeerBye(reason)),
                other => tracing::debug!(?other, "ignored while pairing"),
            },
            // One side found the other unverifiable (a mistyped secret, or tampering): the
            // broker unpaired the target; the code may be typed again.
            BrokerMessage::AttemptFailed { failures } => {
                let why = format!("attempt {failures} failed verification; nothing was connected");
                self.events
                    .push_back(ViewerPairingEvent::VerificationFailed { why });
                (self.pake, self.keys, self.joined_at) = (None, None, None);
                self.consent_wait = Duration::ZERO;
            }
            BrokerMessage::PeerLeft {} => return self.end(PairingEnd::PeerLeft),
            BrokerMessage::Error { message } => return self.end(self.refused(message)),
            // Only a LAN target says this to a viewer: a wrong password, or this address
            // must wait after earlier wrong ones.
            BrokerMessage::JoinRefused { message, .. } if self.lan() => {
                return self.end(PairingEnd::Lan(message))
            }
            other => tracing::debug!(?other, "ignored while pairing"),
        }
        if let Some(why) = failed {
            // The broker answers with attempt_failed, handled above.
            tracing::warn!(
                why,
                "the target's message failed verification; nothing was connected"
            );
            self.transmits
                .push_back(ClientMessage::VerificationFailed {});
            if self.lan() {
                // No broker to pair another attempt: this one is over.
                return self.end(PairingEnd::Lan(format!(
                    "the target could not be verified ({why}); nothing was connected"
                )));
            }
            (self.pake, self.keys) = (None, None);
        }
    }

    /// A target joined: start the key exchange on the secret this route shares with it.
    fn joined(&mut self, now: Duration) {
        if let PairingRoute::Lan { grant, .. } = &self.config.route {
            // A LAN target learns first which secret this side holds.
            let grant = grant.map(|g| g.0);
            self.relay(PeerSignal::LanHello { grant });
        }
        let (pake, msg) = match (&self.config.route, self.code) {
            (PairingRoute::Lan { password, grant }, _) => match grant {
                Some((id, secret)) => Pake::start_grant(*id, secret),
                None => Pake::start_lan(password),
            },
            (PairingRoute::Unattended { grant, secret, .. }, _) => {
                Pake::start_grant(*grant, secret)
            }
            (PairingRoute::Adhoc { secret, .. }, Some(code)) => {
                Pake::start_adhoc(code.session(), secret)
            }
            (PairingRoute::Code { .. }, Some(code)) => Pake::start(&code),
            (_, None) => {
                return self.end(PairingEnd::Broker("peer_joined before a code".into()));
            }
        };
        self.joined_at = Some(now);
        self.pake = Some(pake);
        self.keys = None;
        self.relay(PeerSignal::Pake { msg });
        self.events.push_back(ViewerPairingEvent::PeerJoined);
    }

    /// After the answer: a target that refuses it (it failed its verification) says bye.
    fn answered(&mut self, msg: BrokerMessage) {
        match msg {
            BrokerMessage::Relay {
                signal: PeerSignal::Bye { reason },
            } => self.end(PairingEnd::PeerBye(reason)),
            BrokerMessage::AttemptFailed { .. } => self.end(PairingEnd::Unverified(
                "the target could not verify this side's answer: it was altered on the way".into(),
            )),
            BrokerMessage::Error { message } => self.end(PairingEnd::Broker(message)),
            _ => {}
        }
    }

    /// The peer connection's answer, gathered: MAC it and send it.
    pub fn handle_local_answer(&mut self, sdp: String) {
        let Phase::Answering(keys) = std::mem::replace(&mut self.phase, Phase::Answered) else {
            tracing::debug!("an answer nobody asked for");
            return;
        };
        let mac = keys.mac_answer(&sdp);
        self.relay(PeerSignal::Answer { sdp, mac });
    }

    /// The broker connection was lost. A code still waiting for its target can be
    /// re-attached to on a new connection: this says which and until when; `None` means
    /// the attempt is over.
    pub fn handle_broker_lost(&self) -> Option<ResumeTicket> {
        match (&self.phase, self.joined_at, self.code, &self.resume) {
            (Phase::Pairing, None, Some(code), Some(token)) => Some(ResumeTicket {
                code,
                token: token.clone(),
                expires_at: self.expires_at,
            }),
            _ => None,
        }
    }

    /// When the current wait gives up: before the target joins the code's lifetime bounds
    /// it; after, the timeout does (plus the time the target's user may take to answer).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !matches!(self.phase, Phase::Pairing) {
            return None;
        }
        Some(match (self.joined_at, self.expires_at) {
            (Some(t), _) => t + self.config.timeout + self.consent_wait,
            (None, Some(at)) => {
                let unix_at_start = self.config.unix_at_start;
                let left = at.since(unix_at_start);
                self.started + left + Duration::from_secs(1)
            }
            (None, None) => self.started + self.config.timeout,
        })
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.poll_timeout().is_some_and(|at| now >= at) {
            let what = match (self.joined_at, self.code) {
                (Some(_), _) => "no offer from the target in time",
                (None, Some(_)) => "the code expired before anyone joined",
                (None, None) => "the broker did not answer in time",
            };
            self.end(PairingEnd::TimedOut(what));
        }
    }

    /// The next message for the broker.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ViewerPairingEvent> {
        self.events.pop_front()
    }

    fn relay(&mut self, signal: PeerSignal) {
        self.transmits.push_back(ClientMessage::Relay { signal });
    }

    fn end(&mut self, why: PairingEnd) {
        self.phase = Phase::Done;
        self.events.push_back(ViewerPairingEvent::Ended(why));
    }
}
