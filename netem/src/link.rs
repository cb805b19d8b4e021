//! One direction of an impaired link, sans-IO: packets go in with the time they arrived and
//! come out when their time has come. Time is a [`Duration`] since an epoch the caller picks;
//! nothing here reads a clock, sleeps or touches a socket, so tests run it in virtual time.
//!
//! A packet's path: outage check, loss (random, then Gilbert-Elliott), the bottleneck's
//! drop-tail queue, serialisation at the rate in force when it reaches the head of the
//! queue, then propagation (base delay plus jitter).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{
    ConfigError, JitterShape, LinkConfig, QueueLimit, RandomRate, DELAY_QUEUE_FLOOR_BYTES,
};

/// Packets in propagation beyond this are dropped as queue overflow: a guard against a
/// configuration (unlimited rate, long delay) that would otherwise hold unbounded memory.
const MAX_IN_FLIGHT: usize = 262_144;

/// What happened to a packet handed to [`Link::handle_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On its way; [`Link::poll_deliver`] returns it when due.
    Accepted,
    DroppedByLoss,
    DroppedByQueue,
    DroppedByOutage,
}

/// Counters for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub delivered: u64,
    pub bytes_delivered: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    /// Packets that arrived during an outage or would have left the bottleneck during one.
    pub dropped_outage: u64,
}

/// A packet in propagation, ordered by due time then by arrival order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    due: Duration,
    seq: u64,
    packet: Vec<u8>,
}

/// One direction of a link. Build with [`Link::new`]; feed with [`Link::handle_packet`];
/// drain with [`Link::poll_deliver`]; wake at [`Link::poll_timeout`].
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    // Separate streams, so changing the jitter does not change which packets are lost.
    loss_rng: StdRng,
    jitter_rng: StdRng,
    rate_rng: StdRng,
    /// Rates drawn so far for the random schedule's periods 0, 1, 2, ...
    random_rates: Vec<u64>,
    ge_bad: bool,
    now: Duration,
    /// Waiting for the bottleneck, in arrival order.
    waiting: VecDeque<Vec<u8>>,
    /// Bytes waiting plus the packet being serialised.
    backlog_bytes: u64,
    /// The packet on the wire at the bottleneck and when its last bit is out.
    serialising: Option<(Vec<u8>, Duration)>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// The latest due time handed out, so that without reordering none is earlier.
    last_due: Duration,
    stats: LinkStats,
}

impl Link {
    pub fn new(config: LinkConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // Fixed, distinct offsets: one seed, three independent streams.
        let stream =
            |n: u64| StdRng::seed_from_u64(config.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Ok(Self {
            loss_rng: stream(1),
            jitter_rng: stream(2),
            rate_rng: stream(3),
            config,
            random_rates: Vec::new(),
            ge_bad: false,
            now: Duration::ZERO,
            waiting: VecDeque::new(),
            backlog_bytes: 0,
            serialising: None,
            in_flight: BinaryHeap::new(),
            seq: 0,
            last_due: Duration::ZERO,
            stats: LinkStats::default(),
        })
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Bytes in the bottleneck queue (including the packet being serialised) right now.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog_bytes
    }

    /// The rate in force at `t`, in bits/s; `None` is unlimited.
    pub fn rate_at(&mut self, t: Duration) -> Option<u64> {
        if let Some(step) = self.config.rate_steps.iter().rev().find(|s| s.at <= t) {
            return Some(step.bits_per_sec);
        }
        if let Some(r) = self.config.random_rate {
            return Some(self.random_rate(r, t));
        }
        self.config.rate
    }

    fn random_rate(&mut self, r: RandomRate, t: Duration) -> u64 {
        let period = (t.as_nanos() / r.every.as_nanos().max(1)) as usize;
        // Drawn in period order whatever order times are asked in, so the schedule is a
        // function of the seed alone.
        while self.random_rates.len() <= period {
            let rate = self.rate_rng.random_range(r.min..=r.max);
            self.random_rates.push(rate);
        }
        self.random_rates[period]
    }

    /// The queue limit in bytes at the rate in force at `t`.
    pub fn queue_limit_at(&mut self, t: Duration) -> u64 {
        match self.config.queue_limit {
            QueueLimit::Bytes(b) => b,
            QueueLimit::Delay(d) => match self.rate_at(t) {
                Some(rate) => {
                    let bytes = (u128::from(rate) * d.as_nanos() / 8 / 1_000_000_000) as u64;
                    bytes.max(DELAY_QUEUE_FLOOR_BYTES)
                }
                None => u64::MAX,
            },
        }
    }

    fn in_outage(&self, t: Duration) -> bool {
        self.config.outages.iter().any(|o| o.contains(t))
    }

    /// Times only move forward: an earlier `now` than seen before counts as the latest.
    fn clock(&mut self, now: Duration) -> Duration {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Hands a packet that arrived at `now` to the link.
    pub fn handle_packet(&mut self, now: Duration, packet: Vec<u8>) -> Verdict {
        let now = self.clock(now);
        self.advance(now);
        let len = packet.len() as u64;
        self.stats.packets_in += 1;
        self.stats.bytes_in += len;
        if self.in_outage(now) {
            self.stats.dropped_outage += 1;
            return Verdict::DroppedByOutage;
        }
        if self.draw_loss() {
            self.stats.dropped_loss += 1;
            return Verdict::DroppedByLoss;
        }
        let limit = self.queue_limit_at(now);
        if self.backlog_bytes + len > limit || self.in_flight.len() >= MAX_IN_FLIGHT {
            // Drop-tail: the arriving packet goes, those already queued stay.
            self.stats.dropped_queue += 1;
            return Verdict::DroppedByQueue;
        }
        self.backlog_bytes += len;
        self.waiting.push_back(packet);
        if self.serialising.is_none() {
            self.start_next(now);
        }
        // An unlimited rate serialises in no time: move it into propagation at once.
        self.advance(now);
        Verdict::Accepted
    }

    /// Both loss models are drawn for every packet, so one packet's fate never shifts
    /// another's draws.
    fn draw_loss(&mut self) -> bool {
        let random = self.loss_rng.random::<f64>() < self.config.loss;
        let bursty = match self.config.gilbert_elliott {
            Some(ge) => {
                let flip = self.loss_rng.random::<f64>();
                if self.ge_bad {
                    self.ge_bad = flip >= ge.p_bad_to_good;
                } else {
                    self.ge_bad = flip < ge.p_good_to_bad;
                }
                let p = if self.ge_bad {
                    ge.loss_in_bad
                } else {
                    ge.loss_in_good
                };
                self.loss_rng.random::<f64>() < p
            }
            None => false,
        };
        random || bursty
    }

    /// Puts the head of the queue on the wire at `at`.
    fn start_next(&mut self, at: Duration) {
        let Some(packet) = self.waiting.pop_front() else {
            return;
        };
        let done = at + self.serialisation(at, packet.len());
        self.serialising = Some((packet, done));
    }

    fn serialisation(&mut self, at: Duration, len: usize) -> Duration {
        match self.rate_at(at) {
            Some(rate) => {
                let nanos = (len as u128 * 8 * 1_000_000_000).div_ceil(u128::from(rate));
                Duration::from_nanos(nanos as u64)
            }
            None => Duration::ZERO,
        }
    }

    /// Moves every packet whose serialisation ends by `now` into propagation.
    fn advance(&mut self, now: Duration) {
        while let Some((_, done)) = &self.serialising {
            let done = *done;
            if done > now {
                break;
            }
            let Some((packet, _)) = self.serialising.take() else {
                break;
            };
            self.backlog_bytes -= packet.len() as u64;
            if self.in_outage(done) {
                // The link went down under it: its bits went nowhere.
                self.stats.dropped_outage += 1;
            } else {
                self.launch(done, packet);
            }
            self.start_next(done);
        }
    }

    fn launch(&mut self, sent: Duration, packet: Vec<u8>) {
        let mut due = sent + self.config.delay;
        let jitter = self.draw_jitter();
        due = if jitter >= 0.0 {
            due + Duration::from_secs_f64(jitter)
        } else {
            due.saturating_sub(Duration::from_secs_f64(-jitter))
        };
        // Never before it left the bottleneck, and without reordering never before the
        // packet ahead of it.
        due = due.max(sent);
        if !self.config.reorder {
            due = due.max(self.last_due);
        }
        self.last_due = self.last_due.max(due);
        self.seq += 1;
        self.in_flight.push(Reverse(InFlight {
            due,
            seq: self.seq,
            packet,
        }));
    }

    /// A jitter sample in seconds within `+/- jitter`.
    fn draw_jitter(&mut self) -> f64 {
        let j = self.config.jitter.as_secs_f64();
        if j == 0.0 {
            return 0.0;
        }
        match self.config.jitter_shape {
            JitterShape::Uniform => self.jitter_rng.random_range(-j..=j),
            JitterShape::Normal => {
                // Box-Muller; sigma = j / 2, so the cut at +/- j trims under 5 %.
                let u1: f64 = self.jitter_rng.random::<f64>().max(f64::MIN_POSITIVE);
                let u2: f64 = self.jitter_rng.random();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (z * j / 2.0).clamp(-j, j)
            }
        }
    }

    /// The next packet due by `now`, if any. Call until `None`.
    pub fn poll_deliver(&mut self, now: Duration) -> Option<Vec<u8>> {
        let now = self.clock(now);
        self.advance(now);
        if self.in_flight.peek()?.0.due > now {
            return None;
        }
        let Reverse(p) = self.in_flight.pop()?;
        self.stats.delivered += 1;
        self.stats.bytes_delivered += p.packet.len() as u64;
        Some(p.packet)
    }

    /// When something next happens (a serialisation ends or a packet is due), if anything
    /// is pending. Call [`Link::poll_deliver`] at that time.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let serialised = self.serialising.as_ref().map(|(_, done)| *done);
        let due = self.in_flight.peek().map(|p| p.0.due);
        match (serialised, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
