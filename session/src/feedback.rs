//! The viewer's half of congestion control: it measures what the video channel delivers
//! (bytes, messages missing from the transport sequence, how late messages arrive compared
//! with the fastest recent one) and sums it up as a [`Feedback`] for the target's rate
//! viewer. Nothing is sent while no video arrives, so an idle session costs nothing.

use std::time::Duration;

use crate::wire::{is_resent, video_stamp, Feedback};

/// The fastest arrival is remembered per second over this many seconds: the path's base
/// delay, against which a queue shows.
const BASE_WINDOW_SECS: usize = 10;

/// A feedback covers at least this long.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// An arrival this soon after the last feedback continues the flow it measured.
const CONTINUOUS: Duration = Duration::from_millis(250);

/// A message missing from the transport sequence counts as lost only once it stayed
/// missing this long: until then it may be a message SCTP is still repairing (a round
/// trip, or the loss shield's 40 ms hold plus one). Counted at once, such late messages
/// read as 4-11 % loss on an LTE-like path losing 1 % of its packets in bursts, and the
/// target cut its estimate to a fifth of the link on them.
const LOSS_GRACE: Duration = Duration::from_millis(400);

/// Missing messages remembered at most; a larger jump counts its excess lost at once.
const MAX_MISSING: u64 = 4096;

/// `seq` widened to 64 bits: the value closest to `highest`, past wrap-around.
pub(crate) fn extend_seq(highest: Option<u64>, seq: u32) -> u64 {
    match highest {
        None => u64::from(seq),
        Some(h) => {
            let delta = seq.wrapping_sub(h as u32) as i32;
            h.saturating_add_signed(i64::from(delta))
        }
    }
}

/// Measures the video channel between two feedbacks.
#[derive(Debug)]
pub(crate) struct ReceiveMeter {
    /// When the current interval started (the last feedback, or the first arrival).
    since: Option<Duration>,
    /// When the last feedback was taken.
    taken: Option<Duration>,
    bytes: u64,
    received: u32,
    /// Sum of (arrival - send time) over the interval's in-order arrivals, microseconds,
    /// relative, and how many there were.
    delay_sum: i64,
    delay_count: u32,
    /// The highest sequence number seen, extended past wrap-around.
    highest: Option<u64>,
    /// Sequence numbers skipped over and not arrived yet, with when they were skipped.
    missing: std::collections::BTreeMap<u64, Duration>,
    /// Losses counted at once (a jump past `MAX_MISSING`), not reported yet.
    lost_now: u64,
    /// Per-second minima of (arrival - send time): `(second, min)`.
    minima: [(u64, i64); BASE_WINDOW_SECS],
}

impl ReceiveMeter {
    pub(crate) fn new() -> Self {
        Self {
            since: None,
            taken: None,
            bytes: 0,
            received: 0,
            delay_sum: 0,
            delay_count: 0,
            highest: None,
            missing: std::collections::BTreeMap::new(),
            lost_now: 0,
            minima: [(u64::MAX, i64::MAX); BASE_WINDOW_SECS],
        }
    }

    /// A video message of `len` bytes arrived at `now`. Messages without a readable stamp
    /// count as bytes only.
    pub(crate) fn handle_video(&mut self, now: Duration, msg: &[u8]) {
        // A flow that continues counts from the last feedback, or the rate of an interval
        // that began with a gap would be overstated; after a pause, from this arrival.
        let since = self
            .taken
            .filter(|t| now.saturating_sub(*t) < CONTINUOUS)
            .unwrap_or(now);
        self.since.get_or_insert(since);
        self.bytes += msg.len() as u64;
        let Some((seq, sent_at_us)) = video_stamp(msg) else {
            return;
        };
        if is_resent(msg) {
            // Sent again on request: the path carried its bytes, but the loss it repairs
            // stays a loss (it says the path is lossy), and it left late on purpose, so its
            // lateness is no queue.
            return;
        }
        self.received += 1;
        let ext = extend_seq(self.highest, seq);
        let in_order = self.highest.is_none_or(|h| ext > h);
        match self.highest {
            Some(h) if ext > h + 1 => {
                let skipped = ext - h - 1;
                let kept = skipped.min(MAX_MISSING);
                self.lost_now += skipped - kept;
                self.missing.extend((ext - kept..ext).map(|s| (s, now)));
                while self.missing.len() as u64 > MAX_MISSING {
                    self.missing.pop_first();
                    self.lost_now += 1;
                }
            }
            Some(h) if ext < h => {
                // Late, not lost: SCTP repaired it.
                self.missing.remove(&ext);
            }
            _ => {}
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        // Both clocks count microseconds from their own session start: the difference is
        // the one-way delay plus a constant offset, which cancels against the minimum.
        let arrived = (now.as_micros() as u64) as u32;
        let d = i64::from(arrived.wrapping_sub(sent_at_us) as i32);
        if in_order {
            // A message behind one already here was resent (the transport's retransmission
            // after a loss, a round trip or its 1 s timer later): its lateness is the
            // loss's, not a queue on the path. Measured on a 6 Mbit/s link at 0.5 % loss,
            // counting them read 50-300 ms "queues" while 2 Mbit/s were sent, and the
            // estimate was cut to a quarter of the link.
            self.delay_sum += d;
            self.delay_count += 1;
        }
        let second = now.as_secs();
        let slot = &mut self.minima[second as usize % BASE_WINDOW_SECS];
        if slot.0 != second {
            *slot = (second, d);
        } else {
            slot.1 = slot.1.min(d);
        }
    }

    /// Whether video arrived since the last feedback.
    pub(crate) fn has_data(&self) -> bool {
        self.since.is_some()
    }

    /// The feedback for the interval up to `now`, if any video arrived in it; the next
    /// interval starts at `now`.
    pub(crate) fn take(&mut self, now: Duration) -> Option<Feedback> {
        let since = self.since?;
        let interval = now.saturating_sub(since);
        if interval < MIN_INTERVAL {
            // Video resumed just before the feedback was due: an interval this short says
            // nothing, and the target refuses one under a millisecond (measured: 38 us after
            // a pause). It joins the next one.
            return None;
        }
        let mut lost = std::mem::take(&mut self.lost_now);
        self.missing.retain(|_, since| {
            let gone = *since + LOSS_GRACE <= now;
            lost += u64::from(gone);
            !gone
        });
        let second = now.as_secs();
        let base = self
            .minima
            .iter()
            .filter(|(s, _)| *s != u64::MAX && second.saturating_sub(*s) < BASE_WINDOW_SECS as u64)
            .map(|(_, m)| *m)
            .min();
        let queue_delay_us = match (base, self.delay_count) {
            (Some(base), n) if n > 0 => (self.delay_sum / i64::from(n) - base).max(0),
            _ => 0,
        };
        let fb = Feedback {
            interval_us: clamp_u32(interval.as_micros()),
            bytes: clamp_u32(u128::from(self.bytes)),
            received: self.received,
            lost: clamp_u32(u128::from(lost)),
            queue_delay_us: clamp_u32(queue_delay_us as u128),
            highest_seq: self.highest.unwrap_or(0) as u32,
            rtt_us: 0,
        };
        self.since = None;
        self.taken = Some(now);
        self.bytes = 0;
        self.received = 0;
        self.delay_sum = 0;
        self.delay_count = 0;
        Some(fb)
    }
}

fn clamp_u32(v: u128) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{stamp_video, VIDEO_HEADER_LEN};

    const MS: Duration = Duration::from_millis(1);

    fn msg(seq: u32, sent_at: Duration) -> Vec<u8> {
        let mut m = vec![0u8; VIDEO_HEADER_LEN + 100];
        m[0] = crate::wire::WIRE_VERSION;
        m[1] = 0x10;
        stamp_video(&mut m, seq, sent_at.as_micros() as u32);
        m
    }

    #[test]
    fn nothing_is_reported_while_no_video_arrives() {
        let mut m = ReceiveMeter::new();
        assert_eq!(m.take(100 * MS), None);
    }

    #[test]
    fn bytes_and_interval_are_counted_per_feedback() {
        let mut m = ReceiveMeter::new();
        for seq in [10u32, 11, 12, 13] {
            m.handle_video(10 * MS, &msg(seq, Duration::ZERO));
        }
        let fb = m.take(110 * MS).unwrap();
        assert_eq!(
            (
                fb.interval_us,
                fb.bytes,
                fb.received,
                fb.lost,
                fb.highest_seq
            ),
            (100_000, 4 * (VIDEO_HEADER_LEN as u32 + 100), 4, 0, 13)
        );
        // A continuing flow's interval runs from the last feedback, not the first arrival.
        m.handle_video(120 * MS, &msg(14, Duration::ZERO));
        assert_eq!(m.take(200 * MS).unwrap().interval_us, 90_000);
        // After a pause, from the first arrival.
        m.handle_video(900 * MS, &msg(15, Duration::ZERO));
        assert_eq!(m.take(1_000 * MS).unwrap().interval_us, 100_000);
    }

    #[test]
    fn a_message_still_missing_after_the_grace_is_lost_once() {
        let mut m = ReceiveMeter::new();
        for seq in [10u32, 11, 13, 14] {
            m.handle_video(10 * MS, &msg(seq, Duration::ZERO));
        }
        assert_eq!(m.take(110 * MS).unwrap().lost, 0, "12 may still come");
        m.handle_video(395 * MS, &msg(15, Duration::ZERO));
        assert_eq!(m.take(405 * MS).unwrap().lost, 0);
        m.handle_video(410 * MS, &msg(16, Duration::ZERO));
        assert_eq!(m.take(420 * MS).unwrap().lost, 1, "12 never came");
        m.handle_video(430 * MS, &msg(17, Duration::ZERO));
        assert_eq!(m.take(900 * MS).unwrap().lost, 0, "counted once");
    }

    #[test]
    fn a_message_the_transport_repaired_late_is_no_loss() {
        let mut m = ReceiveMeter::new();
        for seq in [1u32, 2, 4, 5] {
            m.handle_video(10 * MS, &msg(seq, Duration::ZERO));
        }
        let mut lost = m.take(110 * MS).unwrap().lost;
        m.handle_video(150 * MS, &msg(3, Duration::ZERO));
        lost += m.take(200 * MS).unwrap().lost;
        m.handle_video(500 * MS, &msg(6, Duration::ZERO));
        lost += m.take(600 * MS).unwrap().lost;
        assert_eq!(lost, 0);
    }

    #[test]
    fn a_jump_of_a_million_messages_is_counted_without_remembering_each() {
        let mut m = ReceiveMeter::new();
        m.handle_video(MS, &msg(1, Duration::ZERO));
        m.handle_video(2 * MS, &msg(1_000_002, Duration::ZERO));
        assert!(m.missing.len() as u64 <= MAX_MISSING);
        let first = m.take(20 * MS).unwrap().lost;
        m.handle_video(600 * MS, &msg(1_000_003, Duration::ZERO));
        let later = m.take(610 * MS).unwrap().lost;
        assert_eq!(u64::from(first) + u64::from(later), 1_000_000);
    }

    #[test]
    fn sequence_numbers_wrapping_around_are_not_losses() {
        let mut m = ReceiveMeter::new();
        for seq in [u32::MAX - 1, u32::MAX, 0, 1] {
            m.handle_video(MS, &msg(seq, Duration::ZERO));
        }
        assert_eq!(m.take(100 * MS).unwrap().lost, 0);
    }

    #[test]
    fn a_growing_queue_shows_as_delay_above_the_fastest_recent_arrival() {
        let mut m = ReceiveMeter::new();
        // The sender's clock runs 5 s ahead; the path takes 20 ms, then 70 ms.
        let ahead = Duration::from_secs(5);
        m.handle_video(100 * MS, &msg(1, ahead + 80 * MS));
        assert_eq!(m.take(150 * MS).unwrap().queue_delay_us, 0);
        m.handle_video(250 * MS, &msg(2, ahead + 180 * MS));
        assert_eq!(m.take(300 * MS).unwrap().queue_delay_us, 50_000);
    }

    #[test]
    fn a_resent_message_arriving_late_is_a_loss_not_a_queue() {
        let mut m = ReceiveMeter::new();
        m.handle_video(100 * MS, &msg(1, 80 * MS));
        m.handle_video(101 * MS, &msg(3, 81 * MS));
        assert_eq!(m.take(150 * MS).unwrap().queue_delay_us, 0);
        // 2 was lost and resent a second later; 4 came on time.
        m.handle_video(1_082 * MS, &msg(2, 80 * MS));
        m.handle_video(1_083 * MS, &msg(4, 1_063 * MS));
        let fb = m.take(1_100 * MS).unwrap();
        assert_eq!((fb.received, fb.queue_delay_us), (2, 0));
    }

    #[test]
    fn video_resuming_just_before_a_feedback_joins_the_next_interval() {
        let mut m = ReceiveMeter::new();
        m.handle_video(995 * MS, &msg(1, Duration::ZERO));
        assert_eq!(m.take(995 * MS + Duration::from_micros(38)), None);
        m.handle_video(1_050 * MS, &msg(2, Duration::ZERO));
        let fb = m.take(1_100 * MS).unwrap();
        assert_eq!((fb.interval_us, fb.received), (105_000, 2));
    }

    #[test]
    fn a_message_sent_again_on_request_counts_its_bytes_but_heals_no_loss() {
        let mut m = ReceiveMeter::new();
        m.handle_video(10 * MS, &msg(1, Duration::ZERO));
        m.handle_video(11 * MS, &msg(3, Duration::ZERO));
        let mut again = msg(2, Duration::ZERO);
        crate::wire::mark_resent(&mut again);
        m.handle_video(90 * MS, &again);
        let fb = m.take(110 * MS).unwrap();
        assert_eq!(fb.received, 2);
        assert_eq!(fb.bytes, 3 * (VIDEO_HEADER_LEN as u32 + 100));
        m.handle_video(500 * MS, &msg(4, Duration::ZERO));
        assert_eq!(m.take(510 * MS).unwrap().lost, 1);
    }

    #[test]
    fn messages_without_a_stamp_count_as_bytes_only() {
        let mut m = ReceiveMeter::new();
        m.handle_video(MS, &[1, 0x10, 0]);
        let fb = m.take(50 * MS).unwrap();
        assert_eq!((fb.bytes, fb.received, fb.lost), (3, 0, 0));
    }
}
