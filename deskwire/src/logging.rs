//! The log setup every deskwire program shares, so the agent, the viewer and the examples
//! filter and route their logs the same way.

use std::io::IsTerminal;

/// The filter for a verbosity: 0 is quiet (what the program prints is the report; logs
/// only for warnings of deskwire's own and errors of anything else), 1 (`-v`) adds
/// deskwire's `info`, 2 (`-vv`) its `debug` and other crates' warnings, 3 and up everything
/// at `debug`. Other crates stay at `error` until asked: the WebRTC stack warns of things a
/// good session does anyway (an ICE check before the candidates came, a DTLS server name
/// defaulted), and enigo of keyboard modifiers the X server leaves unmapped.
fn filter_for(verbosity: u8) -> String {
    let (own, others) = match verbosity {
        0 => ("warn", "error"),
        1 => ("info", "error"),
        2 => ("debug", "warn"),
        _ => ("debug", "debug"),
    };
    let mut f = others.to_owned();
    for krate in [
        "deskwire",
        "deskwire_session",
        "deskwire_engine",
        "deskwire_capture",
        "deskwire_signal",
    ] {
        f.push_str(&format!(",{krate}={own}"));
    }
    f
}

/// Log to stderr, quiet (see [`filter_for`]) unless `RUST_LOG` says otherwise.
///
/// For programs: it installs the process's global subscriber, and panics if one is
/// already installed. An embedder with its own subscriber leaves it alone.
pub fn init_tracing() {
    init_tracing_verbosity(0);
}

/// Log to stderr at this verbosity (the count of a program's `-v` flags; see
/// [`filter_for`]); `RUST_LOG` wins when set. Colours only on a terminal, never into a
/// file.
pub fn init_tracing_verbosity(verbosity: u8) {
    let stderr = std::io::stderr();
    let ansi = stderr.is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| filter_for(verbosity).into()),
        )
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_by_default_and_each_v_opens_more() {
        let quiet = filter_for(0);
        assert!(quiet.starts_with("error,"), "{quiet}");
        assert!(quiet.contains(",deskwire=warn"), "{quiet}");
        assert!(filter_for(1).contains(",deskwire=info"));
        assert!(filter_for(2).starts_with("warn,"));
        assert!(filter_for(3).starts_with("debug,"));
        for v in 0..5 {
            tracing_subscriber::EnvFilter::try_new(filter_for(v)).expect("a valid filter");
        }
    }
}
