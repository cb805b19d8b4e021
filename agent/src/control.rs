//! The target agent's local control socket: scripts and support staff drive a running
//! agent without its terminal (`deskwire-agent ctl password`, `deskwire-agent ctl terminate`, ...).
//!
//! One request per connection: a line of text in, a line (`ok ...` or `error ...`) out. The
//! socket is a Unix socket readable by this user only: whoever can use it can end sessions
//! and read the LAN password, exactly like the user at this terminal.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The longest request line read.
const MAX_LINE: usize = 256;

/// What a local client may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The current LAN password and when it rotates.
    Password,
    /// Sessions: the current one, if any.
    Sessions,
    /// End the current session now.
    Terminate,
    /// Enter a connection code (broker mode).
    Code(String),
}

impl Request {
    /// Read a request line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let bare = |r: Request| {
            if rest.is_empty() {
                Ok(r)
            } else {
                Err(format!("{word} takes no argument"))
            }
        };
        match word {
            "password" => bare(Request::Password),
            "sessions" | "list" => bare(Request::Sessions),
            "terminate" => bare(Request::Terminate),
            "code" if !rest.is_empty() => Ok(Request::Code(rest.to_owned())),
            "code" => Err("code needs the connection code".into()),
            "" => Err("empty request".into()),
            other => Err(format!(
                "unknown request {other:?}; expected password, sessions, terminate or code CODE"
            )),
        }
    }
}

/// A request with the way back to its client.
#[derive(Debug)]
pub struct Incoming {
    /// What was asked.
    pub request: Request,
    /// Send exactly one reply line: `Ok(text)` or `Err(why)`.
    pub reply: mpsc::Sender<Result<String, String>>,
}

/// Serve `path` on a thread of its own, handing requests to `tx`. An old socket file at
/// `path` (a previous run that was killed) is replaced.
pub fn serve(path: &Path, tx: mpsc::Sender<Incoming>) -> Result<PathBuf> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another running agent", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    std::thread::Builder::new()
        .name("deskwire-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match answer(conn, &tx) {
                    Ok(Served::Yes) => {}
                    Ok(Served::AgentGone) => return,
                    Err(e) => tracing::debug!(error = %e, "control client went away"),
                }
            }
        })?;
    Ok(path.to_path_buf())
}

enum Served {
    Yes,
    /// The agent stopped taking requests: the thread ends.
    AgentGone,
}

fn answer(conn: UnixStream, tx: &mpsc::Sender<Incoming>) -> std::io::Result<Served> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&conn).take(MAX_LINE as u64)).read_line(&mut line)?;
    let reply = match Request::parse(&line) {
        Err(why) => Err(why),
        Ok(request) => {
            let (reply, rx) = mpsc::channel();
            if tx.send(Incoming { request, reply }).is_err() {
                let _ = (&conn).write_all(b"error the agent is stopping\n");
                return Ok(Served::AgentGone);
            }
            rx.recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| Err("the agent did not answer".into()))
        }
    };
    let text = match reply {
        Ok(t) => format!("ok {t}\n"),
        Err(e) => format!("error {e}\n"),
    };
    (&conn).write_all(text.as_bytes())?;
    Ok(Served::Yes)
}

/// Send `request` to the agent at `path` and return its answer; an `error` answer is an
/// error.
pub fn call(path: &Path, request: &str) -> Result<String> {
    Request::parse(request).map_err(anyhow::Error::msg)?;
    let mut conn = UnixStream::connect(path).with_context(|| {
        format!(
            "no agent is listening on {} (is deskwire-agent running with this --control-socket?)",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(format!("{}\n", request.trim()).as_bytes())?;
    let mut line = String::new();
    BufReader::new(conn.take(4096)).read_line(&mut line)?;
    let line = line.trim_end();
    match line.split_once(' ').unwrap_or((line, "")) {
        ("ok", rest) => Ok(rest.to_owned()),
        ("error", why) => bail!("the agent refused: {why}"),
        _ => bail!("unexpected answer from the agent: {line:?}"),
    }
}

/// `$XDG_RUNTIME_DIR/deskwire-agent.sock`; without one (a shell without a login session,
/// a container), `deskwire-agent.sock` in `/tmp/deskwire-UID`, a folder only this user may
/// enter. A name shared by every user of the machine (as `/tmp/deskwire-agent-user.sock`
/// was when `$USER` was unset) let one user's agent refuse or take another's requests.
pub fn default_path() -> Result<PathBuf> {
    Ok(runtime_dir()?.join("deskwire-agent.sock"))
}

/// Where this user's running deskwire programs keep their sockets and transient state:
/// `$XDG_RUNTIME_DIR`, else `/tmp/deskwire-UID`, a folder only this user may enter.
pub fn runtime_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let uid = own_uid()?;
    let dir = std::env::temp_dir().join(format!("deskwire-{uid}"));
    private_dir(&dir, uid)?;
    Ok(dir)
}

/// This process's user id: the owner of `/proc/self`.
fn own_uid() -> Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self")
        .context("reading this process's user id from /proc/self")?
        .uid())
}

/// Make `dir` a folder only `uid` may enter, or refuse one that someone else could have
/// prepared (another owner, a symbolic link, a file).
fn private_dir(dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid {
        bail!(
            "{} is not a folder of this user's: remove it, set $XDG_RUNTIME_DIR, or pass --control-socket",
            dir.display()
        );
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_their_arguments_and_refuse_the_rest() {
        assert_eq!(Request::parse("password\n"), Ok(Request::Password));
        assert_eq!(Request::parse("  sessions "), Ok(Request::Sessions));
        assert_eq!(Request::parse("list"), Ok(Request::Sessions));
        assert_eq!(Request::parse("terminate"), Ok(Request::Terminate));
        assert_eq!(
            Request::parse("code 123 456 7890"),
            Ok(Request::Code("123 456 7890".into()))
        );
        assert!(Request::parse("code").unwrap_err().contains("needs"));
        assert!(Request::parse("terminate now")
            .unwrap_err()
            .contains("no argument"));
        assert!(Request::parse("reboot")
            .unwrap_err()
            .contains("unknown request"));
        assert!(Request::parse("").is_err());
    }

    #[test]
    fn the_fallback_socket_folder_is_private_to_its_user_and_refused_when_it_is_not() {
        use std::os::unix::fs::{symlink, MetadataExt};
        let base = std::env::temp_dir().join(format!("dw-ctl-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let uid = own_uid().unwrap();

        let fresh = base.join("fresh");
        private_dir(&fresh, uid).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);

        // Ours but open to others: closed.
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&open, uid).unwrap();
        assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o777, 0o700);

        // Someone else's (here: one that claims another owner), a link, a file: refused.
        let other_uid = uid.wrapping_add(1);
        assert!(private_dir(&fresh, other_uid)
            .unwrap_err()
            .to_string()
            .contains("not a folder of this user's"));
        let link = base.join("link");
        symlink(&fresh, &link).unwrap();
        assert!(private_dir(&link, uid).is_err());
        let file = base.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(private_dir(&file, uid).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_request_travels_over_the_socket_and_its_answer_comes_back() {
        let path = std::env::temp_dir().join(format!("dw-ctl-test-{}.sock", std::process::id()));
        let (tx, rx) = mpsc::channel();
        serve(&path, tx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let agent = std::thread::spawn(move || {
            for _ in 0..2 {
                let inc: Incoming = rx.recv().unwrap();
                let r = match inc.request {
                    Request::Password => Ok("ABCD-EFGH-JKMN".to_owned()),
                    other => Err(format!("no {other:?} here")),
                };
                inc.reply.send(r).unwrap();
            }
        });
        assert_eq!(call(&path, "password").unwrap(), "ABCD-EFGH-JKMN");
        let err = call(&path, "terminate").unwrap_err().to_string();
        assert!(err.contains("no Terminate here"), "{err}");
        // A bad request is refused before it is sent.
        assert!(call(&path, "format c:").is_err());
        agent.join().unwrap();
        // A second agent on the same socket is refused while the first runs.
        let (tx2, _rx2) = mpsc::channel();
        assert!(serve(&path, tx2)
            .unwrap_err()
            .to_string()
            .contains("in use"));
        let _ = std::fs::remove_file(&path);
    }
}
