//! The technician's program, `deskwire-viewer`, as a library: the window's input
//! translation, ad-hoc invitations, snapshots. Built on the
//! public `deskwire` API only.

pub mod adhoc;
pub mod window;

use std::path::Path;

use anyhow::{Context, Result};
use deskwire_capture::Frame;

/// Write a BGRA frame as an RGB PNG.
pub fn write_png(path: &Path, frame: &Frame) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), frame.width(), frame.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut rgb = Vec::with_capacity((frame.width() * frame.height() * 3) as usize);
    for y in 0..frame.height() {
        for px in frame.row(y).chunks_exact(4) {
            rgb.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    enc.write_header()?.write_image_data(&rgb)?;
    Ok(())
}
