//! The LAN listener's front door: every connection gets its own task for the WebSocket
//! handshake and the viewer's hello, each with a short deadline, under a cap on how many
//! unauthenticated connections are handled at once (overall and per address). Only greeted
//! connections reach the agent's loop, one at a time: a client that connects and says
//! nothing, or feeds its handshake a byte at a time, costs a task for two seconds and
//! blocks nobody (before, the loop served one connection at a time and waited 15 s at each
//! step: two idle connections locked every technician out). An address over its cap loses
//! its oldest unfinished connection rather than its newest: a technician behind the same
//! address as a silent client (the same NAT, the same machine) still gets in, since a real
//! viewer finishes its hello in milliseconds.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deskwire_signal::{BrokerMessage, PeerSignal};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::signalling::Signalling;

/// How long an unauthenticated connection may take over its WebSocket handshake, and then
/// over its hello.
pub(crate) const PRE_HELLO: Duration = Duration::from_secs(2);
/// Unauthenticated connections handled at once, overall and from one address.
const MAX_GREETING: usize = 64;
const MAX_GREETING_PER_SOURCE: usize = 4;
/// Greeted connections waiting for the agent's loop.
const QUEUE: usize = 8;

/// A connection that completed its handshake and said which secret it holds.
pub(crate) struct Greeted {
    pub(crate) sig: Signalling,
    pub(crate) from: SocketAddr,
    /// The grant it connects under, if any (else the LAN password).
    pub(crate) grant: Option<u32>,
}

/// The unfinished connections per address, oldest first: an id, and the sender whose drop
/// cancels that connection.
type Greeting = Arc<Mutex<HashMap<IpAddr, VecDeque<(u64, oneshot::Sender<()>)>>>>;

/// Accept on `listener` until the returned receiver is dropped (or the task aborted).
pub(crate) fn spawn(
    listener: TcpListener,
) -> (mpsc::Receiver<Greeted>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let greeting: Greeting = Arc::default();
    let task = tokio::spawn(async move {
        let mut next_id = 0u64;
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a LAN connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            next_id += 1;
            let Some((slot, cancelled)) = Slot::take(&greeting, from.ip(), next_id) else {
                tracing::info!(%from, "LAN connection refused: too many unauthenticated connections");
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                tokio::select! {
                    greeted = greet(tcp, from) => match greeted {
                        Ok(greeted) => {
                            let _ = tx.send(greeted).await;
                        }
                        Err(why) => tracing::info!(%from, why, "LAN connection dropped before its hello"),
                    },
                    _ = cancelled => tracing::info!(
                        %from,
                        "LAN connection dropped: newer ones from the same address are waiting"
                    ),
                }
            });
        }
    });
    (rx, task)
}

/// The handshake (only `/v1/lan` upgrades), `peer_joined`, then the hello, each within
/// [`PRE_HELLO`].
async fn greet(tcp: TcpStream, from: SocketAddr) -> Result<Greeted, String> {
    let mut sig = Signalling::accept_direct(tcp, PRE_HELLO)
        .await
        .map_err(|e| crate::with_causes(&e))?;
    sig.send_as_broker(&BrokerMessage::PeerJoined {})
        .await
        .map_err(|e| crate::with_causes(&e))?;
    match tokio::time::timeout(PRE_HELLO, sig.recv()).await {
        Ok(Ok(BrokerMessage::Relay {
            signal: PeerSignal::LanHello { grant },
        })) => Ok(Greeted { sig, from, grant }),
        Ok(Ok(_)) => Err("expected a hello".into()),
        Ok(Err(e)) => Err(crate::with_causes(&e)),
        Err(_) => Err(format!("no hello within {PRE_HELLO:?}")),
    }
}

/// One unauthenticated connection counted against the caps while it lives.
struct Slot {
    greeting: Greeting,
    ip: IpAddr,
    id: u64,
}

impl Slot {
    /// Count connection `id` from `ip`, cancelling that address's oldest unfinished one when
    /// it is at its cap; `None` when the overall cap is reached. The receiver resolves when
    /// this connection is cancelled in turn.
    fn take(greeting: &Greeting, ip: IpAddr, id: u64) -> Option<(Self, oneshot::Receiver<()>)> {
        let mut all = greeting.lock().unwrap_or_else(|p| p.into_inner());
        let queue = all.entry(ip).or_default();
        if queue.len() >= MAX_GREETING_PER_SOURCE {
            // Dropping its sender cancels it.
            queue.pop_front();
        }
        let total: usize = all.values().map(VecDeque::len).sum();
        if total >= MAX_GREETING {
            return None;
        }
        let (cancel, cancelled) = oneshot::channel();
        all.entry(ip).or_default().push_back((id, cancel));
        let slot = Self {
            greeting: greeting.clone(),
            ip,
            id,
        };
        Some((slot, cancelled))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut all = self.greeting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = all.get_mut(&self.ip) {
            queue.retain(|(id, _)| *id != self.id);
            if queue.is_empty() {
                all.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_cap_loses_its_oldest_connection_and_the_total_is_capped() {
        let greeting: Greeting = Arc::default();
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let mut held: Vec<(Slot, oneshot::Receiver<()>)> = (0..MAX_GREETING_PER_SOURCE as u64)
            .map(|id| Slot::take(&greeting, a, id).expect("under the cap"))
            .collect();
        // One more from the same address: the oldest is cancelled, the newest admitted.
        let newest = Slot::take(&greeting, a, 99).expect("the newest gets in");
        assert!(held[0]
            .1
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        assert!(held[1]
            .1
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Empty));
        drop(newest);
        held.clear();
        assert!(greeting.lock().unwrap().is_empty(), "freed on drop");
        let mut many = Vec::new();
        for i in 0..MAX_GREETING as u64 * 2 {
            let ip = IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
            if let Some(s) = Slot::take(&greeting, ip, i) {
                many.push(s);
            }
        }
        assert_eq!(many.len(), MAX_GREETING, "capped overall");
    }
}
