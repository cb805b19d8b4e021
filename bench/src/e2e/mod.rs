//! `deskwire-bench e2e`: a real session per scene, target and viewer in separate
//! processes on loopback WebRTC, with the peers (ffmpeg + x264, the naive crate pipeline) on
//! the same content where there is a real X display to grab.
//!
//! Per scene: the harness starts a broker (in process) and, for real content, an Xvfb with a
//! workload; starts `e2e-viewer`, reads the code, starts `e2e-target` with it; the
//! viewer measures after a warm-up, then the harness freezes the content (stops the
//! workload, or freezes the synthetic source), lets the last picture arrive and compares what
//! the viewer shows with what the target showed.

mod changes;
pub(crate) mod report;
pub(crate) mod roles;
pub(crate) mod workload;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deskwire_capture::{CaptureOutcome, Source, Timestamp, X11Source};
use deskwire_engine::quality::psnr_plane;
use serde::Serialize;

use crate::peers::{self, PeerMeasure, PeerRun};
use roles::{read_luma, TargetReport, ViewerReport};
use workload::Workload;

/// The scenes, in the order they run.
const SCENES: [&str; 11] = [
    "static",
    "typing",
    "scroll",
    "video",
    "drag",
    "x11-static",
    "x11-terminal",
    "x11-window",
    "x11-video",
    "x11-paint",
    "x11-browser",
];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scene to run (repeatable): static, typing, scroll, video, drag (synthetic) or
    /// x11-static, x11-terminal, x11-window, x11-video, x11-paint, x11-browser (real content on an Xvfb
    /// the harness starts).
    /// Default: all.
    #[arg(long = "scene")]
    scenes: Vec<String>,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Seconds measured per scene, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds after the channels open before measuring (the first keyframe, slow start).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Skip the peers (ffmpeg + x264, naive pipeline).
    #[arg(long)]
    no_peers: bool,
    /// A short run that proves the harness works: two scenes, 2 s each, 1 s peers.
    #[arg(long)]
    quick: bool,
    /// One JSON object per scene per line on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Where to write the Markdown table and the latency CDF plot.
    #[arg(long, default_value = "target/bench-e2e")]
    out: PathBuf,
}

/// One scene's figures: deskwire's, the peers', and the ratios.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SceneResult {
    pub scene: String,
    pub width: u32,
    pub height: u32,
    pub seconds: f64,
    pub frames: u64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub fps: f64,
    /// How often a real screen changed in the window (at most 60 a second); `None` for
    /// synthetic scenes.
    pub source_fps: Option<f64>,
    pub kbps: f64,
    pub cpu_ms_per_frame_target: Option<f64>,
    pub cpu_ms_per_frame_viewer: Option<f64>,
    pub cpu_pct_target: f64,
    pub psnr_y_db: Option<f64>,
    pub first_frame_ms: f64,
    pub ffmpeg_x264: Option<PeerMeasure>,
    pub naive: Option<PeerMeasure>,
    /// deskwire / ffmpeg+x264 target CPU per frame.
    pub cpu_ratio_ffmpeg: Option<f64>,
    pub kbps_ratio_ffmpeg: Option<f64>,
    pub cpu_ratio_naive: Option<f64>,
    pub kbps_ratio_naive: Option<f64>,
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let mut scenes: Vec<String> = if args.scenes.is_empty() {
        if args.quick {
            vec!["typing".into(), "x11-terminal".into()]
        } else {
            SCENES.iter().map(|s| (*s).to_owned()).collect()
        }
    } else {
        args.scenes.clone()
    };
    scenes.dedup();
    for s in &scenes {
        if !SCENES.contains(&s.as_str()) {
            bail!("unknown scene {s:?}: expected one of {}", SCENES.join(", "));
        }
    }
    if !args.width.is_multiple_of(2)
        || !args.height.is_multiple_of(2)
        || args.width < 64
        || args.height < 64
    {
        bail!(
            "--width/--height must be even and at least 64 (got {}x{})",
            args.width,
            args.height
        );
    }
    let (seconds, warmup, peer_seconds) = if args.quick {
        (2.0, 0.5, 1.0)
    } else {
        (args.seconds, args.warmup, args.seconds)
    };
    if !(0.5..=600.0).contains(&seconds) || !(0.0..=60.0).contains(&warmup) {
        bail!("--seconds must be in 0.5..=600 and --warmup in 0..=60");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let broker = Broker::start()?;
    let bar = indicatif::ProgressBar::new(scenes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut results = Vec::new();
    for scene in &scenes {
        bar.set_message(scene.clone());
        let plan = Plan {
            scene,
            width: args.width,
            height: args.height,
            seconds,
            warmup,
            peer_seconds: (!args.no_peers).then_some(peer_seconds),
            out: &args.out,
        };
        let r = run_scene(&broker.url, &plan).with_context(|| format!("scene {scene}"))?;
        if args.json {
            bar.suspend(|| report::print_json(&r))?;
        }
        results.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let table = report::markdown(&results);
    if !args.json {
        report::print_table(&table);
    }
    std::fs::write(args.out.join("e2e.md"), &table)?;
    let series: Vec<(String, Vec<f64>)> = results
        .iter()
        .filter(|r| !r.latencies_ms.is_empty())
        .map(|r| (r.scene.clone(), r.latencies_ms.clone()))
        .collect();
    let plot = args.out.join("latency-cdf.svg");
    crate::plot::latency_cdf_svg(
        &plot,
        &format!("capture -> decoded latency, {}x{}", args.width, args.height),
        &series,
    )?;
    tracing::info!(table = %args.out.join("e2e.md").display(), plot = %plot.display(), "written");
    Ok(())
}

struct Plan<'a> {
    scene: &'a str,
    width: u32,
    height: u32,
    seconds: f64,
    warmup: f64,
    peer_seconds: Option<f64>,
    out: &'a std::path::Path,
}

/// The broker, in this process, on its own runtime.
pub(crate) struct Broker {
    pub(crate) url: String,
    _rt: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Broker {
    pub(crate) fn start() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-broker")
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("ws://{}", listener.local_addr()?);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(deskwire_broker::run(
            listener,
            deskwire_broker::BrokerConfig::default(),
            Arc::new(deskwire_broker::SystemClock),
            async move {
                let _ = stop_rx.await;
            },
        ));
        Ok(Self {
            url,
            _rt: rt,
            _stop: stop,
        })
    }
}

/// A child process speaking the line protocol; killed by PID when dropped.
pub(crate) struct Role {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Role {
    pub(crate) fn spawn(name: &'static str, mut cmd: Command) -> Result<Self> {
        // webrtc warns about things that are normal on loopback; keep real problems.
        // `DESKWIRE_BENCH_LOG=<filter>` traces the roles instead, each into its own file.
        match std::env::var("DESKWIRE_BENCH_LOG") {
            Ok(filter) => {
                let path = std::env::temp_dir().join(format!("deskwire-bench-{name}.log"));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                cmd.env("RUST_LOG", filter)
                    .env("NO_COLOR", "1")
                    .stderr(file);
            }
            Err(_) => {
                cmd.env("RUST_LOG", "warn,rtc=error,rtc_ice=error,rtc_dtls=error")
                    .stderr(Stdio::inherit());
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("bench-{name}-out"))
            .spawn(move || {
                for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            child,
            stdin,
            lines,
            name,
        })
    }

    /// The next line that starts with `prefix` (others are skipped), within `timeout`.
    pub(crate) fn expect(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!("the {} said no {prefix:?} within {timeout:?}", self.name)
            })?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_owned());
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn tell(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}").with_context(|| format!("telling the {}", self.name))
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        // Normally it has exited by now; this only stops a stuck one.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn run_scene(broker: &str, plan: &Plan<'_>) -> Result<SceneResult> {
    let exe = std::env::current_exe()?;
    let real = plan.scene.strip_prefix("x11-");
    let xvfb = match real {
        Some(_) => Some(deskwire_tests::Xvfb::start(plan.width, plan.height)?),
        None => None,
    };
    let display = xvfb.as_ref().map(|x| x.display());
    let mut workload = match (real, &display) {
        (Some(kind), Some(d)) => Some(Workload::start(kind, d, plan.width, plan.height)?),
        _ => None,
    };
    let frame_out = plan.out.join(format!("{}-viewer.frame", plan.scene));
    let reference_out = plan.out.join(format!("{}-target.frame", plan.scene));

    let mut cmd = Command::new(&exe);
    cmd.args(["e2e-viewer", "--broker", broker])
        .arg(format!("--warmup-ms={}", (plan.warmup * 1000.0) as u64))
        .arg(format!("--measure-ms={}", (plan.seconds * 1000.0) as u64))
        .arg("--frame-out")
        .arg(&frame_out);
    let mut viewer = Role::spawn("viewer", cmd)?;
    let code = viewer.expect("code ", Duration::from_secs(10))?;

    let mut cmd = Command::new(&exe);
    let source = match (real, &display) {
        (Some(_), Some(_)) => "x11".to_owned(),
        _ => format!("synthetic:{}", plan.scene),
    };
    cmd.args([
        "e2e-target",
        "--broker",
        broker,
        "--code",
        &code,
        "--source",
        &source,
    ])
    .arg(format!("--width={}", plan.width))
    .arg(format!("--height={}", plan.height))
    .arg("--reference-out")
    .arg(&reference_out);
    if let Some(d) = &display {
        cmd.args(["--display", d]);
    }
    let mut target = Role::spawn("target", cmd)?;
    let entered: u64 = target
        .expect("entered ", Duration::from_secs(10))?
        .parse()?;
    let window = Duration::from_secs_f64(plan.warmup + plan.seconds);
    viewer.expect("measure-start", Duration::from_secs(20) + window)?;
    target.tell("start")?;
    let counter = match &display {
        Some(d) => Some(changes::ChangeCounter::start(d)?),
        None => None,
    };
    viewer.expect("measure-end", Duration::from_secs(10) + window)?;
    target.tell("stop")?;
    let source_fps = counter.map(changes::ChangeCounter::finish).transpose()?;
    // Freeze the content, let the last picture arrive, then compare.
    match workload.as_mut() {
        Some(w) => w.stop(),
        None => target.tell("freeze")?,
    }
    std::thread::sleep(Duration::from_millis(800));
    let reference = match &display {
        Some(d) => Some(grab_luma(d)?),
        None => None,
    };
    viewer.tell("snapshot")?;
    let c: ViewerReport = serde_json::from_str(
        &viewer
            .expect("{", Duration::from_secs(10))
            .map(|s| format!("{{{s}"))?,
    )
    .context("the viewer's report")?;
    let t: TargetReport = serde_json::from_str(
        &target
            .expect("{", Duration::from_secs(15))
            .map(|s| format!("{{{s}"))?,
    )
    .context("the target's report")?;
    let reference = match reference {
        Some(r) => r,
        None => read_luma(&reference_out)?,
    };
    let shown = read_luma(&frame_out)?;
    let psnr = (shown.0 == reference.0 && shown.1 == reference.1).then(|| {
        let n = shown.2.len();
        psnr_plane(&shown.2, n, &reference.2, n, n, 1).min(99.0)
    });
    let _ = std::fs::remove_file(&frame_out);
    let _ = std::fs::remove_file(&reference_out);

    let (ffmpeg, naive) = match (plan.peer_seconds, real, &display) {
        (Some(secs), Some(kind), Some(d)) => {
            let run = PeerRun {
                display: d.clone(),
                width: plan.width,
                height: plan.height,
                fps: 60,
                duration: Duration::from_secs_f64(secs),
            };
            let mut w = Workload::start(kind, d, plan.width, plan.height)?;
            std::thread::sleep(Duration::from_millis(300));
            let ffmpeg = peers::ffmpeg_x264(&run)?;
            let naive = peers::naive_pipeline(&run)?;
            w.stop();
            (Some(ffmpeg), Some(naive))
        }
        _ => (None, None),
    };
    drop(xvfb);

    let mut lat = c.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| report::quantile(&lat, p);
    let per_frame = |ms: f64| (c.frames > 0).then(|| ms / c.frames as f64);
    let target_cpf = per_frame(t.cpu_ms);
    let kbps = c.bytes as f64 * 8.0 / 1000.0 / c.measured_s.max(1e-9);
    let ratio = |ours: Option<f64>, theirs: Option<f64>| match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    Ok(SceneResult {
        scene: plan.scene.to_owned(),
        width: plan.width,
        height: plan.height,
        seconds: c.measured_s,
        frames: c.frames,
        latency_ms_p50: q(0.50),
        latency_ms_p95: q(0.95),
        latency_ms_p99: q(0.99),
        fps: c.frames as f64 / c.measured_s.max(1e-9),
        source_fps,
        kbps,
        cpu_ms_per_frame_target: target_cpf,
        cpu_ms_per_frame_viewer: per_frame(c.cpu_ms),
        cpu_pct_target: 100.0 * t.cpu_ms / (t.measured_s.max(1e-9) * 1000.0),
        psnr_y_db: psnr,
        first_frame_ms: c
            .first_frame_unix_us
            .saturating_sub(entered.min(t.entered_unix_us)) as f64
            / 1000.0,
        cpu_ratio_ffmpeg: ratio(target_cpf, ffmpeg.as_ref().map(|p| p.cpu_ms_per_frame)),
        kbps_ratio_ffmpeg: ratio(Some(kbps), ffmpeg.as_ref().map(|p| p.kbps)),
        cpu_ratio_naive: ratio(target_cpf, naive.as_ref().map(|p| p.cpu_ms_per_frame)),
        kbps_ratio_naive: ratio(Some(kbps), naive.as_ref().map(|p| p.kbps)),
        ffmpeg_x264: ffmpeg,
        naive,
        latencies_ms: c.latencies_ms,
    })
}

/// The luma of what `display` shows now.
fn grab_luma(display: &str) -> Result<(u32, u32, Vec<u8>)> {
    let mut src = X11Source::open(Some(display))?;
    let mut frame = src.alloc_frame()?;
    match src.capture(&mut frame, Timestamp::from_micros(1))? {
        CaptureOutcome::Fresh | CaptureOutcome::Unchanged => {}
    }
    let mut luma = Vec::with_capacity((frame.width() * frame.height()) as usize);
    for y in 0..frame.height() {
        deskwire_engine::quality::bgra_luma(
            &frame.row(y)[..(frame.width() * 4) as usize],
            &mut luma,
        );
    }
    Ok((frame.width(), frame.height(), luma))
}
