//! Video over the `video` channel: cutting encoded bands into chunks on the target and
//! putting them back together on the viewer, with the recovery rules. Sans-IO.

use bytes::BytesMut;

use crate::wire::{VideoChunk, MAX_WIRE_BANDS, VIDEO_HEADER_LEN};

mod early;
mod reassembler;

use deskwire_engine::EncodedFrame;
pub use reassembler::{ChunkFate, CompleteBand, Reassembler};

/// The bit mask naming every one of `bands` bands (bit i = band i), as keyframe requests
/// and refreshes name them; all 32 bits from 32 bands on.
pub fn all_bands(bands: usize) -> u32 {
    if bands >= 32 {
        u32::MAX
    } else {
        (1u32 << bands) - 1
    }
}

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

    /// Number chunks as stream `stream` from the next frame on, each band from the start.
    pub fn restart(&mut self, stream: u16) {
        self.stream = stream;
        self.band_seq = [0; MAX_WIRE_BANDS];
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
                    resent: false,
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

#[cfg(test)]
pub(crate) mod tests;
