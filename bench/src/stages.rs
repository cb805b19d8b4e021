//! The `stages` subcommand.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deskwire_capture::{
    open, synthetic::Scene, CaptureOutcome, OpenOptions, Source, SourceSpec, Timestamp,
};
use deskwire_engine::config::DEFAULT_BANDS;
use deskwire_engine::quality::psnr_plane;
use deskwire_engine::stats::read;
use deskwire_engine::{
    BandDecoderSet, BandSpec, CodecConfig, ContentTuning, FrameEncoder, FrameOutcome, Pipeline,
    PipelineConfig, Workers,
};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where frames come from: synthetic, x11 (the display in $DISPLAY or --display), xcap.
    #[arg(long, default_value = "synthetic")]
    source: String,
    /// Synthetic scene (repeatable; default: all). Ignored for x11 and xcap.
    #[arg(long = "scene")]
    scenes: Vec<String>,
    /// Capture ticks measured per run, after the warm-up (real screens tick at 60 fps).
    #[arg(long, default_value_t = 300)]
    frames: u32,
    /// Frames run before measuring (first encodes are slow and the first frame is a keyframe).
    #[arg(long, default_value_t = 30)]
    warmup: u32,
    /// Band count (repeatable, to compare).
    #[arg(long = "bands")]
    bands: Vec<u32>,
    /// Width of synthetic scenes.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// Height of synthetic scenes.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Target bitrate in bits per second.
    #[arg(long, default_value_t = CodecConfig::default().bitrate_bps)]
    bitrate: u32,
    /// The quality floor: the largest quantiser the encoder may use (12-51).
    #[arg(long, default_value_t = CodecConfig::default().max_qp)]
    max_qp: u8,
    /// Frames per second encoded out of a 60 Hz synthetic scene (1-60): the others are
    /// skipped, as a session on a slow link skips them, so each encoded frame has moved
    /// further. The bitrate column is at this rate.
    #[arg(long, default_value_t = 60)]
    fps: u32,
    /// Encoder tuning: camera or screen.
    #[arg(long, default_value = "camera")]
    tuning: String,
    /// X display for --source x11/xcap (default: $DISPLAY).
    #[arg(long)]
    display: Option<String>,
    /// Longest the pipeline run may take, in seconds.
    #[arg(long, default_value_t = 10)]
    pipeline_secs: u64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One line of output.
#[derive(Debug, Serialize)]
struct Row {
    scene: String,
    source: String,
    width: u32,
    height: u32,
    bands: usize,
    tuning: String,
    frames: u32,
    encoded_frames: u32,
    unchanged_frames: u32,
    capture_ms_p50: Option<f64>,
    diff_ms_p50: Option<f64>,
    convert_ms_p50: Option<f64>,
    encode_ms_p50: Option<f64>,
    encode_ms_p99: Option<f64>,
    decode_ms_p50: Option<f64>,
    bands_per_encoded_frame: Option<f64>,
    bytes_per_frame_mean: f64,
    /// At `--fps`.
    kbps: f64,
    psnr_y_db_min: Option<f64>,
    pipeline_fps: f64,
    allocs_per_frame: f64,
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let tuning = match args.tuning.as_str() {
        "camera" => ContentTuning::Camera,
        "screen" => ContentTuning::Screen,
        t => bail!("unknown tuning {t:?} (expected camera or screen)"),
    };
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    if !(1..=60).contains(&args.fps) {
        bail!("--fps must be 1..=60, not {}", args.fps);
    }
    let specs: Vec<(String, SourceSpec)> = match args.source.as_str() {
        "synthetic" => {
            let names: Vec<String> = if args.scenes.is_empty() {
                Scene::NAMES.iter().map(|s| s.to_string()).collect()
            } else {
                args.scenes.clone()
            };
            names
                .into_iter()
                .map(|n| Ok((n.clone(), SourceSpec::Synthetic(n.parse()?))))
                .collect::<Result<_>>()?
        }
        "x11" => vec![("display".into(), SourceSpec::X11)],
        "xcap" => vec![("display".into(), SourceSpec::Xcap)],
        s => bail!("unknown source {s:?} (expected synthetic, x11 or xcap)"),
    };
    let bands = if args.bands.is_empty() {
        vec![DEFAULT_BANDS]
    } else {
        args.bands.clone()
    };
    let opts = OpenOptions {
        display: args.display.clone(),
        width: args.width,
        height: args.height,
        ..OpenOptions::default()
    };
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:<8} {:<9} {:>9} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>8} {:>6} {:>7} {:>6}",
            "scene", "source", "size", "bands", "enc", "cap p50", "diff", "conv", "enc p50",
            "enc p99", "B/frame", "kbps", "PSNR", "pipe fps", "alloc"
        )?;
    }
    for (scene, spec) in &specs {
        for &k in &bands {
            let codec = CodecConfig::default()
                .bands(BandSpec::Count(k))
                .bitrate_bps(args.bitrate)
                .max_qp(args.max_qp)
                .max_fps(args.fps)
                .tuning(tuning);
            let row = measure(args, scene, spec, &opts, &codec)
                .with_context(|| format!("scene {scene}, {k} bands"))?;
            if args.json {
                serde_json::to_writer(&mut out, &row)?;
                writeln!(out)?;
            } else {
                print_row(&mut out, &row)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn print_row(out: &mut impl Write, r: &Row) -> Result<()> {
    writeln!(
        out,
        "{:<8} {:<9} {:>9} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9.0} {:>8.0} {:>6} {:>7.1} {:>6.2}",
        r.scene,
        r.source,
        format!("{}x{}", r.width, r.height),
        r.bands,
        r.encoded_frames,
        ms(r.capture_ms_p50),
        ms(r.diff_ms_p50),
        ms(r.convert_ms_p50),
        ms(r.encode_ms_p50),
        ms(r.encode_ms_p99),
        r.bytes_per_frame_mean,
        r.kbps,
        r.psnr_y_db_min.map_or("-".into(), |v| format!("{v:.1}")),
        r.pipeline_fps,
        r.allocs_per_frame,
    )?;
    Ok(())
}

/// Median and high quantiles of a sample, in milliseconds.
fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    Some(samples[i])
}

fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn measure(
    args: &Args,
    scene: &str,
    spec: &SourceSpec,
    opts: &OpenOptions,
    codec: &CodecConfig,
) -> Result<Row> {
    let source = open(spec, opts)?;
    let (width, height) = source.size();
    let source_name = source.name().to_string();
    let mut row = sequential(args, source, codec)?;
    row.scene = scene.into();
    row.source = source_name;
    row.tuning = args.tuning.clone();
    let (fps, allocs) = pipeline(args, open(spec, opts)?, codec)?;
    row.pipeline_fps = fps;
    row.allocs_per_frame = allocs;
    debug_assert_eq!((row.width, row.height), (width, height));
    Ok(row)
}

/// Every stage in turn on this thread (bands still encode in parallel on the band pool).
fn sequential(args: &Args, mut source: Box<dyn Source>, codec: &CodecConfig) -> Result<Row> {
    let (w, h) = source.size();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = Arc::new(Workers::new(threads)?);
    let mut core = FrameEncoder::new(w, h, codec, Some(workers))?;
    let mut decoders = BandDecoderSet::new(w, h, codec.bands, codec.color)?;
    let mut prev = source.alloc_frame()?;
    let mut cur = source.alloc_frame()?;
    let mut have_prev = false;
    let n = args.frames as usize;
    let (mut cap, mut dif, mut conv, mut enc, mut dec) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut bytes, mut encoded, mut unchanged, mut bands_encoded) = (0u64, 0u32, 0u32, 0u64);
    let mut psnr_min: Option<f64> = None;
    let epoch = Instant::now();
    // A real screen changes in real time: tick at 60 fps as a live session would, so an
    // `Unchanged` capture means "nothing changed this tick". Synthetic scenes advance one
    // step per capture and run flat out.
    let tick = (source.name() != "synthetic").then(|| Duration::from_micros(16_667));
    let mut next_tick = Instant::now();
    for i in 0..args.warmup + args.frames {
        let measured = i >= args.warmup;
        if let Some(tick) = tick {
            let now = Instant::now();
            if next_tick > now {
                std::thread::sleep(next_tick - now);
            }
            next_tick = (next_tick + tick).max(Instant::now());
        }
        let t = Instant::now();
        let now = Timestamp::from_micros(epoch.elapsed().as_micros() as u64);
        let mut outcome = source.capture(&mut cur, now)?;
        if tick.is_none() {
            // The steps a session at `fps` would not have encoded.
            for _ in 1..60 / args.fps {
                if source.capture(&mut cur, now)? == CaptureOutcome::Fresh {
                    outcome = CaptureOutcome::Fresh;
                }
            }
        }
        let capture_ms = elapsed_ms(t);
        if outcome == CaptureOutcome::Unchanged {
            unchanged += u32::from(measured);
            continue;
        }
        let reference = have_prev.then_some(&prev);
        let frame = match core.handle_frame(reference, &cur)? {
            FrameOutcome::Unchanged { diff_us } => {
                if measured {
                    unchanged += 1;
                    cap.push(capture_ms);
                    dif.push(f64::from(diff_us) / 1000.0);
                }
                continue;
            }
            FrameOutcome::Changed(f) => f.context("damaged bands produced no output")?,
        };
        let (diff_ms, convert_ms, encode_ms) = (
            f64::from(frame.timings.diff_us) / 1000.0,
            f64::from(frame.timings.convert_us) / 1000.0,
            f64::from(frame.timings.encode_us) / 1000.0,
        );
        let t = Instant::now();
        for band in &frame.bands {
            let d = decoders
                .decode(band.band, &band.data)?
                .context("a band access unit decoded to no picture")?;
            if measured {
                let top = d.top as usize * w as usize;
                let src = &core.image().y_plane()[top..];
                let p = psnr_plane(
                    d.y(),
                    d.y_stride(),
                    src,
                    w as usize,
                    w as usize,
                    d.height as usize,
                )
                .min(99.0);
                psnr_min = Some(psnr_min.map_or(p, |m: f64| m.min(p)));
            }
        }
        let decode_ms = elapsed_ms(t);
        std::mem::swap(&mut prev, &mut cur);
        have_prev = true;
        if measured {
            cap.push(capture_ms);
            dif.push(diff_ms);
            conv.push(convert_ms);
            enc.push(encode_ms);
            dec.push(decode_ms);
            bytes += frame.byte_len() as u64;
            encoded += 1;
            bands_encoded += frame.bands.len() as u64;
        }
    }
    let per_frame = bytes as f64 / f64::from(args.frames);
    Ok(Row {
        scene: String::new(),
        source: String::new(),
        width: w,
        height: h,
        bands: core.layout().count(),
        tuning: String::new(),
        frames: args.frames,
        encoded_frames: encoded,
        unchanged_frames: unchanged,
        capture_ms_p50: quantile(&mut cap, 0.5),
        diff_ms_p50: quantile(&mut dif, 0.5),
        convert_ms_p50: quantile(&mut conv, 0.5),
        encode_ms_p50: quantile(&mut enc, 0.5),
        encode_ms_p99: quantile(&mut enc, 0.99),
        decode_ms_p50: quantile(&mut dec, 0.5),
        bands_per_encoded_frame: (encoded > 0).then(|| bands_encoded as f64 / f64::from(encoded)),
        bytes_per_frame_mean: per_frame,
        kbps: per_frame * 8.0 * f64::from(args.fps) / 1000.0,
        psnr_y_db_min: psnr_min,
        pipeline_fps: 0.0,
        allocs_per_frame: 0.0,
    })
}

/// The real pipeline, flat out: frames through the encoder per second, and allocations per
/// capture cycle (fresh or unchanged) in steady state, over every thread of the process.
fn pipeline(args: &Args, source: Box<dyn Source>, codec: &CodecConfig) -> Result<(f64, f64)> {
    let config = PipelineConfig::default()
        .codec(codec.clone())
        .capture_fps(None);
    let p = Pipeline::start(source, config)?;
    let s = p.stats();
    let processed = || read(&s.frames_encoded) + read(&s.frames_unchanged_after_diff);
    let cycles = || read(&s.frames_captured) + read(&s.frames_unchanged_at_source);
    let limit = Duration::from_secs(args.pipeline_secs);
    let drain = |until: &dyn Fn() -> bool, deadline: Instant| {
        while !until() && Instant::now() < deadline && p.is_running() {
            // Frames are dropped at once, as a fast network task would.
            let _ = p.output().recv_timeout(Duration::from_millis(20));
        }
    };
    let start = Instant::now();
    drain(&|| processed() >= u64::from(args.warmup), start + limit);
    let (t0, done0, cycles0, allocs0) =
        (Instant::now(), processed(), cycles(), crate::alloc::count());
    drain(
        &|| processed() >= done0 + u64::from(args.frames),
        t0 + limit,
    );
    let (secs, done, cyc, allocs) = (
        t0.elapsed().as_secs_f64(),
        processed() - done0,
        cycles() - cycles0,
        crate::alloc::count() - allocs0,
    );
    p.shutdown()?;
    Ok((done as f64 / secs, allocs as f64 / cyc.max(1) as f64))
}
