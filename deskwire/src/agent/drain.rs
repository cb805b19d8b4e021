//! How fast the SCTP association lets video go, measured from what the video thread hands
//! it and what it still holds: a cap on video queued inside the transport that follows
//! SCTP's own window, not only the congestion controller's estimate.
//!
//! Why: rtc-sctp sends every queued unordered message (video) before any ordered one
//! (control), and expires video after `video_packet_lifetime`. While its window is small
//! (slow start on a long path, or halved after a loss) a backlog sized from the estimate
//! sat in SCTP for seconds: the video in it expired (read by the viewer as loss) and the
//! control messages behind it (pongs, a stream's announcement) waited. Held in the pacer
//! instead, stale video is dropped as whole frames and nothing waits behind it.

use std::collections::VecDeque;
use std::time::Duration;

/// How long one measurement runs.
const WINDOW: Duration = Duration::from_millis(100);
/// How long a measurement counts: the cap follows the best of the last second, so a
/// window halved by one loss does not starve the transport of the backlog it needs to
/// grow again (SCTP grows its window only while something waits to be sent).
const KEEP: Duration = Duration::from_secs(1);

/// Bytes released by the transport (acknowledged or expired) per second, measured over
/// windows in which it was backed up: when it was not, it released all it had and says
/// nothing of what it could.
#[derive(Debug, Default)]
pub(super) struct TransportDrain {
    /// Bytes handed to the transport so far.
    handed: u64,
    /// Start of the current window: when, bytes handed by then, bytes outstanding.
    mark: Option<(Duration, u64, usize)>,
    /// Whether the transport was backed up at any sample of the current window.
    backed: bool,
    /// (window end, bytes per second) of recent backed-up windows.
    rates: VecDeque<(Duration, f64)>,
}

impl TransportDrain {
    /// `bytes` more were given to the transport.
    pub(super) fn handed(&mut self, bytes: usize) {
        self.handed += bytes as u64;
    }

    /// A sample at `now`: `outstanding` bytes not yet released by the transport, and
    /// whether it held more than the cap.
    pub(super) fn sample(&mut self, now: Duration, outstanding: usize, backed: bool) {
        let handed = self.handed;
        self.backed |= backed;
        let Some((since, handed0, outstanding0)) = self.mark else {
            self.mark = Some((now, handed, outstanding));
            return;
        };
        let dt = now.saturating_sub(since);
        if dt < WINDOW {
            return;
        }
        let released =
            handed.saturating_sub(handed0) as f64 - outstanding as f64 + outstanding0 as f64;
        if self.backed {
            self.rates
                .push_back((now, released.max(0.0) / dt.as_secs_f64()));
        }
        while self.rates.front().is_some_and(|(t, _)| now > *t + KEEP) {
            self.rates.pop_front();
        }
        self.mark = Some((now, handed, outstanding));
        self.backed = false;
    }

    /// What the transport should hold at most: `hold` at the best rate it released at
    /// lately while backed up; `None` when it has not been backed up in the last second.
    pub(super) fn cap(&self, hold: Duration) -> Option<usize> {
        let best = self
            .rates
            .iter()
            .map(|(_, r)| *r)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))?;
        Some((best * hold.as_secs_f64()) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A transport fed `feed` bytes a second that releases `rate` a second, sampled every
    /// 10 ms; backed up whenever it holds more than `cap`.
    #[derive(Default)]
    struct Sim {
        drain: TransportDrain,
        held: f64,
    }

    impl Sim {
        fn run(&mut self, from: Duration, ms: u32, (feed, rate): (f64, f64), cap: usize) {
            for i in 1..=ms / 10 {
                self.drain.handed((feed / 100.0) as usize);
                self.held = (self.held + feed / 100.0 - rate / 100.0).max(0.0);
                let held = self.held as usize;
                self.drain.sample(from + i * 10 * MS, held, held > cap);
            }
        }
    }

    #[test]
    fn a_transport_that_never_backs_up_sets_no_cap() {
        let mut s = Sim::default();
        s.run(Duration::ZERO, 2000, (100_000.0, 1_000_000.0), 8192);
        assert_eq!(s.drain.cap(Duration::from_secs(1)), None);
    }

    #[test]
    fn a_backed_up_transport_is_capped_at_what_it_releases() {
        let mut s = Sim::default();
        // Fed 1 MB/s, it lets 250 kB/s go: a round trip and 40 ms of that, not of the feed.
        s.run(Duration::ZERO, 2000, (1_000_000.0, 250_000.0), 8192);
        let cap = s.drain.cap(640 * MS).unwrap();
        assert!((150_000..=170_000).contains(&cap), "{cap}");
    }

    #[test]
    fn the_cap_follows_the_best_second_and_goes_once_the_backlog_clears() {
        let mut s = Sim::default();
        s.run(Duration::ZERO, 1000, (1_000_000.0, 400_000.0), 8192);
        // Halved by a loss: the cap holds the better rate for a second.
        s.run(1000 * MS, 500, (1_000_000.0, 200_000.0), 8192);
        let cap = s.drain.cap(Duration::from_secs(1)).unwrap();
        assert!(cap > 300_000, "{cap}");
        // Then the transport keeps up: no cap after a second of that.
        s.run(1500 * MS, 1500, (100_000.0, 10_000_000.0), usize::MAX);
        assert_eq!(s.drain.cap(Duration::from_secs(1)), None);
    }
}
