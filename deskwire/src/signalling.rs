//! The peer's side of the signalling path: the broker's WebSocket, or on the LAN a direct
//! WebSocket between the viewer and the target, where the target stands in for the
//! broker (see [`Signalling::accept_direct`]).

use std::time::Duration;

use deskwire_signal::{
    decode_broker, decode_client, encode, BrokerMessage, ClientMessage, JoinRefusal,
    MAX_SIGNAL_BYTES, SIGNAL_PATH,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::SessionError;

/// Which end of which path this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// A peer talking to a broker (or a viewer talking to a LAN target, which answers
    /// as a broker would).
    ToBroker,
    /// A LAN target talking straight to its viewer: it reads what a viewer sends a
    /// broker and answers what a broker would relay.
    DirectTarget,
}

pub(crate) struct Signalling {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    path: Path,
    /// "the broker" or "the target" / "the viewer", for error messages.
    peer: &'static str,
}

impl std::fmt::Debug for Signalling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signalling")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_SIGNAL_BYTES))
        .max_frame_size(Some(MAX_SIGNAL_BYTES))
}

impl Signalling {
    /// Connect to `broker` (`ws://HOST:PORT`, the signalling path is added).
    pub(crate) async fn connect(broker: &str, timeout: Duration) -> Result<Self, SessionError> {
        let url = format!("{}{SIGNAL_PATH}", broker.trim_end_matches('/'));
        Self::open(url, "the broker", timeout).await
    }

    /// Connect straight to a LAN target listening at `addr`.
    pub(crate) async fn connect_lan(
        addr: std::net::SocketAddr,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let url = format!("ws://{addr}{}", deskwire_signal::lan::LAN_PATH);
        Self::open(url, "the target", timeout).await
    }

    async fn open(
        url: String,
        peer: &'static str,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let lan = peer != "the broker";
        let fail = |m: String| {
            if lan {
                SessionError::Lan(m)
            } else {
                SessionError::Broker(m)
            }
        };
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true);
        let (ws, _) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| fail(format!("no answer from {url} in {timeout:?}")))?
            .map_err(|e| fail(format!("cannot reach {peer} at {url}: {e}")))?;
        Ok(Self {
            ws,
            path: Path::ToBroker,
            peer,
        })
    }

    /// The target's end of a viewer's direct LAN connection.
    pub(crate) async fn accept_direct(
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let _ = tcp.set_nodelay(true);
        let accept = tokio_tungstenite::accept_async_with_config(
            MaybeTlsStream::Plain(tcp),
            Some(ws_config()),
        );
        let ws = tokio::time::timeout(timeout, accept)
            .await
            .map_err(|_| SessionError::Lan(format!("no WebSocket handshake in {timeout:?}")))?
            .map_err(|e| SessionError::Lan(format!("bad WebSocket handshake: {e}")))?;
        Ok(Self {
            ws,
            path: Path::DirectTarget,
            peer: "the viewer",
        })
    }

    fn err(&self, message: String) -> SessionError {
        match (self.path, self.peer) {
            (Path::ToBroker, "the broker") => SessionError::Broker(message),
            _ => SessionError::Lan(message),
        }
    }

    /// Send a message as the broker would (a LAN target greeting or refusing its
    /// viewer).
    pub(crate) async fn send_as_broker(&mut self, msg: &BrokerMessage) -> Result<(), SessionError> {
        let text = encode(msg);
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| self.err(format!("lost {}: {e}", self.peer)))
    }

    /// Connect to the first of `brokers` that answers, in order; the error names every
    /// broker tried.
    pub(crate) async fn connect_any(
        brokers: &[&str],
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let mut failures = Vec::new();
        for broker in brokers {
            match Self::connect(broker, timeout).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::warn!(broker, error = %e, "broker unreachable; trying the next");
                    failures.push(match e {
                        SessionError::Broker(m) => m,
                        other => other.to_string(),
                    });
                }
            }
        }
        Err(SessionError::Broker(failures.join("; ")))
    }

    pub(crate) async fn send(&mut self, msg: &ClientMessage) -> Result<(), SessionError> {
        let text = match (self.path, msg) {
            (Path::ToBroker, _) => encode(msg),
            // What a broker would relay; the target's own verification failure is told to
            // the viewer by the LAN loop, which knows the back-off to announce.
            (Path::DirectTarget, ClientMessage::Relay { signal }) => {
                encode(&BrokerMessage::Relay {
                    signal: signal.clone(),
                })
            }
            (Path::DirectTarget, other) => {
                tracing::debug!(?other, "not for a direct LAN link");
                return Ok(());
            }
        };
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| self.err(format!("lost {}: {e}", self.peer)))
    }

    /// The next message from the broker (or, on a direct LAN link, what a broker would have
    /// relayed); an error when it closed or sent nonsense.
    pub(crate) async fn recv(&mut self) -> Result<BrokerMessage, SessionError> {
        loop {
            let msg = match self.ws.next().await {
                None => return Err(self.err(format!("{} closed the connection", self.peer))),
                Some(Err(e)) => return Err(self.err(format!("lost {}: {e}", self.peer))),
                Some(Ok(m)) => m,
            };
            let text = match msg {
                Message::Text(text) => text,
                Message::Close(_) => {
                    return Err(self.err(format!("{} closed the connection", self.peer)))
                }
                Message::Binary(_) => {
                    return Err(self.err(format!("{} sent a binary message", self.peer)))
                }
                _ => continue, // ping/pong are answered by tungstenite
            };
            let bad =
                |e: deskwire_signal::SignalError| format!("bad message from {}: {e}", self.peer);
            return match self.path {
                Path::ToBroker => decode_broker(text.as_str()).map_err(|e| self.err(bad(e))),
                Path::DirectTarget => match decode_client(text.as_str()) {
                    Ok(ClientMessage::Relay { signal }) => Ok(BrokerMessage::Relay { signal }),
                    // The viewer could not verify this side: as a broker would, unpair.
                    Ok(ClientMessage::VerificationFailed {}) => Ok(BrokerMessage::JoinRefused {
                        reason: JoinRefusal::VerificationFailed,
                        message: "the viewer could not verify this computer".into(),
                    }),
                    Ok(other) => {
                        tracing::debug!(?other, "ignored on a direct LAN link");
                        continue;
                    }
                    Err(e) => Err(self.err(bad(e))),
                },
            };
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.ws.close(None)).await;
    }
}

/// The next message on `sig` while a connection is open; without one, never (so a
/// `select!` arm of a driver that is offline simply does not fire).
pub(crate) async fn recv_if_open(
    sig: &mut Option<Signalling>,
) -> Result<BrokerMessage, SessionError> {
    match sig {
        Some(sig) => sig.recv().await,
        None => std::future::pending().await,
    }
}
