//! Aligning the target's capture clock with the viewer's, from ping/pong round trips.

use std::time::Duration;

/// Samples kept; the one with the smallest round trip gives the offset, because queueing
/// delay only ever adds to a round trip and skews the midpoint.
const WINDOW: usize = 16;

/// An NTP-style estimate of `target clock - viewer clock`.
///
/// Sans-IO: the caller passes in the three timestamps of every pong.
#[derive(Debug, Default)]
pub(crate) struct ClockSync {
    samples: [(u64, i64); WINDOW],
    len: usize,
    next: usize,
    last_rtt_us: Option<u64>,
}

impl ClockSync {
    /// A pong arrived: the ping left at `sent_us` and came back at `recv_us` (viewer
    /// clock); the target stamped `target_us` when it answered.
    pub(crate) fn handle_pong(&mut self, sent_us: u64, target_us: u64, recv_us: u64) {
        if recv_us < sent_us {
            return; // not a pong of ours
        }
        let rtt = recv_us - sent_us;
        let midpoint = sent_us + rtt / 2;
        let offset = target_us as i64 - midpoint as i64;
        self.samples[self.next] = (rtt, offset);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        self.last_rtt_us = Some(rtt);
    }

    /// Target clock minus viewer clock, once a pong has arrived.
    pub(crate) fn offset_us(&self) -> Option<i64> {
        self.samples[..self.len]
            .iter()
            .min_by_key(|(rtt, _)| *rtt)
            .map(|&(_, offset)| offset)
    }

    /// The latest round trip.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        self.last_rtt_us.map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_comes_from_the_fastest_round_trip() {
        let mut c = ClockSync::default();
        assert_eq!(c.offset_us(), None);
        // Target clock runs 5000 us ahead. A slow round trip with its delay all on the way
        // back skews the midpoint; the fast one does not.
        c.handle_pong(1_000, 1_000 + 5_000 + 100, 1_000 + 2_000);
        c.handle_pong(10_000, 10_000 + 5_000 + 50, 10_000 + 100);
        assert_eq!(c.offset_us(), Some(5_000));
        assert_eq!(c.rtt(), Some(Duration::from_micros(100)));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut c = ClockSync::default();
        c.handle_pong(0, 1_000, 10); // offset 995, rtt 10
        for i in 1..=WINDOW as u64 {
            c.handle_pong(i * 1_000, i * 1_000 + 50 - 7, i * 1_000 + 100); // offset -7, rtt 100
        }
        assert_eq!(c.offset_us(), Some(-7));
    }

    #[test]
    fn a_pong_from_the_future_is_ignored() {
        let mut c = ClockSync::default();
        c.handle_pong(100, 5, 50);
        assert_eq!(c.offset_us(), None);
    }
}

/// Buckets of the lateness window: the fastest arrival per 10 s, over the last minute.
const LATE_BUCKETS: usize = 6;
const LATE_BUCKET_SECS: u64 = 10;

/// How late the viewer's messages reach the target, against the fastest recent one: its
/// stamps and our arrival times differ by the clocks' offset plus the path's delay, and the
/// smallest difference of the last minute stands for the offset plus the bare path.
#[derive(Debug)]
pub(crate) struct Lateness {
    minima: [(u64, i64); LATE_BUCKETS],
}

impl Lateness {
    pub(crate) fn new() -> Self {
        Self {
            minima: [(u64::MAX, i64::MAX); LATE_BUCKETS],
        }
    }

    /// A message stamped `sent_us` (the viewer's clock, wrapping) arrived at `now`; returns
    /// how much later than the fastest recent one it is.
    pub(crate) fn handle(&mut self, now: Duration, sent_us: u32) -> Duration {
        let arrived = now.as_micros() as u64 as u32;
        // Within +/- 35 minutes, which two session clocks started together always are.
        let d = i64::from(arrived.wrapping_sub(sent_us) as i32);
        let bucket = now.as_secs() / LATE_BUCKET_SECS;
        let slot = &mut self.minima[bucket as usize % LATE_BUCKETS];
        if slot.0 != bucket {
            *slot = (bucket, d);
        } else {
            slot.1 = slot.1.min(d);
        }
        let base = self
            .minima
            .iter()
            .filter(|(b, _)| *b != u64::MAX && bucket - *b < LATE_BUCKETS as u64)
            .map(|(_, m)| *m)
            .min()
            .unwrap_or(d);
        Duration::from_micros(d.saturating_sub(base).max(0) as u64)
    }
}

#[cfg(test)]
mod lateness_tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn lateness_counts_from_the_fastest_recent_message_whatever_the_clock_offset() {
        let mut l = Lateness::new();
        // The viewer's clock runs 7 s behind ours; the path takes 20 ms.
        let sent = |t: Duration| (t.as_micros() as u64 - 7_000_000) as u32;
        assert_eq!(
            l.handle(
                Duration::from_secs(8),
                sent(Duration::from_secs(8) - 20 * MS)
            ),
            Duration::ZERO
        );
        let now = Duration::from_secs(12);
        assert_eq!(l.handle(now, sent(now - 1_520 * MS)), 1_500 * MS);
    }

    #[test]
    fn the_fastest_arrival_is_forgotten_after_a_minute() {
        let mut l = Lateness::new();
        l.handle(Duration::from_secs(1), 1_000_000 - 10);
        // The path got 300 ms slower for good: after a minute that is the new normal.
        let now = Duration::from_secs(75);
        assert_eq!(
            l.handle(now, (75_000_000 - 300_000 - 10) as u32),
            Duration::ZERO
        );
    }
}
