//! `deskwire-bench bits` records a real browser page scrolling on an Xvfb, encodes the very
//! same frames with deskwire's band encoders and with ffmpeg + x264, decodes both, and
//! reports both curves and the comparison. No figure is asserted beyond what proves the
//! run was real: CI machines are shared and noisy.

use std::process::Command;

#[test]
fn bits_encodes_one_recording_both_ways_and_compares_them_at_equal_quality() {
    let out_dir = std::env::temp_dir().join(format!("deskwire-bits-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_deskwire-bench"))
        .args(["bits", "--scene", "x11-browser", "--seconds", "0.5"])
        .args([
            "--qp", "24", "--qp", "36", "--crf", "18", "--crf", "33", "--json",
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("the harness binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bits failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON line expected ({e}): {stdout}"));
    assert_eq!(r["scene"], "x11-browser");
    assert_eq!(r["frames"], 30);
    // The page scrolls itself: most ticks saw a change.
    assert!(r["changed_frames"].as_u64().unwrap() >= 10, "{r}");
    // Two floors for deskwire; the two CRFs asked for and the default (23) for x264, in order.
    let deskwire = r["deskwire"].as_array().unwrap();
    let x264 = r["x264"].as_array().unwrap();
    assert_eq!(deskwire.len(), 2, "{r}");
    let settings: Vec<&str> = x264
        .iter()
        .map(|p| p["setting"].as_str().unwrap())
        .collect();
    assert_eq!(settings, ["CRF 18", "CRF 23", "CRF 33"]);
    for p in deskwire.iter().chain(x264) {
        let (kbps, psnr) = (
            p["kbps"].as_f64().unwrap(),
            p["psnr_y_db"].as_f64().unwrap(),
        );
        // Both really decoded to the pictures that went in, and spent bits doing it.
        assert!(kbps > 10.0, "{p}");
        assert!((30.0..=100.0).contains(&psnr), "{p}");
    }
    // A coarser setting never looks better than a finer one of the same encoder.
    let psnr = |p: &serde_json::Value| p["psnr_y_db"].as_f64().unwrap();
    assert!(psnr(&x264[0]) > psnr(&x264[2]), "{r}");
    assert!(psnr(&deskwire[0]) >= psnr(&deskwire[1]) - 0.5, "{r}");
    let against = r["against_x264"].as_array().unwrap();
    assert_eq!(
        against.len(),
        1,
        "one curve for the engine's default effort: {r}"
    );
    assert_eq!(against[0]["effort"], "medium");
    assert!(std::fs::read_to_string(out_dir.join("bits.md"))
        .unwrap()
        .contains("| x11-browser |"));
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn bits_refuses_impossible_settings_with_a_clear_message() {
    for (args, says) in [
        (&["--scene", "x11-nothing"][..], "unknown scene"),
        (&["--qp", "60"], "--qp 60 is out of range"),
        (&["--crf", "70"], "--crf 70 is out of range"),
        (&["--effort", "heroic"], "unknown effort"),
        (&["--seconds", "0"], "out of range"),
        (&["--bands", "0"], "band count"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_deskwire-bench"))
            .arg("bits")
            .args(args)
            .output()
            .expect("the harness binary runs");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
