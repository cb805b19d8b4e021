//! The target's pointer, sent beside the video rather than in it: the target sends a shape
//! once (the viewer keeps the last [`SHAPES_KEPT`] by serial, so flipping between an arrow
//! and a text caret costs nothing after the first time) and positions as they change; the
//! viewer draws the newest position with its shape on top of the picture.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use deskwire_capture::{CursorImage, PointerState};

use crate::outbox::micros;
use crate::wire::CursorPosition;

/// Shapes the viewer keeps, and the target remembers having sent.
pub const SHAPES_KEPT: usize = 32;

/// A position travels on the partially reliable video channel; the last one of a move is
/// sent again this long after it, so a lost one does not leave the pointer where it was.
const RESEND_AFTER: Duration = Duration::from_millis(250);

/// The target's side: what to send for each reading of the pointer.
#[derive(Debug, Default)]
pub(crate) struct PointerSender {
    last: Option<CursorPosition>,
    resend_at: Option<Duration>,
    shapes_sent: VecDeque<u32>,
}

impl PointerSender {
    /// A new reading at `now`: the shape to send, if the viewer may not have it, and the
    /// position.
    pub(crate) fn handle(
        &mut self,
        now: Duration,
        state: &PointerState,
    ) -> (Option<Arc<CursorImage>>, CursorPosition) {
        let shape = state
            .shape
            .as_ref()
            .filter(|s| !self.shapes_sent.contains(&s.serial))
            .cloned();
        if let Some(s) = &shape {
            if self.shapes_sent.len() == SHAPES_KEPT {
                self.shapes_sent.pop_front();
            }
            self.shapes_sent.push_back(s.serial);
        }
        let position = CursorPosition {
            sent_us: micros(now) as u32,
            serial: state.serial,
            x: state.x,
            y: state.y,
            visible: state.visible,
        };
        self.last = Some(position);
        self.resend_at = Some(now + RESEND_AFTER);
        (shape, position)
    }

    /// The last position again, once, when it is due (stamped `now`: it is still where
    /// the pointer is).
    pub(crate) fn poll_resend(&mut self, now: Duration) -> Option<CursorPosition> {
        if self.resend_at.is_some_and(|t| now >= t) {
            self.resend_at = None;
            return self.last.map(|p| CursorPosition {
                sent_us: micros(now) as u32,
                ..p
            });
        }
        None
    }

    /// The link is back: what was sent while it was down may be gone.
    pub(crate) fn link_up(&mut self, now: Duration) {
        if self.last.is_some() {
            self.resend_at = Some(now);
        }
    }

    /// When [`PointerSender::poll_resend`] has something.
    pub(crate) fn next(&self) -> Option<Duration> {
        self.resend_at
    }
}

/// The target's pointer as the viewer should draw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCursor {
    /// Hotspot column on the target's screen.
    pub x: i32,
    /// Hotspot row.
    pub y: i32,
    /// Whether the target shows it.
    pub visible: bool,
    /// Its shape, once that has arrived.
    pub shape: Option<Arc<CursorImage>>,
}

impl RemoteCursor {
    /// Each pixel of the shape that lands on a `width` x `height` picture, with its
    /// straight RGBA colour; nothing when hidden or while the shape is unknown.
    pub fn pixels(
        &self,
        width: u32,
        height: u32,
    ) -> impl Iterator<Item = (u32, u32, [u8; 4])> + '_ {
        let shape = self.shape.as_deref().filter(|_| self.visible);
        let (left, top) = match shape {
            Some(s) => (
                i64::from(self.x) - i64::from(s.hot_x),
                i64::from(self.y) - i64::from(s.hot_y),
            ),
            None => (0, 0),
        };
        shape.into_iter().flat_map(move |s| {
            (0..s.height).flat_map(move |row| {
                (0..s.width).filter_map(move |col| {
                    let (x, y) = (left + i64::from(col), top + i64::from(row));
                    let on =
                        (0..i64::from(width)).contains(&x) && (0..i64::from(height)).contains(&y);
                    let rgba = s.pixel(col, row)?;
                    (on && rgba[3] != 0).then_some((x as u32, y as u32, rgba))
                })
            })
        })
    }
}

/// Straight `rgba` laid over an opaque `[r, g, b]`.
pub fn blend(under: [u8; 3], rgba: [u8; 4]) -> [u8; 3] {
    let a = u32::from(rgba[3]);
    let mix = |o: u8, u: u8| ((u32::from(o) * a + u32::from(u) * (255 - a) + 127) / 255) as u8;
    [
        mix(rgba[0], under[0]),
        mix(rgba[1], under[1]),
        mix(rgba[2], under[2]),
    ]
}

/// The viewer's side: the newest position and the shapes it may show.
#[derive(Debug, Default)]
pub(crate) struct PointerReceiver {
    position: Option<CursorPosition>,
    shapes: VecDeque<Arc<CursorImage>>,
}

impl PointerReceiver {
    /// A shape arrived; the cursor to draw if it is the one shown now.
    pub(crate) fn handle_shape(&mut self, shape: Arc<CursorImage>) -> Option<RemoteCursor> {
        self.shapes.retain(|s| s.serial != shape.serial);
        if self.shapes.len() == SHAPES_KEPT {
            self.shapes.pop_front();
        }
        let shown = self.position.is_some_and(|p| p.serial == shape.serial);
        self.shapes.push_back(shape);
        shown.then(|| self.cursor()).flatten()
    }

    /// A position arrived; the cursor to draw, unless a newer position came first.
    pub(crate) fn handle_position(&mut self, p: CursorPosition) -> Option<RemoteCursor> {
        if let Some(newest) = self.position {
            // Wrapping time: a position up to half the clock's range older is stale.
            if (p.sent_us.wrapping_sub(newest.sent_us) as i32) < 0 {
                return None;
            }
            let same_place = (p.x, p.y, p.visible, p.serial)
                == (newest.x, newest.y, newest.visible, newest.serial);
            if same_place {
                self.position = Some(p);
                return None;
            }
        }
        self.position = Some(p);
        self.cursor()
    }

    /// What to draw now.
    pub(crate) fn cursor(&self) -> Option<RemoteCursor> {
        let p = self.position?;
        Some(RemoteCursor {
            x: p.x,
            y: p.y,
            visible: p.visible,
            shape: self
                .shapes
                .iter()
                .rev()
                .find(|s| s.serial == p.serial)
                .cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(serial: u32) -> Arc<CursorImage> {
        Arc::new(CursorImage {
            serial,
            width: 2,
            height: 2,
            hot_x: 1,
            hot_y: 1,
            rgba: vec![
                255, 0, 0, 255, /**/ 0, 0, 0, 0, //
                0, 255, 0, 128, /**/ 0, 0, 255, 255,
            ],
        })
    }

    fn reading(x: i32, y: i32, serial: u32, shape: bool) -> PointerState {
        PointerState {
            x,
            y,
            visible: true,
            serial,
            shape: shape.then(|| image(serial)),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_shape_is_sent_once_even_when_the_pointer_returns_to_it() {
        let mut tx = PointerSender::default();
        let (shape, pos) = tx.handle(MS, &reading(5, 6, 1, true));
        assert_eq!(shape.map(|s| s.serial), Some(1));
        assert_eq!((pos.x, pos.y, pos.serial), (5, 6, 1));
        assert!(tx.handle(2 * MS, &reading(7, 6, 2, true)).0.is_some());
        // Back to the arrow: the viewer has it already.
        assert!(tx.handle(3 * MS, &reading(8, 6, 1, true)).0.is_none());
        // A target that saw more shapes than the viewer keeps sends the oldest again.
        for serial in 10..10 + SHAPES_KEPT as u32 {
            assert!(tx.handle(4 * MS, &reading(0, 0, serial, true)).0.is_some());
        }
        assert!(tx.handle(5 * MS, &reading(0, 0, 1, true)).0.is_some());
    }

    #[test]
    fn the_last_position_of_a_move_is_sent_once_more() {
        let mut tx = PointerSender::default();
        assert_eq!(tx.next(), None);
        tx.handle(MS, &reading(5, 6, 1, true));
        tx.handle(10 * MS, &reading(9, 6, 1, false));
        assert_eq!(tx.next(), Some(10 * MS + RESEND_AFTER));
        assert_eq!(tx.poll_resend(100 * MS), None);
        let again = tx.poll_resend(260 * MS).expect("due");
        assert_eq!((again.x, again.sent_us), (9, 260_000));
        assert_eq!(tx.poll_resend(600 * MS), None, "once");
        assert_eq!(tx.next(), None);
        tx.link_up(700 * MS);
        assert_eq!(tx.poll_resend(700 * MS).map(|p| p.x), Some(9));
    }

    #[test]
    fn the_viewer_draws_the_newest_position_with_its_shape_once_known() {
        let mut rx = PointerReceiver::default();
        let at = |sent_us, x, serial| CursorPosition {
            sent_us,
            serial,
            x,
            y: 0,
            visible: true,
        };
        let c = rx.handle_position(at(100, 5, 1)).expect("a new position");
        assert_eq!((c.x, c.shape), (5, None));
        // An older position that arrived late changes nothing.
        assert_eq!(rx.handle_position(at(50, 1, 1)), None);
        // The same place again (the target's resend) is no news.
        assert_eq!(rx.handle_position(at(200, 5, 1)), None);
        let c = rx.handle_shape(image(1)).expect("the shape shown now");
        assert_eq!(c.shape.map(|s| s.serial), Some(1));
        // Another shape, not shown yet, is kept for later.
        assert_eq!(rx.handle_shape(image(2)), None);
        let c = rx.handle_position(at(300, 6, 2)).unwrap();
        assert_eq!(c.shape.map(|s| s.serial), Some(2));
        // The clock wraps: later than u32::MAX is newer.
        let mut rx = PointerReceiver::default();
        rx.handle_position(at(u32::MAX - 10, 1, 1));
        assert!(rx.handle_position(at(5, 2, 1)).is_some());
    }

    #[test]
    fn the_cursor_is_drawn_around_its_hotspot_and_clipped_to_the_picture() {
        let c = RemoteCursor {
            x: 0,
            y: 5,
            visible: true,
            shape: Some(image(1)),
        };
        // Hotspot (1, 1): the top-left pixel lands at (-1, 4), off the picture.
        let px: Vec<_> = c.pixels(10, 10).collect();
        assert_eq!(px, vec![(0, 5, [0, 0, 255, 255])]);
        let c = RemoteCursor { x: 1, ..c };
        let px: Vec<_> = c.pixels(10, 10).collect();
        assert_eq!(
            px,
            vec![
                (0, 4, [255, 0, 0, 255]),
                (0, 5, [0, 255, 0, 128]),
                (1, 5, [0, 0, 255, 255])
            ]
        );
        assert_eq!(
            RemoteCursor {
                visible: false,
                ..c.clone()
            }
            .pixels(10, 10)
            .count(),
            0
        );
        assert_eq!(RemoteCursor { shape: None, ..c }.pixels(10, 10).count(), 0);
        assert_eq!(blend([0, 0, 0], [255, 255, 255, 128]), [128, 128, 128]);
        assert_eq!(blend([10, 20, 30], [255, 0, 0, 255]), [255, 0, 0]);
    }
}
