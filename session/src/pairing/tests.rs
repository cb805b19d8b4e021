//! Both pairing cores against each other through a stand-in broker relay, in virtual time:
//! the order, every refusal and every timeout, in microseconds of test time.

use std::time::Duration;

use deskwire_signal::lan::LanPassword;
use deskwire_signal::{
    BrokerMessage, ClientMessage, ConnectionCode, JoinRefusal, PeerSignal, PolicyAcceptance,
    SessionCode, SessionPolicy, UnixMillis,
};

use super::*;
use crate::consent::{AcceptanceMode, ConsentAnswer, ConsentRefusal};

const SECRET: u16 = 4321;
const TIMEOUT: Duration = Duration::from_secs(15);
const ONE_WAY: Duration = Duration::from_millis(40);
const CODE_LIFETIME: Duration = Duration::from_secs(600);

fn session() -> SessionCode {
    SessionCode::from_number(123_456).unwrap()
}

fn code(secret: u16) -> ConnectionCode {
    ConnectionCode::new(session(), secret).unwrap()
}

fn viewer_config(route: PairingRoute) -> ViewerPairingConfig {
    ViewerPairingConfig {
        route,
        admin: None,
        timeout: TIMEOUT,
        code_secret: SECRET,
        credentials_nonce: [7; 12],
        unix_at_start: UnixMillis(1_000_000),
    }
}

fn code_route() -> PairingRoute {
    PairingRoute::Code {
        token: None,
        resumable: true,
    }
}

fn agent_config(secret: PairingSecret, acceptance: AcceptanceMode) -> AgentPairingConfig {
    AgentPairingConfig {
        secret,
        control: true,
        policy: None,
        unattended: false,
        require_admin: false,
        acceptance,
        timeout: TIMEOUT,
        proof_timeout: TIMEOUT,
    }
}

fn by_request(secs: u64) -> AcceptanceMode {
    AcceptanceMode::AllowByRequest {
        timeout: Duration::from_secs(secs),
    }
}

/// What the harness does for the drivers: answer the user's question, check credentials,
/// gather an offer or an answer.
struct Script {
    /// The agent's user answers this, this long after being asked.
    consent: Option<(Duration, ConsentAnswer)>,
    /// The administrator accounts' verdict.
    credentials_ok: fn(&str, &str) -> bool,
    /// The agent joins this long after the code was created (`None`: never).
    join_after: Option<Duration>,
    /// Alters relayed signals on the way (a broker in the middle).
    tamper: fn(&mut PeerSignal),
}

impl Default for Script {
    fn default() -> Self {
        Self {
            consent: Some((
                Duration::from_secs(2),
                ConsentAnswer::Allow { control: true },
            )),
            credentials_ok: |_, _| false,
            join_after: Some(Duration::from_secs(1)),
            tamper: |_| {},
        }
    }
}

/// Two cores and a relay with `ONE_WAY` delay each way.
struct Harness {
    now: Duration,
    viewer: ViewerPairing,
    agent: Option<AgentPairing>,
    agent_config: AgentPairingConfig,
    script: Script,
    /// Messages on the way: (arrival, to the agent?, message).
    wire: Vec<(Duration, bool, BrokerMessage)>,
    /// The agent's join, when due.
    join_at: Option<Duration>,
    ask_answer_at: Option<(Duration, ConsentAnswer)>,
    agent_events: Vec<(Duration, AgentPairingEvent)>,
    viewer_events: Vec<(Duration, ViewerPairingEvent)>,
    failures: u32,
    lan: bool,
}

impl Harness {
    fn new(route: PairingRoute, agent: AgentPairingConfig, script: Script) -> Self {
        Self::with_viewer(viewer_config(route), agent, script)
    }

    fn with_viewer(viewer: ViewerPairingConfig, agent: AgentPairingConfig, script: Script) -> Self {
        let lan = matches!(viewer.route, PairingRoute::Lan { .. });
        let mut h = Self {
            now: Duration::ZERO,
            viewer: ViewerPairing::new(viewer, Duration::ZERO),
            agent: None,
            agent_config: agent,
            script,
            wire: Vec::new(),
            join_at: None,
            ask_answer_at: None,
            agent_events: Vec::new(),
            viewer_events: Vec::new(),
            failures: 0,
            lan,
        };
        if lan {
            // A LAN target answers the connection itself, at once.
            h.join_at = h.script.join_after;
        }
        h
    }

    fn send(&mut self, to_agent: bool, msg: BrokerMessage) {
        self.wire.push((self.now + ONE_WAY, to_agent, msg));
    }

    /// What the stand-in broker does with a client's message.
    fn relay_from_viewer(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::CreateSession { .. } | ClientMessage::CallUnattended { .. } => {
                self.send(
                    false,
                    BrokerMessage::SessionCreated {
                        session: session(),
                        expires_at: UnixMillis(1_000_000).plus(CODE_LIFETIME),
                        resume: Some("feed".into()),
                    },
                );
                self.join_at = self.script.join_after.map(|d| self.now + ONE_WAY + d);
            }
            ClientMessage::Relay { mut signal } => {
                (self.script.tamper)(&mut signal);
                self.send(true, BrokerMessage::Relay { signal });
            }
            ClientMessage::VerificationFailed {} => self.verification_failed(),
            other => panic!("the viewer sent {other:?}"),
        }
    }

    fn relay_from_agent(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::Relay { mut signal } => {
                (self.script.tamper)(&mut signal);
                self.send(false, BrokerMessage::Relay { signal });
            }
            ClientMessage::VerificationFailed {} => self.verification_failed(),
            other => panic!("the agent sent {other:?}"),
        }
    }

    /// As the switchboard does: unpair, tell both.
    fn verification_failed(&mut self) {
        self.failures += 1;
        if !self.lan {
            self.send(
                false,
                BrokerMessage::AttemptFailed {
                    failures: self.failures,
                },
            );
            self.send(
                true,
                BrokerMessage::JoinRefused {
                    reason: JoinRefusal::VerificationFailed,
                    message: "the technician could not verify this computer".into(),
                },
            );
        }
    }

    /// Move both cores until nothing is left to do, or `until`.
    fn run(&mut self, until: Duration) {
        for _ in 0..10_000 {
            self.drain();
            let mut next = vec![until];
            next.extend(self.wire.iter().map(|w| w.0));
            next.extend(self.join_at);
            next.extend(self.ask_answer_at.map(|a| a.0));
            next.extend(self.viewer.poll_timeout());
            next.extend(self.agent.as_ref().and_then(|a| a.poll_timeout()));
            let at = next.into_iter().min().unwrap();
            if at >= until {
                self.now = until;
                self.drain();
                return;
            }
            self.now = self.now.max(at);
            self.step();
        }
        panic!("pairing did not settle in 10 000 steps");
    }

    fn step(&mut self) {
        let now = self.now;
        if self.join_at.is_some_and(|t| t <= now) {
            self.join_at = None;
            self.agent = Some(AgentPairing::new(self.agent_config.clone(), now));
            self.send(false, BrokerMessage::PeerJoined {});
        }
        if let Some((at, answer)) = self.ask_answer_at {
            if at <= now {
                self.ask_answer_at = None;
                if let Some(a) = &mut self.agent {
                    a.handle_consent(now, answer);
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wire)
            .into_iter()
            .partition(|w| w.0 <= now);
        self.wire = later;
        for (_, to_agent, msg) in due {
            if to_agent {
                if let Some(a) = &mut self.agent {
                    a.handle_broker(now, msg);
                }
            } else {
                self.viewer.handle_broker(now, msg);
            }
        }
        self.viewer.handle_timeout(now);
        if let Some(a) = &mut self.agent {
            a.handle_timeout(now);
        }
    }

    /// Carry out what the cores asked for, as the drivers would.
    fn drain(&mut self) {
        let now = self.now;
        loop {
            let mut busy = false;
            while let Some(msg) = self.viewer.poll_transmit() {
                busy = true;
                self.relay_from_viewer(msg);
            }
            while let Some(ev) = self.viewer.poll_event() {
                busy = true;
                if let ViewerPairingEvent::Offer { .. } = ev {
                    self.viewer.handle_local_answer("v=0 answer".into());
                }
                self.viewer_events.push((now, ev));
            }
            let Some(agent) = &mut self.agent else {
                if !busy {
                    return;
                }
                continue;
            };
            let mut sent = Vec::new();
            while let Some(msg) = agent.poll_transmit() {
                sent.push(msg);
            }
            let mut events = Vec::new();
            while let Some(ev) = agent.poll_event() {
                match &ev {
                    AgentPairingEvent::CheckCredentials { user, password } => {
                        let ok = (self.script.credentials_ok)(user, password);
                        agent.handle_credentials_checked(now, ok);
                    }
                    AgentPairingEvent::AskUser { .. } => {
                        self.ask_answer_at = self.script.consent.map(|(d, a)| (now + d, a));
                    }
                    AgentPairingEvent::MakeOffer => {
                        agent.handle_local_offer(now, "v=0 offer".into())
                    }
                    _ => {}
                }
                events.push(ev);
            }
            busy |= !sent.is_empty() || !events.is_empty();
            for msg in sent {
                self.relay_from_agent(msg);
            }
            self.agent_events
                .extend(events.into_iter().map(|e| (now, e)));
            if !busy {
                return;
            }
        }
    }

    fn agent_saw(&self, f: impl Fn(&AgentPairingEvent) -> bool) -> Option<Duration> {
        self.agent_events
            .iter()
            .find(|(_, e)| f(e))
            .map(|(t, _)| *t)
    }

    fn viewer_saw(&self, f: impl Fn(&ViewerPairingEvent) -> bool) -> Option<Duration> {
        self.viewer_events
            .iter()
            .find(|(_, e)| f(e))
            .map(|(t, _)| *t)
    }

    fn agent_end(&self) -> Option<&PairingEnd> {
        self.agent_events.iter().find_map(|(_, e)| match e {
            AgentPairingEvent::Ended(why) => Some(why),
            _ => None,
        })
    }

    fn viewer_end(&self) -> Option<&PairingEnd> {
        self.viewer_events.iter().find_map(|(_, e)| match e {
            ViewerPairingEvent::Ended(why) => Some(why),
            _ => None,
        })
    }

    fn connected(&self) -> Option<(Duration, bool)> {
        self.agent_events.iter().find_map(|(t, e)| match e {
            AgentPairingEvent::Connected { answer, control } => {
                assert_eq!(answer, "v=0 answer");
                Some((*t, *control))
            }
            _ => None,
        })
    }
}

fn asked(e: &AgentPairingEvent) -> bool {
    matches!(e, AgentPairingEvent::AskUser { .. })
}

mod consent;

#[test]
fn an_unattended_call_asks_nobody_but_still_verifies_the_key() {
    let secret = [9u8; 16];
    let route = PairingRoute::Unattended {
        token: "t".into(),
        device: "dev-1".into(),
        grant: 3,
        secret,
    };
    let mut agent = agent_config(PairingSecret::Grant(3, secret), by_request(30));
    agent.unattended = true;
    let mut h = Harness::new(route.clone(), agent.clone(), Script::default());
    h.run(Duration::from_secs(60));
    assert!(h.agent_saw(asked).is_none());
    assert!(h.connected().is_some());
    assert!(
        h.viewer_saw(|e| matches!(e, ViewerPairingEvent::Code { .. }))
            .is_none(),
        "a call shows no code"
    );

    agent.secret = PairingSecret::Grant(3, [8u8; 16]);
    let mut h = Harness::new(route, agent, Script::default());
    h.run(Duration::from_secs(60));
    assert!(matches!(h.agent_end(), Some(PairingEnd::Unverified(_))));
    assert!(h.connected().is_none());
}

#[test]
fn an_altered_offer_or_answer_connects_nothing() {
    let tamper_offer = Script {
        tamper: |s| {
            if let PeerSignal::Offer { sdp, .. } = s {
                sdp.push_str("a=candidate:evil\r\n");
            }
        },
        ..Script::default()
    };
    let agent = agent_config(PairingSecret::Code(code(SECRET)), by_request(30));
    let mut h = Harness::new(code_route(), agent.clone(), tamper_offer);
    h.run(Duration::from_secs(60));
    assert!(h
        .viewer_saw(|e| matches!(e, ViewerPairingEvent::Offer { .. }))
        .is_none());
    assert!(h
        .viewer_saw(|e| matches!(e, ViewerPairingEvent::VerificationFailed { .. }))
        .is_some());
    assert!(h.connected().is_none());
    // The broker unpaired the agent, which tells its user why and waits for another code.
    assert!(h
        .agent_saw(|e| matches!(
            e,
            AgentPairingEvent::Unpaired {
                reason: JoinRefusal::VerificationFailed,
                ..
            }
        ))
        .is_some());
    assert!(matches!(h.agent_end(), Some(PairingEnd::Unverified(_))));

    let tamper_answer = Script {
        tamper: |s| {
            if let PeerSignal::Answer { sdp, .. } = s {
                sdp.push_str("a=candidate:evil\r\n");
            }
        },
        ..Script::default()
    };
    let mut h = Harness::new(code_route(), agent, tamper_answer);
    h.run(Duration::from_secs(60));
    assert!(
        matches!(h.agent_end(), Some(PairingEnd::Unverified(_))),
        "{:?}",
        h.agent_events
    );
    assert!(h.connected().is_none());
    assert!(
        matches!(h.viewer_end(), Some(PairingEnd::Unverified(_))),
        "{:?}",
        h.viewer_events
    );
}

#[test]
fn each_side_gives_up_on_a_silent_peer_at_its_deadline() {
    // Nobody joins: the code's lifetime (plus a second) bounds the viewer's wait.
    let script = Script {
        join_after: None,
        ..Script::default()
    };
    let agent = agent_config(PairingSecret::Code(code(SECRET)), by_request(30));
    let mut h = Harness::new(code_route(), agent.clone(), script);
    h.run(Duration::from_secs(3600));
    let ended = h
        .viewer_saw(|e| matches!(e, ViewerPairingEvent::Ended(_)))
        .unwrap();
    assert_eq!(ended, CODE_LIFETIME + Duration::from_secs(1));
    assert_eq!(
        h.viewer_end(),
        Some(&PairingEnd::TimedOut(
            "the code expired before anyone joined"
        ))
    );

    // An agent that never hears back from the viewer gives up after the timeout.
    let mut agent_alone = AgentPairing::new(agent, Duration::ZERO);
    assert!(matches!(
        agent_alone.poll_transmit(),
        Some(ClientMessage::Relay {
            signal: PeerSignal::Pake { .. }
        })
    ));
    assert_eq!(agent_alone.poll_timeout(), Some(TIMEOUT));
    agent_alone.handle_timeout(TIMEOUT - Duration::from_millis(1));
    assert_eq!(agent_alone.poll_event(), None);
    agent_alone.handle_timeout(TIMEOUT);
    assert!(matches!(
        agent_alone.poll_event(),
        Some(AgentPairingEvent::Ended(PairingEnd::Unproven))
    ));
    assert_eq!(agent_alone.poll_timeout(), None);
}

#[test]
fn a_viewer_gets_only_the_proof_deadline_to_prove_the_secret_and_full_steps_after() {
    let password = LanPassword::from_random(42);
    let agent = AgentPairingConfig {
        proof_timeout: Duration::from_secs(2),
        ..agent_config(PairingSecret::Lan(password.clone()), by_request(30))
    };
    // Silent after its hello: the attempt ends at the proof deadline, not the step timeout.
    let mut alone = AgentPairing::new(agent.clone(), Duration::ZERO);
    assert_eq!(alone.poll_timeout(), Some(Duration::from_secs(2)));
    alone.handle_timeout(Duration::from_secs(2));
    assert!(matches!(
        alone.poll_event(),
        Some(AgentPairingEvent::Ended(PairingEnd::Unproven))
    ));
    // A viewer that proves it at once connects, though its user answers after 2 s: the
    // steps after the proof have the whole step timeout.
    let route = PairingRoute::Lan {
        password,
        grant: None,
    };
    let script = Script {
        consent: Some((
            Duration::from_secs(5),
            ConsentAnswer::Allow { control: true },
        )),
        ..Script::default()
    };
    let mut h = Harness::new(route, agent, script);
    h.run(Duration::from_secs(60));
    assert!(h.connected().is_some(), "{:?}", h.agent_events);
}

#[test]
fn a_target_cannot_make_the_viewer_wait_for_ever() {
    let mut viewer = ViewerPairing::new(viewer_config(code_route()), Duration::ZERO);
    viewer.handle_broker(
        Duration::ZERO,
        BrokerMessage::SessionCreated {
            session: session(),
            expires_at: UnixMillis(1_000_000).plus(CODE_LIFETIME),
            resume: None,
        },
    );
    let joined = Duration::from_secs(5);
    viewer.handle_broker(joined, BrokerMessage::PeerJoined {});
    viewer.handle_broker(
        joined,
        BrokerMessage::Relay {
            signal: PeerSignal::AwaitingConsent {
                for_ms: u64::MAX,
                starts_on_its_own: false,
                by_computer: false,
            },
        },
    );
    assert_eq!(
        viewer.poll_timeout(),
        Some(joined + TIMEOUT + Duration::from_millis(MAX_CONSENT_WAIT_MS))
    );
}

#[test]
fn a_lost_broker_can_be_resumed_only_while_the_code_waits() {
    let mut viewer = ViewerPairing::new(viewer_config(code_route()), Duration::ZERO);
    assert!(viewer.handle_broker_lost().is_none(), "no code yet");
    viewer.handle_broker(
        Duration::ZERO,
        BrokerMessage::SessionCreated {
            session: session(),
            expires_at: UnixMillis(1_000_000).plus(CODE_LIFETIME),
            resume: Some("abcd".into()),
        },
    );
    let ticket = viewer.handle_broker_lost().expect("the code waits");
    assert_eq!(ticket.code, code(SECRET));
    assert_eq!(ticket.token, "abcd");
    viewer.handle_broker(Duration::from_secs(1), BrokerMessage::PeerJoined {});
    assert!(
        viewer.handle_broker_lost().is_none(),
        "a joined target cannot be resumed"
    );
}

#[test]
fn a_lan_viewer_says_which_secret_it_holds_and_a_wrong_password_ends_the_attempt() {
    let password = LanPassword::from_random(42);
    let route = PairingRoute::Lan {
        password: password.clone(),
        grant: None,
    };
    let agent = agent_config(PairingSecret::Lan(password), by_request(30));
    let mut h = Harness::new(route, agent, Script::default());
    h.run(Duration::from_secs(60));
    assert!(
        h.connected().is_some(),
        "{:?} {:?}",
        h.agent_events,
        h.viewer_events
    );

    let route = PairingRoute::Lan {
        password: LanPassword::from_random(43),
        grant: None,
    };
    let mut viewer = ViewerPairing::new(viewer_config(route), Duration::ZERO);
    assert_eq!(
        viewer.poll_transmit(),
        None,
        "a LAN target is greeted by the connection"
    );
    viewer.handle_broker(Duration::ZERO, BrokerMessage::PeerJoined {});
    assert!(matches!(
        viewer.poll_transmit(),
        Some(ClientMessage::Relay {
            signal: PeerSignal::LanHello { grant: None }
        })
    ));
    let agent = agent_config(
        PairingSecret::Lan(LanPassword::from_random(42)),
        by_request(30),
    );
    let h2 = Harness::new(
        PairingRoute::Lan {
            password: LanPassword::from_random(43),
            grant: None,
        },
        agent,
        Script::default(),
    );
    let mut h2 = h2;
    h2.run(Duration::from_secs(60));
    assert!(
        matches!(h2.agent_end(), Some(PairingEnd::Unverified(_))),
        "{:?}",
        h2.agent_events
    );
    assert!(h2.agent_saw(asked).is_none());
}
