//! The target's video sender, sans-IO: encoded frames are cut into chunks, queued, and let
//! out at the pacing rate the congestion controller sets, each stamped with its transport
//! sequence number and send time as it leaves.
//!
//! The queue is bounded in *time*: a new frame is taken only while what waits would drain
//! within the budget (about a round trip plus a frame), so the encoder is held back (and
//! the capture folds its changes into a later frame) instead of video piling up. A chunk
//! that waited past the stale limit is dropped with the rest of its band, and that band
//! sends nothing but a keyframe from then on: a picture nobody can decode is not worth the
//! bits. Dropped bands are reported ([`VideoSender::poll_lost`]) so the session core can
//! ask the encoder for a keyframe within its budget.
//!
//! What left is kept for about a second ([`HISTORY_FOR`]), so a message the viewer reports
//! missing ([`VideoSender::handle_nack`]) goes out again, ahead of new video and inside the
//! pacing rate, instead of the band waiting for a keyframe.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use deskwire_engine::EncodedFrame;

use crate::video::Packetizer;
use crate::wire::{mark_resent, stamp_video};

/// The smallest video message: header and payload in one ordinary packet.
const MIN_CHUNK: usize = 1100;

/// How long a sent message is kept to be sent again: the video channel's message lifetime,
/// after which the viewer has given up on it.
pub const HISTORY_FOR: Duration = Duration::from_secs(1);
/// At most this much is kept (a second at 32 Mbit/s).
const HISTORY_BYTES: usize = 4 * 1024 * 1024;
/// A message is sent again at most this often, ...
const MAX_RESENDS: u8 = 3;
/// ... and not twice within this (a repeated request that crossed the first answer).
const MIN_RESEND_GAP: Duration = Duration::from_millis(10);
/// At most this much waits to be sent again: a viewer asking for everything it ever saw
/// gets a bounded share of the link.
const RESEND_QUEUE_BYTES: usize = 512 * 1024;

/// A message that left, kept in case the viewer asks for it again.
#[derive(Debug)]
struct Sent {
    seq: u32,
    at: Duration,
    band: u8,
    resends: u8,
    last: Option<Duration>,
    msg: Bytes,
}

/// The settings of [`VideoSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacerConfig {
    /// Largest message on the video channel, header included.
    pub max_message: usize,
    /// Pacing rate to start with, bits per second.
    pub start_bps: u64,
    /// A chunk that waited this long is stale and dropped with its band.
    pub stale_after: Duration,
}

#[derive(Debug)]
struct Queued {
    band: u8,
    enqueued: Duration,
    /// A piece of a keyframe.
    key: bool,
    /// The last piece of a keyframe.
    ends_key: bool,
    msg: BytesMut,
}

/// What the sender did, in totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderTotals {
    /// Frames taken from the encoder.
    pub frames: u64,
    /// Video bytes sent.
    pub bytes: u64,
    /// Band frames dropped before or while sending (stale, refused, or waiting for a
    /// keyframe).
    pub bands_dropped: u64,
    /// Messages sent again on the viewer's request.
    pub resent: u64,
}

/// Paces video out. See the module documentation.
#[derive(Debug)]
pub struct VideoSender {
    config: PacerConfig,
    packetizer: Packetizer,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    rate_bps: u64,
    budget: Duration,
    /// Bytes the pacer may still send now; negative after a message larger than the credit.
    credit: f64,
    refilled: Option<Duration>,
    seq: u32,
    /// Bands that send only keyframes until one comes.
    broken: u32,
    /// Bands dropped since the last [`VideoSender::poll_lost`].
    lost: u32,
    /// Bands whose keyframe left since the last [`VideoSender::poll_keys_sent`].
    keys_sent: u32,
    totals: SenderTotals,
    /// What left lately, oldest first, in sequence order without gaps.
    history: VecDeque<Sent>,
    history_bytes: usize,
    /// Messages to send again, ahead of the queue: (band, message).
    resend: VecDeque<(u8, BytesMut)>,
    resend_bytes: usize,
}

impl VideoSender {
    /// A sender for `stream`.
    pub fn new(stream: u16, config: PacerConfig) -> Self {
        Self {
            packetizer: Packetizer::new(stream, config.max_message),
            rate_bps: config.start_bps.max(1),
            config,
            queue: VecDeque::new(),
            queued_bytes: 0,
            budget: Duration::from_millis(100),
            credit: 0.0,
            refilled: None,
            seq: 0,
            broken: 0,
            lost: 0,
            keys_sent: 0,
            totals: SenderTotals::default(),
            history: VecDeque::new(),
            history_bytes: 0,
            resend: VecDeque::new(),
            resend_bytes: 0,
        }
    }

    /// Let video out at `bps` from now on. Chunks shrink with the rate (about 10 ms of it,
    /// down to one packet's worth), so a slow link still carries several per feedback
    /// interval: losses and rates stay measurable, and a lost packet costs little.
    pub fn set_rate(&mut self, now: Duration, bps: u64) {
        self.refill(now);
        self.rate_bps = bps.max(1);
        let chunk = (bps / 8 / 100) as usize;
        self.packetizer
            .set_max_message(chunk.clamp(MIN_CHUNK, self.config.max_message.max(MIN_CHUNK)));
    }

    /// The stream restarts as `stream`: what waits of the old one is dropped (the viewer
    /// discards it), and its bands' state is forgotten. Sequence numbers go on, so the
    /// viewer's loss count stays right.
    pub fn restart(&mut self, stream: u16) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.broken = 0;
        self.lost = 0;
        self.keys_sent = 0;
        self.history.clear();
        self.history_bytes = 0;
        self.resend.clear();
        self.resend_bytes = 0;
        self.packetizer.restart(stream);
    }

    /// How long the queue may take to drain before no new frame is taken.
    pub fn set_budget(&mut self, budget: Duration) {
        self.budget = budget;
    }

    /// How long what waits would take to drain at the pacing rate.
    pub fn backlog(&self) -> Duration {
        let bytes = (self.queued_bytes + self.resend_bytes) as u64;
        Duration::from_micros(bytes * 8 * 1_000_000 / self.rate_bps)
    }

    /// Whether a new frame should be taken from the encoder now.
    pub fn wants_frame(&self) -> bool {
        self.backlog() <= self.budget
    }

    /// Totals so far.
    pub fn totals(&self) -> SenderTotals {
        self.totals
    }

    /// Queue `frame`, captured at `captured_at_us` on the session clock. Bands waiting for
    /// a keyframe skip everything else.
    pub fn handle_frame(&mut self, now: Duration, frame: &EncodedFrame, captured_at_us: u64) {
        self.totals.frames += 1;
        for band in &frame.bands {
            if band.keyframe {
                self.broken &= !(1 << band.band.0);
            }
        }
        let broken = self.broken;
        let key_bands = frame
            .bands
            .iter()
            .filter(|b| b.keyframe)
            .fold(0u32, |m, b| m | 1 << b.band.0);
        let queue = &mut self.queue;
        let queued_bytes = &mut self.queued_bytes;
        let skipped = self
            .packetizer
            .packetize(frame, captured_at_us, |band, msg| {
                if broken & (1 << band) != 0 {
                    return false;
                }
                *queued_bytes += msg.len();
                queue.push_back(Queued {
                    band,
                    enqueued: now,
                    key: key_bands & (1 << band) != 0,
                    ends_key: false,
                    msg,
                });
                true
            });
        self.totals.bands_dropped += u64::from(skipped.count_ones());
        // A keyframe band queued whole ends with its last chunk, the newest of its band.
        for band in frame.bands.iter().filter(|b| b.keyframe) {
            let bit = 1u32 << band.band.0;
            if skipped & bit == 0 {
                if let Some(q) = self.queue.iter_mut().rev().find(|q| q.band == band.band.0) {
                    q.ends_key = true;
                }
            }
        }
    }

    /// The next message to send at `now`, stamped, if the pacing allows one.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<(u8, BytesMut)> {
        self.refill(now);
        self.drop_stale(now);
        if self.credit < 0.0 {
            return None;
        }
        if let Some((band, msg)) = self.resend.pop_front() {
            // It keeps its sequence number and stamp: the viewer knows it by them.
            self.resend_bytes -= msg.len();
            self.credit -= msg.len() as f64;
            self.totals.bytes += msg.len() as u64;
            self.totals.resent += 1;
            return Some((band, msg));
        }
        let mut q = self.queue.pop_front()?;
        self.queued_bytes -= q.msg.len();
        self.credit -= q.msg.len() as f64;
        self.seq = self.seq.wrapping_add(1);
        stamp_video(&mut q.msg, self.seq, now.as_micros() as u64 as u32);
        if q.ends_key {
            self.keys_sent |= 1 << q.band;
        }
        self.totals.bytes += q.msg.len() as u64;
        self.keep(now, self.seq, q.band, &q.msg);
        Some((q.band, q.msg))
    }

    /// Keep a copy of what just left, and forget what is too old to be asked for.
    fn keep(&mut self, now: Duration, seq: u32, band: u8, msg: &[u8]) {
        self.history_bytes += msg.len();
        self.history.push_back(Sent {
            seq,
            at: now,
            band,
            resends: 0,
            last: None,
            msg: Bytes::copy_from_slice(msg),
        });
        while let Some(front) = self.history.front() {
            if now < front.at + HISTORY_FOR && self.history_bytes <= HISTORY_BYTES {
                break;
            }
            self.history_bytes -= front.msg.len();
            self.history.pop_front();
        }
    }

    /// The viewer reports these messages missing: queue again, ahead of new video, those
    /// still kept whose band is not waiting for a keyframe, each at most [`MAX_RESENDS`]
    /// times. Returns how many were queued. Anything else a viewer names is ignored.
    pub fn handle_nack(&mut self, now: Duration, seqs: &[u32]) -> usize {
        let mut queued = 0;
        let Some(first) = self.history.front().map(|s| s.seq) else {
            return 0;
        };
        for &seq in seqs {
            let Some(sent) = self.history.get_mut(seq.wrapping_sub(first) as usize) else {
                continue;
            };
            let fresh = now < sent.at + HISTORY_FOR;
            let spaced = sent.last.is_none_or(|t| now >= t + MIN_RESEND_GAP);
            let wanted = self.broken & (1 << sent.band) == 0;
            if sent.seq != seq || !fresh || !spaced || !wanted || sent.resends >= MAX_RESENDS {
                continue;
            }
            if self.resend_bytes + sent.msg.len() > RESEND_QUEUE_BYTES {
                break;
            }
            sent.resends += 1;
            sent.last = Some(now);
            let mut msg = BytesMut::from(&sent.msg[..]);
            mark_resent(&mut msg);
            self.resend_bytes += msg.len();
            self.resend.push_back((sent.band, msg));
            queued += 1;
        }
        queued
    }

    /// The viewer asked for keyframes of `bands` (bit i = band i): it discards anything
    /// else of theirs until they come, so their waiting delta chunks are dropped and new
    /// ones skipped. On a slow link those would hold the queue over budget, no frame would
    /// be taken, and the keyframe would wait behind the frames already encoded (measured:
    /// seconds without a picture after a step down to 2 Mbit/s). A band with a keyframe
    /// already queued keeps it and what follows it.
    pub fn handle_keyframe_request(&mut self, bands: u32) {
        let keyed = self
            .queue
            .iter()
            .filter(|q| q.key)
            .fold(0u32, |m, q| m | 1 << q.band);
        let bands = bands & !keyed;
        let mut freed = 0;
        self.queue.retain(|q| {
            let keep = q.key || bands & (1 << q.band) == 0;
            if !keep {
                freed += q.msg.len();
            }
            keep
        });
        self.queued_bytes -= freed;
        self.broken |= bands;
        self.drop_resends(bands);
    }

    /// Forget the resends of `bands` (bit i = band i): the viewer waits for their keyframes.
    fn drop_resends(&mut self, bands: u32) {
        let mut freed = 0;
        self.resend.retain(|(band, msg)| {
            let keep = bands & (1 << band) == 0;
            if !keep {
                freed += msg.len();
            }
            keep
        });
        self.resend_bytes -= freed;
    }

    /// The channel refused the message [`VideoSender::poll_transmit`] just gave for `band`:
    /// the rest of that band is dropped and it waits for a keyframe.
    pub fn handle_refused(&mut self, band: u8) {
        self.drop_band(band);
    }

    /// Bands that lost video since the last call (bit i = band i): they need a keyframe.
    pub fn poll_lost(&mut self) -> u32 {
        std::mem::take(&mut self.lost)
    }

    /// Bands whose keyframe left since the last call (bit i = band i).
    pub fn poll_keys_sent(&mut self) -> u32 {
        std::mem::take(&mut self.keys_sent)
    }

    /// When [`VideoSender::poll_transmit`] may give the next message; `None` while the
    /// queue is empty.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let stale = match self.queue.front() {
            Some(front) => front.enqueued + self.config.stale_after,
            None if self.resend.is_empty() => return None,
            None => Duration::MAX,
        };
        let refilled = self.refilled.unwrap_or_default();
        let wait = if self.credit >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_micros((-self.credit * 8.0 * 1e6 / self.rate_bps as f64) as u64 + 1)
        };
        Some((refilled + wait).min(stale))
    }

    fn refill(&mut self, now: Duration) {
        let last = *self.refilled.get_or_insert(now);
        let elapsed = now.saturating_sub(last).as_secs_f64();
        // Credit saved while idle is capped at a few milliseconds of rate (and at least two
        // messages): enough to send a chunk at once, too little to burst a frame.
        let cap = (self.rate_bps as f64 / 8.0 * 0.005).max(2.0 * self.config.max_message as f64);
        self.credit = (self.credit + elapsed * self.rate_bps as f64 / 8.0).min(cap);
        self.refilled = Some(now.max(last));
    }

    fn drop_stale(&mut self, now: Duration) {
        while let Some(front) = self.queue.front() {
            // A keyframe is never stale: dropping one that leaves slower than the stale
            // limit only queues another as large, which leaves as slowly (a 1-band 1080p
            // keyframe of ~120 KB takes 2 s at 0.5 Mbit/s, and a step to 2 Mbit/s sat there
            // in a loop of keyframes for 6 s). What waits behind it waits for it.
            if front.key || now < front.enqueued + self.config.stale_after {
                return;
            }
            let band = front.band;
            self.drop_band(band);
        }
    }

    fn drop_band(&mut self, band: u8) {
        let before = self.queue.len();
        let mut freed = 0;
        self.queue.retain(|q| {
            let keep = q.band != band;
            if !keep {
                freed += q.msg.len();
            }
            keep
        });
        self.queued_bytes -= freed;
        if before != self.queue.len() || self.broken & (1 << band) == 0 {
            self.totals.bands_dropped += 1;
        }
        self.broken |= 1 << band;
        self.lost |= 1 << band;
        self.drop_resends(1 << band);
    }
}

#[cfg(test)]
mod tests;
