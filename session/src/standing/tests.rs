//! Both standing cores against a stand-in broker, in virtual time: a day of lifetime, every
//! back-off and every ending in microseconds of test time.

use std::time::Duration;

use deskwire_signal::adhoc::{Activation, AdhocId, Capabilities, DeviceId, InvitationToken};
use deskwire_signal::device::DeviceKey;
use deskwire_signal::{BrokerMessage, ClientMessage, PeerSignal, SessionCode, UnixMillis};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);
const MAX_RETRY: Duration = Duration::from_millis(1000);
const START: UnixMillis = UnixMillis(1_700_000_000_000);

/// Both clocks, running together unless a test steps the wall clock.
#[derive(Debug, Clone, Copy)]
struct Clock(Now);

impl Clock {
    fn new() -> Self {
        Self(Now {
            mono: Duration::ZERO,
            wall: START,
        })
    }

    fn advance(&mut self, d: Duration) -> Now {
        self.0.mono += d;
        self.0.wall = self.0.wall.plus(d);
        self.0
    }

    /// Move both clocks to the monotonic instant `at` (not backwards).
    fn advance_to(&mut self, at: Duration) -> Now {
        let d = at.saturating_sub(self.0.mono);
        self.advance(d)
    }

    fn now(&self) -> Now {
        self.0
    }
}

fn activate() -> AdhocStart {
    AdhocStart::Activate {
        token: InvitationToken::from_random([0xab; 16]),
        code: "1234-5678".into(),
        device: "dev-test".into(),
        permanent_agent: false,
    }
}

fn activation(activated_at: UnixMillis) -> Activation {
    Activation {
        session: AdhocId(7),
        device_id: DeviceId::new("dev-test").unwrap(),
        activated_at,
        expires_at: activated_at.plus(DAY),
        capabilities: Capabilities::REMOTE_CONTROL,
    }
}

fn activated(at: UnixMillis, host_token: Option<&str>) -> BrokerMessage {
    BrokerMessage::AdhocActivated {
        activation: activation(at),
        host_token: host_token.map(str::to_owned),
    }
}

fn call() -> BrokerMessage {
    BrokerMessage::AdhocCall {
        session: SessionCode::from_number(123_456).unwrap(),
        technician: "alice".into(),
    }
}

fn events(core: &mut AdhocStanding) -> Vec<AdhocStandingEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn transmits(core: &mut AdhocStanding) -> Vec<ClientMessage> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

fn ended_reason(events: &[AdhocStandingEvent]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        AdhocStandingEvent::Ended { reason } => Some(reason.as_str()),
        _ => None,
    })
}

/// A temporary host whose activation the broker accepted, online, events drained.
fn active_host(clock: &mut Clock) -> AdhocStanding {
    let mut core = AdhocStanding::new(activate(), MAX_RETRY, clock.now());
    assert_eq!(events(&mut core), [AdhocStandingEvent::Connect]);
    core.handle_connected(clock.now());
    assert!(matches!(
        transmits(&mut core)[..],
        [ClientMessage::ActivateAdhoc { .. }]
    ));
    core.handle_broker(clock.now(), activated(clock.now().wall, Some("tok-1")));
    assert!(matches!(
        events(&mut core)[..],
        [AdhocStandingEvent::Activated { .. }]
    ));
    core
}

/// Sleep until each deadline the core asks for, as the driver does, until an event comes.
fn run_until_event(core: &mut AdhocStanding, clock: &mut Clock) -> Vec<AdhocStandingEvent> {
    loop {
        let at = core.poll_timeout().expect("a deadline while waiting");
        assert!(at >= clock.now().mono, "a deadline in the past");
        core.handle_timeout(clock.advance_to(at));
        let evs = events(core);
        if !evs.is_empty() {
            return evs;
        }
    }
}

#[test]
fn the_lifetime_ends_exactly_at_the_expiry_not_a_recheck_later() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    let expires_at = core.expires_at().unwrap();
    assert_eq!(expires_at, START.plus(DAY));
    let evs = run_until_event(&mut core, &mut clock);
    assert_eq!(
        clock.now().wall,
        expires_at,
        "ended at {}",
        clock.now().wall
    );
    assert_eq!(
        ended_reason(&evs),
        Some("the ad-hoc session reached the end of its lifetime")
    );
    assert!(core.is_done());
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn the_lifetime_is_still_live_a_millisecond_before_the_expiry() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_timeout(clock.advance(DAY - Duration::from_millis(1)));
    assert!(events(&mut core).is_empty());
    core.handle_broker(clock.now(), call());
    assert!(matches!(
        events(&mut core)[..],
        [AdhocStandingEvent::Call { .. }]
    ));
    // The last wait is cut to the expiry itself.
    assert_eq!(
        core.poll_timeout(),
        Some(clock.now().mono + Duration::from_millis(1))
    );
}

#[test]
fn a_wall_clock_step_is_noticed_within_the_recheck_even_offline() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_lost(clock.now(), "the network dropped".into());
    assert!(matches!(
        events(&mut core)[..],
        [AdhocStandingEvent::Offline { .. }]
    ));
    // A day passes on the wall clock only (a suspended laptop, a test's virtual clock).
    clock.0.wall = clock.0.wall.plus(DAY);
    let wake = core.poll_timeout().unwrap();
    assert!(wake <= clock.now().mono + WALL_CLOCK_RECHECK, "{wake:?}");
    core.handle_timeout(clock.advance_to(wake));
    assert!(ended_reason(&events(&mut core)).is_some_and(|r| r.contains("lifetime")));
}

#[test]
fn before_activation_nothing_expires_and_only_the_retry_is_waited_for() {
    let clock = Clock::new();
    let mut core = AdhocStanding::new(activate(), MAX_RETRY, clock.now());
    assert_eq!(core.poll_timeout(), None, "connecting: no deadline");
    events(&mut core);
    core.handle_lost(clock.now(), "refused".into());
    assert_eq!(core.poll_timeout(), Some(FIRST_RETRY));
    assert_eq!(core.expires_at(), None);
}

#[test]
fn the_back_off_doubles_and_caps_at_the_maximum() {
    let mut clock = Clock::new();
    let mut core = AdhocStanding::new(activate(), MAX_RETRY, clock.now());
    let mut waits = Vec::new();
    for _ in 0..6 {
        assert_eq!(events(&mut core).last(), Some(&AdhocStandingEvent::Connect));
        core.handle_lost(clock.now(), "connection refused".into());
        let retry = match &events(&mut core)[..] {
            [AdhocStandingEvent::Offline { retry, .. }] => *retry,
            other => panic!("expected offline, got {other:?}"),
        };
        assert_eq!(core.poll_timeout(), Some(clock.now().mono + retry));
        // Not a moment early.
        core.handle_timeout(clock.advance(retry - Duration::from_millis(1)));
        assert!(events(&mut core).is_empty());
        core.handle_timeout(clock.advance(Duration::from_millis(1)));
        waits.push(retry.as_millis());
    }
    assert_eq!(waits, [200, 400, 800, 1000, 1000, 1000]);
}

#[test]
fn the_back_off_rule_keeps_the_first_wait_under_a_smaller_maximum() {
    let mut b = Backoff::new(Duration::from_millis(100));
    assert_eq!(
        [b.take(), b.take(), b.take()].map(|d| d.as_millis()),
        [200, 100, 100]
    );
    b.reset();
    assert_eq!(b.take(), FIRST_RETRY);
}

#[test]
fn the_activation_is_sent_again_on_each_connection_until_the_broker_answers() {
    let mut clock = Clock::new();
    let mut core = AdhocStanding::new(activate(), MAX_RETRY, clock.now());
    for _ in 0..3 {
        assert_eq!(events(&mut core).last(), Some(&AdhocStandingEvent::Connect));
        core.handle_connected(clock.now());
        assert!(matches!(
            transmits(&mut core)[..],
            [ClientMessage::ActivateAdhoc { ref code, .. }] if code == "1234-5678"
        ));
        core.handle_lost(clock.now(), "dropped".into());
        let wake = core.poll_timeout().unwrap();
        core.handle_timeout(clock.advance_to(wake));
    }
}

#[test]
fn the_activation_token_is_saved_once_and_later_connections_reattach_with_it() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    for round in 0..3 {
        core.handle_lost(clock.now(), "cut".into());
        assert!(matches!(
            events(&mut core)[..],
            [AdhocStandingEvent::Offline { .. }]
        ));
        let evs = run_until_event(&mut core, &mut clock);
        assert_eq!(evs.last(), Some(&AdhocStandingEvent::Connect));
        core.handle_connected(clock.now());
        assert_eq!(
            transmits(&mut core),
            [ClientMessage::ReattachAdhoc {
                session: AdhocId(7),
                host_token: "tok-1".into()
            }]
        );
        // The broker answers a re-attach without a token; one with another token is not
        // a second activation either.
        let token = (round == 1).then_some("tok-2");
        core.handle_broker(clock.now(), activated(START, token));
        assert_eq!(events(&mut core), [AdhocStandingEvent::Reattached]);
    }
}

#[test]
fn a_resumed_session_reattaches_first_and_keeps_its_expiry() {
    let mut clock = Clock::new();
    let start = AdhocStart::Reattach {
        session: AdhocId(9),
        host_token: "tok-9".into(),
        expires_at: START.plus(Duration::from_secs(5)),
    };
    assert!(!format!("{start:?}").contains("tok-9"), "the token in logs");
    let mut core = AdhocStanding::new(start, MAX_RETRY, clock.now());
    events(&mut core);
    core.handle_connected(clock.now());
    assert!(matches!(
        &transmits(&mut core)[..],
        [ClientMessage::ReattachAdhoc { session: AdhocId(9), host_token }] if host_token == "tok-9"
    ));
    core.handle_broker(clock.now(), activated(START, None));
    assert_eq!(events(&mut core), [AdhocStandingEvent::Reattached]);
    assert!(!format!("{core:?}").contains("tok-9"), "the token in logs");
    let evs = run_until_event(&mut core, &mut clock);
    assert!(ended_reason(&evs).is_some_and(|r| r.contains("lifetime")));
    assert_eq!(clock.now().mono, Duration::from_secs(5));
}

#[test]
fn a_broker_error_before_activation_is_a_refusal() {
    let mut clock = Clock::new();
    let mut core = AdhocStanding::new(activate(), MAX_RETRY, clock.now());
    events(&mut core);
    core.handle_connected(clock.now());
    transmits(&mut core);
    core.handle_broker(
        clock.advance(Duration::from_millis(5)),
        BrokerMessage::Error {
            message: "wrong security code".into(),
        },
    );
    assert_eq!(
        events(&mut core),
        [AdhocStandingEvent::Refused {
            reason: "wrong security code".into()
        }]
    );
    assert!(core.is_done());
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_broker_error_after_activation_ends_the_session() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_broker(
        clock.now(),
        BrokerMessage::Error {
            message: "the session was ended".into(),
        },
    );
    assert_eq!(
        events(&mut core),
        [AdhocStandingEvent::Ended {
            reason: "the session was ended".into()
        }]
    );
    assert!(core.is_done());
}

#[test]
fn the_brokers_end_ends_the_session_and_nothing_follows() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_broker(
        clock.now(),
        BrokerMessage::AdhocEnded {
            session: AdhocId(7),
            reason: "alice ended the session".into(),
        },
    );
    assert_eq!(
        ended_reason(&events(&mut core)),
        Some("alice ended the session")
    );
    // Whatever happens next, the session stays over.
    core.handle_broker(clock.now(), call());
    core.handle_lost(clock.now(), "closed".into());
    core.handle_end_now(clock.now());
    core.handle_timeout(clock.advance(DAY * 2));
    assert!(events(&mut core).is_empty());
    assert!(transmits(&mut core).is_empty());
}

#[test]
fn end_now_while_offline_ends_at_once() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_lost(clock.now(), "dropped".into());
    events(&mut core);
    core.handle_end_now(clock.advance(Duration::from_millis(50)));
    assert_eq!(
        ended_reason(&events(&mut core)),
        Some("the user ended the session (offline)")
    );
    assert!(transmits(&mut core).is_empty(), "nobody to tell");
    assert!(core.is_done());
}

#[test]
fn end_now_online_tells_the_broker_and_ends_on_its_answer() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_end_now(clock.now());
    assert_eq!(transmits(&mut core), [ClientMessage::LeaveAdhoc {}]);
    assert!(events(&mut core).is_empty(), "the broker is given a moment");
    core.handle_broker(
        clock.advance(Duration::from_millis(30)),
        BrokerMessage::AdhocEnded {
            session: AdhocId(7),
            reason: "the user left".into(),
        },
    );
    assert_eq!(
        ended_reason(&events(&mut core)),
        Some("the user ended the session")
    );
}

#[test]
fn end_now_online_ends_after_two_seconds_without_an_answer() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_end_now(clock.now());
    transmits(&mut core);
    assert_eq!(
        core.poll_timeout(),
        Some(clock.now().mono + Duration::from_secs(2))
    );
    let evs = run_until_event(&mut core, &mut clock);
    assert_eq!(clock.now().mono, Duration::from_secs(2));
    assert_eq!(ended_reason(&evs), Some("the user ended the session"));
}

#[test]
fn end_now_online_ends_at_once_when_the_connection_drops() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_end_now(clock.now());
    core.handle_lost(clock.now(), "the send failed".into());
    assert_eq!(
        ended_reason(&events(&mut core)),
        Some("the user ended the session")
    );
}

#[test]
fn shutdown_keeps_the_session_but_completes_an_end_now_under_way() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_shutdown();
    assert!(core.is_done());
    assert!(
        events(&mut core).is_empty(),
        "the folder stays for a restart"
    );

    let mut core = active_host(&mut clock);
    core.handle_end_now(clock.now());
    core.handle_shutdown();
    assert_eq!(
        ended_reason(&events(&mut core)),
        Some("the user ended the session")
    );
}

#[test]
fn a_drop_after_the_expiry_ends_instead_of_going_offline() {
    let mut clock = Clock::new();
    let mut core = active_host(&mut clock);
    core.handle_lost(clock.advance(DAY), "dropped".into());
    let evs = events(&mut core);
    assert!(ended_reason(&evs).is_some_and(|r| r.contains("lifetime")));
    assert_eq!(evs.len(), 1, "{evs:?}");
}

#[test]
fn hostile_or_unexpected_broker_messages_are_ignored() {
    let junk = || {
        vec![
            BrokerMessage::Joined { policy: None },
            BrokerMessage::PeerJoined {},
            BrokerMessage::PeerLeft {},
            BrokerMessage::StandingBy {},
            BrokerMessage::GrantReported {},
            BrokerMessage::Relay {
                signal: PeerSignal::Bye {
                    reason: "x".repeat(10_000),
                },
            },
            BrokerMessage::UnattendedCall {
                session: SessionCode::from_number(1).unwrap(),
                grant: u32::MAX,
                technician: "mallory".into(),
            },
        ]
    };
    let mut clock = Clock::new();
    // Before activation an activation without a token is junk too: nothing to re-attach with.
    let mut core = AdhocStanding::new(activate(), MAX_RETRY, clock.now());
    events(&mut core);
    core.handle_connected(clock.now());
    transmits(&mut core);
    for msg in junk().into_iter().chain([activated(START, None)]) {
        core.handle_broker(clock.now(), msg);
    }
    assert!(events(&mut core).is_empty());
    assert!(transmits(&mut core).is_empty());
    assert!(!core.is_done());

    let mut core = active_host(&mut clock);
    for msg in junk() {
        core.handle_broker(clock.now(), msg);
    }
    assert!(events(&mut core).is_empty());
    // Without a connection, even a well-formed call is not believed.
    core.handle_lost(clock.now(), "dropped".into());
    events(&mut core);
    core.handle_broker(clock.now(), call());
    assert!(events(&mut core).is_empty());
}

#[test]
fn an_activation_already_past_its_expiry_ends_at_the_next_wake() {
    let clock = Clock::new();
    let mut core = AdhocStanding::new(activate(), MAX_RETRY, clock.now());
    events(&mut core);
    core.handle_connected(clock.now());
    core.handle_broker(
        clock.now(),
        // Activated a day and a millisecond ago by this host's clock.
        activated(UnixMillis(START.0 - 86_400_001), Some("t")),
    );
    assert!(matches!(
        events(&mut core)[..],
        [AdhocStandingEvent::Activated { .. }]
    ));
    assert_eq!(core.poll_timeout(), Some(clock.now().mono));
    core.handle_timeout(clock.now());
    assert!(ended_reason(&events(&mut core)).is_some_and(|r| r.contains("lifetime")));
}

// The unattended standby.

fn key() -> DeviceKey {
    DeviceKey::from_seed([3; 32])
}

fn standby_events(core: &mut UnattendedStanding) -> Vec<UnattendedStandingEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn unattended_call() -> BrokerMessage {
    BrokerMessage::UnattendedCall {
        session: SessionCode::from_number(654_321).unwrap(),
        grant: 4,
        technician: "bob".into(),
    }
}

/// Lose the connection and sleep through the wait; returns the wait.
fn lose(core: &mut UnattendedStanding, clock: &mut Clock, why: &str) -> Duration {
    core.handle_lost(clock.now(), why.into());
    let retry = match &standby_events(core)[..] {
        [UnattendedStandingEvent::Offline { retry, .. }] => *retry,
        other => panic!("expected offline, got {other:?}"),
    };
    assert_eq!(core.poll_timeout(), Some(clock.now().mono + retry));
    core.handle_timeout(clock.advance(retry));
    assert_eq!(standby_events(core), [UnattendedStandingEvent::Connect]);
    retry
}

#[test]
fn each_standby_connection_proves_the_device_key_at_the_wall_clock() {
    let mut clock = Clock::new();
    let mut core = UnattendedStanding::new(key(), MAX_RETRY);
    assert_eq!(
        standby_events(&mut core),
        [UnattendedStandingEvent::Connect]
    );
    for _ in 0..2 {
        core.handle_connected(clock.advance(Duration::from_secs(3)));
        let at = clock.now().wall;
        match core.poll_transmit() {
            Some(ClientMessage::Standby { device, at: signed }) => {
                assert_eq!(signed, at);
                assert_eq!(device.id, key().id());
                device.verify_standby(at).expect("a valid proof");
            }
            other => panic!("expected the standby proof, got {other:?}"),
        }
        lose(&mut core, &mut clock, "dropped");
    }
}

#[test]
fn an_accepted_standby_reports_online_and_calls() {
    let clock = Clock::new();
    let mut core = UnattendedStanding::new(key(), MAX_RETRY);
    standby_events(&mut core);
    core.handle_connected(clock.now());
    core.poll_transmit();
    core.handle_broker(clock.now(), BrokerMessage::StandingBy {});
    core.handle_broker(clock.now(), unattended_call());
    assert_eq!(
        standby_events(&mut core),
        [
            UnattendedStandingEvent::Online,
            UnattendedStandingEvent::Call {
                session: SessionCode::from_number(654_321).unwrap(),
                grant: 4,
                technician: "bob".into(),
            }
        ]
    );
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_refused_standby_goes_offline_and_tries_again() {
    let mut clock = Clock::new();
    let mut core = UnattendedStanding::new(key(), MAX_RETRY);
    standby_events(&mut core);
    core.handle_connected(clock.now());
    core.poll_transmit();
    core.handle_broker(
        clock.now(),
        BrokerMessage::Error {
            message: "the proof is stale".into(),
        },
    );
    assert_eq!(
        standby_events(&mut core),
        [UnattendedStandingEvent::Offline {
            error: "the proof is stale".into(),
            retry: FIRST_RETRY
        }]
    );
    core.handle_timeout(clock.advance(FIRST_RETRY));
    assert_eq!(
        standby_events(&mut core),
        [UnattendedStandingEvent::Connect]
    );
}

#[test]
fn the_standby_back_off_doubles_caps_and_starts_over_after_standing_by() {
    let mut clock = Clock::new();
    let mut core = UnattendedStanding::new(key(), MAX_RETRY);
    standby_events(&mut core);
    // The broker is unreachable: the waits grow to the cap.
    let waits: Vec<u128> = (0..5)
        .map(|_| lose(&mut core, &mut clock, "refused").as_millis())
        .collect();
    assert_eq!(waits, [200, 400, 800, 1000, 1000]);
    // A connection the broker accepted, then lost: the first wait again.
    core.handle_connected(clock.now());
    core.handle_broker(clock.now(), BrokerMessage::StandingBy {});
    standby_events(&mut core);
    assert_eq!(lose(&mut core, &mut clock, "dropped"), FIRST_RETRY);
    // Connected but never accepted does not count.
    core.handle_connected(clock.now());
    assert_eq!(
        lose(&mut core, &mut clock, "dropped"),
        Duration::from_millis(400)
    );
}

#[test]
fn a_standby_ignores_hostile_messages_and_stops_on_shutdown() {
    let mut clock = Clock::new();
    let mut core = UnattendedStanding::new(key(), MAX_RETRY);
    standby_events(&mut core);
    // Not connected: nothing is believed.
    core.handle_broker(clock.now(), unattended_call());
    core.handle_connected(clock.now());
    core.poll_transmit();
    for msg in [
        call(),
        activated(START, Some("t")),
        BrokerMessage::AdhocEnded {
            session: AdhocId(1),
            reason: "x".into(),
        },
        BrokerMessage::PeerLeft {},
    ] {
        core.handle_broker(clock.now(), msg);
    }
    assert!(standby_events(&mut core).is_empty());
    core.handle_shutdown();
    assert!(core.is_done());
    core.handle_lost(clock.now(), "closed".into());
    core.handle_timeout(clock.advance(DAY));
    assert!(standby_events(&mut core).is_empty());
    assert_eq!(core.poll_timeout(), None);
}
