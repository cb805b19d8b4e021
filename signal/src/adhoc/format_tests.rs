//! Limits, capabilities, codes and the JSON the broker persists, in virtual time.

use std::time::Duration;

use serde_json::{json, Value};

use super::tests::*;
use super::*;
use crate::time::UnixMillis;

// Limits, capabilities and codes.

#[test]
fn limits_out_of_range_are_refused_naming_the_range() {
    let base = AdhocLimits::default();
    let cases = [
        (
            AdhocLimits {
                per_technician: 0,
                ..base
            },
            "invalid limits.per_technician 0 (expected 1..=100)",
        ),
        (
            AdhocLimits {
                per_company: 0,
                ..base
            },
            "invalid limits.per_company 0 (expected 1..=100000)",
        ),
        (
            AdhocLimits {
                lifetime: Duration::from_secs(30),
                ..base
            },
            "invalid limits.lifetime_ms 30000 (expected 60000..=604800000 ms, 1 minute to 7 days)",
        ),
        (
            AdhocLimits {
                lifetime: 8 * DAY,
                ..base
            },
            "invalid limits.lifetime_ms 691200000 (expected 60000..=604800000 ms, 1 minute to 7 days)",
        ),
        (
            AdhocLimits {
                invitation_ttl: 31 * DAY,
                ..base
            },
            "invalid limits.invitation_ttl_ms 2678400000 (expected 60000..=2592000000 ms, 1 minute to 30 days)",
        ),
        (
            AdhocLimits {
                max_code_attempts: 11,
                ..base
            },
            "invalid limits.max_code_attempts 11 (expected 1..=10)",
        ),
    ];
    for (limits, message) in cases {
        assert_eq!(limits.validate().unwrap_err().to_string(), message);
        assert_eq!(AdhocBook::new(limits).unwrap_err().to_string(), message);
        let mut b = book();
        assert!(b.set_limits(limits).is_err());
        assert_eq!(b.limits(), &base);
    }
    assert_eq!(
        base,
        AdhocLimits {
            per_technician: 1,
            per_company: 5,
            lifetime: DAY,
            invitation_ttl: 3 * DAY,
            max_code_attempts: 5,
        }
    );
}

#[test]
fn capabilities_are_a_set_written_by_name() {
    let set = Capabilities::of([
        Capability::FileManager,
        Capability::RemoteControl,
        Capability::FileManager,
    ]);
    assert_eq!(
        serde_json::to_string(&set).unwrap(),
        r#"["remote_control","file_manager"]"#
    );
    assert_eq!(
        serde_json::from_str::<Capabilities>(r#"["file_manager","remote_control"]"#).unwrap(),
        set
    );
    assert!(set.contains(Capability::FileManager));
    assert!(!set.contains(Capability::Dashboard));
    let unknown = serde_json::from_str::<Capabilities>(r#"["screen_magic"]"#).unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("unknown variant `screen_magic`"),
        "{unknown}"
    );
    let twice = serde_json::from_str::<Capabilities>(r#"["dashboard","dashboard"]"#).unwrap_err();
    assert!(
        twice
            .to_string()
            .contains("capability dashboard listed twice"),
        "{twice}"
    );
    assert_eq!(format!("{set:?}"), "{RemoteControl, FileManager}");
}

#[test]
fn a_session_needs_an_available_capability() {
    let mut b = book();
    let err = b
        .create(ALICE, ACME, Capabilities::NONE, T0, entropy(1))
        .unwrap_err();
    assert_eq!(err, AdhocError::NoCapabilities);
    assert!(
        err.to_string().contains("available: remote_control"),
        "{err}"
    );
    let err = b
        .create(
            ALICE,
            ACME,
            Capabilities::of([Capability::RemoteControl, Capability::Dashboard]),
            T0,
            entropy(1),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dashboard is reserved and not available in ad-hoc sessions yet (available: remote_control)"
    );
    // Nothing was taken from the quota by the refusals.
    invite(&mut b, ALICE, 1, T0);
}

#[test]
fn a_new_session_at_an_absurd_time_is_refused() {
    let mut b = book();
    let err = create(&mut b, ALICE, ACME, 1, UnixMillis(u64::MAX)).unwrap_err();
    assert!(
        matches!(err, AdhocError::Invalid { field: "now", .. }),
        "{err}"
    );
}

#[test]
fn security_codes_read_back_as_typed() {
    let code = SecurityCode::from_random(0x00ab_cdef_1234);
    let shown = code.to_string();
    assert_eq!(shown.len(), 9);
    assert_eq!(shown.find('-'), Some(4));
    assert_eq!(SecurityCode::parse(&shown).unwrap(), code);
    assert_eq!(
        SecurityCode::parse(&format!("  {}  ", shown.to_lowercase().replace('-', ""))).unwrap(),
        code
    );
    assert_eq!(
        SecurityCode::parse("OOOO-IILL").unwrap(),
        SecurityCode::parse("0000-1111").unwrap()
    );
    // Only the low 40 bits count; different bits give different codes.
    assert_eq!(
        SecurityCode::from_random(5 | (1 << 40)),
        SecurityCode::from_random(5)
    );
    assert_ne!(
        SecurityCode::from_random(1),
        SecurityCode::from_random(1 << 39)
    );
    assert_eq!(
        SecurityCode::parse("UUUU-0000").unwrap_err().to_string(),
        "invalid security_code 'U' (expected letters and digits only, no U)"
    );
    assert_eq!(
        SecurityCode::parse("ABCD-EFG").unwrap_err().to_string(),
        "invalid security_code 7 characters (expected 8 characters (dashes and spaces do not count))"
    );
    assert!(SecurityCode::parse("ABCD-EFGH-J").is_err());
    assert!(SecurityCode::parse("ABCD-EFGé").is_err());
    assert!(SecurityCode::parse("").is_err());
}

#[test]
fn tokens_are_url_safe_hex_and_read_back_pasted() {
    let token = InvitationToken::from_random(
        *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xfa\xfb\xfc\xfd\xfe\xff",
    );
    let shown = token.to_string();
    assert_eq!(shown, "00010203040506070809fafbfcfdfeff");
    assert!(shown
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(
        InvitationToken::parse(&format!(" {} \n", shown.to_uppercase())).unwrap(),
        token
    );
    assert_eq!(InvitationToken::ENTROPY_BITS as usize, TOKEN_BYTES * 8);
}

#[test]
fn device_ids_are_checked() {
    assert_eq!(
        device("dev-0123456789abcdef").as_str(),
        "dev-0123456789abcdef"
    );
    for bad in ["", "dev 1", "dév", "dev\n"] {
        let err = DeviceId::new(bad).unwrap_err();
        assert!(err.to_string().starts_with("invalid device_id"), "{err}");
    }
    assert!(DeviceId::new(&"d".repeat(DeviceId::MAX_CHARS)).is_ok());
    assert!(DeviceId::new(&"d".repeat(DeviceId::MAX_CHARS + 1)).is_err());
}

#[test]
fn secrets_never_show_in_debug_output_or_in_the_stored_book() {
    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let token = inv.token.to_string();
    let code = inv.code.to_string();
    let compact_code = code.replace('-', "");
    for text in [
        format!("{inv:?}"),
        format!("{:?}", entropy(1)),
        format!("{b:?}"),
        serde_json::to_string(&b).unwrap(),
    ] {
        assert!(!text.contains(&token), "{text}");
        assert!(
            !text.contains(&code) && !text.contains(&compact_code),
            "{text}"
        );
    }
    // The invitation itself, given to the technician, does carry them.
    let json = serde_json::to_string(&inv).unwrap();
    assert!(json.contains(&token) && json.contains(&code));
}

// JSON.

/// A book with a session in every state (closure recorded or not).
fn book_in_every_state() -> (AdhocBook, Invitation) {
    let mut b = book_with(roomy());
    let invited = invite(&mut b, ALICE, 1, T0);
    let active = invite(&mut b, ALICE, 2, T0);
    activate(&mut b, &active, after(HOUR));
    let ended_waiting = invite(&mut b, ALICE, 3, T0);
    b.end_now(ended_waiting.session, EndedBy::Technician { id: ALICE }, T0)
        .unwrap();
    let ended_active = invite(&mut b, BOB, 4, T0);
    activate(&mut b, &ended_active, T0);
    b.end_now(
        ended_active.session,
        EndedBy::Administrator { id: ALICE },
        after(MS),
    )
    .unwrap();
    let burned = invite(&mut b, BOB, 5, T0);
    let wrong = wrong_code(&burned);
    for _ in 0..5 {
        let _ = b.activate(&burned.token, &wrong, false, device("dev-x"), T0);
    }
    let expired = create(&mut b, BOB, ACME, 6, before(T0, 2 * DAY)).unwrap();
    activate(&mut b, &expired, before(T0, 2 * DAY));
    let never = create(&mut b, BOB, ACME, 7, before(T0, 4 * DAY)).unwrap();
    assert_eq!(b.poll_expired(T0).len(), 2);
    assert_eq!(
        b.get(never.session).unwrap().status(T0),
        AdhocStatus::InvitationExpired {
            at: never.expires_at
        }
    );
    // And one that ran out but is not polled yet.
    let unpolled = create(&mut b, BOB, ACME, 8, before(T0, DAY)).unwrap();
    activate(&mut b, &unpolled, before(T0, DAY));
    (b, invited)
}

#[test]
fn the_book_round_trips_through_json_in_every_state() {
    let (b, invited) = book_in_every_state();
    let json = serde_json::to_string_pretty(&b).unwrap();
    let mut back: AdhocBook = serde_json::from_str(&json).unwrap();
    assert_eq!(back, b);
    for s in b.sessions() {
        assert_eq!(back.get(s.id()).unwrap().status(T0), s.status(T0));
    }
    // It carries on where it left off: tokens, quotas, deadlines and ids.
    activate(&mut back, &invited, T0);
    assert_eq!(back.poll_expired(T0).len(), 1);
    let next = invite(&mut back, TechnicianId(9), 9, T0);
    assert_eq!(next.session, AdhocId(9));
}

#[test]
fn limits_events_invitations_and_activations_round_trip() {
    let limits = AdhocLimits::default();
    let json = serde_json::to_value(limits).unwrap();
    assert_eq!(
        json,
        json!({
            "per_technician": 1,
            "per_company": 5,
            "lifetime_ms": 86_400_000u64,
            "invitation_ttl_ms": 259_200_000u64,
            "max_code_attempts": 5
        })
    );
    assert_eq!(serde_json::from_value::<AdhocLimits>(json).unwrap(), limits);

    let mut b = book();
    let inv = invite(&mut b, ALICE, 1, T0);
    let back: Invitation = serde_json::from_str(&serde_json::to_string(&inv).unwrap()).unwrap();
    assert_eq!(back, inv);
    let act = activate(&mut b, &inv, T0);
    let back: Activation = serde_json::from_str(&serde_json::to_string(&act).unwrap()).unwrap();
    assert_eq!(back, act);
    let event = b
        .end_now(inv.session, EndedBy::Technician { id: ALICE }, T0)
        .unwrap();
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["event"], "ended");
    assert_eq!(json["by"], json!({"kind": "technician", "id": 1}));
    assert_eq!(serde_json::from_value::<AdhocEvent>(json).unwrap(), event);
    let status = b.get(inv.session).unwrap().status(T0);
    let back: AdhocStatus = serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
    assert_eq!(back, status);
}

/// The book's JSON with `edit` applied, read back: the error's text.
fn refusal(edit: impl FnOnce(&mut Value)) -> String {
    let (b, _) = book_in_every_state();
    let mut json = serde_json::to_value(&b).unwrap();
    edit(&mut json);
    serde_json::from_value::<AdhocBook>(json)
        .unwrap_err()
        .to_string()
}

/// The session with `id` in a book's JSON.
fn session(json: &mut Value, id: u64) -> &mut Value {
    json["sessions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == id)
        .unwrap()
}

#[test]
fn invalid_json_is_refused_naming_what_is_wrong() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|j| j["extra"] = json!(1)), "unknown field `extra`"),
        (
            Box::new(|j| j["limits"]["per_company"] = json!(0)),
            "invalid limits.per_company 0 (expected 1..=100000)",
        ),
        (
            Box::new(|j| j["next_id"] = json!(0)),
            "invalid book.next_id 0",
        ),
        (
            Box::new(|j| j["next_id"] = json!(3)),
            "invalid book.sessions.id 3 (expected 1..3 (below next_id))",
        ),
        (
            Box::new(|j| {
                let copy = session(j, 1).clone();
                j["sessions"].as_array_mut().unwrap().push(copy);
            }),
            "a token no other session has",
        ),
        (
            Box::new(|j| session(j, 1)["invitation"]["token_sha256"] = json!("zz")),
            "64 hex digits (a SHA-256 digest)",
        ),
        (
            Box::new(|j| session(j, 1)["capabilities"] = json!([])),
            "at least one capability",
        ),
        (
            Box::new(|j| session(j, 1)["capabilities"] = json!(["x_ray"])),
            "unknown variant `x_ray`",
        ),
        (
            Box::new(|j| session(j, 1)["closed"] = json!({"reason": "expired", "at": 5})),
            "expected an activated session to expire",
        ),
        (
            Box::new(|j| session(j, 2)["closed"] = json!({"reason": "expired", "at": 5})),
            "expected the activation's expires_at",
        ),
        (
            Box::new(|j| session(j, 1)["closed"] = json!({"reason": "gone", "at": 5})),
            "unknown variant `gone`",
        ),
        (
            Box::new(|j| {
                let end = session(j, 1)["invitation"]["expires_at"].clone();
                session(j, 1)["activated"] =
                    json!({"device_id": "dev-x", "at": end, "expires_at": end});
            }),
            "invalid session.activated.at",
        ),
        (
            Box::new(|j| session(j, 2)["activated"]["device_id"] = json!("")),
            "invalid device_id",
        ),
        (
            Box::new(|j| session(j, 5)["invitation"]["failed_attempts"] = json!(0)),
            "a wrong code recorded",
        ),
        (
            Box::new(|j| session(j, 1)["created_at"] = json!("yesterday")),
            "invalid type: string \"yesterday\"",
        ),
    ];
    for (edit, expected) in cases {
        let message = refusal(edit);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
    assert!(serde_json::from_str::<AdhocBook>("{").is_err());
    assert!(serde_json::from_str::<AdhocBook>("[]").is_err());
}
