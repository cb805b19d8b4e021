//! The broker's store against real databases: every scenario runs on a SQLite file and on a
//! private PostgreSQL server that this test binary starts itself (`tests/common/postgres.rs`).

mod common;
mod store_audit;

use std::process::Stdio;

use anyhow::{bail, ensure, Context, Result};
use common::fixtures::{accounts, BIN, T0};
use common::TestDb;
use deskwire_broker::store::{
    Acceptance, AuditEvent, AuditId, AuditRecord, CodeState, EndedBy, NewSession, Permission,
    Permissions, Policy, Refusal, SessionRefusal, Store, StoreError, MAX_FAILED_CONFIRMATIONS,
};

use store_audit::*;

/// Each scenario below becomes `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(&crate::common::TestDb::sqlite(stringify!($name))).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(&crate::common::TestDb::postgres(stringify!($name)).await).await
                }
            )*
        }
    };
}

on_both_databases!(
    migrations_apply_once_and_reopening_is_a_no_op,
    adhoc_state_is_absent_then_replaced_and_read_back,
    a_grant_report_is_kept_only_if_newer_and_only_for_the_pinned_key,
    grants_are_listed_and_revoked_at_the_broker_with_an_audit_record,
    tokens_authenticate_their_own_technician_only,
    passwords_are_hashed_and_checked,
    duplicates_and_missing_references_are_named,
    permission_and_policy_changes_are_audited,
    a_device_keeps_its_first_key,
    a_lan_password_report_is_kept_only_if_newer_and_only_for_the_pinned_key,
    a_code_is_redeemed_once_and_refused_precisely_after,
    three_failed_confirmations_burn_a_code,
    a_pending_code_survives_a_restart_and_stays_single_use,
    two_brokers_racing_for_one_code_redeem_it_once,
    sessions_record_their_end_and_respect_the_cap,
    the_audit_chain_verifies_and_names_an_edited_record,
    the_audit_chain_names_a_deleted_record,
    the_audit_chain_names_swapped_records,
    the_audit_chain_names_an_inserted_or_truncated_tail,
    concurrent_appends_from_two_brokers_do_not_fork_the_chain,
    the_admin_and_audit_commands_work_against_the_database,
);

async fn migrations_apply_once_and_reopening_is_a_no_op(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    store.create_company("Acme", T0).await?;
    store.close().await;
    let store = db.open().await;
    ensure!(store.company_by_name("Acme").await?.is_some());
    let raw = db.raw().await;
    let (applied,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&raw)
            .await?;
    ensure!(applied == 6, "{applied} migrations recorded");
    Ok(())
}

async fn adhoc_state_is_absent_then_replaced_and_read_back(db: &TestDb) -> Result<()> {
    use deskwire_broker::store::AdhocSnapshot;
    let store = db.open().await;
    ensure!(store.load_adhoc().await?.is_none());
    for n in 1..=2 {
        let snapshot = AdhocSnapshot {
            book: format!("{{\"n\":{n}}}"),
            host_tokens: "{}".into(),
        };
        store.save_adhoc(&snapshot, T0 + n).await?;
        ensure!(store.load_adhoc().await? == Some(snapshot));
    }
    Ok(())
}

async fn tokens_authenticate_their_own_technician_only(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    let (alice, bob) = accounts(&store).await?;
    let a = store.create_token(alice, "laptop", T0).await?;
    let b = store.create_token(bob, "ci", T0).await?;
    ensure!(a.token.starts_with("dw_") && a.token.len() == 63, "{a:?}");
    ensure!(
        !format!("{a:?}").contains(&a.token[20..]),
        "Debug leaks the token"
    );

    let principal = store
        .authenticate_token(&a.token)
        .await?
        .context("alice's token refused")?;
    ensure!(principal.technician.id == alice && principal.technician.name == "alice");
    ensure!(principal.group.permissions.contains(Permission::Control));
    ensure!(!principal
        .group
        .permissions
        .contains(Permission::FileTransfer));
    ensure!(principal.group.policy.acceptance == Acceptance::Auto);
    ensure!(principal.group.policy.max_sessions == Some(2));
    let principal = store.authenticate_token(&b.token).await?.context("bob's")?;
    ensure!(principal.technician.id == bob, "bob's token must name bob");

    // One character of the secret changed; alice's lookup with bob's secret; garbage.
    let mut wrong = a.token.clone();
    let last = if wrong.ends_with('A') { "B" } else { "A" };
    wrong.replace_range(wrong.len() - 1.., last);
    let crossed = format!("{}{}", &a.token[..20], &b.token[20..]);
    for bad in [wrong.as_str(), crossed.as_str(), "dw_nope", "", "Bearer x"] {
        ensure!(
            store.authenticate_token(bad).await?.is_none(),
            "{bad:?} accepted"
        );
    }

    // Only an Argon2id hash is stored, never the token or its secret.
    let raw = db.raw().await;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT lookup, secret_hash FROM api_tokens")
        .fetch_all(&raw)
        .await?;
    ensure!(rows.len() == 2);
    for (lookup, hash) in rows {
        ensure!(hash.starts_with("$argon2id$"), "{hash}");
        for token in [&a.token, &b.token] {
            ensure!(!hash.contains(&token[20..]), "secret stored in clear");
        }
        ensure!(a.token.contains(&lookup) || b.token.contains(&lookup));
    }

    ensure!(store.revoke_token(a.id, T0 + 1).await?);
    ensure!(!store.revoke_token(a.id, T0 + 2).await?, "revoked twice");
    ensure!(
        store.authenticate_token(&a.token).await?.is_none(),
        "revoked token accepted"
    );
    ensure!(store.tokens(alice).await?[0].revoked_at == Some(T0 + 1));
    // Credentials coming and going are in the audit log.
    let log = store.audit_entries(AuditId(0), 10).await?;
    let events: Vec<&str> = log.iter().map(|e| e.event.as_str()).collect();
    ensure!(
        events == ["token_created", "token_created", "token_revoked"],
        "{events:?}"
    );
    ensure!(log[2].technician == Some(alice), "{log:?}");
    ensure!(
        !log.iter().any(|e| e.detail.contains(&a.token[20..])),
        "secret in the log"
    );
    Ok(())
}

async fn passwords_are_hashed_and_checked(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    let (alice, bob) = accounts(&store).await?;
    let p = store
        .verify_password("bob", "hunter2")
        .await?
        .context("refused")?;
    ensure!(p.technician.id == bob);
    ensure!(store.verify_password("bob", "hunter3").await?.is_none());
    ensure!(store.verify_password("nobody", "hunter2").await?.is_none());
    // Alice has no password until one is set.
    ensure!(store.verify_password("alice", "").await?.is_none());
    store.set_password(alice, "s3cret").await?;
    ensure!(store.verify_password("alice", "s3cret").await?.is_some());
    let (hash,): (String,) =
        sqlx::query_as("SELECT password_hash FROM technicians WHERE name = 'alice'")
            .fetch_one(&db.raw().await)
            .await?;
    ensure!(
        hash.starts_with("$argon2id$") && !hash.contains("s3cret"),
        "{hash}"
    );
    Ok(())
}

async fn duplicates_and_missing_references_are_named(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    accounts(&store).await?;
    let e = store.create_company("Acme", T0).await.unwrap_err();
    ensure!(
        matches!(e, StoreError::Duplicate { .. }) && e.is_bad_input(),
        "{e}"
    );
    ensure!(e.to_string().contains("\"Acme\" already exists"), "{e}");
    let e = store
        .create_group(
            deskwire_broker::store::CompanyId(99),
            "x",
            Permissions::NONE,
            &Policy::default(),
            T0,
        )
        .await
        .unwrap_err();
    ensure!(matches!(e, StoreError::NotFound { .. }), "{e}");
    let e = store
        .create_technician(deskwire_broker::store::GroupId(1), "alice", None, T0)
        .await;
    ensure!(matches!(e, Err(StoreError::Duplicate { .. })), "{e:?}");
    let e = store.create_company(" padded", T0).await.unwrap_err();
    ensure!(matches!(e, StoreError::Invalid { .. }), "{e}");
    // A refused insert consumes no id: the next company is number 2.
    ensure!(store.create_company("Globex", T0).await?.0 == 2);
    Ok(())
}

async fn permission_and_policy_changes_are_audited(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    let (alice, _) = accounts(&store).await?;
    let group = store.technician(alice).await?.context("alice")?.group;
    let lan = Permissions::NONE.with(Permission::Lan);
    store
        .set_group_permissions(group, lan, Some(alice), T0 + 5)
        .await?;
    let strict = Policy {
        acceptance: Acceptance::Deny,
        ..Policy::default()
    };
    store.set_group_policy(group, &strict, None, T0 + 6).await?;
    let p = store.principal(alice).await?.context("alice")?;
    ensure!(
        p.group.permissions == lan && p.group.policy == strict,
        "{p:?}"
    );

    let log = store.audit_entries(AuditId(0), 10).await?;
    ensure!(log.len() == 2, "{log:?}");
    ensure!(log[0].event == "permission_changed" && log[0].technician == Some(alice));
    ensure!(
        log[0].detail.contains("control,clipboard -> lan"),
        "{}",
        log[0].detail
    );
    ensure!(log[1].event == "policy_changed" && log[1].at == T0 + 6);
    ensure!(store.verify_audit().await? == Ok(2));
    Ok(())
}

async fn a_device_keeps_its_first_key(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    let key = [7u8, 0, 255, 1, 2, 3];
    let first = store.register_device("pc-1", &key, T0).await?.expect("new");
    ensure!(first.first_contact && first.device.public_key == key);
    let again = store
        .register_device("pc-1", &key, T0 + 10)
        .await?
        .expect("same key");
    ensure!(!again.first_contact && again.device.last_seen == T0 + 10);
    ensure!(again.device.first_seen == T0);
    let refused = store.register_device("pc-1", &[9, 9], T0 + 20).await?;
    ensure!(refused.is_err(), "{refused:?}");
    let kept = store.device("pc-1").await?.context("gone")?;
    ensure!(
        kept.public_key == key && kept.last_seen == T0 + 10,
        "{kept:?}"
    );
    ensure!(store.device("pc-2").await?.is_none());
    let e = store.register_device("", &key, T0).await.unwrap_err();
    ensure!(matches!(e, StoreError::Invalid { .. }), "{e}");
    Ok(())
}

async fn a_lan_password_report_is_kept_only_if_newer_and_only_for_the_pinned_key(
    db: &TestDb,
) -> Result<()> {
    use deskwire_broker::store::LanReport;
    let store = db.open().await;
    let key = [5u8; 32];
    let report = |password: &str, reported_at: i64| LanReport {
        password: password.into(),
        rotates_at: reported_at + 86_400_000,
        reported_at,
    };
    ensure!(store.lan_password("dev-a").await?.is_none());
    ensure!(store
        .report_lan_password("dev-a", &key, &report("AAAA-AAAA-AAAA", T0), T0)
        .await?
        .expect("pinned"));
    // A delayed or replayed older report does not move it back.
    let old = store
        .report_lan_password("dev-a", &key, &report("OLD0-OLD0-OLD0", T0 - 5), T0)
        .await?
        .expect("pinned");
    ensure!(!old);
    ensure!(store.lan_password("dev-a").await?.context("kept")?.password == "AAAA-AAAA-AAAA");
    ensure!(store
        .report_lan_password("dev-a", &key, &report("BBBB-BBBB-BBBB", T0 + 5), T0)
        .await?
        .expect("pinned"));
    let kept = store.lan_password("dev-a").await?.context("kept")?;
    ensure!(kept.password == "BBBB-BBBB-BBBB" && kept.reported_at == T0 + 5);
    // Another key for the same id is refused and changes nothing.
    let refused = store
        .report_lan_password("dev-a", &[6u8; 32], &report("EVIL-EVIL-EVIL", T0 + 9), T0)
        .await?;
    ensure!(refused.is_err(), "{refused:?}");
    ensure!(store.lan_password("dev-a").await?.context("kept")?.password == "BBBB-BBBB-BBBB");
    Ok(())
}

async fn a_grant_report_is_kept_only_if_newer_and_only_for_the_pinned_key(
    db: &TestDb,
) -> Result<()> {
    use deskwire_broker::store::GrantReport;
    let store = db.open().await;
    let key = [7u8; 32];
    let report = |record: &str, reported_at: i64| GrantReport {
        grant: 2,
        technician: "alice".into(),
        record: record.into(),
        reported_at,
    };
    ensure!(store.grant("dev-g", 2).await?.is_none());
    ensure!(store
        .report_grant("dev-g", &key, &report("{\"v\":1}", T0), T0)
        .await?
        .expect("pinned"));
    // An older report (replayed or delayed) does not move it back; a newer one replaces it.
    ensure!(!store
        .report_grant("dev-g", &key, &report("{\"v\":0}", T0 - 1), T0)
        .await?
        .expect("pinned"));
    ensure!(store
        .report_grant("dev-g", &key, &report("{\"v\":2}", T0 + 1), T0)
        .await?
        .expect("pinned"));
    let kept = store.grant("dev-g", 2).await?.context("kept")?;
    ensure!(kept.record == "{\"v\":2}" && kept.technician == "alice" && kept.reported_at == T0 + 1);
    ensure!(store.grant("dev-g", 3).await?.is_none());
    // Another key for the same id is refused and changes nothing.
    let refused = store
        .report_grant("dev-g", &[8u8; 32], &report("{\"v\":9}", T0 + 9), T0)
        .await?;
    ensure!(refused.is_err(), "{refused:?}");
    ensure!(store.grant("dev-g", 2).await?.context("kept")?.record == "{\"v\":2}");
    Ok(())
}

async fn grants_are_listed_and_revoked_at_the_broker_with_an_audit_record(
    db: &TestDb,
) -> Result<()> {
    use deskwire_broker::store::{AuditId, GrantReport};
    use deskwire_signal::grant::{
        approve, CredentialMode, Grant, GrantPolicy, GrantRequest, GrantZone, Schedule, Validity,
        ZoneName, ZoneOf,
    };
    let store = db.open().await;
    let at = deskwire_signal::UnixMillis(u64::try_from(T0).unwrap_or(0));
    let request = GrantRequest {
        schedule: Schedule::new(Validity::Days { days: 2 }, None)?,
        zone: GrantZone {
            of: ZoneOf::Customer,
            name: ZoneName::new("UTC")?,
        },
        credential_mode: CredentialMode::AskEachConnection,
    };
    let (grant, _) = approve(request, &GrantPolicy::default(), at)?;
    let report = GrantReport {
        grant: 1,
        technician: "alice".into(),
        record: serde_json::to_string(&grant)?,
        reported_at: T0,
    };
    ensure!(store
        .report_grant("dev-r", &[7u8; 32], &report, T0)
        .await?
        .expect("pinned"));
    let listed = store.grants(None).await?;
    ensure!(listed.len() == 1 && listed[0].0 == "dev-r", "{listed:?}");
    ensure!(store.grants(Some("dev-other")).await?.is_empty());

    ensure!(store.revoke_grant("dev-r", 1, T0 + 5).await?);
    ensure!(
        !store.revoke_grant("dev-r", 1, T0 + 6).await?,
        "revoked once"
    );
    ensure!(
        !store.revoke_grant("dev-r", 9, T0 + 6).await?,
        "no such grant"
    );
    let kept: Grant =
        serde_json::from_str(&store.grant("dev-r", 1).await?.context("kept")?.record)?;
    ensure!(kept
        .check(at.plus(std::time::Duration::from_millis(10)))
        .is_err());
    // An older report from the device does not reopen it.
    ensure!(!store
        .report_grant("dev-r", &[7u8; 32], &report, T0)
        .await?
        .expect("pinned"));
    let audit = store.audit_entries(AuditId(0), 100).await?;
    ensure!(
        audit
            .iter()
            .any(|e| e.event == "grant_revoked" && e.device.as_deref() == Some("dev-r")),
        "{audit:?}"
    );
    Ok(())
}

async fn a_code_is_redeemed_once_and_refused_precisely_after(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    let (alice, _) = accounts(&store).await?;
    store
        .insert_code("111111", Some(alice), T0, T0 + 600_000)
        .await?;
    ensure!(store.pending_codes(T0).await? == 1);
    let redeemed = store.redeem_code("111111", T0 + 1).await?;
    ensure!(
        matches!(redeemed, Ok(r) if r.technician == Some(alice) && r.expires_at == T0 + 600_000)
    );
    ensure!(store.redeem_code("111111", T0 + 2).await? == Err(Refusal::Reused));
    ensure!(store.redeem_code("999999", T0).await? == Err(Refusal::Unknown));
    ensure!(Refusal::Unknown.audit_event() == AuditEvent::WrongCode);

    // Expiry is exclusive: usable until the last millisecond before expires_at.
    store.insert_code("222222", None, T0, T0 + 1000).await?;
    ensure!(store.redeem_code("222222", T0 + 1000).await? == Err(Refusal::Expired));
    store.insert_code("333333", None, T0, T0 + 1000).await?;
    ensure!(store.redeem_code("333333", T0 + 999).await?.is_ok());

    store.insert_code("444444", None, T0, T0 + 1000).await?;
    ensure!(store.cancel_code("444444", T0 + 1).await?);
    ensure!(!store.cancel_code("444444", T0 + 2).await?);
    ensure!(store.redeem_code("444444", T0 + 3).await? == Err(Refusal::Cancelled));

    // A tombstone blocks reissue until purged.
    let e = store
        .insert_code("111111", None, T0, T0 + 5)
        .await
        .unwrap_err();
    ensure!(matches!(e, StoreError::Duplicate { .. }), "{e}");
    ensure!(
        store.purge_codes(T0 + 1001).await? == 3,
        "only 111111 is still unexpired"
    );
    store
        .insert_code("222222", None, T0 + 2000, T0 + 3000)
        .await?;
    ensure!(store.redeem_code("222222", T0 + 2001).await?.is_ok());
    let e = store.insert_code("555555", None, T0, T0).await.unwrap_err();
    ensure!(matches!(e, StoreError::Invalid { .. }), "{e}");
    Ok(())
}

async fn three_failed_confirmations_burn_a_code(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    store.insert_code("123456", None, T0, T0 + 600_000).await?;
    // As the switchboard does: each join redeems the code, each failed confirmation reopens it.
    for n in 1..=MAX_FAILED_CONFIRMATIONS {
        let t = T0 + 10 * i64::from(n);
        ensure!(
            store.redeem_code("123456", t).await?.is_ok(),
            "attempt {n} refused"
        );
        ensure!(
            store.redeem_code("123456", t).await? == Err(Refusal::Reused),
            "held twice"
        );
        ensure!(store.record_failed_confirmation("123456", t + 1).await? == Ok(n));
    }
    let code = store.code("123456").await?.context("gone")?;
    ensure!(
        code.state == CodeState::Burned && code.failed_confirmations == 3,
        "{code:?}"
    );
    ensure!(code.closed_at == Some(T0 + 31));
    ensure!(store.record_failed_confirmation("123456", T0 + 40).await? == Err(Refusal::Burned));
    ensure!(store.redeem_code("123456", T0 + 41).await? == Err(Refusal::Burned));
    ensure!(store.record_failed_confirmation("000000", T0).await? == Err(Refusal::Unknown));

    // Two failures then the right code: the third attempt keeps it, and it stays used.
    store.insert_code("654321", None, T0, T0 + 600_000).await?;
    for _ in 0..2 {
        store.redeem_code("654321", T0).await?.expect("reopened");
        store
            .record_failed_confirmation("654321", T0)
            .await?
            .expect("held");
    }
    let code = store.code("654321").await?.context("gone")?;
    ensure!(
        code.state == CodeState::Pending && code.closed_at.is_none(),
        "{code:?}"
    );
    ensure!(store.redeem_code("654321", T0 + 1).await?.is_ok());
    ensure!(store.redeem_code("654321", T0 + 2).await? == Err(Refusal::Reused));
    Ok(())
}

async fn a_pending_code_survives_a_restart_and_stays_single_use(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    let (alice, _) = accounts(&store).await?;
    store
        .insert_code("246810", Some(alice), T0, T0 + 600_000)
        .await?;
    store
        .record_failed_confirmation("246810", T0 + 1)
        .await?
        .expect("pending");
    let started = NewSession {
        session_code: "135791",
        technician: Some(alice),
        device: None,
        started_at: T0,
        max_sessions: None,
    };
    let open = store.start_session(&started).await?.expect("no cap");
    store.close().await;

    let store = db.open().await;
    let code = store
        .code("246810")
        .await?
        .context("code lost in restart")?;
    ensure!(
        code.state == CodeState::Pending && code.failed_confirmations == 1,
        "{code:?}"
    );
    ensure!(store.redeem_code("246810", T0 + 2).await?.is_ok());
    ensure!(store
        .session(open)
        .await?
        .context("session lost")?
        .ended_at
        .is_none());
    store.close().await;

    let store = db.open().await;
    ensure!(store.redeem_code("246810", T0 + 3).await? == Err(Refusal::Reused));
    // The broker's start-up hook: sessions whose sockets died with the old process end.
    ensure!(store.end_open_sessions(T0 + 4, "broker restarted").await? == 1);
    let s = store.session(open).await?.context("session lost")?;
    ensure!(
        s.ended_by == Some(EndedBy::Broker) && s.ended_at == Some(T0 + 4),
        "{s:?}"
    );
    Ok(())
}

async fn two_brokers_racing_for_one_code_redeem_it_once(db: &TestDb) -> Result<()> {
    let brokers = [db.open().await, db.open().await];
    for code in 0..10 {
        let code = format!("{code:06}");
        brokers[0]
            .insert_code(&code, None, T0, T0 + 600_000)
            .await?;
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = brokers[i % 2].clone();
                let code = code.clone();
                tokio::spawn(async move { store.redeem_code(&code, T0 + 1).await })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await?? {
                Ok(_) => wins += 1,
                Err(Refusal::Reused) => {}
                Err(other) => bail!("unexpected refusal {other:?}"),
            }
        }
        ensure!(wins == 1, "code {code} redeemed {wins} times");
    }
    Ok(())
}

async fn sessions_record_their_end_and_respect_the_cap(db: &TestDb) -> Result<()> {
    let store = db.open().await;
    let (alice, _) = accounts(&store).await?;
    store
        .register_device("pc-1", b"key", T0)
        .await?
        .expect("new");
    let new = |code| NewSession {
        session_code: code,
        technician: Some(alice),
        device: Some("pc-1"),
        started_at: T0,
        max_sessions: Some(2),
    };
    let first = store.start_session(&new("1")).await?.expect("under cap");
    store.start_session(&new("2")).await?.expect("under cap");
    ensure!(
        store.start_session(&new("3")).await? == Err(SessionRefusal::TooManySessions { max: 2 })
    );
    ensure!(store.open_sessions(alice).await? == 2);
    ensure!(
        store
            .end_session(first, T0 + 9, EndedBy::Target, "user closed")
            .await?
    );
    ensure!(
        !store
            .end_session(first, T0 + 10, EndedBy::Broker, "late")
            .await?
    );
    let s = store.session(first).await?.context("gone")?;
    ensure!(s.ended_at == Some(T0 + 9) && s.ended_by == Some(EndedBy::Target));
    ensure!(s.end_reason.as_deref() == Some("user closed") && s.device.as_deref() == Some("pc-1"));
    store
        .start_session(&new("3"))
        .await?
        .expect("a slot was freed");
    let anonymous = NewSession {
        technician: None,
        device: Some("unknown-device"),
        ..new("4")
    };
    let e = store.start_session(&anonymous).await.unwrap_err();
    ensure!(matches!(e, StoreError::NotFound { .. }), "{e}");
    Ok(())
}

// --- Not per database ---

#[tokio::test]
async fn bad_urls_name_the_accepted_schemes_and_hide_passwords() -> Result<()> {
    let e = Store::open("mysql://root:pw@db/x").await.unwrap_err();
    let text = e.to_string();
    ensure!(
        e.is_bad_input() && text.contains("sqlite://") && text.contains("postgres://"),
        "{text}"
    );
    ensure!(!text.contains("pw@"), "{text}");
    // Nothing listens on port 1: the cause is named, the password is not.
    let e = Store::open("postgres://bob:s3cret@127.0.0.1:1/x")
        .await
        .unwrap_err();
    let text = e.to_string();
    ensure!(matches!(e, StoreError::Connect { .. }), "{text}");
    ensure!(
        text.contains("bob:***@127.0.0.1:1") && !text.contains("s3cret"),
        "{text}"
    );
    ensure!(text.to_lowercase().contains("refused"), "{text}");
    Ok(())
}

#[tokio::test]
async fn an_in_memory_store_works_on_its_single_connection() -> Result<()> {
    let store = Store::open("sqlite::memory:").await?;
    let (alice, _) = accounts(&store).await?;
    store.insert_code("1", Some(alice), T0, T0 + 10).await?;
    ensure!(store.redeem_code("1", T0).await?.is_ok());
    store
        .append_audit(&AuditRecord::new(T0, AuditEvent::Ended))
        .await?;
    ensure!(store.verify_audit().await? == Ok(1));
    Ok(())
}

#[tokio::test]
async fn serving_opens_and_migrates_its_database_and_refuses_a_bad_url() -> Result<()> {
    let db = TestDb::sqlite("serving");
    let mut child = tokio::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database", &db.url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .context("no address line")??
        .context("stdout closed")?;
    ensure!(line.starts_with("listening on ws://127.0.0.1:"), "{line}");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&db.raw().await)
        .await?;
    ensure!(n == 6, "{n} migrations applied");
    let pid = child.id().context("reaped")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(child.wait().await?.success());

    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database", "redis://x"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2) && err.contains("\"redis\""),
        "{err}"
    );
    Ok(())
}
