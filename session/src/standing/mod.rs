//! Standing connections: the connection a target keeps open at its broker so that calls can
//! reach it, made again by itself whenever it drops.
//!
//! Two kinds of target keep one, and this module holds what each decides:
//!
//! - [`AdhocStanding`]: the temporary host of an ad-hoc support session. It activates the
//!   invitation (or re-attaches with the token the activation gave), reports calls, and ends
//!   the session at the broker's word, the user's "end now", or the session's lifetime by
//!   this computer's own clock, even while it cannot reach the broker.
//! - [`UnattendedStanding`]: an agent standing by for unattended calls, proving its device
//!   key on each connection.
//!
//! They are named after the connection rather than after the drivers (`TemporaryHost`,
//! `Standby`) because that is all they own: whoever holds the connection asks them what to
//! send and when to connect again. Like the other cores here they own no socket, task or
//! clock: the driver reports what happened (`handle_*`) and asks for messages to send,
//! events and the next deadline (`poll_*`). Connecting itself is an event
//! ([`AdhocStandingEvent::Connect`]), answered with `handle_connected` or `handle_lost`.
//!
//! # Two clocks
//!
//! Every input carries a [`Now`]: a monotonic time for the waits between attempts and a
//! wall-clock time for what the broker states in wall-clock terms: an ad-hoc session's
//! expiry (a [`UnixMillis`] instant, compared against the clock the driver's configuration
//! injects) and the time a standby proof is signed at. One clock would not do: back-off
//! measured on a wall clock stalls when that clock stands still (tests freeze it) or steps
//! back, and an expiry measured on a monotonic clock misses the wall clock stepping ahead
//! (a suspended laptop, an NTP correction, a test's virtual day). Deadlines come out on the
//! monotonic clock; the expiry is converted at the latest input, and while a session has an
//! expiry the core asks to be woken at least every [`WALL_CLOCK_RECHECK`] so that a
//! wall-clock step is noticed.

mod adhoc;
mod unattended;

#[cfg(test)]
mod tests;

use std::time::Duration;

use deskwire_signal::UnixMillis;

pub use adhoc::{AdhocStanding, AdhocStandingEvent, AdhocStart};
pub use unattended::{UnattendedStanding, UnattendedStandingEvent};

/// The first wait before connecting again; each further one doubles, up to the driver's
/// maximum.
pub const FIRST_RETRY: Duration = Duration::from_millis(200);

/// The longest a wall-clock step (forward or back) may go unnoticed while a session has an
/// expiry. The wall clock is an injected function with no way to announce a step, so it is
/// read again at least this often; when it runs normally the lifetime still ends exactly at
/// the expiry, because the wait is cut to it.
pub const WALL_CLOCK_RECHECK: Duration = Duration::from_millis(200);

/// When an input happens, on both clocks (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Time since the driver started, from a monotonic clock: waits and deadlines.
    pub mono: Duration,
    /// The wall clock: compared with a session's expiry, and signed into proofs.
    pub wall: UnixMillis,
}

/// The wait before the next attempt to connect: [`FIRST_RETRY`], doubling up to a maximum.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: FIRST_RETRY,
            max,
        }
    }

    /// The wait for this attempt; the one after it doubles. The first wait is
    /// [`FIRST_RETRY`] even under a smaller maximum, as it always was.
    pub(crate) fn take(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(self.max);
        wait
    }

    /// A connection worked: the next loss starts from the first wait again.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}
