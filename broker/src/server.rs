//! The async driver around the switchboard: axum routes, one task per WebSocket, and a
//! bounded queue per connection between the two.
//!
//! Every socket event takes the hub's lock for one switchboard call and hands the resulting
//! messages to the recipients' queues with `try_send`, never awaiting under the lock. A full
//! queue means that peer is not reading: it is disconnected, not waited for.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use deskwire_signal::{encode, BrokerMessage, MAX_REASON_CHARS, MAX_SIGNAL_BYTES, SIGNAL_PATH};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

/// How often the broker looks for ad-hoc sessions whose time ran out.
const ADHOC_TICK: Duration = Duration::from_millis(200);

use crate::limits::JoinLimits;
use crate::store::Store;
use crate::switchboard::{Authenticated, ConnId, Output, Requirements, Switchboard};

mod deadline;
mod jobs;
mod socket;
use crate::{BrokerConfig, BrokerError, Clock};
use deadline::DeadlineListener;
use deskwire_signal::{PolicyAcceptance, SessionPolicy};
use socket::serve_socket;

/// WebSocket close codes (RFC 6455, 7.4.1).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;

/// Serve until `shutdown` resolves, then close every socket and wait for their tasks.
pub(crate) async fn serve(
    listener: TcpListener,
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    store: Option<Store>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    let rng = StdRng::try_from_os_rng().map_err(|e| BrokerError::Entropy(e.to_string()))?;
    if let Some(store) = &store {
        // Sessions whose sockets died with a crashed broker would stay open for ever and
        // count against their technician's cap.
        let now = i64::try_from(clock.now().0).unwrap_or(i64::MAX);
        match store.end_open_sessions(now, "the broker restarted").await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "ended sessions left open by the previous broker"),
            Err(e) => tracing::error!(error = %e, "cannot end sessions left open"),
        }
    }
    // Ad-hoc sessions outlive a restart: their hosts re-attach and technicians call again.
    let saved_adhoc = match &store {
        Some(store) => store
            .load_adhoc()
            .await
            .map_err(|e| BrokerError::Adhoc(format!("cannot read the ad-hoc sessions: {e}")))?,
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // Validated: at most 1 000 000, so the permit count fits a u32.
    let max_connections = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max_connections as usize));
    let mut board = Switchboard::new(
        config.code_limits(),
        JoinLimits::default(),
        Requirements {
            require_token: config.require_token,
            require_device: config.require_device,
        },
        rng,
    );
    if store.is_some() {
        board = board.with_store();
    }
    board = board
        .with_adhoc(config.adhoc, saved_adhoc.as_ref())
        .map_err(BrokerError::Adhoc)?;
    let mailer = match &config.mail {
        Some(mail) => Some(
            crate::mail::Mailer::new(mail)
                .map_err(|e| BrokerError::Config(crate::ConfigError::Mail(e.to_string())))?,
        ),
        None => None,
    };
    // Audit records and code and session writes leave the switchboard in order and are
    // performed in that order by one task, so signalling never waits on the database.
    let (jobs_tx, jobs_rx) = match store.is_some() {
        true => {
            let (tx, rx) = mpsc::unbounded_channel::<Output>();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let hub = Arc::new(Hub {
        state: Mutex::new(HubState {
            board,
            outboxes: HashMap::new(),
            jobs: jobs_tx,
            checks: Vec::new(),
        }),
        clock,
        store: store.clone(),
        mailer,
        outbound_queue: config.outbound_queue,
        write_timeout: config.write_timeout,
        first_message_timeout: config.first_message_timeout,
        keepalive: config.keepalive,
    });
    let jobs_task = match (store, jobs_rx) {
        (Some(store), Some(rx)) => Some(tokio::spawn(jobs::work(
            Arc::clone(&hub),
            store,
            rx,
            config.code_limits().retention,
        ))),
        _ => None,
    };
    // Ad-hoc lifetimes run out on their own: look at the deadlines a few times a second
    // (the clock may be a test's manual one, so no timer can be set for the deadline).
    let ticker = {
        let hub = Arc::clone(&hub);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ADHOC_TICK);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        let now = hub.clock.now();
                        let due = hub.lock().board.next_adhoc_deadline().is_some_and(|at| at <= now);
                        if due {
                            hub.drive(|s| s.board.handle_tick(now));
                        }
                    }
                    () = stopped(&mut stop) => break,
                }
            }
        })
    };
    let app = AppState {
        hub: Arc::clone(&hub),
        permits: Arc::clone(&permits),
        stop: stop_rx.clone(),
        per_source: Arc::default(),
        max_per_source: config.max_connections_per_source,
    };
    let router = Router::new()
        .route(SIGNAL_PATH, get(upgrade))
        .route("/healthz", get(healthz))
        .with_state(app);

    let mut server_stop = stop_rx;
    // Signalling is a few small messages back to back (peer joined, then the offer):
    // with Nagle on, the second waits for the client's delayed ACK, ~40 ms.
    let listener = DeadlineListener {
        inner: listener,
        timeout: config.upgrade_timeout,
    };
    let listener = listener.tap_io(|io| {
        if let Err(e) = io.stream().set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // The peer's address feeds the join limits.
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stopped(&mut server_stop).await })
    .into_future();
    tokio::pin!(server);
    tokio::pin!(shutdown);
    let served = tokio::select! {
        served = &mut server => served,
        () = &mut shutdown => {
            tracing::info!("shutting down");
            // Before any socket closes: a controller's socket closing now is the broker
            // leaving, not the technician, and its code must stay resumable.
            hub.drive(|s| s.board.handle_shutdown());
            // Tells the accept loop and every socket task at once.
            let _ = stop_tx.send(true);
            // A client holding a half-sent request would keep axum's graceful shutdown
            // waiting for ever: what has not finished in time is dropped.
            match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::info!("connections still open at shutdown are dropped");
                    Ok(())
                }
            }
        }
    };
    // Upgraded sockets live on in their own tasks; each holds a permit until it has said
    // goodbye, so having every permit back means every socket is closed.
    hub.drive(|s| s.board.handle_shutdown());
    let _ = stop_tx.send(true);
    let _all_closed =
        tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max_connections)).await;
    let _ = ticker.await;
    // Every socket is closed, so no job can follow: let the store task finish the queue.
    drop(hub.lock().jobs.take());
    if let Some(task) = jobs_task {
        if let Err(e) = task.await {
            tracing::error!("the store task failed: {e}");
        }
    }
    served.map_err(BrokerError::Serve)
}

/// How long a stopping broker waits for its connections to close; the store's queue is
/// written out after, however long it takes.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Resolves once the broker is stopping (or the stop signal itself is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    /// Open signalling connections per address.
    per_source: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    max_per_source: usize,
}

/// One open connection counted against its address's cap while it lives.
struct SourceSlot {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn take(app: &AppState, ip: IpAddr) -> Option<Self> {
        let mut counts = app.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= app.max_per_source {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: Arc::clone(&app.per_source),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Bytes read from a signalling connection at a time (and written before a flush).
const READ_BUFFER: usize = 4 * 1024;

async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = Arc::clone(&app.permits).try_acquire_owned() else {
        tracing::warn!("connection cap reached; refusing a signalling connection");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signalling connections\n",
        )
            .into_response();
    };
    let Some(slot) = SourceSlot::take(&app, peer.ip()) else {
        tracing::info!(source = %peer.ip(), "per-address connection cap reached; refusing");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many signalling connections from this address\n",
        )
            .into_response();
    };
    ws.max_message_size(MAX_SIGNAL_BYTES)
        .max_frame_size(MAX_SIGNAL_BYTES)
        // tungstenite allocates its read buffer up front (128 KiB by default): 10,000 idle
        // connections held 1.3 GB. Signalling messages are small, and a larger one grows
        // the buffer while it is read.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(READ_BUFFER)
        // A peer that stops reading cannot grow what is written to it past this.
        .max_write_buffer_size(4 * MAX_SIGNAL_BYTES)
        .on_failed_upgrade(|e| tracing::debug!("websocket upgrade failed: {e}"))
        .on_upgrade(move |socket| serve_socket(socket, app, (permit, slot), peer.ip()))
}

/// The switchboard and the queues of the connections it talks to.
struct Hub {
    state: Mutex<HubState>,
    clock: Arc<dyn Clock>,
    /// Accounts, for technician tokens; `None` for a broker without them.
    store: Option<Store>,
    /// Sends ad-hoc invitations, when configured.
    mailer: Option<crate::mail::Mailer>,
    outbound_queue: usize,
    write_timeout: Duration,
    /// How long a new connection may stay silent.
    first_message_timeout: Duration,
    /// Silence after which a connection is pinged; twice it, closed.
    keepalive: Duration,
}

struct HubState {
    board: Switchboard,
    outboxes: HashMap<ConnId, Outbox>,
    /// To the store task (audit records, code and session writes), when there is a store.
    jobs: Option<mpsc::UnboundedSender<Output>>,
    /// Store lookups the switchboard asked for, run once the lock is released.
    checks: Vec<Check>,
}

/// The hub's end of one connection's queue.
struct Outbox {
    tx: mpsc::Sender<String>,
    /// Wakes the connection's task to drop the socket at once, queued messages and all.
    kill: Arc<Notify>,
}

/// The connection task's end.
struct Mailbox {
    conn: ConnId,
    rx: mpsc::Receiver<String>,
    kill: Arc<Notify>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic under the lock would be a bug in the switchboard, not peer input; the
        // tables are still consistent between calls, so keep serving the other sessions.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, source: IpAddr) -> Mailbox {
        let (tx, rx) = mpsc::channel(self.outbound_queue);
        let kill = Arc::new(Notify::new());
        let mut state = self.lock();
        let conn = state.board.handle_open(source);
        state.outboxes.insert(
            conn,
            Outbox {
                tx,
                kill: Arc::clone(&kill),
            },
        );
        Mailbox { conn, rx, kill }
    }

    /// Feed the switchboard under the lock, deliver what it produced, then start the store
    /// lookups it asked for (a token, a device key) off the lock; each comes back through
    /// here.
    fn drive(self: &Arc<Self>, f: impl FnOnce(&mut HubState)) {
        let checks = {
            let mut state = self.lock();
            f(&mut state);
            state.deliver();
            std::mem::take(&mut state.checks)
        };
        for check in checks {
            let hub = Arc::clone(self);
            tokio::spawn(async move { hub.check(check).await });
        }
    }

    /// Run one store lookup (Argon2 and database round trips stay off the lock and off the
    /// socket tasks) and give the switchboard the answer.
    async fn check(self: Arc<Self>, check: Check) {
        match check {
            Check::Token(conn, token) => {
                let result = match &self.store {
                    None => Err("this broker has no accounts: connect without a token".to_owned()),
                    Some(store) => match authenticate(store, &token).await {
                        Ok(Some(who)) => Ok(who),
                        Ok(None) => Err("the API token is not valid".to_owned()),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot check a token");
                            Err("the broker cannot check tokens right now".to_owned())
                        }
                    },
                };
                let now = self.clock.now();
                self.drive(|s| s.board.handle_authenticated(conn, result, now));
            }
            Check::LanReport(conn, id, key, report) => {
                let now = self.clock.now();
                let at = i64::try_from(now.0).unwrap_or(i64::MAX);
                let result = match &self.store {
                    None => Err("this broker has no database to keep LAN passwords in".to_owned()),
                    Some(store) => match store.report_lan_password(&id, &key, &report, at).await {
                        Ok(Ok(kept)) => Ok(kept),
                        Ok(Err(refusal)) => Err(refusal.to_string()),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot keep a LAN password report");
                            Err("the broker cannot keep LAN passwords right now".to_owned())
                        }
                    },
                };
                self.drive(|s| s.board.handle_lan_stored(conn, result));
            }
            Check::LanPassword(conn, device, technician) => {
                let result = match &self.store {
                    None => Err("this broker has no database of LAN passwords".to_owned()),
                    Some(store) => store.lan_password(&device).await.map_err(|e| {
                        tracing::error!(error = %e, "cannot read a LAN password");
                        "the broker cannot read LAN passwords right now".to_owned()
                    }),
                };
                self.drive(|s| {
                    s.board
                        .handle_lan_looked_up(conn, device, technician, result)
                });
            }
            // Pin a device's key on first contact and refuse another key later. Without a
            // store there is no registry: the signature (already checked) is all there is.
            Check::Device(conn, id, key) => {
                let now = self.clock.now();
                let at = i64::try_from(now.0).unwrap_or(i64::MAX);
                let result = match &self.store {
                    None => Ok(false),
                    Some(store) => match store.register_device(&id, &key, at).await {
                        Ok(Ok(registered)) => Ok(registered.first_contact),
                        Ok(Err(refusal)) => Err(refusal.to_string()),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot check a device");
                            Err("the broker cannot check devices right now".to_owned())
                        }
                    },
                };
                self.drive(|s| s.board.handle_device_checked(conn, result, now));
            }
            Check::Grant(conn, id, key, report) => {
                let now = self.clock.now();
                let at = i64::try_from(now.0).unwrap_or(i64::MAX);
                let result = match &self.store {
                    None => Err("this broker has no database to keep grants in".to_owned()),
                    Some(store) => match store.report_grant(&id, &key, &report, at).await {
                        Ok(Ok(kept)) => Ok(kept),
                        Ok(Err(refusal)) => Err(refusal.to_string()),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot keep a grant report");
                            Err("the broker cannot keep grants right now".to_owned())
                        }
                    },
                };
                self.drive(|s| s.board.handle_grant_stored(conn, result));
            }
            Check::GrantLookUp(conn, device, grant) => {
                let result = match &self.store {
                    None => Err("this broker has no database of grants".to_owned()),
                    Some(store) => store.grant(&device, grant).await.map_err(|e| {
                        tracing::error!(error = %e, "cannot read a grant");
                        "the broker cannot read grants right now".to_owned()
                    }),
                };
                let now = self.clock.now();
                self.drive(|s| {
                    s.board
                        .handle_grant_looked_up(conn, device, grant, result, now)
                });
            }
            Check::Mail(conn, to, m) => {
                let result = match &self.mailer {
                    None => Err("this broker sends no e-mail (it has no --smtp server): \
                                 pass the invitation on yourself"
                        .to_owned()),
                    Some(mailer) => {
                        let invitation = crate::mail::Invitation {
                            technician: &m.technician,
                            link: &m.link,
                            code: &m.code,
                            expires_at: m.expires_at,
                        };
                        mailer
                            .send_invitation(&to, &invitation)
                            .await
                            .map_err(|e| e.to_string())
                    }
                };
                self.drive(|s| s.board.handle_mailed(conn, &to, result));
            }
        }
    }

    fn text(self: &Arc<Self>, conn: ConnId, text: &str) {
        let now = self.clock.now();
        self.drive(|s| s.board.handle_text(conn, text, now));
    }

    fn binary(self: &Arc<Self>, conn: ConnId) {
        self.drive(|s| s.board.handle_binary(conn));
    }

    fn close(self: &Arc<Self>, conn: ConnId) {
        self.drive(|s| {
            s.outboxes.remove(&conn);
            s.board.handle_close(conn);
        });
    }
}

/// A store lookup the switchboard is waiting for.
enum Check {
    /// A technician's API token.
    Token(ConnId, String),
    /// A device's LAN password report.
    LanReport(ConnId, String, [u8; 32], crate::store::LanReport),
    /// A device's LAN password, for a technician allowed to read it.
    LanPassword(ConnId, String, crate::store::TechnicianId),
    /// A device id and its (signature-checked) public key.
    Device(ConnId, String, [u8; 32]),
    /// A device's grant report (its signature already checked).
    Grant(ConnId, String, [u8; 32], crate::store::GrantReport),
    /// The broker's copy of a grant, for an unattended call.
    GrantLookUp(ConnId, String, u32),
    /// An ad-hoc invitation to e-mail: the connection, the address and what to say.
    Mail(ConnId, String, MailInvitation),
}

/// What an invitation e-mail says.
struct MailInvitation {
    technician: String,
    link: String,
    code: String,
    expires_at: deskwire_signal::UnixMillis,
}

impl HubState {
    /// Hand everything the switchboard produced to the connections' queues.
    fn deliver(&mut self) {
        while let Some(output) = self.board.poll_output() {
            match output {
                Output::Send { to, msg } => {
                    let Some(outbox) = self.outboxes.get(&to) else {
                        continue;
                    };
                    match outbox.tx.try_send(encode(&msg)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            tracing::warn!(conn = to.0, "peer is not reading; disconnecting it");
                            if let Some(outbox) = self.outboxes.remove(&to) {
                                outbox.kill.notify_one();
                            }
                            // Its peer hears of it in the outputs this queues.
                            self.board.handle_close(to);
                        }
                        Err(TrySendError::Closed(_)) => {
                            self.outboxes.remove(&to);
                            self.board.handle_close(to);
                        }
                    }
                }
                // Dropping the sender lets the task write what is queued, then close.
                Output::Close { conn } => {
                    self.outboxes.remove(&conn);
                }
                Output::StoreGrant {
                    conn,
                    id,
                    key,
                    report,
                } => self.checks.push(Check::Grant(conn, id, key, report)),
                Output::LookUpGrant {
                    conn,
                    device,
                    grant,
                } => self.checks.push(Check::GrantLookUp(conn, device, grant)),
                Output::MailInvitation {
                    conn,
                    to,
                    technician,
                    link,
                    code,
                    expires_at,
                } => self.checks.push(Check::Mail(
                    conn,
                    to,
                    MailInvitation {
                        technician,
                        link,
                        code,
                        expires_at,
                    },
                )),
                // Checked off the lock; the answer comes back through `Hub::authenticate`.
                Output::Authenticate { conn, token } => self.checks.push(Check::Token(conn, token)),
                Output::StoreLanReport {
                    conn,
                    id,
                    key,
                    report,
                } => self.checks.push(Check::LanReport(conn, id, key, report)),
                Output::LookUpLanPassword {
                    conn,
                    device,
                    technician,
                } => self
                    .checks
                    .push(Check::LanPassword(conn, device, technician)),
                Output::CheckDevice { conn, id, key } => {
                    self.checks.push(Check::Device(conn, id, key))
                }
                Output::Audit(_)
                | Output::StoreCode { .. }
                | Output::RedeemCode { .. }
                | Output::LookUpCode { .. }
                | Output::ResumeCode { .. }
                | Output::CancelCode { .. }
                | Output::FailedConfirmation { .. }
                | Output::EndSession { .. }
                | Output::SaveAdhoc(_) => match &self.jobs {
                    Some(tx) => {
                        if tx.send(output).is_err() {
                            tracing::error!("the store task has stopped; a store job is lost");
                        }
                    }
                    None => tracing::debug!("no store: {output:?} not kept"),
                },
            }
        }
    }
}

/// The technician a token names, with their group's policy and, when it caps sessions,
/// how many they have open now.
async fn authenticate(
    store: &Store,
    token: &str,
) -> Result<Option<Authenticated>, crate::store::StoreError> {
    let Some(p) = store.authenticate_token(token).await? else {
        return Ok(None);
    };
    let max_sessions = p.group.policy.max_sessions;
    let open_sessions = match max_sessions {
        Some(_) => store.open_sessions(p.technician.id).await?,
        None => 0,
    };
    Ok(Some(Authenticated {
        technician: p.technician.id,
        company: p.technician.company,
        policy: policy_of(&p),
        max_sessions,
        open_sessions,
        permissions: p.group.permissions.iter().map(|x| x.as_str()).collect(),
    }))
}

/// What a technician's group allows, as the target is told.
fn policy_of(p: &crate::store::Principal) -> SessionPolicy {
    use crate::store::{Acceptance, Permission};
    let policy = &p.group.policy;
    let (acceptance, window_secs) = match policy.acceptance {
        Acceptance::Auto => (PolicyAcceptance::Auto, policy.auto_reject_secs),
        Acceptance::Request => (PolicyAcceptance::Request, policy.request_timeout_secs),
        Acceptance::Deny => (PolicyAcceptance::Deny, 0),
    };
    SessionPolicy {
        technician: p.technician.name.clone(),
        company: p.technician.company_name.clone(),
        acceptance,
        window_secs,
        control: p.group.permissions.contains(Permission::Control),
        unattended: p.group.permissions.contains(Permission::Unattended),
        admin_credentials_only: !policy.customer_credentials,
    }
}
