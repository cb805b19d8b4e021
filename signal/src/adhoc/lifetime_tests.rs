//! Ad-hoc sessions in virtual time, continued: the 24-hour lifetime, connections within it,
//! and ending (by either side, or by the clock). Shared fixtures live in `tests`.

use super::tests::*;
use super::*;

// Lifetime and connections.

#[test]
pub(super) fn the_session_lives_24_hours_from_activation_not_creation_to_the_millisecond() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let activated = after(30 * HOUR);
    let act = activate(&mut b, &inv, activated);
    let deadline = activated.plus(DAY);
    assert_eq!(act.expires_at, deadline);
    // A day after creation it is still running.
    assert!(b.check_connect(inv.session, ALICE, after(DAY)).is_ok());
    assert!(b
        .check_connect(inv.session, ALICE, after(DAY + HOUR))
        .is_ok());
    let last = before(deadline, MS);
    assert_eq!(b.check_connect(inv.session, ALICE, last), Ok(act.clone()));
    assert!(act.is_live(last));
    let err = b.check_connect(inv.session, ALICE, deadline).unwrap_err();
    assert_eq!(
        err,
        AdhocError::SessionExpired {
            id: inv.session,
            at: deadline
        }
    );
    assert!(!act.is_live(deadline));
    assert!(
        err.to_string()
            .contains("ended by itself at 2026-01-03T06:00:00Z"),
        "{err}"
    );
}

#[test]
pub(super) fn the_technician_reconnects_any_number_of_times_while_the_session_is_active() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let act = activate(&mut b, &inv, T0);
    // A connection every three minutes for the whole day, each one ending in between:
    // connecting and disconnecting change nothing in the book.
    for i in 0..480u32 {
        let now = after(3 * 60 * 1000 * MS * i);
        assert_eq!(b.check_connect(inv.session, ALICE, now), Ok(act.clone()));
        assert_eq!(
            b.check_open(inv.session, ALICE, Capability::RemoteControl, now),
            Ok(act.clone())
        );
        assert!(b.poll_expired(now).is_empty());
    }
    assert_eq!(b.active_for_technician(ALICE, after(DAY - MS)), 1);
}

#[test]
pub(super) fn connecting_is_refused_with_the_reason_in_every_other_state() {
    let mut b = book_with(roomy());
    let waiting = invite(&mut b, ALICE, 1, T0);
    assert_eq!(
        b.check_connect(waiting.session, ALICE, T0),
        Err(AdhocError::NotActivated {
            id: waiting.session,
            invitation_expires_at: waiting.expires_at
        })
    );
    assert!(b
        .check_connect(waiting.session, ALICE, T0)
        .unwrap_err()
        .to_string()
        .contains("not activated yet"));
    assert_eq!(
        b.check_connect(waiting.session, ALICE, waiting.expires_at),
        Err(AdhocError::InvitationExpired {
            at: waiting.expires_at
        })
    );
    assert_eq!(
        b.check_connect(AdhocId(99), ALICE, T0),
        Err(AdhocError::UnknownSession { id: AdhocId(99) })
    );

    let active = invite(&mut b, ALICE, 2, T0);
    activate(&mut b, &active, T0);
    assert_eq!(
        b.check_connect(active.session, BOB, T0),
        Err(AdhocError::NotYours { id: active.session })
    );
    assert_eq!(
        b.check_open(active.session, ALICE, Capability::FileManager, T0),
        Err(AdhocError::CapabilityNotGranted {
            id: active.session,
            capability: Capability::FileManager
        })
    );
    b.end_now(active.session, EndedBy::User, after(HOUR))
        .unwrap();
    let err = b
        .check_connect(active.session, ALICE, after(HOUR))
        .unwrap_err();
    assert_eq!(
        err,
        AdhocError::SessionEnded {
            id: active.session,
            at: after(HOUR),
            by: EndedBy::User
        }
    );
    assert!(
        err.to_string().contains("by the user at the computer"),
        "{err}"
    );

    let burned = invite(&mut b, ALICE, 3, T0);
    let wrong = wrong_code(&burned);
    for _ in 0..5 {
        let _ = b.activate(&burned.token, &wrong, false, device("dev-x"), T0);
    }
    assert_eq!(
        b.check_connect(burned.session, ALICE, T0),
        Err(AdhocError::InvitationBurned {
            at: T0,
            attempts: 5
        })
    );
}

// Ending.

#[test]
pub(super) fn end_now_ends_at_once_and_names_the_host_to_stop() {
    let mut b = book_with(roomy());
    let inv = invite(&mut b, ALICE, 1, T0);
    activate(&mut b, &inv, T0);
    let now = after(5 * HOUR);
    // Only the session's own technician may end it as a technician.
    assert_eq!(
        b.end_now(inv.session, EndedBy::Technician { id: BOB }, now),
        Err(AdhocError::NotYours { id: inv.session })
    );
    let event = b
        .end_now(inv.session, EndedBy::Technician { id: ALICE }, now)
        .unwrap();
    assert_eq!(
        event,
        AdhocEvent::Ended {
            session: inv.session,
            technician: ALICE,
            company: ACME,
            device_id: Some(device("dev-user-pc")),
            by: EndedBy::Technician { id: ALICE },
            at: now,
        }
    );
    assert_eq!(event.host_to_stop(), Some(&device("dev-user-pc")));
    assert!(b.check_connect(inv.session, ALICE, now).is_err());
    // Ending twice says it is over already; the deadline later reports nothing.
    assert!(matches!(
        b.end_now(inv.session, EndedBy::Technician { id: ALICE }, now),
        Err(AdhocError::SessionEnded { .. })
    ));
    assert!(b.poll_expired(after(10 * DAY)).is_empty());

    // An administrator may end someone else's; an invitation has no host to stop.
    let waiting = invite(&mut b, ALICE, 2, T0);
    let event = b
        .end_now(waiting.session, EndedBy::Administrator { id: BOB }, T0)
        .unwrap();
    assert_eq!(event.host_to_stop(), None);
    assert_eq!(
        b.end_now(AdhocId(99), EndedBy::User, T0),
        Err(AdhocError::UnknownSession { id: AdhocId(99) })
    );
}

#[test]
pub(super) fn poll_expired_reports_each_expiry_once_in_deadline_order() {
    let mut b = book_with(roomy());
    let first = invite(&mut b, ALICE, 1, T0);
    activate_on(&mut b, &first, "dev-a", T0).unwrap();
    let second = invite(&mut b, ALICE, 2, T0);
    activate_on(&mut b, &second, "dev-b", after(HOUR)).unwrap();
    let unused = invite(&mut b, BOB, 3, T0);
    let ended = invite(&mut b, BOB, 4, T0);
    b.end_now(ended.session, EndedBy::User, T0).unwrap();

    assert_eq!(b.next_deadline(), Some(after(DAY)));
    assert!(b.poll_expired(before(after(DAY), MS)).is_empty());
    let events = b.poll_expired(after(DAY));
    assert_eq!(
        events,
        vec![AdhocEvent::Expired {
            session: first.session,
            technician: ALICE,
            company: ACME,
            device_id: device("dev-a"),
            at: after(DAY),
        }]
    );
    assert_eq!(events[0].host_to_stop(), Some(&device("dev-a")));
    assert!(b.poll_expired(after(DAY)).is_empty());
    assert_eq!(b.next_deadline(), Some(after(DAY + HOUR)));

    // Polled late, both deadlines come at once, each at its own instant, in order.
    let events = b.poll_expired(after(10 * DAY));
    assert_eq!(
        events,
        vec![
            AdhocEvent::Expired {
                session: second.session,
                technician: ALICE,
                company: ACME,
                device_id: device("dev-b"),
                at: after(DAY + HOUR),
            },
            AdhocEvent::InvitationExpired {
                session: unused.session,
                technician: BOB,
                company: ACME,
                at: unused.expires_at,
            },
        ]
    );
    assert_eq!(events[1].host_to_stop(), None);
    assert!(b.poll_expired(after(20 * DAY)).is_empty());
    assert_eq!(b.next_deadline(), None);
    assert_eq!(
        b.get(second.session).unwrap().status(after(20 * DAY)),
        AdhocStatus::Expired {
            at: after(DAY + HOUR)
        }
    );
}

#[test]
pub(super) fn ending_a_session_whose_time_ran_out_is_refused_and_left_for_poll_to_report() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    activate(&mut b, &inv, T0);
    let err = b
        .end_now(inv.session, EndedBy::Technician { id: ALICE }, after(DAY))
        .unwrap_err();
    assert_eq!(
        err,
        AdhocError::SessionExpired {
            id: inv.session,
            at: after(DAY)
        }
    );
    assert_eq!(b.poll_expired(after(DAY)).len(), 1);
    assert!(b.poll_expired(after(DAY)).is_empty());
}

#[test]
pub(super) fn a_clock_that_steps_back_never_makes_a_record_inconsistent() {
    let mut b = book_with(roomy());
    let inv = invite(&mut b, ALICE, 1, T0);
    let act = activate(&mut b, &inv, before(T0, HOUR));
    assert_eq!(act.activated_at, T0);
    let event = b
        .end_now(inv.session, EndedBy::User, before(T0, DAY))
        .unwrap();
    assert_eq!(event.at(), T0);
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(serde_json::from_str::<AdhocBook>(&json).unwrap(), b);
}

#[test]
pub(super) fn forget_closed_drops_old_records_and_their_tokens() {
    let mut b = book_with(roomy());
    let old = invite(&mut b, ALICE, 1, T0);
    b.end_now(old.session, EndedBy::User, T0).unwrap();
    let open = invite(&mut b, ALICE, 2, T0);
    assert_eq!(b.forget_closed(T0), 0);
    assert_eq!(b.forget_closed(after(MS)), 1);
    assert!(b.get(old.session).is_none());
    assert!(b.get(open.session).is_some());
    assert_eq!(
        activate_on(&mut b, &old, "dev-x", after(MS)),
        Err(AdhocError::UnknownInvitation)
    );
    // Ids are never handed out twice.
    let next = invite(&mut b, BOB, 3, after(MS));
    assert_eq!(next.session, AdhocId(3));
}

#[test]
pub(super) fn repeated_entropy_is_refused_rather_than_aliasing_a_session() {
    let mut b = book_with(roomy());
    invite(&mut b, ALICE, 1, T0);
    let err = create(&mut b, BOB, ACME, 1, T0).unwrap_err();
    assert!(matches!(
        err,
        AdhocError::Invalid {
            field: "entropy.token",
            ..
        }
    ));
    assert_eq!(b.active_for_technician(BOB, T0), 0);
}
