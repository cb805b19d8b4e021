//! Live signalling on a broker with a database: pending codes survive a restart, their
//! controller resumes them, they stay single use, and a group's session cap is enforced.
//! Real brokers on loopback sockets, on a SQLite file and on PostgreSQL; virtual time.

#[allow(dead_code)] // each test file uses its own subset
mod common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::fixtures::accounts;
use common::TestDb;
use deskwire_broker::store::{CodeState, EndedBy, SessionRecordId, Store};
use deskwire_broker::{BrokerConfig, ManualClock};
use deskwire_signal::{BrokerMessage, ClientMessage, JoinRefusal, SessionCode, UnixMillis};
use support::{expect, join, Broker, Peer, T0};

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
    a_pending_code_survives_a_restart_its_controller_resumes_it_and_it_stays_single_use,
    a_technician_at_their_groups_session_cap_cannot_create_another_session,
);

async fn start(db: &TestDb, clock: &Arc<ManualClock>) -> Result<Broker> {
    Broker::start_with_store(BrokerConfig::default(), db.open().await, Arc::clone(clock)).await
}

/// A controller asking for a resumable code (with `token`, if given).
async fn resumable_controller(
    broker: &Broker,
    token: Option<&str>,
) -> Result<(Peer, SessionCode, UnixMillis, String)> {
    let mut c = broker.peer().await?;
    c.send(&ClientMessage::CreateSession {
        token: token.map(str::to_owned),
        resumable: true,
    })
    .await?;
    match c.recv().await? {
        BrokerMessage::SessionCreated {
            session,
            expires_at,
            resume: Some(resume),
        } => Ok((c, session, expires_at, resume)),
        other => bail!("expected session_created with a resume token, got {other:?}"),
    }
}

fn refusal(msg: BrokerMessage) -> Result<JoinRefusal> {
    match msg {
        BrokerMessage::JoinRefused { reason, .. } => Ok(reason),
        other => bail!("expected join_refused, got {other:?}"),
    }
}

async fn a_pending_code_survives_a_restart_its_controller_resumes_it_and_it_stays_single_use(
    db: &TestDb,
) -> Result<()> {
    let clock = Arc::new(ManualClock::new(T0));
    let first = start(db, &clock).await?;
    let (mut old, code, expires_at, token) = resumable_controller(&first, None).await?;
    ensure!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));

    // The broker restarts with the code pending: its controller's socket goes away with it.
    first.stop().await?;
    old.expect_closed().await?;
    clock.advance(Duration::from_secs(20));
    let second = start(db, &clock).await?;

    // A target before the controller is back: told to retry, and the code is not used up.
    let mut target = second.peer().await?;
    target.send(&join(code)).await?;
    ensure!(refusal(target.recv().await?)? == JoinRefusal::ControllerAway);

    // A wrong token changes nothing.
    let mut thief = second.peer().await?;
    thief
        .send(&ClientMessage::Resume {
            session: code.to_string(),
            resume: "0".repeat(64),
        })
        .await?;
    let error = thief.expect_error_and_close().await?;
    // Told no more than that the pair is wrong; the audit (below) keeps the reason.
    ensure!(
        error.contains("no session with this code and token"),
        "{error}"
    );

    // The controller re-attaches: same code, same expiry.
    let mut controller = second.peer().await?;
    controller
        .send(&ClientMessage::Resume {
            session: code.to_string(),
            resume: token.clone(),
        })
        .await?;
    expect(
        controller.recv().await?,
        BrokerMessage::SessionCreated {
            session: code,
            expires_at,
            resume: None,
        },
    )?;

    // Now the same target pairs, and nobody else can use the code.
    target.send(&join(code)).await?;
    expect(target.recv().await?, BrokerMessage::Joined { policy: None })?;
    expect(controller.recv().await?, BrokerMessage::PeerJoined {})?;
    let mut late = second.peer().await?;
    late.send(&join(code)).await?;
    ensure!(refusal(late.recv().await?)? == JoinRefusal::AlreadyUsed);

    // Nor resume it: it is used.
    let mut again = second.peer().await?;
    again
        .send(&ClientMessage::Resume {
            session: code.to_string(),
            resume: token,
        })
        .await?;
    let error = again.expect_error_and_close().await?;
    ensure!(error.contains("already used"), "{error}");

    // The controller leaves: the target hears of it and the session row ends.
    drop(controller);
    expect(target.recv().await?, BrokerMessage::PeerLeft {})?;
    second.stop().await?;

    let store = db.open().await;
    let stored = store.code(&code.to_string()).await?.context("code lost")?;
    ensure!(stored.state == CodeState::Redeemed, "{stored:?}");
    let session = only_session(&store).await?;
    ensure!(
        session.session_code == code.to_string()
            && session.ended_by == Some(EndedBy::Controller)
            && session.ended_at.is_some(),
        "{session:?}"
    );
    let events = audit_events(&store).await?;
    for (event, says) in [
        ("code_issued", "expires at"),
        ("denied_by_policy", "reconnecting"),
        ("login_failed", "resume token does not match"),
        ("code_issued", "resumed by its controller"),
        ("session_started", "the target joined"),
        ("reused", "already used"),
        ("ended", "the controller left"),
    ] {
        ensure!(
            events.iter().any(|(e, d)| e == event && d.contains(says)),
            "no {event} record saying {says:?} in {events:#?}"
        );
    }
    Ok(())
}

async fn a_technician_at_their_groups_session_cap_cannot_create_another_session(
    db: &TestDb,
) -> Result<()> {
    // alice's group allows two open sessions.
    let store = db.open().await;
    let (alice, _) = accounts(&store).await?;
    let token = store.create_token(alice, "laptop", 0).await?.token;
    let clock = Arc::new(ManualClock::new(T0));
    let broker =
        Broker::start_with_store(BrokerConfig::default(), store, Arc::clone(&clock)).await?;

    let mut peers = Vec::new();
    for _ in 0..2 {
        let (mut controller, code, _, _) = resumable_controller(&broker, Some(&token)).await?;
        let mut target = broker.peer().await?;
        target.send(&join(code)).await?;
        match target.recv().await? {
            BrokerMessage::Joined { policy: Some(p) } if p.technician == "alice" => {}
            other => bail!("expected joined with alice's policy, got {other:?}"),
        }
        expect(controller.recv().await?, BrokerMessage::PeerJoined {})?;
        peers.push((controller, target));
    }

    let mut third = broker.peer().await?;
    third
        .send(&ClientMessage::CreateSession {
            token: Some(token.clone()),
            resumable: false,
        })
        .await?;
    let error = third.expect_error_and_close().await?;
    ensure!(
        error.contains("alice") && error.contains("at most 2"),
        "{error}"
    );
    drop(peers);
    broker.stop().await?;

    let store = db.open().await;
    let events = audit_events(&store).await?;
    ensure!(
        events
            .iter()
            .any(|(e, d)| e == "denied_by_policy" && d.contains("at most 2")),
        "{events:#?}"
    );
    // Both sessions were recorded for alice, and ended when their peers left.
    ensure!(store.open_sessions(alice).await? == 0);
    for id in [1, 2] {
        let s = store
            .session(SessionRecordId(id))
            .await?
            .context("session row missing")?;
        ensure!(s.technician == Some(alice) && s.ended_at.is_some(), "{s:?}");
    }
    Ok(())
}

/// The one session row in the store.
async fn only_session(store: &Store) -> Result<deskwire_broker::store::SessionRecord> {
    let first = store
        .session(SessionRecordId(1))
        .await?
        .context("no session recorded")?;
    ensure!(
        store.session(SessionRecordId(2)).await?.is_none(),
        "more than one session recorded"
    );
    Ok(first)
}

/// Every audit record as (event, detail), oldest first.
async fn audit_events(store: &Store) -> Result<Vec<(String, String)>> {
    let entries = store
        .audit_entries(deskwire_broker::store::AuditId(0), 1000)
        .await?;
    ensure!(
        store.verify_audit().await?.is_ok(),
        "the audit chain is broken"
    );
    Ok(entries.into_iter().map(|e| (e.event, e.detail)).collect())
}
