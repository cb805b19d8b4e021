//! Shared scenario fixtures: accounts, audit records, and running the binary.

use std::process::Stdio;

use anyhow::{bail, ensure, Context, Result};
use deskwire_broker::store::{
    Acceptance, AuditBreak, AuditEvent, AuditRecord, Permission, Permissions, Policy, Store,
    TechnicianId,
};
use tokio::io::AsyncWriteExt;

use super::TestDb;

pub const T0: i64 = 1_700_000_000_000;
pub const BIN: &str = env!("CARGO_BIN_EXE_deskwire-broker");

/// A company, a group (control + clipboard, auto acceptance, cap 2) and two technicians.
pub async fn accounts(store: &Store) -> Result<(TechnicianId, TechnicianId)> {
    let company = store.create_company("Acme", T0).await?;
    let policy = Policy {
        acceptance: Acceptance::Auto,
        max_sessions: Some(2),
        ..Policy::default()
    };
    let perms = Permissions::NONE
        .with(Permission::Control)
        .with(Permission::Clipboard);
    let group = store
        .create_group(company, "support", perms, &policy, T0)
        .await?;
    let alice = store.create_technician(group, "alice", None, T0).await?;
    let bob = store
        .create_technician(group, "bob", Some("hunter2"), T0)
        .await?;
    Ok((alice, bob))
}

/// Five more records, verified intact.
pub async fn five_records(store: &Store) -> Result<()> {
    let before = match store.verify_audit().await? {
        Ok(n) => i64::try_from(n)?,
        Err(b) => bail!("{b}"),
    };
    let events = [
        AuditEvent::CodeIssued,
        AuditEvent::WrongCode,
        AuditEvent::SessionStarted,
        AuditEvent::RejectedByUser,
        AuditEvent::Ended,
    ];
    for (i, event) in events.into_iter().enumerate() {
        let record = AuditRecord::new(T0 + i as i64, event)
            .technician(TechnicianId(1))
            .device("pc-1")
            .source("192.0.2.7:50000")
            .session("123456")
            .detail(format!("record {}", i + 1));
        let id = store.append_audit(&record).await?;
        ensure!(id.0 == before + i as i64 + 1, "ids are dense from 1");
    }
    ensure!(store.verify_audit().await? == Ok(u64::try_from(before)? + 5));
    Ok(())
}

pub async fn broken(store: &Store) -> Result<AuditBreak> {
    match store.verify_audit().await? {
        Ok(n) => bail!("tampering not detected ({n} records intact)"),
        Err(b) => Ok(b),
    }
}

pub async fn run(db: &TestDb, args: &[&str], stdin: Option<&str>) -> Result<(i32, String, String)> {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .args(["--database", &db.url])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin.unwrap_or("").as_bytes()).await?;
    drop(input);
    let out = child.wait_with_output().await?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}
