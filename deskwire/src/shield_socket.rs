//! The UDP socket the WebRTC stack sees when the loss shield is on: the kernel's socket
//! with [`deskwire_session::shield`] between them. Parities follow the records they
//! protect; arriving records are handed up in order, lost ones rebuilt where a parity
//! allows. See the shield's module documentation for why.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deskwire_session::shield::{ShieldReceiver, ShieldSender, ShieldStats, NACK_MARKER};
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

/// Messages read from the kernel per call, each up to 64 KiB (GRO may coalesce).
const READ_BATCH: usize = 4;
const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
struct State {
    sender: ShieldSender,
    receiver: ShieldReceiver,
    /// Where each peer's datagrams were addressed to, for the stack's `RecvMeta`.
    dst_ip: VecDeque<(SocketAddr, Option<IpAddr>)>,
    /// Wakes the receive side when a held record's hold ends.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    buffers: [Vec<u8>; READ_BATCH],
    /// What was last logged, so the counters are logged when they move.
    logged: ShieldStats,
}

/// A socket with the loss shield in front of it.
#[derive(Debug)]
pub(crate) struct ShieldedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    epoch: Instant,
    state: Mutex<State>,
}

impl ShieldedSocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>) -> Self {
        Self {
            inner,
            epoch: Instant::now(),
            state: Mutex::new(State {
                sender: ShieldSender::new(),
                receiver: ShieldReceiver::new(),
                dst_ip: VecDeque::new(),
                timer: None,
                buffers: std::array::from_fn(|_| vec![0; READ_BUFFER]),
                logged: ShieldStats::default(),
            }),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Send what the shield itself has to say (NACKs, records asked for again), best
    /// effort: none of it is worth waiting for a full socket.
    fn send_own(&self, cx: &mut Context<'_>, to: SocketAddr, datagram: &[u8]) {
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: datagram,
            segment_size: None,
            src_ip: None,
        };
        if let Poll::Ready(Err(e)) = self.inner.poll_send(cx, &t) {
            tracing::debug!(error = %e, "loss shield datagram not sent");
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock can panic half-way through a change that matters: a
        // poisoned state is still a usable one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ShieldedSocket {
    fn drop(&mut self) {
        let state = self.state();
        tracing::debug!(stats = ?state.receiver.stats(), resent = state.sender.resent(), "loss shield at close");
    }
}

impl AsyncUdpSocket for ShieldedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    // One datagram per send and per receive: each must pass the shield on its own.
    fn max_gso_segments(&self) -> usize {
        1
    }

    fn max_gro_segments(&self) -> usize {
        1
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let sent = self.inner.poll_send(cx, transmit);
        if let Poll::Ready(Ok(_)) = sent {
            let parity = self.state().sender.handle_sent(
                self.now(),
                transmit.destination,
                transmit.contents,
            );
            if let Some(parity) = parity {
                let t = Transmit {
                    destination: transmit.destination,
                    ecn: None,
                    contents: &parity,
                    segment_size: None,
                    src_ip: transmit.src_ip,
                };
                // Best effort: a parity that finds the socket full is not worth waiting for.
                if let Poll::Ready(Err(e)) = self.inner.poll_send(cx, &t) {
                    tracing::debug!(error = %e, "parity not sent");
                }
            }
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut guard = self.state();
        let state = &mut *guard;
        loop {
            let mut n = 0;
            while n < bufs.len().min(meta.len()) {
                let Some((from, d)) = state.receiver.poll_datagram() else {
                    break;
                };
                if d.len() > bufs[n].len() {
                    tracing::debug!(
                        len = d.len(),
                        "datagram larger than the stack's buffer dropped"
                    );
                    continue;
                }
                bufs[n][..d.len()].copy_from_slice(&d);
                let mut m = RecvMeta::default();
                m.addr = from;
                m.len = d.len();
                m.stride = d.len().max(1);
                m.dst_ip = state
                    .dst_ip
                    .iter()
                    .find(|(a, _)| *a == from)
                    .and_then(|(_, ip)| *ip);
                meta[n] = m;
                n += 1;
            }
            if n > 0 {
                let stats = state.receiver.stats();
                if stats.rebuilt / 64 != state.logged.rebuilt / 64
                    || stats.repaired / 16 != state.logged.repaired / 16
                    || stats.gaps_given_up / 16 != state.logged.gaps_given_up / 16
                {
                    tracing::debug!(?stats, resent = state.sender.resent(), "loss shield");
                    state.logged = stats;
                }
                return Poll::Ready(Ok(n));
            }
            if let Some(at) = state.receiver.poll_timeout() {
                let now = self.now();
                if at <= now {
                    state.receiver.handle_timeout(now);
                    while let Some((to, d)) = state.receiver.poll_transmit() {
                        self.send_own(cx, to, &d);
                    }
                    continue;
                }
            }
            let mut metas = [RecvMeta::default(); READ_BATCH];
            let read = {
                let mut slices = state.buffers.each_mut().map(|b| IoSliceMut::new(b));
                self.inner.poll_recv(cx, &mut slices, &mut metas)
            };
            match read {
                Poll::Ready(Ok(count)) => {
                    let now = self.now();
                    for (b, m) in state.buffers.iter().zip(&metas).take(count) {
                        if !state
                            .dst_ip
                            .iter()
                            .any(|(a, ip)| *a == m.addr && *ip == m.dst_ip)
                        {
                            state.dst_ip.retain(|(a, _)| *a != m.addr);
                            if state.dst_ip.len() == 8 {
                                state.dst_ip.pop_front();
                            }
                            state.dst_ip.push_back((m.addr, m.dst_ip));
                        }
                        let stride = m.stride.max(1);
                        for d in b[..m.len].chunks(stride) {
                            if d.first() == Some(&NACK_MARKER) {
                                let again = state.sender.handle_nack(now, m.addr, d);
                                for again in again {
                                    self.send_own(cx, m.addr, &again);
                                }
                            } else {
                                state.receiver.handle_datagram(
                                    now,
                                    m.addr,
                                    Bytes::copy_from_slice(d),
                                );
                            }
                        }
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Some(at) = state.receiver.poll_timeout() else {
                        state.timer = None;
                        return Poll::Pending;
                    };
                    let deadline = tokio::time::Instant::from_std(self.epoch + at);
                    let timer = state
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::runtime::Runtime;

    fn record(seq: u64) -> Vec<u8> {
        let mut d = vec![23, 0xFE, 0xFD, 0, 1];
        d.extend_from_slice(&seq.to_be_bytes()[2..]);
        d.extend_from_slice(&20u16.to_be_bytes());
        d.extend([seq as u8; 20]);
        d
    }

    /// A shielded socket on loopback, and its address.
    fn shielded_loopback() -> (ShieldedSocket, SocketAddr) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let wrapped = webrtc::runtime::TokioRuntime
            .wrap_udp_socket(socket)
            .expect("wrap");
        (ShieldedSocket::new(wrapped), addr)
    }

    /// What a sending shield puts on the wire for records 0..10 to `to`, the records in
    /// `lost` left out as if lost on the way; the sending socket and shield.
    fn send_group(to: SocketAddr, lost: &[u64]) -> (std::net::UdpSocket, ShieldSender) {
        let mut sender = ShieldSender::new();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for seq in 0..10u64 {
            let d = record(seq);
            let parity = sender.handle_sent(Duration::ZERO, to, &d);
            if !lost.contains(&seq) {
                socket.send_to(&d, to).expect("send");
            }
            if let Some(p) = parity {
                socket.send_to(&p, to).expect("send parity");
            }
        }
        (socket, sender)
    }

    async fn recv(socket: &ShieldedSocket) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut meta = [RecvMeta::default(); 1];
        std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            socket.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await
        .expect("receive");
        buf.truncate(meta[0].len);
        buf
    }

    /// The hold ends on its own timer: a record behind a gap reaches the stack even when
    /// nothing else arrives after it (a goodbye was once stuck behind a lost packet).
    #[tokio::test]
    async fn a_record_behind_a_gap_is_handed_up_when_the_hold_ends_without_more_traffic() {
        let (rx, to) = shielded_loopback();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for seq in [0u64, 2] {
            tx.send_to(&record(seq), to).expect("send");
        }
        assert_eq!(recv(&rx).await, record(0));
        let start = Instant::now();
        let second = tokio::time::timeout(Duration::from_secs(2), recv(&rx))
            .await
            .expect("released by the hold's timer");
        assert_eq!(second, record(2));
        assert!(
            start.elapsed() >= Duration::from_millis(30),
            "{:?}",
            start.elapsed()
        );
    }

    /// A gap a parity cannot fill is named to the peer that sent the parity, and what
    /// that peer sends again is handed up in order.
    #[tokio::test]
    async fn a_gap_is_asked_for_again_on_the_socket_and_the_answer_fills_it() {
        let (rx, to) = shielded_loopback();
        let (peer, mut sender) = send_group(to, &[3, 4]);
        let receiving = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.push(recv(&rx).await);
            }
            got
        });
        let nack = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 64];
            peer.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let (n, _) = peer.recv_from(&mut buf).expect("a NACK within 2 s");
            let again = sender.handle_nack(Duration::from_millis(40), to, &buf[..n]);
            for d in &again {
                peer.send_to(d, to).expect("send again");
            }
            again.len()
        })
        .await
        .expect("peer");
        assert_eq!(nack, 2);
        let got = tokio::time::timeout(Duration::from_secs(2), receiving)
            .await
            .expect("all ten in time")
            .expect("receiver");
        assert_eq!(got, (0..10u64).map(record).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_parity_follows_a_group_and_rebuilds_its_lost_record_across_real_sockets() {
        let (rx, to) = shielded_loopback();
        send_group(to, &[4]);
        for seq in 0..10u64 {
            assert_eq!(recv(&rx).await, record(seq), "record {seq}");
        }
    }
}
