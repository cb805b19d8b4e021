//! `deskwire-bench`: measures deskwire's stages and pipeline and prints one JSON object per
//! line (`--json`) or a table.
//!
//! `stages` does two runs per scene and band count:
//! 1. every stage in turn on one thread (capture, diff, convert, encode, decode), so each
//!    stage's time is its own, and every encoded band is decoded to check Y-PSNR;
//! 2. the real threaded pipeline flat out, for frames per second and allocations per frame.

mod abuse;
mod alloc;
mod bits;
mod e2e;
mod echo;
mod libwebrtc;
mod net;
mod paint;
mod peers;
mod plot;
mod stages;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Debug, Parser)]
#[command(
    name = "deskwire-bench",
    version,
    about = "Benchmarks for the deskwire engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per-stage timings, bytes, quality and pipeline throughput.
    Stages(stages::Args),
    /// Real sessions per scene (target and viewer in separate processes on loopback
    /// WebRTC) side by side with ffmpeg + x264 and the naive crate pipeline.
    E2e(e2e::Args),
    /// Key to echo through the viewer's real window: keys pressed with XTEST on the
    /// technician's Xvfb, the echo found in the window's pixels (p50/p90/p99 and where the
    /// time goes).
    Echo(echo::Args),
    /// The broker under a join spam: a legitimate set-up's p50/p99 before, during and
    /// after, and the broker's memory.
    Abuse(abuse::Args),
    /// Bits at equal quality: deskwire's band encoders and ffmpeg + x264 on the same
    /// recorded frames of real content, both decoded and compared one way (Y-PSNR curves,
    /// kbit/s at x264's default quality, BD-rate).
    Bits(bits::Args),
    /// Real sessions across an emulated impaired link (`deskwire-netem`), one per profile:
    /// frame rate, freezes, latency, rate, convergence. Needs root (network namespaces).
    Net(net::Args),
    /// The viewer end of one e2e session (driven by `e2e`).
    #[command(name = "e2e-viewer", hide = true)]
    E2eViewer(e2e::roles::ViewerArgs),
    /// The target end of one e2e session (driven by `e2e`).
    #[command(name = "e2e-target", hide = true)]
    E2eTarget(e2e::roles::TargetArgs),
    /// The libwebrtc peer's pages and signalling (driven by `net --peer libwebrtc`).
    #[command(name = "libwebrtc-signal", hide = true)]
    LibwebrtcSignal(libwebrtc::signal::SignalArgs),
    /// A 60 fps full-screen source for `e2e`'s x11-paint scene.
    #[command(name = "paint", hide = true)]
    Paint(paint::Args),
    /// One naive-pipeline peer run for `e2e` (prints a JSON line).
    #[command(name = "peer-naive", hide = true)]
    PeerNaive(peers::NaiveArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,enigo=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stages(args) => stages::run(&args),
        Command::E2e(args) => e2e::run(&args),
        Command::Bits(args) => bits::run(&args),
        Command::E2eViewer(args) => e2e::roles::run_viewer(&args),
        Command::E2eTarget(args) => e2e::roles::run_target(&args),
        Command::Net(args) => net::run(&args),
        Command::Echo(args) => echo::run(&args),
        Command::Abuse(args) => abuse::run(&args),
        Command::PeerNaive(args) => peers::naive_main(&args),
        Command::Paint(args) => paint::run(&args),
        Command::LibwebrtcSignal(args) => libwebrtc::signal::run(&args),
    };
    if let Err(e) = result {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("deskwire-bench: {e:#}");
        }
        std::process::exit(1);
    }
}
