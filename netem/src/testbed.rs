//! Two computers joined by an impaired link, for tests: namespaces A and B, each with one
//! veth to a middle namespace M where `deskwire-netem run` forwards between them through a
//! TUN device.
//!
//! ```text
//!  A: eth0 10.79.2k.2/24 ── M: to-a 10.79.2k.1    ┐ policy: from the veths to table 100
//!  B: eth0 10.79.2k+1.2/24 ── M: to-b 10.79.2k+1.1 ┘ (default dev dwtun); from the TUN, main
//! ```
//!
//! A and B have a default route via M (WebRTC gathers no candidates without one). Every
//! name is unique per process and testbed, so parallel tests never meet; `Drop` stops the
//! forwarder it started and deletes the namespaces (which deletes the veths with them).

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::profile::{LinkProfile, ProfileError};
use crate::report::{ForwarderStats, ReportError};

/// The TUN device's name inside M (names are per namespace, so one name serves all).
const TUN: &str = "dwtun";
/// The routing table M sends the veths' traffic to.
const TABLE: &str = "100";
/// How long the forwarder may take to open its TUN and report in.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the forwarder gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How many testbeds one process may have at once.
const MAX_TESTBEDS: u32 = 128;

/// Why a testbed could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("the testbed needs root and iproute2: running as uid {0}, not root")]
    NotRoot(u32),
    #[error("the testbed needs root and iproute2: could not run `ip`: {0}")]
    NoIp(std::io::Error),
    #[error("the testbed needs root and iproute2: `ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("could not find a free testbed name: {MAX_TESTBEDS} testbeds of process {0} exist")]
    NoFreeName(u32),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("could not start the forwarder {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the forwarder exited while starting ({status}); its log: {log}")]
    ForwarderDied {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("the forwarder did not come up within {START_TIMEOUT:?}; its log: {log}")]
    ForwarderSilent { log: String },
    #[error("reading the forwarder's counters from {path}: {source}")]
    StatsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the forwarder's counters: {0}")]
    Stats(#[from] ReportError),
}

/// Namespaces A and B joined through M by an impaired link. See the module docs.
#[derive(Debug)]
pub struct Testbed {
    ns_a: String,
    ns_b: String,
    ns_m: String,
    /// Namespaces this testbed made, deleted on drop.
    created: Vec<String>,
    /// A's subnet is 10.79.`subnet`.0/24, B's the next one.
    subnet: u8,
    forwarder: Option<Child>,
    stats_path: PathBuf,
    log_path: PathBuf,
}

fn ip(args: &[&str]) -> Result<(), TestbedError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(TestbedError::NoIp)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn exists(e: &TestbedError) -> bool {
    matches!(e, TestbedError::Ip { stderr, .. } if stderr.contains("File exists"))
}

impl Testbed {
    /// A testbed running `deskwire-netem run` (at `netem_binary`) with one of the named
    /// profiles.
    pub fn start_named(profile: &str, netem_binary: &Path) -> Result<Self, TestbedError> {
        Self::start(&LinkProfile::named(profile)?, netem_binary)
    }

    /// A testbed whose link behaves as `profile`. Outages and rate schedules count from the
    /// moment the forwarder started, just before this returns.
    pub fn start(profile: &LinkProfile, netem_binary: &Path) -> Result<Self, TestbedError> {
        profile.validate()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(TestbedError::NotRoot(uid));
        }
        let mut bed = Self::claim_names()?;
        bed.build(profile, netem_binary)?;
        Ok(bed)
    }

    /// Claims M's name: `ip netns add` creates the name exclusively, so the first index it
    /// accepts belongs to this testbed alone, in this process and against others.
    fn claim_names() -> Result<Self, TestbedError> {
        let pid = std::process::id();
        for index in 0..MAX_TESTBEDS {
            let tag = format!("dwn{pid}-{index}");
            let ns_m = format!("{tag}m");
            match ip(&["netns", "add", &ns_m]) {
                Ok(()) => {
                    let dir = std::env::temp_dir();
                    return Ok(Self {
                        ns_a: format!("{tag}a"),
                        ns_b: format!("{tag}b"),
                        created: vec![ns_m.clone()],
                        ns_m,
                        subnet: (index % 128 * 2) as u8,
                        forwarder: None,
                        stats_path: dir.join(format!("{tag}-stats.json")),
                        log_path: dir.join(format!("{tag}-forwarder.log")),
                    });
                }
                Err(e) if exists(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(TestbedError::NoFreeName(pid))
    }

    fn build(&mut self, profile: &LinkProfile, netem_binary: &Path) -> Result<(), TestbedError> {
        for ns in [self.ns_a.clone(), self.ns_b.clone()] {
            if let Err(e) = ip(&["netns", "add", &ns]) {
                if !exists(&e) {
                    return Err(e);
                }
                // Our index is claimed through M, so this is left over from an earlier
                // process with our pid that did not clean up.
                tracing::warn!(ns, "deleting a stale namespace");
                ip(&["netns", "del", &ns])?;
                ip(&["netns", "add", &ns])?;
            }
            self.created.push(ns);
        }
        for ns in [&self.ns_a, &self.ns_b, &self.ns_m] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Forwarding on, and no reverse-path filter: replies come back out of the TUN, which
        // is not where the kernel would route their source. Set before the interfaces exist
        // so that they inherit it through `default`.
        self.sysctls()?;
        let m = self.ns_m.clone();
        for (side, ns, subnet) in [
            ("a", self.ns_a.clone(), self.subnet),
            ("b", self.ns_b.clone(), self.subnet + 1),
        ] {
            let mid = format!("to-{side}");
            ip(&[
                "-n", &m, "link", "add", &mid, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&[
                "-n",
                &m,
                "addr",
                "add",
                &format!("10.79.{subnet}.1/24"),
                "dev",
                &mid,
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.79.{subnet}.2/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &m, "link", "set", &mid, "up"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.79.{subnet}.1"),
            ])?;
            // What arrives from a side goes through the TUN; what the forwarder writes back
            // arrives on the TUN and takes the main table to the other side's veth.
            ip(&[
                "-n", &m, "rule", "add", "iif", &mid, "lookup", TABLE, "priority", "100",
            ])?;
        }
        self.start_forwarder(profile, netem_binary)?;
        ip(&[
            "-n", &m, "route", "add", "default", "dev", TUN, "table", TABLE,
        ])
    }

    fn sysctls(&self) -> Result<(), TestbedError> {
        let script = "echo 1 > /proc/sys/net/ipv4/ip_forward && \
            for c in all default; do \
              echo 0 > /proc/sys/net/ipv4/conf/$c/rp_filter && \
              echo 0 > /proc/sys/net/ipv4/conf/$c/send_redirects; \
            done";
        let out = self
            .command_in(&self.ns_m, "sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .output()
            .map_err(TestbedError::NoIp)?;
        if out.status.success() {
            return Ok(());
        }
        Err(TestbedError::Ip {
            args: format!("netns exec {} sh -c '{script}'", self.ns_m),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    fn start_forwarder(
        &mut self,
        profile: &LinkProfile,
        netem_binary: &Path,
    ) -> Result<(), TestbedError> {
        let _ = std::fs::remove_file(&self.stats_path);
        let log = std::fs::File::create(&self.log_path).map_err(|source| TestbedError::Spawn {
            path: self.log_path.clone(),
            source,
        })?;
        let child = self
            .command_in(&self.ns_m, netem_binary)
            .arg("run")
            .args(["--tun", TUN])
            .args(["--a-net", &format!("10.79.{}.0/24", self.subnet)])
            .args(["--b-net", &format!("10.79.{}.0/24", self.subnet + 1)])
            .args(["--a-to-b", &profile.a_to_b.to_string()])
            .args(["--b-to-a", &profile.b_to_a.to_string()])
            .arg("--stats-file")
            .arg(&self.stats_path)
            .args(["--stats-every-ms", "200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                path: netem_binary.to_path_buf(),
                source,
            })?;
        tracing::debug!(pid = child.id(), ns = self.ns_m, "forwarder started");
        let child = self.forwarder.insert(child);
        // The forwarder writes its counters once its TUN is up: that is the ready signal.
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.stats_path.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                self.forwarder = None;
                return Err(TestbedError::ForwarderDied {
                    status,
                    log: self.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(TestbedError::ForwarderSilent { log: self.log() });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn command_in(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Side A's namespace (the host's).
    pub fn ns_a(&self) -> &str {
        &self.ns_a
    }

    /// Side B's namespace (the viewer's).
    pub fn ns_b(&self) -> &str {
        &self.ns_b
    }

    /// The middle namespace, where the forwarder runs.
    pub fn ns_m(&self) -> &str {
        &self.ns_m
    }

    /// A's address; B reaches it through the link.
    pub fn addr_a(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 79, self.subnet, 2)
    }

    /// B's address; A reaches it through the link.
    pub fn addr_b(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 79, self.subnet + 1, 2)
    }

    /// `program` to run inside A (via `ip netns exec`).
    pub fn command_in_a(&self, program: impl AsRef<OsStr>) -> Command {
        self.command_in(&self.ns_a, program)
    }

    /// `program` to run inside B (via `ip netns exec`).
    pub fn command_in_b(&self, program: impl AsRef<OsStr>) -> Command {
        self.command_in(&self.ns_b, program)
    }

    /// The forwarder's process id.
    pub fn forwarder_pid(&self) -> Option<u32> {
        self.forwarder.as_ref().map(Child::id)
    }

    /// The forwarder's counters, at most 200 ms old.
    pub fn stats(&self) -> Result<ForwarderStats, TestbedError> {
        let text = std::fs::read_to_string(&self.stats_path).map_err(|source| {
            TestbedError::StatsFile {
                path: self.stats_path.clone(),
                source,
            }
        })?;
        Ok(ForwarderStats::from_json(&text)?)
    }

    /// What the forwarder has logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|e| format!("(no log at {}: {e})", self.log_path.display()))
    }

    fn stop_forwarder(&mut self) {
        let Some(mut child) = self.forwarder.take() else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        // SAFETY: kill(2) on the pid of a child this testbed spawned and has not reaped, so
        // the pid cannot have been reused for another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        tracing::warn!(%status, log = self.log(), "the forwarder exited badly");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
        tracing::warn!(pid, "the forwarder ignored SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop_forwarder();
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                tracing::warn!(ns, error = %e, "could not delete a testbed namespace");
            }
        }
        let _ = std::fs::remove_file(&self.stats_path);
        let _ = std::fs::remove_file(&self.log_path);
    }
}
