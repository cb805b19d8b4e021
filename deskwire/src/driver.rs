//! What the host and the controller share when they drive a session core: sending what it
//! queued, and waking it at its `poll_timeout`.

use std::pin::Pin;
use std::time::{Duration, Instant};

use deskwire_session::Transmit;

use crate::transport::Channels;
use crate::DisconnectReason;

/// Send what a core queued (`next` yields it), each message on its channel.
pub(crate) async fn send_queued(
    channels: &Channels,
    mut next: impl FnMut() -> Option<Transmit>,
) -> Result<(), DisconnectReason> {
    while let Some(t) = next() {
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
