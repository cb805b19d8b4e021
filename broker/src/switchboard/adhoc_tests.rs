//! Ad-hoc routing on the switchboard, message by message in virtual time: who is told
//! what, what is audited, and what a refused request says.

use std::net::IpAddr;
use std::time::Duration;

use deskwire_signal::adhoc::{AdhocId, InvitationToken, SecurityCode};
use deskwire_signal::{encode, BrokerMessage, ClientMessage, UnixMillis};

use super::test_support::{alice, board, out, sent};
use super::{ConnId, Output, Switchboard};
use crate::store::AuditEvent;

const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
const T0: UnixMillis = UnixMillis(1_700_000_000_000);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn audited(outputs: &[Output]) -> Vec<AuditEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Audit(r) => Some(r.event),
            _ => None,
        })
        .collect()
}

/// A technician request on a connection of its own, its token accepted as alice's.
fn technician(b: &mut Switchboard, msg: &ClientMessage, now: UnixMillis) -> (ConnId, Vec<Output>) {
    let c = b.handle_open(SRC);
    b.handle_text(c, &encode(msg), now);
    assert!(matches!(out(b).as_slice(), [Output::Authenticate { .. }]));
    b.handle_authenticated(c, Ok(alice(vec!["control"])), now);
    (c, out(b))
}

fn create(
    b: &mut Switchboard,
    now: UnixMillis,
) -> Result<(AdhocId, InvitationToken, SecurityCode), String> {
    let msg = ClientMessage::CreateAdhoc {
        token: "dw_x".into(),
        mail: None,
    };
    let (_, o) = technician(b, &msg, now);
    match sent(&o).pop() {
        Some((
            _,
            BrokerMessage::AdhocCreated {
                session,
                token,
                code,
                ..
            },
        )) => Ok((session, token, code)),
        Some((_, BrokerMessage::Error { message })) => Err(message),
        other => panic!("{other:?}"),
    }
}

fn activate(
    b: &mut Switchboard,
    token: &InvitationToken,
    code: &str,
    now: UnixMillis,
) -> (ConnId, Vec<Output>) {
    let h = b.handle_open(SRC);
    let msg = ClientMessage::ActivateAdhoc {
        token: token.clone(),
        code: code.into(),
        device: "dev-0011223344556677".into(),
        permanent_agent: false,
    };
    b.handle_text(h, &encode(&msg), now);
    (h, out(b))
}

#[test]
fn an_activated_host_is_called_for_each_connection_and_ends_with_its_lifetime() {
    let mut b = board(5);
    let (id, token, code) = create(&mut b, T0).unwrap();
    let (host, o) = activate(&mut b, &token, &code.to_string(), T0);
    let Some((
        to,
        BrokerMessage::AdhocActivated {
            activation,
            host_token: Some(_),
        },
    )) = sent(&o).pop()
    else {
        panic!("{o:?}");
    };
    assert_eq!(
        (to, activation.session, activation.expires_at),
        (host, id, T0.plus(DAY))
    );
    assert_eq!(audited(&o), [AuditEvent::AdhocActivated]);

    // Two calls, each a code of its own that the host is asked to join.
    let mut codes = Vec::new();
    for _ in 0..2 {
        let (c, o) = technician(
            &mut b,
            &ClientMessage::CallAdhoc {
                token: "dw_x".into(),
                session: id,
            },
            T0,
        );
        let s = sent(&o);
        let [(c1, BrokerMessage::SessionCreated { session, .. }), (
            h1,
            BrokerMessage::AdhocCall {
                session: called,
                technician,
            },
        )] = s.as_slice()
        else {
            panic!("{s:?}");
        };
        assert_eq!(
            (*c1, *h1, session, technician.as_str()),
            (c, host, called, "alice")
        );
        codes.push(*session);
        b.handle_close(c);
        out(&mut b);
    }
    assert_ne!(codes[0], codes[1]);

    // The lifetime runs out: the host is told and dropped, once.
    b.handle_tick(T0.plus(DAY - Duration::from_millis(1)));
    assert!(sent(&out(&mut b)).is_empty());
    b.handle_tick(T0.plus(DAY));
    let o = out(&mut b);
    let s = sent(&o);
    assert!(
        matches!(s.as_slice(), [(h, BrokerMessage::AdhocEnded { reason, .. })] if *h == host && reason.contains("lifetime")),
        "{s:?}"
    );
    assert!(o
        .iter()
        .any(|x| matches!(x, Output::Close { conn } if *conn == host)));
    assert_eq!(audited(&o), [AuditEvent::AdhocEnded]);
    b.handle_tick(T0.plus(DAY * 2));
    assert!(out(&mut b).is_empty());
    // And a call now says why not.
    let (_, o) = technician(
        &mut b,
        &ClientMessage::CallAdhoc {
            token: "dw_x".into(),
            session: id,
        },
        T0.plus(DAY),
    );
    assert!(
        matches!(sent(&o).as_slice(), [(_, BrokerMessage::Error { message })] if message.contains("end of its lifetime"))
    );
    assert_eq!(audited(&o), [AuditEvent::AdhocRefused]);
}

#[test]
fn a_dropped_host_is_not_called_until_it_reattaches_with_its_token() {
    let mut b = board(5);
    let (id, token, code) = create(&mut b, T0).unwrap();
    let (host, o) = activate(&mut b, &token, &code.to_string(), T0);
    let Some((
        _,
        BrokerMessage::AdhocActivated {
            host_token: Some(host_token),
            ..
        },
    )) = sent(&o).pop()
    else {
        panic!("{o:?}");
    };
    b.handle_close(host);
    let (_, o) = technician(
        &mut b,
        &ClientMessage::CallAdhoc {
            token: "dw_x".into(),
            session: id,
        },
        T0,
    );
    assert!(
        matches!(sent(&o).as_slice(), [(_, BrokerMessage::Error { message })] if message.contains("not connected right now"))
    );

    // A wrong token is refused; the right one takes the session up again.
    let stranger = b.handle_open(SRC);
    let wrong = ClientMessage::ReattachAdhoc {
        session: id,
        host_token: "00".repeat(32),
    };
    b.handle_text(stranger, &encode(&wrong), T0);
    assert!(matches!(
        sent(&out(&mut b)).as_slice(),
        [(_, BrokerMessage::Error { .. })]
    ));
    let back = b.handle_open(SRC);
    let right = ClientMessage::ReattachAdhoc {
        session: id,
        host_token,
    };
    b.handle_text(back, &encode(&right), T0);
    assert!(
        matches!(sent(&out(&mut b)).as_slice(), [(h, BrokerMessage::AdhocActivated { host_token: None, .. })] if *h == back)
    );
    let (_, o) = technician(
        &mut b,
        &ClientMessage::CallAdhoc {
            token: "dw_x".into(),
            session: id,
        },
        T0,
    );
    assert!(sent(&o)
        .iter()
        .any(|(h, m)| *h == back && matches!(m, BrokerMessage::AdhocCall { .. })));
}

#[test]
fn the_users_leave_and_the_technicians_end_now_close_the_session_and_free_the_quota() {
    let mut b = board(5);
    let (id, token, code) = create(&mut b, T0).unwrap();
    let again = create(&mut b, T0).unwrap_err();
    assert!(again.contains("the limit is 1 per technician"), "{again}");
    let (host, _) = activate(&mut b, &token, &code.to_string(), T0);
    b.handle_text(host, &encode(&ClientMessage::LeaveAdhoc {}), T0);
    let o = out(&mut b);
    assert!(matches!(sent(&o).as_slice(), [(h, BrokerMessage::AdhocEnded { .. })] if *h == host));
    let (_, o) = technician(
        &mut b,
        &ClientMessage::EndAdhoc {
            token: "dw_x".into(),
            session: id,
        },
        T0,
    );
    assert!(
        matches!(sent(&o).as_slice(), [(_, BrokerMessage::Error { message })] if message.contains("was ended")),
        "{o:?}"
    );

    // End now on an active session: the host is told, the technician answered, a new one may start.
    let (id, token, code) = create(&mut b, T0).unwrap();
    let (host, _) = activate(&mut b, &token, &code.to_string(), T0);
    let (tech, o) = technician(
        &mut b,
        &ClientMessage::EndAdhoc {
            token: "dw_x".into(),
            session: id,
        },
        T0,
    );
    let s = sent(&o);
    assert!(
        s.iter()
            .any(|(h, m)| *h == host && matches!(m, BrokerMessage::AdhocEnded { .. })),
        "{s:?}"
    );
    assert!(s.iter().any(|(t, m)| *t == tech && matches!(m, BrokerMessage::AdhocEnded { reason, .. } if reason == "alice ended the session")));
    create(&mut b, T0).unwrap();
}

#[test]
fn a_wrong_security_code_is_refused_and_audited_and_anything_else_on_a_host_connection_is_refused()
{
    let mut b = board(5);
    let (_, token, code) = create(&mut b, T0).unwrap();
    let (_, o) = activate(&mut b, &token, "0000-0000", T0);
    assert!(
        matches!(sent(&o).as_slice(), [(_, BrokerMessage::Error { message })] if message.contains("wrong security code: 4 more"))
    );
    assert_eq!(audited(&o), [AuditEvent::AdhocRefused]);
    let (host, _) = activate(&mut b, &token, &code.to_string(), T0);
    b.handle_text(host, &encode(&ClientMessage::VerificationFailed {}), T0);
    assert!(
        matches!(sent(&out(&mut b)).as_slice(), [(_, BrokerMessage::Error { message })] if message.contains("only leave_adhoc"))
    );
    // A leave on a connection that is not a host's is refused too.
    let c = b.handle_open(SRC);
    b.handle_text(c, &encode(&ClientMessage::LeaveAdhoc {}), T0);
    assert!(matches!(
        sent(&out(&mut b)).as_slice(),
        [(_, BrokerMessage::Error { .. })]
    ));
}
