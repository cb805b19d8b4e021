//! Frames, rectangles and damage: the vocabulary every stage after capture speaks.

use std::fmt;

/// Microseconds on a monotonic clock chosen by whoever drives the source.
///
/// Sources never read a clock: the driver passes `now` in, so tests and benches control time
/// and later stages can carry the value across the wire for latency measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// A timestamp `micros` microseconds after the driver's epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Microseconds after the driver's epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
}

/// An axis-aligned rectangle in pixels. `w == 0 || h == 0` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Rect {
    /// A rectangle from its top-left corner and size.
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self { x, y, w, h }
    }

    /// True when the rectangle covers no pixel.
    pub const fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    /// One past the right edge.
    pub const fn right(&self) -> u32 {
        self.x + self.w
    }

    /// One past the bottom edge.
    pub const fn bottom(&self) -> u32 {
        self.y + self.h
    }

    /// Number of pixels covered.
    pub const fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    /// The overlap of two rectangles, or `None` when they do not overlap.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = self.right().min(other.right());
        let y1 = self.bottom().min(other.bottom());
        (x0 < x1 && y0 < y1).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
    }

    /// The smallest rectangle containing both (an empty side is ignored).
    pub fn bounding(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x0 = self.x.min(other.x);
        let y0 = self.y.min(other.y);
        let x1 = self.right().max(other.right());
        let y1 = self.bottom().max(other.bottom());
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    /// True when the pixel `(px, py)` lies inside.
    pub const fn contains(&self, px: u32, py: u32) -> bool {
        px >= self.x && px < self.right() && py >= self.y && py < self.bottom()
    }

    /// This rectangle clipped to a `width` x `height` surface (possibly empty).
    pub fn clip_to(&self, width: u32, height: u32) -> Rect {
        self.intersect(&Rect::new(0, 0, width, height))
            .unwrap_or_default()
    }
}

/// What the source knows about which pixels changed since the previous fresh frame it delivered.
///
/// Hints may be larger than the real change (X11 DAMAGE reports drawn areas, not changed
/// pixels) but never smaller: the diff stage trusts them to bound its comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    known: bool,
    rects: Vec<Rect>,
}

impl Damage {
    /// Nothing is known: any pixel may have changed.
    pub fn unknown() -> Self {
        Self::default()
    }

    /// The hint, if the source gave one: `Some(&[])` means "nothing changed".
    pub fn hint(&self) -> Option<&[Rect]> {
        self.known.then_some(self.rects.as_slice())
    }

    /// Forget the hint (keeps the allocation for reuse).
    pub fn set_unknown(&mut self) {
        self.known = false;
        self.rects.clear();
    }

    /// Start a fresh, empty, known hint (keeps the allocation for reuse).
    pub fn set_known_empty(&mut self) {
        self.known = true;
        self.rects.clear();
        // Room for all that `absorb` keeps, taken at a frame's first capture rather than at
        // whichever later supersede first needs it: frames are recycled, so this allocates
        // once per frame, at start-up.
        self.rects.reserve(Self::ABSORB_LIMIT);
    }

    /// Add a changed rectangle to a known hint; ignored when the hint is unknown or `r` empty.
    pub fn push(&mut self, r: Rect) {
        if self.known && !r.is_empty() {
            self.rects.push(r);
        }
    }

    /// Most rectangles [`Damage::absorb`] leaves in a hint before collapsing it.
    pub const ABSORB_LIMIT: usize = 64;

    /// Fold in damage from a frame that was superseded before anyone consumed it, so the
    /// survivor still describes every change since the last frame that was consumed.
    ///
    /// Beyond [`Damage::ABSORB_LIMIT`] rectangles the hint collapses to their bounding box.
    pub fn absorb(&mut self, older: &Damage) {
        match (self.known, older.known) {
            (true, true) => {
                // While capture outruns the consumer, superseded frames chain up without end;
                // an unbounded list would keep growing (and allocating). A bounding box is a
                // superset, which hints may be, so collapsing keeps the hint correct.
                let total = self.rects.len() + older.rects.len();
                if total > Self::ABSORB_LIMIT {
                    let all = self
                        .rects
                        .iter()
                        .chain(&older.rects)
                        .fold(Rect::default(), |acc, r| acc.bounding(r));
                    self.rects.clear();
                    self.rects.push(all);
                    return;
                }
                // Within the limit, so within the room `set_known_empty` reserved.
                self.rects.extend_from_slice(&older.rects);
            }
            _ => self.set_unknown(),
        }
    }
}

/// Byte order of a pixel in memory. Both are 4 bytes per pixel; the fourth byte of `Bgrx` is
/// undefined padding, so comparisons must treat the frame as opaque bytes from one source only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// B, G, R, A.
    Bgra,
    /// B, G, R, padding (X11 Z-pixmaps of depth 24).
    Bgrx,
}

pub(crate) enum Storage {
    Heap(Vec<u8>),
    #[cfg(target_os = "linux")]
    Shm(crate::x11::ShmBuffer),
}

/// One captured screen image: 4 bytes per pixel, rows `stride` bytes apart.
///
/// Frames are allocated by a source (which may back them with shared memory) and recycled
/// through a [`crate::FramePool`]; their pixels are only meaningful after a capture that
/// returned [`crate::CaptureOutcome::Fresh`].
pub struct Frame {
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
    timestamp: Timestamp,
    damage: Damage,
    storage: Storage,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stride", &self.stride)
            .field("format", &self.format)
            .field("timestamp", &self.timestamp)
            .field("damage", &self.damage)
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// A heap-backed, zeroed BGRA frame with a tight stride (`width * 4`).
    pub fn new(width: u32, height: u32) -> Self {
        let stride = width as usize * 4;
        Self::from_storage(
            width,
            height,
            stride,
            PixelFormat::Bgra,
            Storage::Heap(vec![0; stride * height as usize]),
        )
    }

    pub(crate) fn from_storage(
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
        storage: Storage,
    ) -> Self {
        Self {
            width,
            height,
            stride,
            format,
            timestamp: Timestamp::default(),
            damage: Damage::unknown(),
            storage,
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

    /// Bytes from one row to the next (at least `width * 4`).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Pixel byte order.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// When the pixels were captured, on the driver's clock.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// Set the capture time (sources do this; tests may too).
    pub fn set_timestamp(&mut self, t: Timestamp) {
        self.timestamp = t;
    }

    /// The damage hint the source attached.
    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    /// Mutable damage hint, for sources and for merging superseded frames.
    pub fn damage_mut(&mut self) -> &mut Damage {
        &mut self.damage
    }

    /// All pixel bytes, `stride * height` long.
    pub fn data(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Storage::Shm(s) => s.bytes(),
        }
    }

    /// All pixel bytes, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Storage::Shm(s) => s.bytes_mut(),
        }
    }

    /// The visible bytes of row `y` (`width * 4` long).
    ///
    /// # Panics
    /// When `y >= height`: callers iterate within the frame.
    pub fn row(&self, y: u32) -> &[u8] {
        let start = y as usize * self.stride;
        &self.data()[start..start + self.width as usize * 4]
    }

    /// The pixel at `(x, y)` as `[b, g, r, a_or_pad]`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        let i = y as usize * self.stride + x as usize * 4;
        let d = self.data();
        [d[i], d[i + 1], d[i + 2], d[i + 3]]
    }

    #[cfg(target_os = "linux")]
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_intersection_and_bounding() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(5, 5, 10, 10);
        assert_eq!(a.intersect(&b), Some(Rect::new(5, 5, 5, 5)));
        assert_eq!(a.bounding(&b), Rect::new(0, 0, 15, 15));
        assert_eq!(a.intersect(&Rect::new(10, 0, 5, 5)), None);
        assert_eq!(
            Rect::new(8, 8, 10, 10).clip_to(12, 12),
            Rect::new(8, 8, 4, 4)
        );
        assert!(Rect::new(20, 20, 5, 5).clip_to(12, 12).is_empty());
        assert_eq!(Rect::default().bounding(&b), b);
    }

    #[test]
    fn superseded_damage_is_absorbed_and_unknown_wins() {
        let mut newer = Damage::unknown();
        newer.set_known_empty();
        newer.push(Rect::new(1, 1, 2, 2));
        let mut older = Damage::unknown();
        older.set_known_empty();
        older.push(Rect::new(9, 9, 1, 1));
        newer.absorb(&older);
        assert_eq!(
            newer.hint(),
            Some(&[Rect::new(1, 1, 2, 2), Rect::new(9, 9, 1, 1)][..])
        );
        newer.absorb(&Damage::unknown());
        assert_eq!(newer.hint(), None);
    }

    #[test]
    fn absorbing_past_the_limit_collapses_to_a_covering_box() {
        let mut newer = Damage::unknown();
        newer.set_known_empty();
        newer.push(Rect::new(100, 100, 4, 4));
        let mut older = Damage::unknown();
        older.set_known_empty();
        for i in 0..Damage::ABSORB_LIMIT as u32 {
            older.push(Rect::new(i, i, 1, 1));
        }
        newer.absorb(&older);
        assert_eq!(newer.hint(), Some(&[Rect::new(0, 0, 104, 104)][..]));
        // Within the limit, rectangles are kept as they are.
        let mut few = Damage::unknown();
        few.set_known_empty();
        few.push(Rect::new(1, 1, 1, 1));
        newer.absorb(&few);
        assert_eq!(newer.hint().map(<[Rect]>::len), Some(2));
    }

    #[test]
    fn pushing_onto_unknown_damage_keeps_it_unknown() {
        let mut d = Damage::unknown();
        d.push(Rect::new(0, 0, 1, 1));
        assert_eq!(d.hint(), None);
    }
}
