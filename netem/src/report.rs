//! The one-line JSON reports the binary writes (forwarder counters, probe results), and
//! reading them back in tests and the testbed.

use crate::json::{self, num, object, Value};
use crate::link::LinkStats;

/// Why a report line could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("report is not JSON: {0}")]
    Json(String),
    #[error("report has no numeric field `{0}`")]
    Missing(&'static str),
}

fn field(v: &Value, key: &'static str) -> Result<f64, ReportError> {
    v.number(key).ok_or(ReportError::Missing(key))
}

/// Like [`field`], for figures that are `null` when there was nothing to measure.
fn maybe(v: &Value, key: &'static str) -> Result<f64, ReportError> {
    match v.get(key) {
        Some(Value::Null) => Ok(f64::NAN),
        _ => field(v, key),
    }
}

fn parse(line: &str) -> Result<Value, ReportError> {
    json::parse(line.trim()).map_err(|e| ReportError::Json(e.to_string()))
}

const STAT_FIELDS: [&str; 7] = [
    "packets_in",
    "bytes_in",
    "delivered",
    "bytes_delivered",
    "dropped_loss",
    "dropped_queue",
    "dropped_outage",
];

fn stat_values(s: &LinkStats) -> [u64; 7] {
    [
        s.packets_in,
        s.bytes_in,
        s.delivered,
        s.bytes_delivered,
        s.dropped_loss,
        s.dropped_queue,
        s.dropped_outage,
    ]
}

fn stats_json(s: &LinkStats) -> String {
    let fields: Vec<(&str, String)> = STAT_FIELDS
        .iter()
        .zip(stat_values(s))
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    object(&fields)
}

fn stats_from(v: &Value) -> Result<LinkStats, ReportError> {
    let mut n = [0u64; 7];
    for (slot, key) in n.iter_mut().zip(STAT_FIELDS) {
        *slot = field(v, key)? as u64;
    }
    let [packets_in, bytes_in, delivered, bytes_delivered, dropped_loss, dropped_queue, dropped_outage] =
        n;
    Ok(LinkStats {
        packets_in,
        bytes_in,
        delivered,
        bytes_delivered,
        dropped_loss,
        dropped_queue,
        dropped_outage,
    })
}

/// The forwarder's counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ForwarderStats {
    pub a_to_b: LinkStats,
    pub b_to_a: LinkStats,
    /// Packets read from the TUN that were not IPv4 toward A's or B's subnet.
    pub ignored: u64,
    /// Delivered packets the kernel refused to take back from the TUN.
    pub write_errors: u64,
    /// Seconds since the forwarder's epoch (the time outages and schedules count from).
    pub elapsed_s: f64,
}

impl ForwarderStats {
    pub fn to_json(&self) -> String {
        object(&[
            ("a_to_b", stats_json(&self.a_to_b)),
            ("b_to_a", stats_json(&self.b_to_a)),
            ("ignored", self.ignored.to_string()),
            ("write_errors", self.write_errors.to_string()),
            ("elapsed_s", num(self.elapsed_s)),
        ])
    }

    pub fn from_json(line: &str) -> Result<Self, ReportError> {
        let v = parse(line)?;
        let dir = |key: &'static str| v.get(key).ok_or(ReportError::Missing(key));
        Ok(Self {
            a_to_b: stats_from(dir("a_to_b")?)?,
            b_to_a: stats_from(dir("b_to_a")?)?,
            ignored: field(&v, "ignored")? as u64,
            write_errors: field(&v, "write_errors")? as u64,
            elapsed_s: field(&v, "elapsed_s")?,
        })
    }
}

/// What `deskwire-netem probe send` measured. Times are since the probe's first timed
/// packet; RTT figures are `NaN` when nothing came back.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProbeReport {
    pub sent: u64,
    pub echoed: u64,
    /// `1 - echoed / sent`: loss over the round trip.
    pub loss: f64,
    pub rtt_min_ms: f64,
    pub rtt_p50_ms: f64,
    pub rtt_p95_ms: f64,
    pub rtt_max_ms: f64,
    /// What the probe offered, in kbit/s of UDP payload.
    pub offered_kbit: f64,
    /// Echoed payload between the first and the last echo, in kbit/s.
    pub throughput_kbit: f64,
    /// The longest time without an echo between the first and the last one.
    pub longest_silence_ms: f64,
    /// When that silence began.
    pub silence_start_ms: f64,
    pub first_echo_ms: f64,
    pub last_echo_ms: f64,
}

const PROBE_FIELDS: [&str; 13] = [
    "sent",
    "echoed",
    "loss",
    "rtt_min_ms",
    "rtt_p50_ms",
    "rtt_p95_ms",
    "rtt_max_ms",
    "offered_kbit",
    "throughput_kbit",
    "longest_silence_ms",
    "silence_start_ms",
    "first_echo_ms",
    "last_echo_ms",
];

impl ProbeReport {
    fn values(&self) -> [f64; 13] {
        [
            self.sent as f64,
            self.echoed as f64,
            self.loss,
            self.rtt_min_ms,
            self.rtt_p50_ms,
            self.rtt_p95_ms,
            self.rtt_max_ms,
            self.offered_kbit,
            self.throughput_kbit,
            self.longest_silence_ms,
            self.silence_start_ms,
            self.first_echo_ms,
            self.last_echo_ms,
        ]
    }

    pub fn to_json(&self) -> String {
        let fields: Vec<(&str, String)> = PROBE_FIELDS
            .iter()
            .zip(self.values())
            .map(|(k, v)| (*k, num(v)))
            .collect();
        object(&fields)
    }

    pub fn from_json(line: &str) -> Result<Self, ReportError> {
        let v = parse(line)?;
        let mut n = [0f64; 13];
        for (slot, key) in n.iter_mut().zip(PROBE_FIELDS) {
            *slot = maybe(&v, key)?;
        }
        let [sent, echoed, loss, rtt_min_ms, rtt_p50_ms, rtt_p95_ms, rtt_max_ms, offered_kbit, throughput_kbit, longest_silence_ms, silence_start_ms, first_echo_ms, last_echo_ms] =
            n;
        Ok(Self {
            sent: sent as u64,
            echoed: echoed as u64,
            loss,
            rtt_min_ms,
            rtt_p50_ms,
            rtt_p95_ms,
            rtt_max_ms,
            offered_kbit,
            throughput_kbit,
            longest_silence_ms,
            silence_start_ms,
            first_echo_ms,
            last_echo_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarder_stats_round_trip() {
        let s = ForwarderStats {
            a_to_b: LinkStats {
                packets_in: 10,
                bytes_in: 1000,
                delivered: 7,
                bytes_delivered: 700,
                dropped_loss: 1,
                dropped_queue: 1,
                dropped_outage: 1,
            },
            b_to_a: LinkStats::default(),
            ignored: 3,
            write_errors: 0,
            elapsed_s: 1.25,
        };
        assert_eq!(ForwarderStats::from_json(&s.to_json()), Ok(s));
    }

    #[test]
    fn probe_report_round_trips_and_keeps_missing_rtt_as_nan() {
        let r = ProbeReport {
            sent: 100,
            echoed: 0,
            loss: 1.0,
            rtt_p50_ms: f64::NAN,
            ..ProbeReport::default()
        };
        let back = ProbeReport::from_json(&r.to_json()).expect("own report parses");
        assert_eq!(back.sent, 100);
        assert!(back.rtt_p50_ms.is_nan());
        assert_eq!(
            ProbeReport::from_json("{\"sent\":1}"),
            Err(ReportError::Missing("echoed"))
        );
    }
}
