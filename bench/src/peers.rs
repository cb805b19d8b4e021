//! Peers: what a user would run instead of deskwire, measured on the same live X display.
//!
//! - [`ffmpeg_x264`]: `ffmpeg -f x11grab ... -c:v libx264 -preset ultrafast -tune zerolatency`,
//!   the usual one-liner for streaming a screen.
//! - [`naive_pipeline`]: the plain crates without deskwire's design: `xcap` screenshot ->
//!   `yuv` RGBA->I420 of the whole frame -> one `openh264` encoder, every frame, every tick.
//!
//! Both count the CPU of capture, conversion and encoding, not the X server's.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use deskwire_engine::quality::psnr_plane;
use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, UsageType};
use openh264::formats::{YUVSlices, YUVSource};
use openh264::OpenH264API;
use serde::{Deserialize, Serialize};
use yuv::{
    YuvChromaSubsampling, YuvConversionMode, YuvPlanarImageMut, YuvRange, YuvStandardMatrix,
};

/// One peer measurement on a live X display that already shows the workload.
#[derive(Debug, Clone)]
pub(crate) struct PeerRun {
    /// X display, e.g. `":99"`.
    pub display: String,
    /// Captured width: the whole screen (even).
    pub width: u32,
    /// Captured height: the whole screen (even).
    pub height: u32,
    /// Target frame rate.
    pub fps: u32,
    /// How long to capture.
    pub duration: Duration,
}

/// What one peer achieved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerMeasure {
    /// Frames encoded.
    pub frames: u64,
    /// Screen pictures captured per second (for ffmpeg: not counting the duplicates it inserts
    /// to keep a constant output rate when a grab comes late).
    pub fps: f64,
    /// Encoded stream size over the run, in kilobits per second.
    pub kbps: f64,
    /// CPU time (user + system) of capture, conversion and encoding per encoded frame.
    pub cpu_ms_per_frame: f64,
    /// Mean over frames of the Y-PSNR of the decoded picture against the encoder's input,
    /// capped at 99 dB (identical pictures).
    pub psnr_y_db: Option<f64>,
}

/// Reported instead of an infinite PSNR (identical pictures), so means stay finite.
const PSNR_CAP_DB: f64 = 99.0;
/// Time a peer may take beyond its capture duration (start-up, flushing, decoding the tail)
/// before it is killed.
const GRACE: Duration = Duration::from_secs(30);
/// How often a bounded wait checks on its child.
const POLL: Duration = Duration::from_millis(10);
/// Encoded frames waiting for the quality check: a slow check holds capture back rather than
/// piling up full-size planes.
const DECODE_QUEUE: usize = 4;

fn validate(run: &PeerRun) -> Result<()> {
    ensure!(!run.display.is_empty(), "no X display given");
    ensure!(
        run.width >= 16
            && run.height >= 16
            && run.width.is_multiple_of(2)
            && run.height.is_multiple_of(2),
        "invalid size {}x{} (expected even sides of at least 16 for 4:2:0 video)",
        run.width,
        run.height
    );
    ensure!(
        (1..=240).contains(&run.fps),
        "invalid fps {} (expected 1..=240)",
        run.fps
    );
    ensure!(
        (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&run.duration),
        "invalid duration {:?} (expected 100 ms ..= 1 h)",
        run.duration
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ffmpeg + x264

/// `ffmpeg -f x11grab ... -c:v libx264 -preset ultrafast -tune zerolatency` on `run.display`,
/// run twice, so this takes about `2 * run.duration`:
///
/// 1. without `-psnr`, for frames, fps, kbps and CPU: computing PSNR costs libx264 CPU that a
///    user's stream would not spend;
/// 2. with `-psnr`, for quality only: libx264 compares each reconstructed picture with its
///    input and logs `PSNR Mean Y:` (mean over frames) in its summary.
///
/// CPU is the child's user + system time from `wait4` (capture, colour conversion, encoding,
/// and ffmpeg's start-up), divided by encoded frames. Fails, naming the package, when ffmpeg is
/// not installed.
pub(crate) fn ffmpeg_x264(run: &PeerRun) -> Result<PeerMeasure> {
    validate(run)?;
    let dir = TempDir::new("ffmpeg")?;
    let timed = ffmpeg_once(run, &dir, false).context("ffmpeg run for speed and size")?;
    let rated = ffmpeg_once(run, &dir, true).context("ffmpeg run for quality (-psnr)")?;
    let psnr = parse_x264_psnr_y(&rated.stderr).with_context(|| {
        format!(
            "libx264 logged no `PSNR Mean Y` summary; its output ended with:\n{}",
            tail(&rated.stderr)
        )
    })?;
    let p = timed.progress;
    ensure!(
        p.frames > 0,
        "ffmpeg encoded no frame:\n{}",
        tail(&timed.stderr)
    );
    let secs = run.duration.as_secs_f64();
    tracing::debug!(?p, cpu = ?timed.cpu, bytes = timed.bytes, psnr, "ffmpeg peer done");
    Ok(PeerMeasure {
        frames: p.frames,
        fps: p.frames.saturating_sub(p.dup_frames) as f64 / secs,
        kbps: timed.bytes as f64 * 8.0 / 1000.0 / secs,
        cpu_ms_per_frame: timed.cpu.as_secs_f64() * 1000.0 / p.frames as f64,
        psnr_y_db: Some(psnr.min(PSNR_CAP_DB)),
    })
}

struct FfmpegOutcome {
    progress: FfmpegProgress,
    stderr: String,
    bytes: u64,
    cpu: Duration,
}

fn ffmpeg_once(run: &PeerRun, dir: &TempDir, psnr: bool) -> Result<FfmpegOutcome> {
    let tag = if psnr { "psnr" } else { "timed" };
    let out = dir.0.join(format!("{tag}.h264"));
    let progress = dir.0.join(format!("{tag}.progress"));
    let stderr_path = dir.0.join(format!("{tag}.stderr"));
    let mut cmd = Command::new("ffmpeg");
    // `-progress` writes key=value blocks ending in `progress=end`: made for machines, unlike
    // the human status line. Files, not pipes: nothing to drain while waiting.
    cmd.args(["-hide_banner", "-nostats", "-nostdin", "-y", "-progress"])
        .arg(&progress)
        .args(["-f", "x11grab", "-video_size"])
        .arg(format!("{}x{}", run.width, run.height))
        .arg("-framerate")
        .arg(run.fps.to_string())
        .arg("-i")
        .arg(&run.display)
        .arg("-t")
        .arg(format!("{:.3}", run.duration.as_secs_f64()))
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .args(["-preset", "ultrafast", "-tune", "zerolatency"]);
    if psnr {
        cmd.arg("-psnr");
    }
    cmd.args(["-f", "h264"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).context("creating ffmpeg's log file")?);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("ffmpeg is not installed or not on PATH (install it: apt-get install ffmpeg)")
        } else {
            anyhow!(e).context("starting ffmpeg")
        }
    })?;
    let (status, cpu) = wait_bounded(&mut child, run.duration + GRACE, "ffmpeg")?;
    let stderr = read_lossy(&stderr_path);
    ensure!(
        status.success(),
        "ffmpeg failed ({status}):\n{}",
        tail(&stderr)
    );
    let text = std::fs::read_to_string(&progress).context("reading ffmpeg's -progress file")?;
    let progress = parse_progress(&text)?;
    let bytes = std::fs::metadata(&out)
        .with_context(|| format!("ffmpeg wrote no {}", out.display()))?
        .len();
    Ok(FfmpegOutcome {
        progress,
        stderr,
        bytes,
        cpu,
    })
}

/// Final figures of an ffmpeg `-progress` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FfmpegProgress {
    frames: u64,
    dup_frames: u64,
    drop_frames: u64,
}

/// The last block of a `-progress` report, which must end in `progress=end` (ffmpeg writes
/// that only when it finished normally).
fn parse_progress(text: &str) -> Result<FfmpegProgress> {
    let mut block: Vec<(&str, &str)> = Vec::new();
    let mut last: Option<(Vec<(&str, &str)>, bool)> = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        if key == "progress" {
            last = Some((std::mem::take(&mut block), value == "end"));
        } else {
            block.push((key, value.trim()));
        }
    }
    let Some((block, true)) = last else {
        bail!("ffmpeg's -progress report has no final block (progress=end)");
    };
    let get = |key: &str| -> Result<Option<u64>> {
        block
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| {
                v.parse()
                    .with_context(|| format!("bad {key}={v:?} in -progress"))
            })
            .transpose()
    };
    Ok(FfmpegProgress {
        frames: get("frame")?.context("no frame= in ffmpeg's final -progress block")?,
        dup_frames: get("dup_frames")?.unwrap_or(0),
        drop_frames: get("drop_frames")?.unwrap_or(0),
    })
}

/// The mean Y-PSNR of libx264's closing summary (`[libx264 @ 0x..] PSNR Mean Y:48.336 ...`),
/// not the per-frame-type lines (`frame P:119 ... PSNR Mean Y:..`).
fn parse_x264_psnr_y(stderr: &str) -> Option<f64> {
    stderr
        .split(['\n', '\r'])
        .filter(|l| l.starts_with("[libx264"))
        .filter_map(|l| l.split_once("] ")?.1.strip_prefix("PSNR Mean Y:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
}

// ---------------------------------------------------------------------------------------------
// The naive library pipeline

/// Arguments of the hidden `peer-naive` subcommand, which [`naive_pipeline`] runs in a child
/// process: xcap reads `$DISPLAY`, and setting it in a multi-threaded process is unsound.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NaiveArgs {
    /// X display; must equal $DISPLAY (xcap reads the environment, the parent sets both).
    #[arg(long)]
    display: String,
    /// Screen width.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// Screen height.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Capture ticks per second.
    #[arg(long, default_value_t = 60)]
    fps: u32,
    /// How long to capture, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    millis: u64,
    /// Encoder target bitrate: deskwire's default, so both aim at the same size.
    #[arg(long, default_value_t = 8_000_000)]
    bitrate: u32,
}

/// The naive pipeline on `run.display`, measured in a child `deskwire-bench peer-naive`
/// (this executable) with `DISPLAY` set, which prints one JSON [`PeerMeasure`] line.
pub(crate) fn naive_pipeline(run: &PeerRun) -> Result<PeerMeasure> {
    validate(run)?;
    let exe = std::env::current_exe().context("finding deskwire-bench's own executable")?;
    let dir = TempDir::new("naive")?;
    let (out_path, err_path) = (dir.0.join("stdout"), dir.0.join("stderr"));
    let mut child = Command::new(&exe)
        .arg("peer-naive")
        .args(["--display", &run.display])
        .args(["--width", &run.width.to_string()])
        .args(["--height", &run.height.to_string()])
        .args(["--fps", &run.fps.to_string()])
        .args(["--millis", &run.duration.as_millis().to_string()])
        .env("DISPLAY", &run.display)
        // xcap would take the Wayland portal path instead of the X display.
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("XDG_SESSION_TYPE")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).context("creating the peer's output file")?)
        .stderr(File::create(&err_path).context("creating the peer's log file")?)
        .spawn()
        .with_context(|| format!("starting {} peer-naive", exe.display()))?;
    let (status, _) = wait_bounded(&mut child, run.duration + GRACE, "the naive peer")?;
    let stderr = read_lossy(&err_path);
    ensure!(
        status.success(),
        "the naive peer failed ({status}):\n{}",
        tail(&stderr)
    );
    let stdout = read_lossy(&out_path);
    let line = stdout
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .with_context(|| format!("the naive peer printed nothing:\n{}", tail(&stderr)))?;
    serde_json::from_str(line).with_context(|| format!("the naive peer printed {line:?}"))
}

/// The `peer-naive` subcommand: measure, then print one JSON [`PeerMeasure`] line.
pub(crate) fn naive_main(args: &NaiveArgs) -> Result<()> {
    let measure = naive_measure(args)?;
    let line = serde_json::to_string(&measure)?;
    // The parent reads this line from our stdout: it is the subcommand's output, not a log.
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
    Ok(())
}

fn naive_measure(args: &NaiveArgs) -> Result<PeerMeasure> {
    let run = PeerRun {
        display: args.display.clone(),
        width: args.width,
        height: args.height,
        fps: args.fps,
        duration: Duration::from_millis(args.millis),
    };
    validate(&run)?;
    let env_display = std::env::var("DISPLAY").unwrap_or_default();
    ensure!(
        env_display == run.display,
        "--display {} but DISPLAY={env_display:?}: xcap captures $DISPLAY",
        run.display
    );
    let (w, h) = (run.width, run.height);
    let monitor = primary_monitor(&run.display)?;
    let size = (monitor.width()?, monitor.height()?);
    ensure!(
        size == (w, h),
        "the monitor is {}x{}, not {w}x{h}",
        size.0,
        size.1
    );

    // A user's config: screen content, their bitrate and frame rate, no skipped pictures.
    // One encoder thread, so the thread CPU clock below sees all of the encoding.
    let config = EncoderConfig::new()
        .usage_type(UsageType::ScreenContentRealTime)
        .bitrate(BitRate::from_bps(args.bitrate))
        .max_frame_rate(FrameRate::from_hz(run.fps as f32))
        .skip_frames(false)
        // OpenH264 turns these off for screen content anyway, with a warning on stderr.
        .adaptive_quantization(false)
        .background_detection(false)
        .num_threads(1);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .context("creating the OpenH264 encoder")?;
    let mut planes = YuvPlanarImageMut::alloc(w, h, YuvChromaSubsampling::Yuv420);
    let (wu, hu) = (w as usize, h as usize);

    let (tx, rx) = sync_channel::<(Vec<u8>, Vec<u8>)>(DECODE_QUEUE);
    let checker = std::thread::Builder::new()
        .name("deskwire-peer-decode".into())
        .spawn(move || mean_decoded_psnr(rx, wu, hu))
        .context("starting the decode thread")?;

    let period = Duration::from_secs_f64(1.0 / f64::from(run.fps));
    let max_frames = u64::from(run.fps) * args.millis / 1000 + 1;
    let (mut frames, mut bytes, mut cpu) = (0u64, 0u64, Duration::ZERO);
    let mut bitstream = Vec::new();
    let start = Instant::now();
    let end = start + run.duration;
    let mut due = start;
    let looped: Result<()> = (|| {
        while frames < max_frames {
            let now = Instant::now();
            if now >= end || due >= end {
                break;
            }
            if due > now {
                std::thread::sleep(due - now);
            }
            // Late: start the schedule again from now rather than bursting to catch up.
            due = due.max(now) + period;

            let t0 = thread_cpu()?;
            let image = monitor.capture_image().context("xcap capture failed")?;
            ensure!(
                (image.width(), image.height()) == (w, h),
                "the screen became {}x{} during the run",
                image.width(),
                image.height()
            );
            yuv::rgba_to_yuv420(
                &mut planes,
                image.as_raw(),
                w * 4,
                YuvRange::Limited,
                YuvStandardMatrix::Bt601,
                YuvConversionMode::Balanced,
            )
            .map_err(|e| anyhow!("RGBA -> I420 failed: {e}"))?;
            let (y, u, v) = (
                planes.y_plane.borrow(),
                planes.u_plane.borrow(),
                planes.v_plane.borrow(),
            );
            let source = YUVSlices::new((y, u, v), (wu, hu), (wu, wu / 2, wu / 2));
            let encoded = encoder.encode(&source).context("OpenH264 encode failed")?;
            bitstream.clear();
            encoded.write_vec(&mut bitstream);
            cpu += thread_cpu()?.saturating_sub(t0);

            frames += 1;
            bytes += bitstream.len() as u64;
            // The decode thread ended early only on an error, which its join reports.
            if tx.send((bitstream.clone(), y.to_vec())).is_err() {
                break;
            }
        }
        Ok(())
    })();
    let elapsed = start.elapsed().max(run.duration).as_secs_f64();
    drop(tx);
    let psnr = checker
        .join()
        .map_err(|_| anyhow!("the decode thread panicked"))?
        .context("checking the naive peer's quality")?;
    looped?;
    ensure!(frames > 0, "the naive peer captured no frame");
    tracing::debug!(frames, bytes, ?cpu, psnr, "naive peer done");
    Ok(PeerMeasure {
        frames,
        fps: frames as f64 / elapsed,
        kbps: bytes as f64 * 8.0 / 1000.0 / elapsed,
        cpu_ms_per_frame: cpu.as_secs_f64() * 1000.0 / frames as f64,
        psnr_y_db: psnr,
    })
}

/// The primary monitor, else the first (Xvfb marks none primary).
fn primary_monitor(display: &str) -> Result<xcap::Monitor> {
    let monitors =
        xcap::Monitor::all().with_context(|| format!("xcap cannot list monitors on {display}"))?;
    let index = monitors
        .iter()
        .position(|m| m.is_primary().unwrap_or(false))
        .unwrap_or(0);
    monitors
        .into_iter()
        .nth(index)
        .with_context(|| format!("display {display} has no monitor"))
}

/// Decode every encoded frame in order; mean Y-PSNR (capped) against the encoder's input.
fn mean_decoded_psnr(rx: Receiver<(Vec<u8>, Vec<u8>)>, w: usize, h: usize) -> Result<Option<f64>> {
    let mut decoder = Decoder::new().context("creating the OpenH264 decoder")?;
    let (mut sum, mut n) = (0.0, 0u64);
    // Ends when the capture loop drops its sender.
    for (bits, input_y) in rx {
        let Some(picture) = decoder.decode(&bits).context("decoding the naive stream")? else {
            continue;
        };
        ensure!(
            picture.dimensions() == (w, h),
            "decoded {:?}, expected {w}x{h}",
            picture.dimensions()
        );
        let db = psnr_plane(&input_y, w, picture.y(), picture.strides().0, w, h);
        sum += db.min(PSNR_CAP_DB);
        n += 1;
    }
    Ok((n > 0).then(|| sum / n as f64))
}

/// CPU time the calling thread has used so far.
fn thread_cpu() -> Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ensure!(r == 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Wait for `child` at most `limit` (then kill it), returning its status and the user + system
/// CPU time it used. `wait4` gives that child's own rusage, unlike `RUSAGE_CHILDREN` deltas,
/// which would also count any other child reaped meanwhile by another thread.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> Result<(ExitStatus, Duration)> {
    let pid = libc::pid_t::try_from(child.id()).context("child pid out of range")?;
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain integers, for which all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own child, not yet reaped (std never waits for it: we do);
        // both pointers are valid and writable for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
            return Ok((ExitStatus::from_raw(status), cpu));
        }
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("waiting for {what}"));
            }
        }
        if Instant::now() >= deadline {
            // Ignored: failing here means it exited just now, and the wait below reaps it.
            let _ = child.kill();
            // SAFETY: as above; blocking is fine once SIGKILL is sent.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            bail!("{what} did not finish within {limit:?}, killed it");
        }
        std::thread::sleep(POLL);
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// The end of a child's log, for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A scratch directory for a peer's output and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("deskwire-peer-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), %e, "could not remove a peer's scratch dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from ffmpeg 5.1.9 (Debian 12) grabbing a 1920x1080 Xvfb at 60 fps for 2 s,
    // without and then with -psnr (middle progress blocks and some x264 stats lines cut).
    const PROGRESS: &str = "frame=1\nfps=0.00\nstream_0_0_q=20.0\nbitrate=74041.9kbits/s
total_size=154257\nout_time_us=16667\nout_time_ms=16667\nout_time=00:00:00.016667
dup_frames=0\ndrop_frames=0\nspeed=N/A\nprogress=continue
frame=93\nfps=61.23\nstream_0_0_q=27.0\nbitrate=21648.0kbits/s\ntotal_size=4194304
out_time_us=1550000\nout_time_ms=1550000\nout_time=00:00:01.550000\ndup_frames=24
drop_frames=0\nspeed=1.02x\nprogress=continue
frame=120\nfps=59.81\nstream_0_0_q=27.0\nbitrate=23407.1kbits/s\ntotal_size=5851768
out_time_us=2000000\nout_time_ms=2000000\nout_time=00:00:02.000000\ndup_frames=26
drop_frames=0\nspeed=0.997x\nprogress=end\n";

    const STDERR_PLAIN: &str = r"[libx264 @ 0x56091134b100] using cpu capabilities: MMX2 SSE2Fast SSSE3 SSE4.2 AVX FMA3 BMI2 AVX2 AVX512
[libx264 @ 0x56091134b100] profile Constrained Baseline, level 4.2, 4:2:0, 8-bit
frame=  120 fps= 60 q=27.0 Lsize=    5715kB time=00:00:02.00 bitrate=23407.1kbits/s dup=26 drop=0 speed=0.997x    
video:5715kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 0.000000%
[libx264 @ 0x56091134b100] frame I:1     Avg QP:20.00  size:154257
[libx264 @ 0x56091134b100] frame P:119   Avg QP:25.81  size: 47878
[libx264 @ 0x56091134b100] i8c dc,h,v,p: 100%  0%  0%  0%
[libx264 @ 0x56091134b100] kb/s:23407.07
";

    const STDERR_PSNR: &str = r"[libx264 @ 0x55dc0ccdd300] --psnr used with psy on: results will be invalid!
[libx264 @ 0x55dc0ccdd300] --tune psnr should be used if attempting to benchmark psnr!
frame=  120 fps= 60 q=27.0 LPSNR=Y:inf U:inf V:inf *:inf size=    5956kB time=00:00:02.00 bitrate=24394.1kbits/s dup=22 drop=2 speed=   1x    
video:5956kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 0.000000%
[libx264 @ 0x55dc0ccdd300] frame I:1     Avg QP:20.00  size:145828  PSNR Mean Y:53.21 U:100.00 V:100.00 Avg:54.97 Global:54.97
[libx264 @ 0x55dc0ccdd300] frame P:119   Avg QP:25.73  size: 50023  PSNR Mean Y:48.30 U:100.00 V:100.00 Avg:50.06 Global:47.40
[libx264 @ 0x55dc0ccdd300] i8c dc,h,v,p: 100%  0%  0%  0%
[libx264 @ 0x55dc0ccdd300] PSNR Mean Y:48.336 U:100.000 V:100.000 Avg:50.097 Global:47.427 kb/s:24394.11
";

    #[test]
    fn progress_takes_the_final_block() {
        let p = parse_progress(PROGRESS).unwrap();
        assert_eq!(
            p,
            FfmpegProgress {
                frames: 120,
                dup_frames: 26,
                drop_frames: 0
            }
        );
    }

    #[test]
    fn progress_without_end_is_an_error() {
        let cut = PROGRESS.replace("progress=end", "progress=continue");
        assert!(parse_progress(&cut).is_err());
        assert!(parse_progress("").is_err());
        assert!(parse_progress("frame=x\nprogress=end\n").is_err());
        assert!(parse_progress("fps=3\nprogress=end\n").is_err());
    }

    #[test]
    fn psnr_comes_from_the_x264_summary() {
        assert_eq!(parse_x264_psnr_y(STDERR_PSNR), Some(48.336));
        assert_eq!(parse_x264_psnr_y(STDERR_PLAIN), None);
        assert_eq!(
            parse_x264_psnr_y("[libx264 @ 0x1] PSNR Mean Y:garbage"),
            None
        );
    }

    #[test]
    fn bad_runs_are_refused() {
        let ok = PeerRun {
            display: ":99".into(),
            width: 1920,
            height: 1080,
            fps: 60,
            duration: Duration::from_secs(3),
        };
        assert!(validate(&ok).is_ok());
        let refused = |change: fn(&mut PeerRun)| {
            let mut run = ok.clone();
            change(&mut run);
            validate(&run).is_err()
        };
        assert!(refused(|r| r.width = 1921));
        assert!(refused(|r| r.height = 0));
        assert!(refused(|r| r.fps = 0));
        assert!(refused(|r| r.duration = Duration::ZERO));
        assert!(refused(|r| r.display.clear()));
    }

    #[test]
    fn bounded_wait_reports_status_and_kills_at_the_limit() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let (status, _) = wait_bounded(&mut child, Duration::from_secs(10), "sh").unwrap();
        assert_eq!(status.code(), Some(3));
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let t = Instant::now();
        let err = wait_bounded(&mut child, Duration::from_millis(100), "sleep").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
