//! Keyframe refresh that cannot storm: requests for bands (from the viewer, or from the
//! sender that dropped video) are merged, let out a few bands per frame time so a whole
//! screen refresh is spread over several frames instead of one burst the link loses again,
//! and a band is not refreshed twice before the first refresh could have arrived: not while
//! its keyframe waits to leave (on a slow link a keyframe takes a while), and not within
//! the holdoff after it left.

use std::time::Duration;

/// A keyframe not reported sent within this long is taken as lost (the encoder or the
/// sender dropped it without a word): the band may be refreshed again.
const IN_FLIGHT_LIMIT: Duration = Duration::from_secs(2);
/// ... or within this many round trips, if longer: on a 600 ms path SCTP's slow start
/// takes 3-4 s to take a 1080p screen's first keyframes (the video thread hands it no
/// more than it drains): taken as lost after 2 s, they were sent twice.
const IN_FLIGHT_ROUND_TRIPS: u32 = 8;

/// How long a keyframe may go unreported before it is taken as lost, on a path whose round
/// trip is `rtt` (if known). At most 8 s, whatever a viewer claims its round trip is.
pub(crate) fn in_flight_limit(rtt: Option<Duration>) -> Duration {
    IN_FLIGHT_LIMIT
        .max(rtt.unwrap_or_default() * IN_FLIGHT_ROUND_TRIPS)
        .min(Duration::from_secs(8))
}

#[derive(Debug)]
pub(crate) struct Refresh {
    mask: u32,
    pending: u32,
    /// Bands whose keyframe was asked for and has not left yet.
    in_flight: u32,
    /// When each band was last refreshed.
    last: Vec<Option<Duration>>,
    /// When the next batch may go; `None` while nothing is pending.
    next: Option<Duration>,
}

impl Refresh {
    pub(crate) fn new(bands: usize) -> Self {
        Self {
            mask: crate::video::all_bands(bands),
            pending: 0,
            in_flight: 0,
            last: vec![None; bands.min(32)],
            next: None,
        }
    }

    /// A stream of `bands` bands restarts at `now`: its first frame keys every band, so
    /// each is in flight from the start. A request before that keyframe left (a new
    /// layout's keyframe is encoded and queued a few hundred milliseconds on a slow link)
    /// waits for it and its holdoff instead of queueing a second one: on `dsl` the viewer's
    /// request 0.3 s after a compact restart sent the whole screen twice.
    pub(crate) fn restarted(bands: usize, now: Duration) -> Self {
        let mut r = Self::new(bands);
        r.in_flight = r.mask;
        r.last.fill(Some(now));
        r
    }

    /// These bands (bit i = band i) want a keyframe; bits beyond the stream are ignored.
    pub(crate) fn request(&mut self, bands: u32, now: Duration) {
        let new = bands & self.mask;
        if new != 0 {
            self.pending |= new;
            self.next.get_or_insert(now);
        }
    }

    /// These bands' keyframes left the sender at `now`: the holdoff counts from here.
    pub(crate) fn sent(&mut self, bands: u32, now: Duration) {
        let bands = bands & self.mask & self.in_flight;
        self.in_flight &= !bands;
        for (i, last) in self.last.iter_mut().enumerate() {
            if bands & (1 << i) != 0 {
                *last = Some(now);
            }
        }
        // What waited for these is decided afresh at the next poll.
        if bands != 0 && self.pending != 0 {
            self.next = Some(now);
        }
    }

    /// These bands' keyframes were dropped before leaving: they may go again at once.
    pub(crate) fn dropped(&mut self, bands: u32) {
        self.in_flight &= !bands;
        if self.pending != 0 {
            // Due at once: the next poll may refresh them.
            self.next = Some(Duration::ZERO);
        }
    }

    /// The bands to refresh at `now`, if a batch is due: at most a quarter of the bands
    /// (at least one), none refreshed less than `holdoff` ago, batches `step` apart (longer
    /// on a slow link, where a batch of keyframes takes longer to leave), a keyframe
    /// unreported for `in_flight` taken as lost ([`in_flight_limit`]).
    pub(crate) fn poll(
        &mut self,
        now: Duration,
        holdoff: Duration,
        step: Duration,
        in_flight: Duration,
    ) -> Option<u32> {
        if self.pending == 0 {
            self.next = None;
            return None;
        }
        if self.next.is_some_and(|t| now < t) {
            return None;
        }
        let per_batch = self.last.len().div_ceil(4).max(1);
        // A keyframe unreported for too long is taken as gone.
        for (i, last) in self.last.iter().enumerate() {
            if self.in_flight & (1 << i) != 0 && last.is_some_and(|t| now >= t + in_flight) {
                self.in_flight &= !(1 << i);
            }
        }
        let in_flight_bands = self.in_flight;
        let ready = |i: usize, last: &[Option<Duration>]| {
            in_flight_bands & (1 << i) == 0 && last[i].is_none_or(|t| now >= t + holdoff)
        };
        let mut picked = 0u32;
        for i in 0..self.last.len() {
            if picked.count_ones() as usize == per_batch {
                break;
            }
            if self.pending & (1 << i) != 0 && ready(i, &self.last) {
                picked |= 1 << i;
            }
        }
        if picked == 0 {
            // Everything pending was refreshed just now or is still on its way out: wait
            // until the first may go again (or its keyframe is taken as lost).
            self.next = (0..self.last.len())
                .filter(|i| self.pending & (1 << i) != 0)
                .filter_map(|i| {
                    let wait = if in_flight_bands & (1 << i) != 0 {
                        in_flight
                    } else {
                        holdoff
                    };
                    self.last[i].map(|t| (t + wait).max(now + step))
                })
                .min();
            return None;
        }
        for i in 0..self.last.len() {
            if picked & (1 << i) != 0 {
                self.last[i] = Some(now);
            }
        }
        self.pending &= !picked;
        self.in_flight |= picked;
        self.next = (self.pending != 0).then_some(now + step);
        Some(picked)
    }

    /// When [`Refresh::poll`] next has something to give.
    pub(crate) fn next(&self) -> Option<Duration> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const HOLD: Duration = Duration::from_millis(200);
    /// Time between two batches on a fast link: about a frame at 50 fps.
    const STEP: Duration = Duration::from_millis(20);
    /// A keyframe unreported this long is lost: a short path's.
    const LOST: Duration = IN_FLIGHT_LIMIT;

    #[test]
    fn a_whole_screen_refresh_is_spread_over_four_batches() {
        let mut r = Refresh::new(8);
        r.request(u32::MAX, Duration::ZERO);
        let mut batches = Vec::new();
        let mut now = Duration::ZERO;
        while let Some(t) = r.next() {
            now = now.max(t);
            if let Some(b) = r.poll(now, HOLD, STEP, LOST) {
                batches.push((now, b));
            }
        }
        assert_eq!(
            batches,
            vec![
                (Duration::ZERO, 0b11),
                (20 * MS, 0b1100),
                (40 * MS, 0b11_0000),
                (60 * MS, 0b1100_0000)
            ]
        );
    }

    #[test]
    fn repeated_requests_for_a_band_just_refreshed_wait_for_the_holdoff() {
        let mut r = Refresh::new(2);
        r.request(0b1, Duration::ZERO);
        assert_eq!(r.poll(Duration::ZERO, HOLD, STEP, LOST), Some(0b1));
        // The keyframe takes 500 ms to leave on a slow link; the viewer asks again and
        // again meanwhile, and after it left, before it could have arrived.
        for t in [10, 50, 150, 300, 499] {
            r.request(0b1, t * MS);
            assert_eq!(r.poll(t * MS, HOLD, STEP, LOST), None, "{t} ms");
        }
        r.sent(0b1, 500 * MS);
        for t in [550, 650] {
            r.request(0b1, t * MS);
            assert_eq!(r.poll(t * MS, HOLD, STEP, LOST), None, "{t} ms");
        }
        assert_eq!(r.next(), Some(500 * MS + HOLD));
        assert_eq!(r.poll(500 * MS + HOLD, HOLD, STEP, LOST), Some(0b1));
        assert_eq!(r.next(), None);
    }

    #[test]
    fn a_keyframe_never_reported_sent_or_dropped_frees_its_band_again() {
        let mut r = Refresh::new(1);
        r.request(1, Duration::ZERO);
        assert_eq!(r.poll(Duration::ZERO, HOLD, STEP, LOST), Some(1));
        r.request(1, 10 * MS);
        assert_eq!(r.poll(10 * MS, HOLD, STEP, LOST), None);
        assert_eq!(
            r.poll(IN_FLIGHT_LIMIT, HOLD, STEP, LOST),
            Some(1),
            "taken as lost"
        );
        r.dropped(1);
        r.request(1, IN_FLIGHT_LIMIT + HOLD);
        assert_eq!(
            r.poll(IN_FLIGHT_LIMIT + HOLD, HOLD, STEP, LOST),
            Some(1),
            "dropped: may go again"
        );
    }

    #[test]
    fn on_a_long_round_trip_a_keyframe_is_taken_as_lost_only_after_eight_of_them() {
        let long = in_flight_limit(Some(600 * MS));
        let mut r = Refresh::restarted(1, Duration::ZERO);
        r.request(1, 100 * MS);
        assert_eq!(
            r.poll(IN_FLIGHT_LIMIT, HOLD, STEP, long),
            None,
            "still on its way"
        );
        assert_eq!(r.poll(4799 * MS, HOLD, STEP, long), None);
        assert_eq!(
            r.poll(4800 * MS, HOLD, STEP, long),
            Some(1),
            "taken as lost"
        );
        // A short path keeps the plain limit.
        let short = in_flight_limit(Some(40 * MS));
        let mut r = Refresh::restarted(1, Duration::ZERO);
        r.request(1, 100 * MS);
        assert_eq!(r.poll(IN_FLIGHT_LIMIT, HOLD, STEP, short), Some(1));
    }

    #[test]
    fn a_request_right_after_a_restart_waits_for_the_restarts_own_keyframe() {
        let mut r = Refresh::restarted(2, Duration::ZERO);
        r.request(0b11, 300 * MS);
        assert_eq!(
            r.poll(300 * MS, HOLD, STEP, LOST),
            None,
            "the restart's keyframe is coming"
        );
        // It left at 400 ms: the request stands after the holdoff.
        r.sent(0b11, 400 * MS);
        assert_eq!(r.poll(400 * MS, HOLD, STEP, LOST), None);
        assert_eq!(r.poll(400 * MS + HOLD, HOLD, STEP, LOST), Some(0b1));
        assert_eq!(r.poll(400 * MS + HOLD + STEP, HOLD, STEP, LOST), Some(0b10));
    }

    #[test]
    fn bands_beyond_the_stream_are_ignored() {
        let mut r = Refresh::new(3);
        r.request(0b1000, Duration::ZERO);
        assert_eq!(r.next(), None);
        assert_eq!(r.poll(Duration::ZERO, HOLD, STEP, LOST), None);
    }
}
