//! `deskwire-netem run`: reads IPv4 packets from one TUN device, passes each through the
//! link for its direction (picked by destination subnet) and writes it back into the same
//! TUN when the link delivers it. Routing in the namespace does the rest (see the testbed).

use std::io::{self, ErrorKind};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use deskwire_netem::{ConfigError, ForwarderStats, Link, LinkProfile};

use crate::signals;
use crate::tun::{Tun, TunError};

/// The longest the loop sleeps without looking at the stop flag.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Packets read per wake-up before deliveries get a turn.
const READ_BATCH: usize = 256;

/// An IPv4 subnet, `10.79.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subnet {
    net: u32,
    mask: u32,
}

impl Subnet {
    fn contains(&self, addr: u32) -> bool {
        addr & self.mask == self.net
    }

    fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask & other.mask;
        self.net & mask == other.net & mask
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an IPv4 subnet like 10.79.0.0/24");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        Ok(Self {
            net: u32::from(addr) & mask,
            mask,
        })
    }
}

#[derive(Debug)]
pub(crate) struct ForwardConfig {
    pub(crate) tun: String,
    pub(crate) a_net: Subnet,
    pub(crate) b_net: Subnet,
    pub(crate) profile: LinkProfile,
    pub(crate) stats_file: Option<PathBuf>,
    pub(crate) stats_every: Duration,
}

/// Why forwarding stopped or never started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("--a-net and --b-net overlap, so a packet's direction would be ambiguous")]
    Overlap,
    #[error("the {direction} link: {source}")]
    Config {
        direction: &'static str,
        source: ConfigError,
    },
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error("reading from the TUN device: {0}")]
    Read(io::Error),
    #[error("writing the counters to {path}: {source}")]
    StatsFile { path: PathBuf, source: io::Error },
    #[error("starting the forwarding thread: {0}")]
    Thread(io::Error),
    #[error("the forwarding thread panicked")]
    Panicked,
}

impl ForwardError {
    /// 2 for a bad configuration, 3 for missing privileges, 1 for the rest.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Overlap | Self::Config { .. } | Self::Tun(TunError::BadName(_)) => 2,
            Self::Tun(TunError::Permission { .. } | TunError::Open(_)) => 3,
            _ => 1,
        }
    }
}

/// Forwards until SIGTERM or SIGINT; returns the final counters.
pub(crate) fn run(config: ForwardConfig) -> Result<ForwarderStats, ForwardError> {
    if config.a_net.overlaps(&config.b_net) {
        return Err(ForwardError::Overlap);
    }
    let link =
        |direction, c| Link::new(c).map_err(|source| ForwardError::Config { direction, source });
    let links = Links {
        a_to_b: link("A->B", config.profile.a_to_b.clone())?,
        b_to_a: link("B->A", config.profile.b_to_a.clone())?,
    };
    let tun = Tun::open(&config.tun)?;
    tracing::info!(
        tun = tun.name(),
        profile = config.profile.name,
        "forwarding"
    );
    let thread = std::thread::Builder::new()
        .name("netem-forward".into())
        .spawn(move || Forwarder::new(config, tun, links).run())
        .map_err(ForwardError::Thread)?;
    thread.join().map_err(|_| ForwardError::Panicked)?
}

#[derive(Debug)]
struct Links {
    a_to_b: Link,
    b_to_a: Link,
}

#[derive(Debug)]
struct Forwarder {
    config: ForwardConfig,
    tun: Tun,
    links: Links,
    epoch: Instant,
    ignored: u64,
    write_errors: u64,
}

impl Forwarder {
    fn new(config: ForwardConfig, tun: Tun, links: Links) -> Self {
        Self {
            config,
            tun,
            links,
            epoch: Instant::now(),
            ignored: 0,
            write_errors: 0,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn stats(&self) -> ForwarderStats {
        ForwarderStats {
            a_to_b: self.links.a_to_b.stats(),
            b_to_a: self.links.b_to_a.stats(),
            ignored: self.ignored,
            write_errors: self.write_errors,
            elapsed_s: self.now().as_secs_f64(),
        }
    }

    fn run(mut self) -> Result<ForwarderStats, ForwardError> {
        // Written once at once: the testbed takes the file's appearance as "ready".
        self.write_stats()?;
        let mut next_stats = Instant::now() + self.config.stats_every;
        let mut buf = vec![0u8; 65_536];
        while !signals::stop_requested() {
            self.deliver();
            let full_batch = self.read_batch(&mut buf)?;
            self.deliver();
            if Instant::now() >= next_stats {
                self.write_stats()?;
                next_stats = Instant::now() + self.config.stats_every;
            }
            if full_batch {
                continue;
            }
            let wait = self
                .next_event()
                .map_or(MAX_WAIT, |t| t.saturating_sub(self.now()));
            let wait = wait.min(MAX_WAIT);
            if wait >= Duration::from_millis(1) {
                // poll(2) counts whole milliseconds: wait the whole part here and the rest
                // (under 1 ms) on the next turn.
                self.tun.wait_readable(wait).map_err(ForwardError::Read)?;
            } else if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        self.write_stats()?;
        Ok(self.stats())
    }

    fn next_event(&self) -> Option<Duration> {
        match (
            self.links.a_to_b.poll_timeout(),
            self.links.b_to_a.poll_timeout(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads what is waiting; true if it stopped because the batch was full.
    fn read_batch(&mut self, buf: &mut [u8]) -> Result<bool, ForwardError> {
        for _ in 0..READ_BATCH {
            let n = match self.tun.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(false),
                Err(e) => return Err(ForwardError::Read(e)),
            };
            let packet = &buf[..n];
            let now = self.now();
            match self.direction(packet) {
                Some(link) => {
                    let verdict = link.handle_packet(now, packet.to_vec());
                    tracing::trace!(len = n, ?verdict, "packet");
                }
                None => {
                    self.ignored += 1;
                    tracing::debug!(
                        len = n,
                        "ignoring a packet that is not IPv4 between A and B"
                    );
                }
            }
        }
        Ok(true)
    }

    fn direction(&mut self, packet: &[u8]) -> Option<&mut Link> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return None;
        }
        let dst = u32::from_be_bytes([packet[16], packet[17], packet[18], packet[19]]);
        if self.config.b_net.contains(dst) {
            Some(&mut self.links.a_to_b)
        } else if self.config.a_net.contains(dst) {
            Some(&mut self.links.b_to_a)
        } else {
            None
        }
    }

    fn deliver(&mut self) {
        let now = self.now();
        for link in [&mut self.links.a_to_b, &mut self.links.b_to_a] {
            while let Some(packet) = link.poll_deliver(now) {
                if let Err(e) = self.tun.write(&packet) {
                    // The kernel dropped it (a full backlog, a route gone): like a lost
                    // packet, counted rather than fatal.
                    self.write_errors += 1;
                    tracing::debug!(error = %e, "the kernel refused a delivered packet");
                }
            }
        }
    }

    fn write_stats(&self) -> Result<(), ForwardError> {
        let Some(path) = &self.config.stats_file else {
            return Ok(());
        };
        let failed = |source| ForwardError::StatsFile {
            path: path.clone(),
            source,
        };
        // Written aside and renamed, so a reader never sees half a line.
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, self.stats().to_json() + "\n").map_err(failed)?;
        std::fs::rename(&tmp, path).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_match() {
        let s: Subnet = "10.79.3.7/24".parse().expect("subnet");
        assert!(s.contains(u32::from(Ipv4Addr::new(10, 79, 3, 200))));
        assert!(!s.contains(u32::from(Ipv4Addr::new(10, 79, 4, 1))));
        let all: Subnet = "0.0.0.0/0".parse().expect("default");
        assert!(all.overlaps(&s));
        for bad in ["10.79.0.0", "10.79.0.0/33", "ten/8"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }
}
