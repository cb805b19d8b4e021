//! `deskwire-bench bits`: what deskwire's band encoders and x264 spend on the very same
//! frames of real content, and the quality each delivers, measured one way for both.
//!
//! `e2e` cannot compare bits at equal quality: its peer reports x264's own PSNR over the
//! frames it grabbed, deskwire's is one still picture after the content stopped, and the
//! two never see the same frames. Here one recording feeds both:
//! 1. a workload (`e2e`'s real scenes) runs on a private Xvfb, and for `--seconds` the
//!    screen is grabbed at every 60 Hz tick into a frame of its own;
//! 2. deskwire's `FrameEncoder` (diff, convert, bands, refinement: what a session runs)
//!    encodes the recording at every `--rate` with every quality floor `--qp` and encoder
//!    `--effort`, and OpenH264 decodes every band;
//! 3. ffmpeg + libx264 with the e2e peer's settings (`ultrafast`, `zerolatency`) encodes
//!    the same I420 pictures (deskwire's own conversion) at each `--crf`, and ffmpeg
//!    decodes the result.
//!
//! Quality is the Y-PSNR of each decoded picture against its I420 input (100 dB when they
//! are identical, as x264 counts), averaged over the frames; bits are every byte out over
//! the recording's length. Reported: both curves, and per effort deskwire's kbit/s at the
//! Y-PSNR x264 reaches at its default CRF (23), its cheapest point at least that good, and
//! the BD-rate of deskwire against x264.

mod curve;

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deskwire_capture::{Frame, Source, Timestamp, X11Source};
use deskwire_engine::codec::BandDecoderSet;
use deskwire_engine::config::{
    BandSpec, CodecConfig, ContentTuning, EncodeEffort, DEFAULT_BANDS, DEFAULT_MIN_QP,
};
use deskwire_engine::convert::I420Image;
use deskwire_engine::frame_encoder::{FrameEncoder, FrameOutcome};
use deskwire_engine::quality::psnr_plane;
use serde::Serialize;

use crate::e2e::workload::Workload;
use curve::{bd_rate, rate_at};

/// x264's default quality: what the e2e peer (and most people) run it at.
const X264_DEFAULT_CRF: u8 = 23;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scene to record (repeatable): x11-window, x11-terminal, x11-paint, x11-browser,
    /// x11-video. Default: x11-window, x11-terminal, x11-paint, x11-browser.
    #[arg(long = "scene")]
    scenes: Vec<String>,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Seconds recorded per scene (60 frames a second, kept in memory: 8 MB each at 1080p).
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// deskwire's bitrates, kbit/s (repeatable); every one runs at every `--qp`.
    /// Default: a session's encoder rate on a fast path.
    #[arg(long = "rate", default_values_t = [16000u32])]
    rates: Vec<u32>,
    /// deskwire's quality floors (largest quantiser, repeatable). A session on a fast path
    /// runs at 28.
    #[arg(long = "qp", default_values_t = [20u8, 24, 28, 32, 36])]
    qps: Vec<u8>,
    /// deskwire's quality ceilings (smallest quantiser, repeatable); every one runs at
    /// every `--qp` at or above it.
    #[arg(long = "min-qp", default_values_t = [DEFAULT_MIN_QP])]
    min_qps: Vec<u8>,
    /// x264's operating points, CRF (repeatable).
    #[arg(long = "crf", default_values_t = [18u8, 23, 28, 33, 38])]
    crfs: Vec<u8>,
    /// Bands deskwire cuts the frame into.
    #[arg(long, default_value_t = DEFAULT_BANDS)]
    bands: u32,
    /// deskwire's encoder efforts (repeatable): low, medium, high. Default: the engine's.
    #[arg(long = "effort")]
    efforts: Vec<String>,
    /// OpenH264's tuning for deskwire: camera or screen.
    #[arg(long, default_value = "camera")]
    tuning: String,
    /// One JSON object per scene per line on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Where to write the Markdown table (and the x264 streams while they are measured).
    #[arg(long, default_value = "target/bench-bits")]
    out: PathBuf,
}

/// One encoder at one setting over a whole recording.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    pub encoder: &'static str,
    /// deskwire's encoder effort.
    pub effort: Option<&'static str>,
    pub setting: String,
    pub kbps: f64,
    pub psnr_y_db: f64,
    /// deskwire's encode time (diff, convert, bands one after the other on one thread)
    /// per frame that changed.
    pub ms_per_frame: Option<f64>,
}

/// One scene: the recording, both curves and the comparison.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SceneBits {
    pub scene: String,
    pub frames: usize,
    /// Ticks on which the screen had changed since the one before.
    pub changed_frames: usize,
    /// How long the recording took (60 Hz ticks; late when grabbing fell behind).
    pub recorded_s: f64,
    pub deskwire: Vec<Point>,
    pub x264: Vec<Point>,
    /// x264's at its default CRF.
    pub x264_default_kbps: f64,
    pub x264_default_psnr_y_db: f64,
    /// deskwire against x264, one curve per encoder effort.
    pub against_x264: Vec<Against>,
}

/// One deskwire curve (an effort, every rate and floor) against x264's.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Against {
    pub effort: String,
    /// deskwire's kbit/s at x264's default Y-PSNR (interpolated), and over x264's.
    pub deskwire_kbps_at_x264_psnr: Option<f64>,
    pub kbps_ratio_at_x264_psnr: Option<f64>,
    /// deskwire's cheapest point at x264's default Y-PSNR or better (the issue's measure:
    /// fewer bits at no less quality), and its kbit/s over x264's.
    pub cheapest_at_least_x264: Option<Point>,
    pub cheapest_ratio: Option<f64>,
    /// Average rate difference at equal Y-PSNR (-0.2: 20 % fewer bits than x264).
    pub bd_rate: Option<f64>,
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let tuning = match args.tuning.as_str() {
        "camera" => ContentTuning::Camera,
        "screen" => ContentTuning::Screen,
        other => bail!("unknown tuning {other:?}: expected camera or screen"),
    };
    let efforts = if args.efforts.is_empty() {
        vec![CodecConfig::default().effort]
    } else {
        args.efforts
            .iter()
            .map(|e| match e.as_str() {
                "low" => Ok(EncodeEffort::Low),
                "medium" => Ok(EncodeEffort::Medium),
                "high" => Ok(EncodeEffort::High),
                other => bail!("unknown effort {other:?}: expected low, medium or high"),
            })
            .collect::<Result<Vec<_>>>()?
    };
    let scenes = if args.scenes.is_empty() {
        ["x11-window", "x11-terminal", "x11-paint", "x11-browser"]
            .map(String::from)
            .to_vec()
    } else {
        args.scenes.clone()
    };
    for s in &scenes {
        if !matches!(
            s.as_str(),
            "x11-window" | "x11-terminal" | "x11-paint" | "x11-browser" | "x11-video"
        ) {
            bail!("unknown scene {s:?}: expected x11-window, x11-terminal, x11-paint, x11-browser or x11-video");
        }
    }
    if !(0.5..=30.0).contains(&args.seconds) {
        bail!("--seconds {} is out of range (0.5..=30)", args.seconds);
    }
    if args.rates.is_empty() || args.crfs.is_empty() {
        bail!("give at least one --rate and one --crf");
    }
    if let Some(r) = args.rates.iter().find(|r| !(100..=200_000).contains(*r)) {
        bail!("--rate {r} is out of range (100..=200000 kbit/s)");
    }
    if let Some(q) = args.qps.iter().find(|q| !(12..=51).contains(*q)) {
        bail!("--qp {q} is out of range (12..=51)");
    }
    if args.min_qps.is_empty() {
        bail!("give at least one --min-qp");
    }
    if let Some(c) = args.crfs.iter().find(|c| **c > 51) {
        bail!("--crf {c} is out of range (0..=51)");
    }
    // The layout and ceiling checks of the engine, with their messages, before anything
    // starts.
    let spec = BandSpec::Count(args.bands);
    for &q in &args.min_qps {
        CodecConfig::default()
            .bands(spec)
            .min_qp(q)
            .validate(args.width, args.height)
            .with_context(|| format!("--min-qp {q}"))?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let mut results = Vec::new();
    for scene in &scenes {
        let r = measure_scene(args, scene, spec, tuning, &efforts)?;
        if args.json {
            crate::e2e::report::print_json(&r)?;
        }
        results.push(r);
    }
    let table = markdown(&results);
    std::fs::write(args.out.join("bits.md"), &table)?;
    if !args.json {
        crate::e2e::report::print_table(&table);
    }
    Ok(())
}

fn measure_scene(
    args: &Args,
    scene: &str,
    spec: BandSpec,
    tuning: ContentTuning,
    efforts: &[EncodeEffort],
) -> Result<SceneBits> {
    let kind = scene.trim_start_matches("x11-");
    let (frames, changed, recorded) = {
        let xvfb = deskwire_tests::Xvfb::start(args.width, args.height)?;
        let display = xvfb.display();
        let _workload = Workload::start(kind, &display, args.width, args.height)?;
        record(&display, args.seconds)?
    };
    tracing::info!(scene, frames = frames.len(), changed, "recorded");
    let color = CodecConfig::default().color;
    let pictures = frames
        .iter()
        .map(|f| {
            let mut i = I420Image::new(f.width(), f.height());
            i.convert_all(f, color)?;
            Ok(i)
        })
        .collect::<Result<Vec<_>>>()?;
    let duration = frames.len() as f64 / 60.0;

    let mut deskwire = Vec::new();
    let mut points = Vec::new();
    for &kbps in &args.rates {
        for &min_qp in &args.min_qps {
            for &qp in args.qps.iter().filter(|&&q| q >= min_qp) {
                points.extend(efforts.iter().map(|&e| (kbps, min_qp, qp, e)));
            }
        }
    }
    for (kbps, min_qp, qp, effort) in points {
        let config = CodecConfig::default()
            .bands(spec)
            .tuning(tuning)
            .effort(effort)
            .bitrate_bps(kbps * 1000)
            .max_qp(qp)
            .min_qp(min_qp);
        let (bytes, psnr, ms) = deskwire_run(&frames, &config)?;
        deskwire.push(Point {
            encoder: "deskwire",
            effort: Some(effort_name(effort)),
            setting: format!(
                "{kbps} kbit/s, QP {min_qp}-{qp}, {} effort",
                effort_name(effort)
            ),
            kbps: bytes as f64 * 8.0 / duration / 1000.0,
            psnr_y_db: psnr,
            ms_per_frame: Some(ms),
        });
    }
    let mut x264 = Vec::new();
    let mut crfs = args.crfs.clone();
    if !crfs.contains(&X264_DEFAULT_CRF) {
        crfs.push(X264_DEFAULT_CRF);
    }
    crfs.sort_unstable();
    for &crf in &crfs {
        let (bytes, psnr) = x264_run(&pictures, crf, &args.out)?;
        x264.push(Point {
            encoder: "x264",
            effort: None,
            setting: format!("CRF {crf}"),
            kbps: bytes as f64 * 8.0 / duration / 1000.0,
            psnr_y_db: psnr,
            ms_per_frame: None,
        });
    }
    let default = crfs
        .iter()
        .position(|&c| c == X264_DEFAULT_CRF)
        .map(|i| x264[i].clone())
        .context("the default CRF was measured")?;
    let reference = curve(&x264);
    let against_x264 = efforts
        .iter()
        .map(|&e| {
            let mine: Vec<Point> = deskwire
                .iter()
                .filter(|p| p.effort == Some(effort_name(e)))
                .cloned()
                .collect();
            let ours = curve(&mine);
            let at = rate_at(&ours, default.psnr_y_db);
            let cheapest = mine
                .into_iter()
                .filter(|p| p.psnr_y_db >= default.psnr_y_db)
                .min_by(|a, b| a.kbps.total_cmp(&b.kbps));
            Against {
                cheapest_ratio: cheapest.as_ref().map(|p| p.kbps / default.kbps),
                cheapest_at_least_x264: cheapest,
                effort: effort_name(e).to_owned(),
                deskwire_kbps_at_x264_psnr: at,
                kbps_ratio_at_x264_psnr: at.map(|k| k / default.kbps),
                bd_rate: bd_rate(&reference, &ours),
            }
        })
        .collect();
    Ok(SceneBits {
        scene: scene.to_owned(),
        frames: frames.len(),
        changed_frames: changed,
        recorded_s: recorded.as_secs_f64(),
        x264_default_kbps: default.kbps,
        x264_default_psnr_y_db: default.psnr_y_db,
        against_x264,
        deskwire,
        x264,
    })
}

/// Every 60 Hz tick for `seconds`, the screen as a frame of its own (stamped with its
/// tick), how many ticks saw a change, and how long it took.
fn record(display: &str, seconds: f64) -> Result<(Vec<Frame>, usize, Duration)> {
    let mut src = X11Source::open(Some(display))?;
    let mut grab = src.alloc_frame()?;
    let (w, h) = src.size();
    let count = (seconds * 60.0).round() as u32;
    let period = Duration::from_micros(16_667);
    let mut frames = Vec::with_capacity(count as usize);
    let mut changed = 0;
    let start = Instant::now();
    for i in 0..count {
        let due = start + period * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ts = Timestamp::from_micros(u64::from(i) * 16_667);
        // Unchanged leaves the grab as the screen still is.
        if matches!(
            src.capture(&mut grab, ts)?,
            deskwire_capture::CaptureOutcome::Fresh
        ) && i > 0
        {
            changed += 1;
        }
        let mut f = Frame::new(w, h);
        let n = w as usize * 4;
        for y in 0..h {
            let row = y as usize * f.stride();
            f.data_mut()[row..row + n].copy_from_slice(&grab.row(y)[..n]);
        }
        f.set_timestamp(ts);
        frames.push(f);
    }
    Ok((frames, changed, start.elapsed()))
}

/// deskwire's bytes over the recording, its mean Y-PSNR (decoded band by band) and its
/// encode milliseconds per frame that changed.
fn deskwire_run(frames: &[Frame], config: &CodecConfig) -> Result<(u64, f64, f64)> {
    let (w, h) = (frames[0].width(), frames[0].height());
    let mut enc = FrameEncoder::new(w, h, config, None)?;
    let mut dec = BandDecoderSet::new(w, h, config.bands, config.color)?;
    let (w, h) = (w as usize, h as usize);
    let mut recon = vec![16u8; w * h];
    let (mut bytes, mut psnr_sum) = (0u64, 0.0);
    let mut reference: Option<usize> = None;
    let (mut encode_time, mut changed) = (Duration::ZERO, 0u32);
    for (i, f) in frames.iter().enumerate() {
        let t = Instant::now();
        let outcome = enc.handle_frame(reference.map(|r| &frames[r]), f)?;
        match outcome {
            FrameOutcome::Unchanged { .. } => {}
            FrameOutcome::Changed(out) => {
                encode_time += t.elapsed();
                changed += 1;
                reference = Some(i);
                for band in out.iter().flat_map(|e| e.bands.iter()) {
                    bytes += band.data.len() as u64;
                    if let Some(d) = dec.decode(band.band, &band.data)? {
                        let stride = d.y_stride();
                        for row in 0..d.height as usize {
                            let at = (d.top as usize + row) * w;
                            recon[at..at + w]
                                .copy_from_slice(&d.y()[row * stride..row * stride + w]);
                        }
                    }
                }
            }
        }
        psnr_sum += capped(psnr_plane(&recon, w, enc.image().y_plane(), w, w, h));
    }
    let ms = encode_time.as_secs_f64() * 1000.0 / f64::from(changed.max(1));
    Ok((bytes, psnr_sum / frames.len() as f64, ms))
}

/// x264's bytes over the recording at `crf` and its mean Y-PSNR, decoded by ffmpeg.
fn x264_run(pictures: &[I420Image], crf: u8, out: &Path) -> Result<(u64, f64)> {
    let (w, h) = (pictures[0].width(), pictures[0].height());
    let stream = out.join(format!("x264-crf{crf}.h264"));
    let size = format!("{w}x{h}");
    let mut enc = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo"])
        .args(["-pix_fmt", "yuv420p", "-s", &size, "-r", "60", "-i", "-"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-crf", &crf.to_string(), "-f", "h264"])
        .arg(&stream)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ffmpeg (scripts/setup installs it)")?;
    {
        let mut stdin = BufWriter::new(enc.stdin.take().context("ffmpeg's stdin")?);
        for p in pictures {
            stdin.write_all(p.y_plane())?;
            stdin.write_all(p.u_plane())?;
            stdin.write_all(p.v_plane())?;
        }
        stdin.flush()?;
    }
    let done = enc.wait_with_output()?;
    if !done.status.success() {
        bail!(
            "ffmpeg (x264, CRF {crf}) failed: {}",
            String::from_utf8_lossy(&done.stderr).trim()
        );
    }
    let bytes = std::fs::metadata(&stream)?.len();

    let mut dec = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(&stream)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting ffmpeg to decode")?;
    let mut stdout = dec.stdout.take().context("ffmpeg's stdout")?;
    let (wu, hu) = (w as usize, h as usize);
    let mut buf = vec![0u8; wu * hu * 3 / 2];
    let mut psnr_sum = 0.0;
    let mut decoded = 0;
    for p in pictures {
        if stdout.read_exact(&mut buf).is_err() {
            break;
        }
        psnr_sum += capped(psnr_plane(&buf[..wu * hu], wu, p.y_plane(), wu, wu, hu));
        decoded += 1;
    }
    drop(stdout);
    let _ = dec.wait();
    let _ = std::fs::remove_file(&stream);
    if decoded != pictures.len() {
        bail!(
            "x264 at CRF {crf} decoded to {decoded} pictures, {} went in",
            pictures.len()
        );
    }
    Ok((bytes, psnr_sum / decoded as f64))
}

/// A curve's points: (kbit/s, Y-PSNR dB).
fn curve(points: &[Point]) -> Vec<(f64, f64)> {
    points.iter().map(|p| (p.kbps, p.psnr_y_db)).collect()
}

fn effort_name(e: EncodeEffort) -> &'static str {
    match e {
        EncodeEffort::Low => "low",
        EncodeEffort::Medium => "medium",
        EncodeEffort::High => "high",
    }
}

/// x264's convention: identical pictures count as 100 dB.
fn capped(db: f64) -> f64 {
    db.min(100.0)
}

fn markdown(results: &[SceneBits]) -> String {
    let mut s = String::new();
    let f1 = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    s.push_str("| scene | frames (changed) | x264 CRF 23 kbit/s | Y-PSNR dB | deskwire effort | kbit/s at that Y-PSNR | ratio | cheapest at least as good | ratio | BD-rate |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        for a in &r.against_x264 {
            s.push_str(&format!(
                "| {} | {} ({}) | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} |\n",
                r.scene,
                r.frames,
                r.changed_frames,
                r.x264_default_kbps,
                r.x264_default_psnr_y_db,
                a.effort,
                f1(a.deskwire_kbps_at_x264_psnr, ""),
                a.kbps_ratio_at_x264_psnr
                    .map_or("-".to_owned(), |v| format!("{v:.2}x")),
                a.cheapest_at_least_x264
                    .as_ref()
                    .map_or("-".to_owned(), |p| format!(
                        "{:.0} ({:.2} dB)",
                        p.kbps, p.psnr_y_db
                    )),
                a.cheapest_ratio
                    .map_or("-".to_owned(), |v| format!("{v:.2}x")),
                f1(a.bd_rate.map(|b| b * 100.0), " %"),
            ));
        }
    }
    s.push_str("\n| scene | encoder | setting | kbit/s | Y-PSNR dB | encode ms/frame |\n|---|---|---|---|---|---|\n");
    for r in results {
        for p in r.x264.iter().chain(&r.deskwire) {
            s.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.2} | {} |\n",
                r.scene,
                p.encoder,
                p.setting,
                p.kbps,
                p.psnr_y_db,
                f1(p.ms_per_frame, "")
            ));
        }
    }
    s
}
