//! The log setup every deskwire program shares, so the agent, the viewer and the examples
//! filter and route their logs the same way.

/// Log to stderr, `info` unless `RUST_LOG` says otherwise; WebRTC's own chatter only from
/// `warn` up, as it logs every ICE and SCTP step at `info`.
///
/// For programs: it installs the process's global subscriber, and panics if one is
/// already installed. An embedder with its own subscriber leaves it alone.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
