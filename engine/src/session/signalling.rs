//! The peer's side of the broker's WebSocket.

use std::time::Duration;

use deskwire_signal::{
    decode_broker, encode, BrokerMessage, ClientMessage, MAX_SIGNAL_BYTES, SIGNAL_PATH,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::SessionError;

pub(crate) struct Signalling {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl std::fmt::Debug for Signalling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signalling").finish_non_exhaustive()
    }
}

impl Signalling {
    /// Connect to `broker` (`ws://HOST:PORT`, the signalling path is added).
    pub(crate) async fn connect(broker: &str, timeout: Duration) -> Result<Self, SessionError> {
        let url = format!("{}{SIGNAL_PATH}", broker.trim_end_matches('/'));
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_SIGNAL_BYTES))
            .max_frame_size(Some(MAX_SIGNAL_BYTES));
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let (ws, _) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SessionError::Broker(format!("no answer from {url} in {timeout:?}")))?
            .map_err(|e| SessionError::Broker(format!("cannot reach the broker at {url}: {e}")))?;
        Ok(Self { ws })
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
                    failures.push(e.to_string());
                }
            }
        }
        Err(SessionError::Broker(failures.join("; ")))
    }

    pub(crate) async fn send(&mut self, msg: &ClientMessage) -> Result<(), SessionError> {
        self.ws
            .send(Message::text(encode(msg)))
            .await
            .map_err(|e| SessionError::Broker(format!("lost the broker: {e}")))
    }

    /// The next message from the broker; an error when it closed or sent nonsense.
    pub(crate) async fn recv(&mut self) -> Result<BrokerMessage, SessionError> {
        loop {
            let msg = self
                .ws
                .next()
                .await
                .ok_or_else(|| SessionError::Broker("the broker closed the connection".into()))?
                .map_err(|e| SessionError::Broker(format!("lost the broker: {e}")))?;
            match msg {
                Message::Text(text) => {
                    return decode_broker(text.as_str()).map_err(|e| {
                        SessionError::Broker(format!("bad message from the broker: {e}"))
                    })
                }
                Message::Close(_) => {
                    return Err(SessionError::Broker(
                        "the broker closed the connection".into(),
                    ))
                }
                Message::Binary(_) => {
                    return Err(SessionError::Broker(
                        "the broker sent a binary message".into(),
                    ))
                }
                _ => continue, // ping/pong are answered by tungstenite
            }
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.ws.close(None)).await;
    }
}
