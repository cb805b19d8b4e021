//! Keys, clicks and the remote pointer across an emulated `dsl` link (6/1 Mbit/s, 50 ms
//! RTT, 0.5 % loss): typed in the viewer's real window, echoed by the target and shown
//! back; clicks that change a target window; the target's pointer moved and drawn in the
//! window. The agent runs in a network namespace of its own (needs root, like the other
//! emulated-link scenarios). Its own test binary, so it does not share the two cores with
//! another session.

mod common;

#[test]
fn keys_and_the_remote_pointer_make_it_across_a_dsl_link() {
    let lines = common::echo(&["--profile", "dsl"]);
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["profile"], "dsl");
    assert_eq!(summary["keys"], 4);
    assert_eq!(summary["pointer_moves"], 4);
    assert_eq!(summary["clicks"], 2);
    // Every key and move arrived (the bench fails on one that does not); across a 50 ms
    // round trip nothing can come back sooner than the link's one-way delay.
    assert!(
        summary["p50_ms"].as_f64().is_some_and(|v| v >= 25.0),
        "{summary}"
    );
    assert!(
        summary["pointer_p50_ms"]
            .as_f64()
            .is_some_and(|v| v >= 12.0),
        "{summary}"
    );
}
