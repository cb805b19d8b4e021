//! Named link profiles (two directions each) and command-line overrides on top of them.
//!
//! Side A is the host (agent) side, side B the viewer's: "down" is A to B. Profiles are
//! described by round-trip time; each direction gets half of it.

use std::time::Duration;

use crate::config::{
    ConfigError, GilbertElliott, JitterShape, LinkConfig, Outage, QueueLimit, RandomRate, RateStep,
};

/// Both directions of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    pub name: String,
    /// Toward side B (the viewer): the downlink.
    pub a_to_b: LinkConfig,
    /// Toward side A (the host): the uplink.
    pub b_to_a: LinkConfig,
}

/// Why a profile could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown link profile `{0}` (known: {list})", list = NAMES.join(", "))]
    Unknown(String),
    #[error("{what}: {value} must be a finite number > 0")]
    NotPositive { what: &'static str, value: f64 },
    #[error("{what}: {value} must be a finite number >= 0")]
    Negative { what: &'static str, value: f64 },
    #[error("the {direction} direction: {source}")]
    Invalid {
        direction: &'static str,
        source: ConfigError,
    },
}

/// Every named profile, for `--help` and error messages.
pub const NAMES: &[&str] = &[
    "lan",
    "cable",
    "dsl",
    "lte",
    "hotel-wifi",
    "satellite",
    "step",
    "outage-8",
    "outage-25",
    "custom",
];

const MBIT: u64 = 1_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Half an RTT given in ms: one direction's delay.
fn one_way(rtt_ms: u64) -> Duration {
    Duration::from_micros(rtt_ms * 500)
}

fn symmetric_config(rate: u64, rtt_ms: u64, loss: f64) -> LinkConfig {
    LinkConfig {
        rate: Some(rate),
        delay: one_way(rtt_ms),
        loss,
        ..LinkConfig::default()
    }
}

fn outage(start_s: u64, length_s: u64) -> Outage {
    Outage {
        start: Duration::from_secs(start_s),
        length: Duration::from_secs(length_s),
    }
}

impl LinkProfile {
    /// The same configuration both ways; the reverse direction gets its own seed so the two
    /// do not lose the same packets.
    pub fn symmetric(name: impl Into<String>, config: LinkConfig) -> Self {
        let mut b_to_a = config.clone();
        b_to_a.seed = config.seed.wrapping_add(1);
        Self {
            name: name.into(),
            a_to_b: config,
            b_to_a,
        }
    }

    /// One of [`NAMES`]. `custom` is a perfect link, meant to be shaped by overrides.
    pub fn named(name: &str) -> Result<Self, ProfileError> {
        let p = |c| Ok(Self::symmetric(name, c));
        match name {
            "lan" => p(symmetric_config(1000 * MBIT, 1, 0.0)),
            "cable" => p(symmetric_config(20 * MBIT, 30, 0.001)),
            "dsl" => {
                let mut profile = Self::symmetric(name, symmetric_config(6 * MBIT, 50, 0.005));
                profile.b_to_a.rate = Some(MBIT);
                Ok(profile)
            }
            "lte" => p(LinkConfig {
                rate: None,
                random_rate: Some(RandomRate {
                    min: 2 * MBIT,
                    max: 12 * MBIT,
                    every: Duration::from_secs(3),
                }),
                delay: one_way(80),
                // About 1 % lost, in bursts of 4 packets on average.
                gilbert_elliott: Some(GilbertElliott {
                    p_good_to_bad: 0.0025,
                    p_bad_to_good: 0.25,
                    loss_in_good: 0.0,
                    loss_in_bad: 1.0,
                }),
                ..LinkConfig::default()
            }),
            "hotel-wifi" => p(LinkConfig {
                jitter: ms(15),
                jitter_shape: JitterShape::Uniform,
                reorder: true,
                ..symmetric_config(3 * MBIT, 40, 0.02)
            }),
            "satellite" => p(symmetric_config(10 * MBIT, 600, 0.0)),
            "step" => p(LinkConfig {
                rate_steps: vec![RateStep {
                    at: Duration::from_secs(5),
                    bits_per_sec: 2 * MBIT,
                }],
                ..symmetric_config(20 * MBIT, 30, 0.0)
            }),
            "outage-8" => p(LinkConfig {
                outages: vec![outage(4, 8)],
                ..symmetric_config(20 * MBIT, 30, 0.001)
            }),
            "outage-25" => p(LinkConfig {
                outages: vec![outage(4, 25)],
                ..symmetric_config(20 * MBIT, 30, 0.001)
            }),
            "custom" => p(LinkConfig::default()),
            _ => Err(ProfileError::Unknown(name.to_string())),
        }
    }

    pub fn validate(&self) -> Result<(), ProfileError> {
        self.a_to_b
            .validate()
            .map_err(|source| ProfileError::Invalid {
                direction: "A->B",
                source,
            })?;
        self.b_to_a
            .validate()
            .map_err(|source| ProfileError::Invalid {
                direction: "B->A",
                source,
            })
    }

    /// Applies `o` to both directions (and `rate_b_to_a_mbit` to B->A) and validates.
    pub fn apply(&mut self, o: &ProfileOverrides) -> Result<(), ProfileError> {
        let rate = o.rate_mbit.map(|v| mbit("--rate-mbit", v)).transpose()?;
        let rate_up = o
            .rate_b_to_a_mbit
            .map(|v| mbit("--rate-b-to-a-mbit", v))
            .transpose()?;
        let delay = o.rtt_ms.map(|v| half_ms("--rtt-ms", v)).transpose()?;
        let jitter = o.jitter_ms.map(|v| half_ms("--jitter-ms", v)).transpose()?;
        let queue = match (o.queue_ms, o.queue_kb) {
            (_, Some(kb)) => Some(QueueLimit::Bytes(
                (non_negative("--queue-kb", kb)? * 1e3) as u64,
            )),
            (Some(q), None) => Some(QueueLimit::Delay(Duration::from_micros(
                (non_negative("--queue-ms", q)? * 1e3) as u64,
            ))),
            (None, None) => None,
        };
        for (i, c) in [&mut self.a_to_b, &mut self.b_to_a].into_iter().enumerate() {
            let up = i == 1;
            if let Some(r) = if up { rate_up.or(rate) } else { rate } {
                // A fixed rate replaces any schedule the profile had.
                c.rate = Some(r);
                c.rate_steps.clear();
                c.random_rate = None;
            }
            if let Some(d) = delay {
                c.delay = d;
            }
            if let Some(j) = jitter {
                c.jitter = j;
            }
            if let Some(r) = o.reorder {
                c.reorder = r;
            }
            if let Some(l) = o.loss {
                c.loss = l;
                c.gilbert_elliott = None;
            }
            if !o.outages.is_empty() {
                c.outages = o.outages.clone();
            }
            if let Some(q) = queue {
                c.queue_limit = q;
            }
            if let Some(s) = o.seed {
                c.seed = s.wrapping_add(i as u64);
            }
        }
        if o != &ProfileOverrides::default() && !self.name.ends_with('+') {
            self.name.push('+');
        }
        self.validate()
    }
}

/// Figures from the command line that replace a profile's (all `None`: nothing changes).
/// Round-trip figures (RTT, jitter) are halved per direction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileOverrides {
    /// Both directions' rate; replaces any rate schedule.
    pub rate_mbit: Option<f64>,
    /// The B->A (uplink) rate, if it differs.
    pub rate_b_to_a_mbit: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// Round-trip jitter, +/-.
    pub jitter_ms: Option<f64>,
    pub reorder: Option<bool>,
    /// Random loss per direction; replaces bursty loss.
    pub loss: Option<f64>,
    /// Replace the profile's outages when not empty.
    pub outages: Vec<Outage>,
    pub queue_ms: Option<f64>,
    pub queue_kb: Option<f64>,
    pub seed: Option<u64>,
}

fn non_negative(what: &'static str, v: f64) -> Result<f64, ProfileError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(ProfileError::Negative { what, value: v })
    }
}

fn mbit(what: &'static str, v: f64) -> Result<u64, ProfileError> {
    if v.is_finite() && v > 0.0 {
        Ok((v * 1e6).round() as u64)
    } else {
        Err(ProfileError::NotPositive { what, value: v })
    }
}

fn half_ms(what: &'static str, v: f64) -> Result<Duration, ProfileError> {
    Ok(Duration::from_micros(
        (non_negative(what, v)? * 500.0).round() as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_profile_is_valid() {
        for name in NAMES {
            let p = LinkProfile::named(name).expect(name);
            p.validate().expect(name);
            assert_ne!(p.a_to_b.seed, p.b_to_a.seed, "{name}");
        }
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let err = LinkProfile::named("dialup")
            .expect_err("unknown")
            .to_string();
        assert!(
            err.contains("dialup") && err.contains("hotel-wifi"),
            "{err}"
        );
    }

    #[test]
    fn dsl_is_fast_toward_the_viewer_and_slow_back() {
        let p = LinkProfile::named("dsl").expect("dsl");
        assert_eq!(p.a_to_b.rate, Some(6_000_000));
        assert_eq!(p.b_to_a.rate, Some(1_000_000));
        assert_eq!(p.a_to_b.delay + p.b_to_a.delay, ms(50));
    }

    #[test]
    fn lte_loses_about_one_percent_in_bursts() {
        let p = LinkProfile::named("lte").expect("lte");
        let loss = p.a_to_b.mean_loss();
        assert!((loss - 0.01).abs() < 0.001, "{loss}");
    }

    #[test]
    fn overrides_replace_the_profile_figures_both_ways() {
        let mut p = LinkProfile::named("lte").expect("lte");
        p.apply(&ProfileOverrides {
            rate_mbit: Some(8.0),
            loss: Some(0.02),
            rtt_ms: Some(40.0),
            outages: vec!["4:8".parse().expect("outage")],
            ..ProfileOverrides::default()
        })
        .expect("valid overrides");
        for c in [&p.a_to_b, &p.b_to_a] {
            assert_eq!(c.rate, Some(8_000_000));
            assert_eq!(c.random_rate, None);
            assert_eq!(c.loss, 0.02);
            assert_eq!(c.gilbert_elliott, None);
            assert_eq!(c.delay, ms(20));
            assert_eq!(c.outages, vec![outage(4, 8)]);
        }
        assert_eq!(p.name, "lte+");
    }

    #[test]
    fn bad_overrides_say_which_flag() {
        let mut p = LinkProfile::named("cable").expect("cable");
        let err = p
            .apply(&ProfileOverrides {
                rate_mbit: Some(-3.0),
                ..ProfileOverrides::default()
            })
            .expect_err("negative rate");
        assert!(err.to_string().contains("--rate-mbit"), "{err}");
        let err = p
            .apply(&ProfileOverrides {
                loss: Some(2.0),
                ..ProfileOverrides::default()
            })
            .expect_err("loss > 1");
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
    }
}
