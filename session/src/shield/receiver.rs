//! The receiving half of the loss shield: records handed up in order, lost ones rebuilt
//! from a parity or asked for again.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::{
    nack_bytes, record_id, xor_into, Parity, FIRST_HOLD, GROUP_WIDTH, HISTORY, MAX_HELD, MAX_HOLD,
    MAX_JUMP, MAX_PEERS, MAX_PENDING, MIN_HOLD, NACK_AFTER, PARITY_MARKER,
};

/// Times a gap is named in a NACK at most.
const MAX_NACKS: u8 = 2;
/// Given-up gaps remembered per peer, for a late repair's round trip.
const GIVEN_UP_KEPT: usize = 64;
/// The first record after a silence this long starts the order over (an outage).
const SILENCE: Duration = Duration::from_millis(200);

/// A record not arrived although a later one did.
#[derive(Debug, Clone, Copy)]
struct Missing {
    since: Duration,
    /// When it was last named in a NACK, and how many times.
    nacked: Option<Duration>,
    /// When it was first named: a repair that lands after the gap was given up counts its
    /// round trip from there. Before any repair landed in time, the second naming comes
    /// half a first hold (75 ms) after the first, usually before the first's repair, and
    /// counted from it `lte`'s repairs read 75 ms short of what the hold must cover.
    first_nacked: Option<Duration>,
    nacks: u8,
}

/// What the receiving half knows of one peer's records.
#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    epoch: u16,
    /// The next sequence number the stack should get.
    next: Option<u64>,
    /// The highest sequence number seen.
    highest: Option<u64>,
    /// Records behind a gap: sequence number to (arrival, datagram).
    held: BTreeMap<u64, (Duration, Bytes)>,
    /// The gaps, from `next` on.
    missing: BTreeMap<u64, Missing>,
    /// Recent records by sequence number, to rebuild a lost one.
    history: BTreeMap<u64, Bytes>,
    pending: VecDeque<Parity>,
    /// A parity came from this peer: it has the shield, so it answers NACKs.
    shielded: bool,
    /// The repair round trip (NACK to the record's arrival), smoothed.
    repair_rtt: Option<Duration>,
    /// When the last record arrived.
    last_arrival: Duration,
    /// Gaps given up after a NACK named them, with when it first did: a repair that comes
    /// after the hold still measures the repair round trip. Without it a path whose
    /// repairs take longer than the first guess (`FIRST_HOLD`) never learnt so: on `lte`
    /// (160 ms round trip) 1 of 33-43 records named in a run came within its hold, SCTP
    /// saw the rest as losses and its window stayed at 5-7 KB.
    given_up: BTreeMap<u64, Duration>,
}

impl Peer {
    fn new(addr: SocketAddr, epoch: u16) -> Self {
        Self {
            addr,
            epoch,
            next: None,
            highest: None,
            held: BTreeMap::new(),
            missing: BTreeMap::new(),
            history: BTreeMap::new(),
            pending: VecDeque::new(),
            shielded: false,
            repair_rtt: None,
            last_arrival: Duration::ZERO,
            given_up: BTreeMap::new(),
        }
    }

    /// How long a record waits behind a gap: for a peer that repairs, a NACK's wait and a
    /// repair round trip with a margin; for one that does not, reordering only. A repair
    /// that cannot land within `MAX_HOLD` (a 600 ms path) is not waited for: such a path
    /// keeps the first hold, for parities and reordering. Held 300 ms there for nothing,
    /// `satellite`'s slow start starved (95 % of a run frozen).
    fn hold(&self) -> Duration {
        if !self.shielded {
            return MIN_HOLD;
        }
        match self.repair_rtt {
            Some(rtt) => {
                let repair = NACK_AFTER + rtt + rtt / 4 + Duration::from_millis(10);
                if repair > MAX_HOLD {
                    FIRST_HOLD
                } else {
                    repair.max(MIN_HOLD)
                }
            }
            None => FIRST_HOLD,
        }
    }

    /// When a gap should be named (again).
    fn nack_due(&self, m: &Missing) -> Option<Duration> {
        if !self.shielded || m.nacks >= MAX_NACKS {
            return None;
        }
        Some(match m.nacked {
            None => m.since + NACK_AFTER,
            Some(at) => {
                at + self
                    .repair_rtt
                    .map_or(FIRST_HOLD / 2, |r| r + r / 2)
                    .max(NACK_AFTER)
            }
        })
    }

    /// `next` moved: gaps before it are given up.
    fn forget_before_next(&mut self) {
        if let Some(next) = self.next {
            let kept = self.missing.split_off(&next);
            let gone = std::mem::replace(&mut self.missing, kept);
            self.given_up.extend(
                gone.into_iter()
                    .filter_map(|(s, m)| Some((s, m.first_nacked?))),
            );
            while self.given_up.len() > GIVEN_UP_KEPT {
                self.given_up.pop_first();
            }
        }
    }

    /// A record named in a NACK at `nacked` arrived at `now`: a sample of the repair round
    /// trip.
    fn repaired(&mut self, now: Duration, nacked: Duration) {
        let sample = now.saturating_sub(nacked);
        self.repair_rtt = Some(match self.repair_rtt {
            Some(r) => (r * 7 + sample) / 8,
            None => sample,
        });
    }
}

/// Counters of what the receiving half did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShieldStats {
    /// Records rebuilt from a parity.
    pub rebuilt: u64,
    /// Records that arrived after a NACK named them (in their gap's hold or after it).
    pub repaired: u64,
    /// Gaps named in NACKs (a gap named twice counts twice).
    pub nacked: u64,
    /// Records that arrived behind a gap and waited for it.
    pub held: u64,
    /// Gaps given up after the hold: the stack saw these losses.
    pub gaps_given_up: u64,
    /// Parity datagrams that could not be read or rebuilt nothing true.
    pub bad_parities: u64,
}

/// The receiving half: takes datagrams as they arrive, gives them back in order, with
/// lost ones rebuilt where a parity allows and asked for again where it does not.
#[derive(Debug, Default)]
pub struct ShieldReceiver {
    peers: Vec<Peer>,
    ready: VecDeque<(SocketAddr, Bytes)>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
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

    /// Records held behind gaps, over all peers.
    pub fn held(&self) -> usize {
        self.peers.iter().map(|p| p.held.len()).sum()
    }

    /// `datagram` arrived from `from` at `now`. NACKs are the sending half's
    /// ([`super::ShieldSender::handle_nack`]).
    pub fn handle_datagram(&mut self, now: Duration, from: SocketAddr, datagram: impl Into<Bytes>) {
        let datagram = datagram.into();
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
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.ready.pop_front()
    }

    /// The next datagram to send to a peer (a NACK).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }

    /// When [`Self::handle_timeout`] should run next: a NACK is due or a hold ends.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.peers
            .iter()
            .flat_map(|p| {
                let hold = p.hold();
                let holds = p.held.values().map(move |(at, _)| *at + hold);
                let nacks = p.missing.values().filter_map(|m| p.nack_due(m));
                holds.chain(nacks)
            })
            .min()
    }

    /// Name the gaps whose NACK is due, and give up those whose hold ended, by `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        for i in 0..self.peers.len() {
            self.send_nacks(now, i);
            loop {
                let peer = &self.peers[i];
                let hold = peer.hold();
                let due = peer.held.values().any(|(at, _)| *at + hold <= now);
                let Some(first) = peer.held.keys().next().copied().filter(|_| due) else {
                    break;
                };
                self.stats.gaps_given_up += 1;
                self.peers[i].next = Some(first);
                self.release_in_order(i);
            }
        }
    }

    fn send_nacks(&mut self, now: Duration, i: usize) {
        let peer = &mut self.peers[i];
        let due: Vec<u64> = peer
            .missing
            .iter()
            .filter(|(_, m)| peer.nack_due(m).is_some_and(|at| at <= now))
            .map(|(s, _)| *s)
            .collect();
        let mut k = 0;
        while k < due.len() {
            let base = due[k];
            let mut mask = 0u16;
            while k < due.len() && due[k] < base + GROUP_WIDTH {
                mask |= 1 << (due[k] - base);
                if let Some(m) = peer.missing.get_mut(&due[k]) {
                    m.nacked = Some(now);
                    m.first_nacked.get_or_insert(now);
                    m.nacks += 1;
                }
                self.stats.nacked += 1;
                k += 1;
            }
            self.transmit
                .push_back((peer.addr, nack_bytes(peer.epoch, base, mask)));
        }
    }

    fn peer(&mut self, from: SocketAddr, epoch: u16) -> usize {
        match self.peers.iter().position(|p| p.addr == from) {
            Some(i) => {
                if self.peers[i].epoch != epoch {
                    // New keys: sequence numbers start again. What waited goes now.
                    self.flush(i);
                    let shielded = self.peers[i].shielded;
                    self.peers[i] = Peer::new(from, epoch);
                    self.peers[i].shielded = shielded;
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
        peer.missing.clear();
        let addr = peer.addr;
        self.ready
            .extend(held.into_values().map(|(_, d)| (addr, d)));
    }

    fn handle_record(&mut self, now: Duration, i: usize, seq: u64, datagram: Bytes) {
        let peer = &mut self.peers[i];
        if peer.history.contains_key(&seq) {
            // A duplicate (a rebuilt record's original, a repair that crossed a late
            // arrival): the stack has it.
            return;
        }
        let (nacked, learn) = match peer.missing.remove(&seq) {
            Some(m) => (m.nacked, true),
            // After its hold: it teaches the hold only while nothing else did. Once repairs
            // land in time, a late one is a repair a queue delayed (congestion, which SCTP
            // should see): learnt, it lengthened `hotel-wifi`'s holds at the start's burst
            // and the link's queue overflowed (3 runs of 8 froze 20-38 %, main none of 8).
            None => (peer.given_up.remove(&seq), peer.repair_rtt.is_none()),
        };
        if let Some(at) = nacked {
            self.stats.repaired += 1;
            if learn {
                peer.repaired(now, at);
            }
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
        let silent = now.saturating_sub(std::mem::replace(&mut self.peers[i].last_arrival, now));
        if seq - next > MAX_JUMP || (seq > next && silent > SILENCE) {
            // Far ahead, or the first record after a silence: the peer went on without us
            // (an outage). What was lost meanwhile is past repairing here: holding the path's
            // first records behind it and asking for it again delayed the picture's return
            // by 0.3 s. Start over from here.
            self.flush(i);
            self.peers[i].next = Some(seq);
            self.peers[i].highest = None;
        }
        let peer = &mut self.peers[i];
        let from = peer.highest.map_or(seq, |h| h + 1).max(next);
        peer.missing.extend((from..seq).map(|s| {
            let m = Missing {
                since: now,
                nacked: None,
                first_nacked: None,
                nacks: 0,
            };
            (s, m)
        }));
        peer.highest = Some(peer.highest.map_or(seq, |h| h.max(seq)));
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
        peer.forget_before_next();
    }

    fn handle_parity(&mut self, now: Duration, from: SocketAddr, parity: Parity) {
        let Some(i) = self.peers.iter().position(|p| p.addr == from) else {
            return;
        };
        let peer = &mut self.peers[i];
        peer.shielded = true;
        if peer.epoch != parity.epoch {
            return;
        }
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
            // Not a repair: its round trip says nothing of a NACK's.
            self.peers[i].missing.remove(&seq);
            self.handle_record(now, i, seq, Bytes::from(bytes));
        }
    }
}
