//! The session API: an [`Agent`] on the target and a [`Viewer`] at the technician, paired
//! through a broker with a connection code and joined by WebRTC data channels.
//!
//! Each handle runs its network side on one named thread (`deskwire-net`) with its own tokio
//! runtime, and reports what happens as [`AgentEvent`]s / [`ViewerEvent`]s on a bounded
//! channel. `shutdown()` says goodbye to the peer and joins every thread the handle started.
//!
//! ```no_run
//! use deskwire_capture::{open, OpenOptions};
//! use deskwire::{Viewer, ViewerConfig, ViewerEvent, Agent, AgentConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The technician asks a broker for a session and reads the code to the user...
//! let viewer = Viewer::start(ViewerConfig::new("ws://127.0.0.1:8450"))?;
//! let code = loop {
//!     if let ViewerEvent::Code { code, .. } = viewer.events().recv()? {
//!         break code;
//!     }
//! };
//! // ...who enters it on the target, which then streams its screen.
//! let source = open(&"synthetic:typing".parse()?, &OpenOptions::default())?;
//! let agent = Agent::start(AgentConfig::new("ws://127.0.0.1:8450").view_only(true), source, code)?;
//! for event in viewer.events().iter() {
//!     match event {
//!         ViewerEvent::Frame(info) => {
//!             let size = viewer.with_frame(|f| (f.width(), f.height()));
//!             println!("frame {} {:?}, latency {:?}", info.frame_id, size, info.latency);
//!             break;
//!         }
//!         ViewerEvent::Disconnected(reason) => return Err(reason.to_string().into()),
//!         _ => {}
//!     }
//! }
//! viewer.shutdown()?;
//! agent.shutdown()?;
//! # Ok(()) }
//! ```

pub mod accounts;
pub mod adhoc;
mod agent;
pub mod config;
mod device;
pub use device::DeviceKeyError;
mod driver;
pub mod grants;
mod inject;
pub mod lan;
#[cfg(feature = "init-tracing")]
mod logging;
mod shield_socket;
mod signalling;
pub use signalling::SignalError;
pub mod standby;
mod transport;
mod viewer;

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
pub use deskwire_signal::{ConnectionCode, JoinRefusal, SessionCode, UnixMillis};

pub use agent::{Agent, GrantRefusal};
pub use config::{
    AdhocTarget, AdminCredentials, AgentConfig, LanTarget, MdnsMode, SessionConfigError,
    TransportConfig, UnattendedTarget, ViewerConfig, ViewerRoute,
};
pub use deskwire_session::consent::{AcceptanceMode, ConsentAnswer, ConsentRefusal};
/// The keyboard and mouse events a viewer sends, and why the target refuses one.
pub use deskwire_session::input;
pub use deskwire_session::input::{InputEvent, InputKind, InputRefusal};
pub use deskwire_session::pointer::{blend, RemoteCursor};
pub use deskwire_session::wire::ByeReason;
pub use deskwire_session::{AgentStats, ViewerStats};
pub use grants::GrantAnswerError;
#[cfg(feature = "init-tracing")]
pub use logging::{init_tracing, init_tracing_verbosity};
pub use viewer::Viewer;

/// Errors of the session API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] SessionConfigError),
    /// The broker cannot be reached or misbehaved.
    #[error(transparent)]
    Broker(#[from] signalling::SignalError),
    /// The peer connection failed.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// The media pipeline failed.
    #[error(transparent)]
    Engine(#[from] deskwire_engine::PipelineError),
    /// A thread could not be started.
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
    /// The session has ended; the call has no effect.
    #[error("the session has ended")]
    Ended,
    /// This computer's device key cannot be read or made.
    #[error(transparent)]
    Device(#[from] device::DeviceKeyError),
    /// A direct LAN connection, the LAN listener or mDNS failed, or a LAN request was refused.
    #[error(transparent)]
    Lan(#[from] lan::LanError),
    /// The target's administrator accounts cannot be read or changed.
    #[error(transparent)]
    Accounts(#[from] accounts::AccountsError),
    /// The target's grants file, a grant ticket or a grant report failed.
    #[error(transparent)]
    Grants(#[from] grants::GrantsError),
    /// An ad-hoc session could not be created, taken up again or ended.
    #[error(transparent)]
    Adhoc(#[from] adhoc::AdhocError),
}

/// The target user's decision on [`AgentEvent::GrantRequested`].
#[derive(Clone, PartialEq, Eq)]
pub enum GrantDecision {
    /// Approve (enough for a grant whose technician presents admin credentials each time).
    Approve,
    /// Approve with the customer's own name and password, which the grant is bound to.
    ApproveWithCredentials {
        /// The account name.
        user: String,
        /// Its password.
        password: String,
    },
    /// Refuse.
    Reject,
}

impl std::fmt::Debug for GrantDecision {
    // Events and commands end up in logs; the password must not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Approve => f.write_str("Approve"),
            Self::ApproveWithCredentials { user, .. } => f
                .debug_struct("ApproveWithCredentials")
                .field("user", user)
                .field("password", &"***")
                .finish(),
            Self::Reject => f.write_str("Reject"),
        }
    }
}

impl From<SessionError> for DisconnectReason {
    /// Keeps where it failed (broker, LAN link) without repeating it in the sentence.
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Broker(e) => DisconnectReason::Broker(with_causes(&e)),
            SessionError::Lan(e) => DisconnectReason::Lan(with_causes(&e)),
            SessionError::Transport(e) => DisconnectReason::Transport(with_causes(&e)),
            other => DisconnectReason::Error(with_causes(&other)),
        }
    }
}

/// An error and its chain of sources as one sentence, for the places where an error
/// becomes text (an ended session's reason, a refusal told to the peer). A cause is said
/// once: a wrapper that only repeats its source ("IO error: Connection refused (os error
/// 111)") gives way to the source, and operating-system errors are said in words, not
/// errno.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![(e.to_string(), e.to_string())];
    let mut source = e.source();
    while let Some(cause) = source {
        let raw = cause.to_string();
        let said = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io_words(io),
            None => raw.clone(),
        };
        parts.push((raw, said));
        source = cause.source();
    }
    let mut text = String::new();
    for (i, (_, said)) in parts.iter().enumerate() {
        let repeats_next = parts
            .get(i + 1)
            .is_some_and(|(next_raw, _)| i > 0 && said.contains(next_raw.as_str()));
        if repeats_next || said.is_empty() || text.ends_with(said.as_str()) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(said);
    }
    text
}

/// An operating-system error as people say it.
pub(crate) fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let words = match e.kind() {
        K::ConnectionRefused => "connection refused (nothing is listening there)",
        K::ConnectionReset => "the connection was reset",
        K::ConnectionAborted => "the connection was aborted",
        K::TimedOut => "timed out",
        K::HostUnreachable => "the host is unreachable",
        K::NetworkUnreachable => "the network is unreachable",
        K::AddrInUse => "the address is already in use",
        K::AddrNotAvailable => "the address is not available on this computer",
        K::PermissionDenied => "permission denied",
        K::NotFound => "not found",
        _ => match e.raw_os_error() {
            Some(19) => "no network interface can do this (no route for it)",
            _ => "",
        },
    };
    if words.is_empty() {
        // The system's own sentence, without the errno.
        let text = e.to_string();
        match text.rfind(" (os error ") {
            Some(at) => text[..at].to_owned(),
            None => text,
        }
    } else {
        words.to_owned()
    }
}

#[cfg(test)]
mod cause_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach the broker at ws://h")]
    struct Top(#[source] Wrapper);

    #[derive(Debug, thiserror::Error)]
    #[error("IO error: {0}")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once_and_in_words() {
        let io = std::io::Error::from_raw_os_error(111);
        let text = with_causes(&Top(Wrapper(io)));
        assert_eq!(
            text,
            "cannot reach the broker at ws://h: connection refused (nothing is listening there)"
        );
        let odd = std::io::Error::from_raw_os_error(19);
        assert_eq!(
            io_words(&odd),
            "no network interface can do this (no route for it)"
        );
        let other = std::io::Error::from_raw_os_error(28);
        assert!(
            !io_words(&other).contains("os error"),
            "{}",
            io_words(&other)
        );
    }
}

impl From<deskwire_session::pairing::PairingEnd> for DisconnectReason {
    /// How a pairing attempt ended, as the session's end. A peer that did not answer in time
    /// is a transport failure here; the viewer, whose wait is the broker's code, words it
    /// as the broker's.
    fn from(end: deskwire_session::pairing::PairingEnd) -> Self {
        use deskwire_session::pairing::{PairingEnd, BAD_CREDENTIALS};
        match end {
            PairingEnd::Unverified(why) => DisconnectReason::Error(why),
            PairingEnd::BadCredentials => DisconnectReason::Error(BAD_CREDENTIALS.into()),
            PairingEnd::PeerBye(detail) => DisconnectReason::PeerBye {
                reason: ByeReason::Ended,
                detail,
            },
            PairingEnd::PeerLeft => DisconnectReason::PeerLeft,
            PairingEnd::Broker(m) => DisconnectReason::Broker(m),
            PairingEnd::Lan(m) => DisconnectReason::Lan(m),
            PairingEnd::Consent(r) => DisconnectReason::Consent(r),
            PairingEnd::TimedOut(what) => DisconnectReason::Transport(what.into()),
            PairingEnd::Unproven => DisconnectReason::Transport(PairingEnd::Unproven.to_string()),
        }
    }
}

impl From<deskwire_session::SessionEnd> for DisconnectReason {
    fn from(end: deskwire_session::SessionEnd) -> Self {
        use deskwire_session::SessionEnd;
        match end {
            SessionEnd::Local => DisconnectReason::Local,
            SessionEnd::PeerBye { reason, detail } => DisconnectReason::PeerBye { reason, detail },
            SessionEnd::PeerTimeout(d) => DisconnectReason::PeerTimeout(d),
            other => DisconnectReason::Error(other.to_string()),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// This side called `shutdown()`.
    Local,
    /// The peer said goodbye.
    PeerBye {
        /// Its reason code.
        reason: ByeReason,
        /// Its sentence.
        detail: String,
    },
    /// Nothing heard from the peer for this long.
    PeerTimeout(Duration),
    /// The broker reported that the peer left before the session was established.
    PeerLeft,
    /// The broker is unreachable or closed the connection before the session was set up.
    Broker(String),
    /// The peer connection failed.
    Transport(String),
    /// The target's user (or its acceptance mode) did not let the technician in.
    Consent(ConsentRefusal),
    /// The direct LAN connection failed, or the target refused it (wrong password, back-off).
    Lan(String),
    /// Something else failed on this side.
    Error(String),
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::Local => write!(f, "ended on this side"),
            DisconnectReason::PeerBye { reason, detail } => {
                f.write_str(deskwire_session::goodbye_words(*reason, detail))
            }
            DisconnectReason::PeerTimeout(d) => f.write_str(&deskwire_session::silence_words(*d)),
            DisconnectReason::PeerLeft => write!(f, "the peer left before the session started"),
            DisconnectReason::Broker(e) => write!(f, "broker: {e}"),
            DisconnectReason::Transport(e) => write!(f, "transport: {e}"),
            DisconnectReason::Consent(r) => write!(f, "{}", r.message()),
            DisconnectReason::Lan(e) => write!(f, "LAN: {e}"),
            DisconnectReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// What happens at the target, as data.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// The broker refused the code. Call [`Agent::try_code`] with another, or shut down.
    CodeRefused {
        /// Why.
        reason: JoinRefusal,
        /// The sentence to show the user.
        message: String,
    },
    /// The code was accepted; the peer connection is being set up (through a broker only:
    /// a LAN viewer is first heard of in the consent question, after its password).
    Joined,
    /// Ask the user whether to let the technician in: answer with [`Agent::answer_consent`]
    /// before `timeout`. In [`AcceptanceMode::AllowAutomatically`] silence lets them in; in
    /// [`AcceptanceMode::AllowByRequest`] it keeps them out.
    ConsentRequested {
        /// The mode in force (the stricter of this side's and the broker's).
        mode: AcceptanceMode,
        /// Whether the technician asks to control the screen (not only view it).
        control: bool,
        /// How long the question stays open.
        timeout: Duration,
        /// Who asks, as the broker verified them ("alice of acme"), when it has accounts.
        technician: Option<String>,
    },
    /// The session is established: video flows and, unless view-only, input is injected.
    Connected {
        /// Input from the viewer is injected.
        control: bool,
        /// Time from the broker accepting the code (or the LAN viewer arriving) to the
        /// channels being open; the user's typing of codes is not counted.
        setup: Duration,
    },
    /// An input event was injected.
    InputInjected(InputKind),
    /// An input event was refused.
    InputRefused {
        /// Its kind.
        kind: InputKind,
        /// Why.
        reason: InputRefusal,
    },
    /// A LAN viewer was turned away: a wrong password, or its address is still
    /// backing off after earlier ones. The target keeps listening.
    LanRefused {
        /// Where it came from.
        from: std::net::SocketAddr,
        /// What it was told.
        message: String,
    },
    /// The technician asks for unattended access: answer with [`Agent::answer_grant`].
    GrantRequested {
        /// The request's number in this session.
        id: u32,
        /// What they ask for.
        request: deskwire_signal::grant::GrantRequest,
        /// Who, when the broker named them.
        technician: Option<String>,
    },
    /// A request was decided: `Ok` with the grant's number in this computer's grants file,
    /// or why not.
    GrantDecided {
        /// The request's number in this session.
        id: u32,
        /// The outcome.
        result: Result<u32, GrantRefusal>,
    },
    /// Nothing heard from the technician for a while: the link is down. Whatever they
    /// held was released; the session waits for the link (up to the peer timeout).
    LinkDown,
    /// The technician is heard again after [`AgentEvent::LinkDown`].
    LinkUp,
    /// Periodic statistics.
    Stats(AgentStats),
    /// The session is over; no more events follow.
    Disconnected(DisconnectReason),
}

/// One decoded frame at the viewer. The picture is read with
/// [`Viewer::with_frame`].
#[derive(Debug, Clone, PartialEq)]
pub struct FrameInfo {
    /// Encoded frame id.
    pub frame_id: u64,
    /// Bands updated (bit i = band i).
    pub bands: u32,
    /// Capture->decoded latency, once the clock offset is known.
    pub latency: Option<Duration>,
}

/// What happens at the viewer, as data.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ViewerEvent {
    /// The code to read to the user.
    Code {
        /// The code.
        code: ConnectionCode,
        /// When it stops working if nobody joins.
        expires_at: UnixMillis,
    },
    /// The connection to the broker broke while the code waited for the target; the
    /// viewer is re-attaching to the same code (see [`ViewerEvent::BrokerResumed`]).
    BrokerLost,
    /// Re-attached to the broker after [`ViewerEvent::BrokerLost`]: the code read to the
    /// user still works.
    BrokerResumed,
    /// The target entered the code; the connection is being set up.
    PeerJoined,
    /// The target's answer to [`Viewer::request_unattended`]: the grant, or why not.
    GrantAnswered {
        /// The request's number.
        id: u32,
        /// What the customer approved (with the secret to connect with later), or why not.
        result: Result<grants::GrantTicket, GrantAnswerError>,
    },
    /// The target is asking its user whether to let you in; the session waits up to this.
    AwaitingConsent {
        /// Longest wait.
        timeout: Duration,
        /// Silence lets you in at the end of the wait (the user may refuse until then);
        /// otherwise silence refuses.
        starts_on_its_own: bool,
        /// The computer's own setting, stricter than your group's policy, decided this
        /// wait (the stricter always wins).
        by_computer: bool,
    },
    /// The target's user (or its acceptance mode) settled whether to let you in.
    ConsentDecided {
        /// How.
        decision: deskwire_signal::ConsentDecision,
    },
    /// The target's code or description did not verify (a mistyped secret, or tampering on
    /// the way): nothing was connected. The target may enter the code again; the third
    /// failure burns it.
    VerificationFailed {
        /// What failed.
        why: String,
    },
    /// The session is established.
    Connected {
        /// Time from the target joining to the channels being open.
        setup: Duration,
    },
    /// A stream starts: frames of this size follow.
    StreamStarted {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Bands.
        bands: usize,
    },
    /// A frame was decoded.
    Frame(FrameInfo),
    /// What the target allows now.
    Permissions {
        /// Keyboard and mouse are injected.
        control: bool,
    },
    /// The target's pointer moved or changed shape: draw [`Viewer::cursor`] on top of the
    /// picture. Dropped, like frames, when the application is behind.
    CursorMoved,
    /// Nothing heard from the target for a while: the link is down and the session waits
    /// for it (up to the peer timeout). Show "reconnecting".
    Reconnecting,
    /// The target is heard again after [`ViewerEvent::Reconnecting`].
    Reconnected,
    /// Periodic statistics.
    Stats(ViewerStats),
    /// The session is over; no more events follow.
    Disconnected(DisconnectReason),
}

/// Events queued for the application before new ones are dropped: an application that
/// stops reading must not grow memory. Ends of the session are never dropped.
const EVENT_QUEUE: usize = 4096;

/// The sending side of a handle's event channel.
#[derive(Debug, Clone)]
pub(crate) struct Events<E> {
    tx: Sender<E>,
}

impl<E> Events<E> {
    fn new() -> (Self, Receiver<E>) {
        let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE);
        (Self { tx }, rx)
    }

    /// An ordinary event: dropped if the application is not keeping up.
    pub(crate) fn emit(&self, e: E) {
        let _ = self.tx.try_send(e);
    }

    /// An event the application must see (connected, disconnected).
    pub(crate) fn emit_important(&self, e: E) {
        let _ = self.tx.send_timeout(e, Duration::from_secs(1));
    }
}

/// Run `main` on a new `deskwire-net` thread with its own single-threaded tokio runtime.
pub(crate) fn spawn_net<F, Fut>(main: F) -> Result<JoinHandle<()>, SessionError>
where
    F: FnOnce(tokio::runtime::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("deskwire-net-blocking")
        .build()
        .map_err(SessionError::Thread)?;
    std::thread::Builder::new()
        .name("deskwire-net".into())
        .spawn(move || {
            let handle = rt.handle().clone();
            rt.block_on(main(handle));
            // Tasks still running (channel pumps, webrtc drivers) are cancelled here.
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(SessionError::Thread)
}

/// Join a `deskwire-net` thread started by [`spawn_net`], once (the handle is taken).
pub(crate) fn join_net(net: &mut Option<JoinHandle<()>>) -> Result<(), SessionError> {
    match net.take() {
        Some(t) => t
            .join()
            .map_err(|_| SessionError::Transport(transport::TransportError::Panicked)),
        None => Ok(()),
    }
}

/// Microseconds since `epoch`.
pub(crate) fn micros_since(epoch: std::time::Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}
