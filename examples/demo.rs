//! One-shot demo: stream a screen through the pipeline for a few seconds, decode it as a viewer
//! would, print per-stage statistics and write the last decoded picture as a PNG.
//!
//! Uses the real display when `$DISPLAY` is set, else a synthetic desktop.
//!
//! ```text
//! cargo run --release -p deskwire-examples --example demo -- --seconds 5
//! ```
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use deskwire_capture::{open, OpenOptions, SourceSpec};
use deskwire_engine::stats::{read, Histogram};
use deskwire_engine::{BandDecoderSet, BandSpec, CodecConfig, Pipeline, PipelineConfig};

#[derive(Debug, Parser)]
#[command(
    name = "demo",
    about = "Stream a screen through deskwire for a few seconds and report what it cost"
)]
struct Args {
    /// Source: auto, x11, xcap or synthetic:<static|typing|scroll|video|drag>.
    /// Default: auto when $DISPLAY is set, else synthetic:typing.
    #[arg(long)]
    source: Option<String>,
    /// How long to stream.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Capture rate.
    #[arg(long, default_value_t = 60)]
    fps: u32,
    /// Number of horizontal bands, each its own H.264 stream (default: the engine's).
    #[arg(long)]
    bands: Option<u32>,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Where to write the last decoded picture.
    #[arg(long, default_value = "deskwire-demo.png")]
    snapshot: PathBuf,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let spec: SourceSpec = match &args.source {
        Some(s) => s.parse()?,
        None if std::env::var_os("DISPLAY").is_some() => SourceSpec::Auto,
        None => "synthetic:typing".parse()?,
    };
    let opts = OpenOptions {
        width: args.width,
        height: args.height,
        ..OpenOptions::default()
    };
    let source = open(&spec, &opts).with_context(|| format!("opening source {spec}"))?;
    let (w, h) = source.size();
    let mut codec = CodecConfig::default();
    if let Some(b) = args.bands {
        codec = codec.bands(BandSpec::Count(b));
    }
    let config = PipelineConfig::default()
        .codec(codec.clone())
        .capture_fps(Some(args.fps));
    let pipeline = Pipeline::start(source, config)?;
    println!(
        "streaming {spec} ({}), {w}x{h}, {} bands, {} fps, for {:.1} s",
        pipeline.source_name(),
        pipeline.layout().count(),
        args.fps,
        args.seconds
    );

    // The viewer side: decode every band and measure capture -> decoded latency (one
    // process, so both ends share the pipeline's clock).
    let mut viewer = BandDecoderSet::new(w, h, codec.bands, codec.color)?;
    let decode_us = Histogram::default();
    let latency_us = Histogram::default();
    let (mut frames, mut bytes) = (0u64, 0u64);
    let epoch = pipeline.epoch();
    let end = Instant::now() + Duration::from_secs_f64(args.seconds);
    while Instant::now() < end {
        let Ok(frame) = pipeline.output().recv_timeout(Duration::from_millis(100)) else {
            if !pipeline.is_running() {
                break;
            }
            continue;
        };
        let t = Instant::now();
        for band in &frame.bands {
            viewer.decode(band.band, &band.data)?;
        }
        decode_us.record(t.elapsed().as_micros() as u64);
        let shown = epoch.elapsed().as_micros() as u64;
        latency_us.record(shown.saturating_sub(frame.captured_at.as_micros()));
        frames += 1;
        bytes += frame.byte_len() as u64;
    }
    let s = pipeline.stats();
    let ms = |h: &Histogram, q: f64| h.quantile(q) as f64 / 1000.0;
    let row = |name: &str, h: &Histogram| {
        println!(
            "  {name:<22} p50 {:>7.3} ms   p99 {:>7.3} ms   ({} samples)",
            ms(h, 0.5),
            ms(h, 0.99),
            h.count()
        );
    };
    println!("frames:");
    println!("  captured fresh         {}", read(&s.frames_captured));
    println!(
        "  unchanged at source    {}",
        read(&s.frames_unchanged_at_source)
    );
    println!(
        "  unchanged after diff   {}",
        read(&s.frames_unchanged_after_diff)
    );
    println!("  superseded in slot     {}", read(&s.frames_superseded));
    println!("  encoded                {}", read(&s.frames_encoded));
    println!("  band pictures encoded  {}", read(&s.bands_encoded));
    println!("  decoded by the viewer  {frames}");
    println!("stages:");
    row("capture", &s.capture_us);
    row("diff", &s.diff_us);
    row("convert (dirty rows)", &s.convert_us);
    row("encode (damaged bands)", &s.encode_us);
    row("decode (viewer)", &decode_us);
    row("capture -> decoded", &latency_us);
    println!(
        "bitrate: {:.0} kbps over {:.1} s ({bytes} bytes)",
        bytes as f64 * 8.0 / 1000.0 / args.seconds,
        args.seconds
    );
    pipeline.shutdown()?;
    write_png(&args.snapshot, viewer.canvas())?;
    println!("snapshot: {}", args.snapshot.display());
    Ok(())
}

fn write_png(path: &PathBuf, frame: &deskwire_capture::Frame) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), frame.width(), frame.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut rgb = Vec::with_capacity((frame.width() * frame.height() * 3) as usize);
    for y in 0..frame.height() {
        for px in frame.row(y).chunks_exact(4) {
            rgb.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    enc.write_header()?.write_image_data(&rgb)?;
    Ok(())
}
