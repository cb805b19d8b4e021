//! The signalling protocol over real sockets: pairing, refusals, departures, bad input.

mod support;

use std::time::Duration;

use anyhow::{bail, Result};
use deskwire_broker::BrokerConfig;
use deskwire_signal::{
    BrokerMessage, ClientMessage, JoinRefusal, PeerSignal, SessionCode, MAX_SIGNAL_BYTES,
};
use support::{expect, join, relay, Broker, Event};
use tokio_tungstenite::tungstenite::Message;

fn refused(reason: JoinRefusal) -> BrokerMessage {
    BrokerMessage::JoinRefused {
        reason,
        message: reason.message().to_owned(),
    }
}

/// A code that differs from `code` (so the broker does not know it).
fn another(code: SessionCode) -> SessionCode {
    SessionCode::from_number((code.number() + 1) % SessionCode::SPACE).expect("in range")
}

#[tokio::test]
async fn a_target_with_the_code_pairs_and_offer_and_answer_are_relayed_both_ways() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut controller, code, expires_at) = broker.controller().await?;
    assert_eq!(expires_at, support::T0.plus(Duration::from_secs(600)));
    assert_eq!(
        code.to_string().len(),
        7,
        "the broker's half: two groups of three digits"
    );

    let mut target = broker.peer().await?;
    target.send(&join(code)).await?;
    expect(target.recv().await?, BrokerMessage::Joined { policy: None })?;
    expect(controller.recv().await?, BrokerMessage::PeerJoined {})?;

    let offer = PeerSignal::Offer {
        sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n".into(),
        mac: "ab".into(),
    };
    target.send(&relay(offer.clone())).await?;
    expect(
        controller.recv().await?,
        BrokerMessage::Relay { signal: offer },
    )?;
    let answer = PeerSignal::Answer {
        sdp: "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\n".into(),
        mac: "ab".into(),
    };
    controller.send(&relay(answer.clone())).await?;
    expect(
        target.recv().await?,
        BrokerMessage::Relay { signal: answer },
    )?;
    let bye = PeerSignal::Bye {
        reason: "done".into(),
    };
    controller.send(&relay(bye.clone())).await?;
    expect(target.recv().await?, BrokerMessage::Relay { signal: bye })?;

    broker.stop().await
}

#[tokio::test]
async fn after_a_wrong_code_the_user_can_try_again_on_the_same_socket() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut controller, code, _) = broker.controller().await?;
    let mut target = broker.peer().await?;

    target.send(&join(another(code))).await?;
    expect(target.recv().await?, refused(JoinRefusal::WrongCode))?;
    target.send(&join("123-45")).await?;
    expect(target.recv().await?, refused(JoinRefusal::Malformed))?;
    // Typed without spaces this time.
    target.send(&join(format!("{:06}", code.number()))).await?;
    expect(target.recv().await?, BrokerMessage::Joined { policy: None })?;
    expect(controller.recv().await?, BrokerMessage::PeerJoined {})?;

    broker.stop().await
}

#[tokio::test]
async fn a_seventh_failed_join_in_a_minute_from_one_address_waits_even_on_a_new_socket(
) -> Result<()> {
    let broker = Broker::start().await?;
    let (mut controller, code, _) = broker.controller().await?;
    let mut target = broker.peer().await?;
    for _ in 0..6 {
        target.send(&join(another(code))).await?;
        expect(target.recv().await?, refused(JoinRefusal::WrongCode))?;
    }
    // Even the right code waits: the limit is on the address, not on what it types.
    target.send(&join(code)).await?;
    expect(target.recv().await?, refused(JoinRefusal::TooManyAttempts))?;
    let mut fresh = broker.peer().await?;
    fresh.send(&join(code)).await?;
    expect(fresh.recv().await?, refused(JoinRefusal::TooManyAttempts))?;
    // A minute after the first failure, it may try again; the refusals kept the code.
    broker.clock.advance(Duration::from_secs(60));
    fresh.send(&join(code)).await?;
    expect(fresh.recv().await?, BrokerMessage::Joined { policy: None })?;
    expect(controller.recv().await?, BrokerMessage::PeerJoined {})?;
    broker.stop().await
}

#[tokio::test]
async fn a_code_is_refused_as_expired_once_the_clock_passes_its_ttl() -> Result<()> {
    let config = BrokerConfig::default().code_ttl(Duration::from_secs(60));
    let broker = Broker::start_with(config).await?;
    let (mut controller, code, expires_at) = broker.controller().await?;

    broker.clock.set(expires_at);
    let mut target = broker.peer().await?;
    target.send(&join(code)).await?;
    expect(target.recv().await?, refused(JoinRefusal::Expired))?;

    // The controller was not told anything and is still connected: it learns the expiry
    // from `expires_at`, and a new code needs a new connection.
    controller
        .send(&ClientMessage::CreateSession {
            token: None,
            resumable: false,
        })
        .await?;
    controller.expect_error_and_close().await?;
    broker.stop().await
}

#[tokio::test]
async fn a_second_target_with_a_used_code_is_refused_as_already_used() -> Result<()> {
    let broker = Broker::start().await?;
    let (_controller, code, _) = broker.controller().await?;
    let mut first = broker.peer().await?;
    first.send(&join(code)).await?;
    expect(first.recv().await?, BrokerMessage::Joined { policy: None })?;

    let mut second = broker.peer().await?;
    second.send(&join(code)).await?;
    expect(second.recv().await?, refused(JoinRefusal::AlreadyUsed))?;
    broker.stop().await
}

#[tokio::test]
async fn when_the_controller_leaves_the_target_hears_peer_left_and_an_unjoined_code_is_cancelled(
) -> Result<()> {
    let broker = Broker::start().await?;

    let (mut controller, mut target) = broker.pair().await?;
    controller.send_raw(Message::Close(None)).await?;
    expect(target.recv().await?, BrokerMessage::PeerLeft {})?;

    let (mut controller, code, _) = broker.controller().await?;
    controller.send_raw(Message::Close(None)).await?;
    // The broker forgets the controller before it answers the close, so once the answer
    // (or the end of the connection) is here, the code is cancelled.
    controller.expect_closed().await?;
    let mut late = broker.peer().await?;
    late.send(&join(code)).await?;
    expect(late.recv().await?, refused(JoinRefusal::Cancelled))?;
    broker.stop().await
}

#[tokio::test]
async fn when_the_target_leaves_the_controller_hears_peer_left() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut controller, target) = broker.pair().await?;
    drop(target);
    expect(controller.recv().await?, BrokerMessage::PeerLeft {})?;
    broker.stop().await
}

#[tokio::test]
async fn relay_before_pairing_and_a_second_create_are_errors_that_close() -> Result<()> {
    let broker = Broker::start().await?;
    let offer = PeerSignal::Offer {
        sdp: "v=0".into(),
        mac: "ab".into(),
    };

    let mut stranger = broker.peer().await?;
    stranger.send(&relay(offer.clone())).await?;
    let message = stranger.expect_error_and_close().await?;
    assert!(message.contains("before pairing"), "{message}");

    let (mut waiting, _, _) = broker.controller().await?;
    waiting.send(&relay(offer)).await?;
    waiting.expect_error_and_close().await?;

    let (mut controller, mut target) = broker.pair().await?;
    controller
        .send(&ClientMessage::CreateSession {
            token: None,
            resumable: false,
        })
        .await?;
    controller.expect_error_and_close().await?;
    expect(target.recv().await?, BrokerMessage::PeerLeft {})?;
    broker.stop().await
}

#[tokio::test]
async fn malformed_json_binary_and_other_versions_close_only_their_own_socket() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut controller, mut target) = broker.pair().await?;

    let mut garbage = broker.peer().await?;
    garbage.send_raw(Message::text("{not json")).await?;
    let message = garbage.expect_error_and_close().await?;
    assert!(
        message.starts_with("malformed signalling message"),
        "{message}"
    );

    let mut newer = broker.peer().await?;
    newer
        .send_raw(Message::text(r#"{"v":2,"type":"create_session"}"#))
        .await?;
    let message = newer.expect_error_and_close().await?;
    assert!(message.contains("version 2 is not supported"), "{message}");

    let mut binary = broker.peer().await?;
    binary.send_raw(Message::binary(vec![1, 2, 3])).await?;
    binary.expect_error_and_close().await?;

    // The paired session never noticed.
    let offer = PeerSignal::Offer {
        sdp: "v=0".into(),
        mac: "ab".into(),
    };
    target.send(&relay(offer.clone())).await?;
    expect(
        controller.recv().await?,
        BrokerMessage::Relay { signal: offer },
    )?;
    broker.stop().await
}

#[tokio::test]
async fn an_oversized_message_ends_its_socket_and_no_other() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut controller, mut target) = broker.pair().await?;

    let mut big = broker.peer().await?;
    let text = format!(
        r#"{{"v":1,"type":"join","code":"{}"}}"#,
        "1".repeat(MAX_SIGNAL_BYTES)
    );
    big.send_raw(Message::text(text)).await?;
    // An error then a close, or just the end: unread bytes can make the kernel reset the
    // connection before the client reads the farewell.
    match big.next_event().await? {
        Event::Message(BrokerMessage::Error { message }) => {
            assert!(
                message.contains("too long") || message.contains("limit"),
                "{message}"
            );
            big.expect_closed().await?;
        }
        Event::Closed(_) => {}
        other => bail!("expected an error or a close, got {other:?}"),
    }

    let answer = PeerSignal::Answer {
        sdp: "v=0".into(),
        mac: "ab".into(),
    };
    controller.send(&relay(answer.clone())).await?;
    expect(
        target.recv().await?,
        BrokerMessage::Relay { signal: answer },
    )?;
    broker.stop().await
}

#[tokio::test]
async fn a_target_that_stops_reading_is_disconnected_and_its_controller_told() -> Result<()> {
    let config = BrokerConfig::default().outbound_queue(2);
    let broker = Broker::start_with(config).await?;
    let (mut controller, mut silent_target) = broker.pair().await?;

    // Push answers at a target that never reads until the kernel buffers and its queue fill.
    let sdp = "a".repeat(30 * 1024);
    let mut told = false;
    for sent in 0..4000 {
        controller
            .send(&relay(PeerSignal::Answer {
                sdp: sdp.clone(),
                mac: String::new(),
            }))
            .await?;
        // Look for peer_left without blocking: the broker says so as soon as it gives up.
        if let Ok(event) = tokio::time::timeout(Duration::ZERO, controller.next_event()).await {
            match event? {
                Event::Message(BrokerMessage::PeerLeft {}) => {
                    told = true;
                    break;
                }
                other => bail!("after {sent} relays: unexpected {other:?}"),
            }
        }
    }
    if !told {
        // Bounded memory means the broker gave up long before 120 MB went nowhere.
        expect(controller.recv().await?, BrokerMessage::PeerLeft {})?;
    }
    // The target's connection really is gone: what the kernel still holds, then the end.
    for _ in 0..4000 {
        match silent_target.next_event().await? {
            Event::Message(BrokerMessage::Relay { .. }) => {}
            Event::Closed(_) => return broker.stop().await,
            other => bail!("unexpected {other:?}"),
        }
    }
    bail!("the target's connection stayed open")
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_with_503() -> Result<()> {
    let broker = Broker::start_with(BrokerConfig::default().max_connections(2)).await?;
    let _a = broker.peer().await?;
    let _b = broker.peer().await?;
    match tokio_tungstenite::connect_async(broker.url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        Ok(_) => bail!("a third connection was accepted past a cap of two"),
        Err(other) => bail!("expected HTTP 503, got {other}"),
    }
    broker.stop().await
}

#[tokio::test]
async fn health_check_answers_ok() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::start().await?;
    let mut tcp = tokio::net::TcpStream::connect(broker.addr).await?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(support::GUARD, tcp.read_to_string(&mut response)).await??;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");
    broker.stop().await
}

#[tokio::test]
async fn shutdown_closes_open_sockets_as_going_away_and_run_returns() -> Result<()> {
    let broker = Broker::start().await?;
    let (mut controller, mut target) = broker.pair().await?;
    let mut idle = broker.peer().await?;
    let stopping = tokio::spawn(broker.stop());
    for peer in [&mut controller, &mut target, &mut idle] {
        assert_eq!(peer.expect_closed().await?, Some(1001));
    }
    stopping.await?
}

/// A WebSocket from the local address `from` (any of 127.0.0.0/8).
async fn connect_from(
    from: &str,
    broker: &Broker,
) -> Result<support::Peer, tokio_tungstenite::tungstenite::Error> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("an address"))?;
    let tcp = socket.connect(broker.addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(
        broker.url.as_str(),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await?;
    Ok(support::Peer::from_stream(ws))
}

#[tokio::test]
async fn one_address_cannot_take_every_connection_and_silent_ones_are_closed() -> Result<()> {
    let config = BrokerConfig::default()
        .max_connections_per_source(4)
        .first_message_timeout(Duration::from_millis(300));
    let broker = Broker::start_with(config).await?;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut p = connect_from("127.0.0.1", &broker).await?;
        p.send(&ClientMessage::CreateSession {
            token: None,
            resumable: false,
        })
        .await?;
        held.push(p);
    }
    // The fifth from the same address is refused with 429; another address gets in.
    match connect_from("127.0.0.1", &broker).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 429)
        }
        Err(e) => bail!("expected HTTP 429, got {e}"),
        Ok(_) => bail!("a fifth connection from one address was accepted"),
    }
    let mut other = connect_from("127.0.0.2", &broker).await?;
    other
        .send(&ClientMessage::CreateSession {
            token: None,
            resumable: false,
        })
        .await?;
    assert!(matches!(
        other.recv().await?,
        BrokerMessage::SessionCreated { .. }
    ));
    // A connection that never says anything is closed after the first-message deadline.
    let mut silent = connect_from("127.0.0.3", &broker).await?;
    silent.expect_closed().await?;
    // The ones that spoke are still open.
    assert!(matches!(
        held[0].recv().await?,
        BrokerMessage::SessionCreated { .. }
    ));
    broker.stop().await
}

#[tokio::test]
async fn a_peer_that_answers_nothing_not_even_pings_is_closed_after_twice_the_keepalive(
) -> Result<()> {
    let keepalive = Duration::from_secs(25);
    let broker = Broker::start_with(BrokerConfig::default().keepalive(keepalive)).await?;
    let (mut gone, _code, _) = broker.controller().await?;
    // Virtual time from here: the peer reads nothing (so it answers no ping, as a peer
    // whose network vanished) while the broker's keepalive runs.
    tokio::time::pause();
    tokio::time::sleep(keepalive * 3).await;
    tokio::time::resume();
    // What it finds when it reads again: pings, then the end of the connection.
    gone.expect_closed().await?;
    // A peer still there keeps its connection: it answers pings as it reads.
    let (mut here, _code, _) = broker.controller().await?;
    tokio::time::pause();
    for _ in 0..6 {
        tokio::time::sleep(keepalive / 2).await;
        // Reading lets the client answer the broker's ping.
        let _ = tokio::time::timeout(Duration::from_millis(1), here.next_event()).await;
    }
    tokio::time::resume();
    here.send(&ClientMessage::CreateSession {
        token: None,
        resumable: false,
    })
    .await?;
    // A controller asking again is a protocol error: the answer proves the socket lived.
    let message = here.expect_error_and_close().await?;
    assert!(!message.is_empty());
    Ok(())
}

#[tokio::test]
async fn half_a_request_header_is_dropped_at_the_upgrade_deadline_and_upgraded_sockets_stay(
) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Duration::from_secs(10);
    let broker = Broker::start_with(BrokerConfig::default().upgrade_timeout(deadline)).await?;
    let (mut upgraded, _code, _) = broker.controller().await?;
    let mut slow = tokio::net::TcpStream::connect(broker.addr).await?;
    slow.write_all(b"GET /v1/signal HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\n")
        .await?;
    // Virtual time: the rest of the header never comes.
    tokio::time::pause();
    tokio::time::sleep(deadline * 2).await;
    tokio::time::resume();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(support::GUARD, slow.read(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("the half-sent request was still held"))?
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer: {:?}", &buf[..n]);
    // The WebSocket upgraded before the deadline is still served after it.
    upgraded
        .send(&ClientMessage::CreateSession {
            token: None,
            resumable: false,
        })
        .await?;
    let message = upgraded.expect_error_and_close().await?;
    assert!(!message.is_empty());
    Ok(())
}
