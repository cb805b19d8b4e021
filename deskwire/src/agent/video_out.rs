//! The target's `deskwire-video-out` thread: encoded frames from the pipeline through the
//! session crate's pacing [`VideoSender`] onto the video channel, and the encoder's frame
//! rate fitted to what frames cost.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use deskwire_engine::pipeline::Pipeline;
use deskwire_session::pacer::VideoSender;
use deskwire_session::rate::RateTarget;
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;

use super::drain::TransportDrain;
use crate::SessionError;

/// What the `deskwire-video-out` thread owns.
pub(super) struct VideoOut {
    pub(super) handle: tokio::runtime::Handle,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) dc: Arc<dyn DataChannel>,
    pub(super) sender: VideoSender,
    pub(super) epoch: Instant,
    pub(super) counters: Arc<SendCounters>,
    pub(super) stop: Arc<AtomicBool>,
    /// New rate targets, queue budgets and streams from the session core.
    pub(super) pace: Receiver<VideoCommand>,
    /// Bands the viewer asked keyframes for since the thread last looked (bit i = band i).
    pub(super) keys_wanted: Arc<AtomicU32>,
    /// Bands the sender dropped, and bands whose keyframe left, for the session core's
    /// refresh budget.
    pub(super) reports: mpsc::UnboundedSender<VideoReport>,
    /// The session core called the link down: see [`VideoCommand::LinkDown`].
    pub(super) link_down: bool,
}

/// What the session loop tells the video thread: the rate target, the queue budget and the
/// latest round trip.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    pub(super) target: RateTarget,
    pub(super) budget: Duration,
    pub(super) rtt: Option<Duration>,
}

/// What the session loop tells the video thread.
#[derive(Debug, Clone)]
pub(super) enum VideoCommand {
    Pace(Pace),
    /// The stream restarts as `stream` with the pipeline's next band layout, of `bands`
    /// bands: what is queued of the old one is dropped, and sending resumes at the new
    /// layout's first frame.
    Restart {
        stream: u16,
        bands: u32,
    },
    /// The viewer is missing these video messages: send again what is still kept.
    Resend(Vec<u32>),
    /// The link went down (`true`) or came back. While it is down nothing is handed to
    /// the transport: it could only queue in SCTP and, when the link returns, go out
    /// first, stale, through a window that reopens a packet at a time, ahead of the
    /// keyframes that refresh the picture (150 KB of it after an 8 s outage).
    LinkDown(bool),
}

/// Act on `first` (a command that woke the thread) and what else the session loop said
/// since the last look.
fn take_commands(
    v: &mut VideoOut,
    now: Duration,
    first: Option<VideoCommand>,
    fit: &mut FrameRateFit,
    backlog_cap: &mut BacklogCap,
    next_stream: &mut Option<(u16, u32)>,
) {
    let mut first = first;
    while let Some(command) = first.take().or_else(|| v.pace.try_recv().ok()) {
        let Pace {
            target,
            budget,
            rtt,
        } = match command {
            VideoCommand::Pace(p) => p,
            VideoCommand::Restart { stream, bands } => {
                // The viewer drops the old stream's chunks from now on: stop spending the
                // link on them at once.
                v.sender.restart(stream);
                *next_stream = Some((stream, bands));
                continue;
            }
            VideoCommand::Resend(seqs) => {
                let queued = v.sender.handle_nack(now, &seqs);
                tracing::trace!(asked = seqs.len(), queued, "video sent again");
                continue;
            }
            VideoCommand::LinkDown(down) => {
                v.link_down = down;
                continue;
            }
        };
        v.sender.set_rate(now, target.pacing_bps);
        // What is in flight (a round trip of it) counts as outstanding too.
        let hold = TRANSPORT_BACKLOG + rtt.unwrap_or(Duration::from_millis(100));
        backlog_cap.hold = hold;
        backlog_cap.pacing = ((target.pacing_bps as f64 / 8.0 * hold.as_secs_f64()) as usize)
            .max(MIN_TRANSPORT_BACKLOG);
        v.sender.set_budget(budget);
        fit.target = Some(target);
    }
}

/// What the video thread tells the session loop (bit i = band i).
#[derive(Debug, Clone, Copy)]
pub(super) enum VideoReport {
    /// These bands lost video: they need a keyframe.
    Lost(u32),
    /// These bands' keyframes left.
    KeysSent(u32),
    /// Whether most frames of the last second changed at least a third of the rows.
    Wide(bool),
}

/// Counts, over a second, how many frames changed at least a third of the screen's rows.
/// Rows, not bands: in a layout of few bands a typed line touches half of them, and the
/// layout would then keep itself.
#[derive(Debug, Default)]
struct WideCount {
    since: Option<Instant>,
    frames: u32,
    wide: u32,
}

impl WideCount {
    /// A frame in which `rows` of `height` changed; refinement passes and refreshes (no
    /// row changed) say nothing about the content.
    fn frame(&mut self, rows: u32, height: u32) {
        if rows == 0 {
            return;
        }
        self.frames += 1;
        self.wide += u32::from(rows * 3 >= height);
    }

    /// Once a second: whether most frames were wide (`None` before then). A second without
    /// frames is not wide; a few wide frames are (on a slow link, scrolling content may
    /// get through only one or two frames a second until it goes compact).
    fn poll(&mut self, now: Instant) -> Option<bool> {
        let since = *self.since.get_or_insert(now);
        if now < since + Duration::from_secs(1) {
            return None;
        }
        let wide = self.frames > 0 && self.wide * 2 >= self.frames;
        *self = Self {
            since: Some(now),
            ..Self::default()
        };
        Some(wide)
    }
}

/// A debug line a second about what the video thread did: what a slow link looks like from
/// the sending side.
#[derive(Debug, Default)]
struct SendTrace {
    since: Option<Instant>,
    last: deskwire_session::pacer::SenderTotals,
    backed_up: u32,
    refused: u32,
    lost_bands: u32,
    keys_sent: u32,
}

impl SendTrace {
    fn maybe_log(
        &mut self,
        now: Instant,
        totals: &deskwire_session::pacer::SenderTotals,
        fps_cap: Option<f64>,
        backlog_cap: usize,
    ) {
        let since = *self.since.get_or_insert(now);
        if now < since + Duration::from_secs(1) {
            return;
        }
        tracing::debug!(
            frames = totals.frames - self.last.frames,
            kbit = (totals.bytes - self.last.bytes) * 8 / 1000,
            bands_dropped = totals.bands_dropped - self.last.bands_dropped,
            resent = totals.resent - self.last.resent,
            lost_bands = self.lost_bands,
            keys_sent = self.keys_sent,
            refused = self.refused,
            backed_up_loops = self.backed_up,
            fps_cap = fps_cap.unwrap_or(0.0) as u32,
            backlog_cap,
            "video out, last second"
        );
        *self = Self {
            since: Some(now),
            last: *totals,
            ..Self::default()
        };
    }
}

/// Counters shared with the video-out thread.
#[derive(Debug, Default)]
pub(super) struct SendCounters {
    pub(super) frames: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) bands_dropped: AtomicU64,
}

/// The encoder's frame rate, cut only as a last resort. The encoder follows the bitrate it
/// is given (its rate control spends `bitrate / frame rate` per frame), so the bitrate is the
/// lever; the frame rate gives only when the pacer's queue stays over budget anyway (the
/// quality floor reached). Cutting it early spirals on scrolling content: each frame then
/// moves further, costs more and gets a larger per-frame budget, so the queue stays full and
/// the rate keeps falling (measured: 2-3 fps on a 20 Mbit/s link; scrolled text costs
/// half as much again per second at 15 fps as at 30). Hence a floor of half the rate
/// controller's cap and a quick climb back.
#[derive(Debug, Default)]
struct FrameRateFit {
    target: Option<RateTarget>,
    /// The cap now, frames per second.
    fps: Option<f64>,
    /// Samples of "the pacer's queue is over its budget" since the last adjustment.
    over: u32,
    samples: u32,
    /// Adjustment windows in a row that were almost all over budget.
    streak: u32,
    adjusted: Option<Instant>,
    told: Option<(u32, u32, u8)>,
    /// What the sender took lately, bits per second, and the byte count it started from.
    sent_bps: Option<f64>,
    sent_mark: Option<(Instant, u64)>,
}

/// How often the frame-rate cap is adjusted.
const FIT_EVERY: Duration = Duration::from_millis(100);
/// A frame-rate "cap" the pipeline treats as none.
const UNCAPPED_FPS: f64 = 60.0;
/// Windows in a row over budget before the frame rate gives (a keyframe batch is shorter).
const FIT_PATIENCE: u32 = 4;

impl FrameRateFit {
    /// One look at the pacer: is its queue over budget now?
    fn sample(&mut self, over_budget: bool) {
        self.samples += 1;
        self.over += u32::from(over_budget);
    }

    /// The sender's byte count now: what the content costs.
    fn note_sent(&mut self, now: Instant, bytes: u64) {
        let (since, from) = *self.sent_mark.get_or_insert((now, bytes));
        let secs = now.saturating_duration_since(since).as_secs_f64();
        if secs >= 0.5 {
            self.sent_bps = Some(bytes.saturating_sub(from) as f64 * 8.0 / secs);
            self.sent_mark = Some((now, bytes));
        }
    }

    /// A new (bitrate, frame rate, quality floor) for the encoder, when it changed enough
    /// to matter.
    fn poll(&mut self, now: Instant) -> Option<(u32, u32, u8)> {
        let t = self.target?;
        // The rate controller's cap trades frames for quality when bits are short. Content that
        // uses less than half its bitrate (typing, a cursor) is not short of bits: a low
        // estimate there only says little was sent, and every frame is worth sending.
        let cheap = self
            .sent_bps
            .is_some_and(|sent| sent < t.encoder_bps as f64 * 0.5);
        let max = if cheap {
            UNCAPPED_FPS
        } else {
            f64::from(t.max_fps.max(2))
        };
        let floor = (max / 2.0).max(10.0).min(max);
        let mut fps = self.fps.unwrap_or(max).clamp(floor, max);
        if self.adjusted.is_none_or(|a| now >= a + FIT_EVERY) && self.samples > 0 {
            if self.over * 5 >= self.samples * 4 {
                self.streak += 1;
                if self.streak >= FIT_PATIENCE {
                    fps = (fps * 0.8).max(floor);
                    self.streak = 0;
                }
            } else {
                self.streak = 0;
                if self.over * 2 <= self.samples {
                    fps = (fps * 1.25 + 1.0).min(max);
                }
            }
            self.adjusted = Some(now);
            self.over = 0;
            self.samples = 0;
        }
        self.fps = Some(fps);
        let fps = fps as u32;
        let bps = u32::try_from(t.encoder_bps).unwrap_or(u32::MAX);
        let changed = self
            .told
            .is_none_or(|(b, f, q)| b != bps || q != t.max_qp || f.abs_diff(fps) * 10 > f.max(1));
        changed.then(|| {
            self.told = Some((bps, fps, t.max_qp));
            (bps, fps, t.max_qp)
        })
    }
}

/// Largest video message: a few packets, so the pacer spaces video finely (a 256 KiB
/// message would leave as one burst) and a lost packet costs one small retransmission.
pub(super) const VIDEO_CHUNK: usize = 4 * 1024;

/// What the SCTP association may hold of video beyond what is in flight: about this long
/// at the pacing rate, so the pacer keeps the queue, not the transport (whose video
/// messages expire after `video_packet_lifetime` and would be lost, not late).
const TRANSPORT_BACKLOG: Duration = Duration::from_millis(40);
const MIN_TRANSPORT_BACKLOG: usize = 8 * 1024;

/// How much video the transport may hold: `TRANSPORT_BACKLOG` plus a round trip, at the
/// pacing rate and, while SCTP's own window holds video back, at the rate SCTP lets it go.
#[derive(Debug)]
struct BacklogCap {
    hold: Duration,
    pacing: usize,
    drain: TransportDrain,
}

impl BacklogCap {
    fn new() -> Self {
        Self {
            hold: TRANSPORT_BACKLOG + Duration::from_millis(100),
            pacing: MIN_TRANSPORT_BACKLOG,
            drain: TransportDrain::default(),
        }
    }

    fn get(&self) -> usize {
        self.drain
            .cap(self.hold)
            .map_or(self.pacing, |c| c.min(self.pacing))
            .max(MIN_TRANSPORT_BACKLOG)
    }
}

/// The `deskwire-video-out` thread: takes encoded frames while the pacer's queue is within
/// its time budget, and lets chunks out at the pacing rate onto the video channel.
pub(super) fn spawn_video_out(mut v: VideoOut) -> Result<JoinHandle<()>, SessionError> {
    let output = v.pipeline.output().clone();
    // Capture times are on the pipeline's clock; the wire carries the session clock.
    let shift_us = u64::try_from(
        v.pipeline
            .epoch()
            .saturating_duration_since(v.epoch)
            .as_micros(),
    )
    .unwrap_or(0);
    std::thread::Builder::new()
        .name("deskwire-video-out".into())
        .spawn(move || {
            let mut bands = v.pipeline.layout().count();
            // Frames already in flight when the stream started depend on pictures the
            // viewer never got; the stream begins at the requested all-band keyframe.
            let mut started = false;
            // The layout generation frames are sent for, and the stream that comes next.
            let mut generation = 0u32;
            let mut next_stream: Option<(u16, u32)> = None;
            let mut fit = FrameRateFit::default();
            let mut backlog_cap = BacklogCap::new();
            let mut trace = SendTrace::default();
            let mut wide = WideCount::default();
            let mut woke: Option<VideoCommand> = None;
            while !v.stop.load(Relaxed) {
                let wall = Instant::now();
                let now = wall.saturating_duration_since(v.epoch);
                take_commands(
                    &mut v,
                    now,
                    woke.take(),
                    &mut fit,
                    &mut backlog_cap,
                    &mut next_stream,
                );
                let wanted = v.keys_wanted.swap(0, Relaxed);
                if wanted != 0 {
                    v.sender.handle_keyframe_request(wanted);
                }
                fit.sample(!v.sender.wants_frame());
                fit.note_sent(wall, v.sender.totals().bytes);
                if let Some((bps, fps, qp)) = fit.poll(wall) {
                    v.pipeline.set_rate(bps, fps, qp);
                }
                // Let out what the pacing allows, while the transport is not backed up.
                let cap = backlog_cap.get();
                let outstanding = v.handle.block_on(v.dc.outstanding_bytes()).ok();
                let backed_up = v.link_down || outstanding.is_some_and(|n| n > cap);
                if let Some(n) = outstanding {
                    backlog_cap.drain.sample(now, n, backed_up);
                }
                trace.backed_up += u32::from(backed_up);
                if !backed_up {
                    while let Some((band, msg)) = v.sender.poll_transmit(v.epoch.elapsed()) {
                        let len = msg.len();
                        if v.handle.block_on(v.dc.try_send(msg)).is_err() {
                            v.sender.handle_refused(band);
                            trace.refused += 1;
                            break;
                        }
                        backlog_cap.drain.handed(len);
                    }
                }
                let lost = v.sender.poll_lost();
                if lost != 0 {
                    trace.lost_bands += lost.count_ones();
                    let _ = v.reports.send(VideoReport::Lost(lost));
                }
                let keys = v.sender.poll_keys_sent();
                if keys != 0 {
                    trace.keys_sent += keys.count_ones();
                    let _ = v.reports.send(VideoReport::KeysSent(keys));
                }
                if let Some(w) = wide.poll(wall) {
                    let _ = v.reports.send(VideoReport::Wide(w));
                }
                let totals = v.sender.totals();
                trace.maybe_log(wall, &totals, fit.fps, cap);
                v.counters.frames.store(totals.frames, Relaxed);
                v.counters.bytes.store(totals.bytes, Relaxed);
                v.counters
                    .bands_dropped
                    .store(totals.bands_dropped, Relaxed);
                // Sleep until the pacer's next message, a new frame, or 20 ms; with nothing
                // queued, until a new frame or 100 ms, so a still screen costs few wake-ups
                // (a restart's first frame wakes us, and its command is read then).
                let now = v.epoch.elapsed();
                let mut wait = v
                    .sender
                    .poll_timeout()
                    .map_or(Duration::from_millis(100), |t| {
                        t.saturating_sub(now).min(Duration::from_millis(20))
                    });
                if backed_up {
                    wait = wait.max(Duration::from_millis(2));
                }
                // A command (a viewer's request to send again above all) wakes the thread at
                // once: a repair that waits for the next frame comes a frame later.
                if !v.sender.wants_frame() && next_stream.is_none() {
                    let wait = wait.max(Duration::from_micros(500));
                    match v.pace.recv_timeout(wait) {
                        Ok(command) => woke = Some(command),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(wait)
                        }
                    }
                    continue;
                }
                let frame = crossbeam_channel::select! {
                    recv(output) -> f => match f {
                        Ok(f) => f,
                        Err(_) => break,
                    },
                    recv(v.pace) -> command => {
                        match command {
                            Ok(command) => woke = Some(command),
                            Err(_) => std::thread::sleep(wait),
                        }
                        continue;
                    },
                    default(wait) => continue,
                };
                if frame.layout_generation == generation && next_stream.is_some() {
                    // The old layout's last frames, encoded before the change: nobody will
                    // decode them.
                    continue;
                }
                if frame.layout_generation != generation {
                    // A new layout: its first frame keys every band and starts the next
                    // stream. The restart was queued before the layout changed.
                    let now = v.epoch.elapsed();
                    take_commands(
                        &mut v,
                        now,
                        None,
                        &mut fit,
                        &mut backlog_cap,
                        &mut next_stream,
                    );
                    let Some((stream, count)) = next_stream.take() else {
                        continue;
                    };
                    generation = frame.layout_generation;
                    bands = count as usize;
                    started = false;
                    tracing::debug!(stream, bands, "stream restarted");
                }
                if !started {
                    started = frame.bands.len() == bands && frame.bands.iter().all(|b| b.keyframe);
                    if !started {
                        continue;
                    }
                }
                wide.frame(frame.changed_rows, frame.height);
                let captured_at_us = shift_us + frame.captured_at.as_micros();
                v.sender
                    .handle_frame(v.epoch.elapsed(), &frame, captured_at_us);
                tracing::trace!(
                    frame = frame.id.0,
                    bands = frame.bands.len(),
                    keyframes = frame.bands.iter().filter(|b| b.keyframe).count(),
                    bytes = frame.bands.iter().map(|b| b.data.len()).sum::<usize>(),
                    "frame queued"
                );
            }
        })
        .map_err(SessionError::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(estimate_bps: u64, max_fps: u32) -> RateTarget {
        RateTarget {
            estimate_bps,
            encoder_bps: estimate_bps * 17 / 20,
            pacing_bps: estimate_bps * 21 / 20,
            max_fps,
            max_qp: 40,
            compact: false,
            fewer_bands: false,
        }
    }

    /// Run the fit for `windows` adjustment windows with the queue over budget or not and
    /// the sender taking `sent_bps`; returns the frame rate it asked for last.
    fn run(fit: &mut FrameRateFit, t0: Instant, windows: u32, over: bool, sent_bps: u64) -> u32 {
        let mut fps = 0;
        for w in 0..windows {
            let now = t0 + FIT_EVERY * w;
            fit.sample(over);
            fit.note_sent(now, u64::from(w) * sent_bps / 8 / 10);
            if let Some((_, f, _)) = fit.poll(now) {
                fps = f;
            }
        }
        fit.fps.map_or(fps, |f| f as u32)
    }

    #[test]
    fn a_second_is_wide_when_most_of_its_frames_change_a_third_of_the_rows_or_more() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut w = WideCount::default();
        assert_eq!(w.poll(t0), None);
        // Scrolling: every row, even at two frames a second.
        w.frame(1080, 1080);
        w.frame(1080, 1080);
        assert_eq!(w.poll(t0 + second / 2), None, "not a second yet");
        assert_eq!(w.poll(t0 + second), Some(true));
        // Typing: a line, now and then the whole screen.
        for _ in 0..30 {
            w.frame(16, 1080);
        }
        w.frame(1080, 1080);
        assert_eq!(w.poll(t0 + second * 2), Some(false));
        // A still screen.
        assert_eq!(w.poll(t0 + second * 3), Some(false));
        // A window 420 rows high dragged across the screen.
        w.frame(420, 1080);
        assert_eq!(w.poll(t0 + second * 4), Some(true));
        // Refinement passes after scrolling stopped are not content: a typed line among
        // them is what the second was.
        for _ in 0..20 {
            w.frame(0, 1080);
        }
        w.frame(16, 1080);
        assert_eq!(w.poll(t0 + second * 5), Some(false));
    }

    #[test]
    fn cheap_content_is_not_held_to_the_rate_controllers_frame_rate_cap() {
        let t0 = Instant::now();
        let mut fit = FrameRateFit {
            target: Some(target(300_000, 15)),
            ..FrameRateFit::default()
        };
        // Typing: 60 kbit/s of a 255 kbit/s encoder budget.
        assert_eq!(run(&mut fit, t0, 20, false, 60_000), 60);
        // Content that uses its bits gets the cap.
        let mut fit = FrameRateFit {
            target: Some(target(300_000, 15)),
            ..FrameRateFit::default()
        };
        assert_eq!(run(&mut fit, t0, 20, false, 250_000), 15);
    }

    #[test]
    fn the_frame_rate_gives_only_after_a_lasting_queue_and_never_below_half() {
        let t0 = Instant::now();
        let mut fit = FrameRateFit {
            target: Some(target(8_000_000, 60)),
            ..FrameRateFit::default()
        };
        // A keyframe batch: three windows over budget change nothing.
        assert_eq!(run(&mut fit, t0, 3, true, 7_000_000), 60);
        // A lasting queue: down in steps, to the floor of 30 and no further (fewer frames
        // of moving content each cost more).
        let t1 = t0 + FIT_EVERY * 3;
        assert_eq!(run(&mut fit, t1, 200, true, 7_000_000), 30);
        // The queue drains: back to the cap within a second.
        let t2 = t1 + FIT_EVERY * 200;
        assert_eq!(run(&mut fit, t2, 10, false, 7_000_000), 60);
    }
}
