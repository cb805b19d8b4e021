//! The deskwire engine: diff, convert and banded H.264 codec stages, and the pipeline that
//! runs them on named threads.
//!
//! ```no_run
//! use deskwire_capture::{open, OpenOptions, SourceSpec};
//! use deskwire_engine::{BandDecoderSet, Pipeline, PipelineConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = open(&"synthetic:typing".parse()?, &OpenOptions::default())?;
//! let config = PipelineConfig::default();
//! let codec = config.codec.clone();
//! let pipeline = Pipeline::start(source, config)?;
//! let layout = pipeline.layout().clone();
//! let mut viewer = BandDecoderSet::new(layout.width(), layout.height(), codec.bands, codec.color)?;
//! for frame in pipeline.output().iter().take(30) {
//!     for band in &frame.bands {
//!         viewer.decode(band.band, &band.data)?;
//!     }
//! }
//! pipeline.shutdown()?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod codec;
pub mod config;
pub mod convert;
pub mod diff;
pub mod frame_encoder;
pub mod pipeline;
pub mod quality;
pub mod stats;
mod tuning;
mod workers;

pub use codec::{
    BandDecoderSet, BandEncoderSet, BandId, BandLayout, CodecError, EncodedBand, EncodedFrame,
    FrameId,
};
pub use config::{BandSpec, CodecConfig, ConfigError, ContentTuning, EncodeEffort, PipelineConfig};
pub use convert::{ColorSpace, ConvertError, I420Image};
pub use diff::Differ;
pub use frame_encoder::{FrameEncoder, FrameError, FrameOutcome};
pub use pipeline::Pipeline;
pub use stats::{PipelineStats, StageTimings};
pub use workers::Workers;

/// Every error the media pipeline reports, by stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The capture source failed.
    #[error(transparent)]
    Capture(#[from] deskwire_capture::CaptureError),
    /// Colour conversion failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A frame could not be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// A pipeline thread panicked (a bug: please report it).
    #[error("a pipeline thread panicked")]
    ThreadPanicked,
}
