//! The statistics each side reports about once a second, as data.

use std::time::Duration;

/// Target-side statistics, reported about once a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStats {
    /// Frames sent per second over the last period.
    pub fps: f64,
    /// Video payload sent, kilobits per second over the last period.
    pub kbps: f64,
    /// Frames sent in the session.
    pub frames_sent: u64,
    /// Video bytes sent in the session.
    pub bytes_sent: u64,
    /// Band frames dropped because the link was not keeping up.
    pub bands_dropped: u64,
    /// The viewer's last report: median capture->decoded latency.
    pub viewer_latency_p50: Option<Duration>,
    /// The viewer's last report: 99th percentile latency.
    pub viewer_latency_p99: Option<Duration>,
}

/// Viewer-side statistics, reported about once a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewerStats {
    /// Frames decoded per second over the last period.
    pub fps: f64,
    /// Video payload received, kilobits per second over the last period.
    pub kbps: f64,
    /// Latest round-trip time on the control channel.
    pub rtt: Option<Duration>,
    /// Median capture->decoded latency over the session (clock offset corrected).
    pub latency_p50: Option<Duration>,
    /// 99th percentile capture->decoded latency over the session.
    pub latency_p99: Option<Duration>,
    /// Frames decoded in the session.
    pub frames_decoded: u64,
    /// Video bytes received in the session.
    pub bytes_received: u64,
    /// Keyframe requests sent in the session.
    pub keyframe_requests: u32,
    /// Estimated target clock minus viewer clock.
    pub clock_offset_us: Option<i64>,
}
