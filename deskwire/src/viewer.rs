//! The technician's end: gets a code, answers the target's offer, decodes and shows.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::Receiver;
use deskwire_capture::Frame;
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

mod pairing;

use deskwire_engine::codec::{BandDecoderSet, BandId, BandLayout};
use deskwire_engine::convert::ColorSpace;
use deskwire_engine::stats::Histogram;
use deskwire_session::input::InputEvent;
use deskwire_session::pairing::{ViewerPairing, ViewerPairingEvent};
use deskwire_session::video::{ChunkFate, Reassembler};
use deskwire_session::wire::{self, Channel};
use deskwire_session::{ViewerSession, ViewerSessionConfig, ViewerSessionEvent};

use crate::config::{ViewerConfig, ViewerRoute};
use crate::driver::{ended_by, send_queued, CoreTimer};
use crate::grants::GrantAnswerError;
use crate::signalling::Signalling;
use crate::transport::{self, Channels, NetEvent, Pc};
use crate::{
    micros_since, spawn_net, DisconnectReason, Events, FrameInfo, RemoteCursor, SessionError,
    ViewerEvent,
};

enum Command {
    Input(InputEvent),
    KeyframeAll,
    RequestGrant(u32, String),
    Shutdown,
}

/// State shared between the handle, the network thread and the decode thread.
#[derive(Debug, Default)]
struct Shared {
    decoders: Mutex<Option<BandDecoderSet>>,
    latency_us: Histogram,
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Target clock minus ours, in microseconds; `i64::MIN` until known.
    offset_us: AtomicI64,
    /// Round trip to the target in microseconds; 0 until known.
    rtt_us: AtomicU64,
    /// The target's pointer, once it said where it is.
    cursor: Mutex<Option<RemoteCursor>>,
}

/// The viewer end of a session.
///
/// Asks the broker for a session and reports the connection code as
/// [`ViewerEvent::Code`]; once the target joins, answers its offer, decodes the video
/// on a `deskwire-decode` thread and sends input with [`Viewer::send_input`].
#[derive(Debug)]
pub struct Viewer {
    events: Receiver<ViewerEvent>,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    net: Option<JoinHandle<()>>,
    next_grant: std::sync::atomic::AtomicU32,
}

impl Viewer {
    /// Validate `config` and open a session at the broker.
    pub fn start(config: ViewerConfig) -> Result<Self, SessionError> {
        config.validate()?;
        let (events, rx) = Events::new();
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            offset_us: AtomicI64::new(i64::MIN),
            ..Shared::default()
        });
        let task_shared = shared.clone();
        let net = spawn_net(move |handle| async move {
            let mut task = ViewerTask {
                config,
                events: events.clone(),
                commands: cmd_rx,
                handle,
                shared: task_shared,
                epoch: Instant::now(),
            };
            let reason = task.run().await;
            tracing::info!(%reason, "viewer session ended");
            events.emit_important(ViewerEvent::Disconnected(reason));
        })?;
        Ok(Self {
            events: rx,
            commands,
            shared,
            net: Some(net),
            next_grant: std::sync::atomic::AtomicU32::new(1),
        })
    }

    /// Events, in order. After [`ViewerEvent::Disconnected`] no more follow.
    pub fn events(&self) -> &Receiver<ViewerEvent> {
        &self.events
    }

    /// Frames decoded and video bytes received so far, read now (the `Stats` event is only
    /// about once a second): for measuring over an exact window.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.shared.frames.load(Relaxed),
            self.shared.bytes.load(Relaxed),
        )
    }

    /// Send a keyboard or mouse event to the target (coordinates in the target's pixels).
    pub fn send_input(&self, event: InputEvent) -> Result<(), SessionError> {
        self.commands
            .send(Command::Input(event))
            .map_err(|_| SessionError::Ended)
    }

    /// Ask the target's user for unattended access; returns the request's number, which
    /// [`ViewerEvent::GrantAnswered`] repeats with the answer.
    pub fn request_unattended(
        &self,
        request: &deskwire_signal::grant::GrantRequest,
    ) -> Result<u32, SessionError> {
        // A request is plain data (no maps with non-string keys, no failing Serialize).
        let json = serde_json::to_string(request).expect("a grant request always serialises");
        let id = self
            .next_grant
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.commands
            .send(Command::RequestGrant(id, json))
            .map_err(|_| SessionError::Ended)?;
        Ok(id)
    }

    /// Ask the target for a keyframe of every band.
    pub fn request_keyframe(&self) -> Result<(), SessionError> {
        self.commands
            .send(Command::KeyframeAll)
            .map_err(|_| SessionError::Ended)
    }

    /// Look at the latest picture (BGRA), if a stream has started.
    pub fn with_frame<R>(&self, f: impl FnOnce(&Frame) -> R) -> Option<R> {
        let guard = self
            .shared
            .decoders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|d| f(d.canvas()))
    }

    /// The target's pointer, to draw on top of the picture ([`RemoteCursor::pixels`]);
    /// `None` until the target said where it is (a source that cannot tell never does).
    pub fn cursor(&self) -> Option<RemoteCursor> {
        self.shared
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Capture->decoded latency of every frame so far, in microseconds.
    pub fn latency_us(&self) -> &Histogram {
        &self.shared.latency_us
    }

    /// End the session, tell the peer, and join every thread.
    pub fn shutdown(mut self) -> Result<(), SessionError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), SessionError> {
        let _ = self.commands.send(Command::Shutdown);
        crate::join_net(&mut self.net)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

struct ViewerTask {
    config: ViewerConfig,
    events: Events<ViewerEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    handle: tokio::runtime::Handle,
    shared: Arc<Shared>,
    epoch: Instant,
}

/// What the network thread hands the decode thread, in arrival order.
enum DecodeInput {
    Start {
        stream: u16,
        layout: BandLayout,
        color: ColorSpace,
    },
    Chunk(BytesMut),
}

impl ViewerTask {
    async fn run(&mut self) -> DisconnectReason {
        let timeout = self.config.connect_timeout;
        let sig = match &self.config.route {
            ViewerRoute::Lan(target) => Signalling::connect_lan(target.addr, timeout).await,
            _ => Signalling::connect(&self.config.broker, timeout).await,
        };
        let mut sig = match sig {
            Ok(s) => s,
            Err(e) => return DisconnectReason::from(e),
        };
        // Build the peer connection (sockets, certificate: tens of milliseconds) while the
        // code is being read out, not after the target has joined.
        let (pc, net_tx, mut net_rx) =
            match transport::build_peer(&self.config.transport, &self.handle).await {
                Ok(p) => p,
                Err(e) => {
                    sig.close().await;
                    return DisconnectReason::from(e);
                }
            };
        let result = self.pair(&mut sig).await;
        let (mut core, offer, joined_at) = match result {
            Ok(v) => v,
            Err(r) => {
                sig.close().await;
                let _ = pc.close().await;
                return r;
            }
        };
        let result = self
            .answer(&pc, &net_tx, &mut net_rx, &mut sig, offer, &mut core)
            .await;
        sig.close().await;
        let reason = match result {
            Ok(channels) => {
                self.events.emit_important(ViewerEvent::Connected {
                    setup: joined_at.elapsed(),
                });
                self.view(&channels, &mut net_rx).await
            }
            Err(r) => r,
        };
        let _ = pc.close().await;
        reason
    }

    /// Answer the offer and wait for the target's three channels.
    async fn answer(
        &mut self,
        pc: &Pc,
        net_tx: &mpsc::UnboundedSender<NetEvent>,
        net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
        sig: &mut Signalling,
        offer: String,
        core: &mut ViewerPairing,
    ) -> Result<Channels, DisconnectReason> {
        let t = |what: &str, e: &dyn std::fmt::Display| {
            DisconnectReason::Transport(format!("{what}: {e}"))
        };
        tracing::debug!("offer received");
        // The video channel is not announced: this end opens its own (see
        // `transport::create_video_channel`).
        let video_dc = transport::create_video_channel(pc, &self.config.transport)
            .await
            .map_err(DisconnectReason::from)?;
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| t("the offer is not valid SDP", &e))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| t("cannot use the offer", &e))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| t("cannot answer", &e))?;
        pc.set_local_description(answer)
            .await
            .map_err(|e| t("cannot set the answer", &e))?;
        let mut backlog = Vec::new();
        let sdp = transport::gathered_sdp(pc, net_rx, &mut backlog, self.config.connect_timeout)
            .await
            .map_err(DisconnectReason::from)?;
        core.handle_local_answer(sdp);
        sig.send_all(|| core.poll_transmit())
            .await
            .map_err(DisconnectReason::from)?;

        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        transport::pump(
            &self.handle,
            Channel::Video,
            video_dc.clone(),
            net_tx.clone(),
        );
        // Input and control are announced in-band.
        let (mut input, mut control) = (None, None);
        let mut seen = 0;
        let mut pending: std::collections::VecDeque<NetEvent> = backlog.into();
        let mut listening = true;
        while seen < 2 {
            let ev = match pending.pop_front() {
                Some(ev) => Some(ev),
                None => tokio::select! {
                    ev = net_rx.recv() => ev,
                    // A target that refuses our answer (it failed its verification) says
                    // bye first: the attempt is over. Its leaving signalling is normal once
                    // its channels are open, which may be before ours are.
                    msg = sig.recv(), if listening => match msg {
                        Ok(msg) => {
                            // Once answered, the core keeps no deadline: `now` is unused.
                            core.handle_broker(Duration::ZERO, msg);
                            if let Some(ViewerPairingEvent::Ended(why)) = core.poll_event() {
                                return Err(pairing::pairing_end(why));
                            }
                            continue;
                        }
                        Err(_) => {
                            listening = false;
                            continue;
                        }
                    },
                    cmd = self.commands.recv() => {
                        if matches!(cmd, Some(Command::Shutdown) | None) {
                            return Err(DisconnectReason::Local);
                        }
                        continue;
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(DisconnectReason::Transport("the data channels did not open in time".into()));
                    }
                },
            };
            match ev {
                Some(NetEvent::Channel(dc)) => {
                    let label = dc.label().await.unwrap_or_default();
                    let Some(label) = Channel::from_label(&label) else {
                        tracing::warn!(label, "ignoring an unknown data channel");
                        continue;
                    };
                    match label {
                        Channel::Video => {
                            tracing::warn!("ignoring a video channel announced in-band");
                            continue;
                        }
                        Channel::Input => input = Some(dc.clone()),
                        Channel::Control => control = Some(dc.clone()),
                    }
                    seen += 1;
                    transport::pump(&self.handle, label, dc, net_tx.clone());
                }
                Some(NetEvent::State(RTCPeerConnectionState::Failed)) => {
                    return Err(DisconnectReason::Transport("ICE failed".into()))
                }
                Some(_) => {}
                None => {
                    return Err(DisconnectReason::Transport(
                        "the peer connection closed".into(),
                    ))
                }
            }
        }
        match (input, control) {
            (Some(input), Some(control)) => Ok(Channels {
                video: video_dc,
                input,
                control,
            }),
            _ => Err(DisconnectReason::Transport(
                "the target opened the wrong channels".into(),
            )),
        }
    }

    /// The established session: the session core keeps time, pings and reports; the
    /// decode thread turns video into pictures; input goes out as the application sends it.
    async fn view(
        &mut self,
        channels: &Channels,
        net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
    ) -> DisconnectReason {
        let (decode_tx, decode_rx) = crossbeam_channel::bounded::<DecodeInput>(1024);
        let (key_tx, mut key_rx) = mpsc::unbounded_channel::<(u16, u32)>();
        let decoder = match spawn_decoder(
            decode_rx,
            key_tx,
            self.shared.clone(),
            self.events.clone(),
            self.epoch,
            self.config.keyframe_retry,
        ) {
            Ok(t) => t,
            Err(e) => return DisconnectReason::Error(e.to_string()),
        };
        let mut core = ViewerSession::new(
            ViewerSessionConfig {
                peer_timeout: self.config.peer_timeout,
                ..ViewerSessionConfig::default()
            },
            self.epoch.elapsed(),
        );
        let mut reason = None;
        let mut flush_bye = false;
        let mut timer = CoreTimer::new(self.epoch);
        while reason.is_none() {
            while let Some(event) = core.poll_event() {
                match event {
                    ViewerSessionEvent::StreamStarted {
                        stream,
                        layout,
                        color,
                    } => {
                        // Important: a restart comes mid-stream, when frame events may
                        // have filled the queue, and the application sizes its view by it.
                        self.events.emit_important(ViewerEvent::StreamStarted {
                            width: layout.width(),
                            height: layout.height(),
                            bands: layout.count(),
                        });
                        let _ = decode_tx.send(DecodeInput::Start {
                            stream,
                            layout,
                            color,
                        });
                    }
                    ViewerSessionEvent::ClockOffset(o) => {
                        self.shared.offset_us.store(o, Relaxed);
                        if let Some(rtt) = core.rtt() {
                            self.shared.rtt_us.store(rtt.as_micros() as u64, Relaxed);
                        }
                    }
                    ViewerSessionEvent::Reconnecting => {
                        self.events.emit_important(ViewerEvent::Reconnecting);
                    }
                    ViewerSessionEvent::Reconnected => {
                        self.events.emit_important(ViewerEvent::Reconnected);
                    }
                    ViewerSessionEvent::Permissions { control } => {
                        self.events.emit(ViewerEvent::Permissions { control });
                    }
                    ViewerSessionEvent::GrantAnswered {
                        id,
                        approved,
                        detail,
                    } => {
                        let result = if approved {
                            crate::grants::GrantTicket::from_json(&detail)
                                .map_err(|e| GrantAnswerError::Unreadable(e.to_string()))
                        } else {
                            Err(GrantAnswerError::Refused(detail))
                        };
                        self.events
                            .emit_important(ViewerEvent::GrantAnswered { id, result });
                    }
                    ViewerSessionEvent::Cursor(c) => {
                        *self.shared.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                        self.events.emit(ViewerEvent::CursorMoved);
                    }
                    ViewerSessionEvent::Stats(stats) => self.events.emit(ViewerEvent::Stats(stats)),
                    ViewerSessionEvent::Ended(end) => {
                        reason.get_or_insert(DisconnectReason::from(end));
                    }
                    _ => {}
                }
            }
            if let Err(e) = send_queued(channels, || core.poll_transmit()).await {
                reason.get_or_insert(e);
            }
            if reason.is_some() {
                break;
            }
            timer.arm(core.poll_timeout());
            tokio::select! {
                ev = net_rx.recv() => match ev {
                    Some(NetEvent::Message(channel, data)) => {
                        core.handle_message(self.epoch.elapsed(), channel, &data);
                        if channel == Channel::Video && wire::is_video_chunk(&data) {
                            self.shared.bytes.fetch_add(data.len() as u64, Relaxed);
                            // A full decode queue means the decoder is behind: the chunk is
                            // stale, and the gap it leaves asks for a keyframe.
                            let _ = decode_tx.try_send(DecodeInput::Chunk(data));
                        }
                    }
                    other => reason = ended_by(other, net_rx).await,
                },
                req = key_rx.recv() => {
                    if let Some((s, bands)) = req {
                        core.request_keyframe(s, bands);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Input(ev)) => core.send_input(self.epoch.elapsed(), &ev),
                    Some(Command::RequestGrant(id, request)) => core.request_grant(id, request),
                    Some(Command::KeyframeAll) => core.request_keyframe_all(),
                    Some(Command::Shutdown) | None => {
                        core.close("the technician ended the session");
                        flush_bye = true;
                    }
                },
                () = timer.fired() => {
                    let h = &self.shared.latency_us;
                    let q = |p: f64| (h.count() > 0).then(|| Duration::from_micros(h.quantile(p)));
                    core.handle_decoded(self.shared.frames.load(Relaxed), q(0.5), q(0.99));
                    core.handle_timeout(self.epoch.elapsed());
                }
            }
        }
        if flush_bye && send_queued(channels, || core.poll_transmit()).await.is_ok() {
            transport::flush(&channels.control).await;
        }
        drop(decode_tx);
        let _ = decoder.join();
        reason.unwrap_or(DisconnectReason::Local)
    }
}

/// A frame being decoded band by band: reported once its bands stop coming.
struct Pending {
    frame_id: u64,
    bands: u32,
    latency: Option<Duration>,
}

/// A debug line a second about what the decode thread got: what a slow link looks like from
/// the receiving side.
#[derive(Debug, Default)]
struct DecodeTrace {
    since: Option<Instant>,
    /// Chunks by [`ChunkFate`], in its declaration order.
    fates: [u32; 6],
    decoded: u32,
    requests: u32,
}

impl DecodeTrace {
    fn chunk(&mut self, fate: ChunkFate) {
        self.fates[fate as usize] += 1;
    }

    fn maybe_log(&mut self, now: Instant, requests: u32) {
        let since = *self.since.get_or_insert(now);
        if now < since + Duration::from_secs(1) {
            return;
        }
        let [pending, complete, other, stale, inconsistent, dropped] = self.fates;
        tracing::debug!(
            pending,
            complete,
            other,
            stale,
            inconsistent,
            dropped,
            decoded = self.decoded,
            keyframe_requests = requests - self.requests,
            "video in, last second"
        );
        *self = Self {
            since: Some(now),
            requests,
            ..Self::default()
        };
    }
}

/// The `deskwire-decode` thread: reassembly, recovery and H.264 decoding.
fn spawn_decoder(
    rx: Receiver<DecodeInput>,
    keyframes: mpsc::UnboundedSender<(u16, u32)>,
    shared: Arc<Shared>,
    events: Events<ViewerEvent>,
    epoch: Instant,
    retry: Duration,
) -> Result<JoinHandle<()>, SessionError> {
    std::thread::Builder::new()
        .name("deskwire-decode".into())
        .spawn(move || {
            let mut rasm = Reassembler::new(retry);
            let mut trace = DecodeTrace::default();
            let mut pending: Option<Pending> = None;
            // A frame's bands may arrive in several groups (paced video spreads them over
            // the frame time): each group is shown at once, but the frame counts once.
            let mut counted: Option<u64> = None;
            let mut flush = |p: Option<Pending>| {
                if let Some(p) = p {
                    if counted != Some(p.frame_id) {
                        counted = Some(p.frame_id);
                        shared.frames.fetch_add(1, Relaxed);
                    }
                    tracing::trace!(frame = p.frame_id, bands = p.bands, latency = ?p.latency, "frame decoded");
                    if let Some(l) = p.latency {
                        shared.latency_us.record(l.as_micros() as u64);
                    }
                    events.emit(ViewerEvent::Frame(FrameInfo {
                        frame_id: p.frame_id,
                        bands: p.bands,
                        latency: p.latency,
                    }));
                }
            };
            loop {
                // While a frame is open, wait only briefly for more of its bands.
                let wait = if pending.is_some() { Duration::from_millis(2) } else { Duration::from_millis(50) };
                let input = match rx.recv_timeout(wait) {
                    Ok(i) => Some(i),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                };
                match input {
                    None => flush(pending.take()),
                    Some(DecodeInput::Start { stream, layout, color }) => {
                        flush(pending.take());
                        let pixels: Vec<u32> = (0..layout.count())
                            .map(|i| layout.width() * layout.band_height(i))
                            .collect();
                        rasm.handle_stream_start(stream, &pixels, epoch.elapsed());
                        match BandDecoderSet::with_layout(layout, color) {
                            Ok(mut d) => {
                                let mut guard = shared.decoders.lock().unwrap_or_else(|p| p.into_inner());
                                if let Some(old) = guard.as_ref() {
                                    d.keep_picture(old);
                                }
                                *guard = Some(d);
                            }
                            Err(e) => tracing::error!(error = %e, "cannot create decoders"),
                        }
                    }
                    Some(DecodeInput::Chunk(data)) => match rasm.handle_message(data) {
                        Ok(fate) => trace.chunk(fate),
                        Err(e) => tracing::warn!(error = %e, "malformed video chunk from the target"),
                    },
                }
                let rtt = shared.rtt_us.load(Relaxed);
                if rtt > 0 {
                    rasm.set_rtt(Duration::from_micros(rtt));
                }
                let wall = Instant::now();
                let now = wall.saturating_duration_since(epoch);
                while let Some(band) = rasm.poll_band(now) {
                    let (id, b, captured) = (band.frame_id, band.band, band.captured_at_us);
                    let decoded = {
                        let mut guard = shared.decoders.lock().unwrap_or_else(|p| p.into_inner());
                        match guard.as_mut() {
                            Some(d) => d.decode(BandId(b), band.data).map(|p| p.is_some()),
                            None => Ok(false),
                        }
                    };
                    match decoded {
                        Ok(true) => {
                            if pending.as_ref().is_some_and(|p| p.frame_id != id) {
                                flush(pending.take());
                            }
                            let p = pending.get_or_insert(Pending { frame_id: id, bands: 0, latency: None });
                            p.bands |= 1 << b;
                            let offset = shared.offset_us.load(Relaxed);
                            if offset != i64::MIN {
                                let now = micros_since(epoch) as i64;
                                let captured_here = captured as i64 - offset;
                                p.latency = Some(Duration::from_micros(now.saturating_sub(captured_here).max(0) as u64));
                            }
                        }
                        Ok(false) => rasm.mark_broken(b),
                        Err(e) => {
                            tracing::warn!(error = %e, band = b, "undecodable band; asking for a keyframe");
                            rasm.mark_broken(b);
                        }
                    }
                    trace.decoded += 1;
                }
                trace.maybe_log(wall, rasm.requests());
                if let Some(req) = rasm.poll_keyframe_request(epoch.elapsed()) {
                    let _ = keyframes.send(req);
                }
            }
            flush(pending.take());
        })
        .map_err(SessionError::Thread)
}
