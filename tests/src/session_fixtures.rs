//! Fixtures for session scenarios: a real broker in this process, with a virtual clock.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskwire::{AgentEvent, TransportConfig, Viewer, ViewerEvent};
use deskwire::{ConnectionCode, UnixMillis};
use deskwire_broker::{BrokerConfig, ManualClock};
use deskwire_capture::Frame;

/// A broker serving on 127.0.0.1 from its own runtime thread, stopped on drop.
pub struct TestBroker {
    url: String,
    clock: Arc<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<Result<(), deskwire_broker::BrokerError>>>,
    /// The accounts database file, removed on drop.
    database: Option<std::path::PathBuf>,
    /// Its URL, for a restart.
    database_url: Option<String>,
    /// Its settings, for a restart.
    config: BrokerConfig,
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBroker")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestBroker {
    /// Start a broker whose clock starts at the real time and moves only when told.
    pub fn start() -> anyhow::Result<Self> {
        let clock = Arc::new(ManualClock::new(UnixMillis::now()));
        Self::start_inner(None, "127.0.0.1:0", clock, BrokerConfig::default())
    }

    /// Start a broker with accounts (an in-memory SQLite store) that requires a token: one
    /// technician, "alice", in a group with these permissions and policy. Returns the broker
    /// and alice's API token.
    pub fn start_with_accounts(
        permissions: deskwire_broker::store::Permissions,
        policy: deskwire_broker::store::Policy,
    ) -> anyhow::Result<(Self, String)> {
        let (broker, mut tokens) =
            Self::start_with_team(permissions, policy, &["alice"], BrokerConfig::default())?;
        Ok((broker, tokens.remove(0)))
    }

    /// Start a broker with accounts and these settings (a token is always required): the
    /// technicians `names`, all in one group of company "acme" with these permissions and
    /// policy. Returns the broker and their API tokens, in order.
    pub fn start_with_team(
        permissions: deskwire_broker::store::Permissions,
        policy: deskwire_broker::store::Policy,
        names: &[&str],
        config: BrokerConfig,
    ) -> anyhow::Result<(Self, Vec<String>)> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("deskwire-accounts-{}-{n}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let tokens = rt.block_on(async {
            let store = deskwire_broker::store::Store::open(&url).await?;
            let now = UnixMillis::now().0 as i64;
            let company = store.create_company("acme", now).await?;
            let group = store
                .create_group(company, "support", permissions, &policy, now)
                .await?;
            let mut tokens = Vec::new();
            for name in names {
                let who = store.create_technician(group, name, None, now).await?;
                tokens.push(store.create_token(who, "tests", now).await?.token);
            }
            store.close().await;
            anyhow::Ok(tokens)
        })?;
        let clock = Arc::new(ManualClock::new(UnixMillis::now()));
        let mut broker = Self::start_inner(Some(url), "127.0.0.1:0", clock, config)?;
        broker.database = Some(path);
        Ok((broker, tokens))
    }

    /// Stop this broker as a deployment restarts one (gracefully: its sockets close, its
    /// store writes finish) and start another on the same address, database and clock.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let url = self
            .database_url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("only a broker with a database outlives a restart"))?;
        let addr = self.url.trim_start_matches("ws://").to_owned();
        self.stop();
        let next = Self::start_inner(Some(url), &addr, self.clock.clone(), self.config.clone())?;
        let database = self.database.take();
        *self = next;
        self.database = database;
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let (Some(rt), Some(task)) = (self.rt.take(), self.task.take()) {
            let _ = rt.block_on(task);
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    /// `database`: the URL of a store to serve with (and require tokens), opened on the
    /// broker's own runtime.
    fn start_inner(
        database: Option<String>,
        bind: &str,
        clock: Arc<ManualClock>,
        config: BrokerConfig,
    ) -> anyhow::Result<Self> {
        let accounts = database.is_some();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-broker")
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(bind))?;
        let store = match &database {
            Some(url) => Some(rt.block_on(deskwire_broker::store::Store::open(url))?),
            None => None,
        };
        let url = format!("ws://{}", listener.local_addr()?);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(deskwire_broker::run_with_store(
            listener,
            config.clone().require_token(accounts),
            clock.clone(),
            store,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Ok(Self {
            url,
            clock,
            stop: Some(stop),
            rt: Some(rt),
            task: Some(task),
            database: None,
            database_url: database,
            config,
        })
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Move the broker's clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// The URL of its database, if it has one (to read its audit log).
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The broker's clock, for a peer that should read the same virtual time.
    pub fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
        if let Some(path) = self.database.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Loopback transport: a wildcard bind would skip loopback.
pub fn loopback() -> TransportConfig {
    TransportConfig::default().bind(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

/// The next viewer event that `pick` accepts, failing on disconnect or after `timeout`.
pub fn wait_viewer<T>(
    c: &Viewer,
    timeout: Duration,
    mut pick: impl FnMut(&ViewerEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = c
            .events()
            .recv_timeout(left)
            .map_err(|_| anyhow::anyhow!("no matching viewer event in {timeout:?}"))?;
        if let Some(t) = pick(&e) {
            return Ok(t);
        }
        if let ViewerEvent::Disconnected(r) = e {
            anyhow::bail!("viewer disconnected: {r}");
        }
    }
}

/// The next agent event that `pick` accepts, failing after `timeout`.
pub fn wait_host<T>(
    events: &crossbeam_channel::Receiver<AgentEvent>,
    timeout: Duration,
    mut pick: impl FnMut(&AgentEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events
            .recv_timeout(left)
            .map_err(|_| anyhow::anyhow!("no matching host event in {timeout:?}"))?;
        if let Some(t) = pick(&e) {
            return Ok(t);
        }
    }
}

/// The code the viewer reports.
pub fn code_of(c: &Viewer) -> anyhow::Result<ConnectionCode> {
    wait_viewer(c, Duration::from_secs(10), |e| match e {
        ViewerEvent::Code { code, .. } => Some(*code),
        _ => None,
    })
}

/// Y-PSNR between two BGRA/BGRX frames of the same size (BT.601 luma).
pub fn luma_psnr(a: &Frame, b: &Frame) -> f64 {
    luma_psnr_at(a, (0, 0), b)
}

/// Y-PSNR of the part of `a` at `origin` the size of `b`, against `b` (BT.601 luma); 0 when
/// `b` does not fit in `a` there.
pub fn luma_psnr_at(a: &Frame, origin: (u32, u32), b: &Frame) -> f64 {
    let (x0, y0) = origin;
    if x0 + b.width() > a.width() || y0 + b.height() > a.height() {
        return 0.0;
    }
    let luma = |f: &Frame, x0: u32, y0: u32| -> Vec<u8> {
        let mut y = Vec::with_capacity((b.width() * b.height()) as usize);
        for row in y0..y0 + b.height() {
            let bytes = &f.row(row)[(x0 * 4) as usize..((x0 + b.width()) * 4) as usize];
            deskwire_engine::quality::bgra_luma(bytes, &mut y);
        }
        y
    };
    let (ya, yb) = (luma(a, x0, y0), luma(b, 0, 0));
    deskwire_engine::quality::psnr_plane(&ya, ya.len(), &yb, yb.len(), ya.len(), 1)
}

/// Names of this process's threads that start with `deskwire-`.
pub fn deskwire_threads() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            if let Ok(n) = std::fs::read_to_string(t.path().join("comm")) {
                let n = n.trim().to_owned();
                if n.starts_with("deskwire-") {
                    names.push(n);
                }
            }
        }
    }
    names
}

/// A technician's permission to connect on the LAN, as one with no broker and no policy
/// file gets it: the library's real check, with nothing to refuse.
pub fn lan_permission() -> deskwire::lan::LanPermission {
    deskwire::lan::check_lan_permission(
        None,
        None,
        std::path::Path::new("/nonexistent/deskwire-tests/technician.conf"),
        Duration::from_secs(1),
    )
    .expect("a missing policy file allows connecting on the LAN")
}
