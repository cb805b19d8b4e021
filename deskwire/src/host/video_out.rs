//! The target's `deskwire-video-out` thread: encoded frames from the pipeline through the
//! session crate's pacing [`VideoSender`] onto the video channel, and the encoder's frame
//! rate fitted to what frames cost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use deskwire_engine::pipeline::Pipeline;
use deskwire_session::pacer::VideoSender;
use deskwire_session::rate::RateTarget;
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;

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
    /// New rate targets and queue budgets from the session core.
    pub(super) pace: Receiver<(RateTarget, Duration)>,
    /// Bands the sender dropped, for the session core's refresh budget.
    pub(super) lost: mpsc::UnboundedSender<u32>,
}

/// Counters shared with the video-out thread.
#[derive(Debug, Default)]
pub(super) struct SendCounters {
    pub(super) frames: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) bands_dropped: AtomicU64,
}

/// The encoder's frame rate fitted to what frames really cost: OpenH264 keeps its quality
/// floor whatever bitrate it is given, so on a slow link it is the frame rate that gives.
/// Encoding more frames than the link drains would only park them in the pipeline's output,
/// where they age.
#[derive(Debug, Default)]
struct FrameRateFit {
    target: Option<RateTarget>,
    /// A changed frame's size, smoothed, bytes.
    frame_bytes: Option<f64>,
    told: Option<(u32, u32)>,
}

impl FrameRateFit {
    fn handle_frame(&mut self, bytes: usize) {
        let b = bytes as f64;
        self.frame_bytes = Some(self.frame_bytes.map_or(b, |f| f + 0.2 * (b - f)));
    }

    /// A new (bitrate, frame rate) for the encoder, when it changed enough to matter.
    fn poll(&mut self) -> Option<(u32, u32)> {
        let t = self.target?;
        let fits = self.frame_bytes.map_or(t.max_fps, |f| {
            (t.estimate_bps as f64 / (f * 8.0).max(1.0)).clamp(2.0, 240.0) as u32
        });
        let fps = t.max_fps.min(fits).max(2);
        let bps = u32::try_from(t.encoder_bps).unwrap_or(u32::MAX);
        let changed = self
            .told
            .is_none_or(|(b, f)| b != bps || f.abs_diff(fps) * 5 > f.max(1));
        changed.then(|| {
            self.told = Some((bps, fps));
            (bps, fps)
        })
    }
}

/// Largest video message: a few packets, so the pacer spaces video finely (a 256 KiB
/// message would leave as one burst) and a lost packet costs one small retransmission.
pub(super) const VIDEO_CHUNK: usize = 4 * 1024;

/// What the SCTP association may hold of video beyond what the pacer let out: a little,
/// so the pacer (which knows what is stale) keeps the queue, not the transport.
const TRANSPORT_BACKLOG: usize = 64 * 1024;

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
            let bands = v.pipeline.layout().count();
            // Frames already in flight when the stream started depend on pictures the
            // viewer never got; the stream begins at the requested all-band keyframe.
            let mut started = false;
            let mut fit = FrameRateFit::default();
            while !v.stop.load(Relaxed) {
                let now = v.epoch.elapsed();
                while let Ok((target, budget)) = v.pace.try_recv() {
                    v.sender.set_rate(now, target.pacing_bps);
                    v.sender.set_budget(budget);
                    fit.target = Some(target);
                }
                if let Some((bps, fps)) = fit.poll() {
                    v.pipeline.set_rate(bps, fps);
                }
                // Let out what the pacing allows, while the transport is not backed up.
                let backed_up = v
                    .handle
                    .block_on(v.dc.outstanding_bytes())
                    .is_ok_and(|n| n > TRANSPORT_BACKLOG);
                if !backed_up {
                    while let Some((band, msg)) = v.sender.poll_transmit(v.epoch.elapsed()) {
                        if v.handle.block_on(v.dc.try_send(msg)).is_err() {
                            v.sender.handle_refused(band);
                            break;
                        }
                    }
                }
                let lost = v.sender.poll_lost();
                if lost != 0 {
                    let _ = v.lost.send(lost);
                }
                let totals = v.sender.totals();
                v.counters.frames.store(totals.frames, Relaxed);
                v.counters.bytes.store(totals.bytes, Relaxed);
                v.counters
                    .bands_dropped
                    .store(totals.bands_dropped, Relaxed);
                // Sleep until the pacer's next message, a new frame, or 20 ms.
                let now = v.epoch.elapsed();
                let mut wait = v
                    .sender
                    .poll_timeout()
                    .map_or(Duration::from_millis(20), |t| t.saturating_sub(now))
                    .min(Duration::from_millis(20));
                if backed_up {
                    wait = wait.max(Duration::from_millis(2));
                }
                if !v.sender.wants_frame() {
                    std::thread::sleep(wait.max(Duration::from_micros(500)));
                    continue;
                }
                let frame = match output.recv_timeout(wait) {
                    Ok(f) => f,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                };
                if !started {
                    started = frame.bands.len() == bands && frame.bands.iter().all(|b| b.keyframe);
                    if !started {
                        continue;
                    }
                }
                let captured_at_us = shift_us + frame.captured_at.as_micros();
                fit.handle_frame(frame.byte_len());
                v.sender
                    .handle_frame(v.epoch.elapsed(), &frame, captured_at_us);
                tracing::trace!(
                    frame = frame.id.0,
                    bands = frame.bands.len(),
                    "frame queued"
                );
            }
        })
        .map_err(SessionError::Thread)
}
