use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: the broker's notion of "now".
///
/// Wall-clock rather than monotonic because code expiry (and, later, grants) must mean the
/// same thing after a restart and on every broker of a deployment.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The system clock, for drivers; logic takes `now` as an argument instead.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_and_since_saturate_instead_of_overflowing() {
        let t = UnixMillis(u64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(1)), UnixMillis(u64::MAX));
        assert_eq!(UnixMillis(5).since(UnixMillis(10)), Duration::ZERO);
        assert_eq!(
            UnixMillis(1500).since(UnixMillis(500)),
            Duration::from_secs(1)
        );
    }
}
