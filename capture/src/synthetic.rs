//! Deterministic synthetic desktops for tests, benches and headless demos.
//!
//! Every scene is a pure function of `(scene, width, height, seed, step)`: the n-th capture
//! always yields the same pixels, so a test can regenerate the exact source of any frame.
//! Each capture advances the scene by one step.

use std::fmt;
use std::str::FromStr;

use crate::{CaptureError, CaptureOutcome, Frame, Rect, Source, Timestamp};

/// The synthetic workloads, chosen to cover what a remote desktop sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scene {
    /// A desktop where nothing moves.
    Static,
    /// One glyph and the caret change per frame in an editor window.
    Typing,
    /// The editor's text moves up by a few pixels per frame.
    Scroll,
    /// Every pixel changes every frame (gradients plus a moving textured block).
    Video,
    /// A window is dragged across the desktop.
    Drag,
}

impl Scene {
    /// Names accepted by [`FromStr`], in a stable order.
    pub const NAMES: [&'static str; 5] = ["static", "typing", "scroll", "video", "drag"];
    /// Every scene, in the order of [`Scene::NAMES`].
    pub const ALL: [Scene; 5] = [
        Scene::Static,
        Scene::Typing,
        Scene::Scroll,
        Scene::Video,
        Scene::Drag,
    ];
}

impl FromStr for Scene {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scene::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Scene::ALL[i])
            .ok_or_else(|| {
                CaptureError::Invalid(format!(
                    "unknown scene {s:?} (expected one of {})",
                    Scene::NAMES.join(", ")
                ))
            })
    }
}

impl fmt::Display for Scene {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = Scene::ALL.iter().position(|s| s == self).unwrap_or(0);
        f.write_str(Scene::NAMES[i])
    }
}

const GLYPH_W: u32 = 8;
const GLYPH_H: u32 = 16;
const SCROLL_PX: u32 = 4;
const TITLE_H: u32 = 24;

const WHITE: [u8; 4] = [250, 250, 250, 255];
const INK: [u8; 4] = [40, 30, 30, 255];
const TITLE: [u8; 4] = [160, 90, 40, 255];
const TASKBAR: [u8; 4] = [50, 45, 40, 255];

/// A synthetic screen. See [`Scene`] for what each one does.
#[derive(Debug)]
pub struct SyntheticSource {
    scene: Scene,
    seed: u64,
    hints: bool,
    canvas: Canvas,
    /// The desktop without the dragged window, to repaint what it uncovers.
    background: Option<Canvas>,
    /// The dragged window, pre-rendered.
    sprite: Option<Canvas>,
    glyphs: Box<[[u8; 16]; 256]>,
    step: u64,
    first: bool,
    pending: Vec<Rect>,
    editor: Rect,
    caret: (u32, u32),
    doc_row: u64,
    window: Rect,
    velocity: (i32, i32),
}

impl SyntheticSource {
    /// A `width` x `height` synthetic screen playing `scene`, reproducible from `seed`.
    pub fn new(scene: Scene, width: u32, height: u32, seed: u64) -> Result<Self, CaptureError> {
        if !(64..=8192).contains(&width) || !(64..=8192).contains(&height) {
            return Err(CaptureError::Invalid(format!(
                "synthetic size {width}x{height} (expected 64..=8192 in each direction)"
            )));
        }
        let glyphs = Box::new(std::array::from_fn(|c| glyph_rows(seed, c as u32)));
        let editor = Rect::new(width / 20, height / 20, width * 3 / 5, height * 7 / 10);
        let mut s = Self {
            scene,
            seed,
            hints: true,
            canvas: Canvas::new(width, height),
            background: None,
            sprite: None,
            glyphs,
            step: 0,
            first: true,
            pending: Vec::new(),
            editor,
            caret: (0, 0),
            doc_row: 0,
            window: Rect::new(width / 10, height / 3, width / 5, height / 4),
            velocity: (9, 6),
        };
        s.paint_desktop();
        if scene == Scene::Drag {
            s.background = Some(s.canvas.clone());
            s.sprite = Some(s.paint_sprite());
            let (w, sp) = (s.window, s.sprite.as_ref().expect("just set"));
            s.canvas.blit(sp, w.x, w.y);
        }
        Ok(s)
    }

    /// Whether captures carry exact damage hints (default) or unknown damage, as a backend
    /// without change tracking would. Without hints, a static scene still returns fresh frames.
    pub fn with_hints(mut self, hints: bool) -> Self {
        self.hints = hints;
        self
    }

    /// The scene being played.
    pub fn scene(&self) -> Scene {
        self.scene
    }

    /// How many steps the scene has advanced (captures after the first).
    pub fn step(&self) -> u64 {
        self.step
    }

    fn paint_desktop(&mut self) {
        let (w, h) = (self.canvas.w, self.canvas.h);
        for y in 0..h {
            // A smooth vertical gradient, like a wallpaper.
            let t = (y * 255 / h) as u8;
            let c = [120u8.wrapping_add(t / 3), 90 + t / 4, 40 + t / 5, 255];
            self.canvas.fill(Rect::new(0, y, w, 1), c);
        }
        self.canvas
            .fill(Rect::new(0, h - h / 27, w, h / 27), TASKBAR);
        let e = self.editor;
        self.paint_window_frame(e);
        // Half the editor is prefilled text; typing continues below it.
        let cols = self.text_cols();
        let rows = self.text_rows();
        for row in 0..rows / 2 {
            for col in 0..cols {
                let code = doc_code(self.seed, row as u64, col);
                self.draw_glyph(col, row, code);
            }
        }
        self.caret = (0, rows / 2);
        if self.scene == Scene::Scroll {
            self.doc_row = u64::from(rows * GLYPH_H);
        }
        // A second, smaller window with a few lines, for texture.
        let side = Rect::new(w * 7 / 10, h / 8, w / 4, h / 3);
        self.paint_window_frame(side);
        for row in 0..(side.h - TITLE_H) / GLYPH_H {
            for col in 0..side.w / GLYPH_W {
                let code = doc_code(self.seed ^ 0x55, row as u64, col);
                let g = self.glyphs[code as usize];
                self.canvas
                    .glyph(side.x + col * GLYPH_W, side.y + TITLE_H + row * GLYPH_H, &g);
            }
        }
    }

    fn paint_window_frame(&mut self, r: Rect) {
        self.canvas.fill(r, WHITE);
        self.canvas
            .fill(Rect::new(r.x, r.y, r.w, TITLE_H.min(r.h)), TITLE);
    }

    fn paint_sprite(&self) -> Canvas {
        let w = self.window;
        let mut s = Canvas::new(w.w, w.h);
        s.fill(Rect::new(0, 0, w.w, w.h), WHITE);
        s.fill(Rect::new(0, 0, w.w, TITLE_H), [60, 140, 60, 255]);
        for row in 0..w.h.saturating_sub(TITLE_H) / GLYPH_H {
            for col in 0..w.w / GLYPH_W {
                let code = doc_code(self.seed ^ 0xd4a6, row as u64, col);
                s.glyph(
                    col * GLYPH_W,
                    TITLE_H + row * GLYPH_H,
                    &self.glyphs[code as usize],
                );
            }
        }
        s
    }

    fn text_cols(&self) -> u32 {
        self.editor.w / GLYPH_W
    }

    fn text_rows(&self) -> u32 {
        (self.editor.h - TITLE_H) / GLYPH_H
    }

    fn text_area(&self) -> Rect {
        let e = self.editor;
        Rect::new(
            e.x,
            e.y + TITLE_H,
            self.text_cols() * GLYPH_W,
            self.text_rows() * GLYPH_H,
        )
    }

    fn draw_glyph(&mut self, col: u32, row: u32, code: u8) -> Rect {
        let a = self.text_area();
        let (x, y) = (a.x + col * GLYPH_W, a.y + row * GLYPH_H);
        let g = self.glyphs[code as usize];
        self.canvas.glyph(x, y, &g);
        Rect::new(x, y, GLYPH_W, GLYPH_H)
    }

    /// Advance one step, recording what changed in `self.pending`.
    fn advance(&mut self) {
        self.step += 1;
        match self.scene {
            Scene::Static => {}
            Scene::Typing => self.type_one(),
            Scene::Scroll => self.scroll_one(),
            Scene::Video => self.pending.push(self.canvas.rect()),
            Scene::Drag => self.drag_one(),
        }
    }

    fn type_one(&mut self) {
        let (cols, rows) = (self.text_cols(), self.text_rows());
        let (mut col, mut row) = self.caret;
        if col == 0 {
            // A new line starts blank, as in an editor that wrapped around.
            let a = self.text_area();
            let line = Rect::new(a.x, a.y + row * GLYPH_H, a.w, GLYPH_H);
            self.canvas.fill(line, WHITE);
            self.pending.push(line);
        }
        let code = doc_code(self.seed, self.step, col);
        let cell = self.draw_glyph(col, row, code);
        self.pending.push(cell);
        col += 1;
        if col == cols {
            col = 0;
            row = if row + 1 == rows { rows / 2 } else { row + 1 };
        }
        self.caret = (col, row);
        if col > 0 {
            // The caret: a thin bar in the next cell.
            let a = self.text_area();
            let bar = Rect::new(a.x + col * GLYPH_W, a.y + row * GLYPH_H + 2, 1, GLYPH_H - 4);
            self.canvas.fill(bar, INK);
            self.pending.push(bar);
        }
    }

    fn scroll_one(&mut self) {
        let a = self.text_area();
        self.canvas.scroll_up(a, SCROLL_PX);
        for i in 0..SCROLL_PX {
            let y = a.bottom() - SCROLL_PX + i;
            let doc_row = self.doc_row + u64::from(i);
            let line = doc_row / u64::from(GLYPH_H);
            let r = (doc_row % u64::from(GLYPH_H)) as usize;
            for col in 0..self.text_cols() {
                let bits = self.glyphs[doc_code(self.seed, line, col) as usize][r];
                self.canvas.glyph_row(a.x + col * GLYPH_W, y, bits);
            }
        }
        self.doc_row += u64::from(SCROLL_PX);
        self.pending.push(a);
    }

    fn drag_one(&mut self) {
        let (w, h) = (self.canvas.w, self.canvas.h);
        let old = self.window;
        let (mut vx, mut vy) = self.velocity;
        let mut nx = old.x as i64 + vx as i64;
        let mut ny = old.y as i64 + vy as i64;
        if nx < 0 || nx + old.w as i64 > w as i64 {
            vx = -vx;
            nx = old.x as i64 + vx as i64;
        }
        if ny < 0 || ny + old.h as i64 > h as i64 {
            vy = -vy;
            ny = old.y as i64 + vy as i64;
        }
        self.velocity = (vx, vy);
        let new = Rect::new(nx as u32, ny as u32, old.w, old.h);
        let bg = self
            .background
            .as_ref()
            .expect("drag scene has a background");
        self.canvas.copy_rect_from(bg, old);
        let sprite = self.sprite.as_ref().expect("drag scene has a sprite");
        self.canvas.blit(sprite, new.x, new.y);
        self.window = new;
        self.pending.push(old);
        self.pending.push(new);
    }

    fn render_video(&self, frame: &mut Frame) {
        let t = self.step as u32;
        let (w, h) = (frame.width(), frame.height());
        let stride = frame.stride();
        let data = frame.data_mut();
        // A textured block moving diagonally over moving gradients: motion plus detail.
        let bs = (h / 4).max(16);
        let span_x = (w - bs).max(1);
        let span_y = (h - bs).max(1);
        let bx = bounce(t * 7, span_x);
        let by = bounce(t * 5, span_y);
        for y in 0..h {
            let g = tri(y + 3 * t);
            let row = &mut data[y as usize * stride..][..w as usize * 4];
            for (x, px) in row.chunks_exact_mut(4).enumerate() {
                let x = x as u32;
                px[0] = tri((x + y) / 2 + 5 * t);
                px[1] = g;
                px[2] = tri(x + 2 * t);
                px[3] = 255;
            }
            if (by..by + bs).contains(&y) {
                let ty = (y - by) / 8;
                for x in bx..bx + bs {
                    let on = ((x - bx) / 8 + ty).is_multiple_of(2);
                    // The shade moves too, so no pixel of the block keeps its value.
                    let v = (if on { 200 } else { 20 }) + (t % 32) as u8;
                    let i = x as usize * 4;
                    row[i..i + 3].copy_from_slice(&[v, v, v / 2 + 60]);
                }
            }
        }
    }
}

impl Source for SyntheticSource {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn size(&self) -> (u32, u32) {
        (self.canvas.w, self.canvas.h)
    }

    fn alloc_frame(&mut self) -> Result<Frame, CaptureError> {
        Ok(Frame::new(self.canvas.w, self.canvas.h))
    }

    fn capture(
        &mut self,
        frame: &mut Frame,
        now: Timestamp,
    ) -> Result<CaptureOutcome, CaptureError> {
        let (w, h) = (self.canvas.w, self.canvas.h);
        if frame.width() != w || frame.height() != h {
            return Err(CaptureError::ForeignFrame {
                got_w: frame.width(),
                got_h: frame.height(),
                want_w: w,
                want_h: h,
                what: "size differs",
            });
        }
        if self.first {
            self.first = false;
        } else {
            self.advance();
            if self.pending.is_empty() && self.hints {
                return Ok(CaptureOutcome::Unchanged);
            }
        }
        if self.scene == Scene::Video {
            self.render_video(frame);
        } else {
            self.canvas.copy_into(frame);
        }
        frame.set_timestamp(now);
        let damage = frame.damage_mut();
        if self.hints && self.step > 0 {
            damage.set_known_empty();
            for r in self.pending.drain(..) {
                damage.push(r.clip_to(w, h));
            }
        } else {
            damage.set_unknown();
            self.pending.clear();
        }
        Ok(CaptureOutcome::Fresh)
    }
}

/// A BGRA image with a tight stride, the scenes' drawing surface.
#[derive(Debug, Clone)]
struct Canvas {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        Self {
            w,
            h,
            px: vec![0; w as usize * h as usize * 4],
        }
    }

    fn rect(&self) -> Rect {
        Rect::new(0, 0, self.w, self.h)
    }

    fn row_mut(&mut self, y: u32, x: u32, len: u32) -> &mut [u8] {
        let start = (y as usize * self.w as usize + x as usize) * 4;
        &mut self.px[start..start + len as usize * 4]
    }

    fn fill(&mut self, r: Rect, c: [u8; 4]) {
        let r = r.clip_to(self.w, self.h);
        for y in r.y..r.bottom() {
            for px in self.row_mut(y, r.x, r.w).chunks_exact_mut(4) {
                px.copy_from_slice(&c);
            }
        }
    }

    /// One row of a glyph cell: bit i set = ink at column i, else paper.
    fn glyph_row(&mut self, x: u32, y: u32, bits: u8) {
        if y >= self.h || x + GLYPH_W > self.w {
            return;
        }
        for (i, px) in self.row_mut(y, x, GLYPH_W).chunks_exact_mut(4).enumerate() {
            px.copy_from_slice(if bits >> i & 1 == 1 { &INK } else { &WHITE });
        }
    }

    fn glyph(&mut self, x: u32, y: u32, rows: &[u8; 16]) {
        for (i, bits) in rows.iter().enumerate() {
            self.glyph_row(x, y + i as u32, *bits);
        }
    }

    fn scroll_up(&mut self, r: Rect, by: u32) {
        let stride = self.w as usize * 4;
        for y in r.y..r.bottom() - by {
            let dst = y as usize * stride + r.x as usize * 4;
            let src = dst + by as usize * stride;
            self.px.copy_within(src..src + r.w as usize * 4, dst);
        }
    }

    fn copy_rect_from(&mut self, other: &Canvas, r: Rect) {
        let r = r.clip_to(self.w, self.h);
        let stride = self.w as usize * 4;
        for y in r.y..r.bottom() {
            let s = y as usize * stride + r.x as usize * 4;
            let n = r.w as usize * 4;
            self.px[s..s + n].copy_from_slice(&other.px[s..s + n]);
        }
    }

    fn blit(&mut self, sprite: &Canvas, x: u32, y: u32) {
        let r = Rect::new(x, y, sprite.w, sprite.h).clip_to(self.w, self.h);
        for row in 0..r.h {
            let src = &sprite.px[(row * sprite.w) as usize * 4..][..r.w as usize * 4];
            self.row_mut(r.y + row, r.x, r.w).copy_from_slice(src);
        }
    }

    fn copy_into(&self, frame: &mut Frame) {
        let stride = frame.stride();
        let row_len = self.w as usize * 4;
        let dst = frame.data_mut();
        if stride == row_len {
            dst[..self.px.len()].copy_from_slice(&self.px);
        } else {
            for (y, src) in self.px.chunks_exact(row_len).enumerate() {
                dst[y * stride..y * stride + row_len].copy_from_slice(src);
            }
        }
    }
}

/// A triangle wave with period 512 and range 0..=255: smooth, with no wrap-around edge.
fn tri(v: u32) -> u8 {
    let v = v & 511;
    if v < 256 {
        v as u8
    } else {
        (511 - v) as u8
    }
}

/// Position bouncing between 0 and `span`.
fn bounce(v: u32, span: u32) -> u32 {
    let p = v % (2 * span);
    if p < span {
        p
    } else {
        2 * span - p
    }
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: cheap and well spread, enough for reproducible "text".
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The glyph code at a document position; roughly one cell in six is a word gap.
fn doc_code(seed: u64, line: u64, col: u32) -> u8 {
    let h = mix(seed ^ line.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(col) << 40);
    if h.is_multiple_of(6) {
        0
    } else {
        (h >> 8) as u8 | 1
    }
}

/// A glyph as 16 rows of 8 pixels: a few strokes chosen from a hash, so text looks like text
/// to the encoder (thin high-contrast lines) while staying reproducible. Code 0 is a space.
fn glyph_rows(seed: u64, code: u32) -> [u8; 16] {
    let mut rows = [0u8; 16];
    if code == 0 {
        return rows;
    }
    let h = mix(seed.wrapping_add(u64::from(code)));
    let mut strokes = 0;
    for s in 0..8 {
        if (h >> (s * 3)) & 7 < 3 {
            strokes |= 1 << s;
        }
    }
    if strokes == 0 {
        strokes = 1 << (h % 8);
    }
    for s in 0..8 {
        if strokes >> s & 1 == 0 {
            continue;
        }
        match s {
            0 => (3..13).for_each(|r| rows[r] |= 0b0000_0010),
            1 => (3..13).for_each(|r| rows[r] |= 0b0010_0000),
            2 => (3..13).for_each(|r| rows[r] |= 0b0000_1000),
            3 => rows[3] |= 0b0011_1110,
            4 => rows[8] |= 0b0011_1110,
            5 => rows[12] |= 0b0011_1110,
            6 => (3..13).for_each(|r| rows[r] |= 1 << (1 + (12 - r) / 2)),
            _ => rows[1] |= 0b0000_1000,
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(s: &mut SyntheticSource, f: &mut Frame) -> CaptureOutcome {
        s.capture(f, Timestamp::from_micros(1)).unwrap()
    }

    /// The pixels of every frame, and their damage hints, for `n` captures.
    fn run(scene: Scene, n: usize, hints: bool) -> Vec<(Vec<u8>, Option<Vec<Rect>>)> {
        let mut s = SyntheticSource::new(scene, 320, 240, 7)
            .unwrap()
            .with_hints(hints);
        let mut f = s.alloc_frame().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            if capture(&mut s, &mut f) == CaptureOutcome::Fresh {
                out.push((f.data().to_vec(), f.damage().hint().map(<[Rect]>::to_vec)));
            }
        }
        out
    }

    #[test]
    fn scenes_are_reproducible_from_their_seed() {
        for scene in Scene::ALL {
            assert_eq!(run(scene, 5, true), run(scene, 5, true), "{scene}");
        }
    }

    #[test]
    fn damage_hints_cover_every_changed_pixel() {
        for scene in Scene::ALL {
            let frames = run(scene, 40, true);
            for pair in frames.windows(2) {
                let (prev, (cur, hint)) = (&pair[0].0, &pair[1]);
                let hint = hint.as_ref().expect("frames after the first carry hints");
                for (i, (a, b)) in prev.chunks_exact(4).zip(cur.chunks_exact(4)).enumerate() {
                    if a != b {
                        let (x, y) = ((i % 320) as u32, (i / 320) as u32);
                        assert!(
                            hint.iter().any(|r| r.contains(x, y)),
                            "{scene}: pixel ({x},{y}) changed outside the hint {hint:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn static_scene_is_unchanged_after_the_first_frame() {
        assert_eq!(run(Scene::Static, 10, true).len(), 1);
        let without = run(Scene::Static, 10, false);
        assert_eq!(without.len(), 10, "no hints: every capture is fresh");
        assert!(without.windows(2).all(|w| w[0].0 == w[1].0));
    }

    #[test]
    fn moving_scenes_change_every_frame_and_video_changes_every_pixel() {
        for scene in [Scene::Typing, Scene::Scroll, Scene::Video, Scene::Drag] {
            let frames = run(scene, 6, true);
            assert_eq!(frames.len(), 6, "{scene}");
            assert!(frames.windows(2).all(|w| w[0].0 != w[1].0), "{scene}");
        }
        let v = run(Scene::Video, 2, true);
        let same = v[0]
            .0
            .chunks_exact(4)
            .zip(v[1].0.chunks_exact(4))
            .filter(|(a, b)| a == b);
        assert_eq!(same.count(), 0);
    }

    #[test]
    fn typing_changes_only_glyph_sized_areas() {
        let frames = run(Scene::Typing, 30, true);
        for (_, hint) in &frames[1..] {
            let area: u64 = hint.as_ref().unwrap().iter().map(Rect::area).sum();
            assert!(
                area <= u64::from(320 * GLYPH_H + GLYPH_W * GLYPH_H),
                "{area}"
            );
        }
    }

    #[test]
    fn bad_sizes_and_names_are_refused_with_the_allowed_range() {
        let e = SyntheticSource::new(Scene::Static, 10, 100, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("64..=8192"), "{e}");
        assert!("typing".parse::<Scene>().is_ok());
        assert!("tpying"
            .parse::<Scene>()
            .unwrap_err()
            .to_string()
            .contains("drag"));
    }

    #[test]
    fn frames_of_another_size_are_refused() {
        let mut s = SyntheticSource::new(Scene::Static, 128, 128, 0).unwrap();
        let mut f = Frame::new(64, 64);
        assert!(matches!(
            s.capture(&mut f, Timestamp::default()),
            Err(CaptureError::ForeignFrame { .. })
        ));
    }
}
