//! Validated settings of the two session ends.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use deskwire_session::consent::AcceptanceMode;

use deskwire_engine::PipelineConfig;

/// How ICE uses multicast DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MdnsMode {
    /// No mDNS at all: needed in network namespaces that have only `lo`.
    Disabled,
    /// Resolve the peer's `.local` candidates, announce plain IPs (the default).
    #[default]
    QueryOnly,
    /// Resolve the peer's `.local` candidates and hide our IPs behind `.local` names.
    QueryAndGather,
}

/// WebRTC settings shared by both ends.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Addresses to gather host candidates on (port chosen by the OS). A wildcard address
    /// skips loopback, so loopback sessions must name `127.0.0.1`.
    pub bind: Vec<IpAddr>,
    /// STUN/TURN server URLs.
    pub ice_servers: Vec<String>,
    /// Multicast DNS candidate mode.
    pub mdns: MdnsMode,
    /// Time between ICE connectivity checks. webrtc's 200 ms default costs three ticks
    /// before a loopback session opens.
    pub ice_check_interval: Duration,
    /// Silence after which ICE calls the path disconnected.
    pub ice_disconnected_timeout: Duration,
    /// Silence after which ICE gives the path up and the connection closes: longer than
    /// the session's peer timeout, so an outage the session means to survive does not end
    /// the connection under it.
    pub ice_failed_timeout: Duration,
    /// ICE keepalive period.
    pub ice_keepalive_interval: Duration,
    /// Largest data channel message, negotiated in the SDP (64 KiB..=256 KiB).
    pub max_message: usize,
    /// Bytes a channel may have queued but unacknowledged; beyond it video is dropped
    /// (input and control are never near it).
    pub send_buffer: usize,
    /// How long SCTP keeps retrying a video message: a few round trips even of a long
    /// path, so a lost piece of a keyframe is sent again instead of the whole keyframe,
    /// while a band frame that cannot make it in time is given up (the viewer then asks
    /// for a refresh).
    pub video_packet_lifetime: Duration,
    /// UDP socket send and receive buffer size.
    pub socket_buffer: usize,
    /// Send a parity after each small group of packets and hand arriving packets to
    /// SCTP in order, so that random loss and reordering do not cut its window (see
    /// `deskwire_session::shield`). Costs 10-25 % more packets while video flows; a peer
    /// without it ignores the parities.
    pub loss_shield: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            bind: vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            ice_servers: Vec::new(),
            mdns: MdnsMode::default(),
            ice_check_interval: Duration::from_millis(5),
            // Liveness is the session's own (quiet link, peer timeout); ICE only has to keep
            // NAT bindings and consent fresh, and every check costs bytes on an idle link:
            // a keepalive every 10 s (half of what a still desktop cost at 5 s), and
            // "disconnected" only after two of them went unanswered.
            ice_disconnected_timeout: Duration::from_secs(25),
            ice_failed_timeout: Duration::from_secs(60),
            ice_keepalive_interval: Duration::from_secs(10),
            max_message: 256 * 1024,
            send_buffer: 2 * 1024 * 1024,
            // Long enough for a message to wait out its queue in SCTP (a round trip plus
            // 40 ms of what it lets through) and one retransmission on a 600 ms path: at
            // 1 s the satellite profile's keyframes expired piecemeal in SCTP's slow start,
            // were asked for again, and the session sat frozen for the whole run.
            video_packet_lifetime: Duration::from_millis(2000),
            socket_buffer: 4 * 1024 * 1024,
            loss_shield: true,
        }
    }
}

/// A setting of a session is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionConfigError {
    /// The broker URL is not a `ws://` URL.
    #[error("invalid broker URL {0:?} (expected ws://HOST:PORT; TLS to the broker is not supported yet)")]
    BrokerUrl(String),
    /// No bind address.
    #[error("no bind address (expected at least one IP to gather candidates on)")]
    NoBind,
    /// A duration out of range.
    #[error("invalid {name} {value:?} (expected {min:?}..={max:?})")]
    Duration {
        /// Setting.
        name: &'static str,
        /// Value given.
        value: Duration,
        /// Smallest allowed.
        min: Duration,
        /// Largest allowed.
        max: Duration,
    },
    /// A size out of range.
    #[error("invalid {name} {value} (expected {min}..={max})")]
    Size {
        /// Setting.
        name: &'static str,
        /// Value given.
        value: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
}

fn check_duration(
    name: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), SessionConfigError> {
    if value < min || value > max {
        return Err(SessionConfigError::Duration {
            name,
            value,
            min,
            max,
        });
    }
    Ok(())
}

fn check_size(
    name: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), SessionConfigError> {
    if value < min || value > max {
        return Err(SessionConfigError::Size {
            name,
            value,
            min,
            max,
        });
    }
    Ok(())
}

impl TransportConfig {
    /// Settings for a session through `broker`: when the broker is on loopback the peers
    /// are too, and a wildcard bind would skip loopback, so bind 127.0.0.1; otherwise the
    /// wildcard. `bind` overrides both.
    pub fn for_broker(broker: &str, bind: Option<IpAddr>) -> Self {
        let host = broker
            .trim_start_matches("ws://")
            .trim_start_matches("wss://")
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let ip = bind.unwrap_or(if loopback {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        TransportConfig::default().bind(vec![ip])
    }

    /// Gather candidates on these addresses only.
    pub fn bind(mut self, bind: Vec<IpAddr>) -> Self {
        self.bind = bind;
        self
    }

    /// Whether the loss shield is on (it is by default).
    pub fn loss_shield(mut self, on: bool) -> Self {
        self.loss_shield = on;
        self
    }

    /// Multicast DNS mode.
    pub fn mdns(mut self, mdns: MdnsMode) -> Self {
        self.mdns = mdns;
        self
    }

    /// Check every setting; the error names the allowed range.
    pub fn validate(&self) -> Result<(), SessionConfigError> {
        if self.bind.is_empty() {
            return Err(SessionConfigError::NoBind);
        }
        let ms = Duration::from_millis;
        check_duration(
            "ice_check_interval",
            self.ice_check_interval,
            ms(5),
            ms(1000),
        )?;
        check_duration(
            "ice_disconnected_timeout",
            self.ice_disconnected_timeout,
            ms(500),
            ms(60_000),
        )?;
        check_duration(
            "ice_failed_timeout",
            self.ice_failed_timeout,
            self.ice_disconnected_timeout,
            ms(660_000),
        )?;
        check_duration(
            "ice_keepalive_interval",
            self.ice_keepalive_interval,
            ms(100),
            ms(30_000),
        )?;
        check_duration(
            "video_packet_lifetime",
            self.video_packet_lifetime,
            ms(1),
            ms(10_000),
        )?;
        check_size("max_message", self.max_message, 64 * 1024, 256 * 1024)?;
        check_size(
            "send_buffer",
            self.send_buffer,
            256 * 1024,
            256 * 1024 * 1024,
        )?;
        check_size(
            "socket_buffer",
            self.socket_buffer,
            64 * 1024,
            64 * 1024 * 1024,
        )?;
        Ok(())
    }
}

/// Timing shared by both ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) connect_timeout: Duration,
    pub(crate) peer_timeout: Duration,
}

fn check_url(url: &str) -> Result<(), SessionConfigError> {
    let ok = url
        .strip_prefix("ws://")
        .is_some_and(|rest| !rest.is_empty());
    if !ok {
        return Err(SessionConfigError::BrokerUrl(url.to_owned()));
    }
    Ok(())
}

/// Settings of the target end ([`crate::Agent`]).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Broker URL, `ws://HOST:PORT`.
    pub broker: String,
    /// Brokers to try, in order, when `broker` cannot be reached.
    pub fallback_brokers: Vec<String>,
    /// Where this computer's device key lives (created on first use, mode 0600). With it,
    /// every join proves which device this is; without, the target is anonymous.
    pub device_key: Option<std::path::PathBuf>,
    /// Only show the screen; inject no input.
    pub view_only: bool,
    /// X display to inject input into (`None`: `$DISPLAY`).
    pub input_display: Option<String>,
    /// The media pipeline.
    pub pipeline: PipelineConfig,
    /// WebRTC settings.
    pub transport: TransportConfig,
    /// Give up on the broker and the peer connection after this long.
    pub connect_timeout: Duration,
    /// Declare the viewer gone after this long without hearing from it.
    pub peer_timeout: Duration,
    /// How this computer admits a technician. Default: at once, without a prompt (an
    /// embedding application that shows a prompt sets a mode that asks).
    pub acceptance: AcceptanceMode,
    /// When set, a technician gets in only with the name and password of one of these
    /// accounts (sealed under the PAKE key, checked here before the user is asked).
    pub require_admin: Option<crate::accounts::AdminAccounts>,
    /// Where approved unattended-access grants are kept; without it, requests are refused.
    pub grants: Option<crate::grants::LocalGrants>,
    /// The rules approvals follow (allowed credential modes, the customer-credential cap).
    pub grant_policy: deskwire_signal::grant::GrantPolicy,
    /// The accounts a customer's own credentials are checked against (customer-credential
    /// grants).
    pub customer_accounts: Option<crate::accounts::AdminAccounts>,
    /// The device id (`dev-...`) the broker knows this computer by, written into each
    /// approved grant's ticket so the technician's viewer knows where to call.
    pub grant_device: Option<String>,
}

impl AgentConfig {
    /// Defaults with this broker.
    pub fn new(broker: impl Into<String>) -> Self {
        Self {
            broker: broker.into(),
            fallback_brokers: Vec::new(),
            device_key: None,
            view_only: false,
            input_display: None,
            pipeline: PipelineConfig::default(),
            transport: TransportConfig::default(),
            connect_timeout: Duration::from_secs(15),
            // Long enough to ride out a Wi-Fi roam or a tunnel: the link is reported down
            // (and held keys released) after 2.5 s of silence, ended only after this.
            // Longer than the outages it should ride out (30 s) plus SCTP's backed-off
            // retransmission (after 25 s dark its next try comes ~6 s after the link returns).
            peer_timeout: Duration::from_secs(45),
            acceptance: AcceptanceMode::AllowAutomatically {
                reject_window: Duration::ZERO,
            },
            require_admin: None,
            grants: None,
            grant_policy: deskwire_signal::grant::GrantPolicy::default(),
            customer_accounts: None,
            grant_device: None,
        }
    }

    /// Name this computer's device id (`dev-...`) in the tickets of the grants its user
    /// approves: the device the technician calls unattended through the broker.
    pub fn grant_device(mut self, device_id: impl Into<String>) -> Self {
        self.grant_device = Some(device_id.into());
        self
    }

    /// Keep approved unattended-access grants here, under `policy`; customer credentials
    /// are checked against `customer_accounts`.
    pub fn unattended(
        mut self,
        grants: crate::grants::LocalGrants,
        policy: deskwire_signal::grant::GrantPolicy,
        customer_accounts: Option<crate::accounts::AdminAccounts>,
    ) -> Self {
        self.grants = Some(grants);
        self.grant_policy = policy;
        self.customer_accounts = customer_accounts;
        self
    }

    /// Let technicians in only with an administrator's name and password from `accounts`.
    pub fn require_admin(mut self, accounts: crate::accounts::AdminAccounts) -> Self {
        self.require_admin = Some(accounts);
        self
    }

    /// Keep this computer's device key at `path` (created on first use).
    pub fn device_key(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.device_key = Some(path.into());
        self
    }

    /// Brokers to fail over to, in order, when the first cannot be reached.
    pub fn fallback_brokers(mut self, urls: Vec<String>) -> Self {
        self.fallback_brokers = urls;
        self
    }

    /// How this computer admits a technician.
    pub fn acceptance(mut self, mode: AcceptanceMode) -> Self {
        self.acceptance = mode;
        self
    }

    /// View-only session.
    pub fn view_only(mut self, view_only: bool) -> Self {
        self.view_only = view_only;
        self
    }

    /// Inject into this X display.
    pub fn input_display(mut self, display: Option<String>) -> Self {
        self.input_display = display;
        self
    }

    /// Pipeline settings.
    pub fn pipeline(mut self, pipeline: PipelineConfig) -> Self {
        self.pipeline = pipeline;
        self
    }

    /// Transport settings.
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Peer silence timeout.
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// Check every setting (the pipeline's frame-size checks run when the source is known).
    pub fn validate(&self) -> Result<(), SessionConfigError> {
        check_url(&self.broker)?;
        for url in &self.fallback_brokers {
            check_url(url)?;
        }
        self.validate_local()
    }

    /// Every setting but the brokers: what a LAN target, which has none, must get right.
    pub(crate) fn validate_local(&self) -> Result<(), SessionConfigError> {
        self.transport.validate()?;
        match self.acceptance {
            AcceptanceMode::AllowAutomatically { reject_window: d } => check_duration(
                "acceptance reject_window",
                d,
                Duration::ZERO,
                MAX_CONSENT_WAIT,
            )?,
            AcceptanceMode::AllowByRequest { timeout: d } => check_duration(
                "acceptance timeout",
                d,
                Duration::from_secs(1),
                MAX_CONSENT_WAIT,
            )?,
            AcceptanceMode::Deny => {}
        }
        self.timing().validate()
    }

    pub(crate) fn timing(&self) -> Timing {
        Timing {
            connect_timeout: self.connect_timeout,
            peer_timeout: self.peer_timeout,
        }
    }
}

/// The longest a user may be left to answer a session request.
const MAX_CONSENT_WAIT: Duration = Duration::from_secs(10 * 60);

/// Settings of the technician's end ([`crate::Viewer`]).
#[derive(Debug, Clone)]
pub struct ViewerConfig {
    /// Broker URL, `ws://HOST:PORT`.
    pub broker: String,
    /// WebRTC settings.
    pub transport: TransportConfig,
    /// Give up on the broker and the peer connection after this long (after the target
    /// joined; waiting for the target to join is bounded by the code's lifetime).
    pub connect_timeout: Duration,
    /// Declare the target gone after this long without hearing from it.
    pub peer_timeout: Duration,
    /// Least time between two keyframe requests.
    pub keyframe_retry: Duration,
    /// The technician's API token, for a broker with accounts.
    pub token: Option<String>,
    /// How the target is reached: a code to read out (the default), a LAN target, an
    /// ad-hoc session's temporary host, or a device's agent under an unattended grant.
    pub route: ViewerRoute,
    /// The target's administrator name and password, for a target that requires them.
    pub admin: Option<AdminCredentials>,
    /// Ask the broker for a resume token, so a lost broker connection (a broker restart)
    /// does not cost the code while it waits for the target. Brokers older than resume
    /// support refuse the request: turn it off for them.
    pub resumable: bool,
}

/// How the viewer reaches its target: exactly one of these, so no combination of settings
/// can be ambiguous.
#[derive(Debug, Clone)]
pub enum ViewerRoute {
    /// Through the broker: create a connection code for the target's user to type.
    Code,
    /// Straight to a LAN target, no broker.
    Lan(LanTarget),
    /// Through the broker, to an ad-hoc session's temporary host.
    Adhoc(AdhocTarget),
    /// Through the broker, unattended, to a device's agent under a grant.
    Unattended(UnattendedTarget),
}

/// An administrator account of the target, as the technician types it.
#[derive(Clone)]
pub struct AdminCredentials {
    /// The account name.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for AdminCredentials {
    // Configs end up in logs; the password must not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// An active ad-hoc session to connect to, and its invitation link (whose secret the key
/// exchange runs on).
#[derive(Debug, Clone)]
pub struct AdhocTarget {
    /// The ad-hoc session.
    pub session: deskwire_signal::adhoc::AdhocId,
    /// Its invitation link.
    pub link: deskwire_signal::adhoc::AdhocLink,
}

/// A device to connect to unattended through the broker, and the grant to connect under.
#[derive(Debug, Clone)]
pub struct UnattendedTarget {
    /// The device id (`dev-...`).
    pub device: String,
    /// The grant (its number and secret), as the target gave it when its user approved.
    pub ticket: crate::grants::GrantTicket,
}

/// A LAN target to connect to directly, with its password, and the technician's
/// permission to go around the broker ([`crate::lan::check_lan_permission`] gives it).
#[derive(Debug, Clone)]
pub struct LanTarget {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its current remote-connection password.
    pub password: deskwire_signal::lan::LanPassword,
    /// Connect under this unattended-access grant instead (the password is then unused):
    /// nobody at the target needs to answer while the grant's window is open.
    pub grant: Option<crate::grants::GrantTicket>,
    /// That this technician may connect on the LAN: required, so no program can skip the
    /// check.
    pub permission: crate::lan::LanPermission,
}

impl ViewerConfig {
    /// Defaults with this broker.
    pub fn new(broker: impl Into<String>) -> Self {
        Self {
            broker: broker.into(),
            transport: TransportConfig::default(),
            connect_timeout: Duration::from_secs(15),
            // Long enough to ride out a Wi-Fi roam or a tunnel: the link is reported down
            // (and held keys released) after 2.5 s of silence, ended only after this.
            // Longer than the outages it should ride out (30 s) plus SCTP's backed-off
            // retransmission (after 25 s dark its next try comes ~6 s after the link returns).
            peer_timeout: Duration::from_secs(45),
            keyframe_retry: Duration::from_millis(250),
            token: None,
            route: ViewerRoute::Code,
            admin: None,
            resumable: true,
        }
    }

    /// Present these administrator credentials to a target that requires them.
    pub fn admin_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.admin = Some(AdminCredentials {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Whether to ask for a resume token (see [`ViewerConfig::resumable`]).
    pub fn resumable(mut self, resumable: bool) -> Self {
        self.resumable = resumable;
        self
    }

    /// Defaults for connecting, through `broker` with the technician's `token`, to ad-hoc
    /// session `session` (as often as needed while it is active).
    pub fn adhoc(
        broker: impl Into<String>,
        token: impl Into<String>,
        session: deskwire_signal::adhoc::AdhocId,
        link: deskwire_signal::adhoc::AdhocLink,
    ) -> Self {
        Self {
            route: ViewerRoute::Adhoc(AdhocTarget { session, link }),
            // A call's code is made for one connection: nothing to resume.
            resumable: false,
            ..Self::new(broker).token(token)
        }
    }

    /// Defaults for an unattended connection through `broker`, with the technician's
    /// `token`, to `device` under the grant in `ticket`: the broker checks its copy of the
    /// grant, the device its own; nobody at the device is asked.
    pub fn unattended(
        broker: impl Into<String>,
        token: impl Into<String>,
        device: impl Into<String>,
        ticket: crate::grants::GrantTicket,
    ) -> Self {
        Self {
            route: ViewerRoute::Unattended(UnattendedTarget {
                device: device.into(),
                ticket,
            }),
            resumable: false,
            ..Self::new(broker).token(token)
        }
    }

    /// Defaults for an unattended connection to the LAN target at `addr` under `grant`.
    pub fn lan_grant(
        addr: std::net::SocketAddr,
        grant: crate::grants::GrantTicket,
        permission: crate::lan::LanPermission,
    ) -> Self {
        Self {
            route: ViewerRoute::Lan(LanTarget {
                addr,
                // Unused under a grant; any value will do.
                password: deskwire_signal::lan::LanPassword::from_random(0),
                grant: Some(grant),
                permission,
            }),
            ..Self::new("")
        }
    }

    /// Defaults for a direct connection to the LAN target at `addr`, no broker.
    pub fn lan(
        addr: std::net::SocketAddr,
        password: deskwire_signal::lan::LanPassword,
        permission: crate::lan::LanPermission,
    ) -> Self {
        Self {
            route: ViewerRoute::Lan(LanTarget {
                addr,
                password,
                grant: None,
                permission,
            }),
            ..Self::new("")
        }
    }

    /// Transport settings.
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Peer silence timeout.
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// Present this API token to the broker.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Check every setting.
    pub fn validate(&self) -> Result<(), SessionConfigError> {
        if !matches!(self.route, ViewerRoute::Lan(_)) {
            check_url(&self.broker)?;
        }
        self.transport.validate()?;
        check_duration(
            "keyframe_retry",
            self.keyframe_retry,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )?;
        self.timing().validate()
    }

    pub(crate) fn timing(&self) -> Timing {
        Timing {
            connect_timeout: self.connect_timeout,
            peer_timeout: self.peer_timeout,
        }
    }
}

impl Timing {
    fn validate(&self) -> Result<(), SessionConfigError> {
        check_duration(
            "connect_timeout",
            self.connect_timeout,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?;
        check_duration(
            "peer_timeout",
            self.peer_timeout,
            Duration::from_millis(1500),
            Duration::from_secs(600),
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn loopback_brokers_bind_loopback_and_others_the_wildcard() {
        let ip = |url| TransportConfig::for_broker(url, None).bind[0];
        assert!(ip("ws://127.0.0.1:8450").is_loopback());
        assert!(ip("ws://localhost:8450").is_loopback());
        assert!(ip("ws://broker.example:8450").is_unspecified());
        let forced = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            TransportConfig::for_broker("ws://broker.example", Some(forced)).bind,
            vec![forced]
        );
    }

    use super::*;

    #[test]
    fn defaults_are_valid() {
        AgentConfig::new("ws://127.0.0.1:1").validate().unwrap();
        ViewerConfig::new("ws://broker.example:8450")
            .validate()
            .unwrap();
        assert!(ViewerConfig::new("wss://broker.example")
            .validate()
            .is_err());
    }

    #[test]
    fn errors_name_the_setting_and_its_range() {
        let e = AgentConfig::new("http://x").validate().unwrap_err();
        assert!(e.to_string().contains("ws://HOST:PORT"), "{e}");
        let t = TransportConfig {
            max_message: 1 << 20,
            ..TransportConfig::default()
        };
        let e = t.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid max_message 1048576 (expected 65536..=262144)"
        );
        let e = ViewerConfig::new("ws://a:1")
            .peer_timeout(Duration::from_millis(10))
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("invalid peer_timeout 10ms"),
            "{e}"
        );
        assert_eq!(
            TransportConfig::default().bind(vec![]).validate(),
            Err(SessionConfigError::NoBind)
        );
    }
}
