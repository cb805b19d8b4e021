//! Helpers shared by the runnable examples (`demo.rs`, `sender.rs`, `viewer.rs`), built on
//! the public API only.

pub mod adhoc;
pub mod control;
pub mod policy;
pub mod window;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{Context, Result};
use deskwire_capture::Frame;
use deskwire_engine::TransportConfig;

/// Log to stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The X display to capture and inject into: `display`, else `$DISPLAY`; refused when there
/// is none and input is to be injected.
pub fn target_display(display: Option<String>, view_only: bool) -> Result<Option<String>> {
    let display = display.or_else(|| std::env::var("DISPLAY").ok());
    if display.is_none() && !view_only {
        anyhow::bail!(
            "no X display to inject input into: set $DISPLAY or --display, or pass --view-only"
        );
    }
    Ok(display)
}

/// Transport settings for a session through `broker`: when the broker is on loopback the
/// peers are too, and a wildcard bind would skip loopback, so bind 127.0.0.1; `bind`
/// overrides.
pub fn transport_for(broker: &str, bind: Option<IpAddr>) -> TransportConfig {
    let host = broker
        .trim_start_matches("ws://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let ip = bind.unwrap_or(if loopback {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    TransportConfig::default().bind(vec![ip])
}

/// Write a BGRA frame as an RGB PNG.
pub fn write_png(path: &Path, frame: &Frame) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_brokers_bind_loopback_and_others_the_wildcard() {
        let ip = |url| transport_for(url, None).bind[0];
        assert!(ip("ws://127.0.0.1:8450").is_loopback());
        assert!(ip("ws://localhost:8450").is_loopback());
        assert!(ip("ws://broker.example:8450").is_unspecified());
        let forced = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            transport_for("ws://broker.example", Some(forced)).bind,
            vec![forced]
        );
    }
}
