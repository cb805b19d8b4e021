//! The real content of the `x11-*` scenes: programs started on the scene's Xvfb and stopped
//! (by PID, or by the process group the browser was started in) with it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Real content on an Xvfb: processes started for the scene and stopped (by PID) with it.
pub(crate) struct Workload {
    children: Vec<Child>,
    browser: Option<Browser>,
}

impl Workload {
    pub(crate) fn start(kind: &str, display: &str, width: u32, height: u32) -> Result<Self> {
        let spawn = |program: &str, args: &[&str]| -> Result<Child> {
            Command::new(program)
                .args(args)
                .env("DISPLAY", display)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {program} (scripts/setup installs it)"))
        };
        let children = match kind {
            // A terminal that printed a listing and waits: what an idle desktop costs.
            "static" => vec![spawn(
                "xterm",
                &[
                    "-geometry",
                    "120x40+0+0",
                    "+bc",
                    "-e",
                    "sh",
                    "-c",
                    "ls -l /usr/share | head -n 38; exec sleep 100000",
                ],
            )?],
            // A terminal printing text as fast as it can: scrolling lines of text.
            "terminal" => vec![spawn(
                "xterm",
                &[
                    "-geometry",
                    "200x60+0+0",
                    "-e",
                    "sh",
                    "-c",
                    "while :; do ls -lR /usr/share; done",
                ],
            )?],
            // A terminal window dragged across the screen, about 60 moves a second.
            "window" => {
                let term = spawn(
                    "xterm",
                    &[
                        "-title",
                        "bench-moved",
                        "-geometry",
                        "100x30+0+100",
                        "-e",
                        "top",
                        "-d",
                        "0.5",
                    ],
                )?;
                std::thread::sleep(Duration::from_millis(500));
                let script = format!(
                    "w=$(xdotool search --name bench-moved | head -1); \
                     while :; do for x in $(seq 0 24 {}); do xdotool windowmove $w $x 100; sleep 0.016; done; done",
                    width.saturating_sub(700)
                );
                vec![term, spawn("sh", &["-c", &script])?]
            }
            // A full-screen colour field sliding at a steady 60 fps (`paint.rs`): ffplay
            // below presents only ~30 distinct frames a second on these two cores.
            "paint" => vec![spawn(
                &std::env::current_exe()?.to_string_lossy(),
                &["paint", "--display", display],
            )?],
            // Full-screen video: ffplay playing a moving test pattern at 60 fps.
            "video" => {
                let size = format!("testsrc2=size={width}x{height}:rate=60");
                vec![spawn(
                    "ffplay",
                    &[
                        "-hide_banner",
                        "-loglevel",
                        "error",
                        "-noborder",
                        "-left",
                        "0",
                        "-top",
                        "0",
                        "-x",
                        &width.to_string(),
                        "-y",
                        &height.to_string(),
                        "-f",
                        "lavfi",
                        &size,
                    ],
                )?]
            }
            // A web page scrolling itself in a full-screen browser: text, headings, pictures.
            "browser" => {
                let browser = Browser::start(display, width, height)?;
                return Ok(Self {
                    children: Vec::new(),
                    browser: Some(browser),
                });
            }
            other => bail!("unknown real scene {other}"),
        };
        std::thread::sleep(Duration::from_millis(700));
        Ok(Self {
            children,
            browser: None,
        })
    }

    pub(crate) fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        self.browser = None;
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Chromium showing [`page`] full screen on the scene's display, in its own process group
/// (it forks a zygote, renderers and a GPU process), stopped as a group when dropped.
struct Browser {
    child: Child,
    dir: PathBuf,
}

impl Browser {
    fn start(display: &str, width: u32, height: u32) -> Result<Self> {
        const CHROMIUM: &str = "/usr/bin/chromium";
        if !std::path::Path::new(CHROMIUM).exists() {
            bail!("{CHROMIUM} is missing: the browser scene needs Debian's chromium package (scripts/setup installs it)");
        }
        let dir = std::env::temp_dir().join(format!(
            "deskwire-browser-{}-{}",
            std::process::id(),
            display.trim_start_matches(':')
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("profile"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let page_path = dir.join("page.html");
        std::fs::write(&page_path, page())?;
        let child = Command::new(CHROMIUM)
            .args([
                "--ozone-platform=x11",
                // Root: the setuid sandbox cannot start; --test-type hides the warning bar
                // about it, which would otherwise sit on top of the page.
                "--no-sandbox",
                "--test-type",
                "--disable-gpu",
                "--no-first-run",
                "--noerrdialogs",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-features=Translate",
                "--force-device-scale-factor=1",
                "--kiosk",
                "--window-position=0,0",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(format!("file://{}", page_path.display()))
            .env("DISPLAY", display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromium")?;
        let browser = Self { child, dir };
        wait_until_moving(display)?;
        Ok(browser)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this child leads (process_group(0));
            // no memory is involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait until the screen changes on every look for half a second: the page is up and
/// scrolling (the browser's start draws in bursts, never that steadily).
fn wait_until_moving(display: &str) -> Result<()> {
    use deskwire_capture::{CaptureOutcome, Source, Timestamp, X11Source};
    let mut src = X11Source::open(Some(display))?;
    let mut frame = src.alloc_frame()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut steady = 0;
    while steady < 10 {
        if Instant::now() > deadline {
            bail!("the browser page did not start scrolling within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
        steady = match src.capture(&mut frame, Timestamp::from_micros(1))? {
            CaptureOutcome::Fresh => steady + 1,
            CaptureOutcome::Unchanged => 0,
        };
    }
    Ok(())
}

/// A long page of a made-up product's documentation that scrolls itself 4 px every
/// animation frame and starts over at the end: a fixed header, a sidebar, headings, prose,
/// code, tables and coloured figures, as a technician reading a web page sees it.
fn page() -> String {
    let mut w = Words(0x2545_f491);
    let mut body = String::new();
    for section in 0..40 {
        body.push_str(&format!("<h2>{} {}</h2>\n", section + 1, w.sentence(4)));
        for p in 0..3 {
            let text: Vec<String> = (0..5).map(|i| w.sentence(6 + (i * 3 + p) % 9)).collect();
            body.push_str(&format!("<p>{}</p>\n", text.join(" ")));
        }
        match section % 4 {
            0 => body.push_str(&format!(
                "<pre>fn {}() {{\n    let {} = {}({});\n    {}.{}()?;\n}}</pre>\n",
                w.word(), w.word(), w.word(), section, w.word(), w.word()
            )),
            1 => {
                body.push_str("<table><tr><th>name</th><th>kind</th><th>size</th></tr>");
                for r in 0..5 {
                    body.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td>{} KB</td></tr>",
                        w.word(), w.word(), (section * 37 + r * 11) % 900
                    ));
                }
                body.push_str("</table>\n");
            }
            2 => body.push_str(&format!(
                "<div class=fig style=\"background:linear-gradient({}deg,#{:06x},#{:06x})\"></div>\n",
                section * 23 % 360,
                (section as u32 * 0x3a5f17) & 0xffffff,
                (section as u32 * 0x91c3e5 + 0x404040) & 0xffffff
            )),
            _ => {}
        }
    }
    let nav: String = (0..30)
        .map(|i| format!("<li>{} {}</li>", i + 1, w.word()))
        .collect();
    format!(
        r#"<!doctype html><html><head><meta charset=utf-8><title>deskwire bench page</title><style>
body {{ margin: 0; font: 16px/1.5 sans-serif; color: #222; background: #fff; }}
header {{ position: fixed; top: 0; left: 0; right: 0; height: 56px; background: #1d3557; color: #fff; font-size: 22px; padding: 12px 24px; box-sizing: border-box; }}
nav {{ position: fixed; top: 56px; left: 0; bottom: 0; width: 260px; background: #f1f3f5; overflow: hidden; font-size: 14px; }}
main {{ margin: 72px 80px 0 300px; max-width: 1100px; }}
pre {{ background: #272822; color: #f8f8f2; padding: 12px; font-size: 14px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 12px; }}
.fig {{ height: 240px; margin: 16px 0; border-radius: 8px; }}
</style></head><body><header>deskwire bench &mdash; {}</header><nav><ul>{nav}</ul></nav><main>{body}</main>
<script>
let y = 0;
function step() {{
  y += 4;
  if (y > document.documentElement.scrollHeight - innerHeight) y = 0;
  window.scrollTo({{ top: y, behavior: 'instant' }});
  requestAnimationFrame(step);
}}
requestAnimationFrame(step);
</script></body></html>"#,
        w.sentence(3)
    )
}

/// Made-up words from a fixed seed: the page is the same on every run.
struct Words(u32);

impl Words {
    /// Words of no language, so the text is ours; lengths vary like prose.
    const LIST: [&'static str; 24] = [
        "lorvan", "ti", "castemor", "ul", "brenna", "quodal", "sen", "paravil", "em", "torrent",
        "vask", "idomel", "a", "fenwick", "ral", "sumetra", "or", "kipple", "nov", "dastrel",
        "ombi", "wester", "lo", "grisham",
    ];

    fn word(&mut self) -> &'static str {
        // xorshift32
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        Self::LIST[self.0 as usize % Self::LIST.len()]
    }

    fn sentence(&mut self, n: usize) -> String {
        let mut s: String = (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ");
        if let Some(c) = s.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        s.push('.');
        s
    }
}
