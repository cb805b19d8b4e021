//! The stages harness runs end to end and prints every promised field, one JSON object per
//! line (no timing assertions: CI machines are shared and noisy).

use std::process::Command;

const FIELDS: [&str; 17] = [
    "scene",
    "source",
    "width",
    "height",
    "bands",
    "frames",
    "encoded_frames",
    "capture_ms_p50",
    "diff_ms_p50",
    "convert_ms_p50",
    "encode_ms_p50",
    "encode_ms_p99",
    "pipeline_fps",
    "bytes_per_frame_mean",
    "kbps",
    "psnr_y_db_min",
    "allocs_per_frame",
];

fn stages(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deskwire-bench"))
        .arg("stages")
        .args(args)
        .output()
        .expect("the harness binary runs")
}

#[test]
fn stages_prints_one_json_object_per_scene_and_band_count() {
    let out = stages(&[
        "--json",
        "--scene",
        "typing",
        "--scene",
        "static",
        "--bands",
        "1",
        "--bands",
        "4",
        "--frames",
        "8",
        "--warmup",
        "2",
        "--width",
        "320",
        "--height",
        "192",
        "--pipeline-secs",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is one JSON object"))
        .collect();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        for f in FIELDS {
            assert!(row.get(f).is_some(), "{f} missing from {row}");
        }
        assert_eq!(
            (row["width"].as_u64(), row["height"].as_u64()),
            (Some(320), Some(192))
        );
    }
    let typing = &rows[0];
    assert_eq!(
        (typing["scene"].as_str(), typing["bands"].as_u64()),
        (Some("typing"), Some(1))
    );
    assert_eq!(typing["encoded_frames"].as_u64(), Some(8));
    assert!(typing["psnr_y_db_min"].as_f64().unwrap() >= 35.0);
    let fixed = &rows[2];
    assert_eq!(fixed["scene"].as_str(), Some("static"));
    assert_eq!(
        fixed["encoded_frames"].as_u64(),
        Some(0),
        "a static screen encodes nothing"
    );
    assert_eq!(fixed["bytes_per_frame_mean"].as_f64(), Some(0.0));
}

#[test]
fn stages_refuses_bad_arguments_with_a_clear_message() {
    for (args, want) in [
        (&["--scene", "dance"][..], "unknown scene"),
        (
            &["--source", "webcam"][..],
            "expected synthetic, x11 or xcap",
        ),
        (
            &["--bands", "0", "--scene", "static"][..],
            "invalid band count 0",
        ),
        (&["--tuning", "fast"][..], "expected camera or screen"),
    ] {
        let out = stages(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
