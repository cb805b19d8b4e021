//! `deskwire-bench e2e --quick` runs real sessions (separate processes, loopback WebRTC, an
//! Xvfb with a terminal) and the peers, and reports every promised field. No timing is
//! asserted: CI machines are shared and noisy; the quality and liveness checks are not timing.

use std::process::Command;

const FIELDS: [&str; 19] = [
    "scene",
    "width",
    "height",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p99",
    "fps",
    "source_fps",
    "kbps",
    "cpu_ms_per_frame_target",
    "cpu_ms_per_frame_viewer",
    "psnr_y_db",
    "first_frame_ms",
    "ffmpeg_x264",
    "naive",
    "cpu_ratio_ffmpeg",
    "kbps_ratio_ffmpeg",
    "cpu_ratio_naive",
    "kbps_ratio_naive",
];

#[test]
fn quick_e2e_reports_every_field_for_a_synthetic_and_a_real_scene_with_peers() {
    let out_dir = std::env::temp_dir().join(format!("deskwire-e2e-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_deskwire-bench"))
        .args(["e2e", "--quick", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .expect("the harness binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2e --quick failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let scenes: Vec<&str> = rows.iter().map(|r| r["scene"].as_str().unwrap()).collect();
    assert_eq!(scenes, ["typing", "x11-terminal"]);
    for r in &rows {
        for f in FIELDS {
            assert!(r.get(f).is_some(), "{} lacks {f}: {r}", r["scene"]);
        }
        // A session really ran: frames arrived, and what the viewer shows is what the
        // target showed.
        assert!(r["frames"].as_u64().unwrap() > 0, "no frames: {r}");
        let psnr = r["psnr_y_db"].as_f64().expect("a PSNR");
        assert!(psnr >= 30.0, "picture mismatch, Y-PSNR {psnr}: {r}");
    }
    // The real scene has both peers with a PSNR of their own, and the rate its screen
    // changed at (a terminal printing flat out changes it often); the synthetic has none.
    let real = &rows[1];
    assert!(
        real["source_fps"].as_f64().is_some_and(|f| f > 1.0),
        "{real}"
    );
    assert!(rows[0]["source_fps"].is_null(), "{}", rows[0]);
    for peer in ["ffmpeg_x264", "naive"] {
        assert!(real[peer]["frames"].as_u64().unwrap() > 0, "{peer}: {real}");
        assert!(real[peer]["psnr_y_db"].as_f64().is_some(), "{peer}: {real}");
    }
    let table = std::fs::read_to_string(out_dir.join("e2e.md")).unwrap();
    assert!(
        table.contains("| typing |") && table.contains("ffmpeg+x264"),
        "{table}"
    );
    let plot = std::fs::read_to_string(out_dir.join("latency-cdf.svg")).unwrap();
    assert!(plot.contains("typing") && plot.contains("x11-terminal"));
    let _ = std::fs::remove_dir_all(&out_dir);
}
