//! `deskwire-bench echo` runs end to end on loopback: two Xvfbs, the viewer's window, real
//! keys and pointer moves, and a report with every field. No timing is asserted (that is
//! the bench's business).

use std::process::Command;

#[test]
fn the_echo_bench_times_keys_through_the_viewer_window_and_reports_each_stage() {
    let out = Command::new(env!("CARGO_BIN_EXE_deskwire-bench"))
        .args([
            "echo",
            "--keys",
            "4",
            "--pointer",
            "4",
            "--clicks",
            "2",
            "--still",
            "0",
            "--json",
        ])
        .output()
        .expect("running deskwire-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "echo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines.len(), 5, "four keys and a summary: {stdout}");
    for key in &lines[..4] {
        let shown = key["shown_ms"].as_f64().unwrap();
        let drawn = key["drawn_ms"].as_f64().unwrap();
        assert!(shown > 0.0 && drawn <= shown, "{key}");
        assert!(
            key["injected_ms"].as_f64().is_some(),
            "the agent injected it: {key}"
        );
    }
    let summary = &lines[4];
    assert_eq!(summary["profile"], "loopback");
    assert_eq!(summary["pointer_moves"], 4, "{summary}");
    assert_eq!(summary["clicks"], 2, "{summary}");
    for field in ["p50_ms", "pointer_p50_ms", "click_p50_ms"] {
        assert!(
            summary[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {summary}"
        );
    }
    for field in [
        "p90_ms",
        "p99_ms",
        "press_to_injected_p50_ms",
        "injected_to_drawn_p50_ms",
        "drawn_to_shown_p50_ms",
    ] {
        assert!(
            summary[field].as_f64().is_some_and(|v| v >= 0.0),
            "{field}: {summary}"
        );
    }
}
