//! The portable backend: whole-monitor screenshots through `xcap`.
//!
//! Slow (a new connection and a full copy per frame) and blind to changes, but it works where
//! the fast X11 path does not (remote displays, servers without MIT-SHM).

use std::fmt;

use crate::{CaptureError, CaptureOutcome, Frame, PixelFormat, Source, Timestamp};

fn backend(reason: impl fmt::Display) -> CaptureError {
    CaptureError::Backend {
        backend: "xcap",
        reason: reason.to_string(),
    }
}

/// Captures one monitor (the primary, else the first) through `xcap`, using `$DISPLAY`.
pub struct XcapSource {
    monitor: xcap::Monitor,
    width: u32,
    height: u32,
}

impl fmt::Debug for XcapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XcapSource")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl XcapSource {
    /// Pick the primary monitor, or the first one when none is marked primary (as under Xvfb).
    pub fn open() -> Result<Self, CaptureError> {
        let monitors = xcap::Monitor::all().map_err(|e| match e {
            #[cfg(target_os = "linux")]
            xcap::XCapError::XcbConnError(e) => CaptureError::NoDisplay {
                display: None,
                reason: e.to_string(),
            },
            e => backend(format_args!("listing monitors failed: {e}")),
        })?;
        let index = monitors
            .iter()
            .position(|m| m.is_primary().unwrap_or(false))
            .unwrap_or(0);
        let monitor = monitors
            .into_iter()
            .nth(index)
            .ok_or_else(|| backend("the display has no monitor"))?;
        let width = monitor.width().map_err(backend)?;
        let height = monitor.height().map_err(backend)?;
        if width == 0 || height == 0 {
            return Err(backend(format_args!("monitor is {width}x{height}")));
        }
        let name = monitor.name().unwrap_or_default();
        tracing::debug!(%name, width, height, "xcap capture ready");
        Ok(Self {
            monitor,
            width,
            height,
        })
    }
}

impl Source for XcapSource {
    fn name(&self) -> &'static str {
        "xcap"
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn alloc_frame(&mut self) -> Result<Frame, CaptureError> {
        Ok(Frame::new(self.width, self.height))
    }

    fn capture(
        &mut self,
        frame: &mut Frame,
        now: Timestamp,
    ) -> Result<CaptureOutcome, CaptureError> {
        let (w, h) = (self.width, self.height);
        if (frame.width(), frame.height()) != (w, h) || frame.format() != PixelFormat::Bgra {
            return Err(CaptureError::ForeignFrame {
                got_w: frame.width(),
                got_h: frame.height(),
                want_w: w,
                want_h: h,
                what: "xcap fills BGRA frames of the monitor's size",
            });
        }
        let image = self.monitor.capture_image().map_err(backend)?;
        if (image.width(), image.height()) != (w, h) {
            let err = CaptureError::SizeChanged {
                old_w: w,
                old_h: h,
                new_w: image.width(),
                new_h: image.height(),
            };
            tracing::info!(%err, "xcap monitor resized");
            (self.width, self.height) = (image.width(), image.height());
            return Err(err);
        }

        let row_bytes = w as usize * 4;
        let stride = frame.stride();
        let rows = frame.data_mut().chunks_mut(stride);
        for (dst, src) in rows.zip(image.as_raw().chunks_exact(row_bytes)) {
            for (d, s) in dst[..row_bytes]
                .chunks_exact_mut(4)
                .zip(src.chunks_exact(4))
            {
                d.copy_from_slice(&[s[2], s[1], s[0], s[3]]);
            }
        }
        frame.set_timestamp(now);
        frame.damage_mut().set_unknown();
        Ok(CaptureOutcome::Fresh)
    }
}
