//! What one direction of an impaired link does: the figures a [`crate::Link`] is built from,
//! their validation, and a one-line `key=value,...` form so a whole configuration can be
//! handed to the forwarder process on its command line (the testbed does that).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest base delay or jitter accepted: anything above is a typo, not a link.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// The slowest and fastest rates accepted, in bits per second.
const MIN_RATE: u64 = 1_000;
const MAX_RATE: u64 = 400_000_000_000;
/// A queue must hold at least one full-size Ethernet packet or nothing could ever pass.
const MIN_QUEUE_BYTES: u64 = 1_500;
/// A queue limit given as a delay never shrinks below this many bytes: at low rates 100 ms
/// holds only a few packets, and no real modem or router has a buffer that small.
pub(crate) const DELAY_QUEUE_FLOOR_BYTES: u64 = 30_000;

/// How jitter is drawn around the base delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JitterShape {
    /// Uniform in `[-jitter, +jitter]`.
    #[default]
    Uniform,
    /// Normal with a standard deviation of half the jitter, cut off at `+/- jitter`.
    Normal,
}

/// Bursty loss: a two-state Markov chain stepped once per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Chance per packet of moving from the good state to the bad one.
    pub p_good_to_bad: f64,
    /// Chance per packet of moving back; `1 / p_bad_to_good` is the mean burst length.
    pub p_bad_to_good: f64,
    /// Loss probability while good (usually 0).
    pub loss_in_good: f64,
    /// Loss probability while bad (usually 1).
    pub loss_in_bad: f64,
}

impl GilbertElliott {
    /// The long-run loss fraction of the chain.
    pub fn mean_loss(&self) -> f64 {
        let moves = self.p_good_to_bad + self.p_bad_to_good;
        if moves == 0.0 {
            return self.loss_in_good;
        }
        let bad = self.p_good_to_bad / moves;
        bad * self.loss_in_bad + (1.0 - bad) * self.loss_in_good
    }
}

/// From `at` on (since the link's epoch), the link runs at `bits_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStep {
    pub at: Duration,
    pub bits_per_sec: u64,
}

/// Every `every`, the rate is drawn afresh, uniformly between `min` and `max` bits/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomRate {
    pub min: u64,
    pub max: u64,
    pub every: Duration,
}

/// A window, from `start` (since the link's epoch) for `length`, in which the link is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub start: Duration,
    pub length: Duration,
}

impl Outage {
    pub fn contains(&self, t: Duration) -> bool {
        t >= self.start && t - self.start < self.length
    }
}

impl FromStr for Outage {
    type Err = SpecError;

    /// `START:LENGTH` in seconds, e.g. `4:8`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (start, length) = pair(s, "outage", "START:LENGTH in seconds, e.g. 4:8")?;
        Ok(Self {
            start: seconds("outage", start)?,
            length: seconds("outage", length)?,
        })
    }
}

/// How much the bottleneck's drop-tail queue holds before arriving packets are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// A fixed number of bytes.
    Bytes(u64),
    /// As many bytes as the current rate sends in this time, but at least 30 kB.
    Delay(Duration),
}

impl Default for QueueLimit {
    fn default() -> Self {
        Self::Delay(Duration::from_millis(100))
    }
}

/// One direction of a link. All times are since the link's epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Base one-way propagation delay.
    pub delay: Duration,
    /// Delay varies by up to this much either way.
    pub jitter: Duration,
    pub jitter_shape: JitterShape,
    /// Whether jitter may let a packet overtake the one ahead of it.
    pub reorder: bool,
    /// Independent random loss probability per packet.
    pub loss: f64,
    /// Bursty loss on top of `loss`.
    pub gilbert_elliott: Option<GilbertElliott>,
    /// The bottleneck rate in bits/s; `None` is unlimited (no serialisation, no queue).
    pub rate: Option<u64>,
    /// Rate changes at fixed times; a reached step wins over `random_rate` and `rate`.
    pub rate_steps: Vec<RateStep>,
    /// A rate redrawn periodically; wins over `rate` until the first step is reached.
    pub random_rate: Option<RandomRate>,
    pub queue_limit: QueueLimit,
    pub outages: Vec<Outage>,
    /// Seeds the loss, jitter and rate draws so that runs repeat.
    pub seed: u64,
}

impl Default for LinkConfig {
    /// A perfect link: no delay, no loss, unlimited rate.
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_shape: JitterShape::Uniform,
            reorder: false,
            loss: 0.0,
            gilbert_elliott: None,
            rate: None,
            rate_steps: Vec::new(),
            random_rate: None,
            queue_limit: QueueLimit::default(),
            outages: Vec::new(),
            seed: 1,
        }
    }
}

/// Why a [`LinkConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} must be a probability between 0 and 1, got {value}")]
    Probability { what: &'static str, value: f64 },
    #[error("{what} of {value:?} is longer than the {MAX_DELAY:?} this emulator accepts")]
    TooLong { what: &'static str, value: Duration },
    #[error("{what} of {bits} bit/s is outside 1 kbit/s ..= 400 Gbit/s")]
    Rate { what: &'static str, bits: u64 },
    #[error("random rate: min {min} bit/s is above max {max} bit/s")]
    RandomRateInverted { min: u64, max: u64 },
    #[error("random rate: the period must be at least 1 ms, got {0:?}")]
    RandomRatePeriod(Duration),
    #[error("Gilbert-Elliott: p_bad_to_good is 0 while p_good_to_bad is not, so the link would stay bad for ever once it got there")]
    GilbertElliottStuck,
    #[error("rate steps must be in increasing time order ({later:?} comes after {earlier:?})")]
    StepsOutOfOrder { earlier: Duration, later: Duration },
    #[error("the outage starting at {0:?} has zero length")]
    EmptyOutage(Duration),
    #[error("the queue must hold at least {MIN_QUEUE_BYTES} bytes (one full packet), got {0}")]
    QueueTooSmall(u64),
    #[error("a queue limit given as a delay must be at least 1 ms, got {0:?}")]
    QueueDelayTooShort(Duration),
}

fn probability(what: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        // NaN lands here too: `contains` is false for it.
        Err(ConfigError::Probability { what, value })
    }
}

fn not_too_long(what: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_DELAY {
        return Err(ConfigError::TooLong { what, value });
    }
    Ok(())
}

fn rate_in_range(what: &'static str, bits: u64) -> Result<(), ConfigError> {
    if (MIN_RATE..=MAX_RATE).contains(&bits) {
        Ok(())
    } else {
        Err(ConfigError::Rate { what, bits })
    }
}

impl LinkConfig {
    /// Checks every figure; [`crate::Link::new`] calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        not_too_long("delay", self.delay)?;
        not_too_long("jitter", self.jitter)?;
        probability("loss", self.loss)?;
        if let Some(ge) = &self.gilbert_elliott {
            probability("Gilbert-Elliott p_good_to_bad", ge.p_good_to_bad)?;
            probability("Gilbert-Elliott p_bad_to_good", ge.p_bad_to_good)?;
            probability("Gilbert-Elliott loss_in_good", ge.loss_in_good)?;
            probability("Gilbert-Elliott loss_in_bad", ge.loss_in_bad)?;
            if ge.p_bad_to_good == 0.0 && ge.p_good_to_bad > 0.0 {
                return Err(ConfigError::GilbertElliottStuck);
            }
        }
        if let Some(rate) = self.rate {
            rate_in_range("rate", rate)?;
        }
        for pair in self.rate_steps.windows(2) {
            if pair[1].at <= pair[0].at {
                return Err(ConfigError::StepsOutOfOrder {
                    earlier: pair[0].at,
                    later: pair[1].at,
                });
            }
        }
        for step in &self.rate_steps {
            rate_in_range("rate step", step.bits_per_sec)?;
        }
        if let Some(r) = &self.random_rate {
            rate_in_range("random rate min", r.min)?;
            rate_in_range("random rate max", r.max)?;
            if r.min > r.max {
                return Err(ConfigError::RandomRateInverted {
                    min: r.min,
                    max: r.max,
                });
            }
            if r.every < Duration::from_millis(1) {
                return Err(ConfigError::RandomRatePeriod(r.every));
            }
        }
        for o in &self.outages {
            if o.length.is_zero() {
                return Err(ConfigError::EmptyOutage(o.start));
            }
        }
        match self.queue_limit {
            QueueLimit::Bytes(b) if b < MIN_QUEUE_BYTES => Err(ConfigError::QueueTooSmall(b)),
            QueueLimit::Delay(d) if d < Duration::from_millis(1) => {
                Err(ConfigError::QueueDelayTooShort(d))
            }
            QueueLimit::Delay(d) => not_too_long("queue delay", d),
            QueueLimit::Bytes(_) => Ok(()),
        }
    }

    /// The configured loss from both models, as a long-run fraction.
    pub fn mean_loss(&self) -> f64 {
        let ge = self.gilbert_elliott.map_or(0.0, |g| g.mean_loss());
        1.0 - (1.0 - self.loss) * (1.0 - ge)
    }
}

/// Why a `key=value,...` link spec could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("`{0}` is not key=value")]
    NotKeyValue(String),
    #[error("unknown link setting `{0}` (known: rate, delay_ms, jitter_ms, jitter, reorder, loss, ge, queue_bytes, queue_ms, step, random_rate, outage, seed)")]
    UnknownKey(String),
    #[error("{key}: `{value}` is not a valid number")]
    Number { key: String, value: String },
    #[error("{key}: {value} must be a finite number >= 0")]
    Negative { key: String, value: f64 },
    #[error("{key}: `{value}` should be {expected}")]
    Shape {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

fn number(key: &str, value: &str) -> Result<f64, SpecError> {
    let v: f64 = value.trim().parse().map_err(|_| SpecError::Number {
        key: key.to_string(),
        value: value.to_string(),
    })?;
    if !v.is_finite() || v < 0.0 {
        return Err(SpecError::Negative {
            key: key.to_string(),
            value: v,
        });
    }
    Ok(v)
}

fn integer(key: &str, value: &str) -> Result<u64, SpecError> {
    value.trim().parse().map_err(|_| SpecError::Number {
        key: key.to_string(),
        value: value.to_string(),
    })
}

fn millis(key: &str, value: &str) -> Result<Duration, SpecError> {
    // Microsecond precision: finer than any link figure and exact when printed back.
    Ok(Duration::from_micros(
        (number(key, value)? * 1e3).round() as u64
    ))
}

fn seconds(key: &str, value: &str) -> Result<Duration, SpecError> {
    Ok(Duration::from_millis(
        (number(key, value)? * 1e3).round() as u64
    ))
}

fn pair<'a>(
    value: &'a str,
    key: &str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), SpecError> {
    value.split_once(':').ok_or_else(|| SpecError::Shape {
        key: key.to_string(),
        value: value.to_string(),
        expected,
    })
}

fn ms_text(d: Duration) -> String {
    format!("{}", d.as_micros() as f64 / 1e3)
}

fn s_text(d: Duration) -> String {
    format!("{}", d.as_millis() as f64 / 1e3)
}

impl FromStr for LinkConfig {
    type Err = SpecError;

    /// Reads `rate=4000000,delay_ms=20,loss=0.05,outage=4:8,...`; unnamed settings keep
    /// their [`Default`]. The result is validated.
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let mut c = LinkConfig::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| SpecError::NotKeyValue(item.to_string()))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "rate" if value == "unlimited" => c.rate = None,
                "rate" => c.rate = Some(integer(key, value)?),
                "delay_ms" => c.delay = millis(key, value)?,
                "jitter_ms" => c.jitter = millis(key, value)?,
                "jitter" => {
                    c.jitter_shape = match value {
                        "uniform" => JitterShape::Uniform,
                        "normal" => JitterShape::Normal,
                        _ => {
                            return Err(SpecError::Shape {
                                key: key.to_string(),
                                value: value.to_string(),
                                expected: "uniform or normal",
                            })
                        }
                    }
                }
                "reorder" => {
                    c.reorder = value.parse().map_err(|_| SpecError::Shape {
                        key: key.to_string(),
                        value: value.to_string(),
                        expected: "true or false",
                    })?
                }
                "loss" => c.loss = number(key, value)?,
                "ge" => {
                    let parts: Vec<&str> = value.split('/').collect();
                    let [gb, bg, lg, lb] = parts[..] else {
                        return Err(SpecError::Shape {
                            key: key.to_string(),
                            value: value.to_string(),
                            expected: "P_GOOD_TO_BAD/P_BAD_TO_GOOD/LOSS_IN_GOOD/LOSS_IN_BAD",
                        });
                    };
                    c.gilbert_elliott = Some(GilbertElliott {
                        p_good_to_bad: number(key, gb)?,
                        p_bad_to_good: number(key, bg)?,
                        loss_in_good: number(key, lg)?,
                        loss_in_bad: number(key, lb)?,
                    });
                }
                "queue_bytes" => c.queue_limit = QueueLimit::Bytes(integer(key, value)?),
                "queue_ms" => c.queue_limit = QueueLimit::Delay(millis(key, value)?),
                "step" => {
                    let (at, bits) =
                        pair(value, key, "AT_SECONDS:BITS_PER_SECOND, e.g. 5:2000000")?;
                    c.rate_steps.push(RateStep {
                        at: seconds(key, at)?,
                        bits_per_sec: integer(key, bits)?,
                    });
                }
                "random_rate" => {
                    let parts: Vec<&str> = value.split(':').collect();
                    let [min, max, every] = parts[..] else {
                        return Err(SpecError::Shape {
                            key: key.to_string(),
                            value: value.to_string(),
                            expected: "MIN_BITS:MAX_BITS:EVERY_SECONDS, e.g. 2000000:12000000:3",
                        });
                    };
                    c.random_rate = Some(RandomRate {
                        min: integer(key, min)?,
                        max: integer(key, max)?,
                        every: seconds(key, every)?,
                    });
                }
                "outage" => c.outages.push(value.parse()?),
                "seed" => c.seed = integer(key, value)?,
                _ => return Err(SpecError::UnknownKey(key.to_string())),
            }
        }
        c.validate()?;
        Ok(c)
    }
}

impl fmt::Display for LinkConfig {
    /// The spec [`FromStr`] reads back to the same configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rate {
            Some(r) => write!(f, "rate={r}")?,
            None => write!(f, "rate=unlimited")?,
        }
        write!(f, ",delay_ms={}", ms_text(self.delay))?;
        if !self.jitter.is_zero() {
            let shape = match self.jitter_shape {
                JitterShape::Uniform => "uniform",
                JitterShape::Normal => "normal",
            };
            write!(f, ",jitter_ms={},jitter={shape}", ms_text(self.jitter))?;
        }
        write!(f, ",reorder={},loss={}", self.reorder, self.loss)?;
        if let Some(g) = &self.gilbert_elliott {
            write!(
                f,
                ",ge={}/{}/{}/{}",
                g.p_good_to_bad, g.p_bad_to_good, g.loss_in_good, g.loss_in_bad
            )?;
        }
        match self.queue_limit {
            QueueLimit::Bytes(b) => write!(f, ",queue_bytes={b}")?,
            QueueLimit::Delay(d) => write!(f, ",queue_ms={}", ms_text(d))?,
        }
        for s in &self.rate_steps {
            write!(f, ",step={}:{}", s_text(s.at), s.bits_per_sec)?;
        }
        if let Some(r) = &self.random_rate {
            write!(f, ",random_rate={}:{}:{}", r.min, r.max, s_text(r.every))?;
        }
        for o in &self.outages {
            write!(f, ",outage={}:{}", s_text(o.start), s_text(o.length))?;
        }
        write!(f, ",seed={}", self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_display() {
        let c = LinkConfig {
            delay: Duration::from_micros(20_500),
            jitter: Duration::from_millis(15),
            jitter_shape: JitterShape::Normal,
            reorder: true,
            loss: 0.02,
            gilbert_elliott: Some(GilbertElliott {
                p_good_to_bad: 0.0025,
                p_bad_to_good: 0.25,
                loss_in_good: 0.0,
                loss_in_bad: 1.0,
            }),
            rate: Some(3_000_000),
            rate_steps: vec![RateStep {
                at: Duration::from_secs(5),
                bits_per_sec: 2_000_000,
            }],
            random_rate: Some(RandomRate {
                min: 2_000_000,
                max: 12_000_000,
                every: Duration::from_secs(3),
            }),
            queue_limit: QueueLimit::Bytes(64_000),
            outages: vec![Outage {
                start: Duration::from_millis(4_500),
                length: Duration::from_secs(8),
            }],
            seed: 42,
        };
        let back: LinkConfig = c.to_string().parse().expect("own spec parses");
        assert_eq!(back, c);
    }

    #[test]
    fn loss_outside_zero_to_one_is_refused() {
        for bad in ["loss=1.5", "ge=0.1/0.2/0/2"] {
            let err = bad.parse::<LinkConfig>().expect_err(bad);
            assert!(err.to_string().contains("between 0 and 1"), "{err}");
        }
        let err = "loss=-0.1".parse::<LinkConfig>().expect_err("negative");
        assert!(err.to_string().contains(">= 0"), "{err}");
    }

    #[test]
    fn absurd_figures_are_refused_with_a_reason() {
        let cases = [
            ("delay_ms=100000", "longer than"),
            ("rate=10", "outside 1 kbit/s"),
            ("queue_bytes=100", "at least 1500"),
            ("random_rate=9000000:2000000:3", "above max"),
            ("step=5:2000000,step=4:1000000", "increasing time order"),
            ("outage=4:0", "zero length"),
            ("ge=0.1/0/0/1", "stay bad for ever"),
            ("delay=5", "unknown link setting `delay`"),
            ("rate=fast", "not a valid number"),
            ("outage=4", "START:LENGTH"),
        ];
        for (spec, expected) in cases {
            let err = spec.parse::<LinkConfig>().expect_err(spec).to_string();
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn gilbert_elliott_mean_loss_is_the_bad_state_share() {
        let ge = GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.24,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        };
        assert!((ge.mean_loss() - 0.04).abs() < 1e-12);
    }
}
