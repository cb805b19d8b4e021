//! Runnable examples of the deskwire public API. `demo.rs` is the README's main job: a broker,
//! an agent and a viewer on loopback for a few seconds, printing the session's statistics.
//!
//! What the examples share but is not the API being shown lives here: a broker in this
//! process, the choice of screen source, and the session's figures as the demo reports them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deskwire::{AgentStats, ConnectionCode, Viewer, ViewerEvent, ViewerStats};
use deskwire_broker::{BrokerConfig, SystemClock};
use deskwire_capture::{open, OpenOptions, Source, SourceSpec};
use deskwire_engine::stats::Histogram;

// The demo's command line (`scripts/demo --help`); a `//` comment, as clap would take a doc
// comment for the help text.
#[derive(Debug, clap::Parser)]
#[command(
    name = "demo",
    about = "Broker, target and technician on loopback: stream a screen for a few seconds"
)]
pub struct DemoArgs {
    /// Source: auto, x11, xcap or synthetic:<static|typing|scroll|video|drag>.
    /// Default: auto when $DISPLAY is set, else synthetic:typing.
    #[arg(long)]
    pub source: Option<String>,
    /// How long to stream after the session is established.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Number of horizontal bands, each its own H.264 stream (default: the engine's).
    #[arg(long)]
    pub bands: Option<u32>,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 1920)]
    pub width: u32,
    /// Size of a synthetic desktop.
    #[arg(long, default_value_t = 1080)]
    pub height: u32,
    /// Where to write the last decoded picture.
    #[arg(long, default_value = "deskwire-demo.png")]
    pub snapshot: PathBuf,
}

/// A broker serving on 127.0.0.1 from its own runtime thread; stopped when dropped.
pub struct LoopbackBroker {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), deskwire_broker::BrokerError>>>,
    rt: tokio::runtime::Runtime,
}

impl fmt::Debug for LoopbackBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackBroker")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl LoopbackBroker {
    /// A broker with default settings on a free port.
    pub fn start() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("demo-broker")
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("ws://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(deskwire_broker::run(
            listener,
            BrokerConfig::default(),
            Arc::new(SystemClock),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            url,
            stop: Some(stop),
            task: Some(task),
            rt,
        })
    }

    /// Where agents and viewers reach it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for LoopbackBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self.rt.block_on(task);
        }
    }
}

/// The screen to stream: `source` if given, else the real display when `$DISPLAY` is set,
/// else a synthetic desktop of `width` x `height`.
pub fn demo_source(
    source: Option<&str>,
    width: u32,
    height: u32,
) -> Result<(SourceSpec, Box<dyn Source>)> {
    let spec: SourceSpec = match source {
        Some(s) => s.parse()?,
        None if std::env::var_os("DISPLAY").is_some() => SourceSpec::Auto,
        None => "synthetic:typing".parse()?,
    };
    let opts = OpenOptions {
        width,
        height,
        ..OpenOptions::default()
    };
    let source = open(&spec, &opts).with_context(|| format!("opening source {spec}"))?;
    Ok((spec, source))
}

/// The connection code the broker gives `viewer`, within `timeout`.
pub fn wait_for_code(viewer: &Viewer, timeout: Duration) -> Result<ConnectionCode> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match viewer.events().recv_timeout(left) {
            Ok(ViewerEvent::Code { code, .. }) => return Ok(code),
            Ok(ViewerEvent::Disconnected(r)) => bail!("technician side ended: {r}"),
            Ok(_) => {}
            Err(_) => bail!("no connection code from the broker in {timeout:?}"),
        }
    }
}

/// Frames decoded in the first second after the first one count as warm-up.
const WARMUP: Duration = Duration::from_secs(1);

/// A session's figures as the demo prints them (`Display`), from the viewer's events.
#[derive(Debug)]
pub struct SessionReport {
    /// When the code was entered at the target.
    entered: Instant,
    first_frame: Option<Duration>,
    // In microseconds, as the viewer keeps its own latency figures.
    warm: Histogram,
    steady: Histogram,
    stats: ViewerStats,
    host: Option<AgentStats>,
}

impl SessionReport {
    /// Figures counted from `entered`, when the target entered the code.
    pub fn new(entered: Instant) -> Self {
        Self {
            entered,
            first_frame: None,
            warm: Histogram::default(),
            steady: Histogram::default(),
            stats: ViewerStats::default(),
            host: None,
        }
    }

    /// Count a viewer event.
    pub fn handle_viewer(&mut self, event: &ViewerEvent) {
        match event {
            ViewerEvent::Frame(f) => {
                let since_entry = self.entered.elapsed();
                let first = *self.first_frame.get_or_insert(since_entry);
                if let Some(l) = f.latency {
                    // The first second carries the start-up keyframe of every band (a few
                    // hundred KB through SCTP slow start): reported apart from steady state.
                    let bucket = if since_entry - first < WARMUP {
                        &self.warm
                    } else {
                        &self.steady
                    };
                    bucket.record(l.as_micros() as u64);
                }
            }
            ViewerEvent::Stats(s) => self.stats = s.clone(),
            _ => {}
        }
    }

    /// Keep the target's latest statistics.
    pub fn handle_host_stats(&mut self, stats: AgentStats) {
        self.host = Some(stats);
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("n/a".to_owned(), |d| {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    })
}

fn us(h: &Histogram, v: u64) -> String {
    ms((h.count() > 0).then(|| Duration::from_micros(v)))
}

impl fmt::Display for SessionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, warm, steady) = (&self.stats, &self.warm, &self.steady);
        writeln!(f, "session:")?;
        writeln!(
            f,
            "  code entry -> first decoded frame  {}",
            ms(self.first_frame)
        )?;
        writeln!(
            f,
            "  frames decoded                     {}",
            s.frames_decoded
        )?;
        writeln!(f, "  fps (last second)                  {:.1}", s.fps)?;
        writeln!(f, "  kbps on the video channel          {:.1}", s.kbps)?;
        writeln!(
            f,
            "  capture -> decoded latency p50     {}   (after the first second, {} frames)",
            us(steady, steady.quantile(0.50)),
            steady.count()
        )?;
        writeln!(
            f,
            "  capture -> decoded latency p99     {}",
            us(steady, steady.quantile(0.99))
        )?;
        writeln!(
            f,
            "  first second: p50 {}, max {}    ({} frames)",
            us(warm, warm.quantile(0.50)),
            us(warm, warm.max()),
            warm.count()
        )?;
        writeln!(f, "  round trip                         {}", ms(s.rtt))?;
        write!(
            f,
            "  keyframe requests                  {}",
            s.keyframe_requests
        )?;
        if let Some(h) = &self.host {
            write!(
                f,
                "\n  band frames dropped at the sender  {}",
                h.bands_dropped
            )?;
        }
        Ok(())
    }
}
