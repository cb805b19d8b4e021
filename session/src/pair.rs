//! Two session cores joined by a simulated link, stepped in virtual time: seconds of
//! protocol in microseconds of test, with delay, loss, a rate limit and outages.
//!
//! The link models what the data channels give the cores: `video` is unordered and either
//! unreliable (a lost or blacked-out chunk is gone) or, like the product's channel, partially
//! reliable (sent again after a delay while it is younger than its lifetime), `control` and
//! `input` are reliable and ordered (a lost message is sent again after `rto`, so loss
//! shows up as delay, and an outage holds them back until a retransmission, `rto` doubled
//! at each, falls after it). Loss is drawn from a seeded generator, so a run is repeatable.

use std::time::Duration;

use bytes::BytesMut;

mod video;

pub use video::{Shown, VideoLoad};

use crate::agent::{AgentSession, AgentSessionConfig, AgentSessionEvent, StreamInfo};
use crate::viewer::{ViewerSession, ViewerSessionConfig, ViewerSessionEvent};
use crate::wire::Channel;
use crate::Transmit;

/// One direction of the simulated link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Probability that a message is lost, 0.0..=1.0.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` for unlimited.
    pub rate_bps: Option<u64>,
    /// Windows `(start, end)` in which nothing gets through.
    pub outages: Vec<(Duration, Duration)>,
    /// How long a reliable message waits before it is sent again after a loss.
    pub rto: Duration,
    /// The bottleneck's queue: a video message that would wait longer than this behind
    /// the ones before it is dropped (tail drop), a reliable one is sent again after `rto`.
    /// `None` for an endless queue.
    pub queue: Option<Duration>,
    /// Changes of `rate_bps` over time: from each instant on, the rate is the one given.
    pub rate_steps: Vec<(Duration, u64)>,
    /// Partial reliability of `video`: a lost chunk is sent again this long after the loss
    /// (SCTP's fast retransmit, about one round trip) while younger than `video_lifetime`.
    /// `None`: a lost chunk is gone.
    pub video_resend_after: Option<Duration>,
    /// How long SCTP keeps trying to deliver a video chunk.
    pub video_lifetime: Duration,
    /// Seed of the loss draws.
    pub seed: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            loss: 0.0,
            rate_bps: None,
            outages: Vec::new(),
            rto: Duration::from_millis(200),
            queue: None,
            rate_steps: Vec::new(),
            video_resend_after: None,
            video_lifetime: Duration::from_secs(1),
            seed: 1,
        }
    }
}

impl LinkConfig {
    fn rate_at(&self, t: Duration) -> Option<u64> {
        self.rate_steps
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map(|(_, r)| *r)
            .or(self.rate_bps)
    }

    fn in_outage(&self, t: Duration) -> Option<Duration> {
        self.outages
            .iter()
            .find(|(a, b)| *a <= t && t < *b)
            .map(|(_, b)| *b)
    }
}

#[derive(Debug)]
struct InFlight {
    at: Duration,
    seq: u64,
    channel: Channel,
    data: BytesMut,
}

/// One direction: what is on the wire and when each message lands.
#[derive(Debug)]
struct Direction {
    link: LinkConfig,
    rng: u64,
    seq: u64,
    /// When the bottleneck has finished serialising what was sent before.
    free_at: Duration,
    /// The latest landing time of a reliable message: they arrive in order.
    last_reliable: Duration,
    in_flight: Vec<InFlight>,
    delivered: u64,
    lost: u64,
}

impl Direction {
    fn new(link: LinkConfig) -> Self {
        Self {
            rng: link.seed.max(1),
            link,
            seq: 0,
            free_at: Duration::ZERO,
            last_reliable: Duration::ZERO,
            in_flight: Vec::new(),
            delivered: 0,
            lost: 0,
        }
    }

    /// xorshift64*: enough for loss draws, and the same every run.
    fn draw(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn send(&mut self, now: Duration, t: Transmit) {
        let bits = t.data.len() as u64 * 8;
        let reliable = t.channel != Channel::Video;
        let resend = if reliable {
            Some(self.link.rto)
        } else {
            self.link.video_resend_after
        };
        let mut start = self.free_at.max(now);
        if let Some(limit) = self.link.queue {
            if start > now + limit {
                match resend {
                    Some(after) if reliable || after <= self.link.video_lifetime => {
                        start = start.max(now + after);
                    }
                    _ => {
                        self.lost += 1;
                        return;
                    }
                }
            }
        }
        let serialise = self.link.rate_at(start).map_or(Duration::ZERO, |r| {
            Duration::from_nanos(bits * 1_000_000_000 / r.max(1))
        });
        self.free_at = start + serialise;
        let mut at = self.free_at + self.link.delay;
        // A reliable message is sent again until a copy gets through, each wait twice the
        // last (SCTP backs its retransmission timer off), so an outage holds it past the
        // link's return. A partially reliable one is sent again until its lifetime runs out.
        let mut sent_at = start;
        let mut backoffs = 0u32;
        loop {
            let dark = self.link.in_outage(sent_at);
            let lost = self.draw() < self.link.loss;
            let after = match (dark, lost, resend) {
                (None, false, _) => break,
                (_, _, None) => {
                    self.lost += 1;
                    return;
                }
                (Some(_), _, Some(after)) if reliable => {
                    let wait = after * (1 << backoffs.min(6));
                    backoffs += 1;
                    sent_at + wait
                }
                (Some(end), _, Some(after)) => end.max(sent_at + after),
                (None, true, Some(after)) => sent_at + after,
            };
            if !reliable && after > start + self.link.video_lifetime {
                self.lost += 1;
                return;
            }
            sent_at = after;
            at = sent_at + serialise + self.link.delay;
        }
        if reliable {
            at = at.max(self.last_reliable);
            self.last_reliable = at;
        }
        self.seq += 1;
        self.in_flight.push(InFlight {
            at,
            seq: self.seq,
            channel: t.channel,
            data: t.data,
        });
    }

    fn next_at(&self) -> Option<Duration> {
        self.in_flight.iter().map(|m| m.at).min()
    }

    /// The earliest message due at `now`, in send order among equals.
    fn pop_due(&mut self, now: Duration) -> Option<InFlight> {
        let i = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, m)| m.at <= now)
            .min_by_key(|(_, m)| (m.at, m.seq))
            .map(|(i, _)| i)?;
        self.delivered += 1;
        Some(self.in_flight.swap_remove(i))
    }
}

/// A target core and a viewer core on a simulated link, with every event they raised.
#[derive(Debug)]
pub struct Pair {
    /// The target's core.
    pub host: AgentSession,
    /// The viewer's core.
    pub viewer: ViewerSession,
    /// Everything the target's core raised, with when.
    pub host_events: Vec<(Duration, AgentSessionEvent)>,
    /// Everything the viewer's core raised, with when.
    pub viewer_events: Vec<(Duration, ViewerSessionEvent)>,
    now: Duration,
    to_viewer: Direction,
    to_host: Direction,
    video: Option<video::VideoRun>,
    /// The target does not act on the viewer's requests to send video again.
    ignore_nacks: bool,
}

/// Steps a run may take before the harness calls it a livelock.
const MAX_STEPS: usize = 1_000_000;

impl Pair {
    /// Both cores start at time zero with the channels open; `down` carries target ->
    /// viewer, `up` viewer -> target.
    pub fn new(
        host: AgentSessionConfig,
        viewer: ViewerSessionConfig,
        stream: StreamInfo,
        control: bool,
        down: LinkConfig,
        up: LinkConfig,
    ) -> Self {
        Self {
            host: AgentSession::new(host, stream, control, Duration::ZERO),
            viewer: ViewerSession::new(viewer, Duration::ZERO),
            host_events: Vec::new(),
            viewer_events: Vec::new(),
            now: Duration::ZERO,
            to_viewer: Direction::new(down),
            to_host: Direction::new(up),
            video: None,
            ignore_nacks: false,
        }
    }

    /// From now on the target ignores the viewer's requests to send video again, as a
    /// target that keeps nothing would: losses are repaired by keyframes only.
    pub fn ignore_nacks(&mut self) {
        self.ignore_nacks = true;
    }

    /// Add a synthetic screen driven by the target's rate control: see [`VideoLoad`].
    pub fn with_video(mut self, load: VideoLoad, stream: &StreamInfo) -> Self {
        let pixels: Vec<u32> = (0..stream.tops.len())
            .map(|i| {
                let bottom = stream.tops.get(i + 1).copied().unwrap_or(stream.height);
                stream.width * bottom.saturating_sub(stream.tops[i])
            })
            .collect();
        let target = self.host.rate_target();
        self.video = Some(video::VideoRun::new(load, stream.stream, &pixels, target));
        self
    }

    /// Every band frame the viewer could show so far (with a synthetic screen).
    pub fn shown(&self) -> &[Shown] {
        self.video.as_ref().map_or(&[], |v| &v.shown)
    }

    /// The virtual time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Messages delivered and lost, target -> viewer.
    pub fn down_counts(&self) -> (u64, u64) {
        (self.to_viewer.delivered, self.to_viewer.lost)
    }

    /// Messages delivered and lost, viewer -> target.
    pub fn up_counts(&self) -> (u64, u64) {
        (self.to_host.delivered, self.to_host.lost)
    }

    /// Put a video message from the target on the link now (the cores do not make video).
    pub fn send_video(&mut self, data: BytesMut) {
        self.to_viewer.send(
            self.now,
            Transmit {
                channel: Channel::Video,
                data,
            },
        );
    }

    /// Run until `until`, delivering messages and firing timers in time order.
    ///
    /// # Panics
    /// When a million steps do not reach `until`: the cores are livelocked.
    pub fn run_until(&mut self, until: Duration) {
        for _ in 0..MAX_STEPS {
            self.flush();
            let next = [
                self.to_viewer.next_at(),
                self.to_host.next_at(),
                self.host.poll_timeout(),
                self.viewer.poll_timeout(),
                self.video.as_ref().and_then(|v| v.next_at()),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= until => self.step(t.max(self.now)),
                _ => {
                    self.now = until.max(self.now);
                    return;
                }
            }
        }
        panic!("the session cores did not reach {until:?} in {MAX_STEPS} steps: livelock");
    }

    /// Run for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn step(&mut self, now: Duration) {
        self.now = now;
        while let Some(m) = self.to_viewer.pop_due(now) {
            self.viewer.handle_message(now, m.channel, &m.data);
            if let (Some(v), Channel::Video) = (&mut self.video, m.channel) {
                v.deliver(now, &m.data);
            }
        }
        while let Some(m) = self.to_host.pop_due(now) {
            self.host.handle_message(now, m.channel, &m.data);
        }
        if self.host.poll_timeout().is_some_and(|t| t <= now) {
            self.host.handle_timeout(now);
        }
        if self.viewer.poll_timeout().is_some_and(|t| t <= now) {
            self.viewer.handle_timeout(now);
        }
        if let Some(v) = &mut self.video {
            if let Some(rtt) = self.viewer.rtt() {
                v.rasm.set_rtt(rtt);
            }
            v.poll_shown(now);
            if let Some(req) = v.rasm.poll_keyframe_request(now) {
                self.viewer.request_keyframe(req.0, req.1);
            }
            v.sender.set_budget(self.host.queue_budget());
            v.tick(now);
            while let Some((_, data)) = v.sender.poll_transmit(now) {
                self.to_viewer.send(
                    now,
                    Transmit {
                        channel: Channel::Video,
                        data,
                    },
                );
            }
            let lost = v.sender.poll_lost();
            self.host.handle_video_lost(now, lost);
            let keys = v.sender.poll_keys_sent();
            self.host.handle_keyframes_sent(now, keys);
            let t = v.sender.totals();
            self.host
                .handle_video_sent(t.frames, t.bytes, t.bands_dropped);
            if v.wide() {
                self.host.handle_content(true);
            }
        }
        self.flush();
    }

    /// Move what the cores want to send onto the link, and what they raised into the logs.
    fn flush(&mut self) {
        let now = self.now;
        while let Some(t) = self.host.poll_transmit() {
            self.to_viewer.send(now, t);
        }
        while let Some(t) = self.viewer.poll_transmit() {
            self.to_host.send(now, t);
        }
        while let Some(e) = self.host.poll_event() {
            if let Some(v) = &mut self.video {
                match &e {
                    AgentSessionEvent::RateChanged(t) => v.set_rate(now, *t),
                    AgentSessionEvent::KeyframeRequested { bands } => v.request_keyframes(*bands),
                    AgentSessionEvent::ResendVideo(seqs) if !self.ignore_nacks => {
                        v.sender.handle_nack(now, seqs);
                    }
                    AgentSessionEvent::StreamRestarted { stream, bands } => {
                        v.restart(*stream, *bands as usize);
                    }
                    _ => {}
                }
            }
            self.host_events.push((now, e));
        }
        while let Some(e) = self.viewer.poll_event() {
            if let (Some(v), ViewerSessionEvent::StreamStarted { stream, layout, .. }) =
                (&mut self.video, &e)
            {
                let pixels: Vec<u32> = (0..layout.count())
                    .map(|i| layout.width() * layout.band_height(i))
                    .collect();
                v.start_stream(now, *stream, &pixels);
            }
            self.viewer_events.push((now, e));
        }
    }
}
