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
//! order, holding those behind a gap: a late record fills the gap, or the parity rebuilds
//! the one missing record of its group, or, for a gap still open after [`NACK_AFTER`]
//! (a burst took two of a group), the receiving end names it in a NACK and the sending end
//! sends the record again, as it was, at most twice: the repair a link layer (LTE's RLC,
//! Wi-Fi's retries) does, under SCTP. A gap waits a repair round trip (measured) plus a
//! little, within [`MIN_HOLD`]..=[`MAX_HOLD`]; after that SCTP sees the loss as before.
//! DTLS authenticates every record, so a rebuilt record that is wrong (a forged parity)
//! is dropped by DTLS like any forged packet, and a record sent twice is refused by its
//! replay window.
//!
//! Parity and NACK datagrams start with [`PARITY_MARKER`] and [`NACK_MARKER`], first bytes
//! RFC 7983 leaves unassigned: a peer without the shield (a browser) drops them as
//! unknown packets, and a peer from which no parity ever came gets no NACK and no long
//! hold. Only datagrams that are exactly one DTLS 1.2 record of a ciphered epoch are
//! protected; STUN, the handshake's flights and anything else pass as they are.
//!
//! Both halves are sans-IO and take a `now`, so they are tested in virtual time; the
//! `deskwire` crate wraps the socket with them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

/// The first byte of a parity datagram: in 4..=15, which RFC 7983 assigns to nothing.
pub const PARITY_MARKER: u8 = 0x0E;
/// The first byte of a NACK datagram: epoch, first sequence number and a 16-bit mask of
/// the records to send again.
pub const NACK_MARKER: u8 = 0x0D;
const PARITY_VERSION: u8 = 1;
const NACK_LEN: usize = 12;
/// Marker, version, epoch (2), first sequence number (6), member mask (2), XOR of the
/// members' lengths (2).
const PARITY_HEADER: usize = 14;
const RECORD_HEADER: usize = 13;
/// DTLS content types: change_cipher_spec 20 .. heartbeat 24.
const CONTENT_TYPES: std::ops::RangeInclusive<u8> = 20..=24;
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
/// A gap still open this long is named in a NACK: past a parity's group span and the
/// reordering of a Wi-Fi path, so that neither is asked for twice.
pub const NACK_AFTER: Duration = Duration::from_millis(30);
/// How long a record waits behind a gap at least (reordering, a group's parity), and at
/// most (a repair round trip; a longer path is left to SCTP).
pub const MIN_HOLD: Duration = Duration::from_millis(40);
/// See [`MIN_HOLD`].
pub const MAX_HOLD: Duration = Duration::from_millis(300);
/// The hold before a repair round trip was measured.
const FIRST_HOLD: Duration = Duration::from_millis(150);
/// Sent records kept to send again, per socket, and for how long. Longer than any hold:
/// a record sent again after its gap was given up still reaches SCTP before SCTP's own
/// repair would (sending only records younger than 150 ms froze `step` 29-58 % of the
/// time, against 12-17 %).
const KEEP_SENT: usize = 1024;
const KEEP_FOR: Duration = Duration::from_secs(1);
/// Times a record is sent again at most.
const MAX_RESENDS: u8 = 2;
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

/// The epoch and sequence number of a datagram that is exactly one DTLS 1.2 record of a
/// ciphered epoch; `None` for anything else.
fn record_id(d: &[u8]) -> Option<(u16, u64)> {
    if d.len() < RECORD_HEADER || !CONTENT_TYPES.contains(&d[0]) || d[1] != 0xFE || d[2] != 0xFD {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[11], d[12]]));
    let epoch = u16::from_be_bytes([d[3], d[4]]);
    if RECORD_HEADER + len != d.len() || epoch == 0 {
        return None;
    }
    let seq = be48(&d[5..11]);
    Some((epoch, seq))
}

/// A 48-bit big-endian number (a DTLS sequence number).
fn be48(b: &[u8]) -> u64 {
    b.iter().take(6).fold(0u64, |s, b| (s << 8) | u64::from(*b))
}

/// A NACK: `(epoch, first sequence number, mask)`.
fn nack_bytes(epoch: u16, base: u64, mask: u16) -> Vec<u8> {
    let mut n = Vec::with_capacity(NACK_LEN);
    n.push(NACK_MARKER);
    n.push(PARITY_VERSION);
    n.extend_from_slice(&epoch.to_be_bytes());
    n.extend_from_slice(&base.to_be_bytes()[2..]);
    n.extend_from_slice(&mask.to_be_bytes());
    n
}

fn parse_nack(d: &[u8]) -> Option<(u16, u64, u16)> {
    if d.len() != NACK_LEN || d[0] != NACK_MARKER || d[1] != PARITY_VERSION {
        return None;
    }
    let epoch = u16::from_be_bytes([d[2], d[3]]);
    let base = be48(&d[4..10]);
    Some((epoch, base, u16::from_be_bytes([d[10], d[11]])))
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

/// A record that left, kept to be sent again.
#[derive(Debug)]
struct Sent {
    to: SocketAddr,
    epoch: u16,
    seq: u64,
    at: Duration,
    resends: u8,
    datagram: Bytes,
}

/// The sending half: watches what leaves, says when a parity should follow, and sends
/// again what a NACK names.
#[derive(Debug, Default)]
pub struct ShieldSender {
    groups: Vec<(SocketAddr, Group)>,
    sent: VecDeque<Sent>,
    resent: u64,
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
        while self
            .sent
            .front()
            .is_some_and(|s| self.sent.len() >= KEEP_SENT || s.at + KEEP_FOR <= now)
        {
            self.sent.pop_front();
        }
        self.sent.push_back(Sent {
            to,
            epoch,
            seq,
            at: now,
            resends: 0,
            datagram: Bytes::copy_from_slice(datagram),
        });
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

impl ShieldSender {
    /// A NACK arrived from `from`: the records it names that are still kept and were sent
    /// to `from`, to send again now. Anything else (a malformed NACK, records never sent
    /// there, asked for too often) is nothing: a peer cannot make this end send more than
    /// `MAX_RESENDS` times what it sent that peer in the last second.
    pub fn handle_nack(&mut self, now: Duration, from: SocketAddr, nack: &[u8]) -> Vec<Bytes> {
        let Some((epoch, base, mask)) = parse_nack(nack) else {
            return Vec::new();
        };
        let mut again = Vec::new();
        for i in (0..GROUP_WIDTH).filter(|i| mask & (1 << i) != 0) {
            let seq = base.saturating_add(i);
            let found = self.sent.iter_mut().rev().find(|s| {
                s.to == from && s.epoch == epoch && s.seq == seq && s.at + KEEP_FOR > now
            });
            if let Some(s) = found.filter(|s| s.resends < MAX_RESENDS) {
                s.resends += 1;
                self.resent += 1;
                again.push(s.datagram.clone());
            }
        }
        again
    }

    /// Records sent again so far.
    pub fn resent(&self) -> u64 {
        self.resent
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
        let base = be48(&d[4..10]);
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

mod receiver;
pub use receiver::{ShieldReceiver, ShieldStats};

#[cfg(test)]
mod tests;
