//! The target's congestion control: how many bits per second the path to the viewer carries,
//! estimated from the viewer's [`Feedback`], and what the encoder, the pacer and the frame
//! rate should aim at so that the picture keeps moving instead of queueing.
//!
//! The shape follows libwebrtc's GCC: a delay signal (the queue building on the path, read
//! from how late messages arrive compared with the fastest recent one) and a loss signal
//! each decide "too much", "hold" or "room to grow". Too much cuts the target to 85 % of
//! what actually arrived, at most once per round trip; room to grow raises it by a share
//! per second, fast until the first sign of a limit, then gently. The target never grows
//! past what the sender really used, so an idle screen does not talk itself into a rate the
//! path was never shown to carry. When the link returns after an outage, the sender follows
//! SCTP's restarting window back up to the estimate (`RateController::restart`).

use std::time::Duration;

use crate::wire::Feedback;

/// The bounds of the rate controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Where the estimate starts, bits per second.
    pub start_bps: u64,
    /// It never goes below this.
    pub min_bps: u64,
    /// Nor above this.
    pub max_bps: u64,
    /// The most the encoder is ever asked for, however fast the path: what the
    /// configuration chose as enough for a sharp picture. The pacer may still go faster,
    /// so keyframes leave quickly on a fast path.
    pub max_encoder_bps: u64,
    /// The quality floor (largest quantiser) when bits are plentiful.
    pub best_qp: u8,
    /// The quality floor on the slowest link: coarser pictures rather than frozen ones.
    pub worst_qp: u8,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            start_bps: 2_500_000,
            min_bps: 150_000,
            max_bps: 20_000_000,
            max_encoder_bps: 20_000_000,
            best_qp: 28,
            worst_qp: 51,
        }
    }
}

/// Where a session's estimate should start at most. Starting at the configured 8 Mbit/s
/// overflowed a 6 Mbit/s path with the first all-band keyframes: 20-30 % of the video
/// lost in the first second, SCTP's window collapsed, and the session froze for 2-3 s
/// before it settled. From here the estimate climbs to the configured rate in about 2 s
/// while the path shows no limit (`RateController::handle_feedback`).
pub const MAX_START_BPS: u64 = 4_000_000;

/// Why a [`RateConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate bounds must satisfy 50000 <= min ({min}) <= start ({start}) <= max ({max}) <= 1000000000 bits/s and 12 <= best_qp ({best_qp}) <= worst_qp ({worst_qp}) <= 51")]
pub struct RateConfigError {
    min: u64,
    start: u64,
    max: u64,
    best_qp: u8,
    worst_qp: u8,
}

impl RateConfig {
    /// Check the bounds are in order and plausible.
    pub fn validate(&self) -> Result<(), RateConfigError> {
        let ok = 50_000 <= self.min_bps
            && self.min_bps <= self.start_bps
            && self.start_bps <= self.max_bps
            && self.max_bps <= 1_000_000_000
            && 12 <= self.best_qp
            && self.best_qp <= self.worst_qp
            && self.worst_qp <= 51;
        if ok {
            Ok(())
        } else {
            Err(RateConfigError {
                min: self.min_bps,
                start: self.start_bps,
                max: self.max_bps,
                best_qp: self.best_qp,
                worst_qp: self.worst_qp,
            })
        }
    }
}

/// What the sender should aim at now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateTarget {
    /// The path's estimated rate, bits per second.
    pub estimate_bps: u64,
    /// What the encoders together should produce: the estimate less the headers' share.
    pub encoder_bps: u64,
    /// How fast the pacer lets video out: a little above the estimate, so the queue drains
    /// while the encoder (aiming below it) keeps up. Not more: a keyframe let out faster
    /// than the path carries overflows the bottleneck's queue, and the losses ask for more
    /// keyframes.
    pub pacing_bps: u64,
    /// The most frames per second worth sending at this rate.
    pub max_fps: u32,
    /// The quality floor: the largest quantiser the encoder may use. It moves seldom
    /// (each move costs the bands a keyframe): coarser at once when bits run short,
    /// finer only after the rate has held for a while.
    pub max_qp: u8,
    /// Cut frames into as few bands as the encoder affords instead of the configured
    /// count: content that needs more than a slow path carries. Scrolled text costs 1.7x
    /// the bits in 8 bands that it costs in one at the same quantiser (it enters each band
    /// from its neighbour instead of moving within one), while small changes encode faster
    /// in many bands. Each switch restarts the stream (one keyframe of the whole screen),
    /// so it comes only after the choice held: 0.5 s into compact, 5 s out of it.
    pub compact: bool,
    /// Cut frames into four bands per 1080 rows (camera tuning) instead of the configured
    /// count, on a path that does not need `compact`: content that changes most of the
    /// screen (scrolling, a dragged window) costs fewer bits in fewer bands
    /// (`deskwire-bench bits`, a browser page scrolling at 1080p: 4.0 Mbit/s in 4 bands,
    /// 5.8 in 8, at the same Y-PSNR), while typing encodes 3x faster in 8. Two bands cost
    /// 3.3 but froze a 20-to-2 Mbit/s step longer (each lost band's keyframe is half the
    /// screen). Switched like `compact`: after `FEWER_AFTER` of wide content, back after
    /// `MORE_AFTER` without.
    pub fewer_bands: bool,
}

/// After an outage SCTP restarts its window at one packet with a threshold of four and,
/// past it, opens it by one packet a round trip (RFC 4960 7.2.2-7.2.3): an 8 s outage left
/// a 20 Mbit/s path carrying 1-2 Mbit/s for the first 300 ms. Sent at the old estimate,
/// the refreshing keyframes queued behind that window and the picture came back 0.4 s
/// after the link; aimed at the window, they are coarse and arrive in a few round trips.
const RESTART_PACKETS: f64 = 4.0;
/// The bits of one full packet as SCTP counts its window.
const PACKET_BITS: f64 = 1_200.0 * 8.0;
/// The longest the sender follows the restarting window: past it the estimate, steered by
/// the feedback since, is trusted again (on a 600 ms path the window takes minutes).
const RESTART_FOR: Duration = Duration::from_secs(2);

/// After an outage the viewer reports what the dark swallowed as lost once it sees past
/// it (`LOSS_GRACE`, 400 ms later): losses reported this long after the return are the
/// outage's, not congestion. Counted, they cut a 20 Mbit/s path's estimate from 11 to
/// 6 Mbit/s in the second after an 8 s outage.
const OUTAGE_LOSSES_FOR: Duration = Duration::from_millis(600);

/// The queue on the path above which the sender is "too much", whatever the trend.
/// How long the all-band keyframe burst of a stream's start (or of the link's return) and
/// the transport's slow start get at least before a queue counts against the path.
const BURST_GRACE: Duration = Duration::from_millis(1500);
const OVERUSE_DELAY: Duration = Duration::from_millis(60);
/// A queue that is still growing is too much too, whatever its size (a standing queue
/// hides in the base delay): growing by more than `RISE_PER_SAMPLE` per feedback on
/// average over the last `TREND_SAMPLES` (two halves' means compared, so jitter averages
/// out), and by more than `RISING_DELAY` over them.
const RISING_DELAY: Duration = Duration::from_millis(25);
const RISE_PER_SAMPLE: Duration = Duration::from_millis(2);
const TREND_SAMPLES: usize = 8;
/// Above this queue, or above `HOLD_LOSS`, the target holds still.
const HOLD_DELAY: Duration = Duration::from_millis(40);
const HOLD_LOSS: f64 = 0.02;
const OVERUSE_LOSS: f64 = 0.10;
/// Growth per second: before the first limit was seen, and after.
const STARTUP_GROWTH: f64 = 0.5;
const STEADY_GROWTH: f64 = 0.10;
/// Growth once the last cut is this long past: the path has room again (a cleared queue,
/// a better cell), and creeping up at the steady pace would take tens of seconds.
const PROBE_AFTER: Duration = Duration::from_secs(3);
const PROBE_GROWTH: f64 = 0.25;
/// How long a lower rate must hold before quality drops, and a higher one before it rises.
const COARSER_AFTER: Duration = Duration::from_millis(500);
const FINER_AFTER: Duration = Duration::from_secs(3);

/// Compact bands below this estimate, full bands again above `FULL_ABOVE`; each after
/// holding for `COMPACT_AFTER` / `FULL_AFTER`.
const COMPACT_BELOW: u64 = 3_000_000;
/// Compact below this (at once, without `COMPACT_AFTER`) once the path cut the estimate
/// before it ever reached `FULL_ABOVE`: a path that has not shown it carries the full
/// layout's scrolling. On `dsl` (6 Mbit/s, of which SCTP carries
/// about 3 at 0.5 % loss) the first cut brings the estimate under it 1.5-2 s in, where the
/// 3 Mbit/s rule waited for the third cut, 3.5-4 s in, with the full layout frozen behind
/// its queue meanwhile (measured: 7.6-8.3 % frozen over 12 s, was 9.5-17 %). Not for good:
/// a 20 Mbit/s link whose estimate dipped to 4-5 Mbit/s after a stall went compact, and
/// its restart froze the picture half a second.
const COMPACT_BELOW_UNPROVEN: u64 = 5_000_000;
const FULL_ABOVE: u64 = 8_000_000;
const COMPACT_AFTER: Duration = Duration::from_millis(500);
const FULL_AFTER: Duration = Duration::from_secs(5);
/// Into fewer bands after wide content held this long (on top of the second it takes to
/// call content wide), out of them after this long without: each switch is a keyframe of
/// the whole screen, so a flick of the wheel does not pay two.
const FEWER_AFTER: Duration = Duration::from_secs(1);
const MORE_AFTER: Duration = Duration::from_secs(5);
/// Fewer bands only where the restart is cheap: the path carried `FULL_ABOVE` and its round
/// trip is at most this. On `satellite` (600 ms, 10 Mbit/s) the restart's keyframe landed
/// in SCTP's slow start: 61-70 % of the window frozen against 48-56 % without it.
const FEWER_MAX_RTT: Duration = Duration::from_millis(150);

/// Fewer messages than this in an interval, received and lost alike, say nothing about
/// the path.
const MIN_EVIDENCE: u32 = 4;

/// Loss is judged over the feedbacks of this long, and only from this many messages on:
/// one lost message of five in a 100 ms interval on a slow link is one unlucky packet,
/// not 20 % loss (measured: such intervals cut a 2 Mbit/s estimate by a tenth each).
const LOSS_WINDOW: Duration = Duration::from_secs(1);
const LOSS_EVIDENCE: u64 = 30;

/// How many feedbacks' receive rates a cut looks back over.
const CARRIED_SAMPLES: usize = 3;

/// Feedback intervals outside these bounds are refused: no correct viewer sends them.
const MIN_INTERVAL_US: u32 = 1_000;
const MAX_INTERVAL_US: u32 = 10_000_000;
/// Larger claimed delays are clamped: past this, the answer (cut) is the same.
const MAX_DELAY_US: u32 = 10_000_000;

/// Why a feedback was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackRefusal {
    /// Its interval is shorter than 1 ms or longer than 10 s.
    #[error("a feedback interval of {0} us is not plausible")]
    Interval(u32),
}

/// The rate controller. See the module documentation.
#[derive(Debug)]
pub(crate) struct RateController {
    config: RateConfig,
    target: f64,
    /// What arrived at the viewer, smoothed, bits per second.
    acked: Option<f64>,
    /// The receive rates of the latest feedbacks, newest last: a cut starts from the best
    /// of them, since one interval alone can be emptied by a transport stall while the
    /// path itself still carries its rate.
    window: std::collections::VecDeque<f64>,
    /// `(when, received, lost)` of the feedbacks within `LOSS_WINDOW`, oldest first.
    losses: std::collections::VecDeque<(Duration, u32, u32)>,
    /// The queue delay, smoothed.
    delay: Option<f64>,
    /// The latest raw queue delays, oldest first.
    trend: std::collections::VecDeque<f64>,
    last_decrease: Option<Duration>,
    /// The queue delay when the estimate was last cut: what arrives before that queue
    /// has gone through was sent before the cut.
    cut_queue: Duration,
    /// A limit has been seen: growth is gentle from then on.
    limited: bool,
    max_qp: u8,
    /// A different quality floor the rate asks for, since when.
    qp_wanted: Option<(u8, Duration)>,
    /// Since when a queue does not cut the estimate: see [`Self::hold_delay_cuts`].
    hold_from: Option<Duration>,
    compact: bool,
    /// Since when the other band layout has been wanted.
    compact_wanted: Option<Duration>,
    fewer_bands: bool,
    /// Since when the other choice of `fewer_bands` has been wanted.
    fewer_wanted: Option<Duration>,
    /// Most frames lately changed most of the screen: see [`Self::set_wide`].
    wide: bool,
    /// The estimate has reached `FULL_ABOVE`: the path carries the full layout.
    proven: bool,
    /// The link came back after an outage: see [`Self::restart`].
    restart: Option<Restart>,
    /// Until then reported losses are the outage's: see `OUTAGE_LOSSES_FOR`.
    dark_until: Option<Duration>,
}

/// The transport's window restarting after an outage, which the sender aims at for a while.
#[derive(Debug, Clone, Copy)]
struct Restart {
    from: Duration,
    rtt: Duration,
    /// What the window carries now, bits per second.
    cap: f64,
}

impl RateController {
    pub(crate) fn new(config: RateConfig) -> Self {
        Self {
            target: config.start_bps as f64,
            config,
            acked: None,
            window: std::collections::VecDeque::new(),
            losses: std::collections::VecDeque::new(),
            delay: None,
            trend: std::collections::VecDeque::with_capacity(TREND_SAMPLES),
            last_decrease: None,
            cut_queue: Duration::ZERO,
            limited: false,
            max_qp: qp_for(config.start_bps, &config),
            qp_wanted: None,
            hold_from: None,
            compact: false,
            compact_wanted: None,
            fewer_bands: false,
            fewer_wanted: None,
            wide: false,
            proven: false,
            restart: None,
            dark_until: None,
        }
    }

    /// The link came back at `now` after an outage (`rtt`: the latest round trip, if
    /// known). Until the estimate is reached, or for `RESTART_FOR`, the encoder and the
    /// pacer aim at what the transport's restarting window carries; the band layout and the
    /// quality floor keep following the estimate, so the return costs no relayout. What
    /// the viewer reports lost over the next `OUTAGE_LOSSES_FOR` is not held against the
    /// path, nor a queue while the refresh's burst leaves (see [`Self::hold_delay_cuts`]).
    pub(crate) fn restart(&mut self, now: Duration, rtt: Option<Duration>) {
        self.hold_delay_cuts(now);
        self.losses.clear();
        self.dark_until = Some(now + OUTAGE_LOSSES_FOR);
        let rtt = rtt
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_millis(10));
        self.restart = Some(Restart {
            from: now,
            rtt,
            cap: 0.0,
        });
        self.follow_restart(now);
    }

    fn follow_restart(&mut self, now: Duration) {
        let Some(r) = &mut self.restart else { return };
        let since = now.saturating_sub(r.from);
        let rtt = r.rtt.as_secs_f64();
        let packets = RESTART_PACKETS + since.as_secs_f64() / rtt;
        r.cap = (packets * PACKET_BITS / rtt).max(self.config.min_bps as f64);
        if r.cap >= self.target || since >= RESTART_FOR {
            self.restart = None;
        }
    }

    /// Every band's keyframe is about to leave at once (the stream starts, the link came
    /// back): for a while from `from`, a growing queue is that burst and the transport's
    /// slow start (SCTP opens its window from 4 KiB), not the path. Cutting on it measured the path at
    /// what slow start let through and locked a 20 Mbit/s link at 5 Mbit/s, where scrolling
    /// content no longer fits at a frame rate that keeps it cheap. Loss still cuts.
    /// The hold lasts `BURST_GRACE` or five round trips, whichever is longer: slow start
    /// doubles the window once per round trip.
    pub(crate) fn hold_delay_cuts(&mut self, from: Duration) {
        self.hold_from = Some(from);
    }

    /// Whether most recent frames changed most of the screen (scrolling, video) rather
    /// than a little of it (typing, a cursor).
    pub(crate) fn set_wide(&mut self, wide: bool) {
        self.wide = wide;
    }

    fn held(&self, now: Duration, rtt: Option<Duration>) -> bool {
        let grace = rtt.map_or(BURST_GRACE, |r| BURST_GRACE.max(r * 5));
        self.hold_from.is_some_and(|from| now < from + grace)
    }

    /// The estimate now, bits per second.
    pub(crate) fn estimate_bps(&self) -> u64 {
        self.target as u64
    }

    /// What the sender should aim at.
    pub(crate) fn target(&self) -> RateTarget {
        let estimate = self.restart.map_or(self.target, |r| r.cap.min(self.target)) as u64;
        RateTarget {
            estimate_bps: estimate,
            // Chunk headers, SCTP, DTLS, UDP and IP cost 5-8 % (small chunks on slow links),
            // and the rest leaves room for keyframes.
            encoder_bps: (estimate * 17 / 20).min(self.config.max_encoder_bps),
            pacing_bps: estimate * 21 / 20,
            max_fps: fps_for(estimate),
            max_qp: self.max_qp,
            compact: self.compact,
            fewer_bands: self.fewer_bands,
        }
    }

    /// One feedback arrived at `now`; `rtt` is the latest round trip, if known. Returns
    /// whether the estimate moved.
    pub(crate) fn handle_feedback(
        &mut self,
        now: Duration,
        fb: &Feedback,
        rtt: Option<Duration>,
    ) -> Result<bool, FeedbackRefusal> {
        if !(MIN_INTERVAL_US..=MAX_INTERVAL_US).contains(&fb.interval_us) {
            return Err(FeedbackRefusal::Interval(fb.interval_us));
        }
        self.follow_restart(now);
        let secs = f64::from(fb.interval_us) / 1e6;
        // What a lying viewer claims to have received cannot lift the estimate past the
        // configured maximum: growth is bounded by `max_bps` and by what was sent.
        let received = (f64::from(fb.bytes) * 8.0 / secs).min(self.config.max_bps as f64 * 2.0);
        if fb.received < MIN_EVIDENCE && fb.lost < MIN_EVIDENCE {
            // Next to nothing arrived and next to nothing is missing: the transport stalled
            // (SCTP waiting out a retransmission timer) rather than the path shrinking.
            // Cutting to what trickled through would leave the rate far below the path.
            // The layout still follows the estimate it has: a stall is when an estimate
            // already under the compact threshold needs the compact layout most (a 20 to
            // 2 Mbit/s step stalled 1.6 s before the layout changed).
            let old = self.target;
            return Ok(self.settle_layout_and_floor(now, old, rtt));
        }
        let loss = self.windowed_loss(now, fb);
        let delay_now = f64::from(fb.queue_delay_us.min(MAX_DELAY_US)) / 1e6;
        tracing::trace!(
            received_bps = received as u64,
            messages = fb.received,
            lost = fb.lost,
            queue_ms = delay_now * 1e3,
            loss,
            target = self.target as u64,
            "feedback"
        );
        if self.trend.len() == TREND_SAMPLES {
            self.trend.pop_front();
        }
        self.trend.push_back(delay_now);
        let delay = smooth(self.delay, delay_now, 0.4);
        self.delay = Some(delay);
        let acked = smooth(self.acked, received, 0.3);
        self.acked = Some(acked);
        if self.window.len() == CARRIED_SAMPLES {
            self.window.pop_front();
        }
        self.window.push_back(received);
        let carried = self.window.iter().copied().fold(0.0, f64::max);

        let rising = self.rising();
        let held = self.held(now, rtt);
        // A long queue that is draining says the sender is already under the path: the
        // last cut is working. Cutting again on its length alone cascaded after a 20 to 2
        // Mbit/s step (3.9, 1.6, 0.84, 0.57 Mbit/s in 1.5 s while the queue the step left
        // drained), and the compact restart's keyframe then took 3 s to send.
        let delay_overuse = !held
            && !self.draining()
            && (delay > OVERUSE_DELAY.as_secs_f64()
                || (rising && self.delay_span() > RISING_DELAY.as_secs_f64()));
        let loss_overuse = loss > OVERUSE_LOSS;
        let old = self.target;
        if delay_overuse || loss_overuse {
            // Wait a round trip after a cut for its effect to show before cutting again,
            // plus the queue it was cut at: what arrives until then left before the cut.
            let settle = rtt
                .unwrap_or(Duration::from_millis(100))
                .max(Duration::from_millis(150))
                + self.cut_queue;
            if self.last_decrease.is_none_or(|t| now >= t + settle) {
                let mut cut = self.target;
                if delay_overuse && fb.received >= MIN_EVIDENCE {
                    // A queue is building: the path carries what arrived, not what was sent.
                    cut = cut.min(0.85 * carried);
                }
                if loss_overuse {
                    cut = cut.min(self.target * (1.0 - 0.5 * loss));
                }
                if cut < self.target {
                    tracing::debug!(
                        from = self.target as u64,
                        to = cut as u64,
                        queue_ms = delay * 1e3,
                        queue_now_ms = delay_now * 1e3,
                        rising,
                        loss,
                        carried = carried as u64,
                        "rate cut"
                    );
                    self.target = cut;
                    self.last_decrease = Some(now);
                    self.cut_queue = Duration::from_secs_f64(delay_now);
                    // The trend from before the cut says nothing about the rate after it.
                    self.trend.clear();
                }
                self.limited = true;
            }
        } else if loss <= HOLD_LOSS && delay <= HOLD_DELAY.as_secs_f64() {
            let to_configured = self.config.max_encoder_bps as f64;
            // Not `limited`: that is set too by a queue the sender outran without a cut.
            let never_cut = self.last_decrease.is_none();
            if never_cut && !held && self.target < to_configured && received >= 0.3 * self.target {
                // The start: until the path cut the estimate, clean intervals in which the
                // sender used a fair share take it up to the configured encoder rate (the
                // 60 % rule below held content that cannot fill it), once the start's burst
                // had its chance to show a limit. Starting there overflowed slower paths
                // with the first keyframes; starting lower and waiting for content to fill
                // the estimate left a fast path's quality floor coarse for a minute.
                self.target =
                    (self.target * (1.0 + STARTUP_GROWTH * secs.min(1.0))).min(to_configured);
            } else if received >= 0.6 * self.target {
                // Grow only on evidence: the sender used most of what it was allowed.
                let settled = self.last_decrease.is_some_and(|t| now >= t + PROBE_AFTER);
                let rate = match (self.limited, settled) {
                    (false, _) => STARTUP_GROWTH,
                    (true, false) => STEADY_GROWTH,
                    (true, true) => PROBE_GROWTH,
                };
                self.target *= 1.0 + rate * secs.min(1.0);
                self.target = self.target.min(acked.max(received) * 1.5 + 100_000.0);
                self.target = self.target.max(old);
            }
        }
        self.target = self
            .target
            .clamp(self.config.min_bps as f64, self.config.max_bps as f64);
        Ok(self.settle_layout_and_floor(now, old, rtt))
    }

    /// Move the band layout and the quality floor after the estimate; whether the target
    /// moved since it was `old`. `rtt`: the latest round trip, if known.
    fn settle_layout_and_floor(&mut self, now: Duration, old: f64, rtt: Option<Duration>) -> bool {
        let (qp_before, compact_before, fewer_before) =
            (self.max_qp, self.compact, self.fewer_bands);
        self.update_layout(now);
        let fast_short = self.fast_short_path(rtt);
        if compact_before && !self.compact && self.wide && fast_short {
            // Out of compact under wide content: straight into fewer bands, one restart
            // instead of two a second apart.
            self.fewer_bands = true;
            self.fewer_wanted = None;
        } else {
            self.update_fewer_bands(now, fast_short);
        }
        if self.compact && !compact_before {
            // The restart makes new encoders anyway: give them the loosest floor now, not a
            // moment later at the cost of a second keyframe (see `update_quality_floor`).
            self.max_qp = self.config.worst_qp;
            self.qp_wanted = None;
        }
        self.update_quality_floor(now);
        (self.target - old).abs() > 1.0
            || self.max_qp != qp_before
            || self.compact != compact_before
            || self.fewer_bands != fewer_before
    }

    /// A path shown to carry the full layout (`proven`) whose round trip is at most
    /// `FEWER_MAX_RTT`: where a restart's keyframe of the whole screen is cheap.
    fn fast_short_path(&self, rtt: Option<Duration>) -> bool {
        self.proven && rtt.is_some_and(|r| r <= FEWER_MAX_RTT)
    }

    /// Fewer bands for wide content, once wanted long enough, and only entered on a fast,
    /// short path; never beside `compact`, which has fewer still.
    fn update_fewer_bands(&mut self, now: Duration, fast_short: bool) {
        let want = self.wide && !self.compact && (self.fewer_bands || fast_short);
        if self.compact {
            self.fewer_bands = false;
        }
        if want == self.fewer_bands {
            self.fewer_wanted = None;
            return;
        }
        let since = *self.fewer_wanted.get_or_insert(now);
        let hold = if want { FEWER_AFTER } else { MORE_AFTER };
        if now >= since + hold {
            tracing::debug!(fewer_bands = want, "band layout");
            self.fewer_bands = want;
            self.fewer_wanted = None;
        }
    }
}

impl RateController {
    /// The share of messages lost over the last `LOSS_WINDOW`, with `fb` counted; 0 while
    /// fewer than `LOSS_EVIDENCE` messages say anything.
    fn windowed_loss(&mut self, now: Duration, fb: &Feedback) -> f64 {
        while self
            .losses
            .front()
            .is_some_and(|(at, _, _)| *at + LOSS_WINDOW <= now)
        {
            self.losses.pop_front();
        }
        let lost = if self.dark_until.is_some_and(|t| now < t) {
            0
        } else {
            fb.lost
        };
        self.losses.push_back((now, fb.received, lost));
        let (received, lost) = self
            .losses
            .iter()
            .fold((0u64, 0u64), |(r, l), (_, fr, fl)| {
                (r + u64::from(*fr), l + u64::from(*fl))
            });
        if received + lost < LOSS_EVIDENCE {
            0.0
        } else {
            lost as f64 / (received + lost) as f64
        }
    }

    /// Switch between compact and full bands once the other has been wanted long enough.
    /// Compact only for content that changes most of the screen (scrolling, video): small
    /// changes (typing) gain nothing from fewer bands and would pay a keyframe of the whole
    /// screen for the switch. Not "content that uses what the path carries" either: stuck
    /// in large late frames, scrolling sends well under the estimate, and that is the case
    /// the compact layout is for.
    fn update_layout(&mut self, now: Duration) {
        let estimate = self.estimate_bps();
        self.proven |= estimate >= FULL_ABOVE;
        let want = if self.compact {
            estimate < FULL_ABOVE
        } else {
            // The estimate starts high and only cuts bring it down: below the threshold,
            // the path has shown its limit. A recent cut is not required: a path whose
            // estimate settled under its rate cuts no more (a step to 2 Mbit/s did not).
            let below = if self.unproven_limit() {
                COMPACT_BELOW_UNPROVEN
            } else {
                COMPACT_BELOW
            };
            estimate < below && self.wide
        };
        if want == self.compact {
            self.compact_wanted = None;
            return;
        }
        let since = *self.compact_wanted.get_or_insert(now);
        let hold = match (want, self.unproven_limit()) {
            // A path that showed its limit before it ever carried the full layout: nothing
            // to flap back to (that takes 8 Mbit/s held for 5 s), and every half second in
            // the full layout is spent queueing at the start of a session.
            (true, true) => Duration::ZERO,
            (true, false) => COMPACT_AFTER,
            (false, _) => FULL_AFTER,
        };
        if now >= since + hold {
            tracing::debug!(compact = want, estimate, "band layout");
            self.compact = want;
            self.compact_wanted = None;
        }
    }

    /// The path cut the estimate before it ever reached `FULL_ABOVE`. Not at the start,
    /// before any cut: the estimate starts under 5 Mbit/s on every path.
    fn unproven_limit(&self) -> bool {
        !self.proven && self.last_decrease.is_some()
    }

    /// Move the quality floor toward what the estimate affords, once that has held.
    fn update_quality_floor(&mut self, now: Duration) {
        if self.compact {
            // A new floor means new encoders, and in the compact layout that is a keyframe
            // of the whole screen on a path that carries one in about a second: a finer
            // floor after 3 s followed by a coarser one after the next cut froze `dsl` for
            // 3 s. The floor stays loose; rate control picks the quantiser within it.
            self.qp_wanted = None;
            return;
        }
        let want = qp_for(self.estimate_bps(), &self.config);
        if want == self.max_qp {
            self.qp_wanted = None;
            return;
        }
        let since = match self.qp_wanted {
            Some((q, since)) if q == want => since,
            _ => {
                self.qp_wanted = Some((want, now));
                now
            }
        };
        let hold = if want > self.max_qp {
            COARSER_AFTER
        } else {
            FINER_AFTER
        };
        if now >= since + hold {
            self.max_qp = want;
            self.qp_wanted = None;
        }
    }

    /// How far the queue delay moved over the trend samples: a rise of a few milliseconds
    /// is noise, not a queue.
    fn delay_span(&self) -> f64 {
        let newest = self.trend.back().copied().unwrap_or(0.0);
        let oldest = self.trend.front().copied().unwrap_or(0.0);
        newest - oldest
    }

    /// Whether the queue delay grows, on average over the last samples.
    fn rising(&self) -> bool {
        let n = self.trend.len();
        if n < 4 {
            return false;
        }
        let half = n / 2;
        let mean = |it: &mut dyn Iterator<Item = &f64>| it.sum::<f64>() / half as f64;
        let old = mean(&mut self.trend.iter().take(half));
        let new = mean(&mut self.trend.iter().skip(n - half));
        // The two halves' centres are `n - half` samples apart.
        (new - old) / (n - half) as f64 > RISE_PER_SAMPLE.as_secs_f64()
    }

    /// Whether the queue is past its peak and going down: the last two samples fell, the
    /// newest by `RISING_DELAY` under the highest. The halves' means that `rising`
    /// compares lag by half the window, and still rose for 300 ms of a draining queue.
    fn draining(&self) -> bool {
        let n = self.trend.len();
        if n < 3 {
            return false;
        }
        let (a, b, c) = (self.trend[n - 3], self.trend[n - 2], self.trend[n - 1]);
        let peak = self.trend.iter().copied().fold(0.0, f64::max);
        c < b && b < a && c < peak - RISING_DELAY.as_secs_f64()
    }
}

fn smooth(prev: Option<f64>, sample: f64, weight: f64) -> f64 {
    prev.map_or(sample, |p| p + weight * (sample - p))
}

/// The quality floor `bps` affords: the configured best at 16 Mbit/s and above, 12 steps
/// coarser down to 2 Mbit/s, and the configured worst below. The floor is a ceiling on the
/// encoder's quantiser, not its choice: the encoder's rate control picks finer quantisers
/// whenever the bitrate affords them. A floor too fine for the rate leaves the encoder
/// unable to meet it, the queue fills, frames are skipped and each frame after a skip
/// costs more (scrolled further): measured, a 20 Mbit/s link whose estimate dipped to
/// 5.8 Mbit/s fell from 60 to 2 fps with the floor at 28, and a 6 Mbit/s link whose path
/// carried 2 Mbit/s sat at 1-3 fps with the floor at 40. Scrolling 1080p text costs
/// 3.4, 2.4 and 1.5 Mbit/s at quantisers 34, 40 and 46 in 8 bands, and 1.3 and 0.8 at 40
/// and 46 in one (`deskwire-bench stages --scene scroll --max-qp Q --fps F`, the same at
/// 30 and 60 fps). The worst only below 2 Mbit/s: a ceiling that coarse also caps what the
/// passes after the content stops can refine to at a modest rate (measured on a 20 Mbit/s
/// link whose estimate dipped under 4 Mbit/s: 18 dB after scrolling stopped, 27 dB with 40).
/// Three tiers, not a step per halving: OpenH264 takes a new ceiling only in a new encoder,
/// so each move costs every band a keyframe.
fn qp_for(bps: u64, config: &RateConfig) -> u8 {
    let steps = match bps {
        16_000_000.. => 0,
        2_000_000.. => 12,
        _ => u8::MAX,
    };
    config.best_qp.saturating_add(steps).min(config.worst_qp)
}

/// Frames per second worth sending at `bps`. Fewer frames do not make moving content
/// cheaper: scrolled text costs the same per second at 30 as at 60 fps and half as much
/// again at 15 (each frame has moved further, and what moved out of reach is coded anew),
/// so the rate is met with the quantiser and the frame rate only sheds the per-message
/// overhead (about 100 bytes of headers per band message, 0.4 Mbit/s at 60 fps) on slow
/// links.
fn fps_for(bps: u64) -> u32 {
    match bps {
        4_000_000.. => 60,
        1_000_000.. => 30,
        400_000.. => 20,
        _ => 15,
    }
}

#[cfg(test)]
mod tests;
