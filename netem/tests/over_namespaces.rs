//! Real UDP across a testbed: namespaces A and B, the forwarder in between, the probe at
//! both ends. These need root, iproute2 and /dev/net/tun, and fail (never skip) without.
#![allow(clippy::print_stderr)] // the measured figures are reported next to the assertions

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use deskwire_netem::testbed::Testbed;
use deskwire_netem::{LinkConfig, LinkProfile, Outage, ProbeReport};

const NETEM: &str = env!("CARGO_BIN_EXE_deskwire-netem");
const PORT: u16 = 7007;

/// 4 Mbit/s each way, 40 ms RTT, `loss` per direction.
fn small_link(loss: f64) -> LinkProfile {
    LinkProfile::symmetric(
        "test",
        LinkConfig {
            rate: Some(4_000_000),
            delay: Duration::from_millis(20),
            loss,
            ..LinkConfig::default()
        },
    )
}

fn testbed(profile: &LinkProfile) -> Testbed {
    Testbed::start(profile, Path::new(NETEM)).unwrap_or_else(|e| {
        panic!("cannot build the testbed (these tests need root, iproute2 and /dev/net/tun): {e}")
    })
}

/// `probe echo` in B, killed (by its pid) when dropped.
struct Echo(Child);

impl Echo {
    fn start(bed: &Testbed) -> Self {
        let child = bed
            .command_in_b(NETEM)
            .args(["probe", "echo", "--listen", &format!("0.0.0.0:{PORT}")])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting probe echo in B");
        Self(child)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `probe send` from A to B's echo; waits for it and reads its report.
fn probe(bed: &Testbed, rate_kbit: u32, secs: f64, size: u32) -> ProbeReport {
    let out = bed
        .command_in_a(NETEM)
        .args(["probe", "send", "--to", &format!("{}:{PORT}", bed.addr_b())])
        .args(["--rate-kbit", &rate_kbit.to_string()])
        .args(["--secs", &secs.to_string()])
        .args(["--size", &size.to_string()])
        .args(["--linger-ms", "300", "--wait-ms", "2000"])
        .stdin(Stdio::null())
        .output()
        .expect("running probe send in A");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe send failed ({}): {}\nforwarder log: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        bed.log()
    );
    let report = ProbeReport::from_json(&stdout).expect("probe send prints a JSON report");
    eprintln!("probe: {}", report.to_json());
    if let Ok(stats) = bed.stats() {
        eprintln!("forwarder: {}", stats.to_json());
    }
    report
}

#[test]
fn round_trip_shows_the_profile_delay_and_loss() {
    let bed = testbed(&small_link(0.05));
    let _echo = Echo::start(&bed);
    // 1 Mbit/s into 4 Mbit/s: no queue, so the RTT is propagation plus two serialisations
    // of 1028 bytes (about 2 ms each).
    let r = probe(&bed, 1000, 2.0, 1000);
    assert_eq!(r.sent, 250);
    assert!(
        r.rtt_min_ms >= 40.0,
        "faster than light: {} ms",
        r.rtt_min_ms
    );
    assert!(
        (40.0..55.0).contains(&r.rtt_p50_ms),
        "RTT p50 {} ms for 40 ms",
        r.rtt_p50_ms
    );
    let expected = 1.0 - 0.95f64 * 0.95;
    assert!(
        (r.loss - expected).abs() < 0.06,
        "round-trip loss {} for {expected}",
        r.loss
    );
}

#[test]
fn sending_above_the_rate_is_capped_at_the_rate() {
    let bed = testbed(&small_link(0.0));
    let _echo = Echo::start(&bed);
    let r = probe(&bed, 8000, 1.5, 1000);
    // The link counts IP packets (1028 bytes), the probe UDP payload (1000).
    let cap = 4000.0 * 1000.0 / 1028.0;
    assert!(
        r.throughput_kbit <= cap * 1.03 && r.throughput_kbit >= cap * 0.8,
        "{} kbit/s through a {cap:.0} kbit/s link",
        r.throughput_kbit
    );
    assert!(
        r.loss > 0.35,
        "half the offered load must be dropped: {}",
        r.loss
    );
    // The drop-tail queue (100 ms at 4 Mbit/s) fills and adds its delay.
    assert!(r.rtt_p95_ms > 100.0, "RTT p95 {} ms", r.rtt_p95_ms);
    let stats = bed.stats().expect("forwarder counters");
    assert!(stats.a_to_b.dropped_queue > 0, "{stats:?}");
    assert_eq!(stats.a_to_b.dropped_loss, 0);
}

#[test]
fn an_outage_stops_echoes_and_they_resume() {
    let mut profile = LinkProfile::symmetric(
        "outage",
        LinkConfig {
            rate: Some(20_000_000),
            delay: Duration::from_millis(5),
            ..LinkConfig::default()
        },
    );
    let outage = Outage {
        start: Duration::from_millis(1000),
        length: Duration::from_millis(1000),
    };
    profile.a_to_b.outages = vec![outage];
    profile.b_to_a.outages = vec![outage];
    let bed = testbed(&profile);
    let _echo = Echo::start(&bed);
    // 125 packets a second for 3 s; the outage is 1 s after the forwarder started.
    let r = probe(&bed, 500, 3.0, 500);
    assert!(
        (900.0..1250.0).contains(&r.longest_silence_ms),
        "silence of {} ms for a 1000 ms outage",
        r.longest_silence_ms
    );
    assert!(
        r.silence_start_ms < 1000.0,
        "the silence began at {} ms",
        r.silence_start_ms
    );
    assert!(
        r.last_echo_ms > r.silence_start_ms + r.longest_silence_ms + 500.0,
        "echoes must resume after the outage: {r:?}"
    );
    let stats = bed.stats().expect("forwarder counters");
    let dropped = stats.a_to_b.dropped_outage;
    assert!(
        (100..=140).contains(&dropped),
        "{dropped} dropped by the outage"
    );
    assert_eq!(stats.a_to_b.dropped_loss + stats.a_to_b.dropped_queue, 0);
}
