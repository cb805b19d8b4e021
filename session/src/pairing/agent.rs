//! The agent's (target's) side of pairing: key exchange, the viewer's key confirmation, the
//! administrator's credentials, the user's consent, then the MACed offer and answer.

use std::collections::VecDeque;
use std::time::Duration;

use deskwire_signal::lan::LanPassword;
use deskwire_signal::pake::{Pake, SessionKeys};
use deskwire_signal::{
    BrokerMessage, ClientMessage, ConnectionCode, ConsentDecision, JoinRefusal, PeerSignal,
    PolicyAcceptance, SessionCode, SessionPolicy,
};

use super::PairingEnd;
use crate::consent::{
    AcceptanceMode, ConsentAnswer, ConsentOutcome, ConsentPrompt, ConsentRefusal,
};

/// What both ends know, which the key exchange binds the session to.
#[derive(Clone)]
pub enum PairingSecret {
    /// The connection code the broker accepted (its session half and the secret half).
    Code(ConnectionCode),
    /// This LAN target's current password.
    Lan(LanPassword),
    /// An unattended-access grant's number and secret.
    Grant(u32, [u8; 16]),
    /// An ad-hoc call's code and the invitation link's secret.
    Adhoc(SessionCode, [u8; 16]),
}

impl std::fmt::Debug for PairingSecret {
    // Secrets end up in logs through configs; only which kind it is may.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            PairingSecret::Code(_) => "Code",
            PairingSecret::Lan(_) => "Lan",
            PairingSecret::Grant(..) => "Grant",
            PairingSecret::Adhoc(..) => "Adhoc",
        };
        write!(f, "PairingSecret::{kind}(***)")
    }
}

impl PairingSecret {
    fn start(&self) -> (Pake, String) {
        match self {
            PairingSecret::Code(code) => Pake::start(code),
            PairingSecret::Lan(password) => Pake::start_lan(password),
            PairingSecret::Grant(id, secret) => Pake::start_grant(*id, secret),
            PairingSecret::Adhoc(session, secret) => Pake::start_adhoc(*session, secret),
        }
    }
}

/// What one attempt starts from.
#[derive(Debug, Clone)]
pub struct AgentPairingConfig {
    /// The shared secret.
    pub secret: PairingSecret,
    /// This side allows control.
    pub control: bool,
    /// The technician's group policy, from a broker with accounts.
    pub policy: Option<SessionPolicy>,
    /// Under an unattended-access grant or an activated ad-hoc session: nobody is asked.
    pub unattended: bool,
    /// The technician must present one of this computer's administrators' name and password.
    pub require_admin: bool,
    /// This computer's own acceptance mode (a group policy can only make it stricter).
    pub acceptance: AcceptanceMode,
    /// How long the viewer may take for each of its steps.
    pub timeout: Duration,
    /// How long the viewer may take to prove the secret (its key-exchange message and its
    /// confirmation), from the start. On a LAN both take milliseconds, and until the proof
    /// the attempt holds the agent's one negotiation: a viewer that said hello and then
    /// nothing held it for a whole `timeout`, again and again.
    pub proof_timeout: Duration,
}

/// What the driver must do or tell, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentPairingEvent {
    /// Check this name and password against this computer's administrator accounts and
    /// answer with [`AgentPairing::handle_credentials_checked`].
    CheckCredentials {
        /// The account name.
        user: String,
        /// Its password.
        password: String,
    },
    /// Ask the user whether to let the technician in; answer with
    /// [`AgentPairing::handle_consent`]. Silence is settled at `timeout` by the mode.
    AskUser {
        /// The mode in force (this computer's, made stricter by the group's).
        mode: AcceptanceMode,
        /// Whether control is asked for.
        control: bool,
        /// How long the user has.
        timeout: Duration,
        /// The technician's name, from a broker with accounts.
        technician: Option<String>,
    },
    /// Everyone said yes: build the peer connection's channels and offer, and hand the
    /// gathered offer to [`AgentPairing::handle_local_offer`].
    MakeOffer,
    /// The viewer's answer verified: connect with it. `control` is what was granted.
    Connected {
        /// The answer's SDP.
        answer: String,
        /// Keyboard and mouse may be injected.
        control: bool,
    },
    /// The broker unpaired this side because the viewer could not verify it: show the user
    /// why; another code may follow.
    Unpaired {
        /// The broker's reason.
        reason: JoinRefusal,
        /// The sentence to show.
        message: String,
    },
    /// The attempt is over without a connection.
    Ended(PairingEnd),
}

enum State {
    /// Waiting for the viewer's key-exchange message and its confirmation.
    KeyExchange {
        pake: Option<Pake>,
        keys: Option<SessionKeys>,
    },
    /// Waiting for the sealed credentials.
    Credentials(SessionKeys),
    /// The driver checks the credentials.
    Checking(SessionKeys),
    /// The user is asked.
    Consent(SessionKeys, ConsentPrompt),
    /// The driver builds the offer.
    Offering(SessionKeys),
    /// Waiting for the viewer's answer.
    Answering(SessionKeys),
    /// Connected or ended.
    Done,
}

/// The agent's pairing state machine for one attempt.
pub struct AgentPairing {
    config: AgentPairingConfig,
    state: State,
    /// When the viewer's current step must have arrived (not while the user or the driver
    /// is busy).
    deadline: Option<Duration>,
    /// What was granted, once consent is settled.
    control: bool,
    transmits: VecDeque<ClientMessage>,
    events: VecDeque<AgentPairingEvent>,
}

impl std::fmt::Debug for AgentPairing {
    // The keys and the secret stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.state {
            State::KeyExchange { .. } => "key exchange",
            State::Credentials(_) => "credentials",
            State::Checking(_) => "checking credentials",
            State::Consent(..) => "consent",
            State::Offering(_) => "offering",
            State::Answering(_) => "waiting for the answer",
            State::Done => "done",
        };
        f.debug_struct("AgentPairing")
            .field("step", &step)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl AgentPairing {
    /// Start an attempt at `now`: the key exchange's first message is queued.
    pub fn new(config: AgentPairingConfig, now: Duration) -> Self {
        let (pake, msg) = config.secret.start();
        let mut this = Self {
            deadline: Some(now + config.proof_timeout),
            control: false,
            config,
            state: State::KeyExchange {
                pake: Some(pake),
                keys: None,
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        this.relay(PeerSignal::Pake { msg });
        this
    }

    /// A message from the broker (or a LAN viewer speaking as one).
    pub fn handle_broker(&mut self, now: Duration, msg: BrokerMessage) {
        if matches!(self.state, State::Done) {
            return;
        }
        match msg {
            BrokerMessage::Relay {
                signal: PeerSignal::Bye { reason },
            } => self.end(PairingEnd::PeerBye(reason)),
            BrokerMessage::Relay { signal } => self.handle_signal(now, signal),
            // The viewer found this side unverifiable and told the broker, which unpaired
            // us: back to code entry, where the user hears why.
            BrokerMessage::JoinRefused { reason, message } => {
                self.events
                    .push_back(AgentPairingEvent::Unpaired { reason, message });
                self.end(PairingEnd::Unverified(
                    "the viewer could not verify this side".into(),
                ));
            }
            BrokerMessage::PeerLeft {} => self.end(PairingEnd::PeerLeft),
            BrokerMessage::Error { message } => self.end(PairingEnd::Broker(message)),
            other => tracing::debug!(?other, "ignored while pairing"),
        }
    }

    fn handle_signal(&mut self, now: Duration, signal: PeerSignal) {
        match (std::mem::replace(&mut self.state, State::Done), signal) {
            (State::KeyExchange { pake: None, .. }, PeerSignal::Pake { .. }) => {
                self.unverified("a second key-exchange message")
            }
            (
                State::KeyExchange {
                    pake: Some(pake), ..
                },
                PeerSignal::Pake { msg },
            ) => match pake.finish(&msg) {
                Ok(k) => {
                    self.state = State::KeyExchange {
                        pake: None,
                        keys: Some(k),
                    }
                }
                Err(e) => self.unverified(&e.to_string()),
            },
            (State::KeyExchange { keys, .. }, PeerSignal::Confirm { mac }) => match keys {
                Some(k) if k.verify_confirm(&mac).is_ok() => self.confirmed(now, k),
                _ => self.unverified("the key confirmation does not match"),
            },
            (State::Credentials(keys), PeerSignal::Credentials { sealed }) => {
                match keys.open_credentials(&sealed) {
                    Ok((user, password)) => {
                        self.state = State::Checking(keys);
                        // The check is local and bounded; the viewer is not waited for.
                        self.deadline = None;
                        self.events
                            .push_back(AgentPairingEvent::CheckCredentials { user, password });
                    }
                    Err(e) => self.unverified(&e.to_string()),
                }
            }
            (State::Answering(keys), PeerSignal::Answer { sdp, mac }) => {
                match keys.verify_answer(&sdp, &mac) {
                    Ok(()) => {
                        self.deadline = None;
                        self.events.push_back(AgentPairingEvent::Connected {
                            answer: sdp,
                            control: self.control,
                        });
                    }
                    Err(e) => self.unverified(&e.to_string()),
                }
            }
            (state, other) => {
                tracing::debug!(?other, "ignored at this step of pairing");
                self.state = state;
            }
        }
    }

    /// The viewer proved it holds the key: ask for credentials, or go on to consent.
    fn confirmed(&mut self, now: Duration, keys: SessionKeys) {
        self.deadline = Some(now + self.config.timeout);
        if self.config.require_admin {
            self.relay(PeerSignal::CredentialsRequired {});
            self.state = State::Credentials(keys);
        } else {
            self.consent(now, keys);
        }
    }

    /// The driver's verdict on the credentials.
    pub fn handle_credentials_checked(&mut self, now: Duration, accepted: bool) {
        let State::Checking(keys) = std::mem::replace(&mut self.state, State::Done) else {
            tracing::debug!("a credential verdict nobody asked for");
            return;
        };
        if accepted {
            self.consent(now, keys);
        } else {
            // The driver tells the viewer: a broker's viewer hears a goodbye, a LAN viewer
            // a refusal with its back-off. The decision goes first, for the broker's audit
            // (an unattended call the broker let through can still fail here).
            self.relay(PeerSignal::ConsentDecided {
                decision: ConsentDecision::BadCredentials,
            });
            self.end(PairingEnd::BadCredentials);
        }
    }

    /// Ask the user per the acceptance mode. The broker's word (the technician's group
    /// policy) can only make this stricter than this side's own settings, never looser.
    fn consent(&mut self, now: Duration, keys: SessionKeys) {
        let policy = self.config.policy.as_ref();
        // The technician's group decides whether they may control, even unattended.
        let control = self.config.control && policy.is_none_or(|p| p.control);
        if self.config.unattended {
            tracing::info!(
                "unattended session (a grant, or an activated ad-hoc session): nobody is asked"
            );
            return self.granted(keys, control);
        }
        let mode = match policy {
            Some(p) => self.config.acceptance.stricter(broker_mode(p)),
            None => self.config.acceptance,
        };
        // Told to the technician: whose rule they are waiting on.
        let by_computer = policy.is_some_and(|p| {
            let group = broker_mode(p);
            mode != group && mode == self.config.acceptance
        });
        // As the broker verified them: their name, and their company when it has one.
        let technician = policy.map(|p| match p.company.as_str() {
            "" => p.technician.clone(),
            company => format!("{} of {company}", p.technician),
        });
        let prompt = ConsentPrompt::new(mode, control, now);
        if prompt.asks_the_user() {
            let timeout = prompt.deadline() - now;
            self.relay(PeerSignal::AwaitingConsent {
                for_ms: timeout.as_millis() as u64,
                starts_on_its_own: matches!(mode, AcceptanceMode::AllowAutomatically { .. }),
                by_computer,
            });
            self.events.push_back(AgentPairingEvent::AskUser {
                mode,
                control,
                timeout,
                technician,
            });
        }
        self.deadline = Some(prompt.deadline());
        self.state = State::Consent(keys, prompt);
        self.settle(now);
    }

    /// The user answered.
    pub fn handle_consent(&mut self, now: Duration, answer: ConsentAnswer) {
        if let State::Consent(_, prompt) = &mut self.state {
            prompt.handle_answer(answer);
            self.settle(now);
        }
    }

    /// Settle the question if its outcome is known at `now`.
    fn settle(&mut self, now: Duration) {
        let State::Consent(_, prompt) = &self.state else {
            return;
        };
        match prompt.poll(now) {
            None => {}
            Some(ConsentOutcome::Granted { control }) => {
                self.relay(PeerSignal::ConsentDecided {
                    decision: if control {
                        ConsentDecision::Control
                    } else {
                        ConsentDecision::ViewOnly
                    },
                });
                if let State::Consent(keys, _) = std::mem::replace(&mut self.state, State::Done) {
                    self.granted(keys, control);
                }
            }
            Some(ConsentOutcome::Refused(why)) => {
                tracing::info!(?why, "the session was not accepted");
                self.relay(PeerSignal::ConsentDecided {
                    decision: match why {
                        ConsentRefusal::RejectedByUser => ConsentDecision::Rejected,
                        ConsentRefusal::TimedOut => ConsentDecision::TimedOut,
                        ConsentRefusal::DeniedByPolicy => ConsentDecision::Denied,
                    },
                });
                self.relay(PeerSignal::Bye {
                    reason: why.message().into(),
                });
                self.end(PairingEnd::Consent(why));
            }
        }
    }

    fn granted(&mut self, keys: SessionKeys, control: bool) {
        self.control = control;
        self.deadline = None;
        self.state = State::Offering(keys);
        self.events.push_back(AgentPairingEvent::MakeOffer);
    }

    /// The peer connection's offer, gathered: MAC it and send it; the answer is due within
    /// the timeout.
    pub fn handle_local_offer(&mut self, now: Duration, sdp: String) {
        let State::Offering(keys) = std::mem::replace(&mut self.state, State::Done) else {
            tracing::debug!("an offer nobody asked for");
            return;
        };
        let mac = keys.mac_offer(&sdp);
        self.relay(PeerSignal::Offer { sdp, mac });
        self.deadline = Some(now + self.config.timeout);
        self.state = State::Answering(keys);
    }

    /// Time passed: settle the user's silence, or give up on a viewer that did not answer.
    pub fn handle_timeout(&mut self, now: Duration) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.state {
            State::Consent(..) => self.settle(now),
            State::Done => {}
            State::KeyExchange { .. } => self.end(PairingEnd::Unproven),
            _ => self.end(PairingEnd::TimedOut("the viewer did not answer in time")),
        }
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            State::Done => None,
            _ => self.deadline,
        }
    }

    /// The next message for the broker.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<AgentPairingEvent> {
        self.events.pop_front()
    }

    fn relay(&mut self, signal: PeerSignal) {
        self.transmits.push_back(ClientMessage::Relay { signal });
    }

    /// The viewer's message did not verify: tell the broker, which unpairs the two and
    /// tells the viewer why. Nothing was connected.
    fn unverified(&mut self, why: &str) {
        tracing::warn!(
            why,
            "the viewer's message failed verification; nothing was connected"
        );
        self.transmits
            .push_back(ClientMessage::VerificationFailed {});
        self.end(PairingEnd::Unverified(why.into()));
    }

    fn end(&mut self, why: PairingEnd) {
        self.state = State::Done;
        self.deadline = None;
        self.events.push_back(AgentPairingEvent::Ended(why));
    }
}

/// A group's acceptance policy as a mode.
fn broker_mode(p: &SessionPolicy) -> AcceptanceMode {
    let window = Duration::from_secs(u64::from(p.window_secs));
    match p.acceptance {
        PolicyAcceptance::Auto => AcceptanceMode::AllowAutomatically {
            reject_window: window,
        },
        PolicyAcceptance::Request => AcceptanceMode::AllowByRequest {
            timeout: window.max(Duration::from_secs(1)),
        },
        PolicyAcceptance::Deny => AcceptanceMode::Deny,
    }
}
