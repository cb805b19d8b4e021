//! Direct connections on the LAN, with no broker in the path.
//!
//! A target in LAN mode ([`crate::Agent::start_lan`]) listens for viewers on a TCP port
//! and answers them the way a broker would, so the rest of the session (PAKE, consent, MACed
//! offer and answer, WebRTC) is the same code as with a broker. What replaces the code is
//! the target's rotating password ([`LanPasswords`]), which is only ever a PAKE input.
//!
//! [`Advertisement`] announces a target with DNS-SD over mDNS; [`Browser`] lists them as they
//! answer, so a technician can pick one before the list is complete.
//!
//! [`LanAgent`] is a whole LAN target, session after session (`deskwire-agent --lan`).
//!
//! A technician connects only with a [`LanPermission`] ([`check_lan_permission`]: their
//! broker or the local policy decides).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use deskwire_signal::lan::LanBackoff;
pub use deskwire_signal::lan::{
    BackoffLimits, LanPassword, LanPasswordError, PasswordRotation, DEFAULT_PORT, SERVICE_TYPE,
};
use deskwire_signal::{BrokerMessage, ClientMessage, UnixMillis};

use crate::signalling::{ask_broker, SignalError};
use crate::SessionError;

/// Why a LAN operation failed: the direct link, listening, mDNS, or a refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LanError {
    /// The direct WebSocket link to the other end failed.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The target cannot listen where it was told to.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Announcing this computer over mDNS failed.
    #[error("cannot announce on the LAN")]
    Announce(#[source] mdns_sd::Error),
    /// Looking for computers over mDNS failed.
    #[error("cannot browse the LAN")]
    Browse(#[source] mdns_sd::Error),
    /// A LAN name must be a short DNS-SD instance name.
    #[error("a LAN name has 1 to 63 bytes; {name:?} has {}", name.len())]
    BadName {
        /// The name given.
        name: String,
    },
    /// The broker (or the target) refused; its sentence says why.
    #[error("{0}")]
    Refused(String),
    /// The broker sent a password that is not one.
    #[error("the broker sent a bad password")]
    BadPassword(#[source] LanPasswordError),
}

mod agent;
mod permission;

pub use agent::{
    LanAgent, LanAgentConfig, LanAgentError, LanAgentEvent, PasswordReportError, PasswordReportTo,
};
pub use permission::{
    check_lan_permission, LanPermission, LanPermissionError, LocalPolicy, LocalPolicyError,
    PolicySyntaxError, DEFAULT_POLICY_PATH,
};

/// Report this LAN target's current password to the first of `brokers` that answers,
/// signed with the device key at `device_key` (made on first use): a technician allowed to
/// connect on the LAN can then read it from the broker. Blocks up to about `timeout` per
/// broker.
pub fn report_lan_password(
    brokers: &[String],
    device_key: &std::path::Path,
    passwords: &LanPasswords,
    timeout: Duration,
) -> Result<(), SessionError> {
    let key = crate::device::load_or_create(device_key)?;
    let now = UnixMillis::now();
    let password = passwords.current_at(now).to_string();
    let rotates_at = passwords.rotates_at();
    let mut failures = Vec::new();
    for broker in brokers {
        let report = ClientMessage::ReportLanPassword {
            device: key.prove_lan_report(&password, rotates_at, now),
            password: password.clone(),
            rotates_at,
            reported_at: now,
        };
        match ask_broker(broker, &report, timeout) {
            Ok(BrokerMessage::LanReported {}) => {
                tracing::info!(broker, device = %key.id(), "reported the LAN password");
                return Ok(());
            }
            Ok(BrokerMessage::Error { message }) => {
                return Err(LanError::Refused(format!(
                    "the broker refused the LAN password report: {message}"
                ))
                .into())
            }
            Ok(other) => return Err(SignalError::unexpected("the broker", &other).into()),
            Err(e) => failures.push(e),
        }
    }
    Err(match failures.len() {
        1 => failures.remove(0),
        _ => SignalError::NoBroker(failures),
    }
    .into())
}

/// A managed device's current LAN password, as it last reported it to `broker`, for the
/// technician holding `token` (their group needs the `lan` permission). With it: when it
/// rotates.
pub fn fetch_lan_password(
    broker: &str,
    token: &str,
    device: &str,
    timeout: Duration,
) -> Result<(LanPassword, UnixMillis), SessionError> {
    let ask = ClientMessage::GetLanPassword {
        token: token.to_owned(),
        device: device.to_owned(),
    };
    match ask_broker(broker, &ask, timeout)? {
        BrokerMessage::LanPassword {
            password,
            rotates_at,
            ..
        } => {
            let password = password.parse().map_err(LanError::BadPassword)?;
            Ok((password, rotates_at))
        }
        BrokerMessage::Error { message } => Err(LanError::Refused(message).into()),
        other => Err(SignalError::unexpected("the broker", &other).into()),
    }
}

/// The id of the device whose key is at `device_key` (made on first use), as the broker
/// and its admins know it.
pub fn device_id(device_key: &std::path::Path) -> Result<String, SessionError> {
    Ok(crate::device::load_or_create(device_key)?.id())
}

/// The target's remote-connection password and its rotation, shared by everything in the
/// agent that needs it (the listener, the local control socket, the UI). A new set starts
/// with a new password, so a restarted agent never reuses the last one.
#[derive(Debug, Clone)]
pub struct LanPasswords {
    rotation: Arc<Mutex<PasswordRotation>>,
}

impl LanPasswords {
    /// A fresh password, rotated every `period` from `now`.
    pub fn new(now: UnixMillis, period: Duration) -> Self {
        Self {
            rotation: Arc::new(Mutex::new(PasswordRotation::new(fresh(), now, period))),
        }
    }

    /// A fresh password, rotated daily from the system clock.
    pub fn daily() -> Self {
        Self::new(UnixMillis::now(), PasswordRotation::DEFAULT_PERIOD)
    }

    /// The password at `now` (rotated first if its period is over).
    pub fn current_at(&self, now: UnixMillis) -> LanPassword {
        let mut r = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
        let (p, rotated) = r.current(now, fresh);
        if rotated {
            tracing::info!(at = %now, "the LAN password rotated");
        }
        p.clone()
    }

    /// The password now.
    pub fn current(&self) -> LanPassword {
        self.current_at(UnixMillis::now())
    }

    /// When the current password stops working.
    pub fn rotates_at(&self) -> UnixMillis {
        self.rotation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rotates_at()
    }
}

/// Sixty bits from the thread's CSPRNG (ChaCha, seeded by the OS).
fn fresh() -> LanPassword {
    LanPassword::from_random(rand::random())
}

/// How a LAN target listens.
#[derive(Debug, Clone)]
pub struct LanListenConfig {
    /// Where to listen (`0.0.0.0:8451` by default).
    pub listen: SocketAddr,
    /// The password viewers must know.
    pub passwords: LanPasswords,
    /// How long wrong passwords make their source wait.
    pub backoff: BackoffLimits,
    /// The failures per source, kept from one session's listener to the next.
    pub(crate) record: BackoffRecord,
}

/// Failures per source that outlive one listener: a LAN agent listens anew after every
/// session, and a fresh record forgave every source that stalled or guessed wrong.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackoffRecord(Arc<Mutex<Option<LanBackoff>>>);

impl BackoffRecord {
    /// The record kept, or a new one with `limits`; it is this listener's until
    /// [`Self::put`].
    pub(crate) fn take(&self, limits: BackoffLimits) -> LanBackoff {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.take().unwrap_or_else(|| LanBackoff::new(limits))
    }

    /// Keep `backoff` for the next listener.
    pub(crate) fn put(&self, backoff: LanBackoff) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(backoff);
    }
}

impl LanListenConfig {
    /// Listen on every interface at the default port.
    pub fn new(passwords: LanPasswords) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            passwords,
            backoff: BackoffLimits::default(),
            record: BackoffRecord::default(),
        }
    }

    /// Share the failures per source with the listeners of earlier and later sessions.
    pub(crate) fn remembering(mut self, record: &BackoffRecord) -> Self {
        self.record = record.clone();
        self
    }

    /// Listen on `addr` (port 0 picks a free one; [`crate::Agent::lan_addr`] says which).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Back-off on wrong passwords.
    pub fn backoff(mut self, limits: BackoffLimits) -> Self {
        self.backoff = limits;
        self
    }
}

/// A target found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPeer {
    /// The name it announces (its host name unless configured).
    pub name: String,
    /// Its addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// The port it listens on.
    pub port: u16,
}

impl LanPeer {
    /// Whether `filter` is a case-insensitive substring of the name or of an address.
    pub fn matches(&self, filter: &str) -> bool {
        let f = filter.trim().to_lowercase();
        f.is_empty()
            || self.name.to_lowercase().contains(&f)
            || self.addresses.iter().any(|a| a.to_string().contains(&f))
    }

    /// The address to connect to: the first IPv4 one, else the first.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.addresses
            .first()
            .map(|a| SocketAddr::new(*a, self.port))
    }
}

/// This target's announcement on the LAN; withdrawn when dropped.
pub struct Advertisement {
    daemon: mdns_sd::ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertisement")
            .field("fullname", &self.fullname)
            .finish()
    }
}

/// Whether `name` can be announced: a DNS-SD instance name of 1 to 63 bytes.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63
}

impl Advertisement {
    /// Announce `name` listening on `port` at every address of this computer.
    pub fn start(name: &str, port: u16) -> Result<Self, SessionError> {
        let fail = |e: mdns_sd::Error| SessionError::Lan(LanError::Announce(e));
        if !valid_name(name) {
            return Err(LanError::BadName {
                name: name.to_owned(),
            }
            .into());
        }
        let daemon = mdns_sd::ServiceDaemon::new().map_err(fail)?;
        // The DNS host name must be a plain label; the instance name may be anything.
        let host: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let info = mdns_sd::ServiceInfo::new(
            SERVICE_TYPE,
            name,
            &format!("{host}.local."),
            "",
            port,
            [("name", name)].as_slice(),
        )
        .map_err(fail)?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_string();
        daemon.register(info).map_err(fail)?;
        tracing::info!(name, port, "announced on the LAN");
        Ok(Self { daemon, fullname })
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// Targets on the LAN, reported as they answer.
pub struct Browser {
    daemon: mdns_sd::ServiceDaemon,
    found: Receiver<LanPeer>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

impl Browser {
    /// Start looking.
    pub fn start() -> Result<Self, SessionError> {
        let fail = |e: mdns_sd::Error| SessionError::Lan(LanError::Browse(e));
        let daemon = mdns_sd::ServiceDaemon::new().map_err(fail)?;
        let events = daemon.browse(SERVICE_TYPE).map_err(fail)?;
        let (tx, found) = crossbeam_channel::bounded(256);
        let thread = std::thread::Builder::new()
            .name("deskwire-lan-browse".into())
            .spawn(move || forward(events, tx))
            .map_err(SessionError::Thread)?;
        Ok(Self {
            daemon,
            found,
            thread: Some(thread),
        })
    }

    /// Each target once, as soon as its address is known (again if its address or port
    /// changes).
    pub fn found(&self) -> &Receiver<LanPeer> {
        &self.found
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        let _ = self.daemon.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn forward(events: mdns_sd::Receiver<mdns_sd::ServiceEvent>, tx: Sender<LanPeer>) {
    let mut seen = BTreeSet::new();
    while let Ok(event) = events.recv() {
        let mdns_sd::ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let Some(peer) = peer_of(&service) else {
            continue;
        };
        let key = format!("{}|{:?}|{}", peer.name, peer.addresses, peer.port);
        if seen.insert(key) && tx.send(peer).is_err() {
            return;
        }
    }
}

fn peer_of(s: &mdns_sd::ResolvedService) -> Option<LanPeer> {
    let name = s
        .txt_properties
        .get_property_val_str("name")
        .map(str::to_string)
        .unwrap_or_else(|| {
            s.fullname
                .trim_end_matches(SERVICE_TYPE)
                .trim_end_matches('.')
                .to_string()
        });
    let mut addresses: Vec<IpAddr> = s
        .addresses
        .iter()
        .map(|a| a.to_ip_addr())
        .filter(|a| !a.is_loopback())
        .collect();
    addresses.sort_by_key(|a| (a.is_ipv6(), *a));
    (!addresses.is_empty() && s.port != 0).then_some(LanPeer {
        name,
        addresses,
        port: s.port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> LanPeer {
        LanPeer {
            name: "Reception-PC".into(),
            addresses: vec!["10.77.0.12".parse().unwrap(), "fd00::12".parse().unwrap()],
            port: 8451,
        }
    }

    #[test]
    fn a_filter_matches_a_name_or_an_address_substring_in_any_case() {
        let p = peer();
        assert!(p.matches(""));
        assert!(p.matches("recep"));
        assert!(p.matches("PC"));
        assert!(p.matches("77.0.1"));
        assert!(p.matches("fd00"));
        assert!(!p.matches("accounting"));
        assert!(!p.matches("10.78"));
    }

    #[test]
    fn the_first_address_is_the_one_to_dial() {
        assert_eq!(
            peer().socket_addr(),
            Some("10.77.0.12:8451".parse().unwrap())
        );
        let none = LanPeer {
            addresses: vec![],
            ..peer()
        };
        assert_eq!(none.socket_addr(), None);
    }

    #[test]
    fn passwords_rotate_at_the_period_and_a_new_set_starts_with_a_new_one() {
        let t0 = UnixMillis(5_000);
        let day = Duration::from_secs(24 * 3600);
        let a = LanPasswords::new(t0, day);
        let first = a.current_at(t0);
        assert_eq!(a.current_at(t0.plus(day / 2)), first);
        let next = a.current_at(t0.plus(day));
        assert_ne!(next, first);
        assert_eq!(a.rotates_at(), t0.plus(day + day));
        // A restart makes a new set: a new password.
        let b = LanPasswords::new(t0, day);
        assert_ne!(b.current_at(t0), first);
    }
}
