//! Broker settings, validated before anything listens.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::codes::CodeLimits;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

const CODE_TTL: RangeInclusive<Duration> = Duration::from_secs(10)..=DAY;
const CODE_RETENTION: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(7 * 86_400);
const MAX_PENDING_CODES: RangeInclusive<usize> = 1..=1_000_000;
const MAX_CODE_TOMBSTONES: RangeInclusive<usize> = 1..=10_000_000;
// Pairing needs two sockets; the top is what a `u32` semaphore count and a test box bear.
const MAX_CONNECTIONS: RangeInclusive<usize> = 2..=1_000_000;
const MAX_CONNECTIONS_PER_SOURCE: RangeInclusive<usize> = 1..=1_000_000;
const FIRST_MESSAGE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(300);
const OUTBOUND_QUEUE: RangeInclusive<usize> = 1..=4096;
const KEEPALIVE: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(3600);
const WRITE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(300);

/// How the broker runs: code lifetimes, and the caps that keep its memory bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// How long a connection code works after it is issued (default 10 min).
    pub code_ttl: Duration,
    /// How long a used, expired or cancelled code is remembered after its expiry, so a user
    /// who types it is told why it fails and the code is not issued again meanwhile
    /// (default 1 h).
    pub code_retention: Duration,
    /// Codes waiting for a target at once; more `create_session`s are refused
    /// (default 10 000).
    pub max_pending_codes: usize,
    /// Used, expired and cancelled codes remembered at once; past it the oldest is forgotten
    /// early (default 100 000).
    pub max_code_tombstones: usize,
    /// Signalling connections open at once; more are refused with HTTP 503 (default 10 000).
    pub max_connections: usize,
    /// Signalling connections open at once from one address; more are refused with HTTP 429,
    /// so one address cannot take every connection (default 256: an office's NAT).
    pub max_connections_per_source: usize,
    /// How long a new connection may stay silent before its first message; then it is
    /// closed (default 10 s).
    pub first_message_timeout: Duration,
    /// A client must have its WebSocket upgrade answered this long after connecting, or its
    /// connection is dropped: half a request header does not hold a connection (default
    /// 10 s).
    pub upgrade_timeout: Duration,
    /// A connection silent this long is pinged; silent twice as long (no pong either), it
    /// is closed as half-open: a peer whose network vanished does not hold its slot, its
    /// code or its standby forever (default 25 s).
    pub keepalive: Duration,
    /// Messages that may wait to be written to one connection. A peer that lets its queue
    /// fill is disconnected (default 32).
    pub outbound_queue: usize,
    /// Longest a single write to a peer may take before the peer is disconnected as not
    /// reading (default 10 s).
    pub write_timeout: Duration,
    /// Only technicians with an API token may create sessions (needs a store; default off,
    /// for a broker without accounts).
    pub require_token: bool,
    /// Only targets that prove their device identity may join (default off).
    pub require_device: bool,
    /// Ad-hoc support sessions: quotas per technician (1) and company (5), lifetime from
    /// activation (24 h), how long an invitation waits (72 h), wrong codes allowed (5).
    pub adhoc: deskwire_signal::adhoc::AdhocLimits,
    /// Where invitation e-mails go out (none: the technician passes invitations on).
    pub mail: Option<crate::mail::MailConfig>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            code_ttl: 10 * MINUTE,
            code_retention: HOUR,
            max_pending_codes: 10_000,
            max_code_tombstones: 100_000,
            max_connections: 10_000,
            max_connections_per_source: 256,
            first_message_timeout: 10 * SECOND,
            keepalive: 25 * SECOND,
            upgrade_timeout: 10 * SECOND,
            outbound_queue: 32,
            write_timeout: 10 * SECOND,
            require_token: false,
            require_device: false,
            adhoc: deskwire_signal::adhoc::AdhocLimits::default(),
            mail: None,
        }
    }
}

/// A broker setting out of range, with the range that would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration setting is out of range.
    #[error("{name} {} is out of range (expected {}..={})", Shown(*.value), Shown(*.min), Shown(*.max))]
    Duration {
        /// The setting's field name.
        name: &'static str,
        /// The value given.
        value: Duration,
        /// Smallest accepted.
        min: Duration,
        /// Largest accepted.
        max: Duration,
    },
    /// A count setting is out of range.
    #[error("{name} {value} is out of range (expected {min}..={max})")]
    Count {
        /// The setting's field name.
        name: &'static str,
        /// The value given.
        value: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
    /// An ad-hoc limit is out of range (the message names it and the range).
    #[error("{0}")]
    Adhoc(String),
    /// The e-mail settings are unusable.
    #[error("{0}")]
    Mail(String),
}

impl BrokerConfig {
    /// Require targets to prove their device identity.
    pub fn require_device(mut self, on: bool) -> Self {
        self.require_device = on;
        self
    }
    /// Require technicians to present an API token.
    pub fn require_token(mut self, on: bool) -> Self {
        self.require_token = on;
        self
    }
    /// Set how long a code works.
    pub fn code_ttl(mut self, ttl: Duration) -> Self {
        self.code_ttl = ttl;
        self
    }
    /// Set how long dead codes are remembered after expiry.
    pub fn code_retention(mut self, retention: Duration) -> Self {
        self.code_retention = retention;
        self
    }
    /// Set the cap on codes waiting for a target.
    pub fn max_pending_codes(mut self, n: usize) -> Self {
        self.max_pending_codes = n;
        self
    }
    /// Set the cap on remembered dead codes.
    pub fn max_code_tombstones(mut self, n: usize) -> Self {
        self.max_code_tombstones = n;
        self
    }
    /// Set the cap on open signalling connections.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Set the cap on open signalling connections from one address.
    pub fn max_connections_per_source(mut self, n: usize) -> Self {
        self.max_connections_per_source = n;
        self
    }
    /// Set how long a new connection may stay silent before its first message.
    pub fn first_message_timeout(mut self, timeout: Duration) -> Self {
        self.first_message_timeout = timeout;
        self
    }
    /// Set how long a client has from connecting to its upgrade being answered.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }
    /// Set how long a silent connection waits for a ping (and twice that for its close).
    pub fn keepalive(mut self, keepalive: Duration) -> Self {
        self.keepalive = keepalive;
        self
    }
    /// Set the per-connection outbound queue length.
    pub fn outbound_queue(mut self, n: usize) -> Self {
        self.outbound_queue = n;
        self
    }
    /// Set the ad-hoc quotas and times.
    pub fn adhoc(mut self, limits: deskwire_signal::adhoc::AdhocLimits) -> Self {
        self.adhoc = limits;
        self
    }
    /// E-mail invitations through this server.
    pub fn mail(mut self, mail: crate::mail::MailConfig) -> Self {
        self.mail = Some(mail);
        self
    }
    /// Set the time limit of one write to a peer.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Check every setting against its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        duration("code_ttl", self.code_ttl, CODE_TTL)?;
        duration("code_retention", self.code_retention, CODE_RETENTION)?;
        count(
            "max_pending_codes",
            self.max_pending_codes,
            MAX_PENDING_CODES,
        )?;
        count(
            "max_code_tombstones",
            self.max_code_tombstones,
            MAX_CODE_TOMBSTONES,
        )?;
        count("max_connections", self.max_connections, MAX_CONNECTIONS)?;
        count(
            "max_connections_per_source",
            self.max_connections_per_source,
            MAX_CONNECTIONS_PER_SOURCE,
        )?;
        duration(
            "first_message_timeout",
            self.first_message_timeout,
            FIRST_MESSAGE_TIMEOUT,
        )?;
        duration("keepalive", self.keepalive, KEEPALIVE)?;
        duration(
            "upgrade_timeout",
            self.upgrade_timeout,
            FIRST_MESSAGE_TIMEOUT,
        )?;
        count("outbound_queue", self.outbound_queue, OUTBOUND_QUEUE)?;
        duration("write_timeout", self.write_timeout, WRITE_TIMEOUT)?;
        self.adhoc
            .validate()
            .map_err(|e| ConfigError::Adhoc(e.to_string()))?;
        if let Some(mail) = &self.mail {
            mail.validate()
                .map_err(|e| ConfigError::Mail(e.to_string()))?;
        }
        Ok(())
    }

    pub(crate) fn code_limits(&self) -> CodeLimits {
        CodeLimits {
            ttl: self.code_ttl,
            retention: self.code_retention,
            max_pending: self.max_pending_codes,
            max_tombstones: self.max_code_tombstones,
        }
    }
}

fn duration(
    name: &'static str,
    value: Duration,
    range: RangeInclusive<Duration>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Duration {
        name,
        value,
        min: *range.start(),
        max: *range.end(),
    })
}

fn count(
    name: &'static str,
    value: usize,
    range: RangeInclusive<usize>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Count {
        name,
        value,
        min: *range.start(),
        max: *range.end(),
    })
}

/// A duration in the largest unit that shows it exactly: `24h`, `10min`, `5s`, `100ms`
/// (no days: "24h" reads better in a range than "1d").
#[derive(Debug, Clone, Copy)]
struct Shown(Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{d:?}");
        }
        let ms = d.as_millis();
        for (unit, name) in [(HOUR, "h"), (MINUTE, "min"), (SECOND, "s")] {
            if ms.is_multiple_of(unit.as_millis()) {
                return write!(f, "{}{name}", ms / unit.as_millis());
            }
        }
        write!(f, "{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(BrokerConfig::default().validate(), Ok(()));
        assert_eq!(BrokerConfig::default().code_ttl, Duration::from_secs(600));
    }

    #[test]
    fn errors_name_the_setting_and_the_allowed_range() {
        let err = BrokerConfig::default()
            .code_ttl(Duration::from_secs(5))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "code_ttl 5s is out of range (expected 10s..=24h)"
        );
        let err = BrokerConfig::default()
            .max_connections(1)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "max_connections 1 is out of range (expected 2..=1000000)"
        );
        let err = BrokerConfig::default()
            .write_timeout(Duration::from_millis(50))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "write_timeout 50ms is out of range (expected 100ms..=5min)"
        );
    }

    #[test]
    fn every_setting_is_checked() {
        let bad = [
            BrokerConfig::default().code_ttl(Duration::from_secs(86_401)),
            BrokerConfig::default().code_retention(Duration::from_secs(8 * 86_400)),
            BrokerConfig::default().max_pending_codes(0),
            BrokerConfig::default().max_code_tombstones(0),
            BrokerConfig::default().max_connections(2_000_000),
            BrokerConfig::default().outbound_queue(0),
            BrokerConfig::default().write_timeout(Duration::from_secs(301)),
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn durations_show_in_their_largest_exact_unit() {
        let shown = |d| Shown(d).to_string();
        assert_eq!(shown(Duration::from_secs(86_400)), "24h");
        assert_eq!(shown(Duration::from_secs(7200)), "2h");
        assert_eq!(shown(Duration::from_secs(600)), "10min");
        assert_eq!(shown(Duration::from_secs(90)), "90s");
        assert_eq!(shown(Duration::from_millis(1500)), "1500ms");
        assert_eq!(shown(Duration::ZERO), "0s");
        assert_eq!(shown(Duration::from_nanos(1500)), "1.5µs");
    }
}
