//! The libwebrtc peer of `deskwire-bench net --peer libwebrtc`: what Chrome (and Chrome
//! Remote Desktop) runs, on the same emulated link and the same content as deskwire.
//!
//! Chromium cannot capture an Xvfb screen here (`getDisplayMedia` answers NotReadableError),
//! so the sender is a headless Chromium in namespace A whose fake camera plays a y4m
//! recording of the bench's synthetic scene, frame for frame what deskwire's target
//! captures (the same scene, seed and 60 frames a second). The receiver is a headless
//! Chromium in B. libwebrtc's encoder (VP8 by default), congestion control (GCC), NACK and
//! jitter buffer run unmodified; the track is marked `contentHint = "detail"`, as screen
//! sharing is, so it keeps the resolution and gives up frames first. The receiver counts
//! what the compositor shows (`requestVideoFrameCallback`) and its capture -> shown time
//! (the frame's `captureTime`, which libwebrtc maps to the receiver's clock from RTCP).

use std::io::{BufWriter, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deskwire_capture::synthetic::{Scene, SyntheticSource};
use deskwire_capture::{Source, Timestamp};
use deskwire_engine::convert::{ColorSpace, I420Image};
use deskwire_netem::testbed::Testbed;
use serde::Deserialize;

use crate::e2e::Role;

pub(crate) mod signal;

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The recording's frame rate: the target captures the synthetic scene at 60 Hz.
const FPS: u32 = 60;
/// The sender may use up to this much; libwebrtc's default ceiling at 1080p is a few
/// Mbit/s, which would hold it below the faster links for no reason of its own.
const MAX_BPS: u32 = 20_000_000;
const SIGNAL_PORT: u16 = 8451;

/// What the receiver page reports after its window.
#[derive(Debug, Deserialize)]
pub(crate) struct PeerReport {
    pub measured_s: f64,
    pub frame_times_ms: Vec<f64>,
    /// Frames the compositor showed in the window (a callback can cover more than one).
    pub presented: u64,
    pub latencies_ms: Vec<f64>,
    pub bytes: u64,
    pub packets_lost: i64,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// One libwebrtc session across `bed`'s link, measured like the deskwire viewer measures.
pub(crate) fn run_session(
    bed: &Testbed,
    recording: &Path,
    out: &Path,
    (width, height): (u32, u32),
    (warmup, seconds): (f64, f64),
    exe: &Path,
) -> Result<PeerReport> {
    if !Path::new(CHROMIUM).exists() {
        bail!("{CHROMIUM} is missing: the libwebrtc peer needs Debian's chromium package (apt-get install chromium)");
    }
    let origin = format!("http://{}:{SIGNAL_PORT}", bed.addr_b());
    let mut cmd = bed.command_in_b(exe);
    cmd.args(["libwebrtc-signal", "--listen"])
        .arg(format!("{}:{SIGNAL_PORT}", bed.addr_b()));
    let signal = Role::spawn("signal", cmd)?;
    signal.expect("listening on ", Duration::from_secs(10))?;

    let receiver = Chromium::start(
        bed.command_in_b(CHROMIUM),
        &out.join("chromium-receiver"),
        &[],
        &format!("{origin}/receiver.html?warmup={warmup}&seconds={seconds}"),
    )?;
    let sender = Chromium::start(
        bed.command_in_a(CHROMIUM),
        &out.join("chromium-sender"),
        &[
            "--use-fake-device-for-media-stream".into(),
            "--use-fake-ui-for-media-stream".into(),
            format!("--use-file-for-fake-video-capture={}", recording.display()),
            // getUserMedia needs a secure context; the page comes over the emulated link.
            format!("--unsafely-treat-insecure-origin-as-secure={origin}"),
        ],
        &format!("{origin}/sender.html?width={width}&height={height}&fps={FPS}&max_bps={MAX_BPS}"),
    )?;
    let started = Instant::now();
    let window = Duration::from_secs_f64(warmup + seconds);
    let report = loop {
        let line = signal
            .expect("event ", Duration::from_secs(40) + window)
            .context("the libwebrtc pages")?;
        let (name, body) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match name {
            "report" => break body.to_owned(),
            "error" => bail!("libwebrtc peer: {body}"),
            "sending" | "connected" | "measure-start" => {
                tracing::debug!("libwebrtc peer {name} {body} after {:?}", started.elapsed());
            }
            other => tracing::debug!("libwebrtc peer said {other} {body}"),
        }
    };
    drop(sender);
    drop(receiver);
    drop(signal);
    serde_json::from_str(&report).context("the libwebrtc receiver's report")
}

/// The synthetic `scene` at `width` x `height`, `frames` frames of I420 in a y4m file at
/// 60 fps, made once and kept beside the bench's output (Chromium's fake camera loops it).
pub(crate) fn recording(
    out: &Path,
    scene: &str,
    (width, height): (u32, u32),
    frames: u32,
) -> Result<PathBuf> {
    let path = out.join(format!("{scene}-{width}x{height}-{FPS}fps-{frames}.y4m"));
    if path.exists() {
        return Ok(path);
    }
    let scene: Scene = scene
        .parse()
        .map_err(|e| anyhow::anyhow!("scene {scene}: {e}"))?;
    // The seed the e2e target's source opens with, so both systems stream the same pixels.
    let seed = deskwire_capture::OpenOptions::default().seed;
    let mut source =
        SyntheticSource::new(scene, width, height, seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut frame = source.alloc_frame().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut i420 = I420Image::new(width, height);
    let partial = path.with_extension("y4m.partial");
    let mut w = BufWriter::with_capacity(
        8 << 20,
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    // C420jpeg is what ffmpeg writes for yuv420p; Chromium's parser reads the 420 family.
    writeln!(w, "YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg")?;
    for i in 0..frames {
        let now = Timestamp::from_micros(u64::from(i) * 1_000_000 / u64::from(FPS));
        source
            .capture(&mut frame, now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        i420.convert_all(&frame, ColorSpace::Bt601Limited)?;
        w.write_all(b"FRAME\n")?;
        w.write_all(i420.y_plane())?;
        w.write_all(i420.u_plane())?;
        w.write_all(i420.v_plane())?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", partial.display(), e.error()))?
        .sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// A headless Chromium in its own process group (it forks a zygote, renderers and a GPU
/// process), stopped as a group when dropped.
struct Chromium {
    child: Child,
}

impl Chromium {
    fn start(
        mut cmd: std::process::Command,
        profile_dir: &Path,
        extra: &[String],
        url: &str,
    ) -> Result<Self> {
        let _ = std::fs::remove_dir_all(profile_dir);
        std::fs::create_dir_all(profile_dir)?;
        let log = std::fs::File::create(profile_dir.with_extension("log"))?;
        cmd.args([
            "--headless",
            // Root in a namespace: the setuid sandbox cannot start there.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            // Host candidates as addresses: an mDNS name does not resolve across namespaces.
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            // A hidden page's timers and frames would be throttled.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
        let child = cmd.spawn().context("starting chromium")?;
        Ok(Self { child })
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let Ok(pgid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals the process group we created for this
        // child (process_group(0) made its pid the group id); no memory is involved.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever of the group is left.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
