//! Time zones for grants: names checked against the bundled tz database, and the one rule
//! that turns a local wall-clock time into an instant.

use std::fmt;
use std::sync::OnceLock;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::GrantError;
use crate::time::UnixMillis;

/// The longest zone name accepted; IANA names are far shorter (the longest is ~32).
const MAX_NAME_CHARS: usize = 64;

/// The tz database compiled into the binary (jiff's `tzdb-bundle-always`).
///
/// Asked for explicitly rather than through `jiff::tz::db()`: if another crate in a build
/// enabled jiff's system sources, the global database would read `/usr/share/zoneinfo`, and a
/// broker and a target with different system data could disagree about a window. Reading
/// the bundle is no I/O: it is data in the binary.
fn database() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// An IANA time zone name (`Europe/Berlin`) known to the bundled tz database.
///
/// Looked up without regard to case and kept in the database's spelling, so
/// `europe/berlin` is stored as `Europe/Berlin`.
#[derive(Clone)]
pub struct ZoneName {
    name: String,
    tz: TimeZone,
}

impl ZoneName {
    /// The zone called `name`, if the bundled database knows it.
    pub fn new(name: &str) -> Result<Self, GrantError> {
        Self::parse(name, "zone.name")
    }

    pub(crate) fn parse(name: &str, field: &'static str) -> Result<Self, GrantError> {
        let unknown = || GrantError::UnknownTimeZone {
            field,
            name: name.chars().take(MAX_NAME_CHARS).collect(),
        };
        // An empty or absurd name is simply unknown; never hand it to the database.
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(unknown());
        }
        let tz = database().get(name).map_err(|_| unknown())?;
        let name = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Self { name, tz })
    }

    /// The name, in the database's spelling.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub(crate) fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

impl PartialEq for ZoneName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ZoneName {}

impl fmt::Debug for ZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZoneName({})", self.name)
    }
}

impl fmt::Display for ZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Serialize for ZoneName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for ZoneName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The first instant at which the wall clock in `tz` shows `dt` or a later time: the one rule
/// every local time in a grant goes through (window opening and closing, midnight of a date
/// range, the end of a number of days).
///
/// - Unambiguous: that instant.
/// - In a gap (the clock jumps over `dt`, e.g. 02:30 on 2026-03-29 in Berlin): the
///   transition itself (03:00 CEST), the first moment the clock shows a time past `dt`.
///   Not jiff's "compatible" choice (02:30 + 1 h = 03:30), which would open a window half an
///   hour late.
/// - In a fold (the clock shows `dt` twice, e.g. 02:30 on 2026-10-25 in Berlin): the first
///   time. A window therefore never reopens in the repeated hour, and one that ends in it
///   closes at the first pass: the error is on the short side.
///
/// `None` when the instant is outside what jiff represents.
pub(crate) fn first_instant_at(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        // `before` is the offset in force before the transition: the clock's first pass.
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, `dt` names an instant before the transition (the
            // gap's width earlier than `dt` read with the earlier offset), so the next
            // transition after it is the jump over `dt`.
            let before_the_jump = after.to_timestamp(dt).ok()?;
            tz.following(before_the_jump)
                .next()
                .map(|transition| transition.timestamp())
        }
    }
}

/// `t` as a jiff timestamp, if jiff can represent it (years up to 9999).
pub(crate) fn to_timestamp(t: UnixMillis) -> Option<Timestamp> {
    let ms = i64::try_from(t.0).ok()?;
    Timestamp::from_millisecond(ms).ok()
}

/// `ts` as milliseconds since the epoch, if it is not before 1970.
pub(crate) fn to_millis(ts: Timestamp) -> Option<UnixMillis> {
    u64::try_from(ts.as_millisecond()).ok().map(UnixMillis)
}

/// Shows an instant in RFC 3339 (UTC) in messages, falling back to milliseconds.
pub(crate) struct Shown(pub(crate) UnixMillis);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match to_timestamp(self.0) {
            Some(ts) => write!(f, "{ts}"),
            None => write!(f, "{}", self.0),
        }
    }
}
