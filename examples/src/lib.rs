//! Holds the runnable examples; see `demo.rs`.
