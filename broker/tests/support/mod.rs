//! A broker on a loopback port with a hand-driven clock, and WebSocket peers to talk to it.
//!
//! Every wait is bounded by [`GUARD`]: a broken broker fails the test instead of hanging it.
//! Nothing here sleeps to let time pass.
#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use deskwire_broker::store::Store;
use deskwire_broker::{BrokerConfig, BrokerError, ManualClock};
use deskwire_signal::{
    decode_broker, encode, BrokerMessage, ClientMessage, PeerSignal, SessionCode, UnixMillis,
    SIGNAL_PATH,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound on any single wait.
pub const GUARD: Duration = Duration::from_secs(10);
/// Where the manual clock starts.
pub const T0: UnixMillis = UnixMillis(1_700_000_000_000);

/// A broker served by `deskwire_broker::run` on `127.0.0.1:0`.
pub struct Broker {
    pub addr: std::net::SocketAddr,
    pub url: String,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), BrokerError>>>,
}

impl Broker {
    pub async fn start() -> Result<Self> {
        Self::start_with(BrokerConfig::default()).await
    }

    pub async fn start_with(config: BrokerConfig) -> Result<Self> {
        Self::spawn(config, Arc::new(ManualClock::new(T0)), None).await
    }

    /// A broker keeping its codes, sessions and audit log in `store`, on `clock` (shared
    /// with a broker started before it on the same database, to restart in virtual time).
    pub async fn start_with_store(
        config: BrokerConfig,
        store: Store,
        clock: Arc<ManualClock>,
    ) -> Result<Self> {
        Self::spawn(config, clock, Some(store)).await
    }

    async fn spawn(
        config: BrokerConfig,
        clock: Arc<ManualClock>,
        store: Option<Store>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(deskwire_broker::run_with_store(
            listener,
            config,
            clock.clone(),
            store,
            shutdown,
        ));
        Ok(Self {
            addr,
            url: format!("ws://{addr}{SIGNAL_PATH}"),
            clock,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Resolve the shutdown future and wait for `run` to return.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().context("stopped twice")?;
        tokio::time::timeout(GUARD, task)
            .await
            .context("run did not return after shutdown")???;
        Ok(())
    }

    pub async fn peer(&self) -> Result<Peer> {
        Peer::connect(&self.url).await
    }

    /// A controller that has created a session.
    pub async fn controller(&self) -> Result<(Peer, SessionCode, UnixMillis)> {
        let mut peer = self.peer().await?;
        peer.send(&ClientMessage::CreateSession {
            token: None,
            resumable: false,
        })
        .await?;
        match peer.recv().await? {
            BrokerMessage::SessionCreated {
                session,
                expires_at,
                ..
            } => Ok((peer, session, expires_at)),
            other => bail!("expected session_created, got {other:?}"),
        }
    }

    /// A controller and a target paired through a fresh code.
    pub async fn pair(&self) -> Result<(Peer, Peer)> {
        let (mut controller, code, _) = self.controller().await?;
        let mut target = self.peer().await?;
        target.send(&join(code)).await?;
        expect(target.recv().await?, BrokerMessage::Joined { policy: None })?;
        expect(controller.recv().await?, BrokerMessage::PeerJoined {})?;
        Ok((controller, target))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What a peer saw next.
#[derive(Debug, PartialEq)]
pub enum Event {
    Message(BrokerMessage),
    /// A close frame (with its code), the end of the stream, or a broken connection.
    Closed(Option<u16>),
}

/// One WebSocket client.
pub struct Peer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Peer {
    /// A client on a WebSocket opened elsewhere.
    #[allow(dead_code)] // not every test binary uses it
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws }
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
            .await
            .context("connect timed out")??;
        Ok(Self { ws })
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        self.send_raw(Message::text(encode(msg))).await
    }

    pub async fn send_raw(&mut self, msg: Message) -> Result<()> {
        tokio::time::timeout(GUARD, self.ws.send(msg))
            .await
            .context("send timed out")??;
        Ok(())
    }

    /// The next message or the end of the connection.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            let next = tokio::time::timeout(GUARD, self.ws.next())
                .await
                .context("nothing arrived within the guard time")?;
            return Ok(match next {
                Some(Ok(Message::Text(text))) => Event::Message(
                    decode_broker(text.as_str()).with_context(|| format!("undecodable: {text}"))?,
                ),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| f.code.into())),
                Some(Ok(other)) => bail!("unexpected frame {other:?}"),
                Some(Err(_)) | None => Event::Closed(None),
            });
        }
    }

    /// The next message; an error if the connection closed instead.
    pub async fn recv(&mut self) -> Result<BrokerMessage> {
        match self.next_event().await? {
            Event::Message(msg) => Ok(msg),
            Event::Closed(code) => {
                Err(anyhow!("connection closed ({code:?}) instead of a message"))
            }
        }
    }

    /// Expect `error {..}` then the end of the connection; returns the error's message.
    pub async fn expect_error_and_close(&mut self) -> Result<String> {
        let message = match self.recv().await? {
            BrokerMessage::Error { message } => message,
            other => bail!("expected error, got {other:?}"),
        };
        self.expect_closed().await?;
        Ok(message)
    }

    /// Expect the connection to end, after at most a few messages; returns the close code.
    pub async fn expect_closed(&mut self) -> Result<Option<u16>> {
        for _ in 0..4 {
            if let Event::Closed(code) = self.next_event().await? {
                return Ok(code);
            }
        }
        bail!("the connection stayed open")
    }
}

pub fn join(code: impl ToString) -> ClientMessage {
    ClientMessage::Join {
        code: code.to_string(),
        device: None,
    }
}

pub fn relay(signal: PeerSignal) -> ClientMessage {
    ClientMessage::Relay { signal }
}

pub fn expect(got: BrokerMessage, want: BrokerMessage) -> Result<()> {
    if got != want {
        bail!("expected {want:?}, got {got:?}");
    }
    Ok(())
}
