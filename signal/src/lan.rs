//! Direct connections on the LAN, where no broker is in the path: the target's rotating
//! password and the back-off that makes guessing it slow.
//!
//! The password is only ever a PAKE input ([`crate::pake::Pake::start_lan`]): it never
//! crosses the network, in clear or hashed. Sixty random bits, written as twelve Crockford
//! base-32 characters in three groups (`7KQM-2X9P-4TRW`), easy to read out and to type: the
//! alphabet has no I, L, O or U, and typing those is forgiven (read as 1, 1, 0 and refused).
//! Nothing here draws random numbers or reads a clock: callers pass the entropy and `now`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::crockford::{self, CodeTextError};
use crate::time::UnixMillis;

/// The WebSocket path a LAN target serves direct connections on.
pub const LAN_PATH: &str = "/v1/lan";
/// The DNS-SD service type LAN targets announce themselves under.
pub const SERVICE_TYPE: &str = "_deskwire._tcp.local.";
/// The TCP port a LAN target listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8451;

/// Characters in a password.
const CHARS: usize = 12;

/// The target's remote-connection password.
#[derive(Clone, PartialEq, Eq)]
pub struct LanPassword([u8; CHARS]);

/// Why a typed password is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LanPasswordError {
    /// Wrong number of characters once dashes and spaces are ignored.
    #[error(
        "a LAN password has {CHARS} characters (dashes and spaces do not count); this one has {0}"
    )]
    Length(usize),
    /// A character outside the alphabet.
    #[error("{0:?} cannot be in a LAN password (letters and digits only, no U)")]
    Character(char),
}

impl LanPassword {
    /// Bits of entropy of a generated password.
    pub const ENTROPY_BITS: u32 = 60;

    /// A password from 60 random bits (the low 60 of `random`); the caller draws them
    /// from a cryptographic source.
    pub fn from_random(random: u64) -> Self {
        Self(crockford::from_random(random))
    }

    /// Read a password as a person typed it: any case, with or without dashes and spaces;
    /// O reads as 0 and I or L as 1.
    pub fn parse(text: &str) -> Result<Self, LanPasswordError> {
        crockford::parse(text).map(Self).map_err(|e| match e {
            CodeTextError::Character(c) => LanPasswordError::Character(c),
            CodeTextError::Length(n) => LanPasswordError::Length(n),
        })
    }

    /// The canonical form the PAKE uses.
    pub(crate) fn canonical(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for LanPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crockford::write_grouped(f, &self.0)
    }
}

impl fmt::Debug for LanPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LanPassword(..)")
    }
}

impl std::str::FromStr for LanPassword {
    type Err = LanPasswordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The current password and when it changes: once a `period` (a day by default) and
/// whenever the agent restarts (a new rotation starts with a new password).
#[derive(Debug, Clone)]
pub struct PasswordRotation {
    current: LanPassword,
    issued_at: UnixMillis,
    period: Duration,
}

impl PasswordRotation {
    /// Passwords last a day.
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(24 * 3600);

    /// Start with `first`, issued at `now`.
    pub fn new(first: LanPassword, now: UnixMillis, period: Duration) -> Self {
        Self {
            current: first,
            issued_at: now,
            period: period.max(Duration::from_secs(1)),
        }
    }

    /// Whether the current password has lived its period at `now`.
    pub fn due(&self, now: UnixMillis) -> bool {
        now >= self.rotates_at()
    }

    /// When the current password stops working.
    pub fn rotates_at(&self) -> UnixMillis {
        self.issued_at.plus(self.period)
    }

    /// The password at `now`, replaced by `fresh()` first if it is due; `true` with it when
    /// it was replaced.
    pub fn current(
        &mut self,
        now: UnixMillis,
        fresh: impl FnOnce() -> LanPassword,
    ) -> (&LanPassword, bool) {
        let rotated = self.due(now);
        if rotated {
            self.current = fresh();
            self.issued_at = now;
        }
        (&self.current, rotated)
    }
}

/// How long wrong passwords make a source wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffLimits {
    /// The wait after the second failure (the first, a typo, costs none); each further
    /// failure doubles it.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Sources remembered at once (the least recently failed is forgotten first).
    pub max_sources: usize,
}

impl Default for BackoffLimits {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
            max_sources: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: UnixMillis,
}

/// Wrong passwords per source address (an IPv6 source per /64, since one host holds a
/// whole /64): after `n >= 2` failures the source waits `first * 2^(n-2)` before its next
/// try. The first wrong one is free: a technician who mistyped retypes at once (being
/// refused the right password a second later read as a broken password), and one more
/// guess against a password of about 60 bits changes nothing.
#[derive(Debug)]
pub struct LanBackoff {
    limits: BackoffLimits,
    sources: HashMap<IpAddr, Failures>,
}

impl LanBackoff {
    /// An empty record.
    pub fn new(limits: BackoffLimits) -> Self {
        Self {
            limits,
            sources: HashMap::new(),
        }
    }

    /// `Err(wait)` when `source` must still wait at `now` before trying a password.
    pub fn check(&self, source: IpAddr, now: UnixMillis) -> Result<(), Duration> {
        match self.sources.get(&key(source)) {
            Some(f) if now < f.until => Err(f.until.since(now)),
            _ => Ok(()),
        }
    }

    /// A wrong password from `source` at `now`; returns how long it must now wait.
    pub fn record_failure(&mut self, source: IpAddr, now: UnixMillis) -> Duration {
        let k = key(source);
        if !self.sources.contains_key(&k) && self.sources.len() >= self.limits.max_sources {
            // Forget the source whose wait ended first: it is the least likely to matter.
            if let Some(oldest) = self
                .sources
                .iter()
                .min_by_key(|(_, f)| f.until)
                .map(|(a, _)| *a)
            {
                self.sources.remove(&oldest);
            }
        }
        let f = self.sources.entry(k).or_insert(Failures {
            count: 0,
            until: now,
        });
        f.count = f.count.saturating_add(1);
        let wait = match f.count {
            1 => Duration::ZERO,
            n => self
                .limits
                .first
                .saturating_mul(1u32 << (n - 2).min(20))
                .min(self.limits.max),
        };
        f.until = now.plus(wait);
        wait
    }

    /// The right password from `source`: its record is cleared.
    pub fn record_success(&mut self, source: IpAddr) {
        self.sources.remove(&key(source));
    }

    /// Failures on record for `source`.
    pub fn failures(&self, source: IpAddr) -> u32 {
        self.sources.get(&key(source)).map_or(0, |f| f.count)
    }
}

/// IPv4 addresses as they are (and IPv4-mapped IPv6 as IPv4); IPv6 by /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_password_reads_back_from_its_display_in_any_case_and_spacing() {
        let p = LanPassword::from_random(0x0fed_cba9_8765_4321);
        let shown = p.to_string();
        assert_eq!(shown.len(), 14);
        assert_eq!(shown.matches('-').count(), 2);
        assert_eq!(LanPassword::parse(&shown).unwrap(), p);
        let typed = shown.to_lowercase().replace('-', " ");
        assert_eq!(LanPassword::parse(&typed).unwrap(), p);
    }

    #[test]
    fn different_random_bits_give_different_passwords() {
        let a = LanPassword::from_random(1);
        let b = LanPassword::from_random(2);
        let c = LanPassword::from_random(1 << 59);
        assert_ne!(a, b);
        assert_ne!(a, c);
        // Only the low 60 bits count.
        assert_eq!(a, LanPassword::from_random(1 | (1 << 63)));
    }

    #[test]
    fn look_alike_letters_are_forgiven_and_others_refused() {
        assert_eq!(
            LanPassword::parse("OOOO-IIII-LLLL").unwrap(),
            LanPassword::parse("0000-1111-1111").unwrap()
        );
        assert_eq!(
            LanPassword::parse("UUUU-0000-0000"),
            Err(LanPasswordError::Character('U'))
        );
        assert_eq!(
            LanPassword::parse("ABCD-EFGH"),
            Err(LanPasswordError::Length(8))
        );
        assert_eq!(
            LanPassword::parse("ABCD-EFGH-JKMN-P"),
            Err(LanPasswordError::Length(13))
        );
        assert!(LanPassword::parse("ABCD-EFGH-JKMé").is_err());
        assert_eq!(LanPassword::parse(""), Err(LanPasswordError::Length(0)));
    }

    #[test]
    fn the_password_rotates_after_a_day_and_not_before() {
        let t0 = UnixMillis(1_000_000);
        let mut r = PasswordRotation::new(LanPassword::from_random(1), t0, DAY);
        let (p, rotated) = r.current(t0.plus(DAY - Duration::from_millis(1)), || {
            LanPassword::from_random(2)
        });
        assert_eq!((p.clone(), rotated), (LanPassword::from_random(1), false));
        let (p, rotated) = r.current(t0.plus(DAY), || LanPassword::from_random(2));
        assert_eq!((p.clone(), rotated), (LanPassword::from_random(2), true));
        // The next day counts from the rotation.
        assert_eq!(r.rotates_at(), t0.plus(DAY + DAY));
        assert!(!r.due(t0.plus(DAY + DAY / 2)));
    }

    #[test]
    fn wrong_passwords_double_the_wait_of_that_source_only() {
        let mut b = LanBackoff::new(BackoffLimits::default());
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let other: IpAddr = "10.0.0.3".parse().unwrap();
        let t = UnixMillis(0);
        assert_eq!(b.check(a, t), Ok(()));
        // A typo is free: the next try may come at once.
        assert_eq!(b.record_failure(a, t), Duration::ZERO);
        assert_eq!(b.check(a, t), Ok(()));
        assert_eq!(b.record_failure(a, t), Duration::from_secs(1));
        assert_eq!(b.check(a, t), Err(Duration::from_secs(1)));
        assert_eq!(b.check(other, t), Ok(()));
        let t = t.plus(Duration::from_secs(1));
        assert_eq!(b.check(a, t), Ok(()));
        assert_eq!(b.record_failure(a, t), Duration::from_secs(2));
        assert_eq!(b.record_failure(a, t), Duration::from_secs(4));
        assert_eq!(
            b.check(a, t.plus(Duration::from_secs(3))),
            Err(Duration::from_secs(1))
        );
        assert_eq!(b.failures(a), 4);
        b.record_success(a);
        assert_eq!(b.check(a, t), Ok(()));
        assert_eq!(b.failures(a), 0);
    }

    #[test]
    fn the_wait_is_capped_and_ipv6_sources_count_per_64() {
        let mut b = LanBackoff::new(BackoffLimits::default());
        let a: IpAddr = "fd00:1:2:3::1".parse().unwrap();
        let same64: IpAddr = "fd00:1:2:3:ffff::9".parse().unwrap();
        let t = UnixMillis(0);
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = b.record_failure(a, t);
        }
        assert_eq!(last, Duration::from_secs(15 * 60));
        assert_eq!(b.check(same64, t), Err(Duration::from_secs(15 * 60)));
        assert_eq!(b.check("fd00:1:2:4::1".parse().unwrap(), t), Ok(()));
    }

    #[test]
    fn the_record_is_bounded_in_sources() {
        let limits = BackoffLimits {
            max_sources: 3,
            ..BackoffLimits::default()
        };
        let mut b = LanBackoff::new(limits);
        for i in 0..10u8 {
            b.record_failure(IpAddr::from([10, 0, 0, i]), UnixMillis(u64::from(i)));
        }
        assert_eq!(b.sources.len(), 3);
        assert_eq!(b.failures(IpAddr::from([10, 0, 0, 9])), 1);
    }
}
