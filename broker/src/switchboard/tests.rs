//! The switchboard's rules, driven message by message in virtual time.
use std::time::Duration;

use deskwire_signal::encode;
use rand::SeedableRng;

use super::*;
use deskwire_signal::JoinRefusal;

/// Where the test connections come from.
const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

const T0: UnixMillis = UnixMillis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(600);

fn board() -> Switchboard {
    let limits = CodeLimits {
        ttl: TTL,
        retention: Duration::from_secs(3600),
        max_pending: 8,
        max_tombstones: 64,
    };
    Switchboard::new(
        limits,
        JoinLimits::default(),
        Requirements::default(),
        StdRng::seed_from_u64(3),
    )
}

/// What the server must do, without the audit records (checked on their own).
fn drain(b: &mut Switchboard) -> Vec<Output> {
    std::iter::from_fn(|| b.poll_output())
        .filter(|o| !matches!(o, Output::Audit(_)))
        .collect()
}

/// Only the audit records, as (event, session, source).
fn audits(b: &mut Switchboard) -> Vec<(String, Option<String>, Option<String>)> {
    std::iter::from_fn(|| b.poll_output())
        .filter_map(|o| match o {
            Output::Audit(r) => Some((r.event.to_string(), r.session, r.source)),
            _ => None,
        })
        .collect()
}

fn say(b: &mut Switchboard, conn: ConnId, msg: &ClientMessage, now: UnixMillis) -> Vec<Output> {
    b.handle_text(conn, &encode(msg), now);
    drain(b)
}

fn send(to: ConnId, msg: BrokerMessage) -> Output {
    Output::Send { to, msg }
}

/// A controller with a session; returns its connection and code.
fn controller(b: &mut Switchboard) -> (ConnId, SessionCode) {
    let c = b.handle_open(SRC);
    match say(
        b,
        c,
        &ClientMessage::CreateSession {
            token: None,
            resumable: false,
        },
        T0,
    )
    .as_slice()
    {
        [Output::Send {
            to,
            msg:
                BrokerMessage::SessionCreated {
                    session: code,
                    expires_at,
                    resume: None,
                },
        }] => {
            assert_eq!(*to, c);
            assert_eq!(*expires_at, T0.plus(TTL));
            (c, *code)
        }
        other => panic!("expected session_created, got {other:?}"),
    }
}

fn join(code: impl ToString) -> ClientMessage {
    ClientMessage::Join {
        code: code.to_string(),
        device: None,
    }
}

fn offer() -> ClientMessage {
    ClientMessage::Relay {
        signal: PeerSignal::Offer {
            sdp: "v=0 offer".into(),
            mac: "ab".into(),
        },
    }
}

fn is_error_then_close(out: &[Output], conn: ConnId) -> bool {
    matches!(out, [Output::Send { to, msg: BrokerMessage::Error { .. } }, Output::Close { conn: c }]
        if *to == conn && *c == conn)
}

#[test]
fn a_target_with_the_code_is_paired_and_signals_flow_both_ways() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    assert_eq!(
        say(&mut b, t, &join(code), T0),
        [
            send(t, BrokerMessage::Joined { policy: None }),
            send(c, BrokerMessage::PeerJoined {})
        ]
    );
    let sent = PeerSignal::Offer {
        sdp: "v=0 offer".into(),
        mac: "ab".into(),
    };
    assert_eq!(
        say(&mut b, t, &offer(), T0),
        [send(c, BrokerMessage::Relay { signal: sent })]
    );
    let answer = PeerSignal::Answer {
        sdp: "v=0 answer".into(),
        mac: "cd".into(),
    };
    let msg = ClientMessage::Relay {
        signal: answer.clone(),
    };
    assert_eq!(
        say(&mut b, c, &msg, T0),
        [send(t, BrokerMessage::Relay { signal: answer })]
    );
}

#[test]
fn a_refused_join_keeps_the_socket_so_the_user_can_try_again() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    let wrong = (code.number() + 1) % SessionCode::SPACE;
    let out = say(
        &mut b,
        t,
        &join(SessionCode::from_number(wrong).unwrap()),
        T0,
    );
    assert_eq!(
        out,
        [send(
            t,
            BrokerMessage::JoinRefused {
                reason: JoinRefusal::WrongCode,
                message: JoinRefusal::WrongCode.message().into()
            }
        )]
    );
    let out = say(&mut b, t, &join("12 34"), T0);
    assert!(matches!(
        out.as_slice(),
        [Output::Send {
            msg: BrokerMessage::JoinRefused {
                reason: JoinRefusal::Malformed,
                ..
            },
            ..
        }]
    ));
    assert_eq!(
        say(&mut b, t, &join(code), T0),
        [
            send(t, BrokerMessage::Joined { policy: None }),
            send(c, BrokerMessage::PeerJoined {})
        ]
    );
}

#[test]
fn expired_and_reused_codes_are_refused_with_their_reason() {
    let mut b = board();
    let (_, code) = controller(&mut b);
    let late = b.handle_open(SRC);
    let out = say(&mut b, late, &join(code), T0.plus(TTL));
    assert!(matches!(
        out.as_slice(),
        [Output::Send {
            msg: BrokerMessage::JoinRefused {
                reason: JoinRefusal::Expired,
                ..
            },
            ..
        }]
    ));

    let (_, code) = controller(&mut b);
    let first = b.handle_open(SRC);
    let second = b.handle_open(SRC);
    assert_eq!(say(&mut b, first, &join(code), T0).len(), 2);
    let out = say(&mut b, second, &join(code), T0);
    assert!(matches!(
        out.as_slice(),
        [Output::Send { to, msg: BrokerMessage::JoinRefused { reason: JoinRefusal::AlreadyUsed, .. } }]
            if *to == second
    ));
}

#[test]
fn a_controller_leaving_before_a_join_cancels_its_code() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    b.handle_close(c);
    assert!(drain(&mut b).is_empty());
    assert_eq!(b.sessions(), 0);
    let t = b.handle_open(SRC);
    let out = say(&mut b, t, &join(code), T0);
    assert!(matches!(
        out.as_slice(),
        [Output::Send {
            msg: BrokerMessage::JoinRefused {
                reason: JoinRefusal::Cancelled,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn either_side_leaving_tells_the_other_and_late_relays_are_dropped() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    say(&mut b, t, &join(code), T0);
    b.handle_close(c);
    assert_eq!(drain(&mut b), [send(t, BrokerMessage::PeerLeft {})]);
    // The target's offer may cross the controller's departure: no error, no panic.
    assert!(say(&mut b, t, &offer(), T0).is_empty());
    b.handle_close(t);
    assert!(drain(&mut b).is_empty());
    assert_eq!((b.sessions(), b.connections()), (0, 0));

    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    say(&mut b, t, &join(code), T0);
    b.handle_close(t);
    assert_eq!(drain(&mut b), [send(c, BrokerMessage::PeerLeft {})]);
}

#[test]
fn protocol_violations_get_an_error_and_a_close() {
    let mut b = board();
    // Relay before pairing, from a fresh socket and from a waiting controller.
    let fresh = b.handle_open(SRC);
    assert!(is_error_then_close(
        &say(&mut b, fresh, &offer(), T0),
        fresh
    ));
    let (c, code) = controller(&mut b);
    assert!(is_error_then_close(&say(&mut b, c, &offer(), T0), c));
    // That controller is gone, so its code is cancelled.
    let t = b.handle_open(SRC);
    let out = say(&mut b, t, &join(code), T0);
    assert!(matches!(
        out.as_slice(),
        [Output::Send {
            msg: BrokerMessage::JoinRefused {
                reason: JoinRefusal::Cancelled,
                ..
            },
            ..
        }]
    ));

    // A second create_session, and a join after pairing.
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    say(&mut b, t, &join(code), T0);
    let out = say(&mut b, t, &join(code), T0);
    assert!(matches!(out.as_slice(),
        [Output::Send { to, msg: BrokerMessage::Error { .. } }, Output::Send { to: peer, msg: BrokerMessage::PeerLeft {} }, Output::Close { conn }]
        if *to == t && *peer == c && *conn == t));
    let out = say(
        &mut b,
        c,
        &ClientMessage::CreateSession {
            token: None,
            resumable: false,
        },
        T0,
    );
    assert!(is_error_then_close(&out, c));
    assert_eq!(
        b.connections(),
        1,
        "only the refused target (no session) is left"
    );
}

#[test]
fn garbage_binary_and_other_versions_close_only_the_sender() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    say(&mut b, t, &join(code), T0);

    let long_garbage = format!("{{\"v\":1,\"type\":\"{}\"}}", "x".repeat(5000));
    for text in [
        "not json",
        "{\"v\":2,\"type\":\"create_session\"}",
        &long_garbage,
    ] {
        let x = b.handle_open(SRC);
        b.handle_text(x, text, T0);
        let out = drain(&mut b);
        assert!(is_error_then_close(&out, x), "{text:?}: {out:?}");
        let Output::Send {
            msg: BrokerMessage::Error { message },
            ..
        } = &out[0]
        else {
            unreachable!()
        };
        // The peer's decoder must accept the message, however long the input was.
        assert!(
            deskwire_signal::decode_broker(&encode(&BrokerMessage::Error {
                message: message.clone()
            }))
            .is_ok()
        );
    }
    let x = b.handle_open(SRC);
    b.handle_binary(x);
    assert!(is_error_then_close(&drain(&mut b), x));
    // Input from a closed connection is ignored.
    b.handle_text(x, "still here", T0);
    b.handle_binary(x);
    assert!(drain(&mut b).is_empty());

    // The paired session was not disturbed.
    let out = say(&mut b, t, &offer(), T0);
    assert!(
        matches!(out.as_slice(), [Output::Send { to, msg: BrokerMessage::Relay { .. } }] if *to == c)
    );
}

#[test]
fn the_pending_code_cap_refuses_more_sessions_with_an_error() {
    let mut b = board();
    for _ in 0..8 {
        controller(&mut b);
    }
    let c = b.handle_open(SRC);
    let out = say(
        &mut b,
        c,
        &ClientMessage::CreateSession {
            token: None,
            resumable: false,
        },
        T0,
    );
    assert!(is_error_then_close(&out, c));
    let Output::Send {
        msg: BrokerMessage::Error { message },
        ..
    } = &out[0]
    else {
        unreachable!()
    };
    assert!(message.contains("8 connection codes"), "{message}");
}

#[test]
fn a_failed_verification_unpairs_the_target_which_may_join_again() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    say(&mut b, t, &join(code), T0);
    let failed = ClientMessage::VerificationFailed {};
    let reason = JoinRefusal::VerificationFailed;
    assert_eq!(
        say(&mut b, c, &failed, T0),
        [
            send(
                t,
                BrokerMessage::JoinRefused {
                    reason,
                    message: reason.message().into()
                }
            ),
            send(c, BrokerMessage::AttemptFailed { failures: 1 }),
        ]
    );
    // The other side reporting the same attempt does not count twice.
    assert!(say(&mut b, c, &failed, T0).is_empty());
    // A retry must wait a second (doubling with each failure); an early one is refused
    // without using up the code.
    let wait = JoinRefusal::TooManyAttempts;
    assert_eq!(
        say(&mut b, t, &join(code), T0),
        [send(
            t,
            BrokerMessage::JoinRefused {
                reason: wait,
                message: wait.message().into()
            }
        )]
    );
    let later = T0.plus(Duration::from_secs(1));
    assert_eq!(
        say(&mut b, t, &join(code), later),
        [
            send(t, BrokerMessage::Joined { policy: None }),
            send(c, BrokerMessage::PeerJoined {})
        ]
    );
}

#[test]
fn the_third_failed_verification_burns_the_code() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    // Far enough apart that the doubling delay never refuses a try.
    let at = |i: u64| T0.plus(Duration::from_secs(10 * i));
    for i in 0..u64::from(MAX_FAILED_VERIFICATIONS) - 1 {
        say(&mut b, t, &join(code), at(i));
        say(&mut b, t, &ClientMessage::VerificationFailed {}, at(i));
    }
    let last = at(u64::from(MAX_FAILED_VERIFICATIONS));
    say(&mut b, t, &join(code), last);
    let out = say(&mut b, t, &ClientMessage::VerificationFailed {}, last);
    let burned = JoinRefusal::Burned;
    assert_eq!(
        out[0],
        send(
            t,
            BrokerMessage::JoinRefused {
                reason: burned,
                message: burned.message().into()
            }
        )
    );
    assert!(is_error_then_close(&out[1..], c), "{out:?}");
    // Even a fresh connection with the right session code is refused now.
    let t2 = b.handle_open(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 99)));
    assert_eq!(
        say(&mut b, t2, &join(code), last),
        [send(
            t2,
            BrokerMessage::JoinRefused {
                reason: burned,
                message: burned.message().into()
            }
        )]
    );
}

#[test]
fn every_attempt_and_outcome_is_audited_with_its_source_and_code() {
    let mut b = board();
    let c = b.handle_open(SRC);
    b.handle_text(
        c,
        &encode(&ClientMessage::CreateSession {
            token: None,
            resumable: false,
        }),
        T0,
    );
    let code = std::iter::from_fn(|| b.poll_output())
        .find_map(|o| match o {
            Output::Send {
                msg: BrokerMessage::SessionCreated { session, .. },
                ..
            } => Some(session),
            _ => None,
        })
        .unwrap();
    let src = Some(SRC.to_string());
    let c_text = Some(code.to_string());
    let t = b.handle_open(SRC);
    b.handle_text(t, &encode(&join("000 000")), T0);
    b.handle_text(t, &encode(&join(code)), T0);
    b.handle_text(c, &encode(&ClientMessage::VerificationFailed {}), T0);
    b.handle_close(t);
    b.handle_close(c);
    let events = audits(&mut b);
    assert_eq!(
        events,
        [
            (
                "wrong_code".to_owned(),
                Some("000 000".to_owned()),
                src.clone()
            ),
            ("session_started".to_owned(), c_text.clone(), src.clone()),
            (
                "confirmation_failed".to_owned(),
                c_text.clone(),
                src.clone()
            ),
            // The failed target was unpaired, so the controller leaving withdraws the
            // code rather than ending a session.
            ("code_cancelled".to_owned(), c_text.clone(), src.clone()),
        ],
        "{events:?}"
    );
}

#[test]
fn a_session_that_both_sides_leave_is_ended_once_in_the_audit() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    b.handle_text(t, &encode(&join(code)), T0);
    b.handle_close(c);
    b.handle_close(t);
    let events: Vec<String> = audits(&mut b).into_iter().map(|(e, _, _)| e).collect();
    assert_eq!(
        events.iter().filter(|e| *e == "ended").count(),
        1,
        "{events:?}"
    );
}

#[test]
fn the_users_decision_is_audited_as_the_target_relays_it_and_only_from_the_target() {
    let mut b = board();
    let (c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    b.handle_text(t, &encode(&join(code)), T0);
    let decided = |decision| ClientMessage::Relay {
        signal: deskwire_signal::PeerSignal::ConsentDecided { decision },
    };
    audits(&mut b);
    // A controller cannot write the user's decision.
    b.handle_text(c, &encode(&decided(ConsentDecision::Control)), T0);
    assert!(audits(&mut b).is_empty());
    b.handle_text(t, &encode(&decided(ConsentDecision::ViewOnly)), T0);
    let events = audits(&mut b);
    assert_eq!(
        events,
        [(
            "accepted_by_user".to_owned(),
            Some(code.to_string()),
            Some(SRC.to_string())
        )]
    );
    b.handle_text(t, &encode(&decided(ConsentDecision::TimedOut)), T0);
    assert_eq!(audits(&mut b)[0].0, "timed_out");
}

#[test]
fn with_require_device_a_join_without_a_device_proof_is_refused_and_keeps_the_code() {
    let mut b = board();
    b.require_device = true;
    let (_c, code) = controller(&mut b);
    let t = b.handle_open(SRC);
    let reason = JoinRefusal::DeviceNotAuthenticated;
    assert_eq!(
        say(&mut b, t, &join(code), T0),
        [send(
            t,
            BrokerMessage::JoinRefused {
                reason,
                message: reason.message().into()
            }
        )]
    );
    // The code was not used up: a proving device may still join with it.
    b.require_device = false;
    assert_eq!(
        say(&mut b, t, &join(code), T0)[0],
        send(t, BrokerMessage::Joined { policy: None })
    );
}

#[test]
fn an_address_creating_codes_too_fast_waits_and_is_audited_once_a_minute() {
    let limits = CodeLimits {
        ttl: TTL,
        retention: Duration::from_secs(3600),
        max_pending: 8,
        max_tombstones: 64,
    };
    let mut b = Switchboard::new(
        limits,
        JoinLimits {
            creations_per_window: 3,
            ..JoinLimits::default()
        },
        Requirements::default(),
        StdRng::seed_from_u64(3),
    );
    let create = ClientMessage::CreateSession {
        token: None,
        resumable: false,
    };
    for _ in 0..3 {
        let c = b.handle_open(SRC);
        b.handle_text(c, &encode(&create), T0);
        assert!(
            matches!(drain(&mut b).as_slice(), [send] if matches!(send, Output::Send { msg: BrokerMessage::SessionCreated { .. }, .. })),
        );
    }
    let _ = audits(&mut b);
    let refused = |b: &mut Switchboard, at: UnixMillis| {
        let c = b.handle_open(SRC);
        b.handle_text(c, &encode(&create), at);
        std::iter::from_fn(|| b.poll_output()).collect::<Vec<_>>()
    };
    let out = refused(&mut b, T0);
    let message = out.iter().find_map(|o| match o {
        Output::Send {
            msg: BrokerMessage::Error { message },
            ..
        } => Some(message.clone()),
        _ => None,
    });
    let message = message.expect("the fourth creation is refused");
    assert!(
        message.contains("too many sessions") && message.contains("1 min"),
        "{message}"
    );
    assert_eq!(
        out.iter().filter(|o| matches!(o, Output::Audit(_))).count(),
        1,
        "the first refusal is audited"
    );
    // Spam from the same address is counted, not written one by one.
    for _ in 0..100 {
        let out = refused(&mut b, T0);
        assert!(!out.iter().any(|o| matches!(o, Output::Audit(_))));
    }
    // Another address is not held back; the first may go on once the window passed, and
    // the first refusal after that minute carries the count of the rest.
    let other = b.handle_open("198.51.100.9".parse().unwrap());
    b.handle_text(other, &encode(&create), T0);
    assert!(drain(&mut b).iter().any(|o| matches!(
        o,
        Output::Send {
            msg: BrokerMessage::SessionCreated { .. },
            ..
        }
    )));
    let later = T0.plus(Duration::from_secs(61));
    let c = b.handle_open(SRC);
    b.handle_text(c, &encode(&create), later);
    assert!(drain(&mut b).iter().any(|o| matches!(
        o,
        Output::Send {
            msg: BrokerMessage::SessionCreated { .. },
            ..
        }
    )));
    for _ in 0..3 {
        let c = b.handle_open(SRC);
        b.handle_text(c, &encode(&create), later);
    }
    let records: Vec<_> = std::iter::from_fn(|| b.poll_output())
        .filter_map(|o| match o {
            Output::Audit(r) => Some(r.detail),
            _ => None,
        })
        .collect();
    assert!(
        records
            .iter()
            .any(|d| d.contains("100 more session creations refused")),
        "{records:?}"
    );
}
