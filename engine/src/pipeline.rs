//! The target-side media pipeline: capture -> latest-wins slot -> diff, convert, encode ->
//! bounded output.
//!
//! ```text
//! deskwire-capture --slot(1, latest wins)--> deskwire-encode --bounded(output_depth)--> consumer
//!   source.capture(now)                       diff -> convert dirty rects
//!                                             -> encode damaged bands (deskwire-band-N)
//!                      control (keyframe requests) --------^
//! ```
//! A slow consumer never backs up capture: capture replaces the waiting frame (folding its
//! damage into the newer one) and the encoder always takes the newest. Frames circulate
//! through a pool and encoded bytes through per-band arenas, so the steady state allocates
//! nothing per frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use deskwire_capture::{
    CaptureOutcome, FramePool, PointerState, PooledFrame, Source, Timestamp, Waited,
};

use crate::codec::{BandId, BandLayout, EncodedFrame};
use crate::config::{BandSpec, ContentTuning, PipelineConfig};
use crate::frame_encoder::{FrameEncoder, FrameOutcome};
use crate::stats::{bump, PipelineStats};
use crate::tuning::TuningGovernor;
use crate::workers::Workers;
use crate::PipelineError as Error;

enum Control {
    Keyframe(Option<BandId>),
    Layout(BandSpec, ContentTuning),
    Rate { bps: u32, max_fps: u32, max_qp: u8 },
}

/// A running pipeline. Encoded frames come out of [`Pipeline::output`].
#[derive(Debug)]
pub struct Pipeline {
    output: Receiver<EncodedFrame>,
    pointer: Receiver<PointerState>,
    control: Sender<Control>,
    stop: Option<Sender<()>>,
    running: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
    threads: Vec<JoinHandle<Result<(), Error>>>,
    epoch: Instant,
    layout: BandLayout,
    source_name: &'static str,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Keyframe(b) => write!(f, "Keyframe({b:?})"),
            Control::Layout(spec, tuning) => write!(f, "Layout({spec:?}, {tuning:?})"),
            Control::Rate {
                bps,
                max_fps,
                max_qp,
            } => write!(f, "Rate({bps} bps, {max_fps} fps, qp <= {max_qp})"),
        }
    }
}

impl Pipeline {
    /// Validate `config` against the source's size and start the capture and encode threads.
    pub fn start(mut source: Box<dyn Source>, config: PipelineConfig) -> Result<Self, Error> {
        let (width, height) = source.size();
        config.validate(width, height)?;
        let workers = match config.encoder_threads {
            1 => None,
            n => Some(Arc::new(Workers::new(n).map_err(Error::Thread)?)),
        };
        let core = FrameEncoder::new(width, height, &config.codec, workers.clone())?;
        let layout = core.layout().clone();
        let pool = FramePool::new(config.pool_frames, || source.alloc_frame())?;
        let source_name = source.name();

        let (slot_tx, slot_rx) = crossbeam_channel::bounded::<Slot>(1);
        let (out_tx, out_rx) = crossbeam_channel::bounded(config.output_depth);
        let (control_tx, control_rx) = crossbeam_channel::bounded(64);
        let (pointer_tx, pointer_rx) = crossbeam_channel::bounded(1);
        // Nothing is ever sent: dropping the sender is the signal. Capacity 1, not 0, because
        // a zero-capacity channel allocates a packet every time a `select!` blocks on it.
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let running = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(PipelineStats::default());
        let epoch = Instant::now();

        let capture = CaptureLoop {
            source,
            pool,
            slot_tx,
            slot_rx: slot_rx.clone(),
            running: running.clone(),
            stats: stats.clone(),
            epoch,
            interval: config.capture_fps.map(|f| Duration::from_secs(1) / f),
            pointer: PointerOut {
                tx: pointer_tx,
                rx: pointer_rx.clone(),
                last: None,
                read_at: None,
                failed: false,
            },
        };
        let encode = EncodeLoop {
            slot_rx,
            control_rx,
            stop_rx,
            out_tx,
            core,
            running: running.clone(),
            stats: stats.clone(),
            prev: None,
            workers,
            min_interval: None,
            last_encode: None,
            retune_warned: false,
            epoch,
            planned_fps: config.codec.max_fps,
            cap_fps: config.codec.max_fps,
            plan_fps: config.codec.max_fps,
            refining: false,
            tuning: TuningGovernor::new(
                config.codec.tuning,
                config.codec.bitrate_bps,
                Duration::ZERO,
            ),
        };
        let mut threads = Vec::with_capacity(2);
        threads.push(spawn("deskwire-encode", move || encode.run())?);
        match spawn("deskwire-capture", move || capture.run()) {
            Ok(t) => threads.push(t),
            Err(e) => {
                running.store(false, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(Self {
            output: out_rx,
            pointer: pointer_rx,
            control: control_tx,
            stop: Some(stop_tx),
            running,
            stats,
            threads,
            epoch,
            layout,
            source_name,
        })
    }

    /// Encoded frames, oldest first. Disconnects when the pipeline stops (call
    /// [`Pipeline::shutdown`] to learn why).
    pub fn output(&self) -> &Receiver<EncodedFrame> {
        &self.output
    }

    /// The pointer, when it moved or changed shape (newest first: an update nobody took is
    /// folded into the next, keeping a shape it carried). Empty for sources that cannot
    /// tell where their pointer is.
    pub fn pointer(&self) -> &Receiver<PointerState> {
        &self.pointer
    }

    /// Ask for a keyframe of one band, or of all of them; served even on a static screen.
    pub fn request_keyframe(&self, band: Option<BandId>) {
        // A full control queue already holds keyframe requests; dropping one loses nothing.
        let _ = self.control.try_send(Control::Keyframe(band));
    }

    /// Cut frames into `spec`'s bands, encoded with `tuning`, from now on: the next frame
    /// (served at once from the current picture) is every new band's keyframe and carries
    /// the next [`EncodedFrame::layout_generation`]. An impossible layout is logged and
    /// ignored.
    pub fn set_layout(&self, spec: BandSpec, tuning: ContentTuning) {
        // Unlike a rate, a layout change must not be lost: wait for room.
        let _ = self.control.send(Control::Layout(spec, tuning));
    }

    /// Aim the encoders at `bps`, encode at most `max_fps` frames a second and let quality
    /// fall to quantiser `max_qp` from now on (the congestion controller's target). Frames
    /// held back are not lost: capture folds their changes into the next one. A new
    /// `max_qp` costs each band a keyframe at its next change.
    pub fn set_rate(&self, bps: u32, max_fps: u32, max_qp: u8) {
        // A full control queue is already busy; the next target follows soon.
        let _ = self.control.try_send(Control::Rate {
            bps: bps.max(100_000),
            max_fps: max_fps.clamp(1, 240),
            max_qp: max_qp.clamp(12, 51),
        });
    }

    /// Live counters and histograms.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The instant frame timestamps count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// How frames were cut into bands when the pipeline started (see
    /// [`Pipeline::set_layout`]).
    pub fn layout(&self) -> &BandLayout {
        &self.layout
    }

    /// Name of the capture backend.
    pub fn source_name(&self) -> &'static str {
        self.source_name
    }

    /// True while both threads run.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Stop and join every thread (band encoders included). Returns the first error a thread
    /// stopped with, if any.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), Error> {
        self.running.store(false, Ordering::SeqCst);
        // Dropping the stop sender wakes the encoder wherever it waits.
        drop(self.stop.take());
        let mut first = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().unwrap_or(Err(Error::ThreadPanicked));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            if let Err(e) = self.stop_and_join() {
                tracing::warn!(error = %e, "pipeline stopped with an error");
            }
        }
    }
}

fn spawn(
    name: &str,
    f: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Result<JoinHandle<Result<(), Error>>, Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(Error::Thread)
}

/// A captured frame waiting for the encoder, with how long its capture took.
struct Slot {
    frame: PooledFrame,
    capture_us: u32,
}

struct CaptureLoop {
    source: Box<dyn Source>,
    pool: FramePool,
    slot_tx: Sender<Slot>,
    /// Capture also holds the receiving end, to take back a frame the encoder has not taken.
    slot_rx: Receiver<Slot>,
    running: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
    epoch: Instant,
    interval: Option<Duration>,
    pointer: PointerOut,
}

/// Where the capture thread hands the pointer out: one waiting update, newest wins.
struct PointerOut {
    tx: Sender<PointerState>,
    /// Capture holds the receiving end too, to fold an update nobody took into the next.
    rx: Receiver<PointerState>,
    /// What was last handed out: (x, y, visible, serial).
    last: Option<(i32, i32, bool, u32)>,
    read_at: Option<Instant>,
    /// The source failed to tell once; said once, then quiet.
    failed: bool,
}

/// The longest a capture thread that waits for the screen to change sleeps: how soon it
/// notices it should stop.
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// The least time between two pointer reads: 125 Hz, above any screen's refresh, so a
/// flat-out capture loop does not ask the X server thousands of times a second.
const POINTER_EVERY: Duration = Duration::from_millis(8);

impl PointerOut {
    fn poll(&mut self, source: &mut dyn Source) {
        let now = Instant::now();
        // The waiting loop already spaces its turns by POINTER_EVERY; this guards the
        // flat-out one, with slack so a turn that came a hair early is not skipped.
        if self.read_at.is_some_and(|t| now < t + POINTER_EVERY / 2) {
            return;
        }
        self.read_at = Some(now);
        let mut state = match source.pointer() {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                if !std::mem::replace(&mut self.failed, true) {
                    tracing::warn!(error = %e, "cannot read the pointer; it is not shown");
                }
                return;
            }
        };
        let key = (state.x, state.y, state.visible, state.serial);
        if state.shape.is_none() && self.last == Some(key) {
            return;
        }
        self.last = Some(key);
        if let Ok(older) = self.rx.try_recv() {
            if state.shape.is_none() && older.serial == state.serial {
                state.shape = older.shape;
            }
        }
        // Full only if the consumer raced us to it; the next move says it again.
        let _ = self.tx.try_send(state);
    }
}

impl CaptureLoop {
    fn run(mut self) -> Result<(), Error> {
        let r = self.run_inner();
        self.running.store(false, Ordering::SeqCst);
        if let Err(e) = &r {
            tracing::error!(error = %e, "capture stopped");
        }
        r
    }

    fn run_inner(&mut self) -> Result<(), Error> {
        let mut next = Instant::now();
        let mut last_fresh: Option<Instant> = None;
        let mut last_turn: Option<Instant> = None;
        let mut spare: Option<PooledFrame> = None;
        while self.running.load(Ordering::Relaxed) {
            if let Some(interval) = self.interval {
                match self.source.wait(IDLE_WAIT)? {
                    // Capture when the screen changes, not at the next tick: what the
                    // technician typed is on its way a tick sooner. Still at most one
                    // capture an interval, so a storm of damage cannot starve the encoder.
                    Waited::News | Waited::Timeout => {
                        // Pointer motion alone wakes us too: no more often than the
                        // pointer is read.
                        let due = [
                            last_fresh.map(|t| t + interval),
                            last_turn.map(|t| t + POINTER_EVERY),
                        ]
                        .into_iter()
                        .flatten()
                        .max();
                        if let Some(due) = due {
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                        }
                    }
                    Waited::Unsupported => {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        // Late ticks are skipped, not made up: latency beats completeness.
                        next = (next + interval).max(Instant::now());
                    }
                }
            }
            let mut frame = match spare.take() {
                Some(f) => f,
                None => match self.pool.take_timeout(Duration::from_millis(50)) {
                    Some(f) => f,
                    None => continue,
                },
            };
            let started = Instant::now();
            last_turn = Some(started);
            let now = Timestamp::from_micros(self.epoch.elapsed().as_micros() as u64);
            let outcome = self.source.capture(&mut frame, now)?;
            self.pointer.poll(self.source.as_mut());
            match outcome {
                CaptureOutcome::Unchanged => {
                    bump(&self.stats.frames_unchanged_at_source, 1);
                    spare = Some(frame);
                    if self.interval.is_none() {
                        // Flat out, but an idle screen must not spin a core.
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
                CaptureOutcome::Fresh => {
                    last_fresh = Some(started);
                    let capture_us = started.elapsed().as_micros() as u64;
                    self.stats.capture_us.record(capture_us);
                    bump(&self.stats.frames_captured, 1);
                    if let Ok(older) = self.slot_rx.try_recv() {
                        // The encoder never saw `older`: its changes must travel with this one.
                        frame.damage_mut().absorb(older.frame.damage());
                        bump(&self.stats.frames_superseded, 1);
                    }
                    let slot = Slot {
                        frame,
                        capture_us: capture_us as u32,
                    };
                    if self.slot_tx.try_send(slot).is_err() {
                        // Only the encoder receives besides us, so the slot cannot be full
                        // here; a disconnect means the encoder is gone.
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

struct EncodeLoop {
    slot_rx: Receiver<Slot>,
    control_rx: Receiver<Control>,
    stop_rx: Receiver<()>,
    out_tx: Sender<EncodedFrame>,
    core: FrameEncoder,
    running: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
    /// The last frame that changed the picture: what the next one is compared against.
    prev: Option<PooledFrame>,
    /// The band pool, if bands encode in parallel: the loop runs on one of its threads.
    workers: Option<Arc<Workers>>,
    /// The least time between two encodes (the rate controller's frame rate).
    min_interval: Option<Duration>,
    last_encode: Option<Instant>,
    /// A refused retune was reported already.
    retune_warned: bool,
    /// What capture times count from.
    epoch: Instant,
    /// The frame rate the encoders' rate control plans for while the screen moves (each
    /// picture gets the bitrate over it): the configured maximum, whatever cap the rate
    /// controller sets. Under a lower cap each picture stays small, which keeps a slow
    /// path's latency down.
    planned_fps: u32,
    /// The rate controller's frame-rate cap.
    cap_fps: u32,
    /// What the running encoders plan for now.
    plan_fps: u32,
    /// The last encode was a refinement pass (no capture since): the encoders then plan
    /// for the cap, so that passes spend the whole rate.
    refining: bool,
    /// Screen or camera tuning, by what encoding costs this thread.
    tuning: TuningGovernor,
}

/// How long after the last capture a band that stopped changing gets its first refinement
/// pass: a frame at 30 fps, so a screen still moving is not refined between its frames.
const REFINE_AFTER: Duration = Duration::from_millis(33);

impl EncodeLoop {
    fn run(mut self) -> Result<(), Error> {
        // With a band pool, the loop runs on one of the pool's threads while this one waits.
        // Parallel band encodes then start inside the pool (work-stealing deques, which do
        // not allocate) instead of being injected from outside every frame (rayon's injector
        // allocates a new block every ~63 jobs). The loop's thread takes a share of the bands
        // itself, so as many threads encode as before.
        let r = match self.workers.take() {
            Some(w) => w.pool().install(|| self.run_inner()),
            None => self.run_inner(),
        };
        self.running.store(false, Ordering::SeqCst);
        if let Err(e) = &r {
            tracing::error!(error = %e, "encoder stopped");
        }
        r
    }

    fn run_inner(&mut self) -> Result<(), Error> {
        loop {
            // Under the frame-rate cap the next frame waits in the slot, where capture folds
            // newer changes into it; control still gets through.
            let hold = match (self.min_interval, self.last_encode) {
                (Some(min), Some(last)) => (last + min).checked_duration_since(Instant::now()),
                _ => None,
            };
            if let Some(hold) = hold {
                select! {
                    recv(self.stop_rx) -> _ => return Ok(()),
                    recv(self.control_rx) -> msg => {
                        let Ok(c) = msg else { return Ok(()) };
                        if !self.control(c)? {
                            return Ok(());
                        }
                    }
                    default(hold) => {}
                }
                continue;
            }
            select! {
                recv(self.stop_rx) -> _ => return Ok(()),
                recv(self.control_rx) -> msg => {
                    let Ok(c) = msg else { return Ok(()) };
                    if !self.control(c)? {
                        return Ok(());
                    }
                }
                recv(self.slot_rx) -> msg => {
                    let Ok(slot) = msg else { return Ok(()) };
                    if !self.process(slot)? {
                        return Ok(());
                    }
                }
                default(self.refine_wait()) => {
                    // Nothing new was captured: bands that stopped changing get their next
                    // refinement pass, stamped now (the screen looks like this now).
                    let now = Timestamp::from_micros(self.epoch.elapsed().as_micros() as u64);
                    self.set_refining(true);
                    if let Some(out) = self.core.refine(now)? {
                        self.last_encode = Some(Instant::now());
                        if !self.send(out) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Refinement passes come at the cap, and each gets the rate over the cap: the
    /// encoders plan for the cap while they refine and for `planned_fps` again once the
    /// screen moves. At 30 passes a second under a 60 fps plan refinement spent half the
    /// rate, and a page of text scrolled on `dsl` stood at 25-29 dB a second after it
    /// stopped.
    fn set_refining(&mut self, refining: bool) {
        self.refining = refining;
        let fps = if refining {
            self.cap_fps
        } else {
            self.planned_fps
        };
        if fps != self.plan_fps {
            match self.core.set_frame_rate(fps) {
                Ok(()) => self.plan_fps = fps,
                Err(e) => tracing::debug!(error = %e, fps, "cannot plan for another frame rate"),
            }
        }
    }

    /// How long to wait for a new capture before refining still bands: a frame at 30 fps
    /// after the last capture, then the cap's frame interval between passes.
    fn refine_wait(&self) -> Duration {
        if !self.core.refining() {
            return Duration::from_secs(3600);
        }
        let gap = if self.refining {
            Duration::from_secs(1) / self.cap_fps.max(1)
        } else {
            REFINE_AFTER
        };
        self.last_encode
            .map_or(gap, |t| (t + gap).saturating_duration_since(Instant::now()))
    }

    /// Act on a control message. `Ok(false)` when the consumer or a stop ended it.
    fn control(&mut self, c: Control) -> Result<bool, Error> {
        match c {
            Control::Rate {
                bps,
                max_fps,
                max_qp,
            } => {
                self.core.set_quality_floor(max_qp);
                self.tuning.handle_rate(bps);
                // Refining under one cap and told another: plan for the new one.
                self.cap_fps = max_fps.clamp(1, self.planned_fps.max(1));
                self.set_refining(self.refining);
                // A rate the encoder refuses leaves it at the last one: worth one warning, not
                // the end of the stream, nor a warning at every retune.
                if let Err(e) = self.core.set_bitrate(bps) {
                    if std::mem::replace(&mut self.retune_warned, true) {
                        tracing::debug!(error = %e, bps, "cannot retune the encoders");
                    } else {
                        tracing::warn!(error = %e, bps, "cannot retune the encoders (said once)");
                    }
                }
                // A little slack under the cap: captures come on a fixed tick, and a hold
                // that ends just after one would skip to the next and halve the rate. At
                // 60 fps and above nothing is held (capture's own tick decides).
                self.min_interval =
                    (max_fps < 60).then(|| Duration::from_secs(1) / max_fps * 9 / 10);
                Ok(true)
            }
            Control::Layout(spec, tuning) => {
                let tuning = self.tuning.handle_layout(tuning, self.epoch.elapsed());
                if let Err(e) = self.core.set_layout(spec, tuning) {
                    tracing::warn!(error = %e, ?spec, ?tuning, "cannot change the band layout");
                    return Ok(true);
                }
                self.serve_pending()
            }
            Control::Keyframe(band) => {
                self.core.request_keyframe(band)?;
                self.serve_pending()
            }
        }
    }

    /// Encode what was asked for (keyframes, a new layout) now from the current picture,
    /// even if nothing new is captured. `Ok(false)` when the consumer or a stop ended it.
    fn serve_pending(&mut self) -> Result<bool, Error> {
        if let Some(captured_at) = self.prev.as_ref().map(|p| p.timestamp()) {
            if let Some(out) = self.core.encode_pending(captured_at)? {
                return Ok(self.send(out));
            }
        }
        Ok(true)
    }

    /// Diff, convert and encode one frame. `Ok(false)` when the consumer or a stop ended it.
    fn process(&mut self, slot: Slot) -> Result<bool, Error> {
        let Slot { frame, capture_us } = slot;
        // The frame-rate cap counts from when work on a frame starts: counting from when it
        // was sent would add the encode time to every interval.
        self.last_encode = Some(Instant::now());
        self.set_refining(false);
        match self.core.handle_frame(self.prev.as_deref(), &frame)? {
            FrameOutcome::Unchanged { diff_us } => {
                self.stats.diff_us.record(u64::from(diff_us));
                bump(&self.stats.frames_unchanged_after_diff, 1);
                Ok(true)
            }
            FrameOutcome::Changed(out) => {
                // From here on, `frame` is the reference; the old one goes back to the pool.
                self.prev = Some(frame);
                let Some(mut out) = out else { return Ok(true) };
                out.timings.capture_us = capture_us;
                self.stats.diff_us.record(u64::from(out.timings.diff_us));
                self.stats
                    .convert_us
                    .record(u64::from(out.timings.convert_us));
                Ok(self.send(out))
            }
        }
    }

    /// Count and hand over an encoded frame; false when the consumer or a stop ended it.
    fn send(&mut self, out: EncodedFrame) -> bool {
        let bytes = out.byte_len();
        let took = Duration::from_micros(u64::from(out.timings.encode_us));
        if let Some(tuning) = self.tuning.handle_encode(self.epoch.elapsed(), took, bytes) {
            self.core.set_tuning(tuning);
        }
        let bytes = bytes as u64;
        self.stats
            .encode_us
            .record(u64::from(out.timings.encode_us));
        self.stats.frame_bytes.record(bytes);
        bump(&self.stats.frames_encoded, 1);
        bump(&self.stats.bands_encoded, out.bands.len() as u64);
        bump(&self.stats.bytes_encoded, bytes);
        select! {
            send(self.out_tx, out) -> r => r.is_ok(),
            recv(self.stop_rx) -> _ => false,
        }
    }
}
