//! The screen's pointer: where it is and what it looks like, read beside the picture.
//!
//! The pointer is not baked into captured frames (X11 grabs leave it out): a viewer draws
//! it on top, so it moves without a video frame and its shape is sent once per change.

use std::fmt;
use std::sync::Arc;

/// The largest cursor side sent as it is; larger images are cropped around the hotspot.
/// 96 x 96 RGBA is 36 KiB, inside the smallest data-channel message a peer must accept.
pub const MAX_CURSOR_SIDE: u16 = 96;

/// A cursor image: straight (not premultiplied) RGBA, row by row, `width * height * 4`
/// bytes, with the hotspot (the pixel that points) inside it.
#[derive(Clone, PartialEq, Eq)]
pub struct CursorImage {
    /// Changes whenever the shape changes (the X server's cursor serial).
    pub serial: u32,
    /// Width in pixels, 1..=[`MAX_CURSOR_SIDE`].
    pub width: u16,
    /// Height in pixels, 1..=[`MAX_CURSOR_SIDE`].
    pub height: u16,
    /// Hotspot column.
    pub hot_x: u16,
    /// Hotspot row.
    pub hot_y: u16,
    /// The pixels.
    pub rgba: Vec<u8>,
}

impl fmt::Debug for CursorImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pixels are kilobytes of noise in a log line.
        f.debug_struct("CursorImage")
            .field("serial", &self.serial)
            .field("size", &format_args!("{}x{}", self.width, self.height))
            .field("hot", &(self.hot_x, self.hot_y))
            .finish_non_exhaustive()
    }
}

impl CursorImage {
    /// Build from premultiplied ARGB words (how X servers hand cursors out), cropping an
    /// image larger than [`MAX_CURSOR_SIDE`] to a window around the hotspot.
    pub fn from_premultiplied_argb(
        serial: u32,
        width: u16,
        height: u16,
        hot: (u16, u16),
        argb: &[u32],
    ) -> Option<Self> {
        if width == 0 || height == 0 || argb.len() < usize::from(width) * usize::from(height) {
            return None;
        }
        let (x0, w) = crop(width, hot.0);
        let (y0, h) = crop(height, hot.1);
        let mut rgba = Vec::with_capacity(usize::from(w) * usize::from(h) * 4);
        for row in y0..y0 + h {
            let start = usize::from(row) * usize::from(width) + usize::from(x0);
            for &p in &argb[start..start + usize::from(w)] {
                rgba.extend_from_slice(&unpremultiply(p));
            }
        }
        Some(Self {
            serial,
            width: w,
            height: h,
            hot_x: hot.0.min(width - 1) - x0,
            hot_y: hot.1.min(height - 1) - y0,
            rgba,
        })
    }

    /// The pixel at (`x`, `y`) as straight RGBA, if inside.
    pub fn pixel(&self, x: u16, y: u16) -> Option<[u8; 4]> {
        (x < self.width && y < self.height).then(|| {
            let i = (usize::from(y) * usize::from(self.width) + usize::from(x)) * 4;
            [
                self.rgba[i],
                self.rgba[i + 1],
                self.rgba[i + 2],
                self.rgba[i + 3],
            ]
        })
    }
}

/// Where along one side a crop to [`MAX_CURSOR_SIDE`] starts, keeping the hotspot inside
/// and as central as the image allows; and the cropped length.
fn crop(len: u16, hot: u16) -> (u16, u16) {
    if len <= MAX_CURSOR_SIDE {
        return (0, len);
    }
    let start = hot
        .saturating_sub(MAX_CURSOR_SIDE / 2)
        .min(len - MAX_CURSOR_SIDE);
    (start, MAX_CURSOR_SIDE)
}

fn unpremultiply(p: u32) -> [u8; 4] {
    let a = (p >> 24) as u8;
    if a == 0 {
        return [0; 4];
    }
    let un = |c: u32| ((c & 0xff) * 255 + u32::from(a) / 2) / u32::from(a);
    [
        un(p >> 16).min(255) as u8,
        un(p >> 8).min(255) as u8,
        un(p).min(255) as u8,
        a,
    ]
}

/// What a source read of the pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerState {
    /// Column of the hotspot on the screen (may lie outside it on a multi-screen server).
    pub x: i32,
    /// Row of the hotspot.
    pub y: i32,
    /// Whether the pointer is on this screen and shown.
    pub visible: bool,
    /// The current shape's serial ([`CursorImage::serial`]).
    pub serial: u32,
    /// The shape, when it changed since the last read (and on the first read).
    pub shape: Option<Arc<CursorImage>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premultiplied_pixels_come_out_straight() {
        // Half-transparent pure red, premultiplied: 0x80 alpha, 0x80 red.
        let argb = [0x8080_0000u32, 0xff00_ff00, 0x0000_0000, 0x4020_1008];
        let c = CursorImage::from_premultiplied_argb(7, 2, 2, (1, 1), &argb).unwrap();
        assert_eq!(c.pixel(0, 0), Some([255, 0, 0, 0x80]));
        assert_eq!(c.pixel(1, 0), Some([0, 255, 0, 255]));
        assert_eq!(c.pixel(0, 1), Some([0, 0, 0, 0]));
        assert_eq!(c.pixel(1, 1), Some([0x80, 0x40, 0x20, 0x40]));
        assert_eq!(c.pixel(2, 0), None);
        assert_eq!((c.hot_x, c.hot_y, c.serial), (1, 1, 7));
    }

    #[test]
    fn a_huge_cursor_is_cropped_around_its_hotspot() {
        let side = 256u16;
        let argb: Vec<u32> = (0..u32::from(side) * u32::from(side))
            .map(|i| 0xff00_0000 | i)
            .collect();
        let c = CursorImage::from_premultiplied_argb(1, side, side, (200, 10), &argb).unwrap();
        assert_eq!((c.width, c.height), (MAX_CURSOR_SIDE, MAX_CURSOR_SIDE));
        assert_eq!(c.rgba.len(), 96 * 96 * 4);
        // The hotspot still points at the pixel it pointed at.
        let i = 10 * u32::from(side) + 200;
        let want = [(i >> 16) as u8, (i >> 8) as u8, i as u8, 255];
        assert_eq!(c.pixel(c.hot_x, c.hot_y), Some(want));
    }

    #[test]
    fn an_empty_or_short_image_is_refused() {
        assert!(CursorImage::from_premultiplied_argb(1, 0, 4, (0, 0), &[]).is_none());
        assert!(CursorImage::from_premultiplied_argb(1, 2, 2, (0, 0), &[0; 3]).is_none());
    }
}
