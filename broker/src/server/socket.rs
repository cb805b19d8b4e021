//! One signalling connection: reading, writing its queue, keepalive, and saying why it
//! closes.

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

use super::*;

/// Why a connection task stopped.
#[derive(Debug)]
enum Ending {
    /// The broker is shutting down.
    Shutdown,
    /// The peer closed, or its socket broke.
    Gone,
    /// The switchboard refused the peer's input (it has been sent an `error`).
    Refused,
    /// The peer let its queue fill or a write time out.
    NotReading,
    /// The socket delivered something unreadable (too large, bad framing).
    ReadFailed(String),
    /// Nothing came before the first-message deadline.
    Silent,
    /// Nothing came for twice the keepalive, not even the pong to a ping.
    HalfOpen,
}

pub(super) async fn serve_socket(
    socket: WebSocket,
    app: AppState,
    permit: (OwnedSemaphorePermit, SourceSlot),
    source: IpAddr,
) {
    let hub = &app.hub;
    let Mailbox { conn, mut rx, kill } = hub.open(source);
    tracing::debug!(conn = conn.0, "signalling connection open");
    let mut stop = app.stop.clone();
    let (mut sink, mut stream) = socket.split();
    // A connection must say something soon: one that never does only holds a slot.
    let first_deadline = tokio::time::sleep(hub.first_message_timeout);
    tokio::pin!(first_deadline);
    let mut heard = false;
    let mut last_heard = tokio::time::Instant::now();
    let mut keepalive = tokio::time::interval(hub.keepalive / 2);
    let ending = loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break Ending::Shutdown,
            () = &mut first_deadline, if !heard => break Ending::Silent,
            _ = keepalive.tick() => {
                let quiet = last_heard.elapsed();
                if quiet >= 2 * hub.keepalive {
                    break Ending::HalfOpen;
                }
                if quiet >= hub.keepalive {
                    // Any peer's WebSocket answers by itself; silence after it means the
                    // network between us is gone.
                    let ping = tokio::time::timeout(hub.write_timeout, sink.send(Message::Ping(Default::default())));
                    if !matches!(ping.await, Ok(Ok(()))) {
                        break Ending::NotReading;
                    }
                }
            }
            () = kill.notified() => break Ending::NotReading,
            queued = rx.recv() => match queued {
                Some(text) => {
                    let write = tokio::time::timeout(hub.write_timeout, sink.send(Message::text(text)));
                    match write.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break Ending::Gone,
                        Err(_) => break Ending::NotReading,
                    }
                }
                None => break Ending::Refused,
            },
            incoming = stream.next() => {
                // Anything at all, a pong included, shows the peer is there.
                last_heard = tokio::time::Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        heard = true;
                        hub.text(conn, text.as_str());
                    }
                    Some(Ok(Message::Binary(_))) => hub.binary(conn),
                    // tungstenite answers pings by itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break Ending::Gone,
                    Some(Err(e)) => break Ending::ReadFailed(e.to_string()),
                }
            }
        }
    };
    hub.close(conn);
    tracing::debug!(conn = conn.0, ?ending, "signalling connection closed");
    goodbye(&mut sink, ending, hub.write_timeout).await;
    drop(permit);
}

/// Say why the socket closes, where anyone is listening; bounded by `limit`.
async fn goodbye(sink: &mut SplitSink<WebSocket, Message>, ending: Ending, limit: Duration) {
    let close = |code, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let farewell = async {
        match ending {
            // Nobody reads: anything more would only wait for the time limit.
            Ending::NotReading => Ok(()),
            // Flushes the reply to the peer's close frame, if it sent one.
            Ending::Gone => sink.close().await,
            Ending::Shutdown => {
                sink.send(close(CLOSE_GOING_AWAY, "broker shutting down"))
                    .await
            }
            Ending::Refused => sink.send(close(CLOSE_POLICY, "protocol error")).await,
            Ending::Silent => sink.send(close(CLOSE_POLICY, "nothing said in time")).await,
            // Nobody is there to read a close frame.
            Ending::HalfOpen => Ok(()),
            Ending::ReadFailed(reason) => {
                let message = reason.chars().take(MAX_REASON_CHARS).collect();
                sink.send(Message::text(encode(&BrokerMessage::Error { message })))
                    .await?;
                sink.send(close(CLOSE_POLICY, "unreadable message")).await
            }
        }
    };
    if let Ok(Err(e)) = tokio::time::timeout(limit, farewell).await {
        tracing::debug!("closing a socket failed: {e}");
    }
}
