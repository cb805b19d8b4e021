//! Which OpenH264 tuning the encoders run, for layouts that leave it to the pipeline
//! ([`ContentTuning::Auto`]).
//!
//! Screen-content tuning codes desktop content in far fewer bits than camera tuning (a
//! window dragged across a terminal: 1.05x x264's bits instead of 4.4x; a terminal printing
//! flat out: 0.87x instead of 1.13x, `deskwire-bench bits`), but spends 1.5-2.5 times the
//! time per picture. Where the whole screen changes every frame (a page scrolling, a video)
//! that time is the frame rate: a browser page streamed at 34 fps of a 56 fps source in
//! screen tuning everywhere, 55 in camera. So the encoders start in camera tuning, take
//! screen tuning while camera tuning keeps the encode thread mostly idle, and fall back
//! while screen tuning fills it.
//!
//! Neither switch while the path limits the stream (the encoders aimed under the configured
//! rate and filling half of it or more): there the link sets the frame rate, and each switch
//! costs a keyframe of every band. On `dsl` (6 Mbit/s) screen tuning from the start held the
//! first seconds of a scrolling page at 10-20 fps behind a 390 ms queue, and a fall back when
//! the estimate touched 8 Mbit/s queued 280 KB of keyframes; the cut that followed took the
//! layout compact behind a 250 KB keyframe. Under half of the rate, the content is what
//! limits it (a dragged window needs 1-2 Mbit/s, and the estimate grows only as far as what
//! is sent).

use std::time::Duration;

use crate::config::ContentTuning;

/// How long the encode time is summed over, in slots of `SLOT` (fixed: the encode thread
/// allocates nothing per frame).
const SLOT: Duration = Duration::from_millis(100);
const SLOTS: usize = 10;
const WINDOW: Duration = SLOT.saturating_mul(SLOTS as u32);
/// A slot that holds nothing.
const EMPTY: (u64, Duration, usize) = (u64::MAX, Duration::ZERO, 0);
/// Screen tuning busy more than this share of the window: fall back to camera tuning.
const FALL_BACK_ABOVE: f64 = 0.75;
/// Camera tuning busy less than this share for `RETURN_AFTER`: to screen tuning, which
/// takes 1.5-2.5 times as long (a dragged window 1.5x: 7 against 10.8 ms a frame).
const RETURN_BELOW: f64 = 0.375;
/// How long camera tuning must have been that idle: each switch costs every band a
/// keyframe, so a pause in scrolling does not pay two.
const RETURN_AFTER: Duration = Duration::from_secs(2);
/// No decision on less than this much of a window: the first frames of a stream include
/// its keyframes and OpenH264's own start-up.
const MIN_SPAN: Duration = Duration::from_millis(500);

/// Decides the tuning from the time encodes take, for layouts that ask for
/// [`ContentTuning::Auto`]. Pure logic: times are passed in.
#[derive(Debug)]
pub(crate) struct TuningGovernor {
    /// What the layout asked for: only `Auto` is ever switched.
    wanted: ContentTuning,
    /// Screen or camera tuning.
    current: ContentTuning,
    /// Per slot of the last `WINDOW`: (slot number, encode time, bytes encoded).
    slots: [(u64, Duration, usize); SLOTS],
    /// Since when the current tuning has been watched (a switch starts afresh).
    since: Duration,
    /// Since when camera tuning has been idle enough to return.
    idle_since: Option<Duration>,
    /// What the encoders aim at, bits per second, and the configured bitrate.
    bps: u32,
    full_bps: u32,
}

impl TuningGovernor {
    /// For encoders configured for `full_bps`, aimed there until told otherwise.
    pub(crate) fn new(wanted: ContentTuning, full_bps: u32, now: Duration) -> Self {
        let current = match wanted {
            ContentTuning::Auto => ContentTuning::Camera,
            pinned => pinned,
        };
        Self {
            wanted,
            current,
            slots: [EMPTY; SLOTS],
            since: now,
            idle_since: None,
            bps: full_bps,
            full_bps,
        }
    }

    /// The encoders aim at `bps` from now on.
    pub(crate) fn handle_rate(&mut self, bps: u32) {
        self.bps = bps;
    }

    /// A new layout asks for `wanted` from `now` on: the tuning its encoders start with. A
    /// layout that asks for `Auto` again keeps what the load decided: a browser page that
    /// scrolled into fewer bands would otherwise pay screen tuning's cost, and a keyframe
    /// of every band to leave it, a second time.
    pub(crate) fn handle_layout(&mut self, wanted: ContentTuning, now: Duration) -> ContentTuning {
        if wanted != ContentTuning::Auto || self.wanted != ContentTuning::Auto {
            let bps = self.bps;
            *self = Self::new(wanted, self.full_bps, now);
            self.bps = bps;
        }
        self.current
    }

    /// The tuning the encoders should run.
    #[cfg(test)]
    pub(crate) fn current(&self) -> ContentTuning {
        self.current
    }

    /// An encode of `bytes` ended at `now` after `took`; `Some(tuning)` when the encoders
    /// should switch to it.
    pub(crate) fn handle_encode(
        &mut self,
        now: Duration,
        took: Duration,
        bytes: usize,
    ) -> Option<ContentTuning> {
        let n = (now.as_millis() / SLOT.as_millis()) as u64;
        let slot = &mut self.slots[(n % SLOTS as u64) as usize];
        if slot.0 != n {
            *slot = (n, Duration::ZERO, 0);
        }
        slot.1 += took;
        slot.2 += bytes;
        self.decide(now, n)
    }

    fn decide(&mut self, now: Duration, n: u64) -> Option<ContentTuning> {
        if self.wanted != ContentTuning::Auto {
            return None;
        }
        let span = now.saturating_sub(self.since).min(WINDOW);
        if span < MIN_SPAN {
            return None;
        }
        let (busy, bytes) = self
            .slots
            .iter()
            .filter(|s| s.0 <= n && n - s.0 < SLOTS as u64)
            .fold((Duration::ZERO, 0), |(t, b), s| (t + s.1, b + s.2));
        // The path limits the stream: no switch (see the module's documentation).
        let produced = bytes as f64 * 8.0 / span.as_secs_f64();
        if self.bps < self.full_bps && produced >= f64::from(self.bps) / 2.0 {
            self.idle_since = None;
            return None;
        }
        let load = busy.as_secs_f64() / span.as_secs_f64();
        let next = match self.current {
            ContentTuning::Screen if load > FALL_BACK_ABOVE => ContentTuning::Camera,
            ContentTuning::Camera if load < RETURN_BELOW => {
                let since = *self.idle_since.get_or_insert(now);
                if now < since + RETURN_AFTER {
                    return None;
                }
                ContentTuning::Screen
            }
            _ => {
                self.idle_since = None;
                return None;
            }
        };
        tracing::debug!(?next, load, "encoder tuning");
        self.current = next;
        self.slots = [EMPTY; SLOTS];
        self.since = now;
        self.idle_since = None;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const FULL: u32 = 8_000_000;
    /// A frame interval at 60 fps.
    const FRAME: Duration = Duration::from_micros(16_667);

    /// Encodes of `took` every `every` from `from` for `ms`, 20 KB each (9.6 Mbit/s at
    /// 60 fps, 1.6 at 10); the switches asked for.
    fn feed(
        g: &mut TuningGovernor,
        from: Duration,
        ms: u32,
        every: Duration,
        took: Duration,
    ) -> Vec<(Duration, ContentTuning)> {
        let mut out = Vec::new();
        let mut t = from;
        while t < from + ms * MS {
            t += every;
            if let Some(s) = g.handle_encode(t, took, 20_000) {
                out.push((t, s));
            }
        }
        out
    }

    /// An `Auto` governor on a full-rate path that typing took to screen tuning by 3 s.
    fn on_screen() -> TuningGovernor {
        let mut g = TuningGovernor::new(ContentTuning::Auto, FULL, Duration::ZERO);
        assert_eq!(g.current(), ContentTuning::Camera);
        let s = feed(&mut g, Duration::ZERO, 3000, 100 * MS, 2 * MS);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].1, ContentTuning::Screen);
        assert!(s[0].0 >= RETURN_AFTER && s[0].0 <= RETURN_AFTER + MIN_SPAN + 100 * MS);
        g
    }

    #[test]
    fn light_work_takes_screen_tuning_heavy_work_falls_back_and_returns_once_light() {
        let mut g = on_screen();
        // 60 frames a second of 14 ms each: 84 % busy.
        let s = feed(&mut g, 3000 * MS, 2000, FRAME, 14 * MS);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].1, ContentTuning::Camera);
        // Within a second: the window still holds the light work before it.
        assert!(s[0].0 <= 3000 * MS + WINDOW, "{s:?}");
        // Camera tuning at 7 ms a frame (42 %): not light enough to return.
        let s = feed(&mut g, 5000 * MS, 8000, FRAME, 7 * MS);
        assert!(s.is_empty(), "{s:?}");
        // Typing: back after `RETURN_AFTER`, not before.
        let s = feed(&mut g, 13_000 * MS, 8000, 100 * MS, 2 * MS);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].1, ContentTuning::Screen);
        assert!(s[0].0 >= 13_000 * MS + RETURN_AFTER, "{s:?}");
        assert!(s[0].0 <= 13_000 * MS + RETURN_AFTER + 1500 * MS, "{s:?}");
    }

    #[test]
    fn screen_tuning_with_room_to_spare_stays() {
        let mut g = on_screen();
        // A window dragged: 60 frames a second of 10 ms (60 %).
        let s = feed(&mut g, 3000 * MS, 10_000, FRAME, 10 * MS);
        assert!(s.is_empty(), "{s:?}");
        // A burst of keyframes in the first half second of a layout decides nothing.
        let mut g = TuningGovernor::new(ContentTuning::Auto, FULL, Duration::ZERO);
        assert_eq!(g.handle_encode(100 * MS, 90 * MS, 300_000), None);
        assert_eq!(g.handle_encode(200 * MS, 90 * MS, 0), None);
    }

    #[test]
    fn on_a_path_that_limits_the_stream_the_tuning_never_moves() {
        let mut g = TuningGovernor::new(ContentTuning::Auto, FULL, Duration::ZERO);
        // Aimed at 2.5 Mbit/s and sending 1.6: the path is the limit.
        g.handle_rate(2_500_000);
        let s = feed(&mut g, Duration::ZERO, 6000, 100 * MS, 2 * MS);
        assert!(s.is_empty(), "{s:?}");
        // Aimed at 4 Mbit/s, the content sends 1.6: the content is the limit.
        g.handle_rate(4_000_000);
        let s = feed(&mut g, 6000 * MS, 4000, 100 * MS, 2 * MS);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(g.current(), ContentTuning::Screen);
        // A path that fills its rate keeps screen tuning however busy.
        let s = feed(&mut g, 10_000 * MS, 3000, FRAME, 15 * MS);
        assert!(s.is_empty(), "{s:?}");
    }

    #[test]
    fn a_layout_that_names_its_tuning_is_never_switched() {
        for pinned in [ContentTuning::Camera, ContentTuning::Screen] {
            let mut g = TuningGovernor::new(pinned, FULL, Duration::ZERO);
            let s = feed(&mut g, Duration::ZERO, 3000, FRAME, 15 * MS);
            assert!(s.is_empty());
            let s = feed(&mut g, 3000 * MS, 10_000, 100 * MS, MS);
            assert!(s.is_empty());
            assert_eq!(g.current(), pinned);
        }
    }

    #[test]
    fn a_new_auto_layout_keeps_the_load_s_choice_and_a_named_one_takes_its_own() {
        let mut g = on_screen();
        let t = 3000 * MS;
        assert_eq!(
            g.handle_layout(ContentTuning::Auto, t),
            ContentTuning::Screen
        );
        assert_eq!(
            g.handle_layout(ContentTuning::Camera, t),
            ContentTuning::Camera
        );
        // Back to `Auto` after a named layout: camera tuning until the load says otherwise.
        assert_eq!(
            g.handle_layout(ContentTuning::Auto, t),
            ContentTuning::Camera
        );
    }
}
