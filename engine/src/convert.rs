//! BGRA -> I420, incrementally: only dirty rectangles touch the persistent I420 image.
//!
//! The encoder reads bands of this image through [`I420Band`] views, without copying.

use deskwire_capture::{Frame, Rect};
use openh264::formats::YUVSource;
use yuv::{
    BufferStoreMut, YuvConversionMode, YuvPlanarImage, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};

/// Colour matrix and range. Both ends must use the same; the encoder writes it into the
/// stream's VUI so any standard decoder (a browser's included) shows the same colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorSpace {
    /// BT.709, limited (16-235) range: the HD default every H.264 decoder handles.
    #[default]
    Bt709Limited,
    /// BT.709, full range.
    Bt709Full,
    /// BT.601, limited range.
    Bt601Limited,
}

impl ColorSpace {
    pub(crate) fn yuv(self) -> (YuvRange, YuvStandardMatrix) {
        match self {
            Self::Bt709Limited => (YuvRange::Limited, YuvStandardMatrix::Bt709),
            Self::Bt709Full => (YuvRange::Full, YuvStandardMatrix::Bt709),
            Self::Bt601Limited => (YuvRange::Limited, YuvStandardMatrix::Bt601),
        }
    }

    pub(crate) fn vui(self) -> openh264::encoder::VuiConfig {
        use openh264::encoder::VuiConfig;
        match self {
            Self::Bt709Limited => VuiConfig::bt709(),
            Self::Bt709Full => VuiConfig::bt709_full(),
            Self::Bt601Limited => VuiConfig::bt601(),
        }
    }
}

/// Errors of the conversion stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The frame's size differs from the image's.
    #[error("frame is {got_w}x{got_h} but the I420 image is {want_w}x{want_h}")]
    SizeMismatch {
        /// Frame width.
        got_w: u32,
        /// Frame height.
        got_h: u32,
        /// Image width.
        want_w: u32,
        /// Image height.
        want_h: u32,
    },
    /// The colour conversion library refused the buffers.
    #[error("colour conversion failed: {0}")]
    Yuv(String),
}

/// A persistent I420 picture: full-resolution Y, half-resolution U and V, tight strides.
#[derive(Debug, Clone)]
pub struct I420Image {
    width: u32,
    height: u32,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Scratch for merging dirty row ranges, kept to avoid allocating per frame.
    stripes: Vec<(u32, u32)>,
}

impl I420Image {
    /// A black image (even sizes only: chroma is subsampled 2x2).
    pub fn new(width: u32, height: u32) -> Self {
        debug_assert!(
            width.is_multiple_of(2) && height.is_multiple_of(2),
            "validated upstream"
        );
        let (w, h) = (width as usize, height as usize);
        Self {
            width,
            height,
            y: vec![16; w * h],
            u: vec![128; w * h / 4],
            v: vec![128; w * h / 4],
            stripes: Vec::with_capacity(64),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// The luma plane, `width` bytes per row.
    pub fn y_plane(&self) -> &[u8] {
        &self.y
    }
    /// The Cb plane, `width / 2` bytes per row.
    pub fn u_plane(&self) -> &[u8] {
        &self.u
    }
    /// The Cr plane, `width / 2` bytes per row.
    pub fn v_plane(&self) -> &[u8] {
        &self.v
    }

    /// Convert the whole frame.
    pub fn convert_all(&mut self, frame: &Frame, color: ColorSpace) -> Result<(), ConvertError> {
        let all = Rect::new(0, 0, self.width, self.height);
        self.convert_rects(frame, std::slice::from_ref(&all), color)
            .map(|_| ())
    }

    /// Convert the rows `rects` cover, full width, from `frame`.
    ///
    /// Whole rows rather than the rectangles themselves: the conversion library's SIMD and
    /// scalar paths round differently depending on where a row segment starts, so only
    /// full-width stripes (starting on even rows) are byte-identical to a full conversion.
    /// A typed glyph still costs 16 rows, not a frame. Returns how many rows were
    /// converted: the rows the rectangles cover, each once, rounded out to even rows.
    pub fn convert_rects(
        &mut self,
        frame: &Frame,
        rects: &[Rect],
        color: ColorSpace,
    ) -> Result<u32, ConvertError> {
        if frame.width() != self.width || frame.height() != self.height {
            return Err(ConvertError::SizeMismatch {
                got_w: frame.width(),
                got_h: frame.height(),
                want_w: self.width,
                want_h: self.height,
            });
        }
        self.stripes.clear();
        for r in rects {
            let r = r.clip_to(self.width, self.height);
            if !r.is_empty() {
                // Even start and end keep every 2x2 chroma block whole.
                let y1 = (r.bottom() + 1).min(self.height) & !1;
                self.stripes.push((r.y & !1, y1));
            }
        }
        self.stripes.sort_unstable();
        let (mut i, mut rows) = (0, 0);
        while i < self.stripes.len() {
            let (y0, mut y1) = self.stripes[i];
            i += 1;
            while i < self.stripes.len() && self.stripes[i].0 <= y1 {
                y1 = y1.max(self.stripes[i].1);
                i += 1;
            }
            self.convert_stripe(frame, y0, y1, color)?;
            rows += y1 - y0;
        }
        Ok(rows)
    }

    fn convert_stripe(
        &mut self,
        frame: &Frame,
        y0: u32,
        y1: u32,
        color: ColorSpace,
    ) -> Result<(), ConvertError> {
        let (range, matrix) = color.yuv();
        let (w, stride) = (self.width as usize, frame.stride());
        let (y0, y1) = (y0 as usize, y1 as usize);
        // Every slice ends exactly at the stripe: the library converts as many rows as the
        // slices hold, whatever `height` says.
        let (c0, c1) = (y0 / 2 * (w / 2), y1 / 2 * (w / 2));
        let mut planes = YuvPlanarImageMut {
            y_plane: BufferStoreMut::Borrowed(&mut self.y[y0 * w..y1 * w]),
            y_stride: self.width,
            u_plane: BufferStoreMut::Borrowed(&mut self.u[c0..c1]),
            u_stride: self.width / 2,
            v_plane: BufferStoreMut::Borrowed(&mut self.v[c0..c1]),
            v_stride: self.width / 2,
            width: self.width,
            height: (y1 - y0) as u32,
        };
        yuv::bgra_to_yuv420(
            &mut planes,
            &frame.data()[y0 * stride..y1 * stride],
            stride as u32,
            range,
            matrix,
            YuvConversionMode::Balanced,
        )
        .map_err(|e| ConvertError::Yuv(e.to_string()))
    }

    /// A view of rows `y0..y0 + height` for the encoder (`y0` and `height` even).
    pub fn band(&self, y0: u32, height: u32) -> I420Band<'_> {
        debug_assert!(
            y0.is_multiple_of(2) && height.is_multiple_of(2) && y0 + height <= self.height
        );
        let w = self.width as usize;
        let (y0, h) = (y0 as usize, height as usize);
        I420Band {
            width: w,
            height: h,
            y: &self.y[y0 * w..(y0 + h) * w],
            u: &self.u[y0 / 2 * w / 2..(y0 + h) / 2 * w / 2],
            v: &self.v[y0 / 2 * w / 2..(y0 + h) / 2 * w / 2],
        }
    }
}

/// A horizontal slice of an [`I420Image`], fed to an encoder without copying.
#[derive(Debug, Clone, Copy)]
pub struct I420Band<'a> {
    width: usize,
    height: usize,
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
}

impl YUVSource for I420Band<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }
    fn y(&self) -> &[u8] {
        self.y
    }
    fn u(&self) -> &[u8] {
        self.u
    }
    fn v(&self) -> &[u8] {
        self.v
    }
}

/// Write an I420 picture (any strides) as BGRA into `dst` starting at row `y0`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn i420_to_bgra(
    planes: (&[u8], &[u8], &[u8]),
    strides: (usize, usize, usize),
    width: u32,
    height: u32,
    dst: &mut Frame,
    y0: u32,
    color: ColorSpace,
) -> Result<(), ConvertError> {
    let (range, matrix) = color.yuv();
    let img = YuvPlanarImage {
        y_plane: planes.0,
        y_stride: strides.0 as u32,
        u_plane: planes.1,
        u_stride: strides.1 as u32,
        v_plane: planes.2,
        v_stride: strides.2 as u32,
        width,
        height,
    };
    let stride = dst.stride();
    let rows = y0 as usize..(y0 + height) as usize;
    let out = &mut dst.data_mut()[rows.start * stride..rows.end * stride];
    yuv::yuv420_to_bgra(&img, out, stride as u32, range, matrix)
        .map_err(|e| ConvertError::Yuv(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy_frame(w: u32, h: u32, seed: u8) -> Frame {
        let mut f = Frame::new(w, h);
        for (i, b) in f.data_mut().iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 7) as u8;
        }
        f
    }

    #[test]
    fn incremental_convert_equals_full_convert() {
        let (w, h) = (96, 64);
        let a = noisy_frame(w, h, 1);
        let mut b = Frame::new(w, h);
        b.data_mut().copy_from_slice(a.data());
        // Change a few odd-placed rectangles in b.
        let rects = [
            Rect::new(3, 5, 7, 9),
            Rect::new(40, 33, 21, 17),
            Rect::new(95, 63, 1, 1),
        ];
        for r in &rects {
            for y in r.y..r.bottom() {
                for x in r.x..r.right() {
                    let i = y as usize * b.stride() + x as usize * 4;
                    b.data_mut()[i..i + 3].copy_from_slice(&[200, (x * 3) as u8, (y * 5) as u8]);
                }
            }
        }
        for color in [
            ColorSpace::Bt709Limited,
            ColorSpace::Bt601Limited,
            ColorSpace::Bt709Full,
        ] {
            let mut incremental = I420Image::new(w, h);
            incremental.convert_all(&a, color).unwrap();
            incremental.convert_rects(&b, &rects, color).unwrap();
            let mut full = I420Image::new(w, h);
            full.convert_all(&b, color).unwrap();
            // Compared without Debug output: a mismatch would print megabytes.
            let same = incremental.y_plane() == full.y_plane()
                && incremental.u_plane() == full.u_plane()
                && incremental.v_plane() == full.v_plane();
            assert!(
                same,
                "{color:?}: incremental conversion differs from full conversion"
            );
        }
    }

    #[test]
    fn rows_outside_the_dirty_stripes_are_left_alone() {
        let (w, h) = (64, 64);
        let mut img = I420Image::new(w, h);
        img.convert_all(&noisy_frame(w, h, 1), ColorSpace::default())
            .unwrap();
        let before = img.clone();
        // A completely different frame, but only rows 16..32 are declared dirty.
        img.convert_rects(
            &noisy_frame(w, h, 77),
            &[Rect::new(8, 16, 8, 16)],
            ColorSpace::default(),
        )
        .unwrap();
        let row = w as usize;
        assert_ne!(
            img.y_plane()[16 * row..32 * row],
            before.y_plane()[16 * row..32 * row]
        );
        assert_eq!(img.y_plane()[..16 * row], before.y_plane()[..16 * row]);
        assert_eq!(img.y_plane()[32 * row..], before.y_plane()[32 * row..]);
        let c = row / 2;
        assert_eq!(img.u_plane()[16 * c..], before.u_plane()[16 * c..]);
        assert_eq!(img.v_plane()[..8 * c], before.v_plane()[..8 * c]);
    }

    #[test]
    fn converted_rows_count_each_row_once() {
        let (w, h) = (1920, 2160);
        let f = Frame::new(w, h);
        let mut img = I420Image::new(w, h);
        let mut rows =
            |rects: &[Rect]| img.convert_rects(&f, rects, ColorSpace::default()).unwrap();
        assert_eq!(rows(&[]), 0);
        assert_eq!(rows(&[Rect::new(0, 0, 10, 16)]), 16);
        // Overlapping and side-by-side rectangles share rows.
        let r = [
            Rect::new(0, 10, 5, 20),
            Rect::new(100, 20, 5, 20),
            Rect::new(0, 2000, 1920, 160),
        ];
        assert_eq!(rows(&r), 30 + 160);
    }

    #[test]
    fn bands_view_the_right_rows() {
        let f = noisy_frame(32, 32, 9);
        let mut img = I420Image::new(32, 32);
        img.convert_all(&f, ColorSpace::default()).unwrap();
        let band = img.band(16, 16);
        assert_eq!(band.dimensions(), (32, 16));
        assert_eq!(band.y(), &img.y_plane()[16 * 32..]);
        assert_eq!(band.u(), &img.u_plane()[8 * 16..]);
    }

    #[test]
    fn a_frame_of_another_size_is_refused() {
        let mut img = I420Image::new(32, 32);
        let e = img
            .convert_all(&Frame::new(64, 32), ColorSpace::default())
            .unwrap_err();
        assert!(e.to_string().contains("64x32"), "{e}");
    }

    #[test]
    fn grey_survives_a_round_trip_exactly_enough() {
        let mut f = Frame::new(16, 16);
        for px in f.data_mut().chunks_exact_mut(4) {
            px.copy_from_slice(&[128, 128, 128, 255]);
        }
        let mut img = I420Image::new(16, 16);
        img.convert_all(&f, ColorSpace::default()).unwrap();
        let mut back = Frame::new(16, 16);
        let b = img.band(0, 16);
        i420_to_bgra(
            (b.y(), b.u(), b.v()),
            b.strides(),
            16,
            16,
            &mut back,
            0,
            ColorSpace::default(),
        )
        .unwrap();
        for px in back.data().chunks_exact(4) {
            assert!(px[..3].iter().all(|c| c.abs_diff(128) <= 2), "{px:?}");
        }
    }
}
