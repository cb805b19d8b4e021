//! `deskwire-bench echo`: key to echo as the technician feels it. The viewer's real window
//! on one Xvfb (the technician's desktop), the agent on another (the target's) with `cat`
//! in an xterm; keys pressed on the technician's display with XTEST; the echo found in the
//! window's pixels. Each key is timed from the press to the echo in the window, and split
//! where it can be seen from outside: the agent injecting it (its event, in this process),
//! the xterm drawing it (the target's pixels), the window showing it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deskwire::{Agent, AgentConfig, AgentEvent, InputKind};
use deskwire_capture::X11Source;
use deskwire_tests::session_fixtures::loopback;
use deskwire_tests::{Painter, TypingTarget, Xvfb};
use serde::Serialize;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

use deskwire_netem::testbed::Testbed;
use deskwire_netem::LinkProfile;

use crate::e2e::report::quantile;
use crate::e2e::{Broker, Role};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keys to time (a letter, then the backspace that erases it, and so on).
    #[arg(long, default_value_t = 40)]
    keys: usize,
    /// The target's screen (it must fit the window at 1:1: at most 1600x900).
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Moves of the target's pointer to time (until the window draws it there).
    #[arg(long, default_value_t = 10)]
    pointer: usize,
    /// Clicks to time: on a target window that changes colour when clicked.
    #[arg(long, default_value_t = 10)]
    clicks: usize,
    /// Seconds to measure the window's CPU on a still screen, after the keys (0: skip).
    #[arg(long, default_value_t = 5.0)]
    still: f64,
    /// Run across this emulated link (`deskwire-netem` profile: dsl, cable, ...), the agent
    /// in a network namespace of its own; needs root. Default: loopback.
    #[arg(long)]
    profile: Option<String>,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// One key's times, milliseconds from the press.
#[derive(Debug, Clone, Copy, Serialize)]
struct Key {
    injected_ms: Option<f64>,
    drawn_ms: f64,
    shown_ms: f64,
}

/// The echo region: the first cell of the xterm's first line, where `cat`'s echo of a
/// letter appears and its backspace erases it.
const REGION: (i16, i16, u16, u16) = (0, 0, 24, 20);

/// Where the window that changes colour on a click sits on the target: (x, y, side).
const CLICKER: (i16, i16, u16) = (800, 300, 100);

/// How long a click holds the button down: what a hand does, and longer than the
/// viewer's input poll, which reads button state.
const CLICK_HOLD: Duration = Duration::from_millis(60);

/// How long a key may take before the run fails.
const KEY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn run(args: &Args) -> Result<()> {
    if args.width > 1600 || args.height > 900 {
        bail!("the target's screen must fit the viewer's window at 1:1 (at most 1600x900)");
    }
    let desk = Xvfb::start(1600, 1000).context("the technician's Xvfb")?;
    let target = Xvfb::start(args.width, args.height).context("the target's Xvfb")?;
    let _cat = TypingTarget::start(&target.display())?;
    let ends = match &args.profile {
        None => Ends::loopback(&desk.display(), &target.display())?,
        Some(name) => Ends::across(name, &desk.display(), &target.display())?,
    };
    let desk_x = Display::open(&desk.display())?;
    let target_x = Display::open(&target.display())?;
    let window = desk_x.find_window("deskwire - ", Duration::from_secs(15))?;
    let (wx, wy) = desk_x.origin(window)?;
    // Pointers moved as a mouse moves them (XTEST), which XInput reports as motion.
    let desk_hand = Painter::connect(&desk.display())?;
    let target_hand = Painter::connect(&target.display())?;
    // The pointer over the window: focus follows it (no window manager), and the target's
    // pointer follows onto the xterm, which then has the keyboard.
    desk_hand.move_pointer(wx + 200, wy + 100)?;
    std::thread::sleep(Duration::from_millis(500));
    let local = (wx + REGION.0, wy + REGION.1, REGION.2, REGION.3);

    let letter = desk_x.keycode(b'a')?;
    let backspace = desk_x.keycode_of_keysym(0xff08)?;
    let mut keys = Vec::with_capacity(args.keys);
    for i in 0..args.keys {
        let code = if i % 2 == 0 { letter } else { backspace };
        // Let the previous echo settle everywhere, then take the pictures to compare with.
        std::thread::sleep(Duration::from_millis(150));
        if let Some(events) = ends.agent_events() {
            while events.try_recv().is_ok() {}
        }
        let before_target = target_x.grab(REGION)?;
        let before_window = desk_x.grab(local)?;
        if before_target != target_x.grab(REGION)? {
            bail!("the target's echo region is not still");
        }
        let pressed = Instant::now();
        desk_x.key(code)?;
        let mut injected = None;
        let mut drawn = None;
        let shown = loop {
            let now = pressed.elapsed();
            if now > KEY_TIMEOUT {
                bail!("key {i} was not echoed in the window within {KEY_TIMEOUT:?}");
            }
            while let Some(Ok(e)) = ends.agent_events().map(|r| r.try_recv()) {
                let typed = matches!(
                    e,
                    AgentEvent::InputInjected(InputKind::Key | InputKind::Text)
                );
                if typed && injected.is_none() {
                    injected = Some(pressed.elapsed());
                }
            }
            if drawn.is_none() && target_x.grab(REGION)? != before_target {
                drawn = Some(pressed.elapsed());
            }
            if desk_x.grab(local)? != before_window {
                break pressed.elapsed();
            }
            std::thread::sleep(Duration::from_micros(250));
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        keys.push(Key {
            injected_ms: injected.map(ms),
            drawn_ms: ms(drawn.unwrap_or(shown)),
            shown_ms: ms(shown),
        });
    }
    // The user's pointer, moved on the target as a mouse would: how soon the window draws
    // it there (no picture changes: X grabs leave the pointer out).
    let mut pointer = Vec::with_capacity(args.pointer);
    for i in 0..args.pointer {
        let (x, y) = if i % 2 == 0 { (600, 400) } else { (700, 450) };
        std::thread::sleep(Duration::from_millis(150));
        let region = (wx + x - 8, wy + y - 8, 32, 32);
        let before = desk_x.grab(region)?;
        let moved = Instant::now();
        target_hand.move_pointer(x, y)?;
        let what = format_args!("the window drawing the pointer at ({x}, {y})");
        pointer.push(desk_x.until_changed(region, &before, moved, what)?);
    }
    // A click in the window on a target window that changes colour when clicked.
    let mut clicks = Vec::with_capacity(args.clicks);
    if args.clicks > 0 {
        let _clicker = Clicker::start(&target.display(), CLICKER)?;
        // Its own connection: the server holds a connection whose delayed release waits,
        // and the grabs that time the click must not wait with it.
        let hand = Display::open(&desk.display())?;
        let (cx, cy) = (CLICKER.0 + 50, CLICKER.1 + 50);
        desk_hand.move_pointer(wx + cx, wy + cy)?;
        std::thread::sleep(Duration::from_millis(300));
        let region = (wx + cx - 8, wy + cy - 8, 16, 16);
        for i in 0..args.clicks {
            std::thread::sleep(Duration::from_millis(150));
            let before = desk_x.grab(region)?;
            let clicked = Instant::now();
            hand.click(CLICK_HOLD)?;
            let what = format_args!("click {i} changing the window");
            clicks.push(desk_x.until_changed(region, &before, clicked, what)?);
        }
    }
    // What the window costs while nothing changes (its input poll), over 5 s, once the
    // technician's last key is 4 s old (the viewer polls faster for 3 s after input).
    let still = if args.still > 0.0 {
        std::thread::sleep(Duration::from_secs(4));
        let pid = ends.viewer_pid();
        let before = cpu_ticks(pid)?;
        std::thread::sleep(Duration::from_secs_f64(args.still));
        let ticks = cpu_ticks(pid)?.saturating_sub(before);
        Some(ticks as f64 / ticks_per_second() / args.still * 100.0)
    } else {
        None
    };
    ends.shutdown()?;
    report(args, &keys, &pointer, &clicks, still);
    Ok(())
}

/// User plus system CPU of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which may hold spaces, in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .context("an unreadable /proc stat")
    };
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    Ok(field(11)? + field(12)?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn report(
    args: &Args,
    keys: &[Key],
    pointer: &[f64],
    clicks: &[f64],
    viewer_still_pct: Option<f64>,
) {
    let mut pointer = pointer.to_vec();
    let mut clicks = clicks.to_vec();
    let mut total: Vec<f64> = keys.iter().map(|k| k.shown_ms).collect();
    let mut injected: Vec<f64> = keys.iter().filter_map(|k| k.injected_ms).collect();
    let mut drawn: Vec<f64> = keys
        .iter()
        .filter_map(|k| k.injected_ms.map(|i| k.drawn_ms - i))
        .collect();
    let mut shown: Vec<f64> = keys.iter().map(|k| k.shown_ms - k.drawn_ms).collect();
    let q = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(f64::total_cmp);
        quantile(v, p).unwrap_or(f64::NAN)
    };
    #[derive(Serialize)]
    struct Summary {
        profile: String,
        keys: usize,
        width: u32,
        height: u32,
        p50_ms: f64,
        p90_ms: f64,
        p99_ms: f64,
        press_to_injected_p50_ms: f64,
        injected_to_drawn_p50_ms: f64,
        drawn_to_shown_p50_ms: f64,
        drawn_to_shown_p90_ms: f64,
        pointer_moves: usize,
        pointer_p50_ms: f64,
        pointer_p90_ms: f64,
        clicks: usize,
        click_p50_ms: f64,
        click_p90_ms: f64,
        viewer_still_pct_core: Option<f64>,
    }
    let s = Summary {
        profile: args.profile.clone().unwrap_or_else(|| "loopback".into()),
        keys: keys.len(),
        width: args.width,
        height: args.height,
        p50_ms: q(&mut total, 0.5),
        p90_ms: q(&mut total, 0.9),
        p99_ms: q(&mut total, 0.99),
        press_to_injected_p50_ms: q(&mut injected, 0.5),
        injected_to_drawn_p50_ms: q(&mut drawn, 0.5),
        drawn_to_shown_p50_ms: q(&mut shown, 0.5),
        drawn_to_shown_p90_ms: q(&mut shown, 0.9),
        pointer_moves: pointer.len(),
        pointer_p50_ms: q(&mut pointer, 0.5),
        pointer_p90_ms: q(&mut pointer, 0.9),
        clicks: clicks.len(),
        click_p50_ms: q(&mut clicks, 0.5),
        click_p90_ms: q(&mut clicks, 0.9),
        viewer_still_pct_core: viewer_still_pct,
    };
    // Unknown across a link (the agent is another process): a dash.
    let ms = |v: f64| {
        if v.is_nan() {
            "-".to_owned()
        } else {
            format!("{v:.1}")
        }
    };
    #[allow(clippy::print_stdout)]
    if args.json {
        for k in keys {
            println!("{}", serde_json::to_string(k).unwrap_or_default());
        }
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        println!(
            "| link | keys | key to echo p50 / p90 / p99 ms | press -> injected | injected -> drawn on target | drawn -> shown in window (p50 / p90) | pointer moved -> drawn p50 / p90 | click -> shown p50 / p90 | viewer % core, still |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {:.1} / {:.1} / {:.1} | {} | {} | {:.1} / {:.1} | {} / {} | {} / {} | {} |",
            s.profile,
            s.keys,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            ms(s.press_to_injected_p50_ms),
            ms(s.injected_to_drawn_p50_ms),
            s.drawn_to_shown_p50_ms,
            s.drawn_to_shown_p90_ms,
            ms(s.pointer_p50_ms),
            ms(s.pointer_p90_ms),
            ms(s.click_p50_ms),
            ms(s.click_p90_ms),
            s.viewer_still_pct_core
                .map_or("-".to_owned(), |p| format!("{p:.1}"))
        );
    }
}

/// The two ends of the session the keys travel through.
enum Ends {
    /// All on loopback, the agent in this process: its injections are seen.
    Loopback {
        viewer: Role,
        agent: Agent,
        _broker: Broker,
    },
    /// Across an emulated link: the agent in namespace A, broker and viewer in B; the
    /// X servers are reached through their file-system sockets, which namespaces share.
    Link {
        viewer: Role,
        _agent: Role,
        _broker: Role,
        _bed: Testbed,
    },
}

impl Ends {
    fn loopback(desk: &str, target: &str) -> Result<Self> {
        let broker = Broker::start()?;
        let viewer = start_viewer(Command::new(sibling("deskwire-viewer")?), &broker.url, desk)?;
        let code = viewer.expect("connection code: ", Duration::from_secs(15))?;
        let code = code.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = AgentConfig::new(&broker.url)
            .transport(loopback())
            .input_display(Some(target.to_owned()));
        let source = Box::new(X11Source::open(Some(target))?);
        let agent = Agent::start(config, source, code)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match agent.events().recv_timeout(Duration::from_millis(100)) {
                Ok(AgentEvent::Connected { control: true, .. }) => break,
                Ok(AgentEvent::Connected { .. }) => bail!("the session has no control"),
                Ok(AgentEvent::Disconnected(r)) => bail!("the session ended: {r}"),
                _ if Instant::now() > deadline => bail!("the session did not connect"),
                _ => {}
            }
        }
        Ok(Self::Loopback {
            viewer,
            agent,
            _broker: broker,
        })
    }

    fn across(profile: &str, desk: &str, target: &str) -> Result<Self> {
        let profile = LinkProfile::named(profile).map_err(|e| anyhow::anyhow!("{e}"))?;
        let bed = Testbed::start(&profile, &sibling("deskwire-netem")?).map_err(|e| {
            anyhow::anyhow!(
                "cannot build the emulated link (needs root, iproute2, /dev/net/tun): {e}"
            )
        })?;
        let listen = format!("{}:8450", bed.addr_b());
        let url = format!("ws://{listen}");
        let mut cmd = bed.command_in_b(sibling("deskwire-broker")?);
        cmd.args(["--listen", &listen, "--database", "sqlite::memory:"]);
        let broker = Role::spawn("broker", cmd)?;
        broker.expect("listening on ", Duration::from_secs(10))?;
        let viewer = start_viewer(bed.command_in_b(sibling("deskwire-viewer")?), &url, desk)?;
        let code = viewer.expect("connection code: ", Duration::from_secs(15))?;
        let mut cmd = bed.command_in_a(sibling("deskwire-agent")?);
        cmd.args([
            "--broker",
            &url,
            "--code",
            &code,
            "--source",
            "x11",
            "--display",
            target,
        ])
        .args(["--acceptance", "auto", "--answer-within", "0"]);
        let agent = Role::spawn("agent", cmd)?;
        agent.expect("connected in ", Duration::from_secs(30))?;
        Ok(Self::Link {
            viewer,
            _agent: agent,
            _broker: broker,
            _bed: bed,
        })
    }

    /// The agent's events, when it runs in this process.
    fn agent_events(&self) -> Option<&crossbeam_channel::Receiver<AgentEvent>> {
        match self {
            Self::Loopback { agent, .. } => Some(agent.events()),
            Self::Link { .. } => None,
        }
    }

    fn viewer_pid(&self) -> u32 {
        match self {
            Self::Loopback { viewer, .. } | Self::Link { viewer, .. } => viewer.pid(),
        }
    }

    fn shutdown(self) -> Result<()> {
        if let Self::Loopback { agent, .. } = self {
            agent.shutdown()?;
        }
        Ok(())
    }
}

/// A program next to this one.
fn sibling(name: &str) -> Result<std::path::PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .map(|d| d.join(name))
        .context("no directory of our own")?;
    if !path.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release --workspace)",
            path.display()
        );
    }
    Ok(path)
}

/// The viewer with its window on the technician's display.
fn start_viewer(mut cmd: Command, broker: &str, desk: &str) -> Result<Role> {
    cmd.args(["--broker", broker]).env("DISPLAY", desk);
    Role::spawn("viewer", cmd)
}

/// A window on the target that turns from white to dark and back at each click, as an
/// application answering a click would; its thread ends when the connection closes.
struct Clicker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Clicker {
    fn start(display: &str, (x, y, side): (i16, i16, u16)) -> Result<Self> {
        use x11rb::protocol::xproto::{
            ChangeWindowAttributesAux, CreateWindowAux, EventMask, WindowClass,
        };
        let (conn, screen) = x11rb::connect(Some(display))?;
        let s = &conn.setup().roots[screen];
        let (root, white, black) = (s.root, s.white_pixel, s.black_pixel);
        let w = conn.generate_id()?;
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            w,
            root,
            x,
            y,
            side,
            side,
            0,
            WindowClass::INPUT_OUTPUT,
            x11rb::COPY_FROM_PARENT,
            &CreateWindowAux::new()
                .background_pixel(white)
                .event_mask(EventMask::BUTTON_PRESS),
        )?;
        conn.map_window(w)?;
        conn.get_input_focus()?.reply()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-clicker".into())
            .spawn(move || {
                let mut dark = false;
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    match conn.poll_for_event() {
                        Ok(Some(x11rb::protocol::Event::ButtonPress(_))) => {
                            dark = !dark;
                            let colour = if dark { black } else { white };
                            let aux = ChangeWindowAttributesAux::new().background_pixel(colour);
                            let _ = conn.change_window_attributes(w, &aux);
                            let _ = conn.clear_area(false, w, 0, 0, 0, 0);
                            let _ = conn.flush();
                        }
                        Ok(_) => std::thread::sleep(Duration::from_micros(200)),
                        Err(_) => break,
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Clicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection to one X server: grabs of a small region, XTEST input, the window.
struct Display {
    conn: RustConnection,
    root: Window,
}

impl Display {
    fn open(name: &str) -> Result<Self> {
        let (conn, screen) =
            x11rb::connect(Some(name)).with_context(|| format!("connecting to {name}"))?;
        let root = conn.setup().roots[screen].root;
        Ok(Self { conn, root })
    }

    /// The pixels of `(x, y, w, h)` on the root window (what the screen shows there).
    fn grab(&self, (x, y, w, h): (i16, i16, u16, u16)) -> Result<Vec<u8>> {
        Ok(self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, w, h, !0)?
            .reply()?
            .data)
    }

    /// A top-level window whose name starts with `prefix`.
    fn find_window(&self, prefix: &str, timeout: Duration) -> Result<Window> {
        let deadline = Instant::now() + timeout;
        loop {
            let tree = self.conn.query_tree(self.root)?.reply()?;
            for w in tree.children {
                let name = self
                    .conn
                    .get_property(
                        false,
                        w,
                        x11rb::protocol::xproto::AtomEnum::WM_NAME,
                        x11rb::protocol::xproto::AtomEnum::STRING,
                        0,
                        256,
                    )?
                    .reply()?;
                if name.value.starts_with(prefix.as_bytes()) {
                    return Ok(w);
                }
            }
            if Instant::now() > deadline {
                bail!("no window named {prefix:?}...");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where `window`'s top left is on the screen.
    fn origin(&self, window: Window) -> Result<(i16, i16)> {
        let t = self
            .conn
            .translate_coordinates(window, self.root, 0, 0)?
            .reply()?;
        Ok((t.dst_x, t.dst_y))
    }

    /// Press the left button, and release it `hold` later, as a hand does (a click is
    /// 50-100 ms); returns once the press is delivered, releasing on a thread.
    fn click(&self, hold: Duration) -> Result<()> {
        use x11rb::protocol::xproto::{BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT};
        self.conn.xtest_fake_input(
            BUTTON_PRESS_EVENT,
            1,
            x11rb::CURRENT_TIME,
            self.root,
            0,
            0,
            0,
        )?;
        self.sync()?;
        // The release goes with a delay the server keeps (XTEST's own timer: it holds this
        // connection meanwhile), so timing the click's effect is not held up here.
        let ms = u32::try_from(hold.as_millis()).unwrap_or(u32::MAX);
        self.conn
            .xtest_fake_input(BUTTON_RELEASE_EVENT, 1, ms, self.root, 0, 0, 0)?;
        self.conn.flush()?;
        Ok(())
    }

    /// Milliseconds from `since` until `region` differs from `before`, grabbing it every
    /// 0.25 ms; an error naming `what` after [`KEY_TIMEOUT`].
    fn until_changed(
        &self,
        region: (i16, i16, u16, u16),
        before: &[u8],
        since: Instant,
        what: std::fmt::Arguments<'_>,
    ) -> Result<f64> {
        loop {
            if since.elapsed() > KEY_TIMEOUT {
                bail!("no {what} within {KEY_TIMEOUT:?}");
            }
            if self.grab(region)? != before {
                return Ok(since.elapsed().as_secs_f64() * 1000.0);
            }
            std::thread::sleep(Duration::from_micros(250));
        }
    }

    /// Press and release `keycode`; the server has delivered both when this returns.
    fn key(&self, keycode: u8) -> Result<()> {
        for kind in [
            x11rb::protocol::xproto::KEY_PRESS_EVENT,
            x11rb::protocol::xproto::KEY_RELEASE_EVENT,
        ] {
            self.conn
                .xtest_fake_input(kind, keycode, x11rb::CURRENT_TIME, self.root, 0, 0, 0)?;
        }
        self.sync()
    }

    fn keycode(&self, ascii: u8) -> Result<u8> {
        self.keycode_of_keysym(u32::from(ascii))
    }

    /// The keycode that types `keysym` without modifiers.
    fn keycode_of_keysym(&self, keysym: u32) -> Result<u8> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let map = self
            .conn
            .get_keyboard_mapping(min, max - min + 1)?
            .reply()?;
        let per = usize::from(map.keysyms_per_keycode).max(1);
        map.keysyms
            .chunks(per)
            .position(|syms| syms.first() == Some(&keysym))
            .map(|i| min + i as u8)
            .with_context(|| format!("no keycode types keysym {keysym:#x}"))
    }

    fn sync(&self) -> Result<()> {
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }
}
