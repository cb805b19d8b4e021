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

/// Why the signalling connection (to the broker, or a direct LAN link) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Nothing answered in time.
    #[error("no answer from {url} in {timeout:?}")]
    NoAnswer {
        /// Where.
        url: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The connection could not be made.
    #[error("cannot reach {peer} at {url}")]
    Unreachable {
        /// "the broker" or "the target".
        peer: &'static str,
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// An open connection failed.
    #[error("lost {peer}")]
    Lost {
        /// Who.
        peer: &'static str,
        /// Why.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// The other end closed the connection.
    #[error("{peer} closed the connection")]
    Closed {
        /// Who.
        peer: &'static str,
    },
    /// The other end sent something that is not a signalling message.
    #[error("bad message from {peer}")]
    BadMessage {
        /// Who.
        peer: &'static str,
        /// What was wrong with it.
        #[source]
        source: deskwire_signal::SignalError,
    },
    /// The other end sent a binary frame (signalling is JSON text).
    #[error("{peer} sent a binary message")]
    Binary {
        /// Who.
        peer: &'static str,
    },
    /// A direct LAN peer did not finish the WebSocket handshake in time.
    #[error("no WebSocket handshake in {0:?}")]
    NoHandshake(Duration),
    /// A direct LAN peer's WebSocket handshake failed.
    #[error("bad WebSocket handshake")]
    BadHandshake(#[source] tokio_tungstenite::tungstenite::Error),
    /// The answer to a request was not one this request can get.
    #[error("unexpected answer from {peer}: {what}")]
    Unexpected {
        /// Who.
        peer: &'static str,
        /// The answer, as debug text.
        what: String,
    },
    /// None of several brokers could be reached; each one's failure, in order.
    #[error("no broker answered ({})", .0.iter().map(|e| crate::with_causes(e)).collect::<Vec<_>>().join("; "))]
    NoBroker(Vec<SignalError>),
}

impl SignalError {
    /// An answer the request did not expect.
    pub(crate) fn unexpected(peer: &'static str, answer: &BrokerMessage) -> Self {
        SignalError::Unexpected {
            peer,
            what: format!("{answer:?}"),
        }
    }
}

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
        let fail = |e: SignalError| -> SessionError {
            if lan {
                crate::lan::LanError::Signal(e).into()
            } else {
                e.into()
            }
        };
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true);
        let (ws, _) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| {
                fail(SignalError::NoAnswer {
                    url: url.clone(),
                    timeout,
                })
            })?
            .map_err(|source| {
                fail(SignalError::Unreachable {
                    peer,
                    url: url.clone(),
                    source,
                })
            })?;
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
        // Only the LAN path upgrades: anything else is not a viewer.
        #[allow(clippy::result_large_err)] // the handshake callback's signature
        fn lan_path_only(
            request: &tokio_tungstenite::tungstenite::handshake::server::Request,
            response: tokio_tungstenite::tungstenite::handshake::server::Response,
        ) -> Result<
            tokio_tungstenite::tungstenite::handshake::server::Response,
            tokio_tungstenite::tungstenite::handshake::server::ErrorResponse,
        > {
            if request.uri().path() == deskwire_signal::lan::LAN_PATH {
                Ok(response)
            } else {
                let mut refusal =
                    tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(Some(
                        "not found".into(),
                    ));
                *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
                Err(refusal)
            }
        }
        let accept = tokio_tungstenite::accept_hdr_async_with_config(
            MaybeTlsStream::Plain(tcp),
            lan_path_only,
            Some(ws_config()),
        );
        let ws = tokio::time::timeout(timeout, accept)
            .await
            .map_err(|_| crate::lan::LanError::Signal(SignalError::NoHandshake(timeout)))?
            .map_err(|e| crate::lan::LanError::Signal(SignalError::BadHandshake(e)))?;
        Ok(Self {
            ws,
            path: Path::DirectTarget,
            peer: "the viewer",
        })
    }

    fn err(&self, e: SignalError) -> SessionError {
        match (self.path, self.peer) {
            (Path::ToBroker, "the broker") => SessionError::Broker(e),
            _ => crate::lan::LanError::Signal(e).into(),
        }
    }

    fn lost(&self, source: tokio_tungstenite::tungstenite::Error) -> SessionError {
        self.err(SignalError::Lost {
            peer: self.peer,
            source,
        })
    }

    /// Send a message as the broker would (a LAN target greeting or refusing its
    /// viewer).
    pub(crate) async fn send_as_broker(&mut self, msg: &BrokerMessage) -> Result<(), SessionError> {
        let text = encode(msg);
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| self.lost(e))
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
                    tracing::info!(broker, error = %crate::with_causes(&e), "broker unreachable; trying the next");
                    match e {
                        SessionError::Broker(e) => failures.push(e),
                        other => return Err(other),
                    }
                }
            }
        }
        match failures.len() {
            1 => Err(SessionError::Broker(failures.remove(0))),
            _ => Err(SessionError::Broker(SignalError::NoBroker(failures))),
        }
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
            .map_err(|e| self.lost(e))
    }

    /// The next message from the broker (or, on a direct LAN link, what a broker would have
    /// relayed); an error when it closed or sent nonsense.
    pub(crate) async fn recv(&mut self) -> Result<BrokerMessage, SessionError> {
        loop {
            let closed = || SignalError::Closed { peer: self.peer };
            let msg = match self.ws.next().await {
                None => return Err(self.err(closed())),
                Some(Err(e)) => return Err(self.lost(e)),
                Some(Ok(m)) => m,
            };
            let text = match msg {
                Message::Text(text) => text,
                Message::Close(_) => return Err(self.err(closed())),
                Message::Binary(_) => return Err(self.err(SignalError::Binary { peer: self.peer })),
                _ => continue, // ping/pong are answered by tungstenite
            };
            let bad = |source| SignalError::BadMessage {
                peer: self.peer,
                source,
            };
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

    /// Send every message a core queued, in order, until one fails.
    pub(crate) async fn send_all(
        &mut self,
        mut next: impl FnMut() -> Option<ClientMessage>,
    ) -> Result<(), SessionError> {
        while let Some(msg) = next() {
            self.send(&msg).await?;
        }
        Ok(())
    }

    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.ws.close(None)).await;
    }
}

/// Send what a standing core queued on the connection, if one is open (else it is
/// dropped: the core says hello again when it reconnects). A failed send closes the
/// connection; the error comes back as the sentence for the core's `handle_lost`.
pub(crate) async fn send_if_open(
    sig: &mut Option<Signalling>,
    mut next: impl FnMut() -> Option<ClientMessage>,
) -> Result<(), String> {
    let mut failed = Ok(());
    while let Some(msg) = next() {
        let Some(open) = sig.as_mut() else {
            tracing::debug!(?msg, "no connection to send on");
            continue;
        };
        if let Err(e) = open.send(&msg).await {
            *sig = None;
            failed = Err(crate::with_causes(&e));
        }
    }
    failed
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

/// One request to `broker` on a connection of its own, and its answer: a blocking
/// WebSocket on a plain socket (no runtime), for the library's one-shot calls (reports,
/// ad-hoc creation, permission checks). Each step waits up to `timeout`.
pub(crate) fn ask_broker(
    broker: &str,
    ask: &ClientMessage,
    timeout: Duration,
) -> Result<BrokerMessage, SignalError> {
    use std::net::{TcpStream, ToSocketAddrs};
    use tokio_tungstenite::tungstenite;
    let url = format!("{}{SIGNAL_PATH}", broker.trim_end_matches('/'));
    let peer = "the broker";
    let no_answer = || SignalError::NoAnswer {
        url: url.clone(),
        timeout,
    };
    let unreachable = |source| SignalError::Unreachable {
        peer,
        url: url.clone(),
        source,
    };
    let io = |e: std::io::Error| unreachable(tungstenite::Error::Io(e));
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| {
            unreachable(tungstenite::Error::Url(
                tungstenite::error::UrlError::UnsupportedUrlScheme,
            ))
        })?;
    let addr = authority
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| {
            unreachable(tungstenite::Error::Url(
                tungstenite::error::UrlError::UnableToConnect(authority.to_owned()),
            ))
        })?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => no_answer(),
        _ => io(e),
    })?;
    tcp.set_read_timeout(Some(timeout)).map_err(io)?;
    tcp.set_write_timeout(Some(timeout)).map_err(io)?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) = tungstenite::client::client_with_config(url.as_str(), tcp, Some(ws_config()))
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => unreachable(e),
            tungstenite::HandshakeError::Interrupted(_) => no_answer(),
        })?;
    let lost = |source: tungstenite::Error| match &source {
        tungstenite::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            no_answer()
        }
        _ => SignalError::Lost { peer, source },
    };
    ws.send(Message::text(encode(ask))).map_err(lost)?;
    let answer = loop {
        match ws.read().map_err(lost)? {
            Message::Text(text) => {
                break decode_broker(text.as_str())
                    .map_err(|source| SignalError::BadMessage { peer, source })
            }
            Message::Binary(_) => break Err(SignalError::Binary { peer }),
            Message::Close(_) => break Err(SignalError::Closed { peer }),
            _ => continue,
        }
    };
    let _ = ws.close(None);
    let _ = ws.flush();
    answer
}
