//! Daily windows in virtual time, across the 2026 DST changes in Berlin (03-29, 10-25) and
//! New York (03-08, 11-01). Instants carry their offset, to be read against the local clock.

use super::tests::{
    asking, at, date, granted, minus_ms, outside, window, year_window, BERLIN, NEW_YORK,
};
use super::*;

/// Open exactly over [open, close): refused 1 ms before, allowed at both ends' insides,
/// refused at `close` with `then` as the next opening.
fn assert_open_exactly(grant: &Grant, open: &str, close: &str, then: &str) {
    let (open, close) = (at(open), at(close));
    assert_eq!(
        grant.check(minus_ms(open, 1)),
        Err(GrantRefusal::OutsideWindow {
            next_open: Some(open)
        })
    );
    assert_eq!(grant.check(open), Ok(()));
    assert_eq!(grant.check(minus_ms(close, 1)), Ok(()));
    assert_eq!(grant.check(close), outside(then));
}

#[test]
fn a_daytime_window_keeps_its_wall_clock_hours_across_both_berlin_changes() {
    let grant = year_window(BERLIN, window("08:00", "18:00"));
    // Saturday before spring-forward (CET), Monday after (CEST).
    assert_open_exactly(
        &grant,
        "2026-03-28T08:00+01:00",
        "2026-03-28T18:00+01:00",
        "2026-03-29T08:00+02:00",
    );
    assert_open_exactly(
        &grant,
        "2026-03-30T08:00+02:00",
        "2026-03-30T18:00+02:00",
        "2026-03-31T08:00+02:00",
    );
    // Saturday before fall-back (CEST), the day itself and Monday (CET).
    assert_open_exactly(
        &grant,
        "2026-10-24T08:00+02:00",
        "2026-10-24T18:00+02:00",
        "2026-10-25T08:00+01:00",
    );
    assert_open_exactly(
        &grant,
        "2026-10-26T08:00+01:00",
        "2026-10-26T18:00+01:00",
        "2026-10-27T08:00+01:00",
    );
}

#[test]
fn a_daytime_window_keeps_its_wall_clock_hours_across_both_new_york_changes() {
    let grant = year_window(NEW_YORK, window("08:00", "18:00"));
    assert_open_exactly(
        &grant,
        "2026-03-07T08:00-05:00",
        "2026-03-07T18:00-05:00",
        "2026-03-08T08:00-04:00",
    );
    assert_open_exactly(
        &grant,
        "2026-03-08T08:00-04:00",
        "2026-03-08T18:00-04:00",
        "2026-03-09T08:00-04:00",
    );
    assert_open_exactly(
        &grant,
        "2026-10-31T08:00-04:00",
        "2026-10-31T18:00-04:00",
        "2026-11-01T08:00-05:00",
    );
    assert_open_exactly(
        &grant,
        "2026-11-01T08:00-05:00",
        "2026-11-01T18:00-05:00",
        "2026-11-02T08:00-05:00",
    );
}

#[test]
fn a_window_across_midnight_is_seven_hours_when_clocks_go_forward_and_nine_when_back() {
    let berlin = year_window(BERLIN, window("22:00", "06:00"));
    // Saturday 22:00 CET to Sunday 06:00 CEST: 7 hours.
    assert_open_exactly(
        &berlin,
        "2026-03-28T22:00+01:00",
        "2026-03-29T06:00+02:00",
        "2026-03-29T22:00+02:00",
    );
    assert_eq!(
        at("2026-03-29T06:00+02:00").since(at("2026-03-28T22:00+01:00")),
        std::time::Duration::from_secs(7 * 3600)
    );
    // Saturday 22:00 CEST to Sunday 06:00 CET: 9 hours, open through both 02:xx.
    assert_open_exactly(
        &berlin,
        "2026-10-24T22:00+02:00",
        "2026-10-25T06:00+01:00",
        "2026-10-25T22:00+01:00",
    );
    assert_eq!(berlin.check(at("2026-10-25T02:30+02:00")), Ok(()));
    assert_eq!(berlin.check(at("2026-10-25T02:30+01:00")), Ok(()));

    let new_york = year_window(NEW_YORK, window("22:00", "06:00"));
    assert_open_exactly(
        &new_york,
        "2026-03-07T22:00-05:00",
        "2026-03-08T06:00-04:00",
        "2026-03-08T22:00-04:00",
    );
    assert_open_exactly(
        &new_york,
        "2026-10-31T22:00-04:00",
        "2026-11-01T06:00-05:00",
        "2026-11-01T22:00-05:00",
    );
}

#[test]
fn a_window_starting_in_the_skipped_hour_opens_when_the_clock_jumps_past_it() {
    let berlin = year_window(BERLIN, window("02:30", "05:00"));
    // 02:30 CET the day before, as usual.
    assert_open_exactly(
        &berlin,
        "2026-03-28T02:30+01:00",
        "2026-03-28T05:00+01:00",
        // 02:30 does not exist on the 29th: 02:00 CET became 03:00 CEST.
        "2026-03-29T03:00+02:00",
    );
    assert_eq!(
        berlin.next_open(at("2026-03-28T12:00+01:00")),
        Some(at("2026-03-29T03:00+02:00"))
    );
    assert_open_exactly(
        &berlin,
        "2026-03-29T03:00+02:00",
        "2026-03-29T05:00+02:00",
        "2026-03-30T02:30+02:00",
    );

    let new_york = year_window(NEW_YORK, window("02:30", "04:00"));
    assert_open_exactly(
        &new_york,
        "2026-03-08T03:00-04:00",
        "2026-03-08T04:00-04:00",
        "2026-03-09T02:30-04:00",
    );
}

#[test]
fn a_window_wholly_inside_the_skipped_hour_does_not_open_that_day() {
    let berlin = year_window(BERLIN, window("02:10", "02:50"));
    assert_eq!(
        berlin.next_open(at("2026-03-28T03:00+01:00")),
        Some(at("2026-03-30T02:10+02:00"))
    );
    assert_eq!(
        berlin.check(at("2026-03-29T03:00+02:00")),
        outside("2026-03-30T02:10+02:00")
    );
}

#[test]
fn a_time_shown_twice_counts_at_its_first_showing_at_either_end_of_a_window() {
    // Starts in the repeated hour: opens at the first 02:30, and does not reopen at the second.
    let berlin = year_window(BERLIN, window("02:30", "04:00"));
    assert_open_exactly(
        &berlin,
        "2026-10-25T02:30+02:00",
        "2026-10-25T04:00+01:00",
        "2026-10-26T02:30+01:00",
    );
    let new_york = year_window(NEW_YORK, window("01:30", "03:00"));
    assert_open_exactly(
        &new_york,
        "2026-11-01T01:30-04:00",
        "2026-11-01T03:00-05:00",
        "2026-11-02T01:30-05:00",
    );

    // Ends in the repeated hour: closes at the first 02:30 although the clock shows 02:00 to
    // 02:30 again afterwards.
    let ends = year_window(BERLIN, window("22:00", "02:30"));
    assert_open_exactly(
        &ends,
        "2026-10-24T22:00+02:00",
        "2026-10-25T02:30+02:00",
        "2026-10-25T22:00+01:00",
    );
    assert_eq!(
        ends.check(at("2026-10-25T02:15+01:00")),
        outside("2026-10-25T22:00+01:00")
    );
}

#[test]
fn a_weekday_window_skips_the_weekend_and_says_when_it_reopens() {
    let weekdays = DailyWindow {
        days: Weekdays::MONDAY_TO_FRIDAY,
        ..window("08:00", "18:00")
    };
    let grant = year_window(NEW_YORK, weekdays);
    assert_eq!(grant.check(at("2026-10-30T12:00-04:00")), Ok(())); // Friday
                                                                   // Saturday, then Sunday (the DST change): Monday 08:00 EST.
    assert_eq!(
        grant.check(at("2026-10-31T12:00-04:00")),
        outside("2026-11-02T08:00-05:00")
    );
    assert_eq!(
        grant.check(at("2026-11-01T12:00-05:00")),
        outside("2026-11-02T08:00-05:00")
    );

    // Across midnight the window belongs to the evening it opens on: Friday's runs into
    // Saturday morning, and no window opens on Saturday or Sunday evening.
    let nights = DailyWindow {
        days: Weekdays::MONDAY_TO_FRIDAY,
        ..window("22:00", "06:00")
    };
    let grant = year_window(NEW_YORK, nights);
    assert_eq!(grant.check(at("2026-10-31T03:00-04:00")), Ok(()));
    assert_eq!(
        grant.check(at("2026-11-01T03:00-05:00")),
        outside("2026-11-02T22:00-05:00")
    );
}

#[test]
fn next_open_is_now_inside_the_window_and_none_once_over() {
    let range = Validity::DateRange {
        first: date("2026-06-01"),
        last: date("2026-06-02"),
    };
    let grant = granted(
        asking(range, Some(window("09:00", "17:00")), BERLIN),
        at("2026-05-01T12:00+02:00"),
    );
    let inside = at("2026-06-01T10:00+02:00");
    assert_eq!(grant.next_open(inside), Some(inside));
    // Before the range: the first window, not the start of the range.
    assert_eq!(
        grant.check(at("2026-05-31T12:00+02:00")),
        Err(GrantRefusal::NotYetValid {
            valid_from: at("2026-06-01T00:00+02:00"),
            next_open: Some(at("2026-06-01T09:00+02:00"))
        })
    );
    // After the last window but before the end of the last day.
    assert_eq!(
        grant.check(at("2026-06-02T20:00+02:00")),
        Err(GrantRefusal::OutsideWindow { next_open: None })
    );
    assert_eq!(grant.next_open(at("2026-06-03T00:00+02:00")), None);
}

#[test]
fn a_window_that_never_opens_while_the_grant_is_valid_is_refused() {
    let weekdays = DailyWindow {
        days: Weekdays::MONDAY_TO_FRIDAY,
        ..window("08:00", "18:00")
    };
    // Approved on a Saturday morning for one day: ends Sunday morning.
    let saturday = at("2026-10-31T09:00-04:00");
    let result = approve(
        asking(Validity::Days { days: 1 }, Some(weekdays), NEW_YORK),
        &GrantPolicy::default(),
        saturday,
    );
    assert_eq!(
        result,
        Err(GrantError::NeverOpens {
            valid_from: saturday,
            expires_at: Some(at("2026-11-01T09:00-05:00"))
        })
    );
    // Two days reach Monday.
    let grant = granted(
        asking(Validity::Days { days: 2 }, Some(weekdays), NEW_YORK),
        saturday,
    );
    assert_eq!(grant.check(saturday), outside("2026-11-02T08:00-05:00"));
}

/// Away from a DST change, a window is plain wall-clock membership; checked every 10
/// minutes through 2026 for windows by day, across midnight and on weekdays.
#[test]
fn away_from_transitions_a_window_is_plain_wall_clock_membership() {
    let windows = [
        window("08:00", "18:00"),
        window("22:00", "06:00"),
        DailyWindow {
            days: Weekdays::MONDAY_TO_FRIDAY,
            ..window("23:45", "00:15")
        },
    ];
    for zone in [BERLIN, NEW_YORK] {
        let tz = ZoneName::new(zone).unwrap().tz().clone();
        for w in windows {
            let grant = year_window(zone, w);
            let mut t = at("2026-01-02T00:00Z");
            let end = at("2026-12-30T00:00Z");
            while t < end {
                let ts = to_timestamp(t).unwrap();
                let near = |h: i64| {
                    let other = ts.checked_add(Span::new().hours(h)).unwrap();
                    tz.to_offset(other) != tz.to_offset(ts)
                };
                if !near(-26) && !near(26) {
                    let local = tz.to_datetime(ts);
                    let minute = u16::from(local.hour() as u8) * 60 + local.minute() as u16;
                    let (start, stop) = (w.start.minutes(), w.end.minutes());
                    let (inside, opened_on) = if start < stop {
                        (minute >= start && minute < stop, local.date())
                    } else if minute >= start {
                        (true, local.date())
                    } else {
                        (minute < stop, local.date().yesterday().unwrap())
                    };
                    let expected = inside && w.days.contains(opened_on.weekday());
                    assert_eq!(grant.check(t).is_ok(), expected, "{zone} {w:?} at {local}");
                }
                t = t.plus(std::time::Duration::from_secs(600));
            }
        }
    }
}
