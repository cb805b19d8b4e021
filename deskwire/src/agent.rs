//! The target end: joins with a code, streams the screen, injects allowed input.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use deskwire_capture::Source;
use deskwire_signal::device::DeviceKey;
use deskwire_signal::ConnectionCode;
use tokio::sync::mpsc;

mod connect;
mod drain;
mod grants;
pub use grants::GrantRefusal;
mod lan;
mod video_out;

use deskwire_engine::codec::BandId;
use deskwire_engine::pipeline::Pipeline;
use deskwire_engine::{BandSpec, ContentTuning};
use deskwire_session::consent::ConsentAnswer;
use deskwire_session::input::{InjectOp, InputKind, InputRefusal};
use deskwire_session::pacer::{PacerConfig, VideoSender};
use deskwire_session::pairing::PairingSecret;
use deskwire_session::rate::{RateConfig, MAX_START_BPS};
use deskwire_session::{AgentSession, AgentSessionConfig, AgentSessionEvent, StreamInfo};

use crate::config::AgentConfig;
use crate::driver::{ended_by, send_queued, CoreTimer};
use crate::inject::Injector;
use crate::signalling::Signalling;
use crate::transport::{self, NetEvent};
use crate::{spawn_net, AgentEvent, DisconnectReason, Events, SessionError};
use video_out::{
    spawn_video_out, Pace, SendCounters, VideoCommand, VideoOut, VideoReport, VIDEO_CHUNK,
};

/// How often the target wakes the WebRTC driver while the channels are opening.
const NUDGE_INTERVAL: Duration = Duration::from_millis(2);

/// What an agent session starts from.
#[derive(Clone, Copy)]
enum Start {
    /// An unattended call through the broker: this code, under this grant.
    Grant {
        session: deskwire_signal::SessionCode,
        grant: u32,
    },
    /// A code the user typed (more may follow after a refusal).
    Code(ConnectionCode),
    /// An ad-hoc call: this code, and the link's secret.
    Call {
        session: deskwire_signal::SessionCode,
        secret: [u8; 16],
    },
}

enum Command {
    TryCode(ConnectionCode),
    AnswerConsent(ConsentAnswer),
    AnswerGrant(u32, crate::GrantDecision),
    SetControl(bool),
    Shutdown,
}

/// The target end of a session.
///
/// Joins the broker session named by a connection code, then streams `source` to the
/// viewer and injects the viewer's input when allowed. Events arrive on
/// [`Agent::events`]; a refused code yields [`AgentEvent::CodeRefused`] and the agent waits
/// for [`Agent::try_code`] or [`Agent::shutdown`].
#[derive(Debug)]
pub struct Agent {
    events: Receiver<AgentEvent>,
    commands: mpsc::UnboundedSender<Command>,
    net: Option<JoinHandle<()>>,
    lan_addr: Option<std::net::SocketAddr>,
}

impl Agent {
    /// Validate `config` and start joining with `code`. Capture starts only once the
    /// session is established.
    pub fn start(
        config: AgentConfig,
        source: Box<dyn Source>,
        code: ConnectionCode,
    ) -> Result<Self, SessionError> {
        config.validate()?;
        Self::spawn(config, source, None, move |task, source| {
            Box::pin(async move { task.run(source, Start::Code(code)).await })
        })
    }

    /// Serve one unattended call ([`crate::standby::StandbyEvent::Call`]): check grant
    /// `grant` in this computer's own grants (`config.unattended`) at this computer's clock,
    /// join `session`, run the key exchange on the grant's secret, ask for administrator
    /// credentials when the grant says so, and start without asking anyone. A grant that
    /// does not let anyone in now is refused here, whatever the broker said, and the
    /// technician is told why.
    pub fn start_unattended_call(
        config: AgentConfig,
        source: Box<dyn Source>,
        session: deskwire_signal::SessionCode,
        grant: u32,
    ) -> Result<Self, SessionError> {
        config.validate()?;
        Self::spawn(config, source, None, move |task, source| {
            Box::pin(async move { task.run(source, Start::Grant { session, grant }).await })
        })
    }

    /// Serve one connection of an ad-hoc session: join the code of a
    /// [`crate::adhoc::TemporaryHostEvent::Call`] and run the key exchange on the link's
    /// secret ([`crate::adhoc::TemporaryHost::call_secret`]). Nobody is asked: the user
    /// consented by activating the session. `config.device_key` should be the temporary
    /// agent's ([`crate::adhoc::TemporaryHost::device_key`]).
    pub fn start_adhoc_call(
        config: AgentConfig,
        source: Box<dyn Source>,
        session: deskwire_signal::SessionCode,
        secret: [u8; 16],
    ) -> Result<Self, SessionError> {
        config.validate()?;
        Self::spawn(config, source, None, move |task, source| {
            Box::pin(async move { task.run(source, Start::Call { session, secret }).await })
        })
    }

    /// Serve one session to a viewer that connects directly on the LAN with the
    /// current password of `lan.passwords`; no broker is involved. Wrong passwords are
    /// refused ([`AgentEvent::LanRefused`]) and their source backs off; the agent keeps
    /// listening until one viewer gets a session (and the user's consent, per
    /// `config.acceptance`). Listening starts before this returns: [`Agent::lan_addr`].
    pub fn start_lan(
        config: AgentConfig,
        source: Box<dyn Source>,
        lan: crate::lan::LanListenConfig,
    ) -> Result<Self, SessionError> {
        config.validate_local()?;
        let listener = std::net::TcpListener::bind(lan.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| crate::lan::LanError::Listen {
                addr: lan.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| crate::lan::LanError::Listen {
                addr: lan.listen,
                source,
            })?;
        tracing::info!(%addr, "listening for LAN viewers");
        Self::spawn(config, source, Some(addr), move |task, source| {
            Box::pin(async move { task.run_lan(source, listener, lan).await })
        })
    }

    fn spawn(
        config: AgentConfig,
        source: Box<dyn Source>,
        lan_addr: Option<std::net::SocketAddr>,
        run: impl for<'a> FnOnce(
                &'a mut AgentTask,
                Box<dyn Source>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = DisconnectReason> + 'a>,
            > + Send
            + 'static,
    ) -> Result<Self, SessionError> {
        let (w, h) = source.size();
        config
            .pipeline
            .validate(w, h)
            .map_err(deskwire_engine::PipelineError::from)?;
        // Read (or make) the device key now, so a bad key file is an error here, not later.
        let device = match &config.device_key {
            Some(path) => Some(Arc::new(crate::device::load_or_create(path)?)),
            None => None,
        };
        let (events, rx) = Events::new();
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let net = spawn_net(move |handle| async move {
            let mut task = AgentTask {
                config,
                events: events.clone(),
                commands: cmd_rx,
                handle,
                epoch: Instant::now(),
                device,
            };
            let reason = run(&mut task, source).await;
            tracing::info!(%reason, "agent session ended");
            events.emit_important(AgentEvent::Disconnected(reason));
        })?;
        Ok(Self {
            events: rx,
            commands,
            net: Some(net),
            lan_addr,
        })
    }

    /// Where a LAN agent ([`Agent::start_lan`]) listens.
    pub fn lan_addr(&self) -> Option<std::net::SocketAddr> {
        self.lan_addr
    }

    /// Events, in order. After [`AgentEvent::Disconnected`] no more follow.
    pub fn events(&self) -> &Receiver<AgentEvent> {
        &self.events
    }

    /// Enter another code after [`AgentEvent::CodeRefused`] ("Try Again").
    pub fn try_code(&self, code: ConnectionCode) -> Result<(), SessionError> {
        self.commands
            .send(Command::TryCode(code))
            .map_err(|_| SessionError::Ended)
    }

    /// Grant or revoke control. Revoking releases every key and button the viewer
    /// holds and tells the viewer.
    pub fn set_control(&self, control: bool) -> Result<(), SessionError> {
        self.commands
            .send(Command::SetControl(control))
            .map_err(|_| SessionError::Ended)
    }

    /// The user's answer to [`AgentEvent::ConsentRequested`].
    pub fn answer_consent(&self, answer: ConsentAnswer) -> Result<(), SessionError> {
        self.commands
            .send(Command::AnswerConsent(answer))
            .map_err(|_| SessionError::Ended)
    }

    /// The user's decision on [`AgentEvent::GrantRequested`] `id`; the outcome follows as
    /// [`AgentEvent::GrantDecided`].
    pub fn answer_grant(
        &self,
        id: u32,
        decision: crate::GrantDecision,
    ) -> Result<(), SessionError> {
        self.commands
            .send(Command::AnswerGrant(id, decision))
            .map_err(|_| SessionError::Ended)
    }

    /// End the session (or cancel code entry), tell the peer, and join every thread.
    pub fn shutdown(mut self) -> Result<(), SessionError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), SessionError> {
        let _ = self.commands.send(Command::Shutdown);
        crate::join_net(&mut self.net)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

struct AgentTask {
    config: AgentConfig,
    events: Events<AgentEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    handle: tokio::runtime::Handle,
    /// The session clock: capture times and pongs are microseconds since this instant.
    epoch: Instant,
    /// This computer's key, when it proves its identity to the broker.
    device: Option<Arc<DeviceKey>>,
}

/// An open peer connection: the connection, its events and the three channels.
type Connected = (
    transport::Pc,
    mpsc::UnboundedReceiver<NetEvent>,
    transport::Channels,
);

enum Wait<T> {
    Got(T),
    End(DisconnectReason),
}

/// How an attempt to connect ended without a session.
enum Negotiation {
    /// The peer's description did not verify: nothing connected; the user may enter the
    /// code again.
    Retry,
    /// The technician's administrator name or password was wrong: nothing was connected.
    BadCredentials,
    /// The viewer did not prove the secret in time: nothing was connected.
    Unproven,
    End(DisconnectReason),
}

impl AgentTask {
    async fn run(&mut self, source: Box<dyn Source>, start: Start) -> DisconnectReason {
        let mut started = Instant::now();
        let timeout = self.config.connect_timeout;
        let brokers: Vec<&str> = std::iter::once(self.config.broker.as_str())
            .chain(self.config.fallback_brokers.iter().map(String::as_str))
            .collect();
        let mut sig = match Signalling::connect_any(&brokers, timeout).await {
            Ok(s) => s,
            Err(e) => return DisconnectReason::from(e),
        };
        let mut control = !self.config.view_only;
        let mut source = Some(source);
        let mut pipeline: Option<Arc<Pipeline>> = None;
        let mut next = match start {
            Start::Code(code) => Some(code),
            Start::Call { .. } | Start::Grant { .. } => None,
        };
        let mut called = false;
        let mut session_policy = None;
        let connected = loop {
            let mut admin = self.config.require_admin.clone();
            let (secret, policy, unattended) = match start {
                Start::Code(_) => match self.join(&mut sig, next.take(), &mut control).await {
                    Wait::Got((code, policy)) => (PairingSecret::Code(code), policy, false),
                    Wait::End(r) => break Err(r),
                },
                // A call is one attempt: the technician's side calls again if it failed.
                Start::Call { .. } | Start::Grant { .. } if called => {
                    break Err(DisconnectReason::Error(
                        "the technician's side could not be verified; nothing was connected".into(),
                    ))
                }
                Start::Call { session, secret } => {
                    called = true;
                    match self.join_call(&mut sig, session).await {
                        // The user activated the session for this technician: they are
                        // not asked again at each connection.
                        Wait::Got(policy) => (PairingSecret::Adhoc(session, secret), policy, true),
                        Wait::End(r) => break Err(r),
                    }
                }
                Start::Grant { session, grant } => {
                    called = true;
                    // This computer's own copy decides, at its own clock, whatever the
                    // broker let through.
                    let own = self.unattended_grant(grant, deskwire_signal::UnixMillis::now());
                    match (self.join_call(&mut sig, session).await, own) {
                        (Wait::End(r), _) => break Err(r),
                        (Wait::Got(policy), Ok((secret, needs))) => {
                            admin = needs;
                            (PairingSecret::Grant(grant, secret), policy, true)
                        }
                        (Wait::Got(_), Err(why)) => {
                            tracing::warn!(grant, why, "unattended call refused");
                            let bye = deskwire_signal::ClientMessage::Relay {
                                signal: deskwire_signal::PeerSignal::Bye {
                                    reason: format!("the computer refused: {why}"),
                                },
                            };
                            let _ = sig.send(&bye).await;
                            break Err(DisconnectReason::Error(format!(
                                "unattended connection refused: {why}"
                            )));
                        }
                    }
                }
            };
            self.events.emit(AgentEvent::Joined);
            // The set-up time counts from the code the broker accepted: time the user
            // spent typing (and retyping) codes is theirs, not the connection's.
            started = Instant::now();
            // Start capturing and encoding now, while ICE and DTLS run: the encoders'
            // start-up and the first full encode then overlap the handshake instead of
            // following it. Nothing leaves this process before the channels are open, and
            // a failed verification keeps it running for the next attempt.
            if let Err(r) = self.ensure_pipeline(&mut source, &mut pipeline) {
                break Err(r);
            }
            let mut peer = connect::LazyPeer::default();
            let result = self
                .negotiate(
                    &mut peer,
                    &mut sig,
                    connect::Attempt {
                        secret,
                        control,
                        policy: policy.as_ref(),
                        unattended,
                        admin,
                        step_timeout: self.config.connect_timeout,
                        proof_timeout: self.config.connect_timeout,
                    },
                )
                .await;
            let reason = match result {
                Ok((channels, granted)) => match peer.take() {
                    Some((pc, net_rx)) => {
                        control = granted;
                        session_policy = policy;
                        break Ok((pc, net_rx, channels));
                    }
                    None => Some(DisconnectReason::Error("connected without a peer".into())),
                },
                Err(Negotiation::Retry) => None,
                Err(Negotiation::BadCredentials) => {
                    let why = "the administrator name or password is wrong";
                    let bye = deskwire_signal::ClientMessage::Relay {
                        signal: deskwire_signal::PeerSignal::Bye { reason: why.into() },
                    };
                    let _ = sig.send(&bye).await;
                    Some(DisconnectReason::Error(why.into()))
                }
                Err(Negotiation::Unproven) => Some(DisconnectReason::from(
                    deskwire_session::pairing::PairingEnd::Unproven,
                )),
                Err(Negotiation::End(r)) => Some(r),
            };
            peer.close().await;
            if let Some(r) = reason {
                break Err(r);
            }
            // Not verified: nothing was connected. The broker has told this side why
            // (join_refused), which `join` reports; wait there for another code.
        };
        sig.close().await;
        let desk = grants::GrantDesk::new(session_policy.as_ref());
        self.conclude(connected, pipeline, control, started, desk)
            .await
    }

    /// Stream once connected, or stop what was started for an attempt that failed.
    async fn conclude(
        &mut self,
        connected: Result<Connected, DisconnectReason>,
        pipeline: Option<Arc<Pipeline>>,
        control: bool,
        started: Instant,
        desk: grants::GrantDesk,
    ) -> DisconnectReason {
        match (connected, pipeline) {
            (Ok((pc, mut net_rx, channels)), Some(p)) => {
                let setup = started.elapsed();
                let r = self
                    .stream(p, &channels, &mut net_rx, (control, desk), setup)
                    .await;
                let _ = pc.close().await;
                r
            }
            (Ok((pc, _, _)), None) => {
                let _ = pc.close().await;
                DisconnectReason::Error("connected without a pipeline".into())
            }
            (Err(r), p) => {
                if let Some(p) = p {
                    shutdown_pipeline(p);
                }
                r
            }
        }
    }

    /// Start capturing and encoding, once, for the first attempt.
    fn ensure_pipeline(
        &self,
        source: &mut Option<Box<dyn Source>>,
        pipeline: &mut Option<Arc<Pipeline>>,
    ) -> Result<(), DisconnectReason> {
        if pipeline.is_some() {
            return Ok(());
        }
        let src = source
            .take()
            .ok_or_else(|| DisconnectReason::Error("no source to capture".into()))?;
        let p = Pipeline::start(src, self.config.pipeline.clone())
            .map_err(|e| DisconnectReason::Error(format!("cannot start capture: {e}")))?;
        *pipeline = Some(Arc::new(p));
        Ok(())
    }

    /// The established session: start capture, then let the session core answer the
    /// viewer, gate its input and watch its liveness, until it ends.
    async fn stream(
        &mut self,
        pipeline: Arc<Pipeline>,
        channels: &transport::Channels,
        net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
        (control, mut desk): (bool, grants::GrantDesk),
        setup: Duration,
    ) -> DisconnectReason {
        let layout = pipeline.layout().clone();
        let injector = if self.config.view_only {
            None
        } else {
            let events = self.events.clone();
            let report = Box::new(move |op: &InjectOp, r: Result<(), String>| {
                if r.is_ok() {
                    events.emit(AgentEvent::InputInjected(InputKind::from(op)));
                }
            });
            match Injector::start(self.config.input_display.clone(), report) {
                Ok(i) => Some(i),
                Err(e) => {
                    shutdown_pipeline(pipeline);
                    return DisconnectReason::Error(e);
                }
            }
        };
        let stream_id = 1u16;
        let mut core = AgentSession::new(
            AgentSessionConfig {
                peer_timeout: self.config.peer_timeout,
                view_only: self.config.view_only,
                rate: {
                    let d = RateConfig::default();
                    let configured = u64::from(self.config.pipeline.codec.bitrate_bps);
                    RateConfig {
                        // Start below the configured rate (see `MAX_START_BPS`); clean
                        // feedback takes the estimate there within about 2 s.
                        start_bps: configured.min(MAX_START_BPS).clamp(d.min_bps, d.max_bps),
                        max_encoder_bps: configured,
                        // The configured floor is the best quality; a slow link may go coarser.
                        best_qp: self.config.pipeline.codec.max_qp,
                        worst_qp: d.worst_qp.max(self.config.pipeline.codec.max_qp),
                        ..d
                    }
                },
                ..AgentSessionConfig::default()
            },
            StreamInfo {
                stream: stream_id,
                width: layout.width(),
                height: layout.height(),
                color: self.config.pipeline.codec.color,
                tops: layout.tops().to_vec(),
            },
            control,
            self.epoch.elapsed(),
        );
        let mut reason = send_queued(channels, || core.poll_transmit()).await.err();
        self.events.emit_important(AgentEvent::Connected {
            control: core.control(),
            setup,
        });

        // What was encoded while the channels opened is stale: drop it and start the stream
        // with a keyframe of every band from the newest picture.
        while pipeline.output().try_recv().is_ok() {}
        pipeline.request_keyframe(None);
        let counters = Arc::new(SendCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (pace_tx, pace_rx) = crossbeam_channel::unbounded::<VideoCommand>();
        let mut band_count = layout.count();
        let keys_wanted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (report_tx, mut report_rx) = mpsc::unbounded_channel::<VideoReport>();
        let target = core.rate_target();
        let video_out = match spawn_video_out(VideoOut {
            handle: self.handle.clone(),
            pipeline: pipeline.clone(),
            dc: channels.video.clone(),
            sender: VideoSender::new(
                stream_id,
                PacerConfig {
                    max_message: self.config.transport.max_message.min(VIDEO_CHUNK),
                    start_bps: target.pacing_bps,
                    // A safety net only: admission already bounds the queue in time, and
                    // a large keyframe on a slow link may rightly take a while to leave.
                    stale_after: Duration::from_secs(2),
                },
            ),
            epoch: self.epoch,
            counters: counters.clone(),
            stop: stop.clone(),
            pace: pace_rx,
            keys_wanted: keys_wanted.clone(),
            reports: report_tx,
            link_down: false,
        }) {
            Ok(t) => Some(t),
            Err(e) => {
                reason.get_or_insert(DisconnectReason::Error(crate::with_causes(&e)));
                None
            }
        };

        let (pointer_tx, mut pointer_rx) = mpsc::unbounded_channel();
        let pointer_out = match spawn_pointer_out(&pipeline, pointer_tx) {
            Ok(t) => Some(t),
            Err(e) => {
                reason.get_or_insert(DisconnectReason::Error(crate::with_causes(&e)));
                None
            }
        };

        let mut flush_bye = false;
        let mut timer = CoreTimer::new(self.epoch);
        while reason.is_none() {
            while let Some(event) = core.poll_event() {
                match event {
                    AgentSessionEvent::RateChanged(t) => {
                        tracing::debug!(?t, "rate target");
                        // The video thread retunes the encoder: it also knows what frames cost.
                        let _ = pace_tx.send(VideoCommand::Pace(Pace {
                            target: t,
                            budget: core.queue_budget(),
                            rtt: core.rtt(),
                        }));
                    }
                    AgentSessionEvent::StreamRestarted { stream, bands } => {
                        // The video thread first, so it knows the new layout's first frame.
                        let _ = pace_tx.send(VideoCommand::Restart { stream, bands });
                        // The new encoders start at the current target, so the quality
                        // floor the restart came with costs no second keyframe.
                        let t = core.rate_target();
                        let bps = u32::try_from(t.encoder_bps).unwrap_or(u32::MAX);
                        pipeline.set_rate(bps, t.max_fps, t.max_qp);
                        // A compact layout is for a slow path under wide content: OpenH264's
                        // screen-content mode finds scrolled text where camera mode codes it
                        // anew, so a frame that comes late (it moved further) stays small
                        // instead of growing with the distance (BENCHMARKS.md, "Slow links").
                        let tuning = if t.compact {
                            ContentTuning::Screen
                        } else {
                            self.config.pipeline.codec.tuning
                        };
                        pipeline.set_layout(BandSpec::Count(bands), tuning);
                        band_count = bands as usize;
                    }
                    AgentSessionEvent::ResendVideo(seqs) => {
                        let _ = pace_tx.send(VideoCommand::Resend(seqs));
                    }
                    AgentSessionEvent::LinkDown => {
                        tracing::debug!("link down: the viewer went quiet");
                        let _ = pace_tx.send(VideoCommand::LinkDown(true));
                        self.events.emit(AgentEvent::LinkDown)
                    }
                    AgentSessionEvent::LinkUp => {
                        tracing::debug!("link up: the viewer is heard again");
                        // Every band is refreshed (a few at a time): until its keyframe, what
                        // was encoded of it in the dark is only in the way.
                        keys_wanted.fetch_or(
                            deskwire_session::video::all_bands(band_count),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        let _ = pace_tx.send(VideoCommand::LinkDown(false));
                        self.events.emit(AgentEvent::LinkUp)
                    }
                    AgentSessionEvent::KeyframeRequested { bands } => {
                        tracing::debug!(bands = format_args!("{bands:#b}"), "refreshing bands");
                        // The sender stops spending the link on what the viewer discards.
                        keys_wanted.fetch_or(bands, std::sync::atomic::Ordering::Relaxed);
                        for b in 0..band_count {
                            if bands & (1 << b) != 0 {
                                pipeline.request_keyframe(Some(BandId(b as u8)));
                            }
                        }
                    }
                    AgentSessionEvent::Inject(op) => {
                        let kind = InputKind::from(&op);
                        let refused = match &injector {
                            Some(inj) => inj.submit(op).err().map(|_| InputRefusal::QueueFull),
                            None => Some(InputRefusal::ViewOnly),
                        };
                        if let Some(reason) = refused {
                            self.events.emit(AgentEvent::InputRefused { kind, reason });
                        }
                    }
                    AgentSessionEvent::Release(ops) => {
                        if let Some(inj) = &injector {
                            inj.submit_releases(ops);
                        }
                    }
                    AgentSessionEvent::InputRefused { kind, reason } => {
                        self.events.emit(AgentEvent::InputRefused { kind, reason });
                    }
                    AgentSessionEvent::GrantRequested { id, request } => {
                        match desk.handle_request(id, &request, core.control(), &self.config) {
                            Ok(ask) => self.events.emit_important(ask),
                            Err(answer) => core.send_control(answer),
                        }
                    }
                    AgentSessionEvent::Stats(stats) => self.events.emit(AgentEvent::Stats(stats)),
                    AgentSessionEvent::Ended(end) => {
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
                    }
                    other => reason = ended_by(other, net_rx).await,
                },
                Some(state) = pointer_rx.recv() => core.handle_pointer(self.epoch.elapsed(), &state),
                Some(report) = report_rx.recv() => match report {
                    VideoReport::Lost(bands) => core.handle_video_lost(self.epoch.elapsed(), bands),
                    VideoReport::KeysSent(bands) => core.handle_keyframes_sent(self.epoch.elapsed(), bands),
                    VideoReport::Wide(wide) => core.handle_content(wide),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::SetControl(c)) => core.set_control(c),
                    Some(Command::AnswerGrant(id, decision)) => {
                        // Argon2 for customer credentials takes tens of milliseconds: a
                        // rare pause, and only for a request the user is answering.
                        let decided = desk.handle_decision(id, decision, &self.config, deskwire_signal::UnixMillis::now());
                        if let Some((answer, event)) = decided {
                            self.events.emit_important(event);
                            core.send_control(answer);
                        }
                    }
                    Some(Command::TryCode(_) | Command::AnswerConsent(_)) => {}
                    Some(Command::Shutdown) | None => {
                        core.close("the target ended the session");
                        flush_bye = true;
                    }
                },
                () = timer.fired() => {
                    core.handle_video_sent(
                        counters.frames.load(Relaxed),
                        counters.bytes.load(Relaxed),
                        counters.bands_dropped.load(Relaxed),
                    );
                    core.handle_timeout(self.epoch.elapsed());
                }
            }
        }
        // Let go of everything the viewer held before anything else stops.
        while let Some(event) = core.poll_event() {
            if let (AgentSessionEvent::Release(ops), Some(inj)) = (event, &injector) {
                inj.submit_releases(ops);
            }
        }
        if flush_bye && send_queued(channels, || core.poll_transmit()).await.is_ok() {
            transport::flush(&channels.control).await;
        }
        if let Some(inj) = injector {
            inj.shutdown();
        }
        stop.store(true, Relaxed);
        if let Some(t) = video_out {
            let _ = t.join();
        }
        shutdown_pipeline(pipeline);
        // The pipeline's end closed the pointer's channel: its thread has returned.
        drop(pointer_rx);
        if let Some(t) = pointer_out {
            let _ = t.join();
        }
        reason.unwrap_or(DisconnectReason::Local)
    }
}

/// The `deskwire-pointer` thread: the pipeline's pointer readings into the session loop,
/// as they come (the loop waits on tokio; the pipeline hands out on a plain channel).
fn spawn_pointer_out(
    pipeline: &Pipeline,
    tx: mpsc::UnboundedSender<deskwire_capture::PointerState>,
) -> Result<std::thread::JoinHandle<()>, SessionError> {
    let rx = pipeline.pointer().clone();
    std::thread::Builder::new()
        .name("deskwire-pointer".into())
        .spawn(move || {
            // Ends when the pipeline stops (its sender goes) or the session loop is gone.
            while let Ok(state) = rx.recv() {
                if tx.send(state).is_err() {
                    break;
                }
            }
        })
        .map_err(SessionError::Thread)
}

fn shutdown_pipeline(pipeline: Arc<Pipeline>) {
    match Arc::try_unwrap(pipeline) {
        Ok(p) => {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "pipeline ended with an error");
            }
        }
        // Dropping the last reference stops it too; this only happens if a thread that
        // holds one did not exit, which joining it above rules out.
        Err(_) => tracing::warn!("pipeline still shared at shutdown"),
    }
}
