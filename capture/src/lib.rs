//! Screen sources for deskwire: fast X11 (MIT-SHM + DAMAGE), portable (xcap) and
//! deterministic synthetic scenes.
//!
//! A [`Source`] fills [`Frame`]s (4 bytes per pixel, BGRA/BGRX) that circulate through a
//! [`FramePool`]. Sources own no thread and read no clock; the caller passes `now`. This crate
//! knows nothing of codecs or wire formats.
#![deny(missing_docs)]

mod frame;
mod pointer;
mod pool;
#[cfg(feature = "xcap")]
mod portable;
mod source;
pub mod synthetic;
#[cfg(target_os = "linux")]
mod x11;

pub use frame::{Damage, Frame, PixelFormat, Rect, Timestamp};
pub use pointer::{CursorImage, PointerState, MAX_CURSOR_SIDE};
pub use pool::{FramePool, PooledFrame};
#[cfg(feature = "xcap")]
pub use portable::XcapSource;
pub use source::{open, CaptureError, CaptureOutcome, OpenOptions, Source, SourceSpec, Waited};
#[cfg(target_os = "linux")]
pub use x11::X11Source;
