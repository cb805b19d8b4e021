//! Where the server gets "now" from: the system clock, or a hand-driven one in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deskwire_signal::UnixMillis;

/// A source of wall-clock time for code expiry.
///
/// Only the server's driver calls it; the signalling logic takes `now` as an argument.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> UnixMillis;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis::now()
    }
}

/// A clock that moves only when told to, so tests can expire codes without sleeping.
///
/// Shared through an `Arc`: the test keeps one handle and gives the broker another.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: UnixMillis) -> Self {
        Self {
            millis: AtomicU64::new(start.0),
        }
    }

    /// Jump to `t` (backwards too).
    pub fn set(&self, t: UnixMillis) {
        self.millis.store(t.0, Ordering::SeqCst);
    }

    /// Move forward by `d`, saturating.
    pub fn advance(&self, d: Duration) {
        let step = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .millis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(step))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(UnixMillis(1000));
        assert_eq!(clock.now(), UnixMillis(1000));
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now(), UnixMillis(1250));
        clock.set(UnixMillis(5));
        assert_eq!(clock.now(), UnixMillis(5));
        clock.set(UnixMillis(u64::MAX - 1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), UnixMillis(u64::MAX));
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now() > UnixMillis(1_577_836_800_000));
    }
}
