//! The deskwire signalling broker: pairs a controller (the technician) with a target through
//! a short connection code, then relays their WebRTC offer and answer. It never sees media.
//!
//! ```text
//! controller --create_session--> broker --session_created {code}--> controller
//! target     --join {code}-----> broker --joined--> target, --peer_joined--> controller
//! either     --relay {signal}--> broker --relay {signal}--> the other
//! ```
//!
//! Layout: `codes` (sans-IO code book: issue, redeem, tombstones) and `switchboard` (sans-IO
//! protocol rules) take `now` as an argument and own no socket; `server` drives them with
//! axum and tokio. [`run`] is the entry point; the `deskwire-broker` binary wraps it.
#![deny(missing_docs)]

mod clock;
mod codes;
mod config;
mod limits;
pub mod mail;
mod server;
pub mod store;
mod switchboard;

use std::future::Future;
use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BrokerConfig, ConfigError};

/// Why the broker could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error("invalid broker configuration: {0}")]
    Config(#[from] ConfigError),
    /// The operating system's random source failed, so no unguessable code can be issued.
    #[error("could not seed the connection code generator: {0}")]
    Entropy(String),
    /// The saved ad-hoc sessions cannot be read (the broker refuses to start rather than
    /// overwrite them).
    #[error("ad-hoc sessions: {0}")]
    Adhoc(String),
    /// The HTTP server failed.
    #[error("signalling server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serve signalling WebSockets at [`deskwire_signal::SIGNAL_PATH`] and `GET /healthz` on
/// `listener` until `shutdown` resolves.
///
/// On shutdown it stops accepting, sends every open socket a close frame ("going away") and
/// returns once all of their tasks have ended. `clock` decides code expiry: [`SystemClock`]
/// in production, a shared [`ManualClock`] in tests.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    run_with_store(listener, config, clock, None, shutdown).await
}

/// [`run`], appending every join attempt and outcome to `store`'s audit log (in order, off
/// the signalling path; the queue is written out before this returns).
pub async fn run_with_store(
    listener: tokio::net::TcpListener,
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    store: Option<store::Store>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    config.validate()?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving signalling");
    }
    server::serve(listener, config, clock, store, shutdown).await
}
