//! The `Source` trait and choosing a backend by name.

use std::fmt;
use std::str::FromStr;

use crate::synthetic::{Scene, SyntheticSource};
use crate::{Frame, PointerState, Timestamp};

/// What a capture call produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureOutcome {
    /// The frame now holds the current screen, with its timestamp and damage hint set.
    Fresh,
    /// The source knows nothing changed since its last fresh frame; the frame is untouched.
    Unchanged,
}

/// What [`Source::wait`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Something changed (the picture, the pointer or its shape): capture now.
    News,
    /// Nothing changed before the timeout.
    Timeout,
    /// This source cannot tell when its screen changes: capture at a steady pace.
    Unsupported,
}

/// Errors of the capture stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// No X display could be opened (unset `$DISPLAY`, no server, no permission).
    #[error("cannot open X display {display:?}: {reason}")]
    NoDisplay {
        /// The display name tried (`None`: from `$DISPLAY`).
        display: Option<String>,
        /// What the connection attempt said.
        reason: String,
    },
    /// The X server lacks an extension this backend needs.
    #[error("X server lacks the {0} extension")]
    MissingExtension(&'static str),
    /// The X server or the portable backend failed during capture.
    #[error("capture backend {backend} failed: {reason}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The screen changed size; the caller must rebuild frames and everything sized by them.
    #[error("screen size changed from {old_w}x{old_h} to {new_w}x{new_h}")]
    SizeChanged {
        /// Old width.
        old_w: u32,
        /// Old height.
        old_h: u32,
        /// New width.
        new_w: u32,
        /// New height.
        new_h: u32,
    },
    /// A frame from another source (wrong size or storage) was passed in.
    #[error("frame {got_w}x{got_h} does not fit this source ({want_w}x{want_h}, {what})")]
    ForeignFrame {
        /// Frame width.
        got_w: u32,
        /// Frame height.
        got_h: u32,
        /// Source width.
        want_w: u32,
        /// Source height.
        want_h: u32,
        /// Why it does not fit.
        what: &'static str,
    },
    /// The source specification or its settings are invalid.
    #[error("invalid source: {0}")]
    Invalid(String),
    /// This backend was not compiled in.
    #[error("capture backend {0} is not available in this build")]
    Unavailable(&'static str),
}

/// A screen (or a stand-in for one) that fills frames on demand.
///
/// Sources own no thread and read no clock: the driver calls [`Source::capture`] when it
/// wants a frame and passes `now`. A source that wraps another must forward
/// [`Source::wait`] and [`Source::pointer`] too: their defaults mean "cannot tell", and a
/// session would then tick at its frame rate and show no pointer.
pub trait Source: Send {
    /// Short backend name (`x11`, `xcap`, `synthetic`).
    fn name(&self) -> &'static str;
    /// Screen size in pixels.
    fn size(&self) -> (u32, u32);
    /// Make a frame this source can fill (may be backed by shared memory).
    fn alloc_frame(&mut self) -> Result<Frame, CaptureError>;
    /// Fill `frame` with the current screen if it changed.
    fn capture(
        &mut self,
        frame: &mut Frame,
        now: Timestamp,
    ) -> Result<CaptureOutcome, CaptureError>;
    /// Where the pointer is, with its shape when that changed since the last call; `None`
    /// when this source cannot tell (then no pointer is shown). Called after
    /// [`Source::capture`], which reads the events that say the shape changed.
    fn pointer(&mut self) -> Result<Option<PointerState>, CaptureError> {
        Ok(None)
    }
    /// Block until the screen or the pointer may have changed, or `timeout` passed, so a
    /// still screen costs no wake-ups and a change is captured when it happens rather than
    /// at the next tick. Sources that cannot tell return [`Waited::Unsupported`] at once.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<Waited, CaptureError> {
        let _ = timeout;
        Ok(Waited::Unsupported)
    }
}

/// Which source to open, as written on a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// X11 with MIT-SHM when a display is reachable, else xcap.
    Auto,
    /// The fast X11 backend (MIT-SHM + DAMAGE).
    X11,
    /// The portable xcap backend.
    Xcap,
    /// A deterministic synthetic scene.
    Synthetic(Scene),
}

impl FromStr for SourceSpec {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "x11" => Ok(Self::X11),
            "xcap" => Ok(Self::Xcap),
            "synthetic" => Ok(Self::Synthetic(Scene::Typing)),
            _ => match s.strip_prefix("synthetic:") {
                Some(scene) => Ok(Self::Synthetic(scene.parse()?)),
                None => Err(CaptureError::Invalid(format!(
                    "unknown source {s:?} (expected auto, x11, xcap, synthetic or synthetic:<{}>)",
                    Scene::NAMES.join("|")
                ))),
            },
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::X11 => f.write_str("x11"),
            Self::Xcap => f.write_str("xcap"),
            Self::Synthetic(s) => write!(f, "synthetic:{s}"),
        }
    }
}

/// Settings used when opening a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// X display name; `None` uses `$DISPLAY`.
    pub display: Option<String>,
    /// Size of synthetic scenes (real screens have their own).
    pub width: u32,
    /// Height of synthetic scenes.
    pub height: u32,
    /// Seed of synthetic scenes.
    pub seed: u64,
    /// Whether synthetic scenes report damage hints (as X11 DAMAGE would) or leave the diff
    /// stage to find changes on its own (as with xcap).
    pub synthetic_hints: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            display: None,
            width: 1920,
            height: 1080,
            seed: 1,
            synthetic_hints: true,
        }
    }
}

/// Open the source `spec` describes.
///
/// `Auto` tries X11 (MIT-SHM) first and falls back to xcap, logging why.
pub fn open(spec: &SourceSpec, opts: &OpenOptions) -> Result<Box<dyn Source>, CaptureError> {
    match spec {
        SourceSpec::Synthetic(scene) => Ok(Box::new(
            SyntheticSource::new(*scene, opts.width, opts.height, opts.seed)?
                .with_hints(opts.synthetic_hints),
        )),
        SourceSpec::X11 => open_x11(opts),
        SourceSpec::Xcap => open_xcap(),
        SourceSpec::Auto => match open_x11(opts) {
            Ok(s) => Ok(s),
            Err(e) => {
                tracing::info!(error = %e, "fast X11 capture unavailable, using xcap");
                open_xcap()
            }
        },
    }
}

#[cfg(target_os = "linux")]
fn open_x11(opts: &OpenOptions) -> Result<Box<dyn Source>, CaptureError> {
    Ok(Box::new(crate::x11::X11Source::open(
        opts.display.as_deref(),
    )?))
}

#[cfg(not(target_os = "linux"))]
fn open_x11(_: &OpenOptions) -> Result<Box<dyn Source>, CaptureError> {
    Err(CaptureError::Unavailable("x11"))
}

#[cfg(feature = "xcap")]
fn open_xcap() -> Result<Box<dyn Source>, CaptureError> {
    Ok(Box::new(crate::portable::XcapSource::open()?))
}

#[cfg(not(feature = "xcap"))]
fn open_xcap() -> Result<Box<dyn Source>, CaptureError> {
    Err(CaptureError::Unavailable("xcap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "auto",
            "x11",
            "xcap",
            "synthetic:scroll",
            "synthetic:static",
        ] {
            assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "synthetic".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic(Scene::Typing)
        );
    }

    #[test]
    fn unknown_specs_name_the_choices() {
        let e = "webcam".parse::<SourceSpec>().unwrap_err().to_string();
        assert!(e.contains("x11") && e.contains("synthetic:<"), "{e}");
        let e = "synthetic:dance"
            .parse::<SourceSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("typing"), "{e}");
    }
}
