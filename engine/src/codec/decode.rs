//! The viewer side: one OpenH264 decoder per band, reassembling a BGRA picture.

use deskwire_capture::Frame;
use openh264::decoder::{DecodedYUV, Decoder};
use openh264::formats::YUVSource;

use super::{BandId, BandLayout, CodecError};
use crate::config::BandSpec;
use crate::convert::{i420_to_bgra, ColorSpace};

/// Decoders for every band of a stream and the BGRA picture they paint.
pub struct BandDecoderSet {
    layout: BandLayout,
    color: ColorSpace,
    decoders: Vec<Decoder>,
    canvas: Frame,
}

impl std::fmt::Debug for BandDecoderSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BandDecoderSet")
            .field("layout", &self.layout)
            .field("color", &self.color)
            .finish_non_exhaustive()
    }
}

/// A band just decoded (already painted on the canvas): where it sits and its planes, for
/// quality checks.
pub struct DecodedBand<'a> {
    /// Which band.
    pub band: BandId,
    /// First frame row of the band.
    pub top: u32,
    /// Band width.
    pub width: u32,
    /// Band height.
    pub height: u32,
    yuv: DecodedYUV<'a>,
}

impl std::fmt::Debug for DecodedBand<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedBand")
            .field("band", &self.band)
            .field("top", &self.top)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl DecodedBand<'_> {
    /// Decoded luma, [`DecodedBand::y_stride`] bytes per row.
    pub fn y(&self) -> &[u8] {
        self.yuv.y()
    }
    /// Bytes per luma row.
    pub fn y_stride(&self) -> usize {
        self.yuv.strides().0
    }
}

impl BandDecoderSet {
    /// Decoders for a `width` x `height` stream cut as `bands`, colours as `color`.
    pub fn new(
        width: u32,
        height: u32,
        bands: BandSpec,
        color: ColorSpace,
    ) -> Result<Self, CodecError> {
        Self::with_layout(BandLayout::new(width, height, bands)?, color)
    }

    /// Decoders for a stream cut as `layout` (as the sender described it).
    pub fn with_layout(layout: BandLayout, color: ColorSpace) -> Result<Self, CodecError> {
        let (width, height) = (layout.width(), layout.height());
        let decoders = (0..layout.count())
            .map(|i| {
                Decoder::new().map_err(|e| CodecError::Decoder {
                    band: i as u8,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            layout,
            color,
            decoders,
            canvas: Frame::new(width, height),
        })
    }

    /// Start from `previous`'s picture when it is the same size: a stream restarted with
    /// another band layout keeps showing the screen until its first keyframes land,
    /// instead of black.
    pub fn keep_picture(&mut self, previous: &BandDecoderSet) {
        if previous.canvas.width() == self.canvas.width()
            && previous.canvas.height() == self.canvas.height()
        {
            self.canvas
                .data_mut()
                .copy_from_slice(previous.canvas.data());
        }
    }

    /// The band layout.
    pub fn layout(&self) -> &BandLayout {
        &self.layout
    }

    /// The reassembled picture (BGRA): every band as last decoded.
    pub fn canvas(&self) -> &Frame {
        &self.canvas
    }

    /// Decode one band's access unit and paint it onto the canvas.
    ///
    /// `Ok(None)` when the decoder produced no picture (it needs more data, e.g. a P-frame
    /// before any keyframe); malformed data is an error, never a panic.
    pub fn decode(
        &mut self,
        band: BandId,
        data: &[u8],
    ) -> Result<Option<DecodedBand<'_>>, CodecError> {
        let i = band.0 as usize;
        let count = self.decoders.len();
        let decoder = self.decoders.get_mut(i).ok_or(CodecError::NoSuchBand {
            band: band.0,
            count,
        })?;
        let picture = decoder.decode(data).map_err(|e| CodecError::Decoder {
            band: band.0,
            reason: e.to_string(),
        })?;
        let Some(yuv) = picture else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (want_w, want_h) = (self.layout.width(), self.layout.band_height(i));
        if (w as u32, h as u32) != (want_w, want_h) {
            return Err(CodecError::WrongSize {
                band: band.0,
                got_w: w as u32,
                got_h: h as u32,
                want_w,
                want_h,
            });
        }
        let top = self.layout.top(i);
        i420_to_bgra(
            (yuv.y(), yuv.u(), yuv.v()),
            yuv.strides(),
            want_w,
            want_h,
            &mut self.canvas,
            top,
            self.color,
        )?;
        Ok(Some(DecodedBand {
            band,
            top,
            width: want_w,
            height: want_h,
            yuv,
        }))
    }
}
