//! `deskwire-broker`: the signalling broker as a process.
//!
//! Bare (`deskwire-broker --listen ADDR --code-ttl SECS`), it opens and migrates its
//! database, prints one line, `listening on ws://IP:PORT/v1/signal`, once it is bound (so
//! scripts and tests started with port 0 learn the real port), logs to stderr, and serves
//! until SIGINT or SIGTERM. `admin ...` manages accounts and `audit verify` checks the audit
//! chain, against the same database.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use deskwire_broker::store::{
    Acceptance, AuditId, Company, Group, Permissions, Policy, Store, StoreError,
};
use deskwire_broker::{BrokerConfig, SystemClock};
use deskwire_signal::adhoc::AdhocLimits;
use deskwire_signal::SIGNAL_PATH;
use tracing_subscriber::EnvFilter;

/// Exit code for a command line the broker cannot act on (as clap uses for bad flags).
const USAGE: u8 = 2;
/// The database when `--database` is not given: a SQLite file in the working directory,
/// created if missing.
const DEFAULT_DATABASE: &str = "sqlite://deskwire-broker.db?mode=rwc";

/// Signalling broker: pairs a technician and a user by connection code and relays their
/// WebRTC offer and answer. Without a subcommand it serves.
#[derive(Debug, Parser)]
#[command(
    name = "deskwire-broker",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8450")]
    listen: SocketAddr,
    /// Seconds a connection code works after it is issued: 10 to 86400 (a day).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    code_ttl: u64,
    /// Database URL: sqlite://PATH[?mode=rwc], sqlite::memory: or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB. Opened and migrated at start.
    #[arg(long, value_name = "URL", default_value = DEFAULT_DATABASE)]
    database: String,
    /// Only technicians with an API token (`admin create-token`) may create sessions; the
    /// target is told their name and their group's acceptance policy and permissions.
    #[arg(long)]
    require_token: bool,
    /// Only targets that prove their device identity (a signed join) may join.
    #[arg(long)]
    require_device: bool,
    /// Ad-hoc support sessions one technician may hold at once (invited or active).
    #[arg(long, value_name = "N", default_value_t = AdhocLimits::DEFAULT_PER_TECHNICIAN)]
    adhoc_per_technician: u32,
    /// Ad-hoc support sessions one company may hold at once (invited or active).
    #[arg(long, value_name = "N", default_value_t = AdhocLimits::DEFAULT_PER_COMPANY)]
    adhoc_per_company: u32,
    /// E-mail ad-hoc invitations through this server: smtps://[USER:PASS@]HOST[:PORT],
    /// smtp+starttls://..., or smtp://HOST:PORT on loopback only.
    #[arg(long, value_name = "URL", requires = "mail_from")]
    smtp: Option<String>,
    /// The sender of invitation e-mails, e.g. "Support <support@example.com>".
    #[arg(long, value_name = "MAILBOX", requires = "smtp")]
    mail_from: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Management commands print their results on stdout; only warnings belong beside them.
    let default_filter = if args.command.is_some() {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        // Colours for a terminal only: a service's log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();

    let mut config = BrokerConfig::default()
        .code_ttl(Duration::from_secs(args.code_ttl))
        .require_token(args.require_token)
        .require_device(args.require_device)
        .adhoc(AdhocLimits {
            per_technician: args.adhoc_per_technician,
            per_company: args.adhoc_per_company,
            ..AdhocLimits::default()
        });
    if let (Some(url), Some(from)) = (&args.smtp, &args.mail_from) {
        config = config.mail(deskwire_broker::mail::MailConfig {
            url: url.clone(),
            from: from.clone(),
        });
    }
    if args.command.is_none() {
        if let Err(e) = config.validate() {
            return fail(USAGE, &format!("invalid settings: {e}"));
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &format!("could not start the async runtime: {e}")),
    };
    match args.command {
        Some(command) => runtime.block_on(manage(command)),
        None => runtime.block_on(serve(args.listen, config, &args.database)),
    }
}

async fn serve(addr: SocketAddr, config: BrokerConfig, database: &str) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => return fail(USAGE, &format!("cannot listen on {addr}: {e}")),
    };
    let bound = match listener.local_addr() {
        Ok(bound) => bound,
        Err(e) => return fail(1, &format!("cannot read the listening address: {e}")),
    };
    // After binding, so a bad address fails before a database file is created. Every join
    // attempt and outcome goes to its audit log.
    let store = match Store::open(database).await {
        Ok(store) => store,
        Err(e) => return fail(if e.is_bad_input() { USAGE } else { 1 }, &e.to_string()),
    };
    let stop = termination();
    let mut stdout = std::io::stdout().lock();
    if let Err(e) =
        writeln!(stdout, "listening on ws://{bound}{SIGNAL_PATH}").and_then(|()| stdout.flush())
    {
        return fail(1, &format!("cannot write to stdout: {e}"));
    }
    drop(stdout);

    let served =
        deskwire_broker::run_with_store(listener, config, Arc::new(SystemClock), Some(store), stop)
            .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e.to_string()),
    }
}

/// Watch SIGINT and SIGTERM from now on (before the address is printed, so a script that
/// signals as soon as it reads it stops the broker cleanly); the future resolves on either.
fn termination() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let watched =
            signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
        match watched {
            Ok((mut term, mut int)) => {
                return futures_util::future::Either::Left(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                })
            }
            Err(e) => tracing::warn!("cannot watch SIGTERM and SIGINT: {e}; serving until killed"),
        }
    }
    futures_util::future::Either::Right(std::future::pending::<()>())
}

/// Report `message` on stderr and return `code`.
fn fail(code: u8, message: &str) -> ExitCode {
    // Before or outside logging: the user must see why the broker did not start.
    let _ = writeln!(std::io::stderr(), "deskwire-broker: {message}");
    ExitCode::from(code)
}

/// Subcommands; without one the broker serves.
#[derive(Debug, Subcommand)]
enum Command {
    /// Manage companies, groups, technicians, API tokens and grants. Every command names
    /// what it creates as its argument and what it refers to with --company, --group,
    /// --technician or --device; settings are flags (--permissions LIST everywhere).
    Admin(AdminArgs),
    /// Inspect the audit log.
    Audit(AuditArgs),
}

#[derive(Debug, ClapArgs)]
struct AdminArgs {
    /// Database URL, as for serving.
    #[arg(long, value_name = "URL", default_value = DEFAULT_DATABASE, global = true)]
    database: String,
    #[command(subcommand)]
    action: AdminAction,
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Create a company.
    CreateCompany {
        /// Its name (unique).
        name: String,
    },
    /// Create a group of technicians in a company.
    CreateGroup {
        /// The company.
        #[arg(long, value_name = "NAME")]
        company: String,
        /// The group's name (unique in the company).
        name: String,
        /// Comma-separated: control, view_only, clipboard, file_transfer, unattended, lan
        /// (or none).
        #[arg(long, value_name = "LIST", default_value = "view_only")]
        permissions: Permissions,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Create a technician in a group.
    CreateTechnician {
        /// The group's company.
        #[arg(long, value_name = "NAME")]
        company: String,
        /// The group.
        #[arg(long, value_name = "NAME")]
        group: String,
        /// The technician's login name (unique).
        name: String,
        /// Read a password from stdin (one line); without it the technician logs in with API
        /// tokens only.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an API token for a technician and print it (the only time it is shown).
    CreateToken {
        /// The technician.
        #[arg(long, value_name = "NAME")]
        technician: String,
        /// What the token is for.
        #[arg(long, value_name = "TEXT", default_value = "cli")]
        label: String,
    },
    /// List the unattended-access grants devices reported (of one device with --device).
    ListGrants {
        /// Only this device (`dev-...`).
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
    },
    /// Revoke the broker's copy of a grant: unattended calls under it are refused here from
    /// now on (recorded in the audit log). The computer's own copy is its user's to revoke.
    RevokeGrant {
        /// The device (`dev-...`), as `list-grants` shows it.
        #[arg(long, value_name = "DEVICE")]
        device: String,
        /// The grant's number on that device.
        #[arg(long, value_name = "N")]
        grant: u32,
    },
    /// Revoke one of a technician's API tokens.
    RevokeToken {
        /// The technician.
        #[arg(long, value_name = "NAME")]
        technician: String,
        /// The token's id, as `list` shows it.
        id: i64,
    },
    /// Replace a group's permissions (recorded in the audit log).
    SetPermissions {
        /// The group's company.
        #[arg(long, value_name = "NAME")]
        company: String,
        /// The group.
        #[arg(long, value_name = "NAME")]
        group: String,
        /// Comma-separated permissions, or none (as create-group takes them).
        #[arg(
            long,
            value_name = "LIST",
            required_unless_present = "bare_permissions"
        )]
        permissions: Option<Permissions>,
        /// The same as a bare argument, as earlier versions took it.
        #[arg(hide = true, conflicts_with = "permissions")]
        bare_permissions: Option<Permissions>,
    },
    /// Change a group's policy; unset options keep their value (recorded in the audit log).
    SetPolicy {
        /// The group's company.
        #[arg(long, value_name = "NAME")]
        company: String,
        /// The group.
        #[arg(long, value_name = "NAME")]
        group: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Print every company, group, technician and token.
    List,
    /// Print the LAN password a managed device last reported (recorded in the audit log).
    LanPassword {
        /// The device id (`dev-...`).
        #[arg(long)]
        device: String,
    },
}

/// A group's policy; unset options take the default (creating) or keep the current value.
#[derive(Debug, ClapArgs)]
struct PolicyArgs {
    /// auto, request or deny [default: request].
    #[arg(long, value_name = "MODE")]
    acceptance: Option<Acceptance>,
    /// Under auto acceptance, seconds the user may reject in [default: 30].
    #[arg(long, value_name = "SECS")]
    auto_reject: Option<u32>,
    /// Under request acceptance, seconds to wait for the user [default: 60].
    #[arg(long, value_name = "SECS")]
    request_timeout: Option<u32>,
    /// Sessions one technician may hold at once [default: no cap].
    #[arg(long, value_name = "N")]
    max_sessions: Option<u32>,
    /// Whether unattended access may use the customer's credentials (else the target's
    /// admin credentials at each connection) [default: true].
    #[arg(long, value_name = "BOOL")]
    customer_credentials: Option<bool>,
}

impl PolicyArgs {
    fn over(&self, base: Policy) -> Policy {
        Policy {
            acceptance: self.acceptance.unwrap_or(base.acceptance),
            auto_reject_secs: self.auto_reject.unwrap_or(base.auto_reject_secs),
            request_timeout_secs: self.request_timeout.unwrap_or(base.request_timeout_secs),
            max_sessions: self.max_sessions.or(base.max_sessions),
            customer_credentials: self
                .customer_credentials
                .unwrap_or(base.customer_credentials),
        }
    }
}

#[derive(Debug, ClapArgs)]
struct AuditArgs {
    /// Database URL, as for serving.
    #[arg(long, value_name = "URL", default_value = DEFAULT_DATABASE, global = true)]
    database: String,
    #[command(subcommand)]
    action: AuditAction,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check the hash chain: print the number of intact records, or the first bad one.
    #[command(
        after_help = "Exit status: 0 intact, 1 broken (the first bad record is named), \
2 bad input, 3 the database could not be read."
    )]
    Verify,
    /// Print records, oldest first.
    List {
        /// Start after this record id.
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after: i64,
        /// At most this many records.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
    },
}

/// Exit code of `audit verify` when the chain is broken.
const BROKEN: u8 = 1;
/// Exit code of `audit verify` when the database could not be read (1 means "broken").
const VERIFY_FAILED: u8 = 3;

async fn manage(command: Command) -> ExitCode {
    let (database, runtime_failure) = match &command {
        Command::Admin(args) => (args.database.as_str(), 1),
        Command::Audit(args) => (args.database.as_str(), VERIFY_FAILED),
    };
    let store = match Store::open(database).await {
        Ok(store) => store,
        Err(e) => return store_failure(&e, runtime_failure),
    };
    let result = match command {
        Command::Admin(args) => admin(&store, args.action).await,
        Command::Audit(args) => audit(&store, args.action).await,
    };
    store.close().await;
    match result {
        Ok(code) => code,
        Err(e) => store_failure(&e, runtime_failure),
    }
}

fn store_failure(e: &StoreError, runtime_failure: u8) -> ExitCode {
    fail(
        if e.is_bad_input() {
            USAGE
        } else {
            runtime_failure
        },
        &e.to_string(),
    )
}

async fn admin(store: &Store, action: AdminAction) -> Result<ExitCode, StoreError> {
    let now = now_millis();
    match action {
        AdminAction::CreateCompany { name } => {
            let id = store.create_company(&name, now).await?;
            say(&format!("created company {name:?} (id {})", id.0));
        }
        AdminAction::CreateGroup {
            company,
            name,
            permissions,
            policy,
        } => {
            let company = company_named(store, &company).await?;
            let policy = policy.over(Policy::default());
            let id = store
                .create_group(company.id, &name, permissions, &policy, now)
                .await?;
            say(&format!(
                "created group {name:?} (id {}) in {:?}: {}",
                id.0,
                company.name,
                describe(permissions, &policy)
            ));
        }
        AdminAction::CreateTechnician {
            company,
            group,
            name,
            password_stdin,
        } => {
            let group = group_named(store, &company, &group).await?;
            let password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let id = store
                .create_technician(group.id, &name, password.as_deref(), now)
                .await?;
            say(&format!(
                "created technician {name:?} (id {}) in group {:?}",
                id.0, group.name
            ));
        }
        AdminAction::CreateToken { technician, label } => {
            let tech = technician_named(store, &technician).await?;
            let issued = store.create_token(tech.id, &label, now).await?;
            say(&issued.token);
            let _ = writeln!(
                std::io::stderr(),
                "token {} for {technician:?}: store it now, it cannot be shown again",
                issued.id.0
            );
        }
        AdminAction::RevokeToken { technician, id } => {
            let tech = technician_named(store, &technician).await?;
            let owned = store.tokens(tech.id).await?.iter().any(|t| t.id.0 == id);
            if !owned
                || !store
                    .revoke_token(deskwire_broker::store::TokenId(id), now)
                    .await?
            {
                return Err(StoreError::NotFound {
                    what: "unrevoked token with id",
                    name: format!("{id} of technician {technician}"),
                });
            }
            say(&format!("revoked token {id} of {technician:?}"));
        }
        AdminAction::SetPermissions {
            company,
            group,
            permissions,
            bare_permissions,
        } => {
            // One of the two: clap requires it.
            let permissions = permissions
                .or(bare_permissions)
                .unwrap_or(Permissions::NONE);
            let g = group_named(store, &company, &group).await?;
            store
                .set_group_permissions(g.id, permissions, None, now)
                .await?;
            say(&format!(
                "group {group:?}: permissions {} -> {permissions}",
                g.permissions
            ));
        }
        AdminAction::SetPolicy {
            company,
            group,
            policy,
        } => {
            let g = group_named(store, &company, &group).await?;
            let policy = policy.over(g.policy);
            store.set_group_policy(g.id, &policy, None, now).await?;
            say(&format!(
                "group {group:?}: {}",
                describe(g.permissions, &policy)
            ));
        }
        AdminAction::List => list(store).await?,
        AdminAction::ListGrants { device } => {
            let grants = store.grants(device.as_deref()).await?;
            if grants.is_empty() {
                say("no grants kept");
            }
            let at = deskwire_signal::UnixMillis(u64::try_from(now).unwrap_or(0));
            for (device, report) in grants {
                let state =
                    match serde_json::from_str::<deskwire_signal::grant::Grant>(&report.record) {
                        Err(_) => "unreadable".to_owned(),
                        Ok(g) => match g.check(at) {
                            Ok(()) => "open now".to_owned(),
                            Err(why) => why.to_string(),
                        },
                    };
                say(&format!(
                    "{device} grant {} for {}: {state}",
                    report.grant, report.technician
                ));
            }
        }
        AdminAction::RevokeGrant { device, grant } => {
            if !store.revoke_grant(&device, grant, now).await? {
                return Err(StoreError::NotFound {
                    what: "open grant",
                    name: format!("{grant} of {device}"),
                });
            }
            say(&format!(
                "revoked the broker's copy of grant {grant} of {device}: unattended calls under it are refused"
            ));
        }
        AdminAction::LanPassword { device } => match store.lan_password(&device).await? {
            Some(r) => {
                let mut record = deskwire_broker::store::AuditRecord::new(
                    now,
                    deskwire_broker::store::AuditEvent::PermissionGranted,
                );
                record.device = Some(device.clone());
                record.detail = format!("an admin read the LAN password of {device}");
                store.append_audit(&record).await?;
                say(&format!(
                    "{} (reported at {} ms, rotates at {} ms)",
                    r.password, r.reported_at, r.rotates_at
                ));
            }
            None => {
                return Err(StoreError::NotFound {
                    what: "LAN password report of device",
                    name: device,
                })
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &Store) -> Result<(), StoreError> {
    for company in store.companies().await? {
        say(&format!("company {:?} (id {})", company.name, company.id.0));
        for group in store.groups(company.id).await? {
            say(&format!(
                "  group {:?} (id {}): {}",
                group.name,
                group.id.0,
                describe(group.permissions, &group.policy)
            ));
            for tech in store.technicians(group.id).await? {
                say(&format!(
                    "    technician {:?} (id {})",
                    tech.name, tech.id.0
                ));
                for token in store.tokens(tech.id).await? {
                    let state = if token.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    say(&format!(
                        "      token {} dw_{}_... {:?} {state}",
                        token.id.0, token.lookup, token.label
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn audit(store: &Store, action: AuditAction) -> Result<ExitCode, StoreError> {
    match action {
        AuditAction::Verify => match store.verify_audit().await? {
            Ok(records) => {
                let s = if records == 1 { "" } else { "s" };
                say(&format!("audit log intact: {records} record{s}"));
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                say(&format!(
                    "audit log broken at record {}: {}",
                    broken.first_bad_id, broken.why
                ));
                Ok(ExitCode::from(BROKEN))
            }
        },
        AuditAction::List { after, limit } => {
            // Names instead of ids, local time instead of milliseconds; the id column is
            // what `--after` takes.
            let mut names: std::collections::HashMap<i64, String> = Default::default();
            for e in store.audit_entries(AuditId(after), limit).await? {
                let who = match e.technician {
                    None => "-".to_owned(),
                    Some(t) => match names.get(&t.0) {
                        Some(n) => n.clone(),
                        None => {
                            let name = store
                                .technician(t)
                                .await?
                                .map_or_else(|| format!("technician #{}", t.0), |t| t.name);
                            names.insert(t.0, name.clone());
                            name
                        }
                    },
                };
                let at = u64::try_from(e.at).map_or_else(
                    |_| "before 1970".to_owned(),
                    |ms| deskwire_signal::words::local_time(deskwire_signal::UnixMillis(ms)),
                );
                let mut line = format!("{:>6}  {at}  {:<24} {who}", e.id.0, e.event);
                for (label, value) in [
                    ("device", &e.device),
                    ("from", &e.source),
                    ("session", &e.session),
                ] {
                    if let Some(v) = value {
                        line.push_str(&format!("  {label} {v}"));
                    }
                }
                if !e.detail.is_empty() {
                    line.push_str(&format!("  \"{}\"", e.detail.escape_debug()));
                }
                say(&line);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn company_named(store: &Store, name: &str) -> Result<Company, StoreError> {
    store
        .company_by_name(name)
        .await?
        .ok_or_else(|| not_found("company", name))
}

async fn group_named(store: &Store, company: &str, name: &str) -> Result<Group, StoreError> {
    let company = company_named(store, company).await?;
    store
        .group_by_name(company.id, name)
        .await?
        .ok_or_else(|| not_found("group", &format!("{name} in company {}", company.name)))
}

async fn technician_named(
    store: &Store,
    name: &str,
) -> Result<deskwire_broker::store::Technician, StoreError> {
    store
        .technician_by_name(name)
        .await?
        .ok_or_else(|| not_found("technician", name))
}

fn not_found(what: &'static str, name: &str) -> StoreError {
    StoreError::NotFound {
        what,
        name: name.to_owned(),
    }
}

fn describe(permissions: Permissions, policy: &Policy) -> String {
    let max = policy
        .max_sessions
        .map_or_else(|| "no cap".to_owned(), |m| m.to_string());
    format!(
        "permissions {permissions}; acceptance {}, auto-reject {} s, request timeout {} s, \
         max sessions {max}, customer credentials {}",
        policy.acceptance,
        policy.auto_reject_secs,
        policy.request_timeout_secs,
        if policy.customer_credentials {
            "allowed"
        } else {
            "not allowed"
        }
    )
}

/// One line from stdin, without its line ending.
fn read_password() -> Result<String, StoreError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| StoreError::Invalid {
            what: "password",
            why: format!("cannot read stdin: {e}"),
        })?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_owned())
}

/// Print a result line; a closed stdout (`| head`) is not worth failing over.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn now_millis() -> i64 {
    i64::try_from(deskwire_signal::UnixMillis::now().0).unwrap_or(i64::MAX)
}
