//! The target's pointer on the wire: its shape once per change on the reliable `control`
//! channel, its position on the `video` channel, where it leaves ahead of queued ordered
//! messages and a lost one is soon replaced by the next.
//!
//! ```text
//! shape     u8 version, u8 0x2a, u32 serial, u16 width, u16 height, u16 hot_x, u16 hot_y,
//!           width*height*4 bytes of straight RGBA, row by row
//! position  u8 version, u8 0x2b, u32 sent_us, u32 serial, i32 x, i32 y, u8 visible
//! ```
//! All little-endian, so a browser reads both with a `DataView` and puts the pixels in an
//! `ImageData` as they are.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use deskwire_capture::{CursorImage, MAX_CURSOR_SIDE};

use super::{invalid, kind, Reader, WireError};

/// Where the target's pointer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorPosition {
    /// When it was read, microseconds on the target's session clock, wrapping: positions
    /// arrive unordered, and an older one than the newest seen is dropped.
    pub sent_us: u32,
    /// The shape it shows ([`CursorImage::serial`]).
    pub serial: u32,
    /// Hotspot column on the target's screen.
    pub x: i32,
    /// Hotspot row.
    pub y: i32,
    /// Whether it is shown.
    pub visible: bool,
}

pub(super) fn encode_shape(c: &CursorImage, out: &mut BytesMut) {
    out.reserve(14 + c.rgba.len());
    out.put_u8(kind::CURSOR_SHAPE);
    out.put_u32_le(c.serial);
    out.put_u16_le(c.width);
    out.put_u16_le(c.height);
    out.put_u16_le(c.hot_x);
    out.put_u16_le(c.hot_y);
    out.put_slice(&c.rgba);
}

pub(super) fn decode_shape(r: &mut Reader<'_>) -> Result<Arc<CursorImage>, WireError> {
    let serial = r.u32()?;
    let (width, height) = (r.u16()?, r.u16()?);
    let (hot_x, hot_y) = (r.u16()?, r.u16()?);
    let side = 1..=MAX_CURSOR_SIDE;
    if !side.contains(&width) || !side.contains(&height) {
        return Err(invalid(
            "cursor size",
            format!("{width}x{height} (expected 1..={MAX_CURSOR_SIDE} each way)"),
        ));
    }
    if hot_x >= width || hot_y >= height {
        return Err(invalid(
            "cursor hotspot",
            format!("({hot_x}, {hot_y}) outside {width}x{height}"),
        ));
    }
    let rgba = r
        .bytes(usize::from(width) * usize::from(height) * 4)?
        .to_vec();
    Ok(Arc::new(CursorImage {
        serial,
        width,
        height,
        hot_x,
        hot_y,
        rgba,
    }))
}

pub(super) fn encode_position(p: &CursorPosition, out: &mut BytesMut) {
    out.put_u8(kind::CURSOR_POSITION);
    out.put_u32_le(p.sent_us);
    out.put_u32_le(p.serial);
    out.put_i32_le(p.x);
    out.put_i32_le(p.y);
    out.put_u8(u8::from(p.visible));
}

pub(super) fn decode_position(r: &mut Reader<'_>) -> Result<CursorPosition, WireError> {
    Ok(CursorPosition {
        sent_us: r.u32()?,
        serial: r.u32()?,
        x: r.i32()?,
        y: r.i32()?,
        visible: r.bool("cursor visible")?,
    })
}
