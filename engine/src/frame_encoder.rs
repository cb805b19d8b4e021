//! The per-frame work of the target side, without threads: diff against the last processed
//! frame, convert the dirty rows, encode the damaged bands.
//!
//! The pipeline's encode thread drives it; the bench harness and tests drive it directly, so
//! all of them measure and check the same code.

use std::sync::Arc;
use std::time::Instant;

use deskwire_capture::{Frame, Rect, Timestamp};

use crate::codec::{BandEncoderSet, BandId, BandLayout, CodecError, EncodedFrame};
use crate::config::CodecConfig;
use crate::convert::{ColorSpace, I420Image};
use crate::diff::Differ;
use crate::workers::Workers;

/// Why one frame could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Colour conversion of the dirty rows failed.
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
    /// A band encoder failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// What one captured frame produced.
// `Changed` is large because an encoded frame holds its bands inline; boxing it would put an
// allocation on every frame, which the pipeline is built to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum FrameOutcome {
    /// Identical to the reference frame and no refresh pending: nothing to send. The caller
    /// keeps its reference.
    Unchanged {
        /// Time the diff took, in microseconds.
        diff_us: u32,
    },
    /// The picture changed: the frame just handled is the caller's new reference. `None` only
    /// if OpenH264 emitted nothing; those bands stay pending for the next frame.
    Changed(Option<EncodedFrame>),
}

/// Diff, convert and banded encode of one stream, driven one frame at a time.
#[derive(Debug)]
pub struct FrameEncoder {
    differ: Differ,
    image: I420Image,
    encoders: BandEncoderSet,
    color: ColorSpace,
}

impl FrameEncoder {
    /// For a `width` x `height` stream. `workers`: the pool bands encode on in parallel.
    pub fn new(
        width: u32,
        height: u32,
        config: &CodecConfig,
        workers: Option<Arc<Workers>>,
    ) -> Result<Self, CodecError> {
        Ok(Self {
            differ: Differ::new(width, height),
            image: I420Image::new(width, height),
            encoders: BandEncoderSet::new(width, height, config, workers)?,
            color: config.color,
        })
    }

    /// How frames are cut into bands.
    pub fn layout(&self) -> &BandLayout {
        self.encoders.layout()
    }

    /// The I420 picture the encoders were last fed.
    pub fn image(&self) -> &I420Image {
        &self.image
    }

    /// Aim the whole frame at `bps` from the next encode on.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        self.encoders.set_bitrate(bps)
    }

    /// Plan the running encoders' rate control for `fps` frames a second (see
    /// [`BandEncoderSet::set_frame_rate`]).
    pub fn set_frame_rate(&mut self, fps: u32) -> Result<(), CodecError> {
        self.encoders.set_frame_rate(fps)
    }

    /// Let quality fall to quantiser `max_qp` (see [`BandEncoderSet::set_max_qp`]).
    pub fn set_quality_floor(&mut self, max_qp: u8) {
        self.encoders.set_max_qp(max_qp);
    }

    /// Encode with `tuning` from the next encodes on, one band switched per encode (see
    /// [`BandEncoderSet::set_tuning`]).
    pub fn set_tuning(&mut self, tuning: crate::config::ContentTuning) {
        self.encoders.set_tuning(tuning);
    }

    /// Cut frames into `spec`'s bands, encoded with `tuning`, from the next encode on (see
    /// [`BandEncoderSet::set_layout`]): every band of the new layout starts with a keyframe.
    pub fn set_layout(
        &mut self,
        spec: crate::config::BandSpec,
        tuning: crate::config::ContentTuning,
    ) -> Result<(), CodecError> {
        self.encoders.set_layout(spec, tuning)
    }

    /// Make the next encode of `band` (or of every band) a keyframe.
    pub fn request_keyframe(&mut self, band: Option<BandId>) -> Result<(), CodecError> {
        self.encoders.request_keyframe(band)
    }

    /// Handle `cur`, compared against `reference` (the last frame that returned `Changed`;
    /// `None` for the first frame, which is encoded whole).
    pub fn handle_frame(
        &mut self,
        reference: Option<&Frame>,
        cur: &Frame,
    ) -> Result<FrameOutcome, FrameError> {
        let t = Instant::now();
        let whole = [Rect::new(0, 0, cur.width(), cur.height())];
        let rects = match reference {
            Some(prev) => self.differ.diff(prev, cur, cur.damage().hint()),
            None => &whole[..],
        };
        let diff_us = micros(t);
        if rects.is_empty() && !self.encoders.has_work() && !self.encoders.refining() {
            return Ok(FrameOutcome::Unchanged { diff_us });
        }
        let t = Instant::now();
        let changed_rows = self.image.convert_rects(cur, rects, self.color)?;
        self.encoders.mark_damaged(rects);
        let convert_us = micros(t);
        let mut out = self.encode_pending(cur.timestamp())?;
        if let Some(f) = &mut out {
            f.timings.diff_us = diff_us;
            f.timings.convert_us = convert_us;
            f.changed_rows = changed_rows;
        }
        Ok(FrameOutcome::Changed(out))
    }

    /// True while bands that stopped changing have refinement passes to go.
    pub fn refining(&self) -> bool {
        self.encoders.refining()
    }

    /// The next refinement pass of bands that stopped changing, from the current picture,
    /// when no new frame came (see [`BandEncoderSet::mark_damaged`]).
    pub fn refine(&mut self, captured_at: Timestamp) -> Result<Option<EncodedFrame>, CodecError> {
        if !self.encoders.refining() {
            return Ok(None);
        }
        self.encoders.mark_damaged(&[]);
        self.encode_pending(captured_at)
    }

    /// Encode whatever is pending (keyframe requests) from the current picture, even when no
    /// new frame came: a refresh on a static screen.
    pub fn encode_pending(
        &mut self,
        captured_at: Timestamp,
    ) -> Result<Option<EncodedFrame>, CodecError> {
        let t = Instant::now();
        let mut out = self.encoders.encode(&self.image, captured_at)?;
        if let Some(f) = &mut out {
            f.timings.encode_us = micros(t);
        }
        Ok(out)
    }
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}
