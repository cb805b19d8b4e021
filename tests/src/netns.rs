//! Network namespaces standing in for computers on one LAN: a technician's and a few
//! targets', joined by veth pairs to a bridge in the technician's namespace. Made with `ip`
//! (needs root, which the test machines have); every namespace is deleted on drop.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One LAN: `viewer()` at 10.77.0.1, targets at 10.77.0.2, .3, ...
#[derive(Debug)]
pub struct Lan {
    viewer: String,
    targets: Vec<String>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2 is installed by scripts/setup)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lan {
    /// A technician's namespace and `targets` target namespaces on one /24.
    pub fn create(targets: usize) -> Result<Self> {
        if targets == 0 || targets > 8 {
            bail!("a test LAN has 1 to 8 targets, not {targets}");
        }
        let tag = format!(
            "dw{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lan = Self {
            viewer: format!("{tag}c"),
            targets: (0..targets).map(|i| format!("{tag}t{i}")).collect(),
        };
        // Built step by step; whatever exists is removed by `Drop` if a step fails.
        for ns in lan.namespaces() {
            ip(&["netns", "add", ns]).with_context(|| {
                "creating a network namespace (the LAN tests need root and iproute2)".to_string()
            })?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let c = lan.viewer.as_str();
        ip(&["-n", c, "link", "add", "br0", "type", "bridge"])?;
        // No IGMP querier here: without snooping, the bridge floods mDNS to every port.
        ip(&[
            "-n",
            c,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", c, "addr", "add", "10.77.0.1/24", "dev", "br0"])?;
        ip(&["-n", c, "link", "set", "br0", "up"])?;
        // Joining a multicast group (mDNS, ICE's mDNS) needs a route for it, as on any real
        // LAN; without one the kernel answers ENODEV.
        ip(&["-n", c, "route", "add", "default", "dev", "br0"])?;
        for (i, t) in lan.targets.iter().enumerate() {
            let (a, b) = (format!("{tag}v{i}a"), format!("{tag}v{i}b"));
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            ip(&["link", "set", &a, "netns", c])?;
            ip(&["link", "set", &b, "netns", t])?;
            ip(&["-n", c, "link", "set", &a, "master", "br0"])?;
            ip(&["-n", c, "link", "set", &a, "up"])?;
            let addr = format!("{}/24", lan.target_ip(i));
            ip(&["-n", t, "addr", "add", &addr, "dev", &b])?;
            ip(&["-n", t, "link", "set", &b, "up"])?;
            ip(&["-n", t, "route", "add", "default", "via", "10.77.0.1"])?;
        }
        Ok(lan)
    }

    fn namespaces(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.viewer.as_str()).chain(self.targets.iter().map(String::as_str))
    }

    /// The technician's namespace.
    pub fn viewer(&self) -> &str {
        &self.viewer
    }

    /// The technician's address.
    pub fn viewer_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 1)
    }

    /// Target `i`'s namespace.
    pub fn target(&self, i: usize) -> &str {
        &self.targets[i]
    }

    /// Target `i`'s address.
    pub fn target_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 2 + i as u8)
    }

    /// `program` to run inside namespace `ns`.
    pub fn command(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Run `f` on a thread inside namespace `ns`: sockets it (and the threads it starts)
    /// opens live there, as on that computer.
    pub fn run_in<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{ns}");
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let thread = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn(move || {
                // SAFETY: a plain syscall on a file descriptor this closure owns; it changes
                // only this new thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(anyhow::anyhow!(
                        "setns into {path}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(f())
            })?;
        match thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends and the bridge in it.
        for ns in self.namespaces() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
