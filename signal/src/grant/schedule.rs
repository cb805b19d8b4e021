//! When a grant may be used: its validity (days, a date range or unlimited) and an optional
//! daily window, all in local wall-clock terms. Only valid schedules can be built or read.

use std::fmt;

use jiff::civil::{Date, Time, Weekday};
use serde::{Deserialize, Serialize};

use super::GrantError;

/// A wall-clock time of day to the minute (`08:00`), written `HH:MM`, 00:00 to 23:59.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(u16);

impl LocalTime {
    /// `hour:minute`, if it is a time of day (hour 0..=23, minute 0..=59).
    pub fn new(hour: u8, minute: u8) -> Option<Self> {
        (hour < 24 && minute < 60).then(|| Self(u16::from(hour) * 60 + u16::from(minute)))
    }

    /// The hour, 0..=23.
    pub fn hour(self) -> u8 {
        // Below 1440 by construction, so the hour is below 24.
        (self.0 / 60) as u8
    }

    /// The minute, 0..=59.
    pub fn minute(self) -> u8 {
        (self.0 % 60) as u8
    }

    /// Minutes since midnight, 0..1440.
    #[cfg(test)]
    pub(crate) fn minutes(self) -> u16 {
        self.0
    }

    pub(crate) fn civil(self) -> Time {
        // Hour and minute are in range by construction; midnight is never used.
        Time::new(self.hour() as i8, self.minute() as i8, 0, 0).unwrap_or(Time::midnight())
    }

    /// Read `HH:MM` (exactly two digits each), naming `field` in the error.
    pub(crate) fn parse(text: &str, field: &'static str) -> Result<Self, GrantError> {
        let invalid = || GrantError::Invalid {
            field,
            value: format!("{text:?}"),
            expected: "a time of day HH:MM, 00:00..=23:59".into(),
        };
        let (h, m) = text.split_once(':').ok_or_else(invalid)?;
        let hour = two_digits(h).ok_or_else(invalid)?;
        let minute = two_digits(m).ok_or_else(invalid)?;
        Self::new(hour, minute).ok_or_else(invalid)
    }
}

fn two_digits(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    match b {
        [a @ b'0'..=b'9', c @ b'0'..=b'9'] => Some((a - b'0') * 10 + (c - b'0')),
        _ => None,
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

impl fmt::Debug for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalTime({self})")
    }
}

impl std::str::FromStr for LocalTime {
    type Err = GrantError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s, "time")
    }
}

/// A set of days of the week on which a daily window opens.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

/// Names on the wire, Monday first (bit 0).
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Weekdays {
    /// Every day.
    pub const EVERY_DAY: Weekdays = Weekdays(0b111_1111);
    /// Monday to Friday.
    pub const MONDAY_TO_FRIDAY: Weekdays = Weekdays(0b001_1111);

    /// The set of `days` (possibly empty, which a schedule refuses).
    pub fn of(days: impl IntoIterator<Item = Weekday>) -> Self {
        Self(days.into_iter().fold(0, |set, d| set | bit(d)))
    }

    /// Whether `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & bit(day) != 0
    }

    /// Whether the set has no day.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn names(self) -> impl Iterator<Item = &'static str> {
        DAY_NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
    }
}

fn bit(day: Weekday) -> u8 {
    // Monday is 0 and Sunday 6.
    1 << day.to_monday_zero_offset()
}

impl Default for Weekdays {
    fn default() -> Self {
        Self::EVERY_DAY
    }
}

impl fmt::Debug for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// How long a grant is valid, in the grant's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validity {
    /// From approval for this many calendar days: approved at 10:00, it ends at 10:00 local
    /// time `days` later (23 or 25 hours in a day across a DST change).
    Days {
        /// 1..=[`Schedule::MAX_DAYS`].
        days: u32,
    },
    /// From the start of `first` to the end of `last` (inclusive), local calendar days;
    /// approved in the middle of it, from approval.
    DateRange {
        /// The first day.
        #[serde(with = "date_text")]
        first: Date,
        /// The last day, at most [`Schedule::MAX_DAYS`] days after `first` counting both.
        #[serde(with = "date_text")]
        last: Date,
    },
    /// From approval, with no end (until revoked).
    Unlimited,
}

/// For people: `for 3 days`, `from 2026-12-07 to 2026-12-09`, `until revoked`.
impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validity::Days { days: 1 } => f.write_str("for 1 day"),
            Validity::Days { days } => write!(f, "for {days} days"),
            Validity::DateRange { first, last } => write!(f, "from {first} to {last}"),
            Validity::Unlimited => f.write_str("until revoked"),
        }
    }
}

/// For people: `Monday to Friday`, `every day`, `mon, wed, fri`.
impl fmt::Display for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Weekdays::EVERY_DAY {
            return f.write_str("every day");
        }
        if *self == Weekdays::MONDAY_TO_FRIDAY {
            return f.write_str("Monday to Friday");
        }
        let names: Vec<&str> = DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&names.join(", "))
    }
}

/// For people: `09:00-17:00 Monday to Friday`.
impl fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} {}", self.start, self.end, self.days)
    }
}

/// For people: `for 3 days, 09:00-17:00 Monday to Friday`.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.validity)?;
        if let Some(daily) = &self.daily {
            write!(f, ", {daily}")?;
        }
        Ok(())
    }
}

/// A window the grant is open in every day (`08:00`–`18:00`), local wall-clock time.
///
/// `end` before `start` crosses midnight (`22:00`–`06:00`): the window belongs to the day it
/// opens on, so `days` restricts the evenings, and a Friday 22:00–06:00 window closes on
/// Saturday morning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WindowRepr", into = "WindowRepr")]
pub struct DailyWindow {
    /// When it opens (included).
    pub start: LocalTime,
    /// When it closes (excluded); must differ from `start`.
    pub end: LocalTime,
    /// The days it opens on; not empty.
    pub days: Weekdays,
}

impl DailyWindow {
    /// `start`–`end` every day.
    pub fn every_day(start: LocalTime, end: LocalTime) -> Self {
        Self {
            start,
            end,
            days: Weekdays::EVERY_DAY,
        }
    }

    /// Whether it closes on the day after it opens.
    pub fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }

    fn validate(&self) -> Result<(), GrantError> {
        if self.start == self.end {
            return Err(GrantError::Invalid {
                field: "schedule.daily.end",
                value: self.end.to_string(),
                expected: format!(
                    "a time other than the start {} (leave out the window for all day)",
                    self.start
                ),
            });
        }
        if self.days.is_empty() {
            return Err(GrantError::Invalid {
                field: "schedule.daily.days",
                value: "[]".into(),
                expected: "at least one of mon, tue, wed, thu, fri, sat, sun".into(),
            });
        }
        Ok(())
    }
}

/// A grant's validity plus an optional daily window; only a valid one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ScheduleRepr", into = "ScheduleRepr")]
pub struct Schedule {
    validity: Validity,
    daily: Option<DailyWindow>,
}

impl Schedule {
    /// The longest validity in days (about ten years), for a number of days and a date range.
    pub const MAX_DAYS: u32 = 3660;

    /// A schedule, if it describes a possible one: at least one day and at most
    /// [`Self::MAX_DAYS`], a range that ends on or after its first day, a window whose start
    /// and end differ, on at least one weekday.
    pub fn new(validity: Validity, daily: Option<DailyWindow>) -> Result<Self, GrantError> {
        match validity {
            Validity::Days { days } => {
                if !(1..=Self::MAX_DAYS).contains(&days) {
                    return Err(GrantError::Invalid {
                        field: "schedule.validity.days",
                        value: days.to_string(),
                        expected: format!("1..={}", Self::MAX_DAYS),
                    });
                }
            }
            Validity::DateRange { first, last } => {
                if last < first {
                    return Err(GrantError::Invalid {
                        field: "schedule.validity.last",
                        value: last.to_string(),
                        expected: format!("a day on or after the first day {first}"),
                    });
                }
                let span = first
                    .until(last)
                    .map(|s| i64::from(s.get_days()) + 1)
                    .unwrap_or(i64::MAX);
                if span > i64::from(Self::MAX_DAYS) {
                    return Err(GrantError::Invalid {
                        field: "schedule.validity.last",
                        value: last.to_string(),
                        expected: format!(
                            "a range of 1..={} days from {first} (this one has {span})",
                            Self::MAX_DAYS
                        ),
                    });
                }
            }
            Validity::Unlimited => {}
        }
        if let Some(w) = &daily {
            w.validate()?;
        }
        Ok(Self { validity, daily })
    }

    /// How long it is valid.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// The daily window, if access is limited to one.
    pub fn daily(&self) -> Option<DailyWindow> {
        self.daily
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleRepr {
    validity: Validity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daily: Option<DailyWindow>,
}

impl TryFrom<ScheduleRepr> for Schedule {
    type Error = GrantError;
    fn try_from(r: ScheduleRepr) -> Result<Self, GrantError> {
        Schedule::new(r.validity, r.daily)
    }
}

impl From<Schedule> for ScheduleRepr {
    fn from(s: Schedule) -> Self {
        Self {
            validity: s.validity,
            daily: s.daily,
        }
    }
}

/// The window on the wire: times as text, so an error can name the field it is in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowRepr {
    start: String,
    end: String,
    /// Every day when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    days: Option<Vec<String>>,
}

impl TryFrom<WindowRepr> for DailyWindow {
    type Error = GrantError;
    fn try_from(r: WindowRepr) -> Result<Self, GrantError> {
        let start = LocalTime::parse(&r.start, "schedule.daily.start")?;
        let end = LocalTime::parse(&r.end, "schedule.daily.end")?;
        let days = match r.days {
            None => Weekdays::EVERY_DAY,
            Some(names) => {
                let mut set = 0u8;
                for name in &names {
                    let i = DAY_NAMES.iter().position(|d| d == name).ok_or_else(|| {
                        GrantError::Invalid {
                            field: "schedule.daily.days",
                            value: format!("{:?}", name.chars().take(16).collect::<String>()),
                            expected: "mon, tue, wed, thu, fri, sat or sun".into(),
                        }
                    })?;
                    set |= 1 << i;
                }
                Weekdays(set)
            }
        };
        let window = DailyWindow { start, end, days };
        window.validate()?;
        Ok(window)
    }
}

impl From<DailyWindow> for WindowRepr {
    fn from(w: DailyWindow) -> Self {
        Self {
            start: w.start.to_string(),
            end: w.end.to_string(),
            days: (w.days != Weekdays::EVERY_DAY)
                .then(|| w.days.names().map(str::to_owned).collect()),
        }
    }
}

/// Calendar days on the wire as `YYYY-MM-DD`, read strictly (no time, no signs, no week
/// dates) so that what a person sees in the stored JSON is all there is.
mod date_text {
    use jiff::civil::Date;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "invalid date {:?} (expected YYYY-MM-DD, a real calendar day in 1970..=9999)",
                text.chars().take(32).collect::<String>()
            ))
        })
    }

    fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year: i16 = digits(text.get(0..4)?)?;
        let month: i8 = digits(text.get(5..7)?)?;
        let day: i8 = digits(text.get(8..10)?)?;
        if year < 1970 {
            return None;
        }
        Date::new(year, month, day).ok()
    }

    fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    }
}
