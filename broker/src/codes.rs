//! Connection codes: issued at random, redeemed once, and remembered for a while afterwards.
//!
//! Sans-IO: nothing here reads a clock or touches a socket. Every call takes `now`, so expiry
//! and purging are tested in virtual time.
//!
//! A code that stops working (redeemed, expired, cancelled) is kept as a tombstone until
//! `expires_at + retention`. Two reasons: the user who types it gets the precise reason
//! ("already used", "expired") instead of "wrong code", and the code cannot be handed to
//! another technician while the first one's user might still type it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use deskwire_signal::{JoinRefusal, SessionCode, UnixMillis};
use rand::Rng;

/// Random draws before `issue` gives up. The book holds at most a few hundred thousand of the
/// billion codes, so 32 collisions in a row only happen with a broken random source.
const MAX_DRAWS: u32 = 32;

/// Names one session (a controller's code and, later, its target) inside this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(crate) u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session-{}", self.0)
    }
}

/// How long codes live and how many the book may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodeLimits {
    /// From issue to expiry.
    pub(crate) ttl: Duration,
    /// From expiry until a tombstone is forgotten (and the code may be issued again).
    pub(crate) retention: Duration,
    /// Live codes (issued, not yet redeemed, cancelled or expired) at once.
    pub(crate) max_pending: usize,
    /// Tombstones kept at once; past it the oldest is forgotten early, so an issuing spree
    /// cannot grow memory without bound (it only costs some users the precise reason).
    pub(crate) max_tombstones: usize,
}

/// Why no code was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IssueError {
    /// The cap on live codes is reached.
    #[error("the broker already has {max} connection codes waiting for a target; try again later")]
    TooManyPending {
        /// The cap.
        max: usize,
    },
    /// Every draw hit a code in use: the random source is broken.
    #[error("no free connection code found in {MAX_DRAWS} random draws")]
    NoFreeCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Issued and not redeemed or cancelled; expired once `now >= expires_at`.
    Pending,
    /// Redeemed by a target.
    Used,
    /// The controller left before anyone joined.
    Cancelled,
    /// Too many failed PAKE verifications.
    Burned,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    session: SessionId,
    expires_at: UnixMillis,
    state: State,
}

/// Every code issued and not yet forgotten, with its state.
#[derive(Debug)]
pub(crate) struct CodeBook {
    limits: CodeLimits,
    entries: HashMap<SessionCode, Entry>,
    /// Every entry ordered by expiry, so purging and eviction start from the oldest without
    /// scanning the map. Forget time is `expires_at + retention`, the same order.
    by_expiry: BTreeSet<(UnixMillis, SessionCode)>,
    /// The codes still redeemable, by expiry; `trim_expired` drops those whose time ran out,
    /// so its length is what the cap on pending codes counts.
    pending: BTreeSet<(UnixMillis, SessionCode)>,
}

impl CodeBook {
    /// An empty book.
    pub(crate) fn new(limits: CodeLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            pending: BTreeSet::new(),
        }
    }

    /// Codes still redeemable at `now`.
    #[cfg(test)]
    pub(crate) fn pending_len(&mut self, now: UnixMillis) -> usize {
        self.trim_expired(now);
        self.pending.len()
    }

    /// Codes remembered, live or tombstoned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Issue a fresh code for `session`, returning it with its expiry.
    ///
    /// The code is drawn uniformly from the codes not in the book, live or tombstoned. `rng`
    /// must be unpredictable in production: whoever can guess a code can join the session.
    pub(crate) fn issue(
        &mut self,
        now: UnixMillis,
        session: SessionId,
        rng: &mut impl Rng,
    ) -> Result<(SessionCode, UnixMillis), IssueError> {
        self.purge(now);
        if self.pending.len() >= self.limits.max_pending {
            return Err(IssueError::TooManyPending {
                max: self.limits.max_pending,
            });
        }
        while self.entries.len() - self.pending.len() >= self.limits.max_tombstones.max(1) {
            if !self.forget_oldest_tombstone() {
                break;
            }
        }
        for _ in 0..MAX_DRAWS {
            let Some(code) = SessionCode::from_number(rng.random_range(0..SessionCode::SPACE))
            else {
                continue;
            };
            if self.entries.contains_key(&code) {
                continue;
            }
            let expires_at = now.plus(self.limits.ttl);
            self.entries.insert(
                code,
                Entry {
                    session,
                    expires_at,
                    state: State::Pending,
                },
            );
            self.by_expiry.insert((expires_at, code));
            self.pending.insert((expires_at, code));
            return Ok((code, expires_at));
        }
        Err(IssueError::NoFreeCode)
    }

    /// Redeem the code a user typed. On success the code is used up.
    pub(crate) fn redeem(&mut self, text: &str, now: UnixMillis) -> Result<SessionId, JoinRefusal> {
        let code: SessionCode = text.parse().map_err(|_| JoinRefusal::Malformed)?;
        // Forget what is past retention first, so the answer does not depend on when the
        // last purge happened to run.
        self.purge(now);
        let entry = self.entries.get_mut(&code).ok_or(JoinRefusal::WrongCode)?;
        match entry.state {
            State::Used => Err(JoinRefusal::AlreadyUsed),
            // A code whose time ran out is expired, whatever happened to it since: the
            // technician's viewer closing after the expiry cancels it too, and "the
            // technician closed this session" misled users holding an old code.
            State::Cancelled | State::Pending if now >= entry.expires_at => {
                Err(JoinRefusal::Expired)
            }
            State::Cancelled => Err(JoinRefusal::Cancelled),
            State::Burned => Err(JoinRefusal::Burned),
            State::Pending => {
                entry.state = State::Used;
                self.pending.remove(&(entry.expires_at, code));
                Ok(entry.session)
            }
        }
    }

    /// Whether the book remembers `code` at all, live or tombstoned.
    pub(crate) fn holds(&self, code: SessionCode) -> bool {
        self.entries.contains_key(&code)
    }

    /// Take in a code issued elsewhere (before a restart, or by another broker) that the
    /// store says is still pending until `expires_at`, for `session`. Whatever the book
    /// remembered of it is replaced: the store is the authority. Not counted against the cap
    /// on pending codes, which limits issuing, not resuming.
    pub(crate) fn adopt(&mut self, code: SessionCode, session: SessionId, expires_at: UnixMillis) {
        if let Some(old) = self.entries.remove(&code) {
            self.by_expiry.remove(&(old.expires_at, code));
            self.pending.remove(&(old.expires_at, code));
        }
        self.entries.insert(
            code,
            Entry {
                session,
                expires_at,
                state: State::Pending,
            },
        );
        self.by_expiry.insert((expires_at, code));
        self.pending.insert((expires_at, code));
    }

    /// The session a still-redeemable code names, without redeeming it.
    pub(crate) fn session_of(&self, text: &str, now: UnixMillis) -> Option<SessionId> {
        let code: SessionCode = text.parse().ok()?;
        let entry = self.entries.get(&code)?;
        (entry.state == State::Pending && now < entry.expires_at).then_some(entry.session)
    }

    /// The controller left: a code nobody redeemed stops working and says so.
    /// Returns whether the code was still pending.
    pub(crate) fn cancel(&mut self, code: SessionCode) -> bool {
        let Some(entry) = self.entries.get_mut(&code) else {
            return false;
        };
        if entry.state != State::Pending {
            return false;
        }
        entry.state = State::Cancelled;
        self.pending.remove(&(entry.expires_at, code));
        true
    }

    /// An attempt with this (redeemed) code failed verification: it may be redeemed again
    /// until it expires. Returns whether it was in use.
    pub(crate) fn reopen(&mut self, code: SessionCode) -> bool {
        let Some(entry) = self.entries.get_mut(&code) else {
            return false;
        };
        if entry.state != State::Used {
            return false;
        }
        entry.state = State::Pending;
        self.pending.insert((entry.expires_at, code));
        true
    }

    /// The code stops working for good (too many failed verifications).
    pub(crate) fn burn(&mut self, code: SessionCode) {
        if let Some(entry) = self.entries.get_mut(&code) {
            if entry.state == State::Pending {
                self.pending.remove(&(entry.expires_at, code));
            }
            entry.state = State::Burned;
        }
    }

    /// Forget tombstones whose retention ended at or before `now`; their codes may be issued
    /// again.
    pub(crate) fn purge(&mut self, now: UnixMillis) {
        self.trim_expired(now);
        while let Some(&(expires_at, code)) = self.by_expiry.first() {
            if expires_at.plus(self.limits.retention) > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&code);
            // Normally already trimmed; a zero retention makes expiry and forgetting coincide.
            self.pending.remove(&(expires_at, code));
        }
    }

    fn trim_expired(&mut self, now: UnixMillis) {
        while let Some(&(expires_at, _)) = self.pending.first() {
            if expires_at > now {
                break;
            }
            self.pending.pop_first();
        }
    }

    /// Forget the tombstone closest to its own forget time. Returns false if there is none.
    fn forget_oldest_tombstone(&mut self) -> bool {
        let oldest = self
            .by_expiry
            .iter()
            .find(|key| !self.pending.contains(key))
            .copied();
        let Some(key) = oldest else {
            return false;
        };
        self.by_expiry.remove(&key);
        self.entries.remove(&key.1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};

    const TTL: Duration = Duration::from_secs(600);
    const RETENTION: Duration = Duration::from_secs(3600);
    const T0: UnixMillis = UnixMillis(1_700_000_000_000);

    fn limits() -> CodeLimits {
        CodeLimits {
            ttl: TTL,
            retention: RETENTION,
            max_pending: 100,
            max_tombstones: 1000,
        }
    }

    fn book() -> CodeBook {
        CodeBook::new(limits())
    }

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// A random source that always says the same thing.
    struct Stuck;
    impl RngCore for Stuck {
        fn next_u32(&mut self) -> u32 {
            7
        }
        fn next_u64(&mut self) -> u64 {
            7
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(7);
        }
    }

    #[test]
    fn an_issued_code_expires_one_ttl_later_and_redeems_to_its_session() {
        let mut b = book();
        let (code, expires_at) = b.issue(T0, SessionId(4), &mut rng(1)).unwrap();
        assert_eq!(expires_at, T0.plus(TTL));
        assert_eq!(b.redeem(&code.to_string(), T0), Ok(SessionId(4)));
    }

    #[test]
    fn the_user_may_type_the_code_without_spaces_or_with_dashes() {
        let mut b = book();
        let (code, _) = b.issue(T0, SessionId(1), &mut rng(1)).unwrap();
        let dashed = code.to_string().replace(' ', "-");
        assert_eq!(b.redeem(&dashed, T0), Ok(SessionId(1)));
        let (code, _) = b.issue(T0, SessionId(2), &mut rng(2)).unwrap();
        let bare = format!("{:06}", code.number());
        assert_eq!(b.redeem(&bare, T0), Ok(SessionId(2)));
    }

    #[test]
    fn text_that_is_not_a_code_is_malformed() {
        let mut b = book();
        for text in ["", "12345678", "1234567890", "12a 456 789", "hello"] {
            assert_eq!(b.redeem(text, T0), Err(JoinRefusal::Malformed), "{text:?}");
        }
    }

    #[test]
    fn a_code_never_issued_is_a_wrong_code() {
        let mut b = book();
        let (code, _) = b.issue(T0, SessionId(1), &mut rng(1)).unwrap();
        let other = SessionCode::from_number((code.number() + 1) % SessionCode::SPACE);
        let other = other.unwrap();
        assert_eq!(
            b.redeem(&other.to_string(), T0),
            Err(JoinRefusal::WrongCode)
        );
    }

    #[test]
    fn codes_are_single_use() {
        let mut b = book();
        let (code, _) = b.issue(T0, SessionId(1), &mut rng(1)).unwrap();
        assert_eq!(b.redeem(&code.to_string(), T0), Ok(SessionId(1)));
        assert_eq!(
            b.redeem(&code.to_string(), T0),
            Err(JoinRefusal::AlreadyUsed)
        );
        // Still "already used" after its expiry, until the tombstone is purged.
        let later = T0.plus(TTL).plus(Duration::from_secs(60));
        assert_eq!(
            b.redeem(&code.to_string(), later),
            Err(JoinRefusal::AlreadyUsed)
        );
    }

    #[test]
    fn a_code_works_until_the_last_millisecond_and_is_expired_at_its_expiry() {
        let mut b = book();
        let (code, expires_at) = b.issue(T0, SessionId(1), &mut rng(1)).unwrap();
        assert_eq!(
            b.redeem(&code.to_string(), expires_at),
            Err(JoinRefusal::Expired)
        );

        let (code, expires_at) = b.issue(T0, SessionId(2), &mut rng(2)).unwrap();
        let last_ms = UnixMillis(expires_at.0 - 1);
        assert_eq!(b.redeem(&code.to_string(), last_ms), Ok(SessionId(2)));
    }

    #[test]
    fn a_code_that_ran_out_is_expired_even_after_its_technician_left() {
        let mut b = book();
        let (code, expires_at) = b.issue(T0, SessionId(1), &mut rng(1)).unwrap();
        // The technician's viewer closes after the code ran out; the user types it later.
        assert!(b.cancel(code));
        assert_eq!(
            b.redeem(&code.to_string(), expires_at),
            Err(JoinRefusal::Expired)
        );
        let (code, expires_at) = b.issue(T0, SessionId(2), &mut rng(2)).unwrap();
        assert!(b.cancel(code));
        let before = UnixMillis(expires_at.0 - 1);
        assert_eq!(
            b.redeem(&code.to_string(), before),
            Err(JoinRefusal::Cancelled)
        );
    }

    #[test]
    fn a_cancelled_code_says_so_and_cancelling_a_used_code_changes_nothing() {
        let mut b = book();
        let (code, _) = b.issue(T0, SessionId(1), &mut rng(1)).unwrap();
        assert!(b.cancel(code));
        assert!(!b.cancel(code), "cancelling twice is a no-op");
        assert_eq!(b.redeem(&code.to_string(), T0), Err(JoinRefusal::Cancelled));

        let (code, _) = b.issue(T0, SessionId(2), &mut rng(2)).unwrap();
        assert_eq!(b.redeem(&code.to_string(), T0), Ok(SessionId(2)));
        assert!(!b.cancel(code));
        assert_eq!(
            b.redeem(&code.to_string(), T0),
            Err(JoinRefusal::AlreadyUsed)
        );
    }

    #[test]
    fn tombstones_are_forgotten_exactly_one_retention_after_expiry() {
        let mut b = book();
        let (used, expires_at) = b.issue(T0, SessionId(1), &mut rng(1)).unwrap();
        let (expired, _) = b.issue(T0, SessionId(2), &mut rng(2)).unwrap();
        let (cancelled, _) = b.issue(T0, SessionId(3), &mut rng(3)).unwrap();
        b.redeem(&used.to_string(), T0).unwrap();
        b.cancel(cancelled);

        let forget_at = expires_at.plus(RETENTION);
        let just_before = UnixMillis(forget_at.0 - 1);
        b.purge(just_before);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.redeem(&used.to_string(), just_before),
            Err(JoinRefusal::AlreadyUsed)
        );
        assert_eq!(
            b.redeem(&expired.to_string(), just_before),
            Err(JoinRefusal::Expired)
        );
        // Past its expiry a cancelled code reads as expired too: what the user must do
        // (ask for a new one) is the same, and the time is the surer fact.
        assert_eq!(
            b.redeem(&cancelled.to_string(), just_before),
            Err(JoinRefusal::Expired)
        );

        b.purge(forget_at);
        assert_eq!(b.len(), 0);
        for code in [used, expired, cancelled] {
            assert_eq!(
                b.redeem(&code.to_string(), forget_at),
                Err(JoinRefusal::WrongCode)
            );
        }
    }

    #[test]
    fn a_new_code_never_repeats_a_live_or_tombstoned_one_until_purged() {
        // The same seed makes the same first draw, so the second issue must skip it.
        let mut b = book();
        let (live, _) = b.issue(T0, SessionId(1), &mut rng(9)).unwrap();
        let (second, _) = b.issue(T0, SessionId(2), &mut rng(9)).unwrap();
        assert_ne!(live, second);

        b.cancel(live);
        b.redeem(&second.to_string(), T0).unwrap();
        let (third, _) = b.issue(T0, SessionId(3), &mut rng(9)).unwrap();
        assert!(third != live && third != second);
        assert_eq!(b.redeem(&live.to_string(), T0), Err(JoinRefusal::Cancelled));

        // Once every tombstone is purged the first draw is free again.
        let much_later = T0.plus(TTL).plus(RETENTION);
        b.purge(much_later);
        let (again, _) = b.issue(much_later, SessionId(4), &mut rng(9)).unwrap();
        assert_eq!(again, live);
    }

    #[test]
    fn issuing_beyond_the_pending_cap_is_refused_until_a_code_leaves() {
        let mut b = CodeBook::new(CodeLimits {
            max_pending: 3,
            ..limits()
        });
        let mut r = rng(5);
        let codes: Vec<_> = (0..3)
            .map(|i| b.issue(T0, SessionId(i), &mut r).unwrap().0)
            .collect();
        assert_eq!(
            b.issue(T0, SessionId(9), &mut r),
            Err(IssueError::TooManyPending { max: 3 })
        );
        // Redeeming, cancelling and expiry each free a slot.
        b.redeem(&codes[0].to_string(), T0).unwrap();
        b.issue(T0, SessionId(10), &mut r).unwrap();
        b.cancel(codes[1]);
        b.issue(T0, SessionId(11), &mut r).unwrap();
        assert!(b.issue(T0, SessionId(12), &mut r).is_err());
        let expiry = T0.plus(TTL);
        assert_eq!(b.pending_len(expiry), 0);
        b.issue(expiry, SessionId(13), &mut r).unwrap();
    }

    #[test]
    fn the_tombstone_cap_forgets_the_oldest_first() {
        let mut b = CodeBook::new(CodeLimits {
            max_tombstones: 2,
            ..limits()
        });
        let mut r = rng(6);
        let mut tombstones = Vec::new();
        for i in 0..3 {
            let now = T0.plus(Duration::from_secs(i));
            let (code, _) = b.issue(now, SessionId(i), &mut r).unwrap();
            b.cancel(code);
            tombstones.push(code);
        }
        // The third issue found two tombstones and made room by forgetting the oldest.
        assert_eq!(b.len(), 2);
        assert_eq!(
            b.redeem(&tombstones[0].to_string(), T0),
            Err(JoinRefusal::WrongCode)
        );
        assert_eq!(
            b.redeem(&tombstones[1].to_string(), T0),
            Err(JoinRefusal::Cancelled)
        );
        // Live codes are never forgotten to make room.
        let (live, _) = b.issue(T0, SessionId(7), &mut r).unwrap();
        b.issue(T0, SessionId(8), &mut r).unwrap();
        assert_eq!(b.redeem(&live.to_string(), T0), Ok(SessionId(7)));
    }

    #[test]
    fn a_broken_random_source_gives_up_instead_of_spinning() {
        let mut b = book();
        b.issue(T0, SessionId(1), &mut Stuck).unwrap();
        assert_eq!(
            b.issue(T0, SessionId(2), &mut Stuck),
            Err(IssueError::NoFreeCode)
        );
    }

    #[test]
    fn an_adopted_code_redeems_once_and_replaces_what_the_book_remembered() {
        let mut b = book();
        let code = SessionCode::from_number(123_456).unwrap();
        assert!(!b.holds(code));
        b.adopt(code, SessionId(9), T0.plus(TTL));
        assert!(b.holds(code));
        assert_eq!(b.session_of("123456", T0), Some(SessionId(9)));
        assert_eq!(b.redeem("123456", T0), Ok(SessionId(9)));
        assert_eq!(b.redeem("123456", T0), Err(JoinRefusal::AlreadyUsed));
        // The store says it is pending again (a failed verification elsewhere): believed.
        b.adopt(code, SessionId(10), T0.plus(TTL));
        assert_eq!(b.pending_len(T0), 1);
        assert_eq!(b.redeem("123456", T0), Ok(SessionId(10)));
    }
}
