//! Ad-hoc sessions in virtual time: every instant is `T0` plus a duration, nothing sleeps.
//! Quotas and activation here; lifetime and ending in `lifetime_tests`; limits, codes and JSON
//! in `format_tests`.

use std::time::Duration;

use super::*;
use crate::time::UnixMillis;

/// 2026-01-01T00:00Z.
pub(super) const T0: UnixMillis = UnixMillis(1_767_225_600_000);
pub(super) const MS: Duration = Duration::from_millis(1);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(super) const ALICE: TechnicianId = TechnicianId(1);
pub(super) const BOB: TechnicianId = TechnicianId(2);
pub(super) const ACME: CompanyId = CompanyId(10);
pub(super) const GLOBEX: CompanyId = CompanyId(11);

pub(super) fn after(d: Duration) -> UnixMillis {
    T0.plus(d)
}

pub(super) fn before(t: UnixMillis, d: Duration) -> UnixMillis {
    UnixMillis(t.0 - u64::try_from(d.as_millis()).expect("small"))
}

/// Distinct entropy for each `n`.
pub(super) fn entropy(n: u32) -> InvitationEntropy {
    let mut token = [0x5a; TOKEN_BYTES];
    token[..4].copy_from_slice(&n.to_le_bytes());
    InvitationEntropy {
        token,
        code: 0x00c0_ffee_0000 ^ u64::from(n).wrapping_mul(0x9e37_79b9),
    }
}

pub(super) fn book() -> AdhocBook {
    AdhocBook::new(AdhocLimits::default()).expect("default limits are valid")
}

pub(super) fn book_with(limits: AdhocLimits) -> AdhocBook {
    AdhocBook::new(limits).expect("valid limits")
}

pub(super) fn roomy() -> AdhocLimits {
    AdhocLimits {
        per_technician: 10,
        per_company: 10,
        ..AdhocLimits::default()
    }
}

pub(super) fn device(name: &str) -> DeviceId {
    DeviceId::new(name).expect("a valid device id")
}

pub(super) fn create(
    book: &mut AdhocBook,
    technician: TechnicianId,
    company: CompanyId,
    n: u32,
    now: UnixMillis,
) -> Result<Invitation, AdhocError> {
    book.create(
        technician,
        company,
        Capabilities::REMOTE_CONTROL,
        now,
        entropy(n),
    )
    .map(|(id, invitation)| {
        assert_eq!(id, invitation.session);
        invitation
    })
}

pub(super) fn invite(
    book: &mut AdhocBook,
    technician: TechnicianId,
    n: u32,
    now: UnixMillis,
) -> Invitation {
    create(book, technician, ACME, n, now).expect("within the quotas")
}

pub(super) fn activate_on(
    book: &mut AdhocBook,
    inv: &Invitation,
    dev: &str,
    now: UnixMillis,
) -> Result<Activation, AdhocError> {
    book.activate(&inv.token, &inv.code, false, device(dev), now)
}

pub(super) fn activate(book: &mut AdhocBook, inv: &Invitation, now: UnixMillis) -> Activation {
    activate_on(book, inv, "dev-user-pc", now).expect("activates")
}

pub(super) fn wrong_code(inv: &Invitation) -> SecurityCode {
    let mut other = SecurityCode::from_random(0);
    if other == inv.code {
        other = SecurityCode::from_random(1);
    }
    other
}

// Quotas.

#[test]
pub(super) fn a_technician_holds_one_session_and_a_second_is_refused_naming_the_limit() {
    let mut b = book();
    invite(&mut b, ALICE, 1, T0);
    let err = create(&mut b, ALICE, ACME, 2, T0).unwrap_err();
    assert_eq!(
        err,
        AdhocError::TechnicianLimit {
            technician: ALICE,
            limit: 1,
            active: 1
        }
    );
    let text = err.to_string();
    assert!(text.contains("the limit is 1 per technician"), "{text}");
    assert!(
        text.contains("an invitation not yet activated counts"),
        "{text}"
    );
    // Another technician of the same company is not held back.
    invite(&mut b, BOB, 3, T0);
    assert_eq!(b.active_for_technician(ALICE, T0), 1);
    assert_eq!(b.active_for_company(ACME, T0), 2);
}

#[test]
pub(super) fn a_company_holds_five_sessions_and_a_sixth_is_refused_naming_the_limit() {
    let mut b = book();
    for t in 1..=5 {
        invite(&mut b, TechnicianId(t), t as u32, T0);
    }
    let err = create(&mut b, TechnicianId(6), ACME, 6, T0).unwrap_err();
    assert_eq!(
        err,
        AdhocError::CompanyLimit {
            company: ACME,
            limit: 5,
            active: 5
        }
    );
    assert!(
        err.to_string().contains("the limit is 5 per company"),
        "{err}"
    );
    // Another company has its own five.
    create(&mut b, TechnicianId(7), GLOBEX, 7, T0).unwrap();
}

#[test]
pub(super) fn custom_limits_are_enforced_and_named_in_the_refusal() {
    let mut b = book_with(AdhocLimits {
        per_technician: 2,
        per_company: 3,
        ..AdhocLimits::default()
    });
    invite(&mut b, ALICE, 1, T0);
    invite(&mut b, ALICE, 2, T0);
    let err = create(&mut b, ALICE, ACME, 3, T0).unwrap_err();
    assert!(
        err.to_string().contains("the limit is 2 per technician"),
        "{err}"
    );
    invite(&mut b, BOB, 4, T0);
    let err = create(&mut b, BOB, ACME, 5, T0).unwrap_err();
    assert_eq!(
        err,
        AdhocError::CompanyLimit {
            company: ACME,
            limit: 3,
            active: 3
        }
    );
    assert!(
        err.to_string().contains("the limit is 3 per company"),
        "{err}"
    );
}

#[test]
pub(super) fn ending_a_session_frees_its_place_at_once_whether_invited_or_active() {
    let mut b = book();
    let first = invite(&mut b, ALICE, 1, T0);
    b.end_now(first.session, EndedBy::Technician { id: ALICE }, T0)
        .unwrap();
    assert_eq!(b.active_for_technician(ALICE, T0), 0);
    assert_eq!(b.active_for_company(ACME, T0), 0);

    let second = invite(&mut b, ALICE, 2, T0);
    activate(&mut b, &second, after(HOUR));
    assert!(create(&mut b, ALICE, ACME, 3, after(HOUR)).is_err());
    b.end_now(
        second.session,
        EndedBy::Technician { id: ALICE },
        after(HOUR),
    )
    .unwrap();
    invite(&mut b, ALICE, 3, after(HOUR));
}

#[test]
pub(super) fn an_expired_session_frees_its_place_at_its_deadline_even_before_polling() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let act = activate(&mut b, &inv, after(HOUR));
    let deadline = after(HOUR + DAY);
    assert_eq!(act.expires_at, deadline);

    let just_before = before(deadline, MS);
    assert_eq!(b.active_for_technician(ALICE, just_before), 1);
    assert!(matches!(
        create(&mut b, ALICE, ACME, 2, just_before),
        Err(AdhocError::TechnicianLimit { .. })
    ));
    // No poll_expired in between: the deadline alone frees the place.
    assert_eq!(b.active_for_technician(ALICE, deadline), 0);
    assert_eq!(b.active_for_company(ACME, deadline), 0);
    invite(&mut b, ALICE, 2, deadline);
}

#[test]
pub(super) fn a_polled_expiry_frees_the_place_too() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    activate(&mut b, &inv, T0);
    assert_eq!(b.poll_expired(after(DAY)).len(), 1);
    assert_eq!(b.active_for_technician(ALICE, after(DAY)), 0);
    invite(&mut b, ALICE, 2, after(DAY));
}

#[test]
pub(super) fn an_invitation_never_activated_holds_the_place_until_it_runs_out() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let deadline = after(AdhocLimits::DEFAULT_INVITATION_TTL);
    assert_eq!(inv.expires_at, deadline);
    assert_eq!(
        b.get(inv.session).unwrap().status(T0),
        AdhocStatus::Invited { until: deadline }
    );
    assert!(b
        .get(inv.session)
        .unwrap()
        .status(T0)
        .counts_towards_quota());
    assert!(create(&mut b, ALICE, ACME, 2, before(deadline, MS)).is_err());
    let status = b.get(inv.session).unwrap().status(deadline);
    assert_eq!(status, AdhocStatus::InvitationExpired { at: deadline });
    assert!(!status.counts_towards_quota());
    invite(&mut b, ALICE, 2, deadline);
}

#[test]
pub(super) fn a_burned_invitation_frees_its_place() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let wrong = wrong_code(&inv);
    for _ in 0..AdhocLimits::DEFAULT_MAX_CODE_ATTEMPTS {
        let _ = b.activate(&inv.token, &wrong, false, device("dev-x"), T0);
    }
    assert_eq!(b.active_for_technician(ALICE, T0), 0);
    invite(&mut b, ALICE, 2, T0);
}

#[test]
pub(super) fn a_lowered_limit_keeps_running_sessions_and_applies_to_new_ones() {
    let mut b = book_with(roomy());
    let running = invite(&mut b, ALICE, 1, T0);
    invite(&mut b, ALICE, 2, T0);
    b.set_limits(AdhocLimits::default()).unwrap();
    assert!(matches!(
        create(&mut b, ALICE, ACME, 3, T0),
        Err(AdhocError::TechnicianLimit {
            limit: 1,
            active: 2,
            ..
        })
    ));
    activate(&mut b, &running, T0);
}

// Activation.

#[test]
pub(super) fn the_right_code_activates_the_session_on_that_computer() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    // Typed as a person would: lower case, a space instead of the dash.
    let typed =
        SecurityCode::parse(&inv.code.to_string().to_lowercase().replace('-', " ")).unwrap();
    let now = after(2 * HOUR);
    let act = b
        .activate(
            &inv.token,
            &typed,
            false,
            device("dev-0123456789abcdef"),
            now,
        )
        .unwrap();
    assert_eq!(
        act,
        Activation {
            session: inv.session,
            device_id: device("dev-0123456789abcdef"),
            activated_at: now,
            expires_at: now.plus(DAY),
            capabilities: Capabilities::REMOTE_CONTROL,
        }
    );
    let session = b.get(inv.session).unwrap();
    assert_eq!(
        session.status(now),
        AdhocStatus::Active {
            until: now.plus(DAY)
        }
    );
    assert_eq!(session.activation(), Some(act));
}

#[test]
pub(super) fn wrong_codes_count_down_and_the_fifth_burns_the_invitation() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let wrong = wrong_code(&inv);
    for left in (1..=4).rev() {
        let err = b
            .activate(&inv.token, &wrong, false, device("dev-x"), T0)
            .unwrap_err();
        assert_eq!(
            err,
            AdhocError::WrongCode {
                attempts_left: left
            }
        );
    }
    assert!(AdhocError::WrongCode { attempts_left: 1 }
        .to_string()
        .contains("1 more wrong code(s)"));
    let burn_time = after(MS);
    let err = b
        .activate(&inv.token, &wrong, false, device("dev-x"), burn_time)
        .unwrap_err();
    assert_eq!(
        err,
        AdhocError::InvitationBurned {
            at: burn_time,
            attempts: 5
        }
    );
    assert!(err.to_string().contains("5 wrong security codes"), "{err}");
    // Now even the right code is refused, and says why.
    let err = activate_on(&mut b, &inv, "dev-x", after(HOUR)).unwrap_err();
    assert_eq!(
        err,
        AdhocError::InvitationBurned {
            at: burn_time,
            attempts: 5
        }
    );
    assert_eq!(b.get(inv.session).unwrap().failed_attempts(), 5);
}

#[test]
pub(super) fn the_number_of_wrong_codes_allowed_is_configurable() {
    let mut b = book_with(AdhocLimits {
        max_code_attempts: 2,
        ..AdhocLimits::default()
    });
    let inv = invite(&mut b, ALICE, 1, T0);
    let wrong = wrong_code(&inv);
    let dev = || device("dev-x");
    assert_eq!(
        b.activate(&inv.token, &wrong, false, dev(), T0),
        Err(AdhocError::WrongCode { attempts_left: 1 })
    );
    assert!(matches!(
        b.activate(&inv.token, &wrong, false, dev(), T0),
        Err(AdhocError::InvitationBurned { attempts: 2, .. })
    ));
}

#[test]
pub(super) fn a_wrong_code_then_the_right_one_still_activates() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let wrong = wrong_code(&inv);
    let _ = b.activate(&inv.token, &wrong, false, device("dev-x"), T0);
    activate(&mut b, &inv, T0);
}

#[test]
pub(super) fn an_invitation_runs_out_if_not_activated_in_time() {
    let mut b = book_with(roomy());
    let late = invite(&mut b, ALICE, 1, T0);
    let in_time = invite(&mut b, BOB, 2, T0);
    let deadline = after(AdhocLimits::DEFAULT_INVITATION_TTL);
    activate(&mut b, &in_time, before(deadline, MS));
    let err = activate_on(&mut b, &late, "dev-x", deadline).unwrap_err();
    assert_eq!(err, AdhocError::InvitationExpired { at: deadline });
    assert!(
        err.to_string()
            .contains("expired at 2026-01-04T00:00:00Z without being activated"),
        "{err}"
    );
}

#[test]
pub(super) fn an_invitation_activates_once_only() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let act = activate(&mut b, &inv, after(HOUR));
    let used = AdhocError::InvitationUsed {
        at: act.activated_at,
    };
    assert_eq!(
        activate_on(&mut b, &inv, "dev-user-pc", after(2 * HOUR)),
        Err(used.clone())
    );
    assert_eq!(
        activate_on(&mut b, &inv, "dev-other", after(2 * HOUR)),
        Err(used.clone())
    );
    assert!(used.to_string().contains("already used"));
    // Still "used" once the session is over, not "expired" or "ended".
    assert_eq!(
        activate_on(&mut b, &inv, "dev-other", after(3 * DAY)),
        Err(used)
    );
}

#[test]
pub(super) fn a_computer_with_a_permanent_agent_is_refused_and_the_invitation_stays_usable() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let err = b
        .activate(&inv.token, &inv.code, true, device("dev-managed"), T0)
        .unwrap_err();
    assert_eq!(
        err,
        AdhocError::PermanentAgent {
            device_id: device("dev-managed")
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("cannot be used on a computer that already runs the permanent"),
        "{text}"
    );
    assert!(text.contains("stays valid for another computer"), "{text}");
    assert_eq!(b.get(inv.session).unwrap().failed_attempts(), 0);
    // A wrong code is a wrong code first, agent or not.
    assert_eq!(
        b.activate(
            &inv.token,
            &wrong_code(&inv),
            true,
            device("dev-managed"),
            T0
        ),
        Err(AdhocError::WrongCode { attempts_left: 4 })
    );
    activate_on(&mut b, &inv, "dev-unmanaged", T0).unwrap();
}

#[test]
pub(super) fn an_unknown_or_malformed_token_is_refused() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let stranger = InvitationToken::from_random([7; TOKEN_BYTES]);
    assert_eq!(
        b.activate(&stranger, &inv.code, false, device("dev-x"), T0),
        Err(AdhocError::UnknownInvitation)
    );
    let err = InvitationToken::parse("abc").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid invitation.token 3 characters (expected 32 hex digits)"
    );
    assert!(InvitationToken::parse(&"g".repeat(32)).is_err());
    assert!(InvitationToken::parse(&"a".repeat(34)).is_err());
}

#[test]
pub(super) fn an_invitation_ended_before_activation_cannot_be_activated() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    b.end_now(inv.session, EndedBy::Technician { id: ALICE }, after(MS))
        .unwrap();
    let err = activate_on(&mut b, &inv, "dev-x", after(HOUR)).unwrap_err();
    assert_eq!(
        err,
        AdhocError::SessionEnded {
            id: inv.session,
            at: after(MS),
            by: EndedBy::Technician { id: ALICE }
        }
    );
    assert!(err.to_string().contains("by technician 1"), "{err}");
}
