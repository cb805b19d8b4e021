//! The viewer's side of the `video` channel: band frames put back together from chunks and
//! handed to the decoder in an order it can use. Sans-IO: every call takes `now`.
//!
//! The channel is unordered and partially reliable: SCTP sends a lost chunk again (about one
//! round trip later) until the chunk's lifetime runs out. By then chunks of the band's next
//! frames have usually arrived. Dropping the older frame at that moment would throw away the
//! retransmission and break the band's reference chain, so every loss would cost a keyframe
//! (large, and itself exposed to loss). Instead each band keeps a few frames waiting behind a
//! missing one and gives up only when the missing chunk has not come within `gap_wait`.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;

use super::early::EarlyChunks;
use crate::wire::{decode_video, VideoChunk, WireError};

/// Frames a band holds behind a missing one before it gives up on it: at 60 fps, 270 ms,
/// room for the missing chunk to be asked for twice on a 50 ms path (`nack.rs`). With 8,
/// a repair on the second ask came after the band had given up.
const MAX_WAITING: usize = 16;
/// How long a band waits for a missing chunk before the round trip is known.
const DEFAULT_GAP_WAIT: Duration = Duration::from_millis(400);

/// A band frame put back together, ready to decode.
#[derive(Debug)]
pub struct CompleteBand<'a> {
    /// The band.
    pub band: u8,
    /// The frame it belongs to.
    pub frame_id: u64,
    /// Capture time on the target's session clock, microseconds.
    pub captured_at_us: u64,
    /// The band's H.264 access unit.
    pub data: &'a [u8],
}

/// What happened to a chunk, for statistics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFate {
    /// Stored; the band frame is not complete yet.
    Pending,
    /// Completed its band frame; [`Reassembler::poll_band`] hands it out when its turn comes.
    Complete,
    /// Not for the current stream (or no stream yet).
    OtherStream,
    /// Older than what this band has already shown.
    Stale,
    /// Disagrees with earlier chunks of its frame, or too large for the band.
    Inconsistent,
    /// Part of a frame that cannot be decoded (the band waits for a keyframe).
    Dropped,
}

#[derive(Debug)]
struct Assembly {
    seq: u32,
    frame_id: u64,
    captured_at_us: u64,
    keyframe: bool,
    total_len: u32,
    count: u16,
    got: u16,
    filled: u32,
    store: Storage,
}

/// An assembly's buffers, reused from frame to frame: the band frame's bytes and which of
/// its chunks arrived (one bit each).
#[derive(Debug, Default)]
struct Storage {
    buf: Vec<u8>,
    received: Vec<u64>,
}

impl Assembly {
    fn whole(&self) -> bool {
        self.got == self.count
    }

    /// The chunks here are the first `got` ones: nothing sent before them is missing.
    fn contiguous(&self) -> bool {
        let got = usize::from(self.got);
        let (full, rest) = (got / 64, got % 64);
        self.store.received[..full].iter().all(|w| *w == u64::MAX)
            && (rest == 0 || self.store.received[full] == (1u64 << rest) - 1)
            && self.store.received[full + usize::from(rest > 0)..]
                .iter()
                .all(|w| *w == 0)
    }
}

#[derive(Debug)]
struct BandRx {
    max_bytes: u32,
    /// Sequence number of the last frame handed out for decoding.
    shown: Option<u32>,
    need_key: bool,
    /// Frames being put together, or whole and waiting for an earlier one; by sequence.
    waiting: VecDeque<Assembly>,
    /// Since when the frame the decoder needs next has made no progress.
    stalled_since: Option<Duration>,
    /// Chunks of incomplete keyframes here at the last keyframe request check.
    /// When the arrival of its keyframe was last judged, and how many of its chunks were
    /// here then.
    key_check: Option<(Duration, u32)>,
    /// Since when its keyframe has had a hole (a chunk missing that later ones overtook).
    key_hole: Option<Duration>,
}

impl BandRx {
    /// Chunks of the keyframes being put together. A hole does not stop the count: the
    /// viewer asks for the missing chunk again (`nack.rs`), so a keyframe whose chunks keep
    /// coming is still on its way. Asking for a new one at the first hole (as when a lost
    /// chunk was lost for good) queued a second keyframe of the whole screen behind the
    /// first on `dsl`, a second without a picture after the compact restart.
    fn key_chunks(&self) -> u32 {
        self.waiting
            .iter()
            .filter(|a| a.keyframe)
            .map(|a| u32::from(a.got))
            .sum()
    }

    fn queued_bytes(&self) -> u64 {
        self.waiting.iter().map(|a| u64::from(a.total_len)).sum()
    }

    /// The frame the decoder needs is not coming: wait for a keyframe, keep only keyframes.
    fn give_up(&mut self, spare: &mut Vec<Storage>) {
        self.need_key = true;
        self.stalled_since = None;
        self.key_check = None;
        self.key_hole = None;
        let mut kept = VecDeque::new();
        for a in self.waiting.drain(..) {
            if a.keyframe {
                kept.push_back(a);
            } else {
                spare.push(a.store);
            }
        }
        self.waiting = kept;
    }

    /// Drop everything before index `i`.
    fn drop_before(&mut self, i: usize, spare: &mut Vec<Storage>) {
        for a in self.waiting.drain(..i) {
            spare.push(a.store);
        }
    }

    /// The next frame the decoder can take, if it is here; gives up on a missing one that
    /// has made no progress for `gap_wait`.
    fn take_ready(
        &mut self,
        now: Duration,
        gap_wait: Duration,
        spare: &mut Vec<Storage>,
    ) -> Option<Assembly> {
        // A whole keyframe makes everything before it unnecessary.
        if let Some(i) = self.waiting.iter().rposition(|a| a.keyframe && a.whole()) {
            self.drop_before(i, spare);
            return self.release();
        }
        if self.need_key {
            return None;
        }
        let next = self.shown?.wrapping_add(1);
        let front = self.waiting.front()?;
        if front.seq == next && front.whole() {
            return self.release();
        }
        let since = *self.stalled_since.get_or_insert(now);
        if now >= since + gap_wait {
            tracing::debug!(
                next,
                "a band frame did not arrive in time; waiting for a keyframe"
            );
            self.give_up(spare);
        }
        None
    }

    fn release(&mut self) -> Option<Assembly> {
        let a = self.waiting.pop_front()?;
        self.shown = Some(a.seq);
        self.need_key = false;
        self.key_check = None;
        self.key_hole = None;
        self.stalled_since = None;
        Some(a)
    }
}

/// Reassembles band frames and decides which may be decoded, in order.
///
/// Rules: a band starts with a keyframe; frames are handed out in sequence, a later one
/// waiting for a missing earlier one up to the gap wait; a band that gave up waits for a
/// keyframe, which [`Reassembler::poll_keyframe_request`] asks for at most once per interval
/// until it comes; frames older than what was shown are dropped. Memory is bounded: at most
/// [`MAX_WAITING`] frames and twice the band's largest plausible frame wait per band.
#[derive(Debug)]
pub struct Reassembler {
    stream: Option<u16>,
    bands: Vec<BandRx>,
    retry: Duration,
    gap_wait: Duration,
    rtt: Option<Duration>,
    last_request: Option<Duration>,
    requests: u32,
    /// Messages of a stream not announced yet, taken when it starts.
    early: EarlyChunks,
    /// The buffers of the last frame handed out (borrowed by [`CompleteBand`]).
    out: Storage,
    spare: Vec<Storage>,
}

impl Reassembler {
    /// A reassembler that repeats an unanswered keyframe request after `retry`.
    pub fn new(retry: Duration) -> Self {
        Self {
            stream: None,
            bands: Vec::new(),
            retry,
            gap_wait: DEFAULT_GAP_WAIT,
            rtt: None,
            last_request: None,
            requests: 0,
            early: EarlyChunks::default(),
            out: Storage::default(),
            spare: Vec::new(),
        }
    }

    /// Fit the wait for a missing chunk to the round trip: a retransmission takes about one
    /// RTT after the loss is noticed; past SCTP's 1 s minimum RTO the chunk has expired.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
        self.gap_wait = (rtt * 2 + Duration::from_millis(100))
            .clamp(Duration::from_millis(150), Duration::from_secs(1));
    }

    /// How long a band waits for a missing chunk.
    pub fn gap_wait(&self) -> Duration {
        self.gap_wait
    }

    /// A stream starts at `now`: `band_pixels[i]` is band i's width x height. Its first
    /// keyframes are already on their way, so no keyframe is asked for before one retry
    /// interval has passed.
    pub fn handle_stream_start(&mut self, stream: u16, band_pixels: &[u32], now: Duration) {
        self.stream = Some(stream);
        self.last_request = Some(now);
        self.bands = band_pixels
            .iter()
            .map(|&px| BandRx {
                // An access unit larger than two bytes per pixel is not plausible H.264.
                max_bytes: px.saturating_mul(2).max(64 * 1024),
                shown: None,
                need_key: true,
                waiting: VecDeque::new(),
                stalled_since: None,
                key_check: None,
                key_hole: None,
            })
            .collect();
        for data in self.early.take(stream) {
            if let Ok(chunk) = decode_video(&data) {
                self.handle_chunk(&chunk);
            }
        }
    }

    /// Take one message of the video channel (see [`Self::handle_chunk`]). A chunk of a
    /// stream not announced yet is kept (bounded) and taken when that stream starts: a
    /// restarted stream's first keyframe can overtake its announcement, which travels on
    /// another channel.
    pub fn handle_message(&mut self, data: BytesMut) -> Result<ChunkFate, WireError> {
        let chunk = decode_video(&data)?;
        let fate = self.handle_chunk(&chunk);
        if fate == ChunkFate::OtherStream {
            let stream = chunk.stream;
            self.early.keep(self.stream, stream, data);
        }
        Ok(fate)
    }

    /// The stream being reassembled, once one started.
    pub fn stream(&self) -> Option<u16> {
        self.stream
    }

    /// Keyframe requests sent so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Take one chunk. A band frame it completes comes out of [`Self::poll_band`].
    pub fn handle_chunk(&mut self, c: &VideoChunk<'_>) -> ChunkFate {
        if self.stream != Some(c.stream) {
            return ChunkFate::OtherStream;
        }
        let Some(band) = self.bands.get_mut(usize::from(c.band)) else {
            return ChunkFate::Inconsistent;
        };
        if c.total_len > band.max_bytes {
            return ChunkFate::Inconsistent;
        }
        if band.shown.is_some_and(|s| seq_le(c.band_seq, s)) {
            return ChunkFate::Stale;
        }
        let i = match band.waiting.iter().position(|a| a.seq == c.band_seq) {
            Some(i) => {
                let a = &band.waiting[i];
                if a.total_len != c.total_len
                    || a.count != c.chunk_count
                    || a.keyframe != c.keyframe
                {
                    return ChunkFate::Inconsistent;
                }
                i
            }
            None => {
                if band.need_key && !c.keyframe {
                    return ChunkFate::Dropped;
                }
                let budget = 2 * u64::from(band.max_bytes);
                let full = |b: &BandRx| {
                    b.waiting.len() >= MAX_WAITING
                        || b.queued_bytes() + u64::from(c.total_len) > budget
                };
                if full(band) {
                    // Too much waits behind a missing frame: it is not coming in time.
                    band.give_up(&mut self.spare);
                    if !c.keyframe {
                        return ChunkFate::Dropped;
                    }
                    // Keyframes that never completed make room for this one, oldest first.
                    while full(band) {
                        match band.waiting.pop_front() {
                            Some(a) => self.spare.push(a.store),
                            None => break,
                        }
                    }
                }
                let at = band.waiting.partition_point(|a| seq_le(a.seq, c.band_seq));
                let mut store = self.spare.pop().unwrap_or_default();
                store.buf.clear();
                store.buf.resize(c.total_len as usize, 0);
                store.received.clear();
                store
                    .received
                    .resize(usize::from(c.chunk_count).div_ceil(64), 0);
                band.waiting.insert(
                    at,
                    Assembly {
                        seq: c.band_seq,
                        frame_id: c.frame_id,
                        captured_at_us: c.captured_at_us,
                        keyframe: c.keyframe,
                        total_len: c.total_len,
                        count: c.chunk_count,
                        got: 0,
                        filled: 0,
                        store,
                    },
                );
                at
            }
        };
        if i == 0 {
            // The frame the decoder waits for made progress.
            band.stalled_since = None;
        }
        let a = &mut band.waiting[i];
        let (word, bit) = (usize::from(c.chunk_index) / 64, c.chunk_index % 64);
        let mask = 1u64 << bit;
        if a.store.received[word] & mask == 0 {
            a.store.received[word] |= mask;
            a.got += 1;
            a.filled = a.filled.saturating_add(c.payload.len() as u32);
            let start = c.offset as usize;
            a.store.buf[start..start + c.payload.len()].copy_from_slice(c.payload);
        }
        if !a.whole() {
            return ChunkFate::Pending;
        }
        if a.filled != a.total_len {
            // Chunks that overlap or leave holes: not a frame this sender could have cut.
            if let Some(a) = band.waiting.remove(i) {
                self.spare.push(a.store);
            }
            band.give_up(&mut self.spare);
            return ChunkFate::Inconsistent;
        }
        ChunkFate::Complete
    }

    /// The next band frame the decoder can take, in each band's order; call until `None`
    /// after every chunk and now and then while none arrive (a band gives up on a missing
    /// chunk here).
    pub fn poll_band(&mut self, now: Duration) -> Option<CompleteBand<'_>> {
        for (b, band) in self.bands.iter_mut().enumerate() {
            if let Some(a) = band.take_ready(now, self.gap_wait, &mut self.spare) {
                let mut store = a.store;
                store.buf.truncate(a.total_len as usize);
                self.spare.push(std::mem::replace(&mut self.out, store));
                self.spare.truncate(2 * MAX_WAITING);
                return Some(CompleteBand {
                    band: b as u8,
                    frame_id: a.frame_id,
                    captured_at_us: a.captured_at_us,
                    data: &self.out.buf,
                });
            }
        }
        None
    }

    /// When a band waiting for a missing chunk gives up, if one waits: poll again then.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.bands
            .iter()
            .filter_map(|b| b.stalled_since)
            .min()
            .map(|t| t + self.gap_wait)
    }

    /// A band frame could not be decoded: wait for that band's keyframe.
    pub fn mark_broken(&mut self, band: u8) {
        if let Some(b) = self.bands.get_mut(usize::from(band)) {
            b.give_up(&mut self.spare);
        }
    }

    /// Bands waiting for a keyframe, if it is time to ask (again): at most once per retry
    /// interval, and never sooner than a round trip and 50 ms. `now` is any monotonic clock
    /// the caller keeps.
    pub fn poll_keyframe_request(&mut self, now: Duration) -> Option<(u16, u32)> {
        let stream = self.stream?;
        // A keyframe cannot come back sooner than a round trip: on a long path a shorter
        // retry only asks again for what is already on its way.
        let retry = self.rtt.map_or(self.retry, |rtt| {
            self.retry.max(rtt + Duration::from_millis(50))
        });
        if self.last_request.is_some_and(|t| now < t + retry) {
            return None;
        }
        // A band whose keyframe is arriving is not asked again: on a slow link a keyframe
        // takes longer than the retry interval to come whole, and asking again queued a
        // second one behind it, then a third (measured at 1.5 Mbit/s: a keyframe of the
        // whole screen asked for three times a second, one picture a second for 7 s).
        let mut mask = 0u32;
        for (i, b) in self.bands.iter_mut().enumerate() {
            if !b.need_key {
                continue;
            }
            // Judged over a whole retry interval: between two polls a few milliseconds
            // apart no chunk may have come even while the keyframe flows (measured on `dsl`:
            // a keyframe asked for again 0.6 s into a compact restart that was arriving).
            // A hole is asked for again (`nack.rs`) and usually filled within the gap wait;
            // one still open after it will not be.
            let holed = b.waiting.iter().any(|a| a.keyframe && !a.contiguous());
            b.key_hole = if holed {
                Some(b.key_hole.unwrap_or(now))
            } else {
                None
            };
            let hopeless = b.key_hole.is_some_and(|t| now >= t + self.gap_wait);
            let progress = b.key_chunks();
            match b.key_check {
                _ if hopeless => {
                    b.key_check = None;
                    b.key_hole = None;
                    mask |= 1 << i;
                }
                Some((at, _)) if now < at + retry => {}
                Some((_, seen)) if progress != seen => b.key_check = Some((now, progress)),
                None if progress > 0 => b.key_check = Some((now, progress)),
                _ => {
                    b.key_check = None;
                    mask |= 1 << i;
                }
            }
        }
        if mask == 0 {
            return None;
        }
        self.last_request = Some(now);
        self.requests += 1;
        Some((stream, mask))
    }
}

/// `a <= b` in wrapping sequence space.
fn seq_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < (1 << 31)
}
