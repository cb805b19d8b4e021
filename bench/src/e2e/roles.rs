//! The two ends of an `e2e` session, each in its own process (hidden subcommands), driven by
//! the harness through a line protocol on stdin/stdout.
//!
//! Viewer (stdout): `code <CODE>`, `measure-start`, `measure-end`, then after the harness
//! writes `snapshot` it saves its last decoded picture and prints one JSON
//! [`ViewerReport`]. Target (stdout): `entered <unix us>`; stdin `start` and `stop` bound
//! the CPU measurement, `freeze` stops the source changing, and when the session ends it
//! prints one JSON [`TargetReport`].
// The line protocol with the harness is this module's output.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use deskwire::{
    Agent, AgentConfig, AgentEvent, TransportConfig, Viewer, ViewerConfig, ViewerEvent,
};
use deskwire_capture::{
    open, CaptureError, CaptureOutcome, Frame, OpenOptions, PointerState, Source, SourceSpec,
    Timestamp, Waited,
};
use serde::{Deserialize, Serialize};

/// `deskwire-bench e2e-viewer`.
#[derive(Debug, clap::Args)]
pub(crate) struct ViewerArgs {
    #[arg(long)]
    broker: String,
    /// Milliseconds after the channels open before measuring.
    #[arg(long)]
    warmup_ms: u64,
    /// Milliseconds to measure.
    #[arg(long)]
    measure_ms: u64,
    /// Where to write the last decoded picture.
    #[arg(long)]
    frame_out: PathBuf,
    /// The address to gather candidates on (loopback by default; a namespace's own
    /// address for `net`).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Turn the loss shield off (parities and the reordering hold under SCTP).
    #[arg(long)]
    no_loss_shield: bool,
}

/// `deskwire-bench e2e-target`.
#[derive(Debug, clap::Args)]
pub(crate) struct TargetArgs {
    #[arg(long)]
    broker: String,
    #[arg(long)]
    code: String,
    #[arg(long)]
    source: String,
    #[arg(long)]
    display: Option<String>,
    #[arg(long)]
    width: u32,
    #[arg(long)]
    height: u32,
    /// Where to write the last picture the source gave (synthetic sources only).
    #[arg(long)]
    reference_out: PathBuf,
    /// The address to gather candidates on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Turn the loss shield off.
    #[arg(long)]
    no_loss_shield: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ViewerReport {
    pub first_frame_unix_us: u64,
    pub frames: u64,
    pub bytes: u64,
    pub measured_s: f64,
    pub cpu_ms: f64,
    /// Capture->decoded latency of every frame decoded while measuring.
    pub latencies_ms: Vec<f64>,
    /// When each frame was first shown, milliseconds into the measurement.
    pub frame_times_ms: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TargetReport {
    pub entered_unix_us: u64,
    pub cpu_ms: f64,
    pub measured_s: f64,
}

fn bound(ip: IpAddr, no_loss_shield: bool) -> TransportConfig {
    TransportConfig::default()
        .bind(vec![ip])
        .loss_shield(!no_loss_shield)
}

pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CPU time (user + system) this process has used, in milliseconds.
pub(crate) fn cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: zero-initialised and filled by a successful getrusage.
    let u = unsafe { usage.assume_init() };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(u.ru_utime) + ms(u.ru_stime)
}

/// Lines from stdin, read on their own thread.
fn stdin_lines() -> Result<crossbeam_channel::Receiver<String>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("bench-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line.trim().to_owned()).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// A picture as the harness stores it: width and height (u32 LE), then BGRA rows.
pub(crate) fn write_frame(path: &Path, f: &Frame) -> Result<()> {
    let mut out = Vec::with_capacity(8 + (f.width() * f.height() * 4) as usize);
    out.extend_from_slice(&f.width().to_le_bytes());
    out.extend_from_slice(&f.height().to_le_bytes());
    for y in 0..f.height() {
        out.extend_from_slice(&f.row(y)[..(f.width() * 4) as usize]);
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Y plane (BT.601) of a stored picture: (width, height, luma).
pub(crate) fn read_luma(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 8 {
        bail!("{} is not a stored picture", path.display());
    }
    let w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let h = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let px = &bytes[8..];
    if px.len() != (w as usize) * (h as usize) * 4 {
        bail!("{}: {} bytes for {w}x{h}", path.display(), px.len());
    }
    let mut luma = Vec::with_capacity(px.len() / 4);
    deskwire_engine::quality::bgra_luma(px, &mut luma);
    Ok((w, h, luma))
}

pub(crate) fn run_viewer(args: &ViewerArgs) -> Result<()> {
    let stdin = stdin_lines()?;
    let c = Viewer::start(
        ViewerConfig::new(&args.broker).transport(bound(args.bind, args.no_loss_shield)),
    )?;
    let warmup = Duration::from_millis(args.warmup_ms);
    let measure = Duration::from_millis(args.measure_ms);
    let mut first_frame = 0u64;
    let mut start: Option<(Instant, f64, (u64, u64))> = None;
    let mut end: Option<(Instant, f64, (u64, u64))> = None;
    let mut connected: Option<Instant> = None;
    let mut latencies = Vec::new();
    let mut frame_times = Vec::new();
    let mut last_frame = None;
    let deadline = Instant::now() + Duration::from_secs(60) + warmup + measure;
    loop {
        if Instant::now() > deadline {
            bail!("the session did not run to the end in time");
        }
        // Until the next thing due (the window's start or end), not a fixed poll: the
        // viewer's CPU is measured over this whole process.
        let due = match (connected, start, end) {
            (Some(t0), None, _) => warmup.saturating_sub(t0.elapsed()),
            (_, Some(s), None) => measure.saturating_sub(s.0.elapsed()),
            _ => Duration::from_millis(20),
        };
        if end.is_some() && matches!(stdin.try_recv().as_deref(), Ok("snapshot")) {
            break;
        }
        if let Ok(e) = c
            .events()
            .recv_timeout(due.clamp(Duration::from_millis(1), Duration::from_millis(20)))
        {
            match e {
                ViewerEvent::Code { code, .. } => say(&format!("code {code}")),
                ViewerEvent::Connected { .. } => connected = Some(Instant::now()),
                ViewerEvent::Frame(f) => {
                    if first_frame == 0 {
                        first_frame = unix_us();
                    }
                    if let (Some(s), None) = (start, end) {
                        if let Some(l) = f.latency {
                            latencies.push(l.as_secs_f64() * 1000.0);
                        }
                        // A frame whose bands came in several groups is shown once.
                        if last_frame != Some(f.frame_id) {
                            last_frame = Some(f.frame_id);
                            frame_times.push(s.0.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                }
                ViewerEvent::Disconnected(r) => bail!("the session ended early: {r}"),
                _ => {}
            }
        }
        let Some(t0) = connected else { continue };
        if start.is_none() && t0.elapsed() >= warmup {
            start = Some((Instant::now(), cpu_ms(), c.totals()));
            say("measure-start");
        }
        if let (Some(s), None) = (start, end) {
            if s.0.elapsed() >= measure {
                end = Some((Instant::now(), cpu_ms(), c.totals()));
                say("measure-end");
            }
        }
    }
    let (Some(s), Some(e)) = (start, end) else {
        bail!("no measurement window");
    };
    c.with_frame(|f| write_frame(&args.frame_out, f))
        .context("no frame was decoded")??;
    let report = ViewerReport {
        first_frame_unix_us: first_frame,
        frames: e.2 .0 - s.2 .0,
        bytes: e.2 .1 - s.2 .1,
        measured_s: (e.0 - s.0).as_secs_f64(),
        cpu_ms: e.1 - s.1,
        latencies_ms: latencies,
        frame_times_ms: frame_times,
    };
    say(&serde_json::to_string(&report)?);
    c.shutdown()?;
    Ok(())
}

/// Passes captures through until frozen; counts them, so a synthetic scene's last picture can
/// be rebuilt afterwards by replaying as many captures on a fresh instance.
struct Freezable {
    inner: Box<dyn Source>,
    frozen: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl Source for Freezable {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }
    fn alloc_frame(&mut self) -> Result<Frame, CaptureError> {
        self.inner.alloc_frame()
    }
    fn capture(
        &mut self,
        frame: &mut Frame,
        now: Timestamp,
    ) -> Result<CaptureOutcome, CaptureError> {
        if self.frozen.load(Relaxed) {
            return Ok(CaptureOutcome::Unchanged);
        }
        self.calls.fetch_add(1, Relaxed);
        self.inner.capture(frame, now)
    }
    // Forwarded, or the session would see a source that cannot wait and tick at 60 Hz.
    fn wait(&mut self, timeout: Duration) -> Result<Waited, CaptureError> {
        self.inner.wait(timeout)
    }
    fn pointer(&mut self) -> Result<Option<PointerState>, CaptureError> {
        self.inner.pointer()
    }
}

pub(crate) fn run_target(args: &TargetArgs) -> Result<()> {
    let mut stdin = stdin_lines()?;
    let spec: SourceSpec = args.source.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = OpenOptions {
        display: args.display.clone(),
        width: args.width,
        height: args.height,
        ..OpenOptions::default()
    };
    let frozen = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let source = Freezable {
        inner: open(&spec, &opts).with_context(|| format!("opening {spec}"))?,
        frozen: frozen.clone(),
        calls: calls.clone(),
    };
    let mut config = AgentConfig::new(&args.broker)
        .transport(bound(args.bind, args.no_loss_shield))
        .view_only(true);
    if let Some(d) = &args.display {
        config = config.input_display(Some(d.clone()));
    }
    let code = args.code.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let entered = unix_us();
    let host = Agent::start(config, Box::new(source), code)?;
    say(&format!("entered {entered}"));
    let mut start: Option<(Instant, f64)> = None;
    let mut end: Option<(Instant, f64)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    // Blocking, not polling: the target's CPU is measured over this whole process.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        crossbeam_channel::select! {
            recv(stdin) -> line => match line.as_deref() {
                Ok("start") => start = Some((Instant::now(), cpu_ms())),
                Ok("stop") => end = Some((Instant::now(), cpu_ms())),
                Ok("freeze") => frozen.store(true, Relaxed),
                Ok(_) => {}
                // The harness closed our stdin: nothing more will be said.
                Err(_) => stdin = crossbeam_channel::never(),
            },
            recv(host.events()) -> e => match e {
                Ok(AgentEvent::Disconnected(_)) | Err(_) => break,
                Ok(_) => {}
            },
            default(left) => bail!("the session did not end in time"),
        }
    }
    host.shutdown()?;
    if matches!(spec, SourceSpec::Synthetic(_)) {
        // Replay: the same scene, stepped as many times, shows the same last picture.
        let mut replay = open(&spec, &opts)?;
        let mut frame = replay.alloc_frame()?;
        let n = calls.load(Relaxed);
        for i in 0..n {
            replay.capture(&mut frame, Timestamp::from_micros(i + 1))?;
        }
        write_frame(&args.reference_out, &frame)?;
    }
    let (Some(s), Some(e)) = (start, end) else {
        bail!("the harness never bounded the measurement");
    };
    let report = TargetReport {
        entered_unix_us: entered,
        cpu_ms: e.1 - s.1,
        measured_s: (e.0 - s.0).as_secs_f64(),
    };
    say(&serde_json::to_string(&report)?);
    Ok(())
}
