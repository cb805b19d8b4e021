//! The target's side of an established session, sans-IO: what to answer, what to inject,
//! when the viewer has gone quiet for too long.
//!
//! The driver feeds it every message that arrives ([`AgentSession::handle_message`]), the
//! user's decisions ([`AgentSession::set_control`]) and the time
//! ([`AgentSession::handle_timeout`] at [`AgentSession::poll_timeout`]); it sends what
//! [`AgentSession::poll_transmit`] returns and acts on [`AgentSession::poll_event`]. Time is a
//! [`Duration`] since the session's epoch, the same clock the video's capture times use.

use std::time::Duration;

use deskwire_capture::PointerState;
use deskwire_engine::{BandLayout, BandSpec, ColorSpace};

use crate::clock::Lateness;
use crate::input::{InjectOp, InputEvent, InputGate, InputKind, InputRefusal};
use crate::outbox::{micros, Every, Liveness, Outbox, SessionEnd, Transmit, ACTIVE_FOR};
use crate::pointer::PointerSender;
use crate::rate::{RateConfig, RateController, RateTarget};
use crate::refresh::{in_flight_limit, Refresh};
use crate::stats::AgentStats;
use crate::wire::{decode_control, decode_input_at, ByeReason, Channel, ControlMessage, Feedback};

/// The settings of [`AgentSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSessionConfig {
    /// The session ends when nothing was heard from the viewer for this long.
    pub peer_timeout: Duration,
    /// How often [`AgentSessionEvent::Stats`] is reported.
    pub stats_interval: Duration,
    /// Nothing is ever injected, whatever control says.
    pub view_only: bool,
    /// After this long without a word from the viewer the link counts as down: what the
    /// viewer held is released, and the session waits (up to `peer_timeout`) for it back.
    pub quiet_after: Duration,
    /// The same while idle (no video sent, no input received for 3 s), when the viewer
    /// only sends its slow heartbeat: longer than the viewer's `idle_ping_interval`.
    pub idle_quiet_after: Duration,
    /// The congestion controller's bounds.
    pub rate: RateConfig,
}

impl Default for AgentSessionConfig {
    fn default() -> Self {
        Self {
            peer_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(1),
            view_only: false,
            quiet_after: Duration::from_millis(2500),
            idle_quiet_after: Duration::from_millis(22_500),
            rate: RateConfig::default(),
        }
    }
}

/// The stream the target sends: told to the viewer first, so it can set up its decoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's generation, carried by its video chunks.
    pub stream: u16,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Colour matrix and range.
    pub color: ColorSpace,
    /// First row of each band.
    pub tops: Vec<u32>,
}

/// What the target's driver has to act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AgentSessionEvent {
    /// Aim the encoder, the frame rate and the pacer at this: the path's estimate moved.
    /// Raised once at the start too.
    RateChanged(RateTarget),
    /// The stream restarts with another band layout ([`RateTarget::compact`]): cut frames
    /// into `bands` bands from now on and send them as stream `stream`, starting with a
    /// keyframe of every band. The viewer has been told.
    StreamRestarted {
        /// The new stream's generation, for its video chunks.
        stream: u16,
        /// Its band count.
        bands: u32,
    },
    /// Nothing heard from the viewer for `quiet_after`: what it held was released (a
    /// [`AgentSessionEvent::Release`] comes first) and its input waits for the link.
    LinkDown,
    /// The viewer is heard again after [`AgentSessionEvent::LinkDown`]; every band is
    /// refreshed.
    LinkUp,
    /// Encode these bands (bit i = band i) as keyframes. Requests are coalesced and spread
    /// over a few frames, and a band is not refreshed again before its last refresh
    /// could have arrived.
    KeyframeRequested {
        /// Band bitmask, limited to the stream's bands.
        bands: u32,
    },
    /// The viewer is missing these video messages (transport sequence numbers, at most
    /// [`crate::wire::MAX_NACK_RANGES`] x 17 per event): send again what is still held
    /// ([`crate::pacer::VideoSender::handle_nack`]).
    ResendVideo(Vec<u32>),
    /// Inject this; the gate allowed it.
    Inject(InjectOp),
    /// Release these keys and buttons the viewer held (control revoked or the session
    /// ended). Never dropped, even when the injector is behind.
    Release(Vec<InjectOp>),
    /// An input event was refused.
    InputRefused {
        /// Its kind.
        kind: InputKind,
        /// Why.
        reason: InputRefusal,
    },
    /// The technician asks for unattended access (the request as JSON): answer with
    /// [`AgentSession::send_control`] and a `GrantAnswer`.
    GrantRequested {
        /// The request's number.
        id: u32,
        /// The request, JSON.
        request: String,
    },
    /// Periodic statistics.
    Stats(AgentStats),
    /// The session is over; the driver stops sending video and closes the connection after
    /// sending what [`AgentSession::poll_transmit`] still returns.
    Ended(SessionEnd),
}

/// Totals the video sender counts, fed in with [`AgentSession::handle_video_sent`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sent {
    frames: u64,
    bytes: u64,
    bands_dropped: u64,
}

/// The target's session core. See the module documentation.
#[derive(Debug)]
pub struct AgentSession {
    config: AgentSessionConfig,
    stream: u16,
    bands: usize,
    /// The stream as configured, for restarts.
    info: StreamInfo,
    gate: InputGate,
    control: bool,
    liveness: Liveness,
    stats: Every,
    /// Totals at the last stats report.
    reported: Sent,
    sent: Sent,
    viewer_latency: Option<(u32, u32)>,
    rate: RateController,
    /// The target the driver was last told.
    told: RateTarget,
    /// The viewer's latest round trip, from its feedback.
    rtt: Option<Duration>,
    refresh: Refresh,
    link_down: bool,
    /// Frames sent when activity was last noted.
    active_frames: u64,
    /// The last video sent or input received.
    last_active: Duration,
    lateness: Lateness,
    pointer: PointerSender,
    out: Outbox<AgentSessionEvent>,
}

impl AgentSession {
    /// The channels are open at `now`: the viewer is told the stream and its permissions.
    pub fn new(
        config: AgentSessionConfig,
        stream: StreamInfo,
        control: bool,
        now: Duration,
    ) -> Self {
        let control = control && !config.view_only;
        let mut gate = InputGate::new(stream.width, stream.height, control);
        let bands = stream.tops.len();
        gate.set_established(true);
        let rate = RateController::new(config.rate);
        let told = rate.target();
        let mut s = Self {
            liveness: Liveness::new(now, config.peer_timeout),
            stats: Every::new(now, now + config.stats_interval, config.stats_interval),
            rate,
            config,
            stream: stream.stream,
            bands,
            info: stream,
            gate,
            control,
            reported: Sent::default(),
            sent: Sent::default(),
            viewer_latency: None,
            told,
            rtt: None,
            // The stream's first frame keys every band (see `Refresh::restarted`).
            refresh: Refresh::restarted(bands, now),
            link_down: false,
            active_frames: 0,
            last_active: now,
            lateness: Lateness::new(),
            pointer: PointerSender::default(),
            out: Outbox::new(),
        };
        s.rate.hold_delay_cuts(now);
        s.out.event(AgentSessionEvent::RateChanged(s.rate.target()));
        s.send_control(s.stream_start(s.info.tops.clone()));
        s.send_control(ControlMessage::Permissions { control });
        s
    }

    // Getters.

    /// Whether the viewer's input is injected now.
    pub fn control(&self) -> bool {
        self.control
    }

    /// Why the session ended, once it has.
    pub fn ended(&self) -> Option<&SessionEnd> {
        self.out.end()
    }

    /// What the sender should aim at now.
    pub fn rate_target(&self) -> RateTarget {
        self.rate.target()
    }

    /// Start a new stream in the layout `target` asks for (compact: a band per 1080 rows;
    /// fewer bands: four per 1080 rows; else the configured one) and tell the viewer. A
    /// smaller layout that is not smaller than the configured one changes nothing.
    fn restart_stream(&mut self, now: Duration, target: &RateTarget) {
        let info = &self.info;
        let per_1080 = if target.compact {
            Some(1)
        } else if target.fewer_bands {
            Some(4)
        } else {
            None
        };
        let tops = match per_1080 {
            Some(n) => {
                let count = info.height.div_ceil(1080).max(1) * n;
                match BandLayout::new(info.width, info.height, BandSpec::Count(count)) {
                    Ok(l) => (0..l.count()).map(|i| l.top(i)).collect(),
                    Err(_) => return,
                }
            }
            None => info.tops.clone(),
        };
        if tops.len() == self.bands || (per_1080.is_some() && tops.len() >= info.tops.len()) {
            return;
        }
        // Generation 0 never names a stream: a viewer's "no stream yet".
        self.stream = self.stream.wrapping_add(1).max(1);
        self.bands = tops.len();
        self.refresh = Refresh::restarted(self.bands, now);
        tracing::debug!(stream = self.stream, bands = self.bands, "stream restarts");
        let start = self.stream_start(tops);
        self.send_control(start.clone());
        // Again on the video channel, where it leaves ahead of the new stream's chunks: on
        // the control channel it waits while any video is queued (see
        // `wire::is_video_chunk`), and a slow link had the viewer hold the new stream's
        // chunks for seconds, unannounced.
        self.out.send_on(Channel::Video, &start);
        self.out.event(AgentSessionEvent::StreamRestarted {
            stream: self.stream,
            bands: self.bands as u32,
        });
    }

    /// The announcement of the current stream, cut as `tops`.
    fn stream_start(&self, tops: Vec<u32>) -> ControlMessage {
        ControlMessage::StreamStart {
            stream: self.stream,
            width: self.info.width.min(u32::from(u16::MAX)) as u16,
            height: self.info.height.min(u32::from(u16::MAX)) as u16,
            color: self.info.color,
            tops,
        }
    }

    /// How long video may queue before the sender stops taking frames: a round trip and a
    /// frame, within 40..=250 ms.
    pub fn queue_budget(&self) -> Duration {
        let frame = Duration::from_secs(1) / self.rate.target().max_fps.max(1);
        (self.rtt.unwrap_or(Duration::from_millis(50)) + frame)
            .clamp(Duration::from_millis(40), Duration::from_millis(250))
    }

    /// When the silence since the viewer was last heard means the link is down: sooner
    /// while active, later while idle (activity judged at that moment).
    fn quiet_due(&self) -> Duration {
        // Video sent is noted at each statistics wake, so activity may be that much stale.
        // Held keys keep the session active: they must be released soon after a drop.
        let active_until = self.last_active + ACTIVE_FOR + self.config.stats_interval;
        let holds = self.gate.holds_any();
        self.liveness
            .quiet_due(self.config.quiet_after, self.config.idle_quiet_after, |t| {
                t < active_until || holds
            })
    }

    /// The viewer's latest round trip, from its feedback.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Whether the link is down (nothing heard for `quiet_after`).
    pub fn link_down(&self) -> bool {
        self.link_down
    }

    // Inputs.

    /// A message arrived from the viewer on `channel` at `now`. Malformed bytes are logged
    /// and refused; they never end the session or panic.
    pub fn handle_message(&mut self, now: Duration, channel: Channel, data: &[u8]) {
        if !self.out.is_open() {
            return;
        }
        self.liveness.heard(now);
        if self.link_down {
            self.link_down = false;
            self.gate.set_established(true);
            self.out.event(AgentSessionEvent::LinkUp);
            // What was on the way when the link went down is gone: refresh every band, aimed
            // at what the transport's restarting window carries, so the first ones are small.
            self.rate.restart(now, self.rtt);
            self.tell_rate();
            self.refresh.request(u32::MAX, now);
            self.pointer.link_up(now);
        }
        match channel {
            Channel::Control => self.handle_control(now, data),
            Channel::Input => self.handle_input(now, data),
            // The viewer's requests to send video again and its feedback come this way: on the
            // ordered control channel one lost message held up every later one until SCTP
            // resent it (a second or more), and the rate control went blind meanwhile. A
            // lost one here is simply replaced by the next.
            Channel::Video => match decode_control(data) {
                Ok(ControlMessage::Nack(ranges)) => {
                    let seqs = ranges.iter().flat_map(|r| r.seqs()).collect();
                    self.out.event(AgentSessionEvent::ResendVideo(seqs));
                }
                Ok(ControlMessage::Feedback(fb)) => self.handle_feedback(now, fb),
                // The viewer pings this way while it is reconnecting.
                Ok(ControlMessage::Ping { .. }) => self.handle_control(now, data),
                Ok(other) => tracing::debug!(?other, "ignored on the video channel"),
                Err(e) => tracing::debug!(error = %e, "malformed message on the video channel"),
            },
        }
    }

    fn handle_control(&mut self, now: Duration, data: &[u8]) {
        match decode_control(data) {
            Ok(ControlMessage::Ping { nonce, sent_us }) => {
                self.lateness.handle(now, sent_us as u32);
                self.send_control(ControlMessage::Pong {
                    nonce,
                    echo_us: sent_us,
                    target_us: micros(now),
                })
            }
            Ok(ControlMessage::KeyframeRequest { stream, bands }) if stream == self.stream => {
                let mask = crate::video::all_bands(self.bands);
                if bands & mask != 0 {
                    self.refresh.request(bands & mask, now);
                    self.poll_refresh(now);
                }
            }
            Ok(ControlMessage::Feedback(fb)) => self.handle_feedback(now, fb),
            Ok(ControlMessage::ReceiverReport {
                latency_p50_us,
                latency_p99_us,
                ..
            }) => {
                self.viewer_latency = Some((latency_p50_us, latency_p99_us));
            }
            Ok(ControlMessage::Bye { reason, detail }) => {
                self.finish(SessionEnd::PeerBye { reason, detail });
            }
            Ok(ControlMessage::GrantRequest { id, request }) => {
                self.out
                    .event(AgentSessionEvent::GrantRequested { id, request });
            }
            Ok(other) => tracing::debug!(?other, "ignored control message"),
            Err(e) => tracing::warn!(error = %e, "malformed control message from the viewer"),
        }
    }

    /// The viewer's account of what the video channel delivered: the rate control's input.
    fn handle_feedback(&mut self, now: Duration, fb: Feedback) {
        if fb.rtt_us > 0 {
            self.rtt = Some(Duration::from_micros(u64::from(fb.rtt_us.min(10_000_000))));
        }
        match self.rate.handle_feedback(now, &fb, self.rtt) {
            Ok(_) => {
                if let Some((before, after)) = self.tell_rate() {
                    if after.compact != before.compact || after.fewer_bands != before.fewer_bands {
                        self.restart_stream(now, &after);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "refused feedback from the viewer"),
        }
    }

    /// Tell the driver the rate controller's target if it moved enough to matter; the
    /// target told before and the new one, if so.
    fn tell_rate(&mut self) -> Option<(RateTarget, RateTarget)> {
        let after = self.rate.target();
        if !moved(&self.told, &after) {
            return None;
        }
        let before = std::mem::replace(&mut self.told, after);
        self.out.event(AgentSessionEvent::RateChanged(after));
        Some((before, after))
    }

    fn handle_input(&mut self, now: Duration, data: &[u8]) {
        self.last_active = self.last_active.max(now);
        let (event, sent_us) = match decode_input_at(data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "malformed input message from the viewer");
                self.out.event(AgentSessionEvent::InputRefused {
                    kind: InputKind::Text,
                    reason: InputRefusal::Malformed,
                });
                return;
            }
        };
        let kind = InputKind::from(&event);
        if sent_us != 0 && self.lateness.handle(now, sent_us) > MAX_INPUT_LATENESS && acts(&event) {
            self.out.event(AgentSessionEvent::InputRefused {
                kind,
                reason: InputRefusal::Stale,
            });
            return;
        }
        let event = match self.gate.handle_event(event) {
            Ok(_) if self.config.view_only => AgentSessionEvent::InputRefused {
                kind,
                reason: InputRefusal::ViewOnly,
            },
            Ok(op) => AgentSessionEvent::Inject(op),
            Err(reason) => AgentSessionEvent::InputRefused { kind, reason },
        };
        self.out.event(event);
    }

    /// The video sender's totals so far (frames, bytes, bands dropped because the link was
    /// not keeping up), for the statistics.
    pub fn handle_video_sent(&mut self, frames: u64, bytes: u64, bands_dropped: u64) {
        self.sent = Sent {
            frames,
            bytes,
            bands_dropped,
        };
    }

    /// What the encoder lately produced: `wide` when most frames changed most of the
    /// screen (scrolling, video), which a slow path carries better in fewer bands.
    pub fn handle_content(&mut self, wide: bool) {
        self.rate.set_wide(wide);
    }

    /// The pointer as the screen shows it now (moved, or a new shape): the viewer is told
    /// its shape on the control channel if it may lack it, and its position on the video
    /// channel, where it does not wait behind ordered messages.
    pub fn handle_pointer(&mut self, now: Duration, state: &PointerState) {
        if !self.out.is_open() {
            return;
        }
        let (shape, position) = self.pointer.handle(now, state);
        if let Some(shape) = shape {
            self.send_control(ControlMessage::CursorShape(shape));
        }
        self.out
            .send_on(Channel::Video, &ControlMessage::CursorPosition(position));
    }

    /// The video sender dropped these bands (bit i = band i): they need a keyframe,
    /// within the refresh budget.
    pub fn handle_video_lost(&mut self, now: Duration, bands: u32) {
        if self.out.is_open() && bands != 0 {
            self.refresh.dropped(bands);
            self.refresh.request(bands, now);
            self.poll_refresh(now);
        }
    }

    /// The video sender let the last piece of these bands' keyframes out: a refresh of
    /// them can reach the viewer from now on (bit i = band i).
    pub fn handle_keyframes_sent(&mut self, now: Duration, bands: u32) {
        if bands != 0 {
            self.refresh.sent(bands, now);
        }
    }

    fn poll_refresh(&mut self, now: Duration) {
        let holdoff = (self.rtt.unwrap_or(Duration::from_millis(100)) + Duration::from_millis(100))
            .max(Duration::from_millis(200));
        // Batches of keyframes 20 ms apart at 8 Mbit/s and above, further apart below.
        let estimate = self.rate.estimate_bps().max(1);
        let step = Duration::from_millis(20).mul_f64((8_000_000.0 / estimate as f64).max(1.0));
        let lost_after = in_flight_limit(self.rtt);
        if let Some(bands) = self.refresh.poll(now, holdoff, step, lost_after) {
            self.out
                .event(AgentSessionEvent::KeyframeRequested { bands });
        }
    }

    /// Time passed: end a silent session, report statistics when due.
    pub fn handle_timeout(&mut self, now: Duration) {
        if !self.out.is_open() {
            return;
        }
        if let Some(silent) = self.liveness.timed_out(now) {
            self.finish(SessionEnd::PeerTimeout(silent));
            return;
        }
        if self.sent.frames > self.active_frames {
            self.active_frames = self.sent.frames;
            self.last_active = self.last_active.max(now);
        }
        if !self.link_down && now >= self.quiet_due() {
            self.link_down = true;
            let releases = self.gate.set_established(false);
            if !releases.is_empty() {
                self.out.event(AgentSessionEvent::Release(releases));
            }
            self.out.event(AgentSessionEvent::LinkDown);
        }
        self.poll_refresh(now);
        if let Some(position) = self.pointer.poll_resend(now) {
            self.out
                .send_on(Channel::Video, &ControlMessage::CursorPosition(position));
        }
        if let Some(period) = self.stats.due(now) {
            let (s0, secs) = (self.reported, period.as_secs_f64().max(1e-6));
            let latency = |us: u32| Duration::from_micros(u64::from(us));
            self.out.event(AgentSessionEvent::Stats(AgentStats {
                fps: (self.sent.frames - s0.frames.min(self.sent.frames)) as f64 / secs,
                kbps: (self.sent.bytes - s0.bytes.min(self.sent.bytes)) as f64 * 8.0
                    / 1000.0
                    / secs,
                frames_sent: self.sent.frames,
                bytes_sent: self.sent.bytes,
                bands_dropped: self.sent.bands_dropped,
                viewer_latency_p50: self.viewer_latency.map(|l| latency(l.0)),
                viewer_latency_p99: self.viewer_latency.map(|l| latency(l.1)),
            }));
            self.reported = self.sent;
        }
    }

    // Mutators.

    /// The user grants or revokes control: revoking releases everything the viewer holds.
    /// The viewer is told either way.
    pub fn set_control(&mut self, control: bool) {
        if !self.out.is_open() {
            return;
        }
        self.control = control && !self.config.view_only;
        let releases = self.gate.set_control(self.control);
        if !releases.is_empty() {
            self.out.event(AgentSessionEvent::Release(releases));
        }
        self.send_control(ControlMessage::Permissions {
            control: self.control,
        });
    }

    /// Queue a control message for the viewer (a grant answer, for one).
    pub fn send_control(&mut self, msg: ControlMessage) {
        self.out.send_control(&msg);
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

    fn finish(&mut self, end: SessionEnd) {
        let releases = self.gate.set_established(false);
        if !releases.is_empty() {
            self.out.event(AgentSessionEvent::Release(releases));
        }
        self.out.finish(end, AgentSessionEvent::Ended);
    }

    // Outputs.

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll_transmit()
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<AgentSessionEvent> {
        self.out.poll_event()
    }

    /// When [`AgentSession::handle_timeout`] must next be called; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.out.is_open().then(|| {
            let quiet = self.quiet_due();
            let mut next = self.liveness.deadline().min(self.stats.next());
            if !self.link_down {
                next = next.min(quiet);
            }
            let next = self.pointer.next().map_or(next, |p| next.min(p));
            self.refresh.next().map_or(next, |r| next.min(r))
        })
    }
}

/// Input later than this behind the viewer's fastest recent message is not acted on.
const MAX_INPUT_LATENESS: Duration = Duration::from_secs(1);

/// Whether an event does something (a press, a move, text), as opposed to releasing what is
/// held: a late release is still wanted.
fn acts(event: &InputEvent) -> bool {
    !matches!(
        event,
        InputEvent::Key { down: false, .. } | InputEvent::Button { down: false, .. }
    )
}

/// Whether the target moved enough to retune the encoder: 5 % of rate, or another frame
/// rate.
fn moved(a: &RateTarget, b: &RateTarget) -> bool {
    a.max_fps != b.max_fps
        || a.max_qp != b.max_qp
        || a.compact != b.compact
        || a.fewer_bands != b.fewer_bands
        || a.estimate_bps.abs_diff(b.estimate_bps) * 20 > a.estimate_bps
}
