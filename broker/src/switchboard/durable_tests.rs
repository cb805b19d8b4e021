//! The store-backed paths, driven message by message: every store answer is fed by hand.
use std::time::Duration;

use deskwire_signal::encode;
use rand::SeedableRng;

use super::durable::resume_hash;
use super::*;
use crate::store::{CodeState, Refusal};
use deskwire_signal::JoinRefusal;

const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const T0: UnixMillis = UnixMillis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(600);
const RECORD: SessionRecordId = SessionRecordId(41);
const ALICE: TechnicianId = TechnicianId(7);

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
        StdRng::seed_from_u64(5),
    )
    .with_store()
}

/// Everything but the audit records.
fn drain(b: &mut Switchboard) -> Vec<Output> {
    std::iter::from_fn(|| b.poll_output())
        .filter(|o| !matches!(o, Output::Audit(_)))
        .collect()
}

fn say(b: &mut Switchboard, conn: ConnId, msg: &ClientMessage, now: UnixMillis) -> Vec<Output> {
    b.handle_text(conn, &encode(msg), now);
    drain(b)
}

fn send(to: ConnId, msg: BrokerMessage) -> Output {
    Output::Send { to, msg }
}

fn create(resumable: bool) -> ClientMessage {
    ClientMessage::CreateSession {
        token: None,
        resumable,
    }
}

fn join(code: SessionCode) -> ClientMessage {
    ClientMessage::Join {
        code: code.to_string(),
        device: None,
    }
}

fn refused(to: ConnId, reason: JoinRefusal) -> Output {
    send(
        to,
        BrokerMessage::JoinRefused {
            reason,
            message: reason.message().into(),
        },
    )
}

fn is_error_then_close(out: &[Output], conn: ConnId, says: &str) -> bool {
    matches!(out, [Output::Send { to, msg: BrokerMessage::Error { message } }, Output::Close { conn: c }]
        if *to == conn && *c == conn && message.contains(says))
}

/// A controller whose code the store accepted: its connection, code and resume token.
fn controller(b: &mut Switchboard) -> (ConnId, SessionCode, String) {
    let c = b.handle_open(SRC);
    let out = say(b, c, &create(true), T0);
    let [Output::StoreCode {
        conn,
        code,
        technician: None,
        issued_at,
        expires_at,
        resume_hash: Some(hash),
    }] = out.as_slice()
    else {
        panic!("expected store_code, got {out:?}");
    };
    assert_eq!((*conn, *issued_at, *expires_at), (c, T0, T0.plus(TTL)));
    let (code, hash) = (*code, hash.clone());
    b.handle_code_stored(c, Ok(()), T0);
    let out = drain(b);
    let [Output::Send {
        to,
        msg:
            BrokerMessage::SessionCreated {
                session,
                expires_at,
                resume: Some(token),
            },
    }] = out.as_slice()
    else {
        panic!("expected session_created, got {out:?}");
    };
    assert_eq!((*to, *session, *expires_at), (c, code, T0.plus(TTL)));
    assert_eq!(token.len(), 64, "256 bits in hex");
    assert_eq!(resume_hash(token), hash, "only the token's hash is stored");
    (c, code, token.clone())
}

/// A target joins `code`, held here: the store is asked to redeem it.
fn join_held(b: &mut Switchboard, code: SessionCode) -> (ConnId, SessionId) {
    let t = b.handle_open(SRC);
    let out = say(b, t, &join(code), T0);
    let [Output::RedeemCode {
        conn,
        session,
        code: asked,
        technician: None,
        device: None,
    }] = out.as_slice()
    else {
        panic!("expected redeem_code, got {out:?}");
    };
    assert_eq!((*conn, *asked), (t, code));
    (t, *session)
}

fn redeemed() -> Result<Redeemed, RedeemError> {
    Ok(Redeemed {
        record: RECORD,
        policy: None,
    })
}

#[test]
fn a_code_is_announced_only_once_the_store_holds_it_and_a_taken_one_is_redrawn() {
    let mut b = board();
    let c = b.handle_open(SRC);
    let out = say(&mut b, c, &create(false), T0);
    let [Output::StoreCode {
        code: first,
        resume_hash: None,
        ..
    }] = out.as_slice()
    else {
        panic!("{out:?}");
    };
    let first = *first;
    // Held by the store from before a restart: another code, still not announced.
    b.handle_code_stored(c, Err(StoreCodeError::Taken), T0);
    let out = drain(&mut b);
    let [Output::StoreCode { code: second, .. }] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_ne!(*second, first);
    let second = *second;
    b.handle_code_stored(c, Ok(()), T0);
    assert_eq!(
        drain(&mut b),
        [send(
            c,
            BrokerMessage::SessionCreated {
                session: second,
                expires_at: T0.plus(TTL),
                resume: None
            }
        )]
    );
}

#[test]
fn a_store_that_cannot_record_the_code_ends_the_request_with_its_reason() {
    let mut b = board();
    let c = b.handle_open(SRC);
    say(&mut b, c, &create(true), T0);
    b.handle_code_stored(c, Err(StoreCodeError::Unavailable("db down".into())), T0);
    assert!(is_error_then_close(&drain(&mut b), c, "db down"));
    assert_eq!(b.sessions(), 0);
}

#[test]
fn a_join_pairs_only_after_the_store_redeemed_it_and_a_second_is_already_used() {
    let mut b = board();
    let (c, code, _) = controller(&mut b);
    let (t, session) = join_held(&mut b, code);
    // Nothing sent until the store answers; a second target meanwhile hears "used".
    let second = b.handle_open(SRC);
    assert_eq!(
        say(&mut b, second, &join(code), T0),
        [refused(second, JoinRefusal::AlreadyUsed)]
    );
    b.handle_redeemed(t, session, redeemed(), T0);
    assert_eq!(
        drain(&mut b),
        [
            send(t, BrokerMessage::Joined { policy: None }),
            send(c, BrokerMessage::PeerJoined {})
        ]
    );
    // Either side leaving ends the row, once.
    b.handle_close(t);
    assert_eq!(
        drain(&mut b),
        [
            Output::EndSession {
                record: RECORD,
                by: EndedBy::Target,
                reason: "the target left".into()
            },
            send(c, BrokerMessage::PeerLeft {})
        ]
    );
    b.handle_close(c);
    assert!(drain(&mut b).is_empty());
}

#[test]
fn the_stores_verdict_on_a_code_used_elsewhere_reaches_the_target() {
    let mut b = board();
    let (_, code, _) = controller(&mut b);
    let (t, session) = join_held(&mut b, code);
    let used = Err(RedeemError::Code(JoinRefusal::AlreadyUsed));
    b.handle_redeemed(t, session, used, T0);
    let out: Vec<_> = std::iter::from_fn(|| b.poll_output()).collect();
    assert!(
        out.contains(&refused(t, JoinRefusal::AlreadyUsed)),
        "{out:?}"
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Audit(r) if r.event == AuditEvent::Reused)));
}

#[test]
fn a_code_this_broker_does_not_hold_is_looked_up_and_refused_precisely_without_using_it() {
    let mut b = board();
    let code = SessionCode::from_number(123_456).unwrap();
    let t = b.handle_open(SRC);
    let cases = [
        (
            Some((CodeState::Pending, T0.plus(TTL))),
            JoinRefusal::ControllerAway,
        ),
        (Some((CodeState::Pending, T0)), JoinRefusal::Expired),
        (
            Some((CodeState::Redeemed, T0.plus(TTL))),
            JoinRefusal::AlreadyUsed,
        ),
        (
            Some((CodeState::Cancelled, T0.plus(TTL))),
            JoinRefusal::Cancelled,
        ),
        (Some((CodeState::Burned, T0.plus(TTL))), JoinRefusal::Burned),
        (None, JoinRefusal::WrongCode),
    ];
    for (stored, reason) in cases {
        assert_eq!(
            say(&mut b, t, &join(code), T0),
            [Output::LookUpCode { conn: t, code }]
        );
        let stored = stored.map(|(state, expires_at)| StoredCode { state, expires_at });
        b.handle_code_looked_up(t, Ok(stored), T0);
        assert_eq!(drain(&mut b), [refused(t, reason)], "{reason:?}");
    }
    // "Reconnecting" is not a guess: only the five real failures count, so a seventh join
    // a minute is still admitted (the limit is six failures).
    assert_eq!(
        say(&mut b, t, &join(code), T0),
        [Output::LookUpCode { conn: t, code }]
    );
}

#[test]
fn a_controller_resumes_its_code_with_its_token_and_a_target_then_pairs() {
    let mut b = board();
    let (c, code, token) = controller(&mut b);
    // The broker restarts: a new switchboard, the same store.
    b.handle_shutdown();
    b.handle_close(c);
    assert!(drain(&mut b).is_empty(), "nothing cancelled at shutdown");
    let mut b = board();
    let t = b.handle_open(SRC);
    assert_eq!(
        say(&mut b, t, &join(code), T0),
        [Output::LookUpCode { conn: t, code }]
    );
    let pending = StoredCode {
        state: CodeState::Pending,
        expires_at: T0.plus(TTL),
    };
    b.handle_code_looked_up(t, Ok(Some(pending)), T0);
    assert_eq!(drain(&mut b), [refused(t, JoinRefusal::ControllerAway)]);

    let c = b.handle_open(SRC);
    let resume = ClientMessage::Resume {
        session: code.to_string(),
        resume: token.clone(),
    };
    let later = T0.plus(Duration::from_secs(5));
    assert_eq!(
        say(&mut b, c, &resume, later),
        [Output::ResumeCode {
            conn: c,
            code,
            resume_hash: resume_hash(&token)
        }]
    );
    let resumed = Resumed {
        expires_at: T0.plus(TTL),
        technician: None,
        policy: None,
    };
    b.handle_resumed(c, code, Ok(resumed), later);
    assert_eq!(
        drain(&mut b),
        [send(
            c,
            BrokerMessage::SessionCreated {
                session: code,
                expires_at: T0.plus(TTL),
                resume: None
            }
        )]
    );
    // The same target tries again: now the code is held here and redeemed.
    let out = say(&mut b, t, &join(code), later);
    let [Output::RedeemCode { session, .. }] = out.as_slice() else {
        panic!("{out:?}");
    };
    b.handle_redeemed(t, *session, redeemed(), later);
    assert_eq!(
        drain(&mut b),
        [
            send(t, BrokerMessage::Joined { policy: None }),
            send(c, BrokerMessage::PeerJoined {})
        ]
    );
}

#[test]
fn a_refused_resume_gets_an_error_that_names_why_but_not_whether_the_code_exists() {
    let mut b = board();
    let code = SessionCode::from_number(123_456).unwrap();
    let resume = |token: &str| ClientMessage::Resume {
        session: code.to_string(),
        resume: token.into(),
    };
    let token = "ab".repeat(32);
    for (refusal, says) in [
        // A wrong token and an unknown code read the same: no oracle for live codes.
        (
            Refusal::WrongResumeToken,
            "no session with this code and token",
        ),
        (Refusal::Reused, "already used"),
        (Refusal::Expired, "expired"),
        (Refusal::Unknown, "no session with this code and token"),
    ] {
        let c = b.handle_open(SRC);
        assert_eq!(say(&mut b, c, &resume(&token), T0).len(), 1);
        b.handle_resumed(c, code, Err(ResumeError::Refused(refusal)), T0);
        let out = drain(&mut b);
        assert!(is_error_then_close(&out, c, says), "{refusal:?}: {out:?}");
    }
    assert_eq!(b.sessions(), 0);
    // Not a token this broker issues: refused without asking the store.
    let c = b.handle_open(SRC);
    assert!(is_error_then_close(
        &say(&mut b, c, &resume("xyz"), T0),
        c,
        "not one this broker issues"
    ));
    // Only as a first message.
    let (c, code, token) = controller(&mut b);
    let again = ClientMessage::Resume {
        session: code.to_string(),
        resume: token.clone(),
    };
    // The controller is closed for it, which withdraws its code.
    assert_eq!(
        say(&mut b, c, &again, T0),
        [
            send(
                c,
                BrokerMessage::Error {
                    message: "resume must be the first message on a connection".into()
                }
            ),
            Output::CancelCode { code },
            Output::Close { conn: c }
        ]
    );
}

#[test]
fn resuming_a_code_whose_controller_is_still_here_is_refused() {
    let mut b = board();
    let (_, code, token) = controller(&mut b);
    let thief = b.handle_open(SRC);
    let resume = ClientMessage::Resume {
        session: code.to_string(),
        resume: token,
    };
    assert!(is_error_then_close(
        &say(&mut b, thief, &resume, T0),
        thief,
        "still connected"
    ));
}

#[test]
fn a_broker_without_a_store_refuses_resume() {
    let mut b = Switchboard::new(
        CodeLimits {
            ttl: TTL,
            retention: TTL,
            max_pending: 1,
            max_tombstones: 1,
        },
        JoinLimits::default(),
        Requirements::default(),
        StdRng::seed_from_u64(1),
    );
    let c = b.handle_open(SRC);
    let resume = ClientMessage::Resume {
        session: "123 456".into(),
        resume: "ab".repeat(32),
    };
    assert!(is_error_then_close(
        &say(&mut b, c, &resume, T0),
        c,
        "keeps no codes"
    ));
}

#[test]
fn a_controller_leaving_cancels_its_code_in_the_store_but_a_shutdown_does_not() {
    let mut b = board();
    let (c, code, _) = controller(&mut b);
    b.handle_close(c);
    assert_eq!(drain(&mut b), [Output::CancelCode { code }]);

    let (c, _, _) = controller(&mut b);
    b.handle_shutdown();
    b.handle_close(c);
    assert!(drain(&mut b).is_empty());
}

#[test]
fn a_create_session_beyond_the_groups_cap_is_refused_naming_the_cap() {
    let mut b = board();
    let policy = SessionPolicy {
        technician: "alice".into(),
        company: String::new(),
        acceptance: PolicyAcceptance::Auto,
        window_secs: 30,
        control: true,
        unattended: false,
        admin_credentials_only: false,
    };
    let who = |open_sessions| Authenticated {
        technician: ALICE,
        policy: policy.clone(),
        max_sessions: Some(2),
        open_sessions,
        company: crate::store::CompanyId(1),
        permissions: vec!["view_only"],
    };
    let token = ClientMessage::CreateSession {
        token: Some("dw_x".into()),
        resumable: false,
    };
    let c = b.handle_open(SRC);
    say(&mut b, c, &token, T0);
    b.handle_authenticated(c, Ok(who(2)), T0);
    let out: Vec<_> = std::iter::from_fn(|| b.poll_output()).collect();
    assert!(
        out.iter().any(|o| matches!(o, Output::Audit(r)
            if r.event == AuditEvent::DeniedByPolicy && r.technician == Some(ALICE))),
        "{out:?}"
    );
    let out: Vec<_> = out
        .into_iter()
        .filter(|o| !matches!(o, Output::Audit(_)))
        .collect();
    assert!(is_error_then_close(&out, c, "at most 2"), "{out:?}");

    let c = b.handle_open(SRC);
    say(&mut b, c, &token, T0);
    b.handle_authenticated(c, Ok(who(1)), T0);
    let out = drain(&mut b);
    assert!(
        matches!(
            out.as_slice(),
            [Output::StoreCode {
                technician: Some(ALICE),
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn a_group_refusing_at_join_time_withdraws_the_code_and_tells_both_sides() {
    let mut b = board();
    let (c, code, _) = controller(&mut b);
    let (t, session) = join_held(&mut b, code);
    let why = "alice: the technician already has 2 open sessions, the most their group allows";
    b.handle_redeemed(t, session, Err(RedeemError::Policy(why.into())), T0);
    let out = drain(&mut b);
    assert_eq!(
        out[..2],
        [
            Output::CancelCode { code },
            send(
                t,
                BrokerMessage::JoinRefused {
                    reason: JoinRefusal::Cancelled,
                    message: why.into()
                }
            ),
        ]
    );
    assert!(
        is_error_then_close(&out[2..], c, "2 open sessions"),
        "{out:?}"
    );
}

#[test]
fn a_target_leaving_while_the_store_redeems_ends_the_row_and_tells_the_controller() {
    let mut b = board();
    let (c, code, _) = controller(&mut b);
    let (t, session) = join_held(&mut b, code);
    b.handle_close(t);
    assert!(drain(&mut b).is_empty());
    b.handle_redeemed(t, session, redeemed(), T0);
    assert_eq!(
        drain(&mut b),
        [
            Output::EndSession {
                record: RECORD,
                by: EndedBy::Target,
                reason: "the target left while joining".into()
            },
            send(c, BrokerMessage::PeerLeft {})
        ]
    );
}

#[test]
fn a_failed_verification_is_counted_in_the_store_and_ends_the_attempts_row() {
    let mut b = board();
    let (c, code, _) = controller(&mut b);
    let (t, session) = join_held(&mut b, code);
    b.handle_redeemed(t, session, redeemed(), T0);
    drain(&mut b);
    let out = say(&mut b, c, &ClientMessage::VerificationFailed {}, T0);
    assert_eq!(
        out[..2],
        [
            Output::FailedConfirmation { code },
            Output::EndSession {
                record: RECORD,
                by: EndedBy::Broker,
                reason: "the peers' verification failed (1)".into()
            },
        ]
    );
}
