//! The loss shield: a thin layer between the WebRTC stack and its UDP socket that keeps
//! random loss and reordering away from SCTP.
//!
//! SCTP reads every lost packet as congestion and halves its window; three packets
//! overtaking one read the same. On a 3 Mbit/s link losing 2 % (hotel Wi-Fi) its window
//! lived between 5 and 15 KB and the video channel carried 0.6-0.9 Mbit/s, whatever the
//! rate controller allowed. Congestion is the rate controller's business (queue delay and
//! heavy loss, see [`crate::rate`]); the transport only needs its packets back.
//!
//! So each end sends, after every small group of DTLS records (up to [`MAX_GROUP`], or
//! whatever left in [`MAX_SPAN`] once there are [`MIN_GROUP`]), one parity datagram: the
//! XOR of the group's datagrams. The receiving end hands records to the stack in sequence
//! order, holding those behind a gap for at most [`MAX_HOLD`]: a late record fills the gap,
//! or the parity rebuilds the one missing record of its group, or the hold ends and SCTP
//! sees the loss as before. DTLS authenticates every record, so a rebuilt record that is
//! wrong (a forged parity) is dropped by DTLS like any forged packet.
//!
//! The parity datagram starts with [`PARITY_MARKER`], a first byte RFC 7983 leaves
//! unassigned: a peer without the shield (a browser) drops it as an unknown packet.
//! Only datagrams that are exactly one DTLS 1.2 application-data record are protected;
//! STUN, the handshake and anything else pass as they are.
//!
//! Both halves are sans-IO and take a `now`, so they are tested in virtual time; the
//! `deskwire` crate wraps the socket with them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// The first byte of a parity datagram: in 4..=15, which RFC 7983 assigns to nothing.
pub const PARITY_MARKER: u8 = 0x0E;
const PARITY_VERSION: u8 = 1;
/// Marker, version, epoch (2), first sequence number (6), member mask (2), XOR of the
/// members' lengths (2).
const PARITY_HEADER: usize = 14;
const RECORD_HEADER: usize = 13;
const APPLICATION_DATA: u8 = 23;
/// The widest group: the mask has 16 bits, one per sequence number from the first.
const GROUP_WIDTH: u64 = 16;

/// A group closes at this many records: one parity per ten costs 10 %, and one loss in
/// ten records is recovered.
pub const MAX_GROUP: usize = 10;
/// Or at this many, once its first record is `MAX_SPAN` old: a slow flow waits no longer
/// for its parity, and never pays more than a quarter for it.
pub const MIN_GROUP: usize = 4;
/// See [`MIN_GROUP`].
pub const MAX_SPAN: Duration = Duration::from_millis(25);
/// How long a record may wait for a gap before it to fill: a group's span plus the
/// jitter that reorders packets on a Wi-Fi path. Past it, SCTP repairs the loss itself.
pub const MAX_HOLD: Duration = Duration::from_millis(40);
/// Held records per peer at most; past it the oldest gap is given up.
const MAX_HELD: usize = 256;
/// A jump this far ahead is a new start (the link came back), not a gap to wait for.
const MAX_JUMP: u64 = 128;
/// Records kept per peer to rebuild a lost one from a parity.
const HISTORY: u64 = 64;
/// Parities kept per peer that could not rebuild yet (two of their records missing).
const MAX_PENDING: usize = 8;
/// Peers tracked per socket (ICE may try several addresses); the oldest is forgotten.
const MAX_PEERS: usize = 8;

/// The epoch and sequence number of a datagram that is exactly one DTLS 1.2
/// application-data record; `None` for anything else.
fn record_id(d: &[u8]) -> Option<(u16, u64)> {
    if d.len() < RECORD_HEADER || d[0] != APPLICATION_DATA || d[1] != 0xFE || d[2] != 0xFD {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[11], d[12]]));
    if RECORD_HEADER + len != d.len() {
        return None;
    }
    let epoch = u16::from_be_bytes([d[3], d[4]]);
    let seq = d[5..11].iter().fold(0u64, |s, b| (s << 8) | u64::from(*b));
    Some((epoch, seq))
}

/// XOR `src` into `acc`, growing `acc` with zeros to fit.
fn xor_into(acc: &mut Vec<u8>, src: &[u8]) {
    if acc.len() < src.len() {
        acc.resize(src.len(), 0);
    }
    for (a, s) in acc.iter_mut().zip(src) {
        *a ^= s;
    }
}

/// A group being filled towards its parity.
#[derive(Debug)]
struct Group {
    epoch: u16,
    base: u64,
    mask: u16,
    count: usize,
    len_xor: u16,
    xor: Vec<u8>,
    opened: Duration,
}

impl Group {
    fn parity(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(PARITY_HEADER + self.xor.len());
        p.push(PARITY_MARKER);
        p.push(PARITY_VERSION);
        p.extend_from_slice(&self.epoch.to_be_bytes());
        p.extend_from_slice(&self.base.to_be_bytes()[2..]);
        p.extend_from_slice(&self.mask.to_be_bytes());
        p.extend_from_slice(&self.len_xor.to_be_bytes());
        p.extend_from_slice(&self.xor);
        p
    }
}

/// The sending half: watches what leaves and says when a parity should follow.
#[derive(Debug, Default)]
pub struct ShieldSender {
    groups: Vec<(SocketAddr, Group)>,
}

impl ShieldSender {
    /// A new sender with no groups open.
    pub fn new() -> Self {
        Self::default()
    }

    /// `datagram` left for `to` at `now`; returns the parity datagram to send after it,
    /// if a group closed.
    pub fn handle_sent(
        &mut self,
        now: Duration,
        to: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        let (epoch, seq) = record_id(datagram)?;
        let at = self.groups.iter().position(|(a, _)| *a == to);
        let mut closed = None;
        if let Some(i) = at {
            let g = &self.groups[i].1;
            let fits = g.epoch == epoch && seq >= g.base && seq < g.base + GROUP_WIDTH;
            if !fits || g.mask & (1 << (seq - g.base)) != 0 {
                // A new epoch, a record out of the group's reach or one it already has: the
                // group ends here, with a parity if it protects anything.
                let (_, g) = self.groups.remove(i);
                if g.count >= 2 {
                    closed = Some(g.parity());
                }
            }
        }
        let i = match self.groups.iter().position(|(a, _)| *a == to) {
            Some(i) => i,
            None => {
                if self.groups.len() == MAX_PEERS {
                    self.groups.remove(0);
                }
                self.groups.push((
                    to,
                    Group {
                        epoch,
                        base: seq,
                        mask: 0,
                        count: 0,
                        len_xor: 0,
                        xor: Vec::new(),
                        opened: now,
                    },
                ));
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[i].1;
        g.mask |= 1 << (seq - g.base);
        g.count += 1;
        g.len_xor ^= datagram.len() as u16;
        xor_into(&mut g.xor, datagram);
        let full = g.count >= MAX_GROUP
            || (g.count >= MIN_GROUP && now.saturating_sub(g.opened) >= MAX_SPAN);
        if full {
            let (_, g) = self.groups.remove(i);
            // Two parities at once cannot happen: a group that closed above left no group
            // for this address, and a fresh one holds one record.
            return Some(g.parity());
        }
        closed
    }
}

/// A parity datagram, read.
#[derive(Debug, Clone)]
struct Parity {
    epoch: u16,
    base: u64,
    mask: u16,
    len_xor: u16,
    xor: Vec<u8>,
}

impl Parity {
    fn parse(d: &[u8]) -> Option<Self> {
        if d.len() < PARITY_HEADER + RECORD_HEADER
            || d[0] != PARITY_MARKER
            || d[1] != PARITY_VERSION
        {
            return None;
        }
        let epoch = u16::from_be_bytes([d[2], d[3]]);
        let base = d[4..10].iter().fold(0u64, |s, b| (s << 8) | u64::from(*b));
        let mask = u16::from_be_bytes([d[10], d[11]]);
        let len_xor = u16::from_be_bytes([d[12], d[13]]);
        (mask.count_ones() >= 2).then(|| Self {
            epoch,
            base,
            mask,
            len_xor,
            xor: d[PARITY_HEADER..].to_vec(),
        })
    }

    fn members(&self) -> impl Iterator<Item = u64> + '_ {
        (0..GROUP_WIDTH)
            .filter(|i| self.mask & (1 << i) != 0)
            .map(|i| self.base + i)
    }
}

/// What the receiving half knows of one peer's records.
#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    epoch: u16,
    /// The next sequence number the stack should get.
    next: Option<u64>,
    /// Records behind a gap: sequence number to (arrival, datagram).
    held: BTreeMap<u64, (Duration, Vec<u8>)>,
    /// Recent records by sequence number, to rebuild a lost one.
    history: BTreeMap<u64, Vec<u8>>,
    pending: VecDeque<Parity>,
}

impl Peer {
    fn new(addr: SocketAddr, epoch: u16) -> Self {
        Self {
            addr,
            epoch,
            next: None,
            held: BTreeMap::new(),
            history: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }
}

/// Counters of what the receiving half did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShieldStats {
    /// Records rebuilt from a parity.
    pub rebuilt: u64,
    /// Records that arrived behind a gap and waited for it.
    pub held: u64,
    /// Gaps given up after `MAX_HOLD`: the stack saw these losses.
    pub gaps_given_up: u64,
    /// Parity datagrams that could not be read.
    pub bad_parities: u64,
}

/// The receiving half: takes datagrams as they arrive, gives them back in order, with
/// lost ones rebuilt where a parity allows.
#[derive(Debug, Default)]
pub struct ShieldReceiver {
    peers: Vec<Peer>,
    ready: VecDeque<(SocketAddr, Vec<u8>)>,
    stats: ShieldStats,
}

impl ShieldReceiver {
    /// A new receiver that knows no peer.
    pub fn new() -> Self {
        Self::default()
    }

    /// What it did so far.
    pub fn stats(&self) -> ShieldStats {
        self.stats
    }

    /// `datagram` arrived from `from` at `now`.
    pub fn handle_datagram(&mut self, now: Duration, from: SocketAddr, datagram: Vec<u8>) {
        if datagram.first() == Some(&PARITY_MARKER) {
            match Parity::parse(&datagram) {
                Some(p) => self.handle_parity(now, from, p),
                None => self.stats.bad_parities += 1,
            }
            return;
        }
        let Some((epoch, seq)) = record_id(&datagram) else {
            self.ready.push_back((from, datagram));
            return;
        };
        let i = self.peer(from, epoch);
        self.handle_record(now, i, seq, datagram);
        self.try_pending(now, i);
    }

    /// The next datagram for the stack, in order.
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.ready.pop_front()
    }

    /// When [`Self::handle_timeout`] should run next: the oldest held record's hold ends.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.peers
            .iter()
            .flat_map(|p| p.held.values().map(|(at, _)| *at + MAX_HOLD))
            .min()
    }

    /// Give up the gaps whose records have been held for `MAX_HOLD` by `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        for i in 0..self.peers.len() {
            loop {
                let peer = &self.peers[i];
                let due = peer.held.values().any(|(at, _)| *at + MAX_HOLD <= now);
                let Some(first) = peer.held.keys().next().copied().filter(|_| due) else {
                    break;
                };
                self.stats.gaps_given_up += 1;
                self.peers[i].next = Some(first);
                self.release_in_order(i);
            }
        }
    }

    fn peer(&mut self, from: SocketAddr, epoch: u16) -> usize {
        match self.peers.iter().position(|p| p.addr == from) {
            Some(i) => {
                if self.peers[i].epoch != epoch {
                    // New keys: sequence numbers start again. What waited goes now.
                    self.flush(i);
                    self.peers[i] = Peer::new(from, epoch);
                }
                i
            }
            None => {
                if self.peers.len() == MAX_PEERS {
                    self.flush(0);
                    self.peers.remove(0);
                }
                self.peers.push(Peer::new(from, epoch));
                self.peers.len() - 1
            }
        }
    }

    fn flush(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        let held = std::mem::take(&mut peer.held);
        let addr = peer.addr;
        self.ready
            .extend(held.into_values().map(|(_, d)| (addr, d)));
    }

    fn handle_record(&mut self, now: Duration, i: usize, seq: u64, datagram: Vec<u8>) {
        let peer = &mut self.peers[i];
        if peer.history.contains_key(&seq) {
            // A duplicate (a rebuilt record's original arriving late): the stack has it.
            return;
        }
        peer.history.insert(seq, datagram.clone());
        let newest = peer.history.keys().next_back().copied().unwrap_or(seq);
        while peer.history.len() as u64 > HISTORY
            || peer
                .history
                .keys()
                .next()
                .is_some_and(|s| s + HISTORY < newest)
        {
            peer.history.pop_first();
        }
        let next = *peer.next.get_or_insert(seq);
        if seq < next {
            // Late, after its gap was given up: SCTP takes it as it comes.
            self.ready.push_back((peer.addr, datagram));
            return;
        }
        if seq - next > MAX_JUMP {
            // Far ahead: the peer went on without us (an outage). Start over from here.
            self.flush(i);
            self.peers[i].next = Some(seq);
        }
        let peer = &mut self.peers[i];
        if Some(seq) != peer.next {
            self.stats.held += 1;
            peer.held.insert(seq, (now, datagram));
            if peer.held.len() > MAX_HELD {
                self.stats.gaps_given_up += 1;
                peer.next = peer.held.keys().next().copied();
                self.release_in_order(i);
            }
            return;
        }
        self.ready.push_back((peer.addr, datagram));
        peer.next = Some(seq + 1);
        self.release_in_order(i);
    }

    /// Hand over the held records that follow `next` without a gap.
    fn release_in_order(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        while let Some(next) = peer.next {
            let Some((_, d)) = peer.held.remove(&next) else {
                break;
            };
            self.ready.push_back((peer.addr, d));
            peer.next = Some(next + 1);
        }
    }

    fn handle_parity(&mut self, now: Duration, from: SocketAddr, parity: Parity) {
        let Some(i) = self.peers.iter().position(|p| p.addr == from) else {
            return;
        };
        if self.peers[i].epoch != parity.epoch {
            return;
        }
        let peer = &mut self.peers[i];
        if peer.pending.len() == MAX_PENDING {
            peer.pending.pop_front();
        }
        peer.pending.push_back(parity);
        self.try_pending(now, i);
    }

    /// Rebuild what the kept parities can: each one missing exactly one record.
    fn try_pending(&mut self, now: Duration, i: usize) {
        loop {
            let peer = &mut self.peers[i];
            let floor = peer.next.unwrap_or(0).saturating_sub(HISTORY);
            peer.pending.retain(|p| {
                // Useful while a member may still be missing and still be rebuilt.
                p.base + GROUP_WIDTH > floor && p.members().any(|s| !peer.history.contains_key(&s))
            });
            let found = peer.pending.iter().enumerate().find_map(|(k, p)| {
                let mut missing = p.members().filter(|s| !peer.history.contains_key(s));
                let one = missing.next()?;
                missing.next().is_none().then_some((k, one))
            });
            let Some((k, seq)) = found else {
                return;
            };
            let parity = peer.pending.remove(k).expect("found above");
            let members: Vec<u64> = parity.members().filter(|s| *s != seq).collect();
            let mut bytes = parity.xor;
            let mut len = parity.len_xor;
            for s in members {
                let d = &peer.history[&s];
                xor_into(&mut bytes, d);
                len ^= d.len() as u16;
            }
            let len = usize::from(len);
            if len > bytes.len() {
                self.stats.bad_parities += 1;
                continue;
            }
            bytes.truncate(len);
            if record_id(&bytes) != Some((parity.epoch, seq)) {
                // Not the record it claims to rebuild: a parity that lied or was damaged.
                self.stats.bad_parities += 1;
                continue;
            }
            self.stats.rebuilt += 1;
            self.handle_record(now, i, seq, bytes);
        }
    }
}

#[cfg(test)]
mod tests;
