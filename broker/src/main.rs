//! `deskwire-broker`: the signalling broker as a process.
//!
//! Prints one line, `listening on ws://IP:PORT/v1/signal`, once it is bound (so scripts and
//! tests started with port 0 learn the real port), logs to stderr, and serves until SIGINT
//! or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use deskwire_broker::{BrokerConfig, SystemClock};
use deskwire_signal::SIGNAL_PATH;
use tracing_subscriber::EnvFilter;

/// Exit code for a command line the broker cannot act on (as clap uses for bad flags).
const USAGE: u8 = 2;

/// Signalling broker: pairs a technician and a user by connection code and relays their
/// WebRTC offer and answer.
#[derive(Debug, Parser)]
#[command(name = "deskwire-broker", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8450")]
    listen: SocketAddr,
    /// Seconds a connection code works after it is issued.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    code_ttl: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = BrokerConfig::default().code_ttl(Duration::from_secs(args.code_ttl));
    if let Err(e) = config.validate() {
        return fail(USAGE, &format!("invalid --code-ttl: {e}"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &format!("could not start the async runtime: {e}")),
    };
    runtime.block_on(serve(args.listen, config))
}

async fn serve(addr: SocketAddr, config: BrokerConfig) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => return fail(USAGE, &format!("cannot listen on {addr}: {e}")),
    };
    let bound = match listener.local_addr() {
        Ok(bound) => bound,
        Err(e) => return fail(1, &format!("cannot read the listening address: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) =
        writeln!(stdout, "listening on ws://{bound}{SIGNAL_PATH}").and_then(|()| stdout.flush())
    {
        return fail(1, &format!("cannot write to stdout: {e}"));
    }
    drop(stdout);

    match deskwire_broker::run(listener, config, Arc::new(SystemClock), termination()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e.to_string()),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!("cannot watch SIGTERM, only SIGINT stops the broker: {e}"),
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!("cannot watch SIGINT either: {e}; serving until killed");
        std::future::pending::<()>().await;
    }
}

/// Report `message` on stderr and return `code`.
fn fail(code: u8, message: &str) -> ExitCode {
    // Before or outside logging: the user must see why the broker did not start.
    let _ = writeln!(std::io::stderr(), "deskwire-broker: {message}");
    ExitCode::from(code)
}
