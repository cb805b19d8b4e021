//! One OpenH264 encoder per band; damaged bands encode in parallel into reusable arenas.

use std::sync::Arc;

use arrayvec::ArrayVec;
use bytes::{Bytes, BytesMut};
use deskwire_capture::{Rect, Timestamp};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, QpRange, RateControlMode,
    UsageType,
};
use openh264::OpenH264API;
use rayon::prelude::*;

use super::{BandId, BandLayout, CodecError, FrameId};
use crate::config::{BandSpec, CodecConfig, ContentTuning, EncodeEffort, MAX_BANDS};
use crate::convert::I420Image;
use crate::stats::StageTimings;
use crate::workers::Workers;

/// One band's share of an encoded frame: a complete H.264 access unit (Annex-B).
#[derive(Debug, Clone)]
pub struct EncodedBand {
    /// Which band.
    pub band: BandId,
    /// True for an IDR picture: decodable without any earlier data of this band.
    pub keyframe: bool,
    /// Annex-B bytes, sliced from the band's arena without copying.
    pub data: Bytes,
    /// Time this band's encode took, in microseconds.
    pub encode_us: u32,
    /// The picture's average quantiser as OpenH264 reports it (0 when it did not say).
    pub qp: u8,
}

/// Everything the encoder produced for one captured frame: only the bands that changed.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// Sequence number among encoded frames.
    pub id: FrameId,
    /// When the source frame was captured.
    pub captured_at: Timestamp,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// The encoded bands, in band order (held inline: no allocation per frame).
    pub bands: ArrayVec<EncodedBand, MAX_BANDS>,
    /// Which band layout the bands belong to: 0 for the one the encoders were made with,
    /// one more after each [`BandEncoderSet::set_layout`].
    pub layout_generation: u32,
    /// Where the time went for this frame.
    pub timings: StageTimings,
    /// How many of the frame's rows changed since the frame before (the rows converted,
    /// rounded out to even rows): the share of the screen that moves, whatever the band
    /// layout (0 for refinement passes and refreshes).
    pub changed_rows: u32,
}

impl EncodedFrame {
    /// Encoded bytes over all bands.
    pub fn byte_len(&self) -> usize {
        self.bands.iter().map(|b| b.data.len()).sum()
    }
}

struct BandState {
    id: BandId,
    encoder: Encoder,
    arenas: Arenas,
    top: u32,
    height: u32,
    started: bool,
    wanted: bool,
    force_key: bool,
    /// Frames in which the band, still again, may yet be encoded anyway (see
    /// `mark_damaged`).
    refine: u8,
    /// The average quantiser of the band's last picture (0: not known).
    last_qp: u8,
    out: Option<EncodedBand>,
    error: Option<String>,
}

/// The encoders of all bands of one stream.
pub struct BandEncoderSet {
    layout: BandLayout,
    bands: Vec<BandState>,
    workers: Option<Arc<Workers>>,
    next_id: u64,
    /// What new encoders are made from.
    config: CodecConfig,
    max_qp: u8,
    bitrate_bps: u32,
    /// Bands whose encoder is still on an older quality floor or tuning (bit i = band i).
    renew: u32,
    /// How many times the layout changed.
    generation: u32,
}

impl std::fmt::Debug for BandEncoderSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BandEncoderSet")
            .field("layout", &self.layout)
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

/// Two buffers per band that encoded pictures are written into and sliced from as `Bytes`.
///
/// Slices stay valid while the network still sends them; once the current buffer's tail is
/// too short, the other one takes over. By then every slice of the other buffer has long been
/// dropped, so it is reclaimed in place: steady state allocates nothing.
struct Arenas {
    bufs: [BytesMut; 2],
    current: usize,
    /// Room guaranteed before each encode: a raw I420 band, more than any picture of it.
    reserve: usize,
}

impl Arenas {
    fn new(band_bytes: usize) -> Self {
        let reserve = band_bytes * 3 / 2;
        let buf = || {
            let mut b = BytesMut::with_capacity(reserve * 4);
            // The first split of a buffer allocates its shared reference count; doing it now
            // keeps that out of the steady state (the second buffer is first split only when
            // the band wraps, which may be long after start-up).
            drop(b.split());
            b
        };
        Self {
            bufs: [buf(), buf()],
            current: 0,
            reserve,
        }
    }

    /// The buffer to write the next picture into, with `reserve` bytes of room.
    fn next(&mut self) -> &mut BytesMut {
        if !self.bufs[self.current].try_reclaim(self.reserve) {
            self.current ^= 1;
            if !self.bufs[self.current].try_reclaim(self.reserve) {
                // Both still referenced: the consumer holds several buffers' worth of
                // pictures. Allocating is the only way not to stall the encoder.
                self.bufs[self.current].reserve(self.reserve);
            }
        }
        &mut self.bufs[self.current]
    }
}

impl BandEncoderSet {
    /// Encoders for a `width` x `height` stream. `workers`: the pool bands encode on in
    /// parallel (`None`: one after the other on the calling thread).
    pub fn new(
        width: u32,
        height: u32,
        config: &CodecConfig,
        workers: Option<Arc<Workers>>,
    ) -> Result<Self, CodecError> {
        config.validate(width, height)?;
        let layout = BandLayout::new(width, height, config.bands)?;
        let bands = new_bands(&layout, config, config.bitrate_bps, config.max_qp)?;
        Ok(Self {
            layout,
            bands,
            workers,
            next_id: 0,
            config: config.clone(),
            max_qp: config.max_qp,
            bitrate_bps: config.bitrate_bps,
            renew: 0,
            generation: 0,
        })
    }

    /// Cut frames into `spec`'s bands, encoded with `tuning`, from the next encode on, at
    /// the current bitrate and quality floor: new encoders, so every band of the new layout
    /// starts with a keyframe, and frames carry the next
    /// [`EncodedFrame::layout_generation`]. Fewer bands cost scrolling content far fewer
    /// bits (content moves within a band instead of entering it from a neighbour), more
    /// bands encode small changes faster.
    pub fn set_layout(&mut self, spec: BandSpec, tuning: ContentTuning) -> Result<(), CodecError> {
        let (width, height) = (self.layout.width(), self.layout.height());
        let config = CodecConfig {
            bands: spec,
            tuning,
            ..self.config.clone()
        };
        config.validate(width, height)?;
        let layout = BandLayout::new(width, height, spec)?;
        self.bands = new_bands(&layout, &config, self.bitrate_bps, self.max_qp)?;
        self.layout = layout;
        self.config = config;
        self.renew = 0;
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }

    /// Let the encoders go up to quantiser `max_qp` (the quality floor). OpenH264 only
    /// takes a new QP range when it starts, so each band gets a new encoder, whose first
    /// frame is a keyframe. Bands switch one per encoded frame, so the keyframes spread
    /// over several frames instead of one burst as large as the screen; unchanged bands
    /// keep their picture until they change.
    pub fn set_max_qp(&mut self, max_qp: u8) {
        let max_qp = max_qp.clamp(12, 51);
        if max_qp != self.max_qp {
            self.max_qp = max_qp;
            self.renew_all();
        }
    }

    /// Encode with `tuning` from now on (`Auto` is camera tuning here: the pipeline decides
    /// between the two). Like a new quality floor, each band gets a new encoder (so a
    /// keyframe), one band per encoded frame, and a band that does not change keeps its
    /// picture until it does.
    pub fn set_tuning(&mut self, tuning: ContentTuning) {
        if tuning != self.config.tuning {
            self.config.tuning = tuning;
            self.renew_all();
        }
    }

    /// Every band is to get a new encoder, one per encoded frame (see `switch_one_band`).
    fn renew_all(&mut self) {
        self.renew = (0..self.bands.len()).fold(0, |m, i| m | 1 << i);
    }

    /// Move one band still on an old quality floor or tuning to the new one, preferring a
    /// band that is about to be encoded anyway.
    fn switch_one_band(&mut self) -> Result<(), CodecError> {
        if self.renew == 0 {
            return Ok(());
        }
        let pending = |i: usize| self.renew & (1 << i) != 0;
        let pick = (0..self.bands.len())
            .find(|&i| pending(i) && self.bands[i].wanted)
            .or_else(|| (0..self.bands.len()).find(|&i| pending(i)));
        let Some(i) = pick else { return Ok(()) };
        let height = self.layout.height();
        let b = &mut self.bands[i];
        let share = band_share(self.bitrate_bps, b.height, height);
        b.encoder = new_encoder(&self.config, b.id.0, share, self.max_qp)?;
        b.started = false;
        self.renew &= !(1 << i);
        Ok(())
    }

    /// The band layout.
    pub fn layout(&self) -> &BandLayout {
        &self.layout
    }

    /// Mark the bands these rectangles touch as needing an encode.
    ///
    /// A band that stops changing is encoded again (the same picture) until its quantiser
    /// is down to [`REFINE_QP`] (or the configured ceiling, if coarser), for at most
    /// [`REFINE_PASSES`] frames: while it moved, its rate control spent little per frame,
    /// and a still band would otherwise keep that coarse picture until it changes again.
    /// With nothing moving, each repeated picture spends the frame's share of the rate on
    /// detail, so the picture converges as fast as the rate allows and then the band
    /// falls silent. A band that never moved (the first keyframe of a still screen) is
    /// not refined.
    pub fn mark_damaged(&mut self, rects: &[Rect]) {
        let mut damaged = 0u64;
        for r in rects {
            for i in self.layout.bands_touching(r) {
                damaged |= 1 << i;
            }
        }
        for (i, b) in self.bands.iter_mut().enumerate() {
            if damaged & (1 << i) != 0 {
                b.wanted = true;
                if b.started {
                    b.refine = REFINE_PASSES;
                }
            } else if b.refine > 0 {
                b.refine -= 1;
                b.wanted = true;
            }
        }
    }

    /// True while a band that stopped changing still has refinement passes to go.
    pub fn refining(&self) -> bool {
        self.bands.iter().any(|b| b.refine > 0)
    }

    /// Make the next encode of `band` (or of every band) a keyframe, even if it is unchanged.
    pub fn request_keyframe(&mut self, band: Option<BandId>) -> Result<(), CodecError> {
        match band {
            None => self.bands.iter_mut().for_each(|b| {
                b.wanted = true;
                b.force_key = true;
            }),
            Some(id) => {
                let count = self.bands.len();
                let b = self
                    .bands
                    .get_mut(id.0 as usize)
                    .ok_or(CodecError::NoSuchBand { band: id.0, count })?;
                b.wanted = true;
                b.force_key = true;
            }
        }
        Ok(())
    }

    /// Aim the bands together at `bps` from their next frame on, each its share by height.
    /// The encoders keep their state: no keyframe follows.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        use openh264_sys2::{
            ENCODER_OPTION_BITRATE as BITRATE, ENCODER_OPTION_MAX_BITRATE as MAX_BITRATE,
            SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
        };
        self.bitrate_bps = bps;
        let height = self.layout.height();
        for b in &mut self.bands {
            let share = band_share(bps, b.height, height).max(50_000);
            let share = i32::try_from(share).unwrap_or(i32::MAX / 2);
            if !b.started {
                // OpenH264 initialises an encoder at its first frame and takes no option
                // before: one that has not encoded yet is simply made anew at the new rate.
                b.encoder = new_encoder(&self.config, b.id.0, share as u64, self.max_qp)?;
                continue;
            }
            // OpenH264 refuses a target above the layer's maximum and a maximum below the
            // target, so the order depends on the direction: try the target first; if that
            // is refused, lift the maximum and try again. The maximum then sits at twice the
            // target, room for a keyframe. The maximum is the layer's own: set for "all
            // layers" it lands in a field the check against the target never reads, and
            // every raise above the rate the encoder was made with is refused.
            let target = |b: &mut BandState| {
                set_bitrate_option(&mut b.encoder, BITRATE, SPATIAL_LAYER_ALL, share)
            };
            let maximum = |b: &mut BandState| {
                set_bitrate_option(
                    &mut b.encoder,
                    MAX_BITRATE,
                    SPATIAL_LAYER_0,
                    share.saturating_mul(2),
                )
            };
            let mut rc = target(b);
            if rc != 0 {
                maximum(b);
                rc = target(b);
            }
            if rc != 0 {
                return Err(CodecError::Encoder {
                    band: b.id.0,
                    reason: format!("cannot set the bitrate to {share} bps (OpenH264 error {rc})"),
                });
            }
            maximum(b);
        }
        Ok(())
    }

    /// Plan the running bands' rate control for `fps` frames a second from their next
    /// picture on: OpenH264 gives each picture the bitrate over the frame rate it plans
    /// for. Bands not started yet keep the configured rate.
    pub fn set_frame_rate(&mut self, fps: u32) -> Result<(), CodecError> {
        let rate = fps.clamp(1, 240) as f32;
        for b in self.bands.iter_mut().filter(|b| b.started) {
            let mut rate = rate;
            // SAFETY: OpenH264 reads one float through the pointer during the call, and
            // `rate` outlives it.
            let rc = unsafe {
                b.encoder.raw_api().set_option(
                    openh264_sys2::ENCODER_OPTION_FRAME_RATE,
                    std::ptr::addr_of_mut!(rate).cast(),
                )
            };
            if rc != 0 {
                return Err(CodecError::Encoder {
                    band: b.id.0,
                    reason: format!("cannot plan for {fps} fps (OpenH264 error {rc})"),
                });
            }
        }
        Ok(())
    }

    /// True when some band is waiting to be encoded.
    pub fn has_work(&self) -> bool {
        self.bands.iter().any(|b| b.wanted)
    }

    /// Encode every band marked damaged or refreshed, from `image`. `None` when none was.
    pub fn encode(
        &mut self,
        image: &I420Image,
        captured_at: Timestamp,
    ) -> Result<Option<EncodedFrame>, CodecError> {
        if !self.has_work() {
            return Ok(None);
        }
        self.switch_one_band()?;
        let ts = openh264::Timestamp::from_millis(captured_at.as_micros() / 1000);
        // A ceiling coarser than `REFINE_QP` is as fine as a still band can get.
        let refine_to = REFINE_QP.max(self.config.min_qp);
        let run = |b: &mut BandState| {
            if b.wanted {
                encode_band(b, image, ts, refine_to);
            }
        };
        match &self.workers {
            Some(w) if self.bands.iter().filter(|b| b.wanted).count() > 1 => {
                w.pool().install(|| self.bands.par_iter_mut().for_each(run));
            }
            _ => self.bands.iter_mut().for_each(run),
        }
        let mut frame = EncodedFrame {
            id: FrameId(self.next_id),
            captured_at,
            width: self.layout.width(),
            height: self.layout.height(),
            bands: ArrayVec::new(),
            layout_generation: self.generation,
            timings: StageTimings::default(),
            changed_rows: 0,
        };
        for b in &mut self.bands {
            if let Some(reason) = b.error.take() {
                return Err(CodecError::Encoder {
                    band: b.id.0,
                    reason,
                });
            }
            if let Some(out) = b.out.take() {
                frame.bands.push(out);
            }
        }
        if frame.bands.is_empty() {
            return Ok(None);
        }
        self.next_id += 1;
        Ok(Some(frame))
    }
}

/// At most this many frames a band is encoded again after it stops changing: 4 s at 30
/// fps, where a 1080p page of text scrolled at 0.8 Mbit/s reached 41 dB (29.8 while it
/// moved, 34 after one second).
pub const REFINE_PASSES: u8 = 120;

/// A still band's picture is refined until its average quantiser is at most this: text
/// at this quantiser reads as sharp as the screen (over 40 dB on the scroll scene).
pub const REFINE_QP: u8 = 24;

/// A band's share of `bps`, by its height out of the frame's.
fn band_share(bps: u32, band_height: u32, height: u32) -> u64 {
    u64::from(bps) * u64::from(band_height) / u64::from(height.max(1))
}

/// Set one of OpenH264's bitrate options on `layer`; OpenH264's return code.
fn set_bitrate_option(encoder: &mut Encoder, option: i32, layer: i32, bps: i32) -> i32 {
    let mut info = openh264_sys2::SBitrateInfo {
        iLayer: layer,
        iBitrate: bps,
    };
    // SAFETY: the encoder is initialised (it has encoded a frame); both bitrate options read
    // one SBitrateInfo through the pointer during the call, and `info` outlives it. They
    // retune rate control only, no parameter the crate relies on.
    unsafe {
        encoder
            .raw_api()
            .set_option(option, std::ptr::addr_of_mut!(info).cast())
    }
}

/// A fresh encoder per band of `layout`, each wanting its first (key)frame.
fn new_bands(
    layout: &BandLayout,
    config: &CodecConfig,
    bitrate_bps: u32,
    max_qp: u8,
) -> Result<Vec<BandState>, CodecError> {
    let (width, height) = (layout.width(), layout.height());
    let mut bands = Vec::with_capacity(layout.count());
    for i in 0..layout.count() {
        let share = band_share(bitrate_bps, layout.band_height(i), height);
        let encoder = new_encoder(config, i as u8, share, max_qp)?;
        bands.push(BandState {
            id: BandId(i as u8),
            encoder,
            arenas: Arenas::new(width as usize * layout.band_height(i) as usize),
            top: layout.top(i),
            height: layout.band_height(i),
            started: false,
            // Every band starts with a keyframe, so the first frame encodes them all.
            wanted: true,
            force_key: false,
            refine: 0,
            last_qp: 0,
            out: None,
            error: None,
        });
    }
    Ok(bands)
}

/// One band's OpenH264 encoder, aiming at `share` bits per second within QP
/// `config.min_qp..=max_qp` (`max_qp` alone when it is the finer).
fn new_encoder(
    config: &CodecConfig,
    band: u8,
    share: u64,
    max_qp: u8,
) -> Result<Encoder, CodecError> {
    let cfg = EncoderConfig::new()
        .usage_type(match config.tuning {
            // `Auto` starts as camera tuning: the pipeline moves it (see `tuning.rs`).
            ContentTuning::Camera | ContentTuning::Auto => UsageType::CameraVideoRealTime,
            ContentTuning::Screen => UsageType::ScreenContentRealTime,
        })
        .bitrate(BitRate::from_bps(share.max(50_000) as u32))
        .max_frame_rate(FrameRate::from_hz(config.max_fps as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        // Never drop a picture: a skipped band would leave stale pixels on screen
        // until that band happened to change again.
        .skip_frames(false)
        .complexity(match config.effort {
            EncodeEffort::Low => Complexity::Low,
            EncodeEffort::Medium => Complexity::Medium,
            EncodeEffort::High => Complexity::High,
        })
        // A minimum of 0 makes OpenH264 discard both bounds for its defaults (max ~42), so
        // the quality floor would silently vanish; 12 is the lowest it accepts (and the
        // lowest `CodecConfig::validate` lets through).
        .qp(QpRange::new(config.min_qp.min(max_qp).max(12), max_qp))
        // Bands refresh on request (a viewer that lost data asks), not on a timer.
        .intra_frame_period(openh264::encoder::IntraFramePeriod::from_num_frames(0))
        .scene_change_detect(false)
        .background_detection(false)
        .num_threads(1)
        .vui(config.color.vui());
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), cfg).map_err(|e| {
        CodecError::Encoder {
            band,
            reason: e.to_string(),
        }
    })?;
    // OpenH264 prints its own warnings to stderr while it initialises (at the first frame),
    // before the wrapper quiets it: "bitrate can't be controlled ... without enabling skip
    // frame" for every band of every stream. We never skip on purpose and check every
    // return code, so quiet it from the start.
    let mut level: i32 = openh264_sys2::WELS_LOG_QUIET;
    // SAFETY: the trace level is the one option OpenH264 takes before initialisation; it
    // reads one int through the pointer during the call, and `level` outlives it.
    unsafe {
        encoder.raw_api().set_option(
            openh264_sys2::ENCODER_OPTION_TRACE_LEVEL,
            std::ptr::addr_of_mut!(level).cast(),
        );
    }
    Ok(encoder)
}

/// Encode band `b` of `image`; a picture at quantiser `refine_to` or finer ends the band's
/// refinement.
fn encode_band(b: &mut BandState, image: &I420Image, ts: openh264::Timestamp, refine_to: u8) {
    let start = std::time::Instant::now();
    if b.force_key && b.started {
        b.encoder.force_intra_frame();
    }
    let view = image.band(b.top, b.height);
    let stream = match b.encoder.encode_at(&view, ts) {
        Ok(s) => s,
        Err(e) => {
            b.error = Some(e.to_string());
            return;
        }
    };
    let keyframe = matches!(stream.frame_type(), FrameType::IDR | FrameType::I);
    let arena = b.arenas.next();
    for l in 0..stream.num_layers() {
        let Some(layer) = stream.layer(l) else { break };
        for n in 0..layer.nal_count() {
            if let Some(nal) = layer.nal_unit(n) {
                arena.extend_from_slice(nal);
            }
        }
    }
    let data = arena.split().freeze();
    if data.is_empty() {
        // Nothing came out (OpenH264 skipped the picture despite being told not to): keep
        // the band wanted so the next frame encodes it.
        return;
    }
    b.started = true;
    b.wanted = false;
    b.force_key = false;
    b.last_qp = last_frame_qp(&mut b.encoder);
    if b.last_qp != 0 && b.last_qp <= refine_to {
        // Fine enough already: nothing to refine.
        b.refine = 0;
    }
    b.out = Some(EncodedBand {
        band: b.id,
        keyframe,
        data,
        encode_us: start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
        qp: b.last_qp,
    });
}

/// The average quantiser of the picture `encoder` made last, as its statistics say (0
/// when they cannot be read).
fn last_frame_qp(encoder: &mut Encoder) -> u8 {
    let mut stats = openh264_sys2::SEncoderStatistics::default();
    // SAFETY: an initialised encoder (it has just encoded) fills the statistics struct
    // through the pointer during the call; `stats` outlives it.
    let rc = unsafe {
        encoder.raw_api().get_option(
            openh264_sys2::ENCODER_OPTION_GET_STATISTICS,
            std::ptr::addr_of_mut!(stats).cast(),
        )
    };
    if rc != 0 {
        return 0;
    }
    u8::try_from(stats.uiAverageFrameQP.min(51)).unwrap_or(0)
}

#[cfg(test)]
mod tests;
