//! What the agent and the viewer share when they drive a session core: sending what it
//! queued, and waking it at its `poll_timeout`.

use std::pin::Pin;
use std::time::{Duration, Instant};

use deskwire_session::wire::Channel;
use deskwire_session::Transmit;
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::transport::{closed_reason, Channels, NetEvent};
use crate::DisconnectReason;

/// Whether a connection event other than a message ends an established session, and why.
pub(crate) async fn ended_by(
    ev: Option<NetEvent>,
    net_rx: &mut mpsc::UnboundedReceiver<NetEvent>,
) -> Option<DisconnectReason> {
    match ev {
        Some(NetEvent::State(RTCPeerConnectionState::Failed)) => {
            Some(DisconnectReason::Transport("ICE failed".into()))
        }
        Some(NetEvent::State(RTCPeerConnectionState::Closed) | NetEvent::Closed(_)) => {
            Some(closed_reason(net_rx).await)
        }
        Some(_) => None,
        None => Some(DisconnectReason::Transport(
            "the peer connection closed".into(),
        )),
    }
}

/// Send what a core queued (`next` yields it), each message on its channel.
pub(crate) async fn send_queued(
    channels: &Channels,
    mut next: impl FnMut() -> Option<Transmit>,
) -> Result<(), DisconnectReason> {
    while let Some(t) = next() {
        if t.channel == Channel::Video {
            // Only an announcement's copy, the pointer's position (the video thread sends the
            // chunks) or a viewer's request to send video again. A full video buffer must not
            // hold up this task: the announcement's copy on the control channel follows, the
            // position and the request are sent again.
            if let Err(e) = channels.video.try_send(t.data).await {
                tracing::debug!(error = %e, "no room for an announcement on the video channel");
            }
            continue;
        }
        channels.get(t.channel).send(t.data).await.map_err(|e| {
            DisconnectReason::Transport(format!("{} channel: {e}", t.channel.label()))
        })?;
    }
    Ok(())
}

/// The wake-up at a core's `poll_timeout`, re-armed only when that moves. Messages arrive
/// once per video chunk; a new timer for each would churn tokio's timer wheel for nothing.
pub(crate) struct CoreTimer {
    epoch: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// What the sleep is set to; `None` once it fired, so the next `arm` resets it.
    armed: Option<Option<Duration>>,
}

impl std::fmt::Debug for CoreTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreTimer")
            .field("armed", &self.armed)
            .finish()
    }
}

/// Far enough to mean "never" while staying representable.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

impl CoreTimer {
    /// Deadlines are durations since `epoch`, the core's clock.
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            sleep: Box::pin(tokio::time::sleep(NEVER)),
            armed: Some(None),
        }
    }

    /// Wake at `at` (the core's `poll_timeout`); `None` never.
    pub(crate) fn arm(&mut self, at: Option<Duration>) {
        if self.armed != Some(at) {
            let at_std = self.epoch + at.unwrap_or(NEVER);
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(at_std));
            self.armed = Some(at);
        }
    }

    /// Resolves at the armed time; the next [`CoreTimer::arm`] always re-arms.
    pub(crate) async fn fired(&mut self) {
        self.sleep.as_mut().await;
        self.armed = None;
    }
}
