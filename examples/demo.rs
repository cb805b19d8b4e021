//! One-shot demo: a broker, a target and a technician in one process on loopback. The
//! technician gets a code, the target joins with it, the screen streams for a few seconds,
//! and the session statistics and a snapshot PNG are printed.
//!
//! Uses the real display when `$DISPLAY` is set, else a synthetic desktop.
//!
//! ```text
//! cargo run --release -p deskwire-examples --example demo -- --seconds 5
//! ```
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use deskwire::ControllerStats;
use deskwire::{
    Controller, ControllerConfig, ControllerEvent, Host, HostConfig, HostEvent, TransportConfig,
};
use deskwire_broker::{BrokerConfig, SystemClock};
use deskwire_capture::{open, OpenOptions, SourceSpec};
use deskwire_engine::stats::Histogram;
use deskwire_engine::{BandSpec, CodecConfig, PipelineConfig};
use deskwire_viewer::write_png;

#[derive(Debug, Parser)]
#[command(
    name = "demo",
    about = "Broker, target and technician on loopback: stream a screen for a few seconds"
)]
struct Args {
    /// Source: auto, x11, xcap or synthetic:<static|typing|scroll|video|drag>.
    /// Default: auto when $DISPLAY is set, else synthetic:typing.
    #[arg(long)]
    source: Option<String>,
    /// How long to stream after the session is established.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
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
    deskwire::init_tracing();
    let args = Args::parse();
    let display = std::env::var("DISPLAY").ok();
    let spec: SourceSpec = match &args.source {
        Some(s) => s.parse()?,
        None if display.is_some() => SourceSpec::Auto,
        None => "synthetic:typing".parse()?,
    };
    let synthetic = matches!(spec, SourceSpec::Synthetic(_));
    let opts = OpenOptions {
        width: args.width,
        height: args.height,
        ..OpenOptions::default()
    };
    let source = open(&spec, &opts).with_context(|| format!("opening source {spec}"))?;
    let (w, h) = source.size();

    // The broker, on its own runtime thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("demo-broker")
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("ws://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let broker = rt.spawn(deskwire_broker::run(
        listener,
        BrokerConfig::default(),
        Arc::new(SystemClock),
        async move {
            let _ = stop_rx.await;
        },
    ));
    println!("broker on {url}");

    let transport = TransportConfig::default().bind(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let controller = Controller::start(ControllerConfig::new(&url).transport(transport.clone()))?;
    let code = loop {
        match controller.events().recv_timeout(Duration::from_secs(10)) {
            Ok(ControllerEvent::Code { code, .. }) => break code,
            Ok(ControllerEvent::Disconnected(r)) => bail!("technician side ended: {r}"),
            Ok(_) => {}
            Err(_) => bail!("no connection code from the broker in 10 s"),
        }
    };
    println!("connection code: {code}");

    let mut codec = CodecConfig::default();
    if let Some(b) = args.bands {
        codec = codec.bands(BandSpec::Count(b));
    }
    // A synthetic desktop has no display to inject into, so it is view-only.
    let host_config = HostConfig::new(&url)
        .transport(transport)
        .view_only(synthetic || display.is_none())
        .input_display(display)
        .pipeline(PipelineConfig::default().codec(codec));
    let entered = Instant::now();
    let host = Host::start(host_config, source, code)?;
    println!("streaming {spec}, {w}x{h}, for {:.1} s", args.seconds);

    let mut first_frame = None;
    // In microseconds, as the controller keeps its own latency figures.
    let (warm, steady) = (Histogram::default(), Histogram::default());
    let mut end = None;
    let mut stats = ControllerStats::default();
    let mut host_stats = None;
    loop {
        if end.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        while let Ok(e) = host.events().try_recv() {
            match e {
                HostEvent::Disconnected(r) => bail!("target side ended: {r}"),
                HostEvent::Stats(s) => host_stats = Some(s),
                _ => {}
            }
        }
        let Ok(event) = controller.events().recv_timeout(Duration::from_millis(20)) else {
            if end.is_none() && entered.elapsed() > Duration::from_secs(20) {
                bail!("the session did not start within 20 s");
            }
            continue;
        };
        match event {
            ControllerEvent::Connected { setup } => {
                println!(
                    "connected: channels open {} ms after the target joined",
                    setup.as_millis()
                );
                end = Some(Instant::now() + Duration::from_secs_f64(args.seconds));
            }
            ControllerEvent::Frame(f) => {
                let since_entry = entered.elapsed();
                let first = *first_frame.get_or_insert(since_entry);
                if let Some(l) = f.latency {
                    // The first second carries the start-up keyframe of every band (a few
                    // hundred KB through SCTP slow start): reported apart from steady state.
                    let bucket = if since_entry - first < WARMUP {
                        &warm
                    } else {
                        &steady
                    };
                    bucket.record(l.as_micros() as u64);
                }
            }
            ControllerEvent::Stats(s) => stats = s,
            ControllerEvent::Disconnected(r) => bail!("technician side ended: {r}"),
            _ => {}
        }
    }
    let ms = |d: Option<Duration>| {
        d.map_or("n/a".to_owned(), |d| {
            format!("{:.2} ms", d.as_secs_f64() * 1000.0)
        })
    };
    let us = |h: &Histogram, v: u64| ms((h.count() > 0).then(|| Duration::from_micros(v)));
    println!("session:");
    println!("  code entry -> first decoded frame  {}", ms(first_frame));
    println!(
        "  frames decoded                     {}",
        stats.frames_decoded
    );
    println!("  fps (last second)                  {:.1}", stats.fps);
    println!("  kbps on the video channel          {:.1}", stats.kbps);
    println!(
        "  capture -> decoded latency p50     {}   (after the first second, {} frames)",
        us(&steady, steady.quantile(0.50)),
        steady.count()
    );
    println!(
        "  capture -> decoded latency p99     {}",
        us(&steady, steady.quantile(0.99))
    );
    println!(
        "  first second: p50 {}, max {}    ({} frames)",
        us(&warm, warm.quantile(0.50)),
        us(&warm, warm.max()),
        warm.count()
    );
    println!("  round trip                         {}", ms(stats.rtt));
    println!(
        "  keyframe requests                  {}",
        stats.keyframe_requests
    );
    if let Some(s) = host_stats {
        println!("  band frames dropped at the sender  {}", s.bands_dropped);
    }
    let saved = controller.with_frame(|f| write_png(&args.snapshot, f));
    controller.shutdown()?;
    host.shutdown()?;
    let _ = stop_tx.send(());
    let _ = rt.block_on(broker);
    match saved {
        Some(r) => {
            r?;
            println!("snapshot: {}", args.snapshot.display());
        }
        None => println!("no frame was decoded; no snapshot written"),
    }
    Ok(())
}

/// Frames decoded in the first second after the first one count as warm-up.
const WARMUP: Duration = Duration::from_secs(1);
