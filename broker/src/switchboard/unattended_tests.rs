//! Unattended calls on the switchboard, message by message in virtual time: the agent's
//! proof, the broker's own check of its copy of the grant, and the audit of each verdict.

use std::net::IpAddr;
use std::time::Duration;

use deskwire_signal::device::DeviceKey;
use deskwire_signal::grant::{
    CredentialMode, GrantPolicy, GrantRequest, GrantZone, Schedule, Validity, ZoneName, ZoneOf,
};
use deskwire_signal::{encode, BrokerMessage, ClientMessage, UnixMillis};

use super::test_support::{alice, board, out, sent};
use super::{ConnId, Output, Switchboard};
use crate::store::{AuditEvent, GrantReport};

const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
const T0: UnixMillis = UnixMillis(1_700_000_000_000);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn audited(o: &[Output]) -> Vec<(AuditEvent, String)> {
    o.iter()
        .filter_map(|o| match o {
            Output::Audit(r) => Some((r.event, r.detail.clone())),
            _ => None,
        })
        .collect()
}

/// A grant of three days approved for `technician` at T0.
fn report(technician: &str) -> GrantReport {
    let request = GrantRequest {
        schedule: Schedule::new(Validity::Days { days: 3 }, None).unwrap(),
        zone: GrantZone {
            of: ZoneOf::Technician,
            name: ZoneName::new("UTC").unwrap(),
        },
        credential_mode: CredentialMode::AskEachConnection,
    };
    let (grant, _) = deskwire_signal::grant::approve(request, &GrantPolicy::default(), T0).unwrap();
    GrantReport {
        grant: 1,
        technician: technician.into(),
        record: serde_json::to_string(&grant).unwrap(),
        reported_at: T0.0 as i64,
    }
}

fn stand_by(
    b: &mut Switchboard,
    key: &DeviceKey,
    at: UnixMillis,
    now: UnixMillis,
) -> (ConnId, Vec<Output>) {
    let c = b.handle_open(SRC);
    let msg = ClientMessage::Standby {
        device: key.prove_standby(at),
        at,
    };
    b.handle_text(c, &encode(&msg), now);
    (c, out(b))
}

/// A call under grant 1 of `key`'s device, by alice with `permissions`; the store answers
/// `stored`. Returns the technician's connection and what followed.
fn call(
    b: &mut Switchboard,
    key: &DeviceKey,
    permissions: Vec<&'static str>,
    stored: Option<GrantReport>,
    now: UnixMillis,
) -> (ConnId, Vec<Output>) {
    let c = b.handle_open(SRC);
    let msg = ClientMessage::CallUnattended {
        token: "dw_x".into(),
        device: key.id(),
        grant: 1,
    };
    b.handle_text(c, &encode(&msg), now);
    assert!(matches!(out(b).as_slice(), [Output::Authenticate { .. }]));
    b.handle_authenticated(c, Ok(alice(permissions)), now);
    let o = out(b);
    if !o.iter().any(|x| matches!(x, Output::LookUpGrant { .. })) {
        return (c, o);
    }
    b.handle_grant_looked_up(c, key.id(), 1, Ok(stored), now);
    (c, out(b))
}

#[test]
fn a_call_inside_the_window_reaches_the_standing_agent_and_is_audited_as_allowed() {
    let mut b = board(6).with_store();
    let key = DeviceKey::from_seed([4; 32]);
    let (agent, o) = stand_by(&mut b, &key, T0, T0);
    assert!(matches!(sent(&o).as_slice(), [(a, BrokerMessage::StandingBy {})] if *a == agent));
    let (c, o) = call(
        &mut b,
        &key,
        vec!["unattended"],
        Some(report("alice")),
        T0.plus(DAY),
    );
    // Durable: the code is stored first, then announced and the agent called.
    let Some(Output::StoreCode { code, .. }) = o
        .iter()
        .find(|x| matches!(x, Output::StoreCode { .. }))
        .cloned()
    else {
        panic!("{o:?}");
    };
    assert_eq!(
        audited(&o).first().map(|a| a.0),
        Some(AuditEvent::UnattendedAllowed)
    );
    b.handle_code_stored(c, Ok(()), T0.plus(DAY));
    let s = sent(&out(&mut b));
    assert!(
        s.iter().any(|(to, m)| *to == c
            && matches!(m, BrokerMessage::SessionCreated { session, .. } if *session == code)),
        "{s:?}"
    );
    assert!(
        s.iter().any(|(to, m)| *to == agent && matches!(m, BrokerMessage::UnattendedCall { session, grant: 1, technician } if *session == code && technician == "alice")),
        "{s:?}"
    );
}

#[test]
fn the_broker_refuses_and_audits_calls_its_copy_does_not_allow() {
    let mut b = board(6).with_store();
    let key = DeviceKey::from_seed([4; 32]);
    stand_by(&mut b, &key, T0, T0);
    let cases: [(Vec<&'static str>, Option<GrantReport>, UnixMillis, &str); 4] = [
        (
            vec!["control"],
            Some(report("alice")),
            T0,
            "does not have the unattended permission",
        ),
        (vec!["unattended"], None, T0, "knows no grant 1"),
        (
            vec!["unattended"],
            Some(report("bob")),
            T0,
            "approved for another technician",
        ),
        (
            vec!["unattended"],
            Some(report("alice")),
            T0.plus(DAY * 4),
            "expired",
        ),
    ];
    for (permissions, stored, now, why) in cases {
        let (c, o) = call(&mut b, &key, permissions, stored, now);
        let s = sent(&o);
        assert!(
            matches!(s.as_slice(), [(to, BrokerMessage::Error { message })] if *to == c && message.contains(why)),
            "{why}: {s:?}"
        );
        let a = audited(&o);
        assert!(
            matches!(a.as_slice(), [(AuditEvent::UnattendedRefused, d)] if d.contains(why)),
            "{why}: {a:?}"
        );
    }
}

#[test]
fn an_agent_must_prove_a_recent_time_and_a_call_without_one_standing_by_is_refused() {
    let mut b = board(6).with_store();
    let key = DeviceKey::from_seed([4; 32]);
    let (_, o) = stand_by(&mut b, &key, T0, T0.plus(Duration::from_secs(600)));
    assert!(
        matches!(sent(&o).as_slice(), [(_, BrokerMessage::Error { message })] if message.contains("not recent"))
    );
    let (c, o) = call(&mut b, &key, vec!["unattended"], Some(report("alice")), T0);
    assert!(
        matches!(sent(&o).as_slice(), [(to, BrokerMessage::Error { message })] if *to == c && message.contains("not connected"))
    );
    // A forged proof (another key claiming the id) is refused.
    let other = DeviceKey::from_seed([5; 32]);
    let mut forged = other.prove_standby(T0);
    forged.id = key.id();
    let a = b.handle_open(SRC);
    b.handle_text(
        a,
        &encode(&ClientMessage::Standby {
            device: forged,
            at: T0,
        }),
        T0,
    );
    assert!(matches!(
        sent(&out(&mut b)).as_slice(),
        [(_, BrokerMessage::Error { .. })]
    ));
}

#[test]
fn grant_approvals_and_revocations_reported_by_a_device_are_audited_with_it() {
    let mut b = board(7).with_store();
    let key = DeviceKey::from_seed([4; 32]);
    let send_report = |b: &mut Switchboard, r: &GrantReport| {
        let c = b.handle_open(SRC);
        let msg = ClientMessage::ReportGrant {
            device: key.prove_grant_report(r.grant, &r.record, T0),
            grant: r.grant,
            technician: r.technician.clone(),
            record: r.record.clone(),
            reported_at: T0,
        };
        b.handle_text(c, &encode(&msg), T0);
        out(b)
    };
    let approved = report("alice");
    let o = send_report(&mut b, &approved);
    let audits: Vec<_> = o
        .iter()
        .filter_map(|o| match o {
            Output::Audit(r) => Some((r.event, r.device.clone(), r.detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        audits,
        [(
            AuditEvent::GrantApproved,
            Some(key.id()),
            "grant 1 for alice approved on the computer".to_owned()
        )]
    );
    let mut grant: deskwire_signal::grant::Grant = serde_json::from_str(&approved.record).unwrap();
    grant.revoke(T0);
    let revoked = GrantReport {
        record: serde_json::to_string(&grant).unwrap(),
        ..approved
    };
    let o = send_report(&mut b, &revoked);
    assert_eq!(
        audited(&o).first().map(|a| a.0),
        Some(AuditEvent::GrantRevoked)
    );
}
