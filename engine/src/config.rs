//! Validated settings for the codec and the pipeline.
//!
//! Every setter takes and returns the config by value; [`CodecConfig::validate`] and
//! [`PipelineConfig::validate`] reject impossible values with a message that names the
//! allowed range, before any thread or encoder exists.

use crate::convert::ColorSpace;

/// Most bands a frame may be cut into (the encoded-frame record holds them inline).
pub const MAX_BANDS: usize = 32;

/// How the frame is cut into horizontal bands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandSpec {
    /// This many bands of (nearly) equal height; `Count(1)` is classic full-frame H.264.
    Count(u32),
    /// Bands of exactly this many rows (a multiple of 16), the last one taking the remainder.
    Height(u32),
}

/// What the encoder is tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentTuning {
    /// OpenH264's camera mode: about twice as fast per picture as screen mode.
    Camera,
    /// OpenH264's screen-content mode: desktop content in far fewer bits (a dragged window
    /// 1.05x x264's bits against camera mode's 4.4x, `deskwire-bench bits`).
    Screen,
    /// Camera mode, and screen mode while the path carries the configured rate and the
    /// pipeline's encode thread has room for it; see `tuning.rs`. Used without the
    /// pipeline (a bare [`crate::FrameEncoder`]), it is camera mode.
    Auto,
}

/// How hard OpenH264 works on each picture: its complexity mode.
///
/// Medium is the default: on a terminal window dragged across the screen it spent 38 % fewer
/// bits than Low at 3.6 dB more Y-PSNR (`deskwire-bench bits`, QP floor 28), for 0-20 %
/// more encode time; on text scrolling and a browser page the two were within a few per cent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeEffort {
    /// Mode decisions by SAD alone: the cheapest, and on moving text the costliest in bits.
    Low,
    /// Mode decisions by SATD.
    Medium,
    /// Medium's decisions and more intra modes.
    High,
}

/// Codec settings shared by the band encoders.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecConfig {
    /// How to cut frames into bands.
    pub bands: BandSpec,
    /// Target bitrate of the whole frame in bits per second (split among bands by height).
    pub bitrate_bps: u32,
    /// The frame rate the rate controller plans for.
    pub max_fps: u32,
    /// Highest quantiser the rate controller may use: the quality floor. Lower = better.
    pub max_qp: u8,
    /// Lowest quantiser the rate controller may use: the quality ceiling. On a fast path
    /// rate control otherwise spends its share on quality nobody sees: a dragged window
    /// at 58.7 dB for 1.10x x264's bits (CRF 23: 51.0 dB); at most 20, 51.5 dB for 0.90x
    /// (BENCHMARKS.md, "A quality ceiling"). A still band is refined down to quantiser
    /// 24 (`REFINE_QP`), or to this if it is coarser. A floor set finer than this wins:
    /// the encoders then use the floor alone.
    pub min_qp: u8,
    /// Encoder tuning.
    pub tuning: ContentTuning,
    /// How hard the encoder works per picture.
    pub effort: EncodeEffort,
    /// Colour matrix and range, identical at both ends and signalled in the stream's VUI.
    pub color: ColorSpace,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            bands: BandSpec::Count(DEFAULT_BANDS),
            bitrate_bps: 8_000_000,
            max_fps: 60,
            max_qp: 28,
            min_qp: DEFAULT_MIN_QP,
            tuning: ContentTuning::Auto,
            effort: EncodeEffort::Medium,
            color: ColorSpace::default(),
        }
    }
}

/// The default quality ceiling (see [`CodecConfig::min_qp`]): where deskwire's pictures
/// of a dragged window match x264's at CRF 23.
pub const DEFAULT_MIN_QP: u8 = 20;

/// The default band count, chosen from the stage bench (see BENCHMARKS.md and ARCHITECTURE.md).
pub const DEFAULT_BANDS: u32 = 8;

/// An invalid setting, with the range that would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Width or height out of range or odd.
    #[error("invalid frame size {width}x{height} (expected even sizes, width 16..=3840, height 16..=2160)")]
    FrameSize {
        /// Width given.
        width: u32,
        /// Height given.
        height: u32,
    },
    /// Zero bands, or more than the frame or the record can hold.
    #[error("invalid band count {count} (expected 1..={max} for a frame {height} rows high: one band needs at least 16 rows)")]
    BandCount {
        /// Bands asked for.
        count: u32,
        /// Most allowed for this frame.
        max: u32,
        /// Frame height.
        height: u32,
    },
    /// Band height zero, not a multiple of 16, or giving too many bands.
    #[error("invalid band height {band_height} (expected a multiple of 16, at least {min} for a frame {height} rows high)")]
    BandHeight {
        /// Band height asked for.
        band_height: u32,
        /// Smallest allowed for this frame.
        min: u32,
        /// Frame height.
        height: u32,
    },
    /// Bitrate out of range.
    #[error("invalid band tops {tops:?} for a frame {height} rows high (expected 1..=32 increasing multiples of 16 starting at 0)")]
    BandTops {
        /// Tops given.
        tops: Vec<u32>,
        /// Frame height.
        height: u32,
    },
    /// The bitrate is out of range.
    #[error("invalid bitrate {0} bps (expected 100000..=200000000)")]
    Bitrate(u32),
    /// Frame rate out of range.
    #[error("invalid frame rate {0} (expected 1..=240)")]
    FrameRate(u32),
    /// Quality floor out of range.
    #[error("invalid max_qp {0} (expected 10..=51)")]
    MaxQp(u8),
    /// Quality ceiling out of range.
    #[error("invalid min_qp {0} (expected 12..=51: OpenH264 takes no finer minimum, H.264 has no coarser quantiser)")]
    MinQp(u8),
    /// Pool too small to keep capture from waiting on the encoder.
    #[error("invalid pool size {0} (expected 3..=16: one frame captured, one waiting, one compared against)")]
    PoolFrames(usize),
    /// Thread count out of range.
    #[error("invalid encoder thread count {0} (expected 1..=64)")]
    Threads(usize),
    /// Output queue depth out of range.
    #[error("invalid output depth {0} (expected 1..=64)")]
    OutputDepth(usize),
}

impl CodecConfig {
    /// Set the band split.
    pub fn bands(mut self, bands: BandSpec) -> Self {
        self.bands = bands;
        self
    }
    /// Set the bitrate.
    pub fn bitrate_bps(mut self, bps: u32) -> Self {
        self.bitrate_bps = bps;
        self
    }
    /// Set the planned frame rate.
    pub fn max_fps(mut self, fps: u32) -> Self {
        self.max_fps = fps;
        self
    }
    /// Set the quality floor.
    pub fn max_qp(mut self, qp: u8) -> Self {
        self.max_qp = qp;
        self
    }
    /// Set the quality ceiling.
    pub fn min_qp(mut self, qp: u8) -> Self {
        self.min_qp = qp;
        self
    }
    /// Set the encoder tuning.
    pub fn tuning(mut self, t: ContentTuning) -> Self {
        self.tuning = t;
        self
    }
    /// Set how hard the encoder works per picture.
    pub fn effort(mut self, e: EncodeEffort) -> Self {
        self.effort = e;
        self
    }

    /// Check the settings for a `width` x `height` stream.
    pub fn validate(&self, width: u32, height: u32) -> Result<(), ConfigError> {
        crate::codec::BandLayout::new(width, height, self.bands)?;
        if !(100_000..=200_000_000).contains(&self.bitrate_bps) {
            return Err(ConfigError::Bitrate(self.bitrate_bps));
        }
        if !(1..=240).contains(&self.max_fps) {
            return Err(ConfigError::FrameRate(self.max_fps));
        }
        if !(10..=51).contains(&self.max_qp) {
            return Err(ConfigError::MaxQp(self.max_qp));
        }
        if !(12..=51).contains(&self.min_qp) {
            return Err(ConfigError::MinQp(self.min_qp));
        }
        Ok(())
    }
}

/// Pipeline settings: the codec plus threads, pacing and queue sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Codec settings.
    pub codec: CodecConfig,
    /// Capture rate; `None` captures as fast as the encoder takes frames (benchmarks).
    pub capture_fps: Option<u32>,
    /// Frames in the capture pool.
    pub pool_frames: usize,
    /// Threads encoding bands in parallel.
    pub encoder_threads: usize,
    /// Encoded frames that may wait for the consumer before the encoder waits.
    pub output_depth: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            codec: CodecConfig::default(),
            capture_fps: Some(60),
            pool_frames: 4,
            encoder_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            output_depth: 2,
        }
    }
}

impl PipelineConfig {
    /// Set the codec settings.
    pub fn codec(mut self, codec: CodecConfig) -> Self {
        self.codec = codec;
        self
    }
    /// Set the capture rate (`None`: flat out).
    pub fn capture_fps(mut self, fps: Option<u32>) -> Self {
        self.capture_fps = fps;
        self
    }
    /// Set the number of encoder threads.
    pub fn encoder_threads(mut self, n: usize) -> Self {
        self.encoder_threads = n;
        self
    }
    /// Set the pool size.
    pub fn pool_frames(mut self, n: usize) -> Self {
        self.pool_frames = n;
        self
    }
    /// Set the output queue depth.
    pub fn output_depth(mut self, n: usize) -> Self {
        self.output_depth = n;
        self
    }

    /// Check the settings for a `width` x `height` source.
    pub fn validate(&self, width: u32, height: u32) -> Result<(), ConfigError> {
        self.codec.validate(width, height)?;
        if let Some(fps) = self.capture_fps {
            if !(1..=240).contains(&fps) {
                return Err(ConfigError::FrameRate(fps));
            }
        }
        if !(3..=16).contains(&self.pool_frames) {
            return Err(ConfigError::PoolFrames(self.pool_frames));
        }
        if !(1..=64).contains(&self.encoder_threads) {
            return Err(ConfigError::Threads(self.encoder_threads));
        }
        if !(1..=64).contains(&self.output_depth) {
            return Err(ConfigError::OutputDepth(self.output_depth));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &PipelineConfig, w: u32, h: u32) -> String {
        c.validate(w, h).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_at_common_sizes() {
        for (w, h) in [(1920, 1080), (3840, 2160), (1280, 720), (640, 480)] {
            PipelineConfig::default().validate(w, h).unwrap();
        }
    }

    #[test]
    fn every_bad_setting_names_its_allowed_range() {
        let d = PipelineConfig::default;
        let c = |c: CodecConfig| d().codec(c);
        let cases: Vec<(PipelineConfig, u32, u32, &str)> = vec![
            (d(), 1921, 1080, "expected even sizes"),
            (d(), 1920, 1079, "expected even sizes"),
            (d(), 0, 1080, "width 16..=3840"),
            (d(), 7680, 4320, "width 16..=3840"),
            (
                c(CodecConfig::default().bands(BandSpec::Count(0))),
                1920,
                1080,
                "expected 1..=32",
            ),
            (
                c(CodecConfig::default().bands(BandSpec::Count(10))),
                64,
                64,
                "expected 1..=4",
            ),
            (
                c(CodecConfig::default().bands(BandSpec::Height(100))),
                1920,
                1080,
                "multiple of 16",
            ),
            (
                c(CodecConfig::default().bands(BandSpec::Height(0))),
                1920,
                1080,
                "multiple of 16",
            ),
            (
                c(CodecConfig::default().bands(BandSpec::Height(16))),
                1920,
                1080,
                "at least 48",
            ),
            (
                c(CodecConfig::default().bitrate_bps(0)),
                1920,
                1080,
                "100000..=200000000",
            ),
            (c(CodecConfig::default().max_fps(0)), 1920, 1080, "1..=240"),
            (c(CodecConfig::default().max_qp(60)), 1920, 1080, "10..=51"),
            (
                c(CodecConfig::default().min_qp(11)),
                1920,
                1080,
                "min_qp 11 (expected 12..=51",
            ),
            (d().capture_fps(Some(1000)), 1920, 1080, "1..=240"),
            (d().pool_frames(2), 1920, 1080, "3..=16"),
            (d().encoder_threads(0), 1920, 1080, "1..=64"),
            (d().output_depth(0), 1920, 1080, "1..=64"),
        ];
        for (cfg, w, h, want) in cases {
            let e = err(&cfg, w, h);
            assert!(e.contains(want), "{cfg:?} at {w}x{h}: {e:?} lacks {want:?}");
        }
    }
}
