//! A synthetic screen for the [`super::Pair`]: an "encoder" that makes band frames of the
//! size the rate controller asks for, the real [`VideoSender`] pacing them onto the link,
//! and the real [`Reassembler`] at the viewer deciding what could be shown and asking for
//! keyframes. Congestion control and recovery run end to end in virtual time.

use std::time::Duration;

use bytes::Bytes;
use deskwire_engine::{BandId, EncodedBand, EncodedFrame, FrameId};

use crate::pacer::{PacerConfig, VideoSender};
use crate::rate::RateTarget;
use crate::video::Reassembler;

/// What the synthetic screen does.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoLoad {
    /// Bands of the stream (the [`crate::StreamInfo`] must have as many).
    pub bands: usize,
    /// Frames per second the screen changes at.
    pub fps: u32,
    /// The content changes until this instant, then stands still.
    pub changing_until: Duration,
    /// A keyframe costs this many times a changed band's frame.
    pub keyframe_factor: u32,
    /// Largest message on the video channel.
    pub max_message: usize,
    /// How long the viewer waits before asking again for a keyframe it did not get.
    pub keyframe_retry: Duration,
    /// Every frame changes most of the screen, and the target is told so: on a slow path
    /// the stream restarts in a compact layout (see `RateTarget::compact`).
    pub wide: bool,
}

impl Default for VideoLoad {
    fn default() -> Self {
        Self {
            bands: 3,
            fps: 60,
            changing_until: Duration::MAX,
            keyframe_factor: 6,
            max_message: 16 * 1024,
            keyframe_retry: Duration::from_millis(250),
            wide: false,
        }
    }
}

/// A band frame the viewer could show: when it arrived, which band, from which frame, and
/// when that frame was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// Arrival at the viewer.
    pub at: Duration,
    /// The band.
    pub band: u8,
    /// The frame it belongs to.
    pub frame: u64,
    /// When the frame was captured.
    pub captured: Duration,
}

#[derive(Debug)]
pub(super) struct VideoRun {
    load: VideoLoad,
    pub(super) sender: VideoSender,
    encoder_bps: u64,
    max_fps: u32,
    next_frame: Duration,
    want_key: u32,
    frame_id: u64,
    pub(super) rasm: Reassembler,
    pub(super) shown: Vec<Shown>,
}

impl VideoRun {
    pub(super) fn new(load: VideoLoad, stream: u16, band_pixels: &[u32], rate: RateTarget) -> Self {
        let mut rasm = Reassembler::new(load.keyframe_retry);
        rasm.handle_stream_start(stream, band_pixels, Duration::ZERO);
        let sender = VideoSender::new(
            stream,
            PacerConfig {
                max_message: load.max_message,
                start_bps: rate.pacing_bps,
                stale_after: Duration::from_millis(300),
            },
        );
        Self {
            want_key: crate::video::all_bands(load.bands),
            load,
            sender,
            encoder_bps: rate.encoder_bps,
            max_fps: rate.max_fps,
            next_frame: Duration::ZERO,
            frame_id: 0,
            rasm,
            shown: Vec::new(),
        }
    }

    pub(super) fn set_rate(&mut self, now: Duration, rate: RateTarget) {
        self.encoder_bps = rate.encoder_bps;
        self.max_fps = rate.max_fps;
        self.sender.set_rate(now, rate.pacing_bps);
    }

    /// The target restarted the stream as `stream` with `bands` bands: every band starts
    /// with a keyframe, and what waits of the old stream is dropped.
    pub(super) fn restart(&mut self, stream: u16, bands: usize) {
        self.load.bands = bands;
        self.want_key = crate::video::all_bands(bands);
        self.sender.restart(stream);
    }

    /// The viewer was told of stream `stream`: what of it came early is taken now.
    pub(super) fn start_stream(&mut self, now: Duration, stream: u16, band_pixels: &[u32]) {
        if self.rasm.stream() == Some(stream) {
            // The first stream: the reassembler was made for it.
            return;
        }
        self.rasm.handle_stream_start(stream, band_pixels, now);
        self.poll_shown(now);
    }

    pub(super) fn request_keyframes(&mut self, bands: u32) {
        self.want_key |= bands;
        self.sender.handle_keyframe_request(bands);
    }

    /// The next instant something happens here.
    pub(super) fn next_at(&self) -> Option<Duration> {
        let frame =
            (self.changing(self.next_frame) || self.want_key != 0).then_some(self.next_frame);
        [frame, self.sender.poll_timeout(), self.rasm.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn wide(&self) -> bool {
        self.load.wide
    }

    fn changing(&self, t: Duration) -> bool {
        t < self.load.changing_until
    }

    /// Encode a frame if one is due and the sender takes it.
    pub(super) fn tick(&mut self, now: Duration) {
        if now < self.next_frame {
            return;
        }
        let fps = self.load.fps.min(self.max_fps).max(1);
        self.next_frame = now + Duration::from_secs(1) / fps;
        let changing = self.changing(now);
        if !(changing || self.want_key != 0) || !self.sender.wants_frame() {
            // Held back: the capture folds the change into a later frame.
            return;
        }
        let band_bytes = (self.encoder_bps / 8 / u64::from(fps) / self.load.bands as u64).max(64);
        let bands = (0..self.load.bands)
            .filter(|&b| changing || self.want_key & (1 << b) != 0)
            .map(|b| {
                let key = self.want_key & (1 << b) != 0;
                let len = if key {
                    band_bytes * u64::from(self.load.keyframe_factor)
                } else {
                    band_bytes
                };
                EncodedBand {
                    band: BandId(b as u8),
                    keyframe: key,
                    data: Bytes::from(vec![b as u8; len as usize]),
                    encode_us: 0,
                    qp: 0,
                }
            })
            .collect();
        self.want_key = 0;
        self.frame_id += 1;
        let frame = EncodedFrame {
            id: FrameId(self.frame_id),
            captured_at: deskwire_capture::Timestamp::from_micros(now.as_micros() as u64),
            width: 64,
            height: 64,
            bands,
            layout_generation: 0,
            timings: Default::default(),
            changed_rows: 0,
        };
        self.sender
            .handle_frame(now, &frame, now.as_micros() as u64);
    }

    /// A video message reached the viewer at `now`.
    pub(super) fn deliver(&mut self, now: Duration, data: &[u8]) {
        let _ = self.rasm.handle_message(bytes::BytesMut::from(data));
        self.poll_shown(now);
    }

    /// Hand out what the reassembler lets the decoder have (and let it give up on gaps).
    pub(super) fn poll_shown(&mut self, now: Duration) {
        while let Some(b) = self.rasm.poll_band(now) {
            self.shown.push(Shown {
                at: now,
                band: b.band,
                frame: b.frame_id,
                captured: Duration::from_micros(b.captured_at_us),
            });
        }
    }
}
