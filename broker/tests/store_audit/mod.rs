//! The audit log's scenarios on both databases: the hash chain names an edited, deleted,
//! swapped or inserted record, two brokers appending at once do not fork it, and the admin
//! and audit commands work against the database.

use anyhow::{ensure, Context, Result};
use deskwire_broker::store::{
    Acceptance, AuditEvent, AuditRecord, BreakReason, Permission, StoreError,
};

use crate::common::fixtures::{broken, five_records, run, T0};
use crate::common::TestDb;

pub(crate) async fn the_audit_chain_verifies_and_names_an_edited_record(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    ensure!(
        store.verify_audit().await? == Ok(0),
        "an empty log is intact"
    );
    five_records(&store).await?;
    sqlx::query("UPDATE audit_log SET detail = 'nothing happened' WHERE id = 3")
        .execute(&db.raw().await)
        .await?;
    let b = broken(&store).await?;
    ensure!(b.first_bad_id == 3 && b.why == BreakReason::Edited, "{b}");
    Ok(())
}

pub(crate) async fn the_audit_chain_names_a_deleted_record(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    five_records(&store).await?;
    sqlx::query("DELETE FROM audit_log WHERE id = 2")
        .execute(&db.raw().await)
        .await?;
    let b = broken(&store).await?;
    ensure!(
        b.first_bad_id == 2 && b.why == BreakReason::Missing { next: Some(3) },
        "{b}"
    );
    // Hiding the gap by renumbering breaks the hashes instead.
    sqlx::query("UPDATE audit_log SET id = id - 1 WHERE id > 2")
        .execute(&db.raw().await)
        .await
        .ok();
    let b = broken(&store).await?;
    ensure!(b.first_bad_id == 2, "{b}");
    Ok(())
}

pub(crate) async fn the_audit_chain_names_swapped_records(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    five_records(&store).await?;
    let raw = db.raw().await;
    for sql in [
        "UPDATE audit_log SET id = -1 WHERE id = 2",
        "UPDATE audit_log SET id = 2 WHERE id = 4",
        "UPDATE audit_log SET id = 4 WHERE id = -1",
    ] {
        sqlx::query(sql).execute(&raw).await?;
    }
    let b = broken(&store).await?;
    ensure!(b.first_bad_id == 2, "{b}");
    Ok(())
}

pub(crate) async fn the_audit_chain_names_an_inserted_or_truncated_tail(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    five_records(&store).await?;
    let raw = db.raw().await;
    // A forged sixth record copying the fifth's shape, appended behind the store's back.
    sqlx::query(
        "INSERT INTO audit_log (id, at, event, technician_id, device_id, source_addr, \
         session_code, detail, prev_hash, hash) \
         SELECT 6, at, event, technician_id, device_id, source_addr, session_code, 'forged', \
         hash, hash FROM audit_log WHERE id = 5",
    )
    .execute(&raw)
    .await?;
    let b = broken(&store).await?;
    ensure!(b.first_bad_id == 6, "{b}");
    sqlx::query("DELETE FROM audit_log WHERE id >= 5")
        .execute(&raw)
        .await?;
    let b = broken(&store).await?;
    ensure!(
        b.first_bad_id == 5 && b.why == BreakReason::Missing { next: None },
        "{b}"
    );
    Ok(())
}

pub(crate) async fn concurrent_appends_from_two_brokers_do_not_fork_the_chain(
    db: &TestDb,
) -> Result<()> {
    let brokers = [db.open().await, db.open().await];
    let verifier = brokers[0].clone();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = brokers[t % 2].clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let record = AuditRecord::new(T0 + i, AuditEvent::CodeIssued)
                        .detail(format!("task {t} record {i}"));
                    store.append_audit(&record).await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    // Verification running beside the appenders must not report a break.
    let during = verifier.verify_audit().await?;
    ensure!(during.is_ok(), "verify during appends: {during:?}");
    for task in tasks {
        task.await??;
    }
    ensure!(verifier.verify_audit().await? == Ok(100));
    Ok(())
}

pub(crate) async fn the_admin_and_audit_commands_work_against_the_database(
    db: &TestDb,
) -> Result<()> {
    let ok = |(code, out, err): (i32, String, String)| -> Result<String> {
        ensure!(code == 0, "exit {code}: {out}{err}");
        Ok(out)
    };
    ok(run(db, &["admin", "create-company", "Acme"], None).await?)?;
    let group = [
        "admin",
        "create-group",
        "--company",
        "Acme",
        "support",
        "--permissions",
        "control,clipboard",
        "--acceptance",
        "deny",
    ];
    ok(run(db, &group, None).await?)?;
    let tech = [
        "admin",
        "create-technician",
        "--company",
        "Acme",
        "--group",
        "support",
        "alice",
        "--password-stdin",
    ];
    ok(run(db, &tech, Some("correct horse\n")).await?)?;
    let token = ok(run(
        db,
        &["admin", "create-token", "--technician", "alice"],
        None,
    )
    .await?)?;
    let token = token.trim();

    let store = db.open().await;
    let p = store
        .authenticate_token(token)
        .await?
        .context("printed token refused")?;
    ensure!(p.technician.name == "alice" && p.group.policy.acceptance == Acceptance::Deny);
    ensure!(p.group.permissions.contains(Permission::Clipboard));
    ensure!(store
        .verify_password("alice", "correct horse")
        .await?
        .is_some());

    let set = [
        "admin",
        "set-permissions",
        "--company",
        "Acme",
        "--group",
        "support",
        "--permissions",
        "view_only",
    ];
    ok(run(db, &set, None).await?)?;
    let list = ok(run(db, &["admin", "list"], None).await?)?;
    ensure!(
        list.contains("\"alice\"") && list.contains("view_only"),
        "{list}"
    );
    five_records(&store).await?;
    let verified = ok(run(db, &["audit", "verify"], None).await?)?;
    // permission_changed, token_created and the five above.
    ensure!(verified.contains("intact: 7 records"), "{verified}");

    // Bad input: exit 2 with the reason.
    let (code, _, err) = run(db, &["admin", "create-company", "Acme"], None).await?;
    ensure!(code == 2 && err.contains("already exists"), "{code} {err}");
    let (code, _, err) = run(db, &["admin", "create-token", "--technician", "zed"], None).await?;
    ensure!(
        code == 2 && err.contains("no technician \"zed\""),
        "{code} {err}"
    );

    sqlx::query("UPDATE audit_log SET detail = 'edited' WHERE id = 4")
        .execute(&db.raw().await)
        .await?;
    let (code, out, _) = run(db, &["audit", "verify"], None).await?;
    ensure!(code == 1 && out.contains("record 4"), "{code} {out}");
    Ok(())
}
