//! WebRTC plumbing: the runtime adapter, the peer connection with our settings, and the
//! three data channels.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use rtc::peer_connection::transport::RTCDtlsRole;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, SettingEngineBuilder,
};
use webrtc::runtime::{AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, Runtime};

use crate::config::{MdnsMode, TransportConfig};
use crate::shield_socket::ShieldedSocket;
use crate::SessionError;

pub(crate) use deskwire_session::wire::Channel;

/// The three data channels of a session, by name.
#[derive(Clone)]
pub(crate) struct Channels {
    pub(crate) video: Arc<dyn DataChannel>,
    pub(crate) input: Arc<dyn DataChannel>,
    pub(crate) control: Arc<dyn DataChannel>,
}

impl Channels {
    pub(crate) fn get(&self, channel: Channel) -> &Arc<dyn DataChannel> {
        match channel {
            Channel::Video => &self.video,
            Channel::Input => &self.input,
            Channel::Control => &self.control,
        }
    }
}

/// What the peer connection and its channels tell the session task.
pub(crate) enum NetEvent {
    GatheringComplete,
    State(RTCPeerConnectionState),
    Channel(Arc<dyn DataChannel>),
    Open(Channel),
    Message(Channel, bytes::BytesMut),
    Closed(Channel),
}

impl std::fmt::Debug for NetEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetEvent::GatheringComplete => write!(f, "GatheringComplete"),
            NetEvent::State(s) => write!(f, "State({s})"),
            NetEvent::Channel(_) => write!(f, "Channel"),
            NetEvent::Open(l) => write!(f, "Open({})", l.label()),
            NetEvent::Message(l, m) => write!(f, "Message({}, {} bytes)", l.label(), m.len()),
            NetEvent::Closed(l) => write!(f, "Closed({})", l.label()),
        }
    }
}

/// Why the peer connection could not be set up or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// webrtc refused to build the peer connection.
    #[error("cannot create the peer connection")]
    CreatePeer(#[source] webrtc::error::Error),
    /// webrtc refused to create a data channel.
    #[error("cannot create channel {channel}")]
    CreateChannel {
        /// The channel's label.
        channel: &'static str,
        /// Why.
        #[source]
        source: webrtc::error::Error,
    },
    /// The connection closed while ICE candidates were gathered.
    #[error("the peer connection closed while gathering")]
    ClosedWhileGathering,
    /// ICE gathering did not finish in time.
    #[error("ICE gathering timed out")]
    GatheringTimedOut,
    /// Gathering finished but left no description.
    #[error("no local description after gathering")]
    NoLocalDescription,
    /// The session's network thread panicked.
    #[error("the network thread panicked")]
    Panicked,
}

/// A webrtc [`Runtime`] on the session's own tokio runtime.
///
/// Two reasons not to use webrtc's `TokioRuntime` as is: it parks connection drivers on a
/// process-global pool of threads that never exit (we join every thread we start), and it
/// leaves UDP sockets at the kernel's default buffer size, under which bursts of video are
/// dropped by the kernel and SCTP stalls on its one-second minimum retransmission timeout.
#[derive(Debug)]
pub(crate) struct SessionRuntime {
    handle: tokio::runtime::Handle,
    socket_buffer: usize,
    loss_shield: bool,
    inner: webrtc::runtime::TokioRuntime,
}

impl SessionRuntime {
    pub(crate) fn new(handle: tokio::runtime::Handle, config: &TransportConfig) -> Self {
        Self {
            handle,
            socket_buffer: config.socket_buffer,
            loss_shield: config.loss_shield,
            inner: webrtc::runtime::TokioRuntime,
        }
    }
}

struct Task(tokio::task::JoinHandle<()>);

impl webrtc::runtime::JoinHandle for Task {
    fn detach(&self) {}
    fn abort(&self) {
        self.0.abort();
    }
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for SessionRuntime {
    fn spawn(
        &self,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        Box::new(Task(self.handle.spawn(future)))
    }

    fn wrap_udp_socket(&self, socket: UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let sock = socket2::SockRef::from(&socket);
        // Best effort: the kernel caps these at net.core.{r,w}mem_max for unprivileged users.
        if let Err(e) = sock.set_recv_buffer_size(self.socket_buffer) {
            tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
        }
        if let Err(e) = sock.set_send_buffer_size(self.socket_buffer) {
            tracing::debug!(error = %e, "cannot enlarge the UDP send buffer");
        }
        let _guard = self.handle.enter();
        let socket = self.inner.wrap_udp_socket(socket)?;
        Ok(if self.loss_shield {
            Arc::new(ShieldedSocket::new(socket))
        } else {
            socket
        })
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let _guard = self.handle.enter();
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        self.inner.connect_tcp(remote)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        let _guard = self.handle.enter();
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> BoxFuture<'static, ()> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "deskwire-tokio"
    }
}

/// Forwards the peer connection's callbacks to the session task, never blocking the driver.
struct Handler {
    tx: mpsc::UnboundedSender<NetEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(NetEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(NetEvent::State(state));
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.tx.send(NetEvent::Channel(channel));
    }
}

pub(crate) type Pc = Arc<dyn PeerConnection>;

/// A peer connection, the sender its drivers post network events with, and their receiver.
pub(crate) type BuiltPeer = (
    Pc,
    mpsc::UnboundedSender<NetEvent>,
    mpsc::UnboundedReceiver<NetEvent>,
);

/// Build a peer connection with our settings, its drivers on the session's runtime
/// (`handle`); its events arrive on the returned receiver.
pub(crate) async fn build_peer(
    config: &TransportConfig,
    handle: &tokio::runtime::Handle,
) -> Result<BuiltPeer, SessionError> {
    let mdns = match config.mdns {
        MdnsMode::Disabled => MulticastDnsMode::Disabled,
        MdnsMode::QueryOnly => MulticastDnsMode::QueryOnly,
        MdnsMode::QueryAndGather => MulticastDnsMode::QueryAndGather,
    };
    let mdns = if mdns != MulticastDnsMode::Disabled && !multicast_route() {
        tracing::info!("no multicast route here; going on without mDNS (.local) candidates");
        MulticastDnsMode::Disabled
    } else {
        mdns
    };
    match build_peer_with(config, handle, mdns).await {
        Err(e) if mdns != MulticastDnsMode::Disabled => {
            // mDNS needs a multicast route; a namespace, a container or a locked-down
            // host may have none ("No such device"). Plain IP candidates still connect.
            tracing::info!(
                error = %crate::with_causes(&e),
                "mDNS is unavailable on this network; going on without .local candidates"
            );
            build_peer_with(config, handle, MulticastDnsMode::Disabled).await
        }
        other => other,
    }
}

/// Whether this host can join the mDNS multicast group: a network namespace, a container
/// or a host without a multicast route cannot ("No such device"), and WebRTC's mDNS then
/// fails at every session with an error that means nothing to the user.
fn multicast_route() -> bool {
    let Ok(socket) = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)) else {
        return false;
    };
    socket
        .join_multicast_v4(
            &std::net::Ipv4Addr::new(224, 0, 0, 251),
            &std::net::Ipv4Addr::UNSPECIFIED,
        )
        .is_ok()
}

async fn build_peer_with(
    config: &TransportConfig,
    handle: &tokio::runtime::Handle,
    mdns: MulticastDnsMode,
) -> Result<BuiltPeer, SessionError> {
    let runtime = Arc::new(SessionRuntime::new(handle.clone(), config));
    let (tx, rx) = mpsc::unbounded_channel();
    let events = tx.clone();
    let settings = SettingEngineBuilder::new()
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(config.max_message as u32))
        .with_multicast_dns_mode(mdns)
        .with_ice_connection_attempts(Some(config.ice_check_interval), None)
        .with_ice_timeouts(
            Some(config.ice_disconnected_timeout),
            Some(config.ice_failed_timeout),
            Some(config.ice_keepalive_interval),
        )
        .with_include_loopback_candidate(config.bind.iter().any(|a| a.is_loopback()))
        // The offerer (the target) becomes the DTLS client and so the SCTP client: it owns
        // the channels, so it can wake the driver when the handshake stalls (see
        // `agent::connect`). Costs nothing here: the handshake cannot start before the
        // answer reaches the offerer in either role when candidates come with the SDP.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .build();
    let ice_servers = config
        .ice_servers
        .iter()
        .map(|url| webrtc::peer_connection::RTCIceServer {
            urls: vec![url.clone()],
            ..Default::default()
        })
        .collect();
    let addrs: Vec<String> = config
        .bind
        .iter()
        .map(|ip| SocketAddr::new(*ip, 0).to_string())
        .collect();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(ice_servers)
                .build(),
        )
        .with_setting_engine(settings)
        .with_runtime(runtime)
        .with_handler(Arc::new(Handler { tx }))
        .with_udp_addrs(addrs)
        .with_data_channel_send_buffer_limit(config.send_buffer)
        .build()
        .await
        .map_err(TransportError::CreatePeer)?;
    Ok((Arc::new(pc), events, rx))
}

/// The SCTP stream both ends open the video channel on, agreed in advance.
const VIDEO_STREAM_ID: u16 = 0;

/// The video channel: unordered and partially reliable both ways, so a lost message holds
/// up none after it. Each end opens it itself on `VIDEO_STREAM_ID` (negotiated out of
/// band, as a browser can too): opened in-band by the target, webrtc 0.21 left the
/// accepting end's SCTP stream ordered and reliable, and every feedback, NACK and ping the
/// viewer sent on it waited behind a lost one until SCTP's retransmission (a second and
/// more after an outage).
pub(crate) async fn create_video_channel(
    pc: &Pc,
    config: &TransportConfig,
) -> Result<Arc<dyn DataChannel>, SessionError> {
    let lifetime = u16::try_from(config.video_packet_lifetime.as_millis()).unwrap_or(u16::MAX);
    let init = RTCDataChannelInit {
        ordered: false,
        max_packet_life_time: Some(lifetime),
        negotiated: Some(VIDEO_STREAM_ID),
        ..Default::default()
    };
    create_channel(pc, Channel::Video, init).await
}

async fn create_channel(
    pc: &Pc,
    channel: Channel,
    init: RTCDataChannelInit,
) -> Result<Arc<dyn DataChannel>, SessionError> {
    pc.create_data_channel(channel.label(), Some(init))
        .await
        .map_err(|source| {
            TransportError::CreateChannel {
                channel: channel.label(),
                source,
            }
            .into()
        })
}

/// The target creates the channels: video (see [`create_video_channel`]), then input and
/// control, reliable and ordered, announced in-band.
pub(crate) async fn create_channels(
    pc: &Pc,
    config: &TransportConfig,
) -> Result<Channels, SessionError> {
    Ok(Channels {
        video: create_video_channel(pc, config).await?,
        input: create_channel(pc, Channel::Input, RTCDataChannelInit::default()).await?,
        control: create_channel(pc, Channel::Control, RTCDataChannelInit::default()).await?,
    })
}

/// Forward one channel's events to the session task until it closes.
pub(crate) fn pump(
    handle: &tokio::runtime::Handle,
    label: Channel,
    dc: Arc<dyn DataChannel>,
    tx: mpsc::UnboundedSender<NetEvent>,
) -> tokio::task::JoinHandle<()> {
    handle.spawn(async move {
        while let Some(ev) = dc.poll().await {
            let out = match ev {
                DataChannelEvent::OnOpen => NetEvent::Open(label),
                DataChannelEvent::OnMessage(m) => NetEvent::Message(label, m.data),
                DataChannelEvent::OnClose => {
                    let _ = tx.send(NetEvent::Closed(label));
                    return;
                }
                _ => continue,
            };
            if tx.send(out).is_err() {
                return;
            }
        }
        let _ = tx.send(NetEvent::Closed(label));
    })
}

/// Offer or answer after full ICE gathering, as one SDP string.
pub(crate) async fn gathered_sdp(
    pc: &Pc,
    events: &mut mpsc::UnboundedReceiver<NetEvent>,
    backlog: &mut Vec<NetEvent>,
    timeout: Duration,
) -> Result<String, SessionError> {
    let wait = async {
        while let Some(ev) = events.recv().await {
            match ev {
                NetEvent::GatheringComplete => return Ok(()),
                other => backlog.push(other),
            }
        }
        Err(TransportError::ClosedWhileGathering)
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| TransportError::GatheringTimedOut)??;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or(TransportError::NoLocalDescription.into())
}

/// A channel or the connection closed: the peer's goodbye may still be queued behind the
/// close (each channel has its own pump), so look for it briefly before calling it a
/// transport failure.
pub(crate) async fn closed_reason(
    net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
) -> crate::DisconnectReason {
    let look = async {
        while let Some(ev) = net_rx.recv().await {
            if let NetEvent::Message(Channel::Control, data) = ev {
                if let Ok(deskwire_session::wire::ControlMessage::Bye { reason, detail }) =
                    deskwire_session::wire::decode_control(&data)
                {
                    return Some(crate::DisconnectReason::PeerBye { reason, detail });
                }
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_millis(200), look)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| crate::DisconnectReason::Transport("the peer connection closed".into()))
}

/// Wait until what was sent on `dc` is acknowledged, so a goodbye is not cut off by
/// closing the connection right after it: a round trip on a healthy path. At most
/// `FLUSH_LIMIT`: past SCTP's 1 s retransmission timer, so a goodbye lost as the last
/// packet on the path (nothing after it to reveal the loss sooner) is sent once more.
/// At 300 ms, an LTE-like path's loss burst ate a viewer's goodbye and its close, and
/// the target kept the session for its 45 s peer timeout.
pub(crate) async fn flush(dc: &Arc<dyn DataChannel>) {
    const FLUSH_LIMIT: Duration = Duration::from_millis(1300);
    let wait = async {
        while dc.outstanding_bytes().await.is_ok_and(|n| n > 0) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let _ = tokio::time::timeout(FLUSH_LIMIT, wait).await;
}
