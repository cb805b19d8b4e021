//! Words for people: durations, instants and rates as the agent, the viewer, the broker and
//! its console print them, so each says "9.8 ms", "in 23 h" and "2.4 Mbit/s" the same way
//! (never `Some(9.984ms)` or milliseconds since 1970).

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::time::UnixMillis;

/// A span as people read it: `0.4 ms`, `9.8 ms`, `120 ms`, `3.2 s`, `42 s`, `12 min`,
/// `5 h 12 min`, `3 days`. Two significant figures at most below ten of a unit.
pub fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    let s = (ms / 1e3).round() as u64;
    if ms < 9.95 {
        format!("{ms:.1} ms")
    } else if ms < 999.5 {
        format!("{ms:.0} ms")
    } else if ms < 9_950.0 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 48 * 3600 {
        match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) if h < 10 => format!("{h} h {m} min"),
            (h, _) => format!("{h} h"),
        }
    } else {
        format!("{} days", s / 86_400)
    }
}

/// When `at` is, seen from `now`: `in 23 h`, `3 min ago`, `now`.
pub fn relative(now: UnixMillis, at: UnixMillis) -> String {
    if at.0.abs_diff(now.0) < 1000 {
        "now".to_owned()
    } else if at > now {
        format!("in {}", duration(at.since(now)))
    } else {
        format!("{} ago", duration(now.since(at)))
    }
}

/// `at` on this computer's clock: `2026-12-07 14:05 CET`. UTC when the local zone is
/// unknown, and said so.
pub fn local_time(at: UnixMillis) -> String {
    let Ok(ms) = i64::try_from(at.0) else {
        return "never".to_owned();
    };
    let Ok(ts) = Timestamp::from_millisecond(ms) else {
        return "never".to_owned();
    };
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    ts.to_zoned(tz).strftime("%Y-%m-%d %H:%M %Z").to_string()
}

/// `at` both ways: `2026-12-07 14:05 CET (in 23 h)`.
pub fn when(now: UnixMillis, at: UnixMillis) -> String {
    format!("{} ({})", local_time(at), relative(now, at))
}

/// A bit rate: `850 kbit/s`, `2.4 Mbit/s`, `12 Mbit/s`.
pub fn rate(bits_per_second: f64) -> String {
    let b = bits_per_second.max(0.0);
    if b < 1e6 {
        format!("{:.0} kbit/s", b / 1e3)
    } else if b < 1e7 {
        format!("{:.1} Mbit/s", b / 1e6)
    } else {
        format!("{:.0} Mbit/s", b / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        let ms = Duration::from_millis;
        assert_eq!(duration(Duration::from_micros(9_984)), "10 ms");
        assert_eq!(duration(Duration::from_micros(9_840)), "9.8 ms");
        assert_eq!(duration(ms(120)), "120 ms");
        assert_eq!(duration(Duration::from_micros(3_249_249)), "3.2 s");
        assert_eq!(duration(ms(42_000)), "42 s");
        assert_eq!(duration(ms(12 * 60_000 + 5_000)), "12 min");
        assert_eq!(duration(ms(5 * 3_600_000 + 12 * 60_000)), "5 h 12 min");
        assert_eq!(duration(ms(23 * 3_600_000 + 59 * 60_000)), "23 h");
        assert_eq!(duration(ms(3 * 86_400_000)), "3 days");
    }

    #[test]
    fn instants_read_relative_to_now_both_ways() {
        let now = UnixMillis(1_796_773_466_690);
        assert_eq!(
            relative(now, now.plus(Duration::from_secs(23 * 3600))),
            "in 23 h"
        );
        assert_eq!(
            relative(now.plus(Duration::from_secs(180)), now),
            "3 min ago"
        );
        assert_eq!(relative(now, now), "now");
    }

    #[test]
    fn local_time_is_a_calendar_time_not_milliseconds() {
        let text = local_time(UnixMillis(1_796_773_466_690));
        assert!(text.starts_with("2026-12-"), "{text}");
        assert!(!text.contains("1796773466690"), "{text}");
        assert_eq!(local_time(UnixMillis(u64::MAX)), "never");
    }

    #[test]
    fn rates_pick_their_unit() {
        assert_eq!(rate(850_000.0), "850 kbit/s");
        assert_eq!(rate(2_400_000.0), "2.4 Mbit/s");
        assert_eq!(rate(12_300_000.0), "12 Mbit/s");
        assert_eq!(rate(-5.0), "0 kbit/s");
    }
}
