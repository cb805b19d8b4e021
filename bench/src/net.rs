//! `deskwire-bench net --profile NAME`: a real session per profile across the emulated
//! link (`deskwire-netem`): the target in namespace A, broker and viewer in B, the
//! synthetic scene on the target. Per profile: delivered frame rate (mean and the worst
//! second), freeze time (gaps over 200 ms), capture -> shown latency, what the link carried
//! against its rate, and how close the picture is to the screen a moment after the content
//! stops (Y-PSNR).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use deskwire_engine::quality::psnr_plane;
use deskwire_netem::testbed::Testbed;
use deskwire_netem::LinkProfile;
use serde::Serialize;

use crate::e2e::report::quantile;
use crate::e2e::roles::{read_luma, ViewerReport};
use crate::e2e::Role;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Link profile (repeatable): lan, cable, dsl, lte, hotel-wifi, satellite, step,
    /// outage-8, outage-25. Default: all but the outages.
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// Synthetic scene on the target: scroll, typing, video, drag, static.
    #[arg(long, default_value = "scroll")]
    scene: String,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Seconds measured per profile, after the warm-up.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,
    /// Sessions per profile (each system in turn, so both meet the same machine); the
    /// table then ends with each system's medians.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Seconds after the channels open before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// How long after the content stops the picture is compared with the screen.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// One JSON object per profile per line on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep packets in order whatever the profile's jitter (Wi-Fi's link layer delivers a
    /// flow in order; its jitter delays everything behind a slow frame instead).
    #[arg(long)]
    in_order: bool,
    /// Turn deskwire's loss shield off on both ends, to measure what it does.
    #[arg(long)]
    no_loss_shield: bool,
    /// Which system streams: deskwire, libwebrtc (two headless Chromiums, the sender's fake
    /// camera playing a recording of the scene) or both, one after the other per profile.
    #[arg(long, default_value = "deskwire", value_parser = ["deskwire", "libwebrtc", "both"])]
    peer: String,
    /// Where to write the Markdown table.
    #[arg(long, default_value = "target/bench-net")]
    out: PathBuf,
}

/// A gap between shown frames longer than this is a freeze.
const FREEZE_MS: f64 = 200.0;

/// One profile's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NetResult {
    /// `deskwire` or `libwebrtc`.
    pub system: String,
    pub profile: String,
    pub scene: String,
    /// The downlink's rate at the start, Mbit/s (`None`: unlimited).
    pub link_mbit: Option<f64>,
    pub seconds: f64,
    pub fps: f64,
    /// The fewest frames shown in any whole second.
    pub worst_second_fps: u32,
    /// Frames shown in each whole second, in order: where the freezes were.
    pub per_second_fps: Vec<u32>,
    pub freeze_ms: f64,
    pub freeze_pct: f64,
    /// The longest single freeze: what a goal like "no freeze over 1 s" reads.
    pub longest_freeze_ms: f64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub kbps: f64,
    /// Everything that crossed the emulated link during the window, IP bytes both ways
    /// (video, control, SCTP acknowledgements, ICE keepalives): what the session costs on
    /// the wire, idle or not.
    pub wire_kbps: Option<f64>,
    /// Packets toward the viewer that the link's bottleneck queue dropped during the
    /// window: the sender overran the link (deskwire only).
    pub queue_drops: Option<u64>,
    /// Y-PSNR of what the viewer shows `settle` seconds after the content stopped
    /// (deskwire only: the peer's recording loops rather than stops).
    pub converged_psnr_y_db: Option<f64>,
    /// The peer's codec as it negotiated it (deskwire: H.264 per band).
    pub codec: Option<String>,
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let profiles: Vec<String> = if args.profiles.is_empty() {
        // Every named profile but the outages (which leave little to measure in a window)
        // and `custom` (a perfect link).
        deskwire_netem::PROFILE_NAMES
            .iter()
            .filter(|p| !p.starts_with("outage") && **p != "custom")
            .map(|p| (*p).to_owned())
            .collect()
    } else {
        args.profiles.clone()
    };
    if !(1.0..=600.0).contains(&args.seconds) || !(0.0..=60.0).contains(&args.warmup) {
        bail!("--seconds must be in 1..=600 and --warmup in 0..=60");
    }
    if !(1..=20).contains(&args.runs) {
        bail!("--runs must be in 1..=20");
    }
    if !(0.1..=30.0).contains(&args.settle) {
        bail!("--settle must be in 0.1..=30 seconds");
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench's directory")?;
    let netem = dir.join("deskwire-netem");
    let broker = dir.join("deskwire-broker");
    for b in [&netem, &broker] {
        if !b.exists() {
            bail!(
                "{} is missing: build it first (cargo build --release --workspace)",
                b.display()
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let recording = if args.peer == "deskwire" {
        None
    } else {
        // Long enough for the connection, the warm-up and the window without looping
        // (a loop is a cut: one frame unlike the last), bounded (1080p: 3.1 MB a frame).
        let frames = ((args.warmup + args.seconds + 6.0) * 60.0).min(1800.0) as u32;
        Some(
            crate::libwebrtc::recording(&args.out, &args.scene, (args.width, args.height), frames)
                .context("recording the scene for the libwebrtc peer")?,
        )
    };
    let mut results = Vec::new();
    for name in &profiles {
        let mut profile = LinkProfile::named(name).map_err(|e| anyhow::anyhow!("{e}"))?;
        if args.in_order {
            profile.a_to_b.reorder = false;
            profile.b_to_a.reorder = false;
        }
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            if args.peer != "libwebrtc" {
                runs.push(
                    run_profile(args, &profile, &netem, &broker)
                        .with_context(|| format!("profile {name}"))?,
                );
            }
            if let Some(recording) = &recording {
                runs.push(
                    run_profile_libwebrtc(args, &profile, &netem, recording)
                        .with_context(|| format!("profile {name}, libwebrtc peer"))?,
                );
            }
        }
        for r in runs {
            if args.json {
                crate::e2e::report::print_json(&r)?;
            }
            results.push(r);
        }
    }
    let mut table = markdown(&results);
    if args.runs > 1 {
        table.push('\n');
        table.push_str(&medians(&results));
    }
    if !args.json {
        crate::e2e::report::print_table(&table);
    }
    std::fs::write(args.out.join("net.md"), &table)?;
    Ok(())
}

fn run_profile(
    args: &Args,
    profile: &LinkProfile,
    netem: &std::path::Path,
    broker_bin: &std::path::Path,
) -> Result<NetResult> {
    let bed = testbed(profile, netem)?;
    let exe = std::env::current_exe()?;
    let listen = format!("{}:8450", bed.addr_b());
    let url = format!("ws://{listen}");
    let mut cmd = bed.command_in_b(broker_bin);
    cmd.args(["--listen", &listen, "--database", "sqlite::memory:"]);
    let broker = Role::spawn("broker", cmd)?;
    // It says so once its port is bound: a fixed wait lost the race now and then on a
    // loaded machine ("cannot reach the broker ... Connection refused").
    broker.expect("listening on ", Duration::from_secs(10))?;

    let frame_out = args.out.join(format!("{}-viewer.frame", profile.name));
    let reference_out = args.out.join(format!("{}-target.frame", profile.name));
    let mut cmd = bed.command_in_b(&exe);
    cmd.args(["e2e-viewer", "--broker", &url])
        .arg(format!("--bind={}", bed.addr_b()))
        .arg(format!("--warmup-ms={}", (args.warmup * 1000.0) as u64))
        .arg(format!("--measure-ms={}", (args.seconds * 1000.0) as u64))
        .arg("--frame-out")
        .arg(&frame_out);
    if args.no_loss_shield {
        cmd.arg("--no-loss-shield");
    }
    let mut viewer = Role::spawn("viewer", cmd)?;
    let code = viewer.expect("code ", Duration::from_secs(15))?;
    let mut cmd = bed.command_in_a(&exe);
    cmd.args(["e2e-target", "--broker", &url, "--code", &code])
        .arg(format!("--source=synthetic:{}", args.scene))
        .arg(format!("--bind={}", bed.addr_a()))
        .arg(format!("--width={}", args.width))
        .arg(format!("--height={}", args.height))
        .arg("--reference-out")
        .arg(&reference_out);
    if args.no_loss_shield {
        cmd.arg("--no-loss-shield");
    }
    let mut target = Role::spawn("target", cmd)?;
    target.expect("entered ", Duration::from_secs(15))?;
    let window = Duration::from_secs_f64(args.warmup + args.seconds);
    viewer.expect("measure-start", Duration::from_secs(30) + window)?;
    let wire_start = bed.stats().ok();
    target.tell("start")?;
    viewer.expect("measure-end", Duration::from_secs(30) + window)?;
    let wire_end = bed.stats().ok();
    target.tell("stop")?;
    target.tell("freeze")?;
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    viewer.tell("snapshot")?;
    let c: ViewerReport = serde_json::from_str(
        &viewer
            .expect("{", Duration::from_secs(20))
            .map(|s| format!("{{{s}"))?,
    )
    .context("the viewer's report")?;
    target.expect("{", Duration::from_secs(20))?;
    let shown = read_luma(&frame_out)?;
    let reference = read_luma(&reference_out)?;
    let psnr = (shown.0 == reference.0 && shown.1 == reference.1).then(|| {
        let n = shown.2.len();
        psnr_plane(&shown.2, n, &reference.2, n, n, 1).min(99.0)
    });
    let _ = std::fs::remove_file(&frame_out);
    let _ = std::fs::remove_file(&reference_out);
    // Stopped before its namespace goes.
    drop(broker);
    drop(bed);

    let mut r = figures(
        "deskwire",
        args,
        profile,
        Shown {
            measured_s: c.measured_s,
            frames: c.frame_times_ms.len() as u64,
            frame_times_ms: &c.frame_times_ms,
            latencies_ms: &c.latencies_ms,
            bytes: c.bytes,
        },
    );
    r.wire_kbps = wire_start
        .as_ref()
        .zip(wire_end.as_ref())
        .and_then(|(a, b)| {
            let secs = b.elapsed_s - a.elapsed_s;
            let bytes = (b.a_to_b.bytes_in + b.b_to_a.bytes_in)
                .checked_sub(a.a_to_b.bytes_in + a.b_to_a.bytes_in)?;
            (secs > 0.0).then(|| bytes as f64 * 8.0 / 1000.0 / secs)
        });
    r.queue_drops = wire_start
        .zip(wire_end.as_ref())
        .and_then(|(a, b)| b.a_to_b.dropped_queue.checked_sub(a.a_to_b.dropped_queue));
    r.converged_psnr_y_db = psnr;
    r.codec = Some("H.264 per band".into());
    Ok(r)
}

/// The libwebrtc peer on a fresh link of the same profile, the same scene and window.
fn run_profile_libwebrtc(
    args: &Args,
    profile: &LinkProfile,
    netem: &std::path::Path,
    recording: &std::path::Path,
) -> Result<NetResult> {
    let bed = testbed(profile, netem)?;
    let exe = std::env::current_exe()?;
    let p = crate::libwebrtc::run_session(
        &bed,
        recording,
        &args.out,
        (args.width, args.height),
        (args.warmup, args.seconds),
        &exe,
    )?;
    drop(bed);
    if p.width != Some(args.width) || p.height != Some(args.height) {
        tracing::warn!(
            "the libwebrtc peer ended at {:?}x{:?}, not {}x{}",
            p.width,
            p.height,
            args.width,
            args.height
        );
    }
    tracing::debug!("libwebrtc peer lost {} packets", p.packets_lost);
    let mut r = figures(
        "libwebrtc",
        args,
        profile,
        Shown {
            measured_s: p.measured_s,
            frames: p.presented,
            frame_times_ms: &p.frame_times_ms,
            latencies_ms: &p.latencies_ms,
            bytes: p.bytes,
        },
    );
    r.codec = p.codec;
    Ok(r)
}

/// What a receiver showed in its window.
struct Shown<'a> {
    measured_s: f64,
    frames: u64,
    frame_times_ms: &'a [f64],
    latencies_ms: &'a [f64],
    bytes: u64,
}

fn figures(system: &str, args: &Args, profile: &LinkProfile, s: Shown<'_>) -> NetResult {
    let measured_ms = s.measured_s * 1000.0;
    let mut lat = s.latencies_ms.to_vec();
    lat.sort_by(f64::total_cmp);
    let freeze_ms = freezes(s.frame_times_ms, measured_ms);
    NetResult {
        system: system.to_owned(),
        profile: profile.name.clone(),
        scene: args.scene.clone(),
        link_mbit: profile.a_to_b.rate.map(|r| r as f64 / 1e6),
        seconds: s.measured_s,
        fps: s.frames as f64 / s.measured_s.max(1e-9),
        worst_second_fps: worst_second(s.frame_times_ms, measured_ms),
        per_second_fps: per_second(s.frame_times_ms, measured_ms),
        freeze_ms,
        freeze_pct: 100.0 * freeze_ms / measured_ms.max(1e-9),
        longest_freeze_ms: freeze_gaps(s.frame_times_ms, measured_ms).fold(0.0, f64::max),
        latency_ms_p50: quantile(&lat, 0.50),
        latency_ms_p95: quantile(&lat, 0.95),
        kbps: s.bytes as f64 * 8.0 / 1000.0 / s.measured_s.max(1e-9),
        wire_kbps: None,
        queue_drops: None,
        converged_psnr_y_db: None,
        codec: None,
    }
}

/// A fresh emulated link shaped as `profile`.
fn testbed(profile: &LinkProfile, netem: &std::path::Path) -> Result<Testbed> {
    Testbed::start(profile, netem).map_err(|e| {
        anyhow::anyhow!("cannot build the emulated link (needs root, iproute2, /dev/net/tun): {e}")
    })
}

/// The time spent in gaps longer than [`FREEZE_MS`] between shown frames, the window's
/// start and end included.
fn freezes(times_ms: &[f64], window_ms: f64) -> f64 {
    freeze_gaps(times_ms, window_ms).sum()
}

/// Each gap longer than [`FREEZE_MS`] between shown frames, the window's edges included.
fn freeze_gaps(times_ms: &[f64], window_ms: f64) -> impl Iterator<Item = f64> + '_ {
    let shown = times_ms.iter().copied().filter(move |t| *t <= window_ms);
    let edges = std::iter::once(0.0)
        .chain(shown)
        .chain(std::iter::once(window_ms));
    edges
        .clone()
        .zip(edges.skip(1))
        .map(|(a, b)| b - a)
        .filter(|gap| *gap > FREEZE_MS)
}

/// The fewest frames shown in any whole second of the window.
fn worst_second(times_ms: &[f64], window_ms: f64) -> u32 {
    per_second(times_ms, window_ms)
        .into_iter()
        .min()
        .unwrap_or(0)
}

/// Frames shown in each whole second of the window.
fn per_second(times_ms: &[f64], window_ms: f64) -> Vec<u32> {
    let seconds = (window_ms / 1000.0).floor() as usize;
    let mut counts = vec![0u32; seconds.max(1)];
    for t in times_ms {
        if let Some(c) = counts.get_mut((t / 1000.0) as usize) {
            *c += 1;
        }
    }
    counts
}

fn markdown(results: &[NetResult]) -> String {
    let mut t = String::from(
        "| system | profile | link Mbit/s | fps | worst s | freeze (longest) | latency p50 / p95 ms | kbit/s | wire kbit/s | PSNR after stop |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    for r in results {
        t.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {:.0} ms ({:.1} %; {:.0}) | {} / {} | {:.0} | {} | {} |\n",
            r.system,
            r.profile,
            r.link_mbit
                .map_or("unlimited".to_owned(), |m| format!("{m:.1}")),
            r.fps,
            r.worst_second_fps,
            r.freeze_ms,
            r.freeze_pct,
            r.longest_freeze_ms,
            opt(r.latency_ms_p50),
            opt(r.latency_ms_p95),
            r.kbps,
            r.wire_kbps.map_or("-".to_owned(), |k| format!("{k:.1}")),
            r.converged_psnr_y_db
                .map_or("-".to_owned(), |p| format!("{p:.1} dB")),
        ));
    }
    t
}

/// Each system's medians per profile, over the runs in `results`.
fn medians(results: &[NetResult]) -> String {
    let mut t = String::from(
        "| system | profile | runs | median fps | median freeze | median latency p95 ms | median kbit/s |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in results {
        if !keys.contains(&(r.system.as_str(), r.profile.as_str())) {
            keys.push((r.system.as_str(), r.profile.as_str()));
        }
    }
    for (system, profile) in keys {
        let of: Vec<&NetResult> = results
            .iter()
            .filter(|r| r.system == system && r.profile == profile)
            .collect();
        let median = |f: &dyn Fn(&NetResult) -> Option<f64>| {
            let mut v: Vec<f64> = of.iter().filter_map(|r| f(r)).collect();
            v.sort_by(f64::total_cmp);
            quantile(&v, 0.5)
        };
        let show =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        t.push_str(&format!(
            "| {system} | {profile} | {} | {} | {} % | {} | {} |\n",
            of.len(),
            show(median(&|r| Some(r.fps)), 1),
            show(median(&|r| Some(r.freeze_pct)), 1),
            show(median(&|r| r.latency_ms_p95), 0),
            show(median(&|r| Some(r.kbps)), 0),
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freezes_count_only_gaps_over_200_ms_window_edges_included() {
        // 0..100 ok, 100..450 freeze (350), 450..500 ok, then nothing to 1000 (500).
        assert_eq!(freezes(&[100.0, 450.0, 500.0], 1000.0), 850.0);
        assert_eq!(freezes(&[], 1000.0), 1000.0);
        let gaps: Vec<f64> = freeze_gaps(&[100.0, 450.0, 500.0], 1000.0).collect();
        assert_eq!(gaps, vec![350.0, 500.0]);
    }

    #[test]
    fn the_worst_second_is_the_one_with_fewest_frames() {
        let times: Vec<f64> = (0..30).map(|i| f64::from(i) * 33.0).collect(); // 1st second
        assert_eq!(worst_second(&times, 2000.0), 0);
        assert_eq!(worst_second(&times, 999.0), 30);
        assert_eq!(per_second(&times, 2000.0), vec![30, 0]);
    }

    fn result(system: &str, fps: f64, p95: Option<f64>) -> NetResult {
        NetResult {
            system: system.into(),
            profile: "dsl".into(),
            scene: "scroll".into(),
            link_mbit: Some(6.0),
            seconds: 12.0,
            fps,
            worst_second_fps: 0,
            per_second_fps: Vec::new(),
            freeze_ms: 0.0,
            freeze_pct: 0.0,
            longest_freeze_ms: 0.0,
            latency_ms_p50: None,
            latency_ms_p95: p95,
            kbps: 1000.0,
            wire_kbps: None,
            queue_drops: None,
            converged_psnr_y_db: None,
            codec: None,
        }
    }

    #[test]
    fn medians_are_per_system_and_profile_and_skip_missing_latencies() {
        let results = [
            result("deskwire", 30.0, Some(300.0)),
            result("libwebrtc", 50.0, Some(200.0)),
            result("deskwire", 10.0, None),
            result("libwebrtc", 1.0, Some(900.0)),
            result("deskwire", 20.0, Some(500.0)),
            result("libwebrtc", 40.0, Some(250.0)),
        ];
        let t = medians(&results);
        assert!(
            t.contains("| deskwire | dsl | 3 | 20.0 | 0.0 % | 300 | 1000 |"),
            "{t}"
        );
        assert!(
            t.contains("| libwebrtc | dsl | 3 | 40.0 | 0.0 % | 250 | 1000 |"),
            "{t}"
        );
    }
}
