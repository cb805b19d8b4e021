//! One TUN device (layer 3, no packet-info header), non-blocking.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Why the TUN device could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TunError {
    #[error("`{0}` is not a usable interface name (1 to 15 characters, no '/', ':' or spaces)")]
    BadName(String),
    #[error("opening /dev/net/tun: {0} (is the tun module loaded? run as root)")]
    Open(io::Error),
    #[error("creating TUN device {name} needs root (CAP_NET_ADMIN): {source}")]
    Permission { name: String, source: io::Error },
    #[error("creating TUN device {name}: {source}")]
    Create { name: String, source: io::Error },
    #[error("bringing TUN device {name} up: {source}")]
    Up { name: String, source: io::Error },
}

#[derive(Debug)]
pub(crate) struct Tun {
    fd: OwnedFd,
    name: String,
}

/// An `ifreq` naming `name`, other fields zero.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers and
    // pointers); all-zero is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = b as libc::c_char;
    }
    req
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

impl Tun {
    /// Creates (or attaches to) TUN device `name` and brings it up.
    pub(crate) fn open(name: &str) -> Result<Self, TunError> {
        let bad = name.is_empty()
            || name.len() >= libc::IFNAMSIZ
            || name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
        if bad {
            return Err(TunError::BadName(name.to_string()));
        }
        // SAFETY: a NUL-terminated path literal and plain flags.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            if is_permission(&e) {
                return Err(TunError::Permission {
                    name: name.to_string(),
                    source: e,
                });
            }
            return Err(TunError::Open(e));
        }
        // SAFETY: `raw` is a descriptor open(2) just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, for the call's
        // duration; `fd` is an open /dev/net/tun descriptor.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            let source = io::Error::last_os_error();
            let name = name.to_string();
            return Err(if is_permission(&source) {
                TunError::Permission { name, source }
            } else {
                TunError::Create { name, source }
            });
        }
        let tun = Self {
            fd,
            name: name.to_string(),
        };
        tun.set_up()?;
        Ok(tun)
    }

    fn set_up(&self) -> Result<(), TunError> {
        let up_error = |source| TunError::Up {
            name: self.name.clone(),
            source,
        };
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(up_error(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a socket just created and owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = ifreq(&self.name);
        // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq `req` points to.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(up_error(io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFFLAGS just wrote the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads the ifreq `req` points to.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(up_error(io::Error::last_os_error()));
        }
        Ok(())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// One packet; `WouldBlock` when none is waiting.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call's duration.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Injects one packet into the kernel as if it arrived on the device.
    pub(crate) fn write(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: `packet` is valid for reads of `packet.len()` bytes for the call's duration.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Waits up to `timeout` (whole milliseconds, rounded down) for a packet to read.
    /// `Ok(false)` on timeout or on a signal.
    pub(crate) fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd, and nfds says one.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(rc > 0)
    }
}
