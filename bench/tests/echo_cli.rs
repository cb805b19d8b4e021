//! `deskwire-bench echo` runs end to end on loopback: two Xvfbs, the viewer's window, real
//! keys and pointer moves, and a report with every field. No timing is asserted (that is
//! the bench's business).

mod common;

#[test]
fn the_echo_bench_times_keys_through_the_viewer_window_and_reports_each_stage() {
    let lines = common::echo(&[]);
    assert_eq!(lines.len(), 5, "four keys and a summary: {lines:?}");
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
        "drawn_to_shown_p50_ms",
    ] {
        assert!(
            summary[field].as_f64().is_some_and(|v| v >= 0.0),
            "{field}: {summary}"
        );
    }
    // The agent stamps a key injected when its call into X returns; the echo client may
    // have drawn it a fraction of a millisecond before that (measured: -0.38 ms).
    assert!(
        summary["injected_to_drawn_p50_ms"]
            .as_f64()
            .is_some_and(|v| v > -5.0),
        "{summary}"
    );
}
