//! Runnable examples of the deskwire public API. `demo.rs` is the README's main job: a broker,
//! an agent and a viewer on loopback for a few seconds, printing the session's statistics.
