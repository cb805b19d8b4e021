//! Fixtures for deskwire's integration tests: a private Xvfb server per test, helpers that draw
//! known content on it, and checks that compare captured frames with that content.
//!
//! Nothing here skips: when Xvfb is missing, [`Xvfb::start`] fails and says how to install it.

pub mod binaries;
pub mod impaired;
pub mod netns;
pub mod session_fixtures;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use deskwire_capture::{CaptureOutcome, Frame, Rect, Source, Timestamp};
use x11rb::connection::Connection;
use x11rb::protocol::randr::{ConnectionExt as _, Rotation};
use x11rb::protocol::xproto::{
    ChangeGCAux, ChangeWindowAttributesAux, ConnectionExt as _, CreateGCAux, Gcontext, Rectangle,
    Window,
};
use x11rb::rust_connection::RustConnection;

/// How long Xvfb may take to report its display number.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private Xvfb server, killed when dropped.
///
/// The server picks a free display number itself (`-displayfd`), so parallel tests never race
/// for one. It runs with `-noreset` so that drawing clients disconnecting does not wipe the
/// screen.
#[derive(Debug)]
pub struct Xvfb {
    child: Child,
    display: String,
    log: PathBuf,
}

impl Xvfb {
    /// Start a `width` x `height` x 24 server with MIT-SHM, DAMAGE and XFIXES.
    pub fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "deskwire-xvfb-{}-{}.log",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let screen = format!("{width}x{height}x24");
        let spawned = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", &screen])
            .args(["-nolisten", "tcp", "-noreset", "+extension", "MIT-SHM"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let _ = fs::remove_file(&log);
                bail!("Xvfb is not installed: install the `xvfb` package (run scripts/setup)");
            }
            Err(e) => {
                let _ = fs::remove_file(&log);
                return Err(anyhow!(e).context("starting Xvfb"));
            }
        };
        // From here on, dropping `server` stops the child on every error path.
        let mut server = Self {
            child,
            display: String::new(),
            log,
        };

        // Xvfb writes the display number and a newline to fd 1 once it accepts connections.
        let stdout = server.child.stdout.take().context("Xvfb stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(read) => read.context("reading Xvfb's display number")?,
            Err(_) => bail!(
                "Xvfb did not report a display within {START_TIMEOUT:?}; its log:\n{}",
                server.log_tail()
            ),
        };
        let number: u32 = match line.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                let status = server.child.wait().ok();
                bail!(
                    "Xvfb exited ({status:?}) without reporting a display; its log:\n{}",
                    server.log_tail()
                );
            }
        };
        server.display = format!(":{number}");
        Ok(server)
    }

    /// The display name, e.g. `":3"`.
    pub fn display(&self) -> String {
        self.display.clone()
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the server wrote to stderr (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // `try_wait` reaps the child only once it has exited; until then its pid cannot be
        // reused, so the signal below reaches exactly our server.
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill takes plain integers and touches no memory; `pid` is our own,
                // not yet reaped child (see above).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            // SIGTERM lets Xvfb remove its socket and lock file; insist if it takes too long.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match self.child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Ok(Some(_)) => break,
                    _ => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// A connection that draws solid rectangles on the root window of a display.
#[derive(Debug)]
pub struct Painter {
    conn: RustConnection,
    root: Window,
    gc: Gcontext,
}

impl Painter {
    /// Connect to `display` and make a graphics context for the root window.
    pub fn connect(display: &str) -> anyhow::Result<Self> {
        let (conn, screen) = x11rb::connect(Some(display))
            .with_context(|| format!("connecting to X display {display}"))?;
        let root = conn.setup().roots[screen].root;
        let gc = conn.generate_id()?;
        conn.create_gc(gc, root, &CreateGCAux::new())?.check()?;
        Ok(Self { conn, root, gc })
    }

    /// Fill each rectangle with its colour (`0xRRGGBB`, drawn in order) and wait until the
    /// server has done it.
    pub fn fill_all(&self, rects: &[(Rect, u32)]) -> anyhow::Result<()> {
        for &(r, rgb) in rects {
            let rect = Rectangle {
                x: i16::try_from(r.x)?,
                y: i16::try_from(r.y)?,
                width: u16::try_from(r.w)?,
                height: u16::try_from(r.h)?,
            };
            self.conn
                .change_gc(self.gc, &ChangeGCAux::new().foreground(rgb))?;
            self.conn.poly_fill_rectangle(self.root, self.gc, &[rect])?;
        }
        self.sync()
    }

    /// Fill one rectangle with `rgb` (`0xRRGGBB`) and wait until the server has done it.
    pub fn fill(&self, r: Rect, rgb: u32) -> anyhow::Result<()> {
        self.fill_all(&[(r, rgb)])
    }

    /// Put the pointer at (`x`, `y`) on the root window; done when this returns.
    pub fn warp_pointer(&self, x: i16, y: i16) -> anyhow::Result<()> {
        self.conn
            .warp_pointer(x11rb::NONE, self.root, 0, 0, 0, 0, x, y)?;
        self.sync()
    }

    /// Move the pointer to (`x`, `y`) as a device would (XTEST), which XInput reports as
    /// motion; done when this returns.
    pub fn move_pointer(&self, x: i16, y: i16) -> anyhow::Result<()> {
        use x11rb::protocol::xtest::ConnectionExt as _;
        self.conn.xtest_fake_input(
            x11rb::protocol::xproto::MOTION_NOTIFY_EVENT,
            0,
            x11rb::CURRENT_TIME,
            self.root,
            x,
            y,
            0,
        )?;
        self.sync()
    }

    /// Give the root window glyph `glyph` of the server's `cursor` font (`XC_hand2` is 60,
    /// `XC_xterm` 152) as its cursor; done when this returns.
    pub fn set_root_cursor(&self, glyph: u16) -> anyhow::Result<()> {
        let font = self.conn.generate_id()?;
        self.conn.open_font(font, b"cursor")?.check()?;
        let cursor = self.conn.generate_id()?;
        self.conn
            .create_glyph_cursor(cursor, font, font, glyph, glyph + 1, 0, 0, 0, !0, !0, !0)?
            .check()?;
        self.conn.change_window_attributes(
            self.root,
            &ChangeWindowAttributesAux::new().cursor(cursor),
        )?;
        self.conn.free_cursor(cursor)?;
        self.conn.close_font(font)?;
        self.sync()
    }

    /// A round trip: every request sent before has been carried out when this returns.
    pub fn sync(&self) -> anyhow::Result<()> {
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }
}

/// Resize the screen of `display` through RandR, switching off any CRTC that would stick out
/// (Xvfb can shrink below its start size, not grow beyond it); done when this returns.
pub fn resize_screen(display: &str, width: u32, height: u32) -> anyhow::Result<()> {
    let (conn, screen) = x11rb::connect(Some(display))
        .with_context(|| format!("connecting to X display {display}"))?;
    let root = conn.setup().roots[screen].root;
    conn.randr_query_version(1, 3)?.reply()?;
    let (w, h) = (u16::try_from(width)?, u16::try_from(height)?);
    let range = conn.randr_get_screen_size_range(root)?.reply()?;
    if !(range.min_width..=range.max_width).contains(&w)
        || !(range.min_height..=range.max_height).contains(&h)
    {
        bail!(
            "{width}x{height} is outside the screen size range {}x{}..{}x{}",
            range.min_width,
            range.min_height,
            range.max_width,
            range.max_height
        );
    }
    let resources = conn.randr_get_screen_resources(root)?.reply()?;
    for &crtc in &resources.crtcs {
        let info = conn
            .randr_get_crtc_info(crtc, resources.config_timestamp)?
            .reply()?;
        let right = i32::from(info.x) + i32::from(info.width);
        let bottom = i32::from(info.y) + i32::from(info.height);
        if info.mode != 0 && (right > i32::from(w) || bottom > i32::from(h)) {
            conn.randr_set_crtc_config(
                crtc,
                x11rb::CURRENT_TIME,
                resources.config_timestamp,
                0,
                0,
                x11rb::NONE,
                Rotation::ROTATE0,
                &[],
            )?
            .reply()?;
        }
    }
    // Keep roughly 96 dpi.
    let mm = |px: u32| px * 254 / 960;
    conn.randr_set_screen_size(root, w, h, mm(width), mm(height))?
        .check()?;
    Ok(())
}

/// Fill a rectangle of the root window of `display` with `rgb` (`0xRRGGBB` on the 24-bit
/// TrueColor visual of Xvfb), over a connection of its own; done when this returns.
pub fn fill_rect(display: &str, x: u32, y: u32, w: u32, h: u32, rgb: u32) -> anyhow::Result<()> {
    Painter::connect(display)?.fill(Rect::new(x, y, w, h), rgb)
}

/// The bytes `[b, g, r]` a BGRA/BGRX frame holds for the colour `0xRRGGBB`.
pub fn bgr(rgb: u32) -> [u8; 3] {
    [rgb as u8, (rgb >> 8) as u8, (rgb >> 16) as u8]
}

/// Known screen content: a background and solid rectangles drawn over it in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    /// Screen width.
    pub width: u32,
    /// Screen height.
    pub height: u32,
    /// Colour of every pixel no rectangle covers.
    pub background: u32,
    /// Rectangles and their colours; later ones cover earlier ones.
    pub rects: Vec<(Rect, u32)>,
}

impl Scene {
    /// A fixed scene for screens of at least 640x480: primaries, an overlap, and a rectangle
    /// touching the bottom-right corner.
    pub fn known(width: u32, height: u32) -> Self {
        assert!(
            width >= 640 && height >= 480,
            "the known scene needs 640x480"
        );
        Self {
            width,
            height,
            background: 0x20_40_60,
            rects: vec![
                (Rect::new(10, 20, 100, 50), 0xff_00_00),
                (Rect::new(200, 150, 64, 64), 0x00_ff_00),
                (Rect::new(300, 10, 30, 200), 0x00_00_ff),
                (Rect::new(50, 40, 120, 90), 0x12_34_56),
                (Rect::new(width - 16, height - 8, 16, 8), 0xfe_dc_ba),
            ],
        }
    }

    /// Draw the whole scene on `display`; done when this returns.
    pub fn draw(&self, display: &str) -> anyhow::Result<()> {
        let mut all = vec![(Rect::new(0, 0, self.width, self.height), self.background)];
        all.extend_from_slice(&self.rects);
        Painter::connect(display)?.fill_all(&all)
    }

    /// The colour the scene has at `(x, y)`.
    pub fn rgb_at(&self, x: u32, y: u32) -> u32 {
        self.rects
            .iter()
            .rev()
            .find(|(r, _)| r.contains(x, y))
            .map_or(self.background, |&(_, rgb)| rgb)
    }

    /// Check that `frame` shows exactly this scene (B, G, R bytes of every pixel).
    ///
    /// # Panics
    /// On a size mismatch or a wrong pixel, naming the first one and how many differ.
    pub fn assert_shown_by(&self, frame: &Frame) {
        assert_eq!((frame.width(), frame.height()), (self.width, self.height));
        let mut first = None;
        let mut wrong = 0u64;
        for y in 0..self.height {
            for x in 0..self.width {
                let got = frame.pixel(x, y);
                let want = bgr(self.rgb_at(x, y));
                if got[..3] != want {
                    wrong += 1;
                    first.get_or_insert((x, y, got, want));
                }
            }
        }
        if let Some((x, y, got, want)) = first {
            panic!("{wrong} pixels differ; first at ({x}, {y}): got {got:?}, want {want:?} (BGR)");
        }
    }
}

/// Capture into `frame` until the source reports a fresh frame, for at most `timeout`.
///
/// Damage events reach the capturing connection asynchronously, a moment after the drawing
/// client's own round trip; a test that just drew polls here instead of guessing a delay.
pub fn capture_fresh(
    source: &mut dyn Source,
    frame: &mut Frame,
    now: Timestamp,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match source.capture(frame, now)? {
            CaptureOutcome::Fresh => return Ok(()),
            CaptureOutcome::Unchanged if Instant::now() < deadline => {
                thread::sleep(Duration::from_micros(200))
            }
            CaptureOutcome::Unchanged => bail!("no fresh frame within {timeout:?}"),
        }
    }
}

/// Poll `ok` every 10 ms until it holds; panics naming `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// An application that records what is typed into it: `cat` in an xterm at the top left of
/// a display, writing to a file. Killed when dropped.
#[derive(Debug)]
pub struct TypingTarget {
    xterm: Child,
    dir: PathBuf,
    file: PathBuf,
}

impl TypingTarget {
    /// Start it on `display` and wait until `cat` runs.
    pub fn start(display: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "deskwire-typing-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        let file = dir.join("typed.txt");
        let xterm = Command::new("xterm")
            .args(["-geometry", "80x24+0+0", "-e", "sh", "-c"])
            .arg(format!("cat > {}", file.display()))
            .env("DISPLAY", display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting xterm (scripts/setup installs it)")?;
        let target = Self { xterm, dir, file };
        let deadline = Instant::now() + START_TIMEOUT;
        while !target.file.exists() {
            if Instant::now() > deadline {
                bail!("xterm did not start cat within {START_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(target)
    }

    /// What has been typed so far (complete lines: the terminal sends a line at a time).
    pub fn text(&self) -> String {
        fs::read_to_string(&self.file).unwrap_or_default()
    }
}

impl Drop for TypingTarget {
    fn drop(&mut self) {
        let _ = self.xterm.kill();
        let _ = self.xterm.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
