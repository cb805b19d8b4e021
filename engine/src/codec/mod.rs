//! Banded H.264: the frame is cut into horizontal bands, each a plain H.264 stream of its own.
//!
//! Encode cost follows damage (typing re-encodes one band, not the frame) and bands encode in
//! parallel. Each band's stream is standard Annex-B H.264, decodable by any decoder, a
//! browser's included.

mod decode;
mod encode;

pub use decode::{BandDecoderSet, DecodedBand};
pub use encode::{BandEncoderSet, EncodedBand, EncodedFrame};

use std::ops::Range;

use deskwire_capture::Rect;

use crate::config::{BandSpec, ConfigError, MAX_BANDS};

/// Index of a band, counted from the top of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BandId(pub u8);

/// Sequence number of an encoded frame, increasing by one per encoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FrameId(pub u64);

/// Errors of the codec stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// OpenH264 refused to create or run an encoder.
    #[error("H.264 encoder for band {band}: {reason}")]
    Encoder {
        /// Which band.
        band: u8,
        /// What OpenH264 said.
        reason: String,
    },
    /// The bitstream of a band could not be decoded.
    #[error("H.264 decoder for band {band}: {reason}")]
    Decoder {
        /// Which band.
        band: u8,
        /// What OpenH264 said.
        reason: String,
    },
    /// A band id beyond the layout.
    #[error("band {band} does not exist (the layout has {count} bands)")]
    NoSuchBand {
        /// Band asked for.
        band: u8,
        /// Bands in the layout.
        count: usize,
    },
    /// A decoded picture does not have the band's size.
    #[error("band {band} decoded to {got_w}x{got_h}, expected {want_w}x{want_h}")]
    WrongSize {
        /// Which band.
        band: u8,
        /// Decoded width.
        got_w: u32,
        /// Decoded height.
        got_h: u32,
        /// Band width.
        want_w: u32,
        /// Band height.
        want_h: u32,
    },
    /// Converting a decoded band to BGRA failed.
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
}

/// Where each band sits in the frame: band `i` covers rows `top(i)..top(i) + height(i)`.
///
/// Bands start on macroblock rows (multiples of 16); only the last may have a height that is
/// not a multiple of 16 (H.264 crops it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandLayout {
    width: u32,
    height: u32,
    tops: Vec<u32>,
}

impl BandLayout {
    /// The layout for a `width` x `height` frame, validated.
    pub fn new(width: u32, height: u32, spec: BandSpec) -> Result<Self, ConfigError> {
        if !(16..=3840).contains(&width)
            || !(16..=2160).contains(&height)
            || !width.is_multiple_of(2)
            || !height.is_multiple_of(2)
        {
            return Err(ConfigError::FrameSize { width, height });
        }
        let mb_rows = height.div_ceil(16);
        let max = mb_rows.min(MAX_BANDS as u32);
        let count = match spec {
            BandSpec::Count(n) => {
                if n == 0 || n > max {
                    return Err(ConfigError::BandCount {
                        count: n,
                        max,
                        height,
                    });
                }
                n
            }
            BandSpec::Height(h) => {
                let min = mb_rows.div_ceil(MAX_BANDS as u32) * 16;
                if h == 0 || h % 16 != 0 || h < min {
                    return Err(ConfigError::BandHeight {
                        band_height: h,
                        min,
                        height,
                    });
                }
                let n = height.div_ceil(h);
                let tops = (0..n).map(|i| i * h).collect();
                return Ok(Self {
                    width,
                    height,
                    tops,
                });
            }
        };
        // Spread macroblock rows as evenly as possible: the first `extra` bands get one more.
        let (base, extra) = (mb_rows / count, mb_rows % count);
        let mut tops = Vec::with_capacity(count as usize);
        let mut top = 0;
        for i in 0..count {
            tops.push(top * 16);
            top += base + u32::from(i < extra);
        }
        Ok(Self {
            width,
            height,
            tops,
        })
    }

    /// The layout with bands starting at `tops`, as a peer describes it; validated like
    /// [`BandLayout::new`] because the values come from the network.
    pub fn from_tops(width: u32, height: u32, tops: &[u32]) -> Result<Self, ConfigError> {
        Self::new(width, height, BandSpec::Count(1))?;
        let bad = || ConfigError::BandTops {
            tops: tops.iter().copied().take(MAX_BANDS + 1).collect(),
            height,
        };
        if tops.is_empty() || tops.len() > MAX_BANDS || tops[0] != 0 {
            return Err(bad());
        }
        let ok =
            tops.windows(2).all(|w| w[0] < w[1]) && tops.iter().all(|&t| t % 16 == 0 && t < height);
        if !ok {
            return Err(bad());
        }
        Ok(Self {
            width,
            height,
            tops: tops.to_vec(),
        })
    }

    /// Every band's first row.
    pub fn tops(&self) -> &[u32] {
        &self.tops
    }

    /// Frame width.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Frame height.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Number of bands.
    pub fn count(&self) -> usize {
        self.tops.len()
    }
    /// First row of band `i`.
    pub fn top(&self, i: usize) -> u32 {
        self.tops[i]
    }
    /// Rows in band `i`.
    pub fn band_height(&self, i: usize) -> u32 {
        self.tops.get(i + 1).copied().unwrap_or(self.height) - self.tops[i]
    }
    /// The band's area as a rectangle.
    pub fn rect(&self, i: usize) -> Rect {
        Rect::new(0, self.top(i), self.width, self.band_height(i))
    }

    /// The bands a rectangle overlaps.
    pub fn bands_touching(&self, r: &Rect) -> Range<usize> {
        if r.is_empty() {
            return 0..0;
        }
        // partition_point: first band whose top is beyond the row.
        let first = self.tops.partition_point(|&t| t <= r.y) - 1;
        let last = self.tops.partition_point(|&t| t < r.bottom());
        first..last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_from_tops_accepts_what_new_makes_and_rejects_nonsense() {
        let made = BandLayout::new(1920, 1080, BandSpec::Count(8)).unwrap();
        assert_eq!(
            BandLayout::from_tops(1920, 1080, made.tops()).unwrap(),
            made
        );
        for bad in [
            &[][..],
            &[16],
            &[0, 0],
            &[0, 32, 16],
            &[0, 8],
            &[0, 1088],
            &[0; 33],
        ] {
            assert!(BandLayout::from_tops(1920, 1080, bad).is_err(), "{bad:?}");
        }
        assert!(BandLayout::from_tops(9999, 1080, &[0]).is_err());
    }

    #[test]
    fn bands_cover_the_frame_on_macroblock_rows() {
        for (h, n) in [
            (1080, 1),
            (1080, 4),
            (1080, 8),
            (1080, 32),
            (2160, 16),
            (64, 4),
        ] {
            let l = BandLayout::new(1920, h, BandSpec::Count(n)).unwrap();
            assert_eq!(l.count(), n as usize);
            let mut next = 0;
            for i in 0..l.count() {
                assert_eq!(l.top(i), next);
                assert_eq!(l.top(i) % 16, 0);
                assert!(l.band_height(i) > 0 && l.band_height(i).is_multiple_of(2));
                next += l.band_height(i);
            }
            assert_eq!(next, h);
        }
    }

    #[test]
    fn band_height_spec_gives_fixed_bands_and_a_remainder() {
        let l = BandLayout::new(1920, 1080, BandSpec::Height(256)).unwrap();
        assert_eq!(l.count(), 5);
        assert_eq!(l.band_height(4), 1080 - 4 * 256);
    }

    #[test]
    fn rectangles_map_to_the_bands_they_touch() {
        let l = BandLayout::new(1920, 1080, BandSpec::Height(128)).unwrap();
        assert_eq!(l.bands_touching(&Rect::new(0, 0, 10, 10)), 0..1);
        assert_eq!(l.bands_touching(&Rect::new(5, 127, 10, 2)), 0..2);
        assert_eq!(l.bands_touching(&Rect::new(5, 128, 10, 128)), 1..2);
        assert_eq!(l.bands_touching(&Rect::new(0, 1070, 10, 10)), 8..9);
        assert_eq!(l.bands_touching(&Rect::new(0, 0, 1920, 1080)), 0..9);
        assert_eq!(l.bands_touching(&Rect::default()), 0..0);
    }
}
