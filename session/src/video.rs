//! Video over the `video` channel: cutting encoded bands into chunks on the target and
//! putting them back together on the controller, with the recovery rules. Sans-IO.

use std::time::Duration;

use bytes::BytesMut;

use crate::wire::{VideoChunk, MAX_WIRE_BANDS, VIDEO_HEADER_LEN};
use deskwire_engine::EncodedFrame;

/// Cuts encoded frames into wire chunks and numbers each band's frames.
#[derive(Debug)]
pub struct Packetizer {
    stream: u16,
    max_payload: usize,
    band_seq: [u32; MAX_WIRE_BANDS],
}

impl Packetizer {
    /// Chunks of at most `max_message` bytes, header included.
    pub fn new(stream: u16, max_message: usize) -> Self {
        Self {
            stream,
            max_payload: max_message.saturating_sub(VIDEO_HEADER_LEN).max(1),
            band_seq: [0; MAX_WIRE_BANDS],
        }
    }

    /// Cut chunks of at most `max_message` bytes, header included, from the next frame on.
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_payload = max_message.saturating_sub(VIDEO_HEADER_LEN).max(1);
    }

    /// Every chunk of `frame`, band by band: `emit(band, message)` returns false when the
    /// message could not be queued, and the rest of that band is skipped. Returns the bitmask
    /// of bands that were not sent whole (their decoders will need a keyframe).
    ///
    /// A band's sequence number advances even when it is not sent, so the viewer sees the
    /// gap; the sender also asks its own encoder for a keyframe, whichever comes first.
    pub fn packetize(
        &mut self,
        frame: &EncodedFrame,
        captured_at_us: u64,
        mut emit: impl FnMut(u8, BytesMut) -> bool,
    ) -> u32 {
        let mut failed = 0u32;
        for band in &frame.bands {
            let b = usize::from(band.band.0).min(MAX_WIRE_BANDS - 1);
            self.band_seq[b] = self.band_seq[b].wrapping_add(1);
            let data = &band.data[..];
            if data.is_empty() {
                continue;
            }
            let count = data.len().div_ceil(self.max_payload);
            let Ok(count16) = u16::try_from(count) else {
                failed |= 1 << b;
                continue;
            };
            for (i, part) in data.chunks(self.max_payload).enumerate() {
                let chunk = VideoChunk {
                    // Stamped by the sender's pacer as the message leaves.
                    send_seq: 0,
                    sent_at_us: 0,
                    stream: self.stream,
                    band: band.band.0,
                    keyframe: band.keyframe,
                    chunk_index: i as u16,
                    chunk_count: count16,
                    band_seq: self.band_seq[b],
                    frame_id: frame.id.0,
                    captured_at_us,
                    total_len: data.len() as u32,
                    offset: (i * self.max_payload) as u32,
                    payload: part,
                };
                let mut msg = BytesMut::with_capacity(VIDEO_HEADER_LEN + part.len());
                chunk.encode(&mut msg);
                if !emit(band.band.0, msg) {
                    failed |= 1 << b;
                    break;
                }
            }
        }
        failed
    }
}

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
    /// Not for the current stream (or no stream yet).
    OtherStream,
    /// Older than what this band has already shown, or than the frame being assembled.
    Stale,
    /// Disagrees with earlier chunks of its frame, or too large for the band.
    Inconsistent,
    /// Completed a frame that cannot be decoded (a gap before it, waiting for a keyframe).
    Dropped,
}

const BITSET_WORDS: usize = (crate::wire::MAX_CHUNKS as usize).div_ceil(64);

#[derive(Debug)]
struct BandRx {
    max_bytes: u32,
    /// Sequence number of the last frame handed out for decoding.
    shown: Option<u32>,
    need_key: bool,
    assembling: Option<Assembly>,
    buf: Vec<u8>,
    received: [u64; BITSET_WORDS],
}

#[derive(Debug, Clone, Copy)]
struct Assembly {
    seq: u32,
    frame_id: u64,
    captured_at_us: u64,
    keyframe: bool,
    total_len: u32,
    count: u16,
    got: u16,
    filled: u32,
}

/// Reassembles band frames and decides which may be decoded.
///
/// Rules: a band starts with a keyframe; a frame whose sequence number does not follow the
/// last shown one is a gap, and the band waits for a keyframe, which
/// [`Reassembler::poll_keyframe_request`] asks for at most once per interval until it comes;
/// frames older than what was shown are dropped. Memory is bounded: one buffer per band, at
/// most twice the band's pixel count.
#[derive(Debug)]
pub struct Reassembler {
    stream: Option<u16>,
    bands: Vec<BandRx>,
    retry: Duration,
    last_request: Option<Duration>,
    requests: u32,
}

impl Reassembler {
    /// A reassembler that repeats an unanswered keyframe request after `retry`.
    pub fn new(retry: Duration) -> Self {
        Self {
            stream: None,
            bands: Vec::new(),
            retry,
            last_request: None,
            requests: 0,
        }
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
                assembling: None,
                buf: Vec::new(),
                received: [0; BITSET_WORDS],
            })
            .collect();
    }

    /// Keyframe requests sent so far.
    #[cfg(test)]
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Take one chunk. Returns the band frame it completed, if it completed a decodable one.
    pub fn handle_chunk(&mut self, c: &VideoChunk<'_>) -> Result<CompleteBand<'_>, ChunkFate> {
        if self.stream != Some(c.stream) {
            return Err(ChunkFate::OtherStream);
        }
        let band = self
            .bands
            .get_mut(usize::from(c.band))
            .ok_or(ChunkFate::Inconsistent)?;
        if c.total_len > band.max_bytes {
            return Err(ChunkFate::Inconsistent);
        }
        if band.shown.is_some_and(|s| seq_le(c.band_seq, s)) {
            return Err(ChunkFate::Stale);
        }
        match band.assembling {
            Some(a) if a.seq == c.band_seq => {
                if a.total_len != c.total_len
                    || a.count != c.chunk_count
                    || a.keyframe != c.keyframe
                {
                    return Err(ChunkFate::Inconsistent);
                }
            }
            Some(a) if seq_le(c.band_seq, a.seq) => return Err(ChunkFate::Stale),
            _ => {
                // A newer frame starts: whatever was being assembled is abandoned (its chunks
                // were lost or are late, and it is older than this one anyway).
                band.assembling = Some(Assembly {
                    seq: c.band_seq,
                    frame_id: c.frame_id,
                    captured_at_us: c.captured_at_us,
                    keyframe: c.keyframe,
                    total_len: c.total_len,
                    count: c.chunk_count,
                    got: 0,
                    filled: 0,
                });
                band.buf.clear();
                band.buf.resize(c.total_len as usize, 0);
                band.received = [0; BITSET_WORDS];
            }
        }
        let (word, bit) = (usize::from(c.chunk_index) / 64, c.chunk_index % 64);
        let mask = 1u64 << bit;
        let Some(a) = band.assembling.as_mut() else {
            return Err(ChunkFate::Inconsistent);
        };
        if band.received[word] & mask == 0 {
            band.received[word] |= mask;
            a.got += 1;
            a.filled = a.filled.saturating_add(c.payload.len() as u32);
            let start = c.offset as usize;
            band.buf[start..start + c.payload.len()].copy_from_slice(c.payload);
        }
        if a.got < a.count {
            return Err(ChunkFate::Pending);
        }
        let a = *a;
        band.assembling = None;
        if a.filled != a.total_len {
            // Chunks that overlap or leave holes: not a frame this sender could have cut.
            band.need_key = true;
            return Err(ChunkFate::Inconsistent);
        }
        let follows = band.shown.is_some_and(|s| s.wrapping_add(1) == a.seq);
        if a.keyframe {
            band.need_key = false;
        } else if band.need_key || !follows {
            band.need_key = true;
            return Err(ChunkFate::Dropped);
        }
        band.shown = Some(a.seq);
        Ok(CompleteBand {
            band: c.band,
            frame_id: a.frame_id,
            captured_at_us: a.captured_at_us,
            data: &band.buf[..a.total_len as usize],
        })
    }

    /// A band frame could not be decoded: wait for that band's keyframe.
    pub fn mark_broken(&mut self, band: u8) {
        if let Some(b) = self.bands.get_mut(usize::from(band)) {
            b.need_key = true;
        }
    }

    /// Bands waiting for a keyframe, if it is time to ask (again). `now` is any monotonic
    /// clock the caller keeps.
    pub fn poll_keyframe_request(&mut self, now: Duration) -> Option<(u16, u32)> {
        let stream = self.stream?;
        let mask = self
            .bands
            .iter()
            .enumerate()
            .filter(|(_, b)| b.need_key)
            .fold(0u32, |m, (i, _)| m | 1 << i);
        if mask == 0 {
            return None;
        }
        if self.last_request.is_some_and(|t| now < t + self.retry) {
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

#[cfg(test)]
pub(crate) mod tests;
