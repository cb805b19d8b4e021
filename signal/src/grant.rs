//! Unattended-access grants: a technician may connect to a target when nobody is at it.
//!
//! A technician asks for a grant ([`GrantRequest`]) during an active session; the group's
//! [`GrantPolicy`] is applied and the customer approves it on the target ([`approve`]). The
//! [`Grant`] then outlives the session: the broker stores it and the target keeps its own
//! copy (both as JSON), and each evaluates [`Grant::check`] at its own `now` before letting an
//! unattended connection through. Nothing here reads a clock or does I/O.
//!
//! # Schedules
//!
//! A [`Schedule`] is a [`Validity`] (a number of days from approval, a date range, or
//! unlimited) and optionally a [`DailyWindow`] (`08:00`–`18:00`, possibly across midnight,
//! possibly on some weekdays only), all in the wall-clock time of one IANA zone, the
//! technician's or the customer's ([`GrantZone`]).
//!
//! # Local times and DST
//!
//! Every local time (a window's start and end, midnight at either end of a date range, the
//! end of a number of days) becomes an instant by one rule: **the first instant at which the
//! zone's wall clock shows that time or later.** So a `08:00`–`18:00` window is 08:00–18:00 on
//! the clock on both sides of a DST change, and around a transition:
//!
//! - a time the clock skips (02:30 on 2026-03-29 in Berlin) is the transition itself, 03:00
//!   CEST: a window starting at 02:30 opens as the clock jumps past it, not an hour later;
//! - a time the clock shows twice (02:30 on 2026-10-25 in Berlin) is its first showing: a
//!   window never reopens in the repeated hour, and one ending at 02:30 closes at the first
//!   02:30 (short rather than long);
//! - hence a `22:00`–`06:00` window lasts 7 hours on the night the clocks go forward and 9 on
//!   the night they go back, and a window lying wholly in a skipped hour does not open that
//!   day;
//! - "days" are calendar days: approved at 10:00 for 3 days, a grant ends at 10:00 on the
//!   clock three days later, however many hours that is.
//!
//! The zone database is compiled in (jiff's `tzdb-bundle-always`), so answers do not depend
//! on the machine's `/usr/share/zoneinfo`.
//!
//! # What is fixed at approval
//!
//! [`approve`] turns the validity into instants (`valid_from`, `expires_at`) once, and the
//! grant stores them: a broker and a target agree on when a grant starts and ends to the
//! millisecond even if their tz data differ. Only the daily window is evaluated in the zone
//! at each check, which is what keeps it right on the clock across DST changes.
//!
//! # Customer credentials
//!
//! With [`CredentialMode::CustomerCredentials`] the customer's credentials are held from
//! setup, so access ends at most [`GrantPolicy::customer_credentials_max_days`] (14) calendar
//! days after approval: a longer request is refused or capped per [`OverCap`], and
//! [`Adjustment`] says which.

mod schedule;
mod zone;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;

use std::collections::BTreeSet;
use std::fmt;

use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

pub use jiff::civil::{Date, Weekday};
pub use schedule::{DailyWindow, LocalTime, Schedule, Validity, Weekdays};
pub use zone::ZoneName;

use crate::time::UnixMillis;
use zone::{first_instant_at, to_millis, to_timestamp, Shown};

/// Days searched ahead for a window that opens: a week of weekdays from yesterday, and
/// another for a weekday whose window fell into a skipped hour.
const SEARCH_DAYS: usize = 16;

/// How the technician authenticates on the target at each unattended connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialMode {
    /// The technician presents the target's administrator credentials every time.
    AskEachConnection,
    /// The customer gave credentials at setup; limited in time (see [`GrantPolicy`]).
    CustomerCredentials,
}

impl fmt::Display for CredentialMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AskEachConnection => "ask_each_connection",
            Self::CustomerCredentials => "customer_credentials",
        })
    }
}

/// Whose time zone a schedule is written in (the zone itself is in [`GrantZone::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneOf {
    /// The technician's.
    Technician,
    /// The customer's (the target's).
    Customer,
}

/// The zone a schedule is read in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantZone {
    /// Whose zone it is, to show people which clock the schedule follows.
    pub of: ZoneOf,
    /// The IANA zone.
    pub name: ZoneName,
}

/// What a technician asks for. Every part is valid by construction, and so on reading JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// When access is allowed.
    pub schedule: Schedule,
    /// The zone the schedule is in.
    pub zone: GrantZone,
    /// How the technician will authenticate.
    pub credential_mode: CredentialMode,
}

/// What to do with a customer-credentials request that runs past the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverCap {
    /// Refuse it ([`GrantError::OverCustomerCredentialCap`]).
    Refuse,
    /// Grant it up to the cap ([`Adjustment::Capped`]).
    Cap,
}

/// A group's rules for the grants its technicians may ask for.
///
/// Read from JSON as it stands; [`approve`] checks it with [`Self::validate`] before use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantPolicy {
    /// The credential modes a technician may choose.
    pub allowed_modes: BTreeSet<CredentialMode>,
    /// With customer credentials, the most calendar days (in the grant's zone) from approval
    /// to expiry: 1..=[`Self::CUSTOMER_CREDENTIALS_MAX_DAYS`]. Days rather than a duration so
    /// that "14 days" means the same as a 14-day validity across a DST change.
    pub customer_credentials_max_days: u32,
    /// Refuse or cap a longer customer-credentials request.
    pub over_cap: OverCap,
}

impl GrantPolicy {
    /// Two weeks: the ceiling for customer credentials; a group may only be stricter.
    pub const CUSTOMER_CREDENTIALS_MAX_DAYS: u32 = 14;

    /// Whether the policy is within its ranges.
    pub fn validate(&self) -> Result<(), GrantError> {
        let days = self.customer_credentials_max_days;
        if !(1..=Self::CUSTOMER_CREDENTIALS_MAX_DAYS).contains(&days) {
            return Err(GrantError::Invalid {
                field: "policy.customer_credentials_max_days",
                value: days.to_string(),
                expected: format!("1..={}", Self::CUSTOMER_CREDENTIALS_MAX_DAYS),
            });
        }
        Ok(())
    }
}

impl Default for GrantPolicy {
    /// Both modes, two weeks for customer credentials, longer requests refused.
    fn default() -> Self {
        Self {
            allowed_modes: [
                CredentialMode::AskEachConnection,
                CredentialMode::CustomerCredentials,
            ]
            .into(),
            customer_credentials_max_days: Self::CUSTOMER_CREDENTIALS_MAX_DAYS,
            over_cap: OverCap::Refuse,
        }
    }
}

/// Whether a grant is what was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Adjustment {
    /// As requested.
    AsRequested,
    /// Shortened to the customer-credentials cap.
    Capped {
        /// The end the request asked for (`None`: no end).
        requested: Option<UnixMillis>,
        /// The end granted.
        granted: UnixMillis,
    },
}

/// Why an unattended grant cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// A value out of its range, or fields that contradict each other.
    #[error("invalid {field} {value} (expected {expected})")]
    Invalid {
        /// Where it is (`schedule.validity.days`).
        field: &'static str,
        /// The value found.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// A zone name the tz database does not know.
    #[error(
        "unknown time zone {name:?} in {field} (expected an IANA name such as \"Europe/Berlin\")"
    )]
    UnknownTimeZone {
        /// Where it is.
        field: &'static str,
        /// The name found (at most 64 characters of it).
        name: String,
    },
    /// The group's policy does not allow this credential mode.
    #[error("credential mode {mode} is not allowed by the group's policy (allowed: {})", list(.allowed))]
    ModeNotAllowed {
        /// The mode asked for.
        mode: CredentialMode,
        /// The modes allowed.
        allowed: Vec<CredentialMode>,
    },
    /// A customer-credentials request past the cap, with [`OverCap::Refuse`].
    #[error(
        "customer credentials allow access for at most {cap_days} days from approval \
         (until {}); this request runs {}", shown(.cap_end), until(.requested_end)
    )]
    OverCustomerCredentialCap {
        /// The cap in calendar days.
        cap_days: u32,
        /// Where the cap ends.
        cap_end: UnixMillis,
        /// Where the request ends (`None`: no end).
        requested_end: Option<UnixMillis>,
    },
    /// A customer-credentials date range that starts only after the cap has ended.
    #[error(
        "customer credentials allow access for at most {cap_days} days from approval \
         (until {}), and this date range only starts at {}", shown(.cap_end), shown(.valid_from)
    )]
    CapLeavesNothing {
        /// The cap in calendar days.
        cap_days: u32,
        /// Where the cap ends.
        cap_end: UnixMillis,
        /// Where the range starts.
        valid_from: UnixMillis,
    },
    /// A date range that was over when the customer approved it.
    #[error("the date range ended with {last}, before the grant was approved")]
    RangeAlreadyOver {
        /// Its last day.
        last: Date,
    },
    /// The daily window never opens while the grant is valid (one weekday-only day on a
    /// weekend, say).
    #[error(
        "the daily window never opens while the grant is valid (from {}, {})",
        shown(.valid_from), until(.expires_at)
    )]
    NeverOpens {
        /// Start of validity.
        valid_from: UnixMillis,
        /// End of validity.
        expires_at: Option<UnixMillis>,
    },
    /// A time outside what a grant can represent.
    #[error("{field} is outside the times a grant can represent (1970 to 9999)")]
    OutOfTime {
        /// Which one.
        field: &'static str,
    },
}

/// Why an unattended connection is refused now; both broker and target say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case", deny_unknown_fields)]
pub enum GrantRefusal {
    /// Revoked.
    #[error("the grant was revoked at {}", shown(.at))]
    Revoked {
        /// When.
        at: UnixMillis,
    },
    /// Past its end.
    #[error("the grant expired at {}", shown(.at))]
    Expired {
        /// When.
        at: UnixMillis,
    },
    /// Before its start.
    #[error("the grant is valid from {}; {}", shown(.valid_from), opens(.next_open))]
    NotYetValid {
        /// Start of validity.
        valid_from: UnixMillis,
        /// When a connection will first be allowed (later than `valid_from` when the daily
        /// window is closed then).
        next_open: Option<UnixMillis>,
    },
    /// Valid, but outside the daily window.
    #[error("outside the grant's daily window; {}", opens(.next_open))]
    OutsideWindow {
        /// When the window next opens while the grant is valid; `None` if it never will.
        next_open: Option<UnixMillis>,
    },
}

fn shown(t: &UnixMillis) -> Shown {
    Shown(*t)
}

fn until(end: &Option<UnixMillis>) -> String {
    match end {
        Some(t) => format!("until {}", shown(t)),
        None => "with no end".into(),
    }
}

fn opens(t: &Option<UnixMillis>) -> String {
    match t {
        Some(t) => format!("it next opens at {}", shown(t)),
        None => "it does not open again".into(),
    }
}

fn list(modes: &[CredentialMode]) -> String {
    if modes.is_empty() {
        return "none".into();
    }
    let names: Vec<String> = modes.iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// The customer approves `request` at `approved_at` under the group's `policy`.
///
/// Checks the credential mode against the policy, fixes the validity's start and end as
/// instants in the request's zone, applies the customer-credentials cap, and refuses a
/// grant whose daily window would never open. The [`Adjustment`] is also kept in the grant.
pub fn approve(
    request: GrantRequest,
    policy: &GrantPolicy,
    approved_at: UnixMillis,
) -> Result<(Grant, Adjustment), GrantError> {
    policy.validate()?;
    let mode = request.credential_mode;
    if !policy.allowed_modes.contains(&mode) {
        return Err(GrantError::ModeNotAllowed {
            mode,
            allowed: policy.allowed_modes.iter().copied().collect(),
        });
    }
    let tz = request.zone.name.tz();
    let approved_local = to_timestamp(approved_at)
        .map(|ts| tz.to_datetime(ts))
        .ok_or(GrantError::OutOfTime {
            field: "approved_at",
        })?;
    let (valid_from, requested_end) = match request.schedule.validity() {
        Validity::Days { days } => (
            approved_at,
            Some(days_later(
                tz,
                approved_local,
                days,
                "schedule.validity.days",
            )?),
        ),
        Validity::DateRange { first, last } => {
            let start = start_of(tz, Some(first), "schedule.validity.first")?;
            let end = start_of(tz, last.tomorrow().ok(), "schedule.validity.last")?;
            if end <= approved_at {
                return Err(GrantError::RangeAlreadyOver { last });
            }
            (start.max(approved_at), Some(end))
        }
        Validity::Unlimited => (approved_at, None),
    };

    let mut expires_at = requested_end;
    let mut adjustment = Adjustment::AsRequested;
    if mode == CredentialMode::CustomerCredentials {
        let cap_days = policy.customer_credentials_max_days;
        let cap_end = days_later(
            tz,
            approved_local,
            cap_days,
            "policy.customer_credentials_max_days",
        )?;
        if requested_end.is_none_or(|end| end > cap_end) {
            match policy.over_cap {
                OverCap::Refuse => {
                    return Err(GrantError::OverCustomerCredentialCap {
                        cap_days,
                        cap_end,
                        requested_end,
                    })
                }
                OverCap::Cap if cap_end <= valid_from => {
                    return Err(GrantError::CapLeavesNothing {
                        cap_days,
                        cap_end,
                        valid_from,
                    })
                }
                OverCap::Cap => {
                    expires_at = Some(cap_end);
                    adjustment = Adjustment::Capped {
                        requested: requested_end,
                        granted: cap_end,
                    };
                }
            }
        }
    }

    let grant = Grant {
        request,
        approved_at,
        valid_from,
        expires_at,
        adjustment,
        revoked_at: None,
    };
    if grant.next_open(valid_from).is_none() {
        return Err(GrantError::NeverOpens {
            valid_from,
            expires_at,
        });
    }
    Ok((grant, adjustment))
}

/// The instant `days` calendar days after `local`, at the same wall-clock time.
fn days_later(
    tz: &TimeZone,
    local: DateTime,
    days: u32,
    field: &'static str,
) -> Result<UnixMillis, GrantError> {
    let date = Span::new()
        .try_days(i64::from(days))
        .and_then(|span| local.date().checked_add(span))
        .ok();
    instant(tz, date.map(|d| d.to_datetime(local.time())), field)
}

/// The instant `date` begins (its first instant, if its midnight is skipped).
fn start_of(
    tz: &TimeZone,
    date: Option<Date>,
    field: &'static str,
) -> Result<UnixMillis, GrantError> {
    instant(tz, date.map(|d| d.to_datetime(Time::midnight())), field)
}

fn instant(
    tz: &TimeZone,
    local: Option<DateTime>,
    field: &'static str,
) -> Result<UnixMillis, GrantError> {
    local
        .and_then(|dt| first_instant_at(tz, dt))
        .and_then(to_millis)
        .ok_or(GrantError::OutOfTime { field })
}

/// An approved unattended-access grant, as the broker stores it and the target keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GrantRepr", into = "GrantRepr")]
pub struct Grant {
    request: GrantRequest,
    approved_at: UnixMillis,
    valid_from: UnixMillis,
    expires_at: Option<UnixMillis>,
    adjustment: Adjustment,
    revoked_at: Option<UnixMillis>,
}

impl Grant {
    /// The request as the technician made it (a cap shows in [`Self::adjustment`] and
    /// [`Self::expires_at`], not here).
    pub fn request(&self) -> &GrantRequest {
        &self.request
    }

    /// When the customer approved it.
    pub fn approved_at(&self) -> UnixMillis {
        self.approved_at
    }

    /// The first instant it may be used (approval, or the start of a later date range).
    pub fn valid_from(&self) -> UnixMillis {
        self.valid_from
    }

    /// The instant it stops being valid (excluded); `None` for an unlimited grant.
    pub fn expires_at(&self) -> Option<UnixMillis> {
        self.expires_at
    }

    /// Whether it was capped.
    pub fn adjustment(&self) -> Adjustment {
        self.adjustment
    }

    /// When it was revoked, if it was.
    pub fn revoked_at(&self) -> Option<UnixMillis> {
        self.revoked_at
    }

    /// Revoke it from `at` on. Revoking again keeps the earlier time, so a broker and a target
    /// that heard of it at different moments converge on the same record.
    pub fn revoke(&mut self, at: UnixMillis) {
        self.revoked_at = Some(self.revoked_at.map_or(at, |prev| prev.min(at)));
    }

    /// Whether an unattended connection may start at `now`, and why not.
    pub fn check(&self, now: UnixMillis) -> Result<(), GrantRefusal> {
        if let Some(at) = self.revoked_at.filter(|&at| now >= at) {
            return Err(GrantRefusal::Revoked { at });
        }
        if let Some(at) = self.expires_at.filter(|&at| now >= at) {
            return Err(GrantRefusal::Expired { at });
        }
        let next_open = self.next_open(now);
        if now < self.valid_from {
            return Err(GrantRefusal::NotYetValid {
                valid_from: self.valid_from,
                next_open,
            });
        }
        // One answer for both questions: open now exactly when the next opening is now.
        if next_open == Some(now) {
            Ok(())
        } else {
            Err(GrantRefusal::OutsideWindow { next_open })
        }
    }

    /// The first instant at or after `now` at which [`Self::check`] allows a connection:
    /// `now` itself when open now, `None` if never again (expired, revoked, or no window
    /// opens before the end).
    pub fn next_open(&self, now: UnixMillis) -> Option<UnixMillis> {
        let from = now.max(self.valid_from);
        let end = match (self.expires_at, self.revoked_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if end.is_some_and(|end| from >= end) {
            return None;
        }
        let Some(window) = self.request.schedule.daily() else {
            return Some(from);
        };
        let tz = self.request.zone.name.tz();
        let from_ts = to_timestamp(from)?;
        // From yesterday: a window that crossed midnight may still be open.
        let mut date = tz.to_datetime(from_ts).date().yesterday().ok()?;
        for _ in 0..SEARCH_DAYS {
            if let Some((open, close)) = window_on(tz, window, date) {
                if close > from_ts {
                    let open = to_millis(open.max(from_ts))?;
                    // Windows come in order: if this one opens too late, so do the rest.
                    return end.is_none_or(|end| open < end).then_some(open);
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// The window that opens on `date`, as instants; `None` on a day it does not open (not one of
/// its weekdays, or wholly inside a skipped hour).
fn window_on(tz: &TimeZone, window: DailyWindow, date: Date) -> Option<(Timestamp, Timestamp)> {
    if !window.days.contains(date.weekday()) {
        return None;
    }
    let open = first_instant_at(tz, date.to_datetime(window.start.civil()))?;
    let close_date = if window.crosses_midnight() {
        date.tomorrow().ok()?
    } else {
        date
    };
    let close = first_instant_at(tz, close_date.to_datetime(window.end.civil()))?;
    (open < close).then_some((open, close))
}

/// A grant on the wire; read back only if its instants are consistent.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRepr {
    request: GrantRequest,
    approved_at: UnixMillis,
    valid_from: UnixMillis,
    expires_at: Option<UnixMillis>,
    adjustment: Adjustment,
    #[serde(default)]
    revoked_at: Option<UnixMillis>,
}

impl TryFrom<GrantRepr> for Grant {
    type Error = GrantError;
    fn try_from(r: GrantRepr) -> Result<Self, GrantError> {
        if r.valid_from < r.approved_at {
            return Err(GrantError::Invalid {
                field: "grant.valid_from",
                value: r.valid_from.0.to_string(),
                expected: format!("at or after approved_at ({})", r.approved_at.0),
            });
        }
        if let Some(end) = r.expires_at.filter(|&end| end <= r.valid_from) {
            return Err(GrantError::Invalid {
                field: "grant.expires_at",
                value: end.0.to_string(),
                expected: format!("after valid_from ({})", r.valid_from.0),
            });
        }
        if let Adjustment::Capped { requested, granted } = r.adjustment {
            if r.expires_at != Some(granted) || requested.is_some_and(|req| req <= granted) {
                return Err(GrantError::Invalid {
                    field: "grant.adjustment",
                    value: format!("capped from {requested:?} to {}", granted.0),
                    expected: "a granted end equal to expires_at, before the requested one".into(),
                });
            }
        }
        Ok(Self {
            request: r.request,
            approved_at: r.approved_at,
            valid_from: r.valid_from,
            expires_at: r.expires_at,
            adjustment: r.adjustment,
            revoked_at: r.revoked_at,
        })
    }
}

impl From<Grant> for GrantRepr {
    fn from(g: Grant) -> Self {
        Self {
            request: g.request,
            approved_at: g.approved_at,
            valid_from: g.valid_from,
            expires_at: g.expires_at,
            adjustment: g.adjustment,
            revoked_at: g.revoked_at,
        }
    }
}
