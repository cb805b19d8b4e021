//! Brakes on guessing codes: failed joins per source, lockout, and a growing delay per
//! session after failed verifications.
//!
//! Sans-IO: every call takes `now`; tests run in virtual time. Sources are keyed by IPv4
//! address or IPv6 /64 (one subscriber usually owns a whole /64, so per-address limits alone
//! would be free to dodge).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use deskwire_signal::{JoinRefusal, UnixMillis};

/// Limits on join attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinLimits {
    /// Failed joins a source may have within `window` before it must wait.
    pub(crate) failures_per_window: usize,
    /// The sliding window.
    pub(crate) window: Duration,
    /// Failed joins after which a source is locked out for `lockout`.
    pub(crate) lockout_after: u32,
    /// How long a lockout lasts.
    pub(crate) lockout: Duration,
    /// Wait before the first retry after a failed verification on a session; doubles with
    /// each further failure.
    pub(crate) verification_delay: Duration,
    /// Sources remembered at once; past it the least recently failing is forgotten.
    pub(crate) max_sources: usize,
    /// Sessions (codes) a source may create within `window`: each is a code the book
    /// holds until it expires, so one address must not fill the book.
    pub(crate) creations_per_window: usize,
}

impl Default for JoinLimits {
    fn default() -> Self {
        Self {
            failures_per_window: 6,
            window: Duration::from_secs(60),
            lockout_after: 30,
            lockout: Duration::from_secs(60 * 60),
            verification_delay: Duration::from_secs(1),
            max_sources: 100_000,
            // A company's technicians behind one NAT open a few codes a minute each.
            creations_per_window: 30,
        }
    }
}

/// Who is trying: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SourceKey {
    V4(u32),
    V6Prefix(u64),
}

impl SourceKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Source {
    /// Times of recent failures, oldest first, within the window.
    recent: VecDeque<UnixMillis>,
    /// Failures since the last lockout ended.
    total: u32,
    locked_until: Option<UnixMillis>,
    last_failure: UnixMillis,
}

/// Sessions created per source, over the same sliding window: a source past
/// `creations_per_window` waits until its oldest creation leaves the window.
#[derive(Debug)]
pub(crate) struct CreationLimiter {
    limits: JoinLimits,
    sources: HashMap<SourceKey, VecDeque<UnixMillis>>,
}

impl CreationLimiter {
    pub(crate) fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            sources: HashMap::new(),
        }
    }

    /// May `source` create a session now? Counts it if so; if not, how long until it may.
    pub(crate) fn admit(&mut self, source: SourceKey, now: UnixMillis) -> Result<(), Duration> {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.limits.max_sources {
            let window = self.limits.window;
            self.sources.retain(|_, recent| {
                trim(recent, now, window);
                !recent.is_empty()
            });
            if self.sources.len() >= self.limits.max_sources {
                // Every remembered source is busy: one that is not known yet waits too.
                return Err(self.limits.window);
            }
        }
        let recent = self.sources.entry(source).or_default();
        trim(recent, now, self.limits.window);
        if recent.len() >= self.limits.creations_per_window {
            let oldest = recent.front().copied().unwrap_or(now);
            let free_at = oldest.plus(self.limits.window);
            return Err(Duration::from_millis(free_at.0.saturating_sub(now.0)));
        }
        recent.push_back(now);
        Ok(())
    }
}

/// Failed-join bookkeeping for every source and session.
#[derive(Debug)]
pub(crate) struct JoinLimiter {
    limits: JoinLimits,
    sources: HashMap<SourceKey, Source>,
}

impl JoinLimiter {
    pub(crate) fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            sources: HashMap::new(),
        }
    }

    /// May `source` try a code now?
    pub(crate) fn admit(&mut self, source: SourceKey, now: UnixMillis) -> Result<(), JoinRefusal> {
        let Some(s) = self.sources.get_mut(&source) else {
            return Ok(());
        };
        if let Some(until) = s.locked_until {
            if now < until {
                return Err(JoinRefusal::LockedOut);
            }
            s.locked_until = None;
            s.total = 0;
            s.recent.clear();
        }
        trim(&mut s.recent, now, self.limits.window);
        if s.recent.len() >= self.limits.failures_per_window {
            return Err(JoinRefusal::TooManyAttempts);
        }
        Ok(())
    }

    /// `source` had a join refused (a wrong, expired, used code; a failed verification).
    pub(crate) fn record_failure(&mut self, source: SourceKey, now: UnixMillis) {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.limits.max_sources {
            self.forget_stalest();
        }
        let s = self.sources.entry(source).or_default();
        trim(&mut s.recent, now, self.limits.window);
        s.recent.push_back(now);
        s.total = s.total.saturating_add(1);
        s.last_failure = now;
        if s.total >= self.limits.lockout_after {
            s.locked_until = Some(now.plus(self.limits.lockout));
            tracing::warn!(?source, "source locked out after repeated failed joins");
        }
    }

    /// After `failures` failed verifications on one session, the earliest time the next
    /// join of it may be tried: the delay doubles with each failure.
    pub(crate) fn session_retry_at(&self, failures: u32, last: UnixMillis) -> UnixMillis {
        if failures == 0 {
            return last;
        }
        let factor = 1u32 << (failures - 1).min(16);
        last.plus(self.limits.verification_delay * factor)
    }

    fn forget_stalest(&mut self) {
        if let Some(key) = self
            .sources
            .iter()
            .filter(|(_, s)| s.locked_until.is_none())
            .min_by_key(|(_, s)| s.last_failure)
            .map(|(k, _)| *k)
        {
            self.sources.remove(&key);
        }
    }
}

fn trim(recent: &mut VecDeque<UnixMillis>, now: UnixMillis, window: Duration) {
    while recent.front().is_some_and(|t| t.plus(window) <= now) {
        recent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const T0: UnixMillis = UnixMillis(1_000_000);

    fn at(secs: u64) -> UnixMillis {
        T0.plus(Duration::from_secs(secs))
    }

    fn v4(last: u8) -> SourceKey {
        SourceKey::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn six_failures_a_minute_are_allowed_and_the_seventh_waits_for_the_window() {
        let mut l = JoinLimiter::new(JoinLimits::default());
        let src = v4(1);
        for i in 0..6 {
            assert_eq!(l.admit(src, at(i)), Ok(()), "attempt {i}");
            l.record_failure(src, at(i));
        }
        assert_eq!(l.admit(src, at(10)), Err(JoinRefusal::TooManyAttempts));
        // Another address is not affected.
        assert_eq!(l.admit(v4(2), at(10)), Ok(()));
        // Once the first failure is a minute old, one more attempt is allowed.
        assert_eq!(l.admit(src, at(59)), Err(JoinRefusal::TooManyAttempts));
        assert_eq!(l.admit(src, at(60)), Ok(()));
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_source_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::of(a.into()), SourceKey::of(b.into()));
        assert_ne!(SourceKey::of(a.into()), SourceKey::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(SourceKey::of(mapped.into()), v4(1));

        let mut l = JoinLimiter::new(JoinLimits::default());
        for i in 0..6 {
            l.record_failure(SourceKey::of(a.into()), at(i));
        }
        assert_eq!(
            l.admit(SourceKey::of(b.into()), at(7)),
            Err(JoinRefusal::TooManyAttempts)
        );
        assert_eq!(l.admit(SourceKey::of(c.into()), at(7)), Ok(()));
    }

    #[test]
    fn thirty_failures_lock_a_source_out_for_an_hour() {
        let mut l = JoinLimiter::new(JoinLimits::default());
        let src = v4(3);
        // Six a minute, paced to stay under the window limit: 30 failures in 5 minutes.
        let mut t = 0;
        for i in 0..30 {
            assert_eq!(l.admit(src, at(t)), Ok(()), "attempt {i}");
            l.record_failure(src, at(t));
            t += 10;
        }
        // The hour runs from the thirtieth failure, even once the minute window is clear.
        let last = t - 10;
        assert_eq!(l.admit(src, at(last + 61)), Err(JoinRefusal::LockedOut));
        assert_eq!(l.admit(src, at(last + 3599)), Err(JoinRefusal::LockedOut));
        assert_eq!(l.admit(src, at(last + 3600)), Ok(()));
    }

    #[test]
    fn failed_verifications_on_one_session_double_the_wait() {
        let l = JoinLimiter::new(JoinLimits::default());
        assert_eq!(l.session_retry_at(0, at(5)), at(5));
        assert_eq!(l.session_retry_at(1, at(5)), at(6));
        assert_eq!(l.session_retry_at(2, at(5)), at(7));
        assert_eq!(l.session_retry_at(3, at(5)), at(9));
    }

    #[test]
    fn a_source_creates_thirty_sessions_a_minute_and_is_told_when_it_may_go_on() {
        let mut c = CreationLimiter::new(JoinLimits::default());
        for i in 0..30 {
            assert_eq!(c.admit(v4(1), at(i)), Ok(()), "creation {i}");
        }
        assert_eq!(c.admit(v4(1), at(30)), Err(Duration::from_secs(30)));
        // Another address is not held back by it.
        assert_eq!(c.admit(v4(2), at(30)), Ok(()));
        // Once the first creation left the window, one more.
        assert_eq!(c.admit(v4(1), at(60)), Ok(()));
        assert!(c.admit(v4(1), at(60)).is_err());
    }

    #[test]
    fn the_creation_table_is_bounded_and_forgets_quiet_sources() {
        let limits = JoinLimits {
            max_sources: 2,
            ..JoinLimits::default()
        };
        let mut c = CreationLimiter::new(limits);
        assert!(c.admit(v4(1), at(0)).is_ok());
        assert!(c.admit(v4(2), at(0)).is_ok());
        // Both still in their window: a third source must wait rather than grow the table.
        assert!(c.admit(v4(3), at(1)).is_err());
        assert!(c.admit(v4(3), at(61)).is_ok());
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let mut l = JoinLimiter::new(JoinLimits {
            max_sources: 3,
            ..JoinLimits::default()
        });
        for i in 0..10 {
            l.record_failure(v4(i), at(u64::from(i)));
        }
        assert!(l.sources.len() <= 3);
    }
}
