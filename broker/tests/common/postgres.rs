//! A private PostgreSQL server for one test binary: `initdb` into a temp dir, `postgres` on a
//! free loopback port with its socket in that dir, one database per test.
//!
//! Stopping it: a `static` is never dropped, so a Drop guard cannot do it. Instead an
//! `atexit` handler sends the server SIGINT (fast shutdown), waits for it and removes the
//! directory when the test binary exits normally; and the server is started with
//! PR_SET_PDEATHSIG from a thread that lives as long as the process, so if the binary is
//! killed the kernel stops the server too. Directories of killed runs are removed by the
//! next run (their name carries the dead pid).

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DIR_PREFIX: &str = "deskwire-pgtest-";
const SUPERUSER: &str = "deskwire";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Cluster {
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The shared cluster, started on first use. Panics (failing the test) with the reason if it
/// cannot start: PostgreSQL tests are never skipped.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(why) => panic!("cannot start the test PostgreSQL server: {why}"),
    }
}

impl Cluster {
    /// A URL for a fresh database named after `test` (CREATE DATABASE on this cluster).
    pub async fn create_database(&self, test: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let suffix: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t{}_{suffix}", NEXT.fetch_add(1, Ordering::Relaxed));
        let admin_url = self.url("postgres");
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = sqlx::Connection::close(conn).await;
        self.url(&name)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    fn stop(&self) {
        let Ok(mut guard) = self.child.lock() else {
            return;
        };
        if let Some(mut child) = guard.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet
                // (we hold its Child and never waited on it), so the pid is not reused.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

extern "C" fn stop_at_exit() {
    if let Some(Ok(cluster)) = CLUSTER.get() {
        cluster.stop();
    }
}

fn start() -> Result<Cluster, String> {
    let bin = server_binaries()?;
    remove_stale_dirs();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos}", std::process::id()));
    fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let owner = server_owner()?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    let data = dir.join("data");

    let mut initdb = Command::new(bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    let out = as_owner(&mut initdb, owner, &dir)
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&dir);
        return Err(format!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    // Registered before the server exists, so there is never a server without its stopper;
    // the handler does nothing if no cluster was stored.
    // SAFETY: registering a plain extern "C" fn that takes no arguments.
    if unsafe { libc::atexit(stop_at_exit) } != 0 {
        let _ = fs::remove_dir_all(&dir);
        return Err("atexit registration failed".into());
    }
    // A free port can be taken between our probe and the server's bind: try a few.
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        match launch(&bin, &dir, &data, port, owner) {
            Ok(child) => {
                return Ok(Cluster {
                    port,
                    dir,
                    child: Mutex::new(Some(child)),
                });
            }
            Err(e) => last_error = e,
        }
    }
    let _ = fs::remove_dir_all(&dir);
    Err(last_error)
}

/// Start `postgres` and wait until it accepts connections.
fn launch(
    bin: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> Result<Child, String> {
    let log_path = dir.join(format!("server-{port}.log"));
    let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
    if let Some((uid, gid)) = owner {
        let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
    }
    let log_err = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        // Durability is not under test; speed is welcome.
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    as_owner(&mut cmd, owner, dir);
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe. It runs after std has switched uid, so the setting survives.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // PR_SET_PDEATHSIG fires when the *thread* that forked exits, so fork from a thread that
    // never does.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pg-test-keeper".into())
        .spawn(move || {
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("spawn keeper thread: {e}"))?;
    let mut child = rx
        .recv()
        .map_err(|e| format!("keeper thread: {e}"))?
        .map_err(|e| format!("run postgres: {e}"))?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("postgres exited ({status}) on port {port}:\n{log}"));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "postgres not ready after {READY_TIMEOUT:?} on port {port}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The newest `/usr/lib/postgresql/*/bin` holding a server, or why there is none.
fn server_binaries() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server (initdb, postgres) under /usr/lib/postgresql/*/bin; \
         run scripts/setup, which installs the postgresql package"
            .to_owned()
    })
}

/// (uid, gid) to run the server as when we are root, which PostgreSQL refuses to run as:
/// the `postgres` account if present, else `nobody`. `None` when not root.
fn server_owner() -> Result<Option<(u32, u32)>, String> {
    let me = fs::metadata("/proc/self").map_err(|e| format!("stat /proc/self: {e}"))?;
    if me.uid() != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
    for user in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == user {
                if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                    return Ok(Some((uid, gid)));
                }
            }
        }
    }
    Err("running as root and neither a postgres nor a nobody account exists".into())
}

fn as_owner<'a>(cmd: &'a mut Command, owner: Option<(u32, u32)>, dir: &Path) -> &'a mut Command {
    // The server account may not be able to enter the test's working directory.
    cmd.current_dir(dir);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("probe a port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("probe a port: {e}"))
}

/// Remove the directories of earlier runs whose process is gone (killed before atexit).
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
