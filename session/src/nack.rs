//! The viewer's half of selective retransmission: which video messages are missing from the
//! transport sequence, and when to ask for them again ([`crate::wire::ControlMessage::Nack`]).
//!
//! Why: the video channel is unordered and partially reliable, and SCTP repairs a loss
//! slowly where it counts. A lost retransmission, or a loss it does not see three times,
//! waits for its timer, at least a second in rtc-sctp, and the chunk's lifetime runs out
//! first. Measured on `dsl` (6 Mbit/s, 50 ms RTT, 0.5 % loss): a band frame that waits past
//! a few frames is given up, and in the compact layout the keyframe that repairs it is the
//! whole screen, a second of the link, itself exposed to loss. Asked for directly, a lost
//! message comes back a round trip after the hole shows.
//!
//! A hole is asked for once it has stayed open for the reordering the path showed lately (a
//! message that merely came late is not asked for), again after each round trip while it
//! stays open, at most [`MAX_ASKS`] times, and never after [`GIVE_UP`] (the sender no longer
//! holds it, and the band has moved on to a keyframe by then).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::feedback::extend_seq;

/// How often one missing message is asked for.
pub(crate) const MAX_ASKS: u8 = 3;
/// After this, a hole is forgotten.
const GIVE_UP: Duration = Duration::from_secs(1);
/// The wait before a hole counts as a loss: at least this, ...
const MIN_GRACE: Duration = Duration::from_millis(5);
/// ... at most this, whatever the path's reordering ...
const MAX_GRACE: Duration = Duration::from_millis(80);
/// ... and this before the path showed any.
const START_GRACE: Duration = Duration::from_millis(15);
/// Repeat a request after the round trip and this.
const RETRY_SLACK: Duration = Duration::from_millis(20);
/// Round trip assumed before one is measured.
const DEFAULT_RTT: Duration = Duration::from_millis(200);
/// Holes tracked at most: a jump wider than this is a stall or a restart, not losses to
/// repair one by one.
const MAX_HOLES: usize = 512;

#[derive(Debug, Clone, Copy)]
struct Hole {
    seen: Duration,
    asked: Option<Duration>,
    asks: u8,
}

/// Missing video messages and when to ask for them. See the module documentation.
#[derive(Debug)]
pub(crate) struct LossList {
    highest: Option<u64>,
    holes: BTreeMap<u64, Hole>,
    /// How late a message that was not lost came after the hole it left showed, lately:
    /// the path's reordering. Decays so that one odd delay does not hold requests back.
    reorder: Duration,
    /// Messages asked for so far.
    asked: u64,
}

impl LossList {
    pub(crate) fn new() -> Self {
        Self {
            highest: None,
            holes: BTreeMap::new(),
            reorder: START_GRACE,
            asked: 0,
        }
    }

    /// A video message with sequence number `seq` arrived at `now`; `resent` if the target
    /// sent it again on request.
    pub(crate) fn handle_seq(&mut self, now: Duration, seq: u32, resent: bool) {
        let ext = extend_seq(self.highest, seq);
        if let Some(hole) = self.holes.remove(&ext) {
            if !resent && hole.asked.is_none() {
                // It came late, not lost: the path reorders this much.
                let late = now.saturating_sub(hole.seen);
                self.reorder = self.reorder.max(late).min(MAX_GRACE);
            }
            return;
        }
        if resent {
            return;
        }
        let Some(highest) = self.highest else {
            self.highest = Some(ext);
            return;
        };
        if ext <= highest {
            return;
        }
        let gap = ext - highest - 1;
        if gap as usize > MAX_HOLES {
            // A stall or a restart: these are not worth asking for one by one.
            self.holes.clear();
        } else {
            for s in highest + 1..ext {
                self.holes.insert(
                    s,
                    Hole {
                        seen: now,
                        asked: None,
                        asks: 0,
                    },
                );
            }
            while self.holes.len() > MAX_HOLES {
                self.holes.pop_first();
            }
        }
        self.highest = Some(ext);
    }

    fn grace(&self) -> Duration {
        (self.reorder + MIN_GRACE).clamp(MIN_GRACE, MAX_GRACE)
    }

    fn retry(rtt: Option<Duration>) -> Duration {
        rtt.unwrap_or(DEFAULT_RTT) + RETRY_SLACK
    }

    /// When a hole `h` is next due to be asked for, given the grace and retry in force.
    fn due(h: &Hole, grace: Duration, retry: Duration) -> Duration {
        match h.asked {
            None => h.seen + grace,
            Some(at) => at + retry,
        }
    }

    /// The messages to ask for at `now`, ascending; empty if none is due. Forgets holes past
    /// their last ask or too old to repair.
    pub(crate) fn poll_nack(&mut self, now: Duration, rtt: Option<Duration>) -> Vec<u32> {
        let retry = Self::retry(rtt);
        self.holes.retain(|_, h| {
            now < h.seen + GIVE_UP
                && (h.asks < MAX_ASKS || h.asked.is_some_and(|a| now < a + retry))
        });
        let grace = self.grace();
        let mut due = Vec::new();
        for (seq, h) in self.holes.iter_mut() {
            if h.asks < MAX_ASKS && now >= Self::due(h, grace, retry) {
                h.asked = Some(now);
                h.asks += 1;
                due.push(*seq as u32);
            }
        }
        if !due.is_empty() {
            self.asked += due.len() as u64;
            // The path's reordering is judged afresh: halve what was learnt per request.
            self.reorder = (self.reorder / 2).max(MIN_GRACE);
        }
        due
    }

    /// When [`Self::poll_nack`] has something to ask for next, if anything.
    pub(crate) fn next_due(&self, rtt: Option<Duration>) -> Option<Duration> {
        let (grace, retry) = (self.grace(), Self::retry(rtt));
        self.holes
            .values()
            .filter(|h| h.asks < MAX_ASKS)
            .map(|h| Self::due(h, grace, retry))
            .min()
    }

    /// Messages asked for so far.
    pub(crate) fn asked(&self) -> u64 {
        self.asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const RTT: Option<Duration> = Some(Duration::from_millis(50));

    #[test]
    fn a_hole_is_asked_for_after_the_grace_and_again_each_round_trip_up_to_the_limit() {
        let mut l = LossList::new();
        l.handle_seq(Duration::ZERO, 1, false);
        l.handle_seq(MS, 3, false);
        assert!(l.poll_nack(10 * MS, RTT).is_empty());
        assert_eq!(l.next_due(RTT), Some(MS + START_GRACE + MIN_GRACE));
        assert_eq!(l.poll_nack(21 * MS, RTT), [2]);
        // Not again before a round trip.
        assert!(l.poll_nack(60 * MS, RTT).is_empty());
        assert_eq!(l.poll_nack(91 * MS, RTT), [2]);
        assert_eq!(l.poll_nack(161 * MS, RTT), [2]);
        assert!(l.poll_nack(300 * MS, RTT).is_empty());
        assert_eq!(l.next_due(RTT), None);
        assert_eq!(l.asked(), 3);
    }

    #[test]
    fn a_hole_filled_by_the_resent_message_is_not_asked_for_again() {
        let mut l = LossList::new();
        for s in [1, 2, 5] {
            l.handle_seq(Duration::ZERO, s, false);
        }
        assert_eq!(l.poll_nack(30 * MS, RTT), [3, 4]);
        l.handle_seq(80 * MS, 3, true);
        l.handle_seq(80 * MS, 4, true);
        assert!(l.poll_nack(200 * MS, RTT).is_empty());
        assert_eq!(l.next_due(RTT), None);
    }

    #[test]
    fn a_message_that_came_late_is_not_asked_for_and_widens_the_grace() {
        let mut l = LossList::new();
        l.handle_seq(Duration::ZERO, 1, false);
        l.handle_seq(Duration::ZERO, 3, false);
        l.handle_seq(12 * MS, 2, false);
        assert!(l.poll_nack(100 * MS, RTT).is_empty());
        // Reordered by 40 ms: the next hole waits that long before it is asked for.
        l.handle_seq(100 * MS, 5, false);
        l.handle_seq(140 * MS, 4, false);
        l.handle_seq(200 * MS, 7, false);
        assert!(l.poll_nack(240 * MS, RTT).is_empty());
        assert_eq!(l.poll_nack(246 * MS, RTT), [6]);
    }

    #[test]
    fn old_holes_are_forgotten_and_a_wide_jump_is_not_asked_for() {
        let mut l = LossList::new();
        l.handle_seq(Duration::ZERO, 1, false);
        l.handle_seq(Duration::ZERO, 3, false);
        assert!(l.poll_nack(GIVE_UP, None).is_empty());
        l.handle_seq(GIVE_UP, 3 + MAX_HOLES as u32 + 2, false);
        assert!(l.poll_nack(GIVE_UP + 100 * MS, None).is_empty());
        assert_eq!(l.next_due(None), None);
    }

    #[test]
    fn holes_across_the_sequence_wrap_are_named_by_their_wire_numbers() {
        let mut l = LossList::new();
        l.handle_seq(Duration::ZERO, u32::MAX - 1, false);
        l.handle_seq(Duration::ZERO, 1, false);
        assert_eq!(l.poll_nack(50 * MS, RTT), [u32::MAX, 0]);
    }

    #[test]
    fn a_resent_message_never_opens_holes() {
        let mut l = LossList::new();
        l.handle_seq(Duration::ZERO, 10, false);
        l.handle_seq(MS, 30, true);
        assert_eq!(l.next_due(RTT), None);
        l.handle_seq(2 * MS, 11, false);
        assert_eq!(l.next_due(RTT), None);
    }
}
