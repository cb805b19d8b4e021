//! deskwire-netem: a userspace impaired-link emulator for tests and the benchmark, where the
//! kernel has no `sch_netem`.
//!
//! - [`Link`]: one direction of a link, sans-IO and in caller-supplied time: delay, jitter
//!   (with or without reordering), random and Gilbert-Elliott loss, a rate with a drop-tail
//!   queue, rate schedules and timed outages, all seeded so that runs repeat.
//! - [`LinkProfile`]: both directions, from named profiles (`cable`, `lte`, ...) and
//!   [`ProfileOverrides`].
//! - The `deskwire-netem` binary: `run` forwards IPv4 between two network namespaces through
//!   one TUN device and two `Link`s; `probe` measures a link with timestamped UDP.
//! - [`testbed::Testbed`]: three namespaces and a running forwarder, for tests.

mod config;
mod json;
mod link;
mod profile;
mod report;
pub mod testbed;

pub use config::{
    ConfigError, GilbertElliott, JitterShape, LinkConfig, Outage, QueueLimit, RandomRate, RateStep,
    SpecError,
};
pub use link::{Link, LinkStats, Verdict};
pub use profile::{LinkProfile, ProfileError, ProfileOverrides, NAMES as PROFILE_NAMES};
pub use report::{ForwarderStats, ProbeReport, ReportError};
