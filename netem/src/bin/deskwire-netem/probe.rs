//! `deskwire-netem probe`: a UDP echo server, and a sender that paces timestamped packets
//! at a rate and measures what comes back (loss, RTT, throughput, silences).

use std::collections::HashSet;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskwire_netem::ProbeReport;

use crate::signals;

const MAGIC: [u8; 4] = *b"DWNP";
/// Magic, run id, sequence number, send time.
const HEADER: usize = 4 + 4 + 8 + 8;
const MAX_SIZE: usize = 65_507;
/// The sequence number of the packets that check the echo server is there.
const HELLO: u64 = u64::MAX;
/// How often blocking calls come back to look at the stop flags.
const TICK: Duration = Duration::from_millis(20);

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("{0}")]
    Usage(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("UDP to {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    #[error("no echo from {addr} within {wait:?}: is `deskwire-netem probe echo` running there, and is the link up?")]
    NoEcho { addr: SocketAddr, wait: Duration },
    #[error("starting the receiving thread: {0}")]
    Thread(io::Error),
    #[error("the receiving thread panicked")]
    Panicked,
}

impl ProbeError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Echoes every datagram back to its sender until a signal (or `secs`, if given).
pub(crate) fn echo(listen: SocketAddr, secs: Option<f64>) -> Result<(), ProbeError> {
    let limit = secs.map(|s| seconds("--secs", s)).transpose()?;
    let socket = UdpSocket::bind(listen).map_err(|source| ProbeError::Bind {
        addr: listen,
        source,
    })?;
    let io_error = |source| ProbeError::Socket {
        addr: listen,
        source,
    };
    socket.set_read_timeout(Some(TICK)).map_err(io_error)?;
    tracing::info!(%listen, "echoing");
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    while !signals::stop_requested() && limit.is_none_or(|l| start.elapsed() < l) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Err(e) = socket.send_to(&buf[..n], from) {
                    tracing::debug!(%from, error = %e, "echo not sent");
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(())
}

/// Timeouts, signals, and ICMP errors from earlier sends surfacing on a later call.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock
            | ErrorKind::TimedOut
            | ErrorKind::Interrupted
            | ErrorKind::ConnectionRefused
    ) || e.raw_os_error() == Some(libc::EHOSTUNREACH)
        || e.raw_os_error() == Some(libc::ENETUNREACH)
}

fn seconds(flag: &str, s: f64) -> Result<Duration, ProbeError> {
    if s.is_finite() && s > 0.0 && s <= 86_400.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(ProbeError::Usage(format!(
            "{flag} must be between 0 and 86400 seconds, got {s}"
        )))
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SendPlan {
    pub(crate) to: SocketAddr,
    pub(crate) rate_kbit: f64,
    pub(crate) secs: f64,
    pub(crate) size: usize,
    pub(crate) linger: Duration,
    pub(crate) wait: Duration,
}

/// One echo that came back: its sequence number, round trip, arrival and size.
#[derive(Debug, Clone, Copy)]
struct Echo {
    seq: u64,
    rtt: Duration,
    arrived: Duration,
    len: usize,
}

fn encode(buf: &mut [u8], run: u32, seq: u64, sent: Duration) {
    buf[..4].copy_from_slice(&MAGIC);
    buf[4..8].copy_from_slice(&run.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..24].copy_from_slice(&(sent.as_nanos() as u64).to_be_bytes());
}

/// (sequence number, send time) of one of our run's packets.
fn decode(buf: &[u8], run: u32) -> Option<(u64, Duration)> {
    if buf.len() < HEADER || buf[..4] != MAGIC || buf[4..8] != run.to_be_bytes() {
        return None;
    }
    let seq = u64::from_be_bytes(buf[8..16].try_into().ok()?);
    let sent = u64::from_be_bytes(buf[16..24].try_into().ok()?);
    Some((seq, Duration::from_nanos(sent)))
}

/// Sends at the planned rate for the planned time and reports what came back.
pub(crate) fn send(plan: SendPlan) -> Result<ProbeReport, ProbeError> {
    if !(HEADER..=MAX_SIZE).contains(&plan.size) {
        return Err(ProbeError::Usage(format!(
            "--size must be {HEADER} to {MAX_SIZE} bytes, got {}",
            plan.size
        )));
    }
    if !(plan.rate_kbit.is_finite() && plan.rate_kbit >= 1.0 && plan.rate_kbit <= 10e6) {
        return Err(ProbeError::Usage(format!(
            "--rate-kbit must be 1 to 10000000, got {}",
            plan.rate_kbit
        )));
    }
    let duration = seconds("--secs", plan.secs)?;
    let addr = plan.to;
    let io_error = |source| ProbeError::Socket { addr, source };
    let any: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(any).map_err(|source| ProbeError::Bind { addr: any, source })?;
    socket.connect(addr).map_err(io_error)?;
    socket.set_read_timeout(Some(TICK)).map_err(io_error)?;
    // Tells this run's echoes from a previous run's stragglers on the same port.
    let run: u32 = rand::random();
    hello(&socket, run, plan.wait, addr)?;

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let socket = socket.try_clone().map_err(io_error)?;
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("probe-recv".into())
            .spawn(move || receive(&socket, run, start, &stop))
            .map_err(ProbeError::Thread)?
    };
    let interval = Duration::from_secs_f64(plan.size as f64 * 8.0 / (plan.rate_kbit * 1e3));
    let mut buf = vec![0u8; plan.size];
    let mut sent = 0u64;
    while !signals::stop_requested() {
        let due = interval.mul_f64(sent as f64);
        if due >= duration {
            break;
        }
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        encode(&mut buf, run, sent, start.elapsed());
        match socket.send(&buf) {
            Ok(_) => {}
            // A full socket buffer or an ICMP error from an earlier packet: this one is lost.
            Err(e) if is_transient(&e) || e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(io_error(e));
            }
        }
        sent += 1;
    }
    let sent_for = start.elapsed();
    std::thread::sleep(plan.linger);
    stop.store(true, Ordering::Relaxed);
    let echoes = receiver.join().map_err(|_| ProbeError::Panicked)?;
    Ok(summarise(&echoes, sent, plan.size, sent_for))
}

/// Sends hello packets until one comes back, so the timed run starts with the echo server
/// listening and the path (ARP, routes) warm.
fn hello(socket: &UdpSocket, run: u32, wait: Duration, addr: SocketAddr) -> Result<(), ProbeError> {
    let start = Instant::now();
    let mut buf = [0u8; HEADER];
    let mut reply = [0u8; 65_536];
    let mut last_sent: Option<Instant> = None;
    while start.elapsed() < wait && !signals::stop_requested() {
        if last_sent.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            encode(&mut buf, run, HELLO, start.elapsed());
            if let Err(e) = socket.send(&buf) {
                tracing::debug!(error = %e, "hello not sent");
            }
            last_sent = Some(Instant::now());
        }
        match socket.recv(&mut reply) {
            Ok(n) if decode(&reply[..n], run).is_some_and(|(seq, _)| seq == HELLO) => {
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(ProbeError::Socket { addr, source: e }),
        }
    }
    Err(ProbeError::NoEcho { addr, wait })
}

fn receive(socket: &UdpSocket, run: u32, start: Instant, stop: &AtomicBool) -> Vec<Echo> {
    let mut echoes = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let arrived = start.elapsed();
                match decode(&buf[..n], run) {
                    Some((seq, sent)) if seq != HELLO => echoes.push(Echo {
                        seq,
                        rtt: arrived.saturating_sub(sent),
                        arrived,
                        len: n,
                    }),
                    _ => {}
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "receiving echoes failed");
                break;
            }
        }
    }
    echoes
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summarise(echoes: &[Echo], sent: u64, size: usize, sent_for: Duration) -> ProbeReport {
    // A duplicated packet counts once.
    let mut seen = HashSet::new();
    let unique: Vec<&Echo> = echoes.iter().filter(|e| seen.insert(e.seq)).collect();
    let mut rtts: Vec<f64> = unique.iter().map(|e| ms(e.rtt)).collect();
    rtts.sort_by(f64::total_cmp);
    let mut arrivals: Vec<(Duration, usize)> = unique.iter().map(|e| (e.arrived, e.len)).collect();
    arrivals.sort();
    let (first, last) = match (arrivals.first(), arrivals.last()) {
        (Some(f), Some(l)) => (ms(f.0), ms(l.0)),
        _ => (f64::NAN, f64::NAN),
    };
    let throughput_kbit = if arrivals.len() >= 2 {
        let bytes: usize = arrivals[1..].iter().map(|(_, len)| len).sum();
        bytes as f64 * 8.0 / (last - first)
    } else {
        f64::NAN
    };
    let (mut silence, mut silence_start) = (0.0, f64::NAN);
    for w in arrivals.windows(2) {
        let gap = ms(w[1].0 - w[0].0);
        if gap > silence {
            (silence, silence_start) = (gap, ms(w[0].0));
        }
    }
    let echoed = unique.len() as u64;
    ProbeReport {
        sent,
        echoed,
        loss: if sent == 0 {
            f64::NAN
        } else {
            1.0 - echoed as f64 / sent as f64
        },
        rtt_min_ms: rtts.first().copied().unwrap_or(f64::NAN),
        rtt_p50_ms: percentile(&rtts, 0.5),
        rtt_p95_ms: percentile(&rtts, 0.95),
        rtt_max_ms: rtts.last().copied().unwrap_or(f64::NAN),
        offered_kbit: (sent * size as u64) as f64 * 8.0 / ms(sent_for),
        throughput_kbit,
        longest_silence_ms: silence,
        silence_start_ms: silence_start,
        first_echo_ms: first,
        last_echo_ms: last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_decode_only_for_their_own_run() {
        let mut buf = [0u8; 100];
        encode(&mut buf, 7, 42, Duration::from_micros(1500));
        assert_eq!(decode(&buf, 7), Some((42, Duration::from_micros(1500))));
        assert_eq!(decode(&buf, 8), None);
        assert_eq!(decode(&buf[..10], 7), None);
    }

    #[test]
    fn summary_counts_duplicates_once_and_finds_the_silence() {
        let echo = |seq, arrived_ms| Echo {
            seq,
            rtt: Duration::from_millis(40),
            arrived: Duration::from_millis(arrived_ms),
            len: 1000,
        };
        let echoes = [
            echo(0, 40),
            echo(1, 50),
            echo(1, 51),
            echo(2, 60),
            echo(3, 1060),
        ];
        let r = summarise(&echoes, 8, 1000, Duration::from_secs(1));
        assert_eq!(r.echoed, 4);
        assert_eq!(r.loss, 0.5);
        assert_eq!(r.rtt_p50_ms, 40.0);
        assert_eq!(r.longest_silence_ms, 1000.0);
        assert_eq!(r.silence_start_ms, 60.0);
        assert_eq!(r.offered_kbit, 64.0);
    }
}
