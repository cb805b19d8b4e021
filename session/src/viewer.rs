//! The technician's side of an established session, sans-IO: pings that keep the target's
//! clock aligned and tell it we are here, keyframe requests, input, receiver reports, and
//! the verdict when the target goes quiet.
//!
//! The driver feeds it every message that arrives ([`ViewerSession::handle_message`]), what
//! the decoder did ([`ViewerSession::handle_decoded`]) and the time
//! ([`ViewerSession::handle_timeout`] at [`ViewerSession::poll_timeout`]); it sends what
//! [`ViewerSession::poll_transmit`] returns and acts on [`ViewerSession::poll_event`]. The
//! video itself (reassembly, decoding) is the driver's, through [`crate::video`].

use std::time::Duration;

use bytes::BytesMut;
use deskwire_engine::{BandLayout, ColorSpace};

use crate::clock::ClockSync;
use crate::feedback::ReceiveMeter;
use crate::input::{InputEvent, Key, MAX_HELD_KEYS};
use crate::nack::LossList;
use crate::outbox::{micros, Every, Liveness, Outbox, SessionEnd, Transmit, ACTIVE_FOR};
use crate::pointer::{PointerReceiver, RemoteCursor};
use crate::stats::ViewerStats;
use crate::wire::{
    decode_control, is_resent, nack_ranges, video_stamp, ByeReason, Channel, ControlMessage,
};

/// How often the target is pinged while the link is down: the link's return is noticed
/// within this (8 s outages came back 0.4-1 s late with a ping a second; 0.46-0.73 s,
/// median 0.65, with one every 200 ms; 0.38-0.59, median 0.42, with one every 50 ms, in
/// six interleaved runs of `deskwire-bench net --profile outage-8`). Each ping is about
/// 120 bytes on the wire by count of its headers (SCTP, DTLS, UDP, IP; not measured): some
/// 20 kbit/s, only while nothing arrives.
const RECONNECT_PING: Duration = Duration::from_millis(50);

/// The settings of [`ViewerSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerSessionConfig {
    /// The session ends when nothing was heard from the target for this long.
    pub peer_timeout: Duration,
    /// How often the target is pinged while video or input flows (the ping is also the
    /// heartbeat it watches).
    pub ping_interval: Duration,
    /// How often while idle (no video received, no input sent for 3 s). The target's
    /// `idle_quiet_after` must be longer.
    pub idle_ping_interval: Duration,
    /// How often statistics are reported, here and to the target.
    pub stats_interval: Duration,
    /// How often the target hears what the video channel delivered, while video flows.
    pub feedback_interval: Duration,
    /// After this long without a word from the target the link counts as down and the
    /// technician is told the session is reconnecting.
    pub quiet_after: Duration,
}

impl Default for ViewerSessionConfig {
    fn default() -> Self {
        Self {
            peer_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(1),
            idle_ping_interval: Duration::from_secs(20),
            stats_interval: Duration::from_secs(1),
            feedback_interval: Duration::from_millis(100),
            quiet_after: Duration::from_millis(2500),
        }
    }
}

/// What the viewer's driver has to act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ViewerSessionEvent {
    /// A stream starts: set up one decoder per band of `layout`.
    StreamStarted {
        /// Its generation, carried by its video chunks.
        stream: u16,
        /// The frame and its bands.
        layout: BandLayout,
        /// Colour matrix and range.
        color: ColorSpace,
    },
    /// What the target allows now.
    Permissions {
        /// Keyboard and mouse are injected.
        control: bool,
    },
    /// The target answered a grant request: approved with the grant as JSON, or refused
    /// with the reason.
    GrantAnswered {
        /// The request's number.
        id: u32,
        /// Approved or not.
        approved: bool,
        /// The grant (JSON) or the reason.
        detail: String,
    },
    /// A better estimate of the target's clock minus ours.
    ClockOffset(i64),
    /// Nothing heard from the target for `quiet_after`: the link is down and the session
    /// waits for it (up to `peer_timeout`). Show "reconnecting".
    Reconnecting,
    /// The target is heard again after [`ViewerSessionEvent::Reconnecting`].
    Reconnected,
    /// The target's pointer moved or changed shape: draw this on top of the picture.
    Cursor(RemoteCursor),
    /// Periodic statistics.
    Stats(ViewerStats),
    /// The session is over.
    Ended(SessionEnd),
}

/// What the decoder reported, as totals and the session's latency quantiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Decoded {
    frames: u64,
    latency_p50: Option<Duration>,
    latency_p99: Option<Duration>,
}

/// The viewer's session core. See the module documentation.
#[derive(Debug)]
pub struct ViewerSession {
    stream: Option<u16>,
    clock: ClockSync,
    nonce: u32,
    liveness: Liveness,
    stats: Every,
    /// Frames and bytes at the last report.
    reported: (u64, u64),
    bytes: u64,
    decoded: Decoded,
    keyframe_requests: u32,
    meter: ReceiveMeter,
    /// Video messages missing, to ask for again.
    losses: LossList,
    feedback: Every,
    ping_interval: Duration,
    idle_ping_interval: Duration,
    last_ping: Option<Duration>,
    /// The last video received or input sent.
    last_active: Duration,
    /// Keys pressed and not yet released, as far as this side sent (auto-repeat presses a
    /// held key again without a release, so they are kept by identity, not counted).
    held_keys: Vec<Key>,
    /// Buttons pressed and not yet released (bit = the button's wire number).
    held_buttons: u8,
    quiet_after: Duration,
    reconnecting: bool,
    pointer: PointerReceiver,
    out: Outbox<ViewerSessionEvent>,
}

impl ViewerSession {
    /// The channels are open at `now`; the first ping goes out at once.
    pub fn new(config: ViewerSessionConfig, now: Duration) -> Self {
        Self {
            liveness: Liveness::new(now, config.peer_timeout),
            stats: Every::new(now, now + config.stats_interval, config.stats_interval),
            stream: None,
            clock: ClockSync::default(),
            nonce: 0,
            reported: (0, 0),
            bytes: 0,
            decoded: Decoded::default(),
            keyframe_requests: 0,
            meter: ReceiveMeter::new(),
            losses: LossList::new(),
            ping_interval: config.ping_interval,
            idle_ping_interval: config.idle_ping_interval,
            last_ping: None,
            last_active: now,
            held_keys: Vec::new(),
            held_buttons: 0,
            feedback: Every::new(
                now,
                now + config.feedback_interval,
                config.feedback_interval,
            ),
            quiet_after: config.quiet_after,
            reconnecting: false,
            pointer: PointerReceiver::default(),
            out: Outbox::new(),
        }
    }

    // Getters.

    /// The stream being shown, once the target started one.
    pub fn stream(&self) -> Option<u16> {
        self.stream
    }

    /// The latest round trip to the target.
    pub fn rtt(&self) -> Option<Duration> {
        self.clock.rtt()
    }

    /// Target clock minus ours, once a pong has come back.
    pub fn clock_offset_us(&self) -> Option<i64> {
        self.clock.offset_us()
    }

    /// Video bytes received in the session.
    pub fn bytes_received(&self) -> u64 {
        self.bytes
    }

    /// Why the session ended, once it has.
    pub fn ended(&self) -> Option<&SessionEnd> {
        self.out.end()
    }

    // Inputs.

    /// A message arrived from the target on `channel` at `now`. Video is only counted here
    /// (the driver reassembles and decodes it); malformed control bytes are logged and
    /// refused, never fatal.
    pub fn handle_message(&mut self, now: Duration, channel: Channel, data: &[u8]) {
        if !self.out.is_open() {
            return;
        }
        self.liveness.heard(now);
        if self.reconnecting {
            self.reconnecting = false;
            self.out.event(ViewerSessionEvent::Reconnected);
        }
        match channel {
            Channel::Video if !crate::wire::is_video_chunk(data) => {
                // A restart announced ahead of its chunks (the copy on the control channel
                // that follows names the same stream and changes nothing), or the pointer.
                self.handle_control(now, data);
            }
            Channel::Video => {
                self.last_active = now;
                self.bytes += data.len() as u64;
                self.meter.handle_video(now, data);
                if let Some((seq, _)) = video_stamp(data) {
                    self.losses.handle_seq(now, seq, is_resent(data));
                }
            }
            Channel::Control => self.handle_control(now, data),
            Channel::Input => tracing::debug!("ignored input from the target"),
        }
    }

    fn handle_control(&mut self, now: Duration, data: &[u8]) {
        match decode_control(data) {
            Ok(ControlMessage::StreamStart { stream, .. })
                if self
                    .stream
                    .is_some_and(|current| !is_newer(stream, current)) =>
            {
                // A restart comes on both channels; the slower copy, or an older stream's
                // announcement overtaken by a newer one, changes nothing.
                tracing::trace!(stream, "stream already announced");
            }
            Ok(ControlMessage::StreamStart {
                stream,
                width,
                height,
                color,
                tops,
            }) => match BandLayout::from_tops(u32::from(width), u32::from(height), &tops) {
                Ok(layout) => {
                    self.stream = Some(stream);
                    self.out.event(ViewerSessionEvent::StreamStarted {
                        stream,
                        layout,
                        color,
                    });
                }
                Err(e) => self.finish(SessionEnd::ProtocolViolation(format!(
                    "the target sent an impossible stream: {e}"
                ))),
            },
            Ok(ControlMessage::Pong {
                echo_us, target_us, ..
            }) => {
                let before = self.clock.offset_us();
                self.clock.handle_pong(echo_us, target_us, micros(now));
                if let Some(o) = self.clock.offset_us().filter(|o| Some(*o) != before) {
                    self.out.event(ViewerSessionEvent::ClockOffset(o));
                }
            }
            Ok(ControlMessage::Permissions { control }) => {
                self.out.event(ViewerSessionEvent::Permissions { control });
            }
            Ok(ControlMessage::GrantAnswer {
                id,
                approved,
                detail,
            }) => {
                self.out.event(ViewerSessionEvent::GrantAnswered {
                    id,
                    approved,
                    detail,
                });
            }
            Ok(ControlMessage::CursorShape(shape)) => {
                if let Some(c) = self.pointer.handle_shape(shape) {
                    self.out.event(ViewerSessionEvent::Cursor(c));
                }
            }
            Ok(ControlMessage::CursorPosition(position)) => {
                if let Some(c) = self.pointer.handle_position(position) {
                    self.out.event(ViewerSessionEvent::Cursor(c));
                }
            }
            Ok(ControlMessage::Bye { reason, detail }) => {
                self.finish(SessionEnd::PeerBye { reason, detail });
            }
            Ok(other) => tracing::debug!(?other, "ignored control message"),
            Err(e) => tracing::warn!(error = %e, "malformed control message from the target"),
        }
    }

    /// The decoder's totals: frames decoded so far and the session's latency quantiles.
    pub fn handle_decoded(
        &mut self,
        frames: u64,
        latency_p50: Option<Duration>,
        latency_p99: Option<Duration>,
    ) {
        self.decoded = Decoded {
            frames,
            latency_p50,
            latency_p99,
        };
    }

    /// Time passed: ping, report, or end a silent session.
    pub fn handle_timeout(&mut self, now: Duration) {
        if !self.out.is_open() {
            return;
        }
        if let Some(silent) = self.liveness.timed_out(now) {
            self.finish(SessionEnd::PeerTimeout(silent));
            return;
        }
        if !self.reconnecting && now >= self.quiet_due() {
            self.reconnecting = true;
            self.out.event(ViewerSessionEvent::Reconnecting);
        }
        if self.feedback.due(now).is_some() {
            if let Some(mut fb) = self.meter.take(now) {
                fb.rtt_us = self
                    .clock
                    .rtt()
                    .map_or(0, |r| r.as_micros().clamp(1, u128::from(u32::MAX)) as u32);
                // On the video channel, unordered: see `AgentSession::handle_message`.
                self.out
                    .send_on(Channel::Video, &ControlMessage::Feedback(fb));
            }
        }
        self.ask_again(now);
        if now >= self.ping_due() {
            self.last_ping = Some(now);
            self.nonce = self.nonce.wrapping_add(1);
            let ping = ControlMessage::Ping {
                nonce: self.nonce,
                sent_us: micros(now),
            };
            if self.reconnecting {
                // The next ping through is what tells the target the link is back: SCTP
                // backs its retransmissions off to 4, 8, 16 s during an outage. Unordered
                // and short-lived, a lost one holds up nothing and leaves SCTP's queue.
                self.out.send_on(Channel::Video, &ping);
            } else {
                self.send_control(ping);
            }
        }
        if let Some(period) = self.stats.due(now) {
            let ((f0, b0), secs) = (self.reported, period.as_secs_f64().max(1e-6));
            let frames = self.decoded.frames;
            let stats = ViewerStats {
                fps: frames.saturating_sub(f0) as f64 / secs,
                kbps: self.bytes.saturating_sub(b0) as f64 * 8.0 / 1000.0 / secs,
                rtt: self.clock.rtt(),
                latency_p50: self.decoded.latency_p50,
                latency_p99: self.decoded.latency_p99,
                frames_decoded: frames,
                bytes_received: self.bytes,
                keyframe_requests: self.keyframe_requests,
                clock_offset_us: self.clock.offset_us(),
            };
            let us = |d: Option<Duration>| {
                d.map_or(0, |d| d.as_micros().min(u128::from(u32::MAX)) as u32)
            };
            // Nothing decoded and nothing received: nothing to report, and an idle session
            // should cost nothing on the wire.
            if frames > f0 || self.bytes > b0 {
                self.send_control(ControlMessage::ReceiverReport {
                    frames: frames.saturating_sub(f0).min(u64::from(u32::MAX)) as u32,
                    latency_p50_us: us(stats.latency_p50),
                    latency_p99_us: us(stats.latency_p99),
                    keyframe_requests: self.keyframe_requests,
                });
            }
            self.out.event(ViewerSessionEvent::Stats(stats));
            self.reported = (frames, self.bytes);
        }
    }

    // Mutators.

    /// Ask the target for keyframes of these bands of `stream` (bit i = band i).
    pub fn request_keyframe(&mut self, stream: u16, bands: u32) {
        if self.out.is_open() {
            self.keyframe_requests += 1;
            self.send_control(ControlMessage::KeyframeRequest { stream, bands });
        }
    }

    /// Ask for a keyframe of every band of the current stream (none before it started).
    pub fn request_keyframe_all(&mut self) {
        if let Some(s) = self.stream {
            self.request_keyframe(s, u32::MAX);
        }
    }

    /// Active: video arrived or input went out lately, or a key or button is held down
    /// (the target must learn of a drop soon, to release it).
    /// While reconnecting it stays active too: the first ping through tells the target the
    /// link is back.
    fn active(&self, now: Duration) -> bool {
        now < self.last_active + ACTIVE_FOR
            || !self.held_keys.is_empty()
            || self.held_buttons != 0
            || self.reconnecting
    }

    /// When the next ping is due: a second after the last while active, ten while idle
    /// (activity judged at the moment it would go), `RECONNECT_PING` while reconnecting.
    fn ping_due(&self) -> Duration {
        let Some(last) = self.last_ping else {
            return Duration::ZERO;
        };
        if self.reconnecting {
            return last + RECONNECT_PING;
        }
        let soon = last + self.ping_interval;
        if self.active(soon) {
            soon
        } else {
            last + self.idle_ping_interval
        }
    }

    /// When the silence since the target was last heard means the link is down: sooner
    /// while active, later while idle, when the target only answers the slow heartbeat.
    fn quiet_due(&self) -> Duration {
        self.liveness.quiet_due(
            self.quiet_after,
            self.quiet_after + self.idle_ping_interval,
            |t| self.active(t),
        )
    }

    /// Send a keyboard or mouse event at `now`, stamped with it: the target refuses a press
    /// that reaches it much later than the viewer's messages usually do.
    pub fn send_input(&mut self, now: Duration, event: &InputEvent) {
        // Back from idle, the heartbeat speeds up at once (the next ping is due a second
        // after the last), so a drop is seen soon.
        self.last_active = self.last_active.max(now);
        match *event {
            InputEvent::Key { key, down: true }
                if !self.held_keys.contains(&key) && self.held_keys.len() < MAX_HELD_KEYS =>
            {
                self.held_keys.push(key)
            }
            // Already held, or as many held as the target would track.
            InputEvent::Key { down: true, .. } => {}
            InputEvent::Key { key, down: false } => self.held_keys.retain(|k| *k != key),
            InputEvent::Button { button, down } => {
                let bit = 1u8 << button.wire();
                if down {
                    self.held_buttons |= bit;
                } else {
                    self.held_buttons &= !bit;
                }
            }
            _ => {}
        }
        let mut data = BytesMut::with_capacity(16);
        // 0 means "unknown" on the wire; the first microsecond is not worth a special case.
        event.encode_at(&mut data, (micros(now) as u32).max(1));
        self.out.send(Transmit {
            channel: Channel::Input,
            data,
        });
    }

    /// Ask for unattended access (the request as JSON), answered by
    /// [`ViewerSessionEvent::GrantAnswered`] with the same `id`.
    pub fn request_grant(&mut self, id: u32, request: String) {
        self.send_control(ControlMessage::GrantRequest { id, request });
    }

    /// End the session from this side, saying goodbye with `detail`.
    pub fn close(&mut self, detail: &str) {
        if self.out.is_open() {
            self.send_control(ControlMessage::Bye {
                reason: ByeReason::Ended,
                detail: detail.into(),
            });
            self.finish(SessionEnd::Local);
        }
    }

    /// Ask the target to send again the video messages that are missing now.
    fn ask_again(&mut self, now: Duration) {
        let due = self.losses.poll_nack(now, self.clock.rtt());
        let mut rest = &due[..];
        while !rest.is_empty() {
            let ranges = nack_ranges(rest.iter().copied());
            let covered: usize = ranges.iter().map(|r| r.seqs().count()).sum();
            rest = &rest[covered.min(rest.len())..];
            // On the video channel: unordered, so a request lost on the way holds up neither
            // the next one nor the control messages (an ordered channel would wait for its
            // retransmission, a second or more in SCTP), and it is asked again anyway.
            self.out
                .send_on(Channel::Video, &ControlMessage::Nack(ranges));
        }
    }

    /// Video messages asked for again so far.
    pub fn nacked(&self) -> u64 {
        self.losses.asked()
    }

    fn send_control(&mut self, msg: ControlMessage) {
        self.out.send_control(&msg);
    }

    fn finish(&mut self, end: SessionEnd) {
        self.out.finish(end, ViewerSessionEvent::Ended);
    }

    // Outputs.

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll_transmit()
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<ViewerSessionEvent> {
        self.out.poll_event()
    }

    /// When [`ViewerSession::handle_timeout`] must next be called; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.out.is_open().then(|| {
            let mut next = self
                .liveness
                .deadline()
                .min(self.stats.next())
                .min(self.ping_due());
            if !self.reconnecting {
                next = next.min(self.quiet_due());
            }
            if self.meter.has_data() {
                next = next.min(self.feedback.next());
            }
            if let Some(t) = self.losses.next_due(self.clock.rtt()) {
                next = next.min(t);
            }
            next
        })
    }
}

/// Whether stream generation `a` comes after `b`, across the u16 wrap (serial-number
/// arithmetic: the later half of the circle is "newer").
fn is_newer(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}
