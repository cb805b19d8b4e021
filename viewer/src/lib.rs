//! The technician's program, `deskwire-viewer`, as a library: the window's input
//! translation, ad-hoc invitations, snapshots. Built on the
//! public `deskwire` API only.

pub mod adhoc;
pub mod window;

use std::path::Path;

use anyhow::{Context, Result};
use deskwire::{blend, RemoteCursor};
use deskwire_capture::Frame;

/// The window's picture: the remote screen (0RGB, a `u32` a pixel) with the target's
/// pointer on top. The pixels under the pointer are kept aside, so a move of the pointer
/// alone puts them back and draws it again, instead of converting the whole screen; a
/// new picture is converted once, with no second copy of the screen.
#[derive(Debug, Default)]
pub struct Canvas {
    /// What the window shows.
    shown: Vec<u32>,
    width: usize,
    height: usize,
    /// The pixels the pointer covers now, with what the screen has there.
    covered: Vec<(usize, u32)>,
}

impl Canvas {
    /// Take a new picture of the remote screen (BGRA) and draw `cursor` on it.
    pub fn set_frame(&mut self, frame: &Frame, cursor: Option<&RemoteCursor>) {
        self.shown.clear();
        for y in 0..frame.height() {
            // BGRA bytes read as a little-endian u32 are 0xAARRGGBB, the window's 0RGB
            // (the top byte is ignored).
            self.shown.extend(
                frame
                    .row(y)
                    .chunks_exact(4)
                    .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]])),
            );
        }
        (self.width, self.height) = (frame.width() as usize, frame.height() as usize);
        self.covered.clear();
        self.draw(cursor);
    }

    /// The pointer moved: put back what it covered and draw it where it is now.
    pub fn set_cursor(&mut self, cursor: Option<&RemoteCursor>) {
        for (i, under) in self.covered.drain(..) {
            self.shown[i] = under;
        }
        self.draw(cursor);
    }

    fn draw(&mut self, cursor: Option<&RemoteCursor>) {
        let Some(c) = cursor else { return };
        for (x, y, rgba) in c.pixels(self.width as u32, self.height as u32) {
            let i = y as usize * self.width + x as usize;
            let under = self.shown[i];
            let [b, g, r, _] = under.to_le_bytes();
            let [r, g, b] = blend([r, g, b], rgba);
            self.shown[i] = u32::from_le_bytes([b, g, r, 0]);
            self.covered.push((i, under));
        }
    }

    /// The picture to show, `width * height` pixels.
    pub fn pixels(&self) -> &[u32] {
        &self.shown
    }

    /// Its size.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }
}

/// Write a BGRA frame as an RGB PNG, with the target's pointer drawn on top when given.
pub fn write_png(path: &Path, frame: &Frame, cursor: Option<&RemoteCursor>) -> Result<()> {
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
    if let Some(c) = cursor {
        for (x, y, rgba) in c.pixels(frame.width(), frame.height()) {
            let i = (y as usize * frame.width() as usize + x as usize) * 3;
            let over = blend([rgb[i], rgb[i + 1], rgb[i + 2]], rgba);
            rgb[i..i + 3].copy_from_slice(&over);
        }
    }
    enc.write_header()?.write_image_data(&rgb)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deskwire_capture::CursorImage;

    use super::*;

    fn cursor_at(x: i32, y: i32) -> RemoteCursor {
        RemoteCursor {
            x,
            y,
            visible: true,
            shape: Some(Arc::new(CursorImage {
                serial: 1,
                width: 1,
                height: 2,
                hot_x: 0,
                hot_y: 0,
                // Opaque red over half-transparent white.
                rgba: vec![255, 0, 0, 255, 255, 255, 255, 128],
            })),
        }
    }

    #[test]
    fn the_canvas_draws_the_pointer_on_the_picture_and_restores_what_it_covered() {
        let mut frame = Frame::new(4, 4);
        frame.data_mut().fill(0);
        let mut canvas = Canvas::default();
        canvas.set_frame(&frame, Some(&cursor_at(1, 1)));
        assert_eq!(canvas.size(), (4, 4));
        let at = |c: &Canvas, x: usize, y: usize| c.pixels()[y * 4 + x] & 0xff_ffff;
        assert_eq!(at(&canvas, 1, 1), 0xff_0000);
        assert_eq!(at(&canvas, 1, 2), 0x80_8080);
        assert_eq!(at(&canvas, 0, 0), 0);
        // Moved to the bottom edge: the old place is black again, the tail is clipped.
        canvas.set_cursor(Some(&cursor_at(3, 3)));
        assert_eq!(at(&canvas, 1, 1), 0);
        assert_eq!(at(&canvas, 1, 2), 0);
        assert_eq!(at(&canvas, 3, 3), 0xff_0000);
        canvas.set_cursor(None);
        assert!(canvas.pixels().iter().all(|p| p & 0xff_ffff == 0));
    }
}
