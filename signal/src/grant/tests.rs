//! Grants in virtual time: every instant is written with its offset, so each expectation
//! can be read against the wall clock of the zone it is about.

use super::*;

pub(super) const BERLIN: &str = "Europe/Berlin";
pub(super) const NEW_YORK: &str = "America/New_York";

/// An instant written in RFC 3339 (`2026-03-29T03:00+02:00`).
pub(super) fn at(text: &str) -> UnixMillis {
    let ts: Timestamp = text.parse().expect("test instants are well formed");
    UnixMillis(u64::try_from(ts.as_millisecond()).expect("after 1970"))
}

pub(super) fn minus_ms(t: UnixMillis, ms: u64) -> UnixMillis {
    UnixMillis(t.0 - ms)
}

pub(super) fn date(text: &str) -> Date {
    text.parse().expect("test dates are well formed")
}

pub(super) fn hm(text: &str) -> LocalTime {
    text.parse().expect("test times are well formed")
}

pub(super) fn window(start: &str, end: &str) -> DailyWindow {
    DailyWindow::every_day(hm(start), hm(end))
}

pub(super) fn request(
    validity: Validity,
    daily: Option<DailyWindow>,
    of: ZoneOf,
    zone: &str,
    mode: CredentialMode,
) -> GrantRequest {
    GrantRequest {
        schedule: Schedule::new(validity, daily).expect("a valid schedule"),
        zone: GrantZone {
            of,
            name: ZoneName::new(zone).expect("a known zone"),
        },
        credential_mode: mode,
    }
}

/// Credentials asked at each connection, in the customer's zone.
pub(super) fn asking(validity: Validity, daily: Option<DailyWindow>, zone: &str) -> GrantRequest {
    request(
        validity,
        daily,
        ZoneOf::Customer,
        zone,
        CredentialMode::AskEachConnection,
    )
}

pub(super) fn with_customer_credentials(validity: Validity) -> GrantRequest {
    request(
        validity,
        None,
        ZoneOf::Customer,
        BERLIN,
        CredentialMode::CustomerCredentials,
    )
}

pub(super) fn granted(request: GrantRequest, approved_at: UnixMillis) -> Grant {
    let (grant, adjustment) =
        approve(request, &GrantPolicy::default(), approved_at).expect("approved");
    assert_eq!(adjustment, Adjustment::AsRequested);
    grant
}

pub(super) fn capping() -> GrantPolicy {
    GrantPolicy {
        over_cap: OverCap::Cap,
        ..GrantPolicy::default()
    }
}

/// A window grant in `zone` valid for the whole of 2026.
pub(super) fn year_window(zone: &str, daily: DailyWindow) -> Grant {
    let range = Validity::DateRange {
        first: date("2026-01-01"),
        last: date("2026-12-31"),
    };
    granted(asking(range, Some(daily), zone), at("2025-12-01T00:00Z"))
}

pub(super) fn outside(next_open: &str) -> Result<(), GrantRefusal> {
    Err(GrantRefusal::OutsideWindow {
        next_open: Some(at(next_open)),
    })
}

// Validity.

#[test]
fn a_days_grant_asking_credentials_each_time_may_run_past_two_weeks() {
    let approved = at("2026-01-10T10:00+01:00");
    let grant = granted(asking(Validity::Days { days: 30 }, None, BERLIN), approved);
    let end = at("2026-02-09T10:00+01:00");
    assert_eq!(grant.valid_from(), approved);
    assert_eq!(grant.expires_at(), Some(end));
    assert_eq!(grant.check(approved), Ok(()));
    assert_eq!(grant.check(at("2026-02-01T03:00+01:00")), Ok(()));
    assert_eq!(grant.check(minus_ms(end, 1)), Ok(()));
    assert_eq!(grant.check(end), Err(GrantRefusal::Expired { at: end }));
    assert_eq!(grant.next_open(end), None);
}

#[test]
fn days_are_calendar_days_so_a_dst_change_makes_one_an_hour_shorter() {
    let grant = granted(
        asking(Validity::Days { days: 3 }, None, BERLIN),
        at("2026-03-27T10:00+01:00"),
    );
    // 10:00 on the clock three days later, 71 hours on.
    assert_eq!(grant.expires_at(), Some(at("2026-03-30T10:00+02:00")));
}

#[test]
fn a_date_range_depends_on_whose_midnight_it_is() {
    let range = Validity::DateRange {
        first: date("2026-06-01"),
        last: date("2026-06-10"),
    };
    let approved = at("2026-05-20T12:00Z");
    let customer = granted(
        request(
            range,
            None,
            ZoneOf::Customer,
            BERLIN,
            CredentialMode::AskEachConnection,
        ),
        approved,
    );
    let technician = granted(
        request(
            range,
            None,
            ZoneOf::Technician,
            NEW_YORK,
            CredentialMode::AskEachConnection,
        ),
        approved,
    );
    // 00:30 on June 1 in Berlin is 18:30 on May 31 in New York.
    let first_night = at("2026-05-31T22:30Z");
    assert_eq!(customer.check(first_night), Ok(()));
    let ny_start = at("2026-06-01T00:00-04:00");
    assert_eq!(
        technician.check(first_night),
        Err(GrantRefusal::NotYetValid {
            valid_from: ny_start,
            next_open: Some(ny_start)
        })
    );
    // 01:30 on June 11 in Berlin is 19:30 on June 10 in New York.
    let last_night = at("2026-06-10T23:30Z");
    let berlin_end = at("2026-06-11T00:00+02:00");
    assert_eq!(
        customer.check(last_night),
        Err(GrantRefusal::Expired { at: berlin_end })
    );
    assert_eq!(technician.check(last_night), Ok(()));
    assert_eq!(technician.expires_at(), Some(at("2026-06-11T00:00-04:00")));
}

#[test]
fn a_date_range_approved_midway_starts_at_approval_and_one_already_over_is_refused() {
    let range = Validity::DateRange {
        first: date("2026-06-01"),
        last: date("2026-06-10"),
    };
    let midway = at("2026-06-05T15:00+02:00");
    let grant = granted(asking(range, None, BERLIN), midway);
    assert_eq!(grant.valid_from(), midway);
    assert_eq!(grant.check(midway), Ok(()));

    let after = at("2026-06-11T00:00+02:00");
    assert_eq!(
        approve(asking(range, None, BERLIN), &GrantPolicy::default(), after),
        Err(GrantError::RangeAlreadyOver {
            last: date("2026-06-10")
        })
    );
}

#[test]
fn an_unlimited_grant_never_expires_until_revoked() {
    let approved = at("2026-01-10T10:00Z");
    let mut grant = granted(asking(Validity::Unlimited, None, BERLIN), approved);
    assert_eq!(grant.expires_at(), None);
    assert_eq!(grant.check(at("2099-12-31T23:59Z")), Ok(()));
    // A clock behind the approval is not trusted with it.
    assert_eq!(
        grant.check(minus_ms(approved, 1)),
        Err(GrantRefusal::NotYetValid {
            valid_from: approved,
            next_open: Some(approved)
        })
    );
    let revoked = at("2030-01-01T00:00Z");
    grant.revoke(revoked);
    assert_eq!(
        grant.check(at("2031-01-01T00:00Z")),
        Err(GrantRefusal::Revoked { at: revoked })
    );
}

// The customer-credentials cap.

#[test]
fn customer_credentials_within_two_weeks_are_granted_as_requested() {
    let approved = at("2026-05-01T09:00+02:00");
    let grant = granted(
        with_customer_credentials(Validity::Days { days: 14 }),
        approved,
    );
    assert_eq!(grant.expires_at(), Some(at("2026-05-15T09:00+02:00")));
    let range = Validity::DateRange {
        first: date("2026-05-02"),
        last: date("2026-05-14"),
    };
    granted(with_customer_credentials(range), approved);
}

#[test]
fn customer_credentials_past_two_weeks_are_refused_under_the_default_policy() {
    let approved = at("2026-05-01T09:00+02:00");
    let cap_end = at("2026-05-15T09:00+02:00");
    assert_eq!(
        approve(
            with_customer_credentials(Validity::Days { days: 15 }),
            &GrantPolicy::default(),
            approved
        ),
        Err(GrantError::OverCustomerCredentialCap {
            cap_days: 14,
            cap_end,
            requested_end: Some(at("2026-05-16T09:00+02:00")),
        })
    );
    let unlimited = approve(
        with_customer_credentials(Validity::Unlimited),
        &GrantPolicy::default(),
        approved,
    )
    .unwrap_err();
    assert_eq!(
        unlimited.to_string(),
        "customer credentials allow access for at most 14 days from approval \
         (until 2026-05-15T07:00:00Z); this request runs with no end"
    );
}

#[test]
fn customer_credentials_past_two_weeks_are_capped_when_the_policy_says_so() {
    let approved = at("2026-05-01T09:00+02:00");
    let cap_end = at("2026-05-15T09:00+02:00");
    let (grant, adjustment) = approve(
        with_customer_credentials(Validity::Days { days: 30 }),
        &capping(),
        approved,
    )
    .unwrap();
    assert_eq!(
        adjustment,
        Adjustment::Capped {
            requested: Some(at("2026-05-31T09:00+02:00")),
            granted: cap_end
        }
    );
    assert_eq!(grant.adjustment(), adjustment);
    assert_eq!(grant.expires_at(), Some(cap_end));
    assert_eq!(grant.check(minus_ms(cap_end, 1)), Ok(()));
    assert_eq!(
        grant.check(cap_end),
        Err(GrantRefusal::Expired { at: cap_end })
    );

    let (_, unlimited) = approve(
        with_customer_credentials(Validity::Unlimited),
        &capping(),
        approved,
    )
    .unwrap();
    assert_eq!(
        unlimited,
        Adjustment::Capped {
            requested: None,
            granted: cap_end
        }
    );
}

#[test]
fn the_two_week_cap_is_fourteen_calendar_days_across_a_dst_change() {
    let (grant, _) = approve(
        with_customer_credentials(Validity::Unlimited),
        &capping(),
        at("2026-03-20T10:00+01:00"),
    )
    .unwrap();
    assert_eq!(grant.expires_at(), Some(at("2026-04-03T10:00+02:00")));
}

#[test]
fn a_customer_credentials_range_starting_after_the_cap_cannot_be_capped_into_anything() {
    let range = Validity::DateRange {
        first: date("2026-06-01"),
        last: date("2026-06-03"),
    };
    let approved = at("2026-05-01T09:00+02:00");
    assert_eq!(
        approve(with_customer_credentials(range), &capping(), approved),
        Err(GrantError::CapLeavesNothing {
            cap_days: 14,
            cap_end: at("2026-05-15T09:00+02:00"),
            valid_from: at("2026-06-01T00:00+02:00"),
        })
    );
}

#[test]
fn a_group_may_set_a_shorter_cap_but_not_a_longer_one() {
    let approved = at("2026-05-01T09:00+02:00");
    let week = GrantPolicy {
        customer_credentials_max_days: 7,
        ..GrantPolicy::default()
    };
    let days = |days| with_customer_credentials(Validity::Days { days });
    assert!(approve(days(7), &week, approved).is_ok());
    assert!(matches!(
        approve(days(8), &week, approved),
        Err(GrantError::OverCustomerCredentialCap { cap_days: 7, .. })
    ));
    for bad in [0, 15] {
        let policy = GrantPolicy {
            customer_credentials_max_days: bad,
            ..GrantPolicy::default()
        };
        let err = approve(days(1), &policy, approved).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid policy.customer_credentials_max_days {bad} (expected 1..=14)")
        );
    }
}

// Credential modes.

#[test]
fn a_credential_mode_the_group_does_not_allow_is_refused() {
    let policy = GrantPolicy {
        allowed_modes: [CredentialMode::AskEachConnection].into(),
        ..GrantPolicy::default()
    };
    let approved = at("2026-05-01T09:00+02:00");
    let err = approve(
        with_customer_credentials(Validity::Days { days: 1 }),
        &policy,
        approved,
    )
    .unwrap_err();
    assert_eq!(
        err,
        GrantError::ModeNotAllowed {
            mode: CredentialMode::CustomerCredentials,
            allowed: vec![CredentialMode::AskEachConnection],
        }
    );
    assert_eq!(
        err.to_string(),
        "credential mode customer_credentials is not allowed by the group's policy \
         (allowed: ask_each_connection)"
    );
    assert!(approve(
        asking(Validity::Days { days: 1 }, None, BERLIN),
        &policy,
        approved
    )
    .is_ok());
}

// Revocation.

#[test]
fn revocation_refuses_from_its_time_on_and_the_earliest_one_wins() {
    let approved = at("2026-05-01T09:00+02:00");
    let mut grant = granted(asking(Validity::Days { days: 10 }, None, BERLIN), approved);
    let revoked = at("2026-05-03T12:00+02:00");
    grant.revoke(revoked);
    // A pure function of `now`: before the revocation it was valid.
    assert_eq!(grant.check(minus_ms(revoked, 1)), Ok(()));
    assert_eq!(
        grant.check(revoked),
        Err(GrantRefusal::Revoked { at: revoked })
    );
    assert_eq!(grant.next_open(approved), Some(approved));
    assert_eq!(grant.next_open(revoked), None);
    // Heard again later (the target's copy, say): the earlier time stays.
    grant.revoke(at("2026-05-04T00:00+02:00"));
    assert_eq!(grant.revoked_at(), Some(revoked));
    // Revocation wins over expiry in the reason given.
    assert_eq!(
        grant.check(at("2026-06-01T00:00Z")),
        Err(GrantRefusal::Revoked { at: revoked })
    );
}

// Serialization.

#[test]
fn a_request_reads_back_from_json_as_written() {
    let json = r#"{"schedule":{"validity":{"kind":"date_range","first":"2026-06-01","last":"2026-06-30"},"daily":{"start":"22:00","end":"06:00","days":["mon","tue","wed","thu","fri"]}},"zone":{"of":"technician","name":"America/New_York"},"credential_mode":"ask_each_connection"}"#;
    let parsed: GrantRequest = serde_json::from_str(json).unwrap();
    assert_eq!(
        parsed.schedule.daily(),
        Some(DailyWindow {
            days: Weekdays::MONDAY_TO_FRIDAY,
            ..window("22:00", "06:00")
        })
    );
    assert_eq!(serde_json::to_string(&parsed).unwrap(), json);

    // Every day is the default and is left out; zone names take the database's spelling.
    let short = r#"{"schedule":{"validity":{"kind":"days","days":3},"daily":{"start":"08:00","end":"18:00"}},"zone":{"of":"customer","name":"europe/berlin"},"credential_mode":"customer_credentials"}"#;
    let parsed: GrantRequest = serde_json::from_str(short).unwrap();
    assert_eq!(parsed.zone.name.as_str(), BERLIN);
    assert_eq!(
        serde_json::to_string(&parsed).unwrap(),
        short.replace("europe/berlin", BERLIN)
    );
}

#[test]
fn a_grant_round_trips_through_json_with_its_cap_and_revocation() {
    let (mut grant, _) = approve(
        with_customer_credentials(Validity::Unlimited),
        &capping(),
        at("2026-05-01T09:00+02:00"),
    )
    .unwrap();
    grant.revoke(at("2026-05-02T09:00+02:00"));
    let json = serde_json::to_string(&grant).unwrap();
    let back: Grant = serde_json::from_str(&json).unwrap();
    assert_eq!(back, grant);
    assert_eq!(
        back.check(at("2026-05-03T00:00Z")),
        grant.check(at("2026-05-03T00:00Z"))
    );

    let weekly = year_window(BERLIN, window("22:00", "06:00"));
    let back: Grant = serde_json::from_str(&serde_json::to_string(&weekly).unwrap()).unwrap();
    assert_eq!(back, weekly);
    let policy: GrantPolicy =
        serde_json::from_str(&serde_json::to_string(&capping()).unwrap()).unwrap();
    assert_eq!(policy, capping());
}

#[test]
fn impossible_request_configs_are_refused_naming_the_field_and_range() {
    let wrap = |schedule: &str, zone: &str, mode: &str| {
        format!(
            r#"{{"schedule":{schedule},"zone":{{"of":"customer","name":"{zone}"}},"credential_mode":"{mode}"}}"#
        )
    };
    let days = |n: &str| format!(r#"{{"validity":{{"kind":"days","days":{n}}}}}"#);
    let range = |a: &str, b: &str| {
        format!(r#"{{"validity":{{"kind":"date_range","first":"{a}","last":"{b}"}}}}"#)
    };
    let daily = |w: &str| format!(r#"{{"validity":{{"kind":"unlimited"}},"daily":{w}}}"#);
    let ask = "ask_each_connection";
    let cases = [
        (
            wrap(&days("0"), BERLIN, ask),
            "invalid schedule.validity.days 0 (expected 1..=3660)",
        ),
        (
            wrap(&days("3661"), BERLIN, ask),
            "invalid schedule.validity.days 3661 (expected 1..=3660)",
        ),
        (wrap(&days("-1"), BERLIN, ask), "invalid value"),
        (
            wrap(&range("2026-03-10", "2026-03-01"), BERLIN, ask),
            "invalid schedule.validity.last 2026-03-01 (expected a day on or after the first day 2026-03-10)",
        ),
        (
            wrap(&range("2026-01-01", "2036-12-31"), BERLIN, ask),
            "(expected a range of 1..=3660 days from 2026-01-01 (this one has 4018))",
        ),
        (wrap(&range("2026-02-30", "2026-03-01"), BERLIN, ask), "invalid date \"2026-02-30\""),
        (wrap(&range("2026-3-1", "2026-03-01"), BERLIN, ask), "invalid date \"2026-3-1\""),
        (wrap(&range("1969-12-31", "2026-03-01"), BERLIN, ask), "invalid date"),
        (
            wrap(&daily(r#"{"start":"08:00","end":"08:00"}"#), BERLIN, ask),
            "invalid schedule.daily.end 08:00 (expected a time other than the start 08:00",
        ),
        (
            wrap(&daily(r#"{"start":"25:00","end":"08:00"}"#), BERLIN, ask),
            "invalid schedule.daily.start \"25:00\" (expected a time of day HH:MM, 00:00..=23:59)",
        ),
        (
            wrap(&daily(r#"{"start":"08:00","end":"8:00"}"#), BERLIN, ask),
            "invalid schedule.daily.end \"8:00\"",
        ),
        (
            wrap(&daily(r#"{"start":"08:00","end":"18:00","days":[]}"#), BERLIN, ask),
            "invalid schedule.daily.days [] (expected at least one of mon",
        ),
        (
            wrap(&daily(r#"{"start":"08:00","end":"18:00","days":["monday"]}"#), BERLIN, ask),
            "invalid schedule.daily.days \"monday\"",
        ),
        (
            wrap(&days("3"), "Mars/Olympus_Mons", ask),
            "unknown time zone \"Mars/Olympus_Mons\" in zone.name",
        ),
        (wrap(&days("3"), "", ask), "unknown time zone \"\" in zone.name"),
        (wrap(&days("3"), BERLIN, "root"), "unknown variant `root`"),
        (
            wrap(r#"{"validity":{"kind":"forever"}}"#, BERLIN, ask),
            "unknown variant `forever`",
        ),
        (
            wrap(r#"{"validity":{"kind":"days","days":3},"extra":1}"#, BERLIN, ask),
            "unknown field `extra`",
        ),
    ];
    for (json, expected) in cases {
        let err = serde_json::from_str::<GrantRequest>(&json).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{json}\n  gave {err}\n  expected {expected}"
        );
    }
}

#[test]
fn a_stored_grant_with_inconsistent_instants_is_refused() {
    let grant = granted(
        asking(Validity::Days { days: 3 }, None, BERLIN),
        at("2026-05-01T09:00+02:00"),
    );
    let good: serde_json::Value = serde_json::to_value(&grant).unwrap();
    let edits: [(&str, serde_json::Value, &str); 3] = [
        (
            "expires_at",
            grant.valid_from().0.into(),
            "invalid grant.expires_at",
        ),
        (
            "valid_from",
            (grant.approved_at().0 - 1).into(),
            "invalid grant.valid_from",
        ),
        (
            "adjustment",
            serde_json::json!({"kind": "capped", "requested": null, "granted": 5}),
            "invalid grant.adjustment",
        ),
    ];
    for (field, value, expected) in edits {
        let mut bad = good.clone();
        bad[field] = value;
        let err = serde_json::from_value::<Grant>(bad).unwrap_err();
        assert!(err.to_string().contains(expected), "{field}: {err}");
    }
}

#[test]
fn a_refusal_reads_as_a_sentence_with_utc_times() {
    assert_eq!(
        outside("2026-03-29T03:00+02:00").unwrap_err().to_string(),
        "outside the grant's daily window; it next opens at 2026-03-29T01:00:00Z"
    );
    assert_eq!(
        GrantRefusal::OutsideWindow { next_open: None }.to_string(),
        "outside the grant's daily window; it does not open again"
    );
}

#[test]
fn schedules_read_as_words_not_as_debug_structs() {
    let s = Schedule::new(Validity::Days { days: 3 }, None).unwrap();
    assert_eq!(s.to_string(), "for 3 days");
    let mut daily = window("09:00", "17:00");
    daily.days = Weekdays::MONDAY_TO_FRIDAY;
    let s = Schedule::new(
        Validity::DateRange {
            first: date("2026-12-07"),
            last: date("2026-12-09"),
        },
        Some(daily),
    )
    .unwrap();
    assert_eq!(
        s.to_string(),
        "from 2026-12-07 to 2026-12-09, 09:00-17:00 Monday to Friday"
    );
    assert_eq!(Validity::Unlimited.to_string(), "until revoked");
    assert_eq!(
        Weekdays::of([jiff::civil::Weekday::Monday, jiff::civil::Weekday::Friday]).to_string(),
        "mon, fri"
    );
}
