//! Video chunks on the `video` channel: the header, its checks, and the transport stamp the
//! sender writes into a chunk as it leaves.

use bytes::{BufMut, BytesMut};

use super::{
    invalid, kind, Reader, WireError, MAX_BAND_BYTES, MAX_CHUNKS, MAX_WIRE_BANDS, VIDEO_HEADER_LEN,
    WIRE_VERSION,
};
use crate::wire::Channel;

/// One piece of one band's encoded frame, borrowed from the received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoChunk<'a> {
    /// Transport sequence number over every video message the sender sent, so the
    /// receiver counts losses; stamped as the message leaves ([`stamp_video`]).
    pub send_seq: u32,
    /// When it left, microseconds on the sender's session clock, wrapping (about 71
    /// minutes): the receiver reads queueing delay from how this drifts against arrivals.
    pub sent_at_us: u32,
    /// Stream generation (changes when the stream restarts, e.g. on a resize).
    pub stream: u16,
    /// Band index.
    pub band: u8,
    /// The band frame is an IDR picture.
    pub keyframe: bool,
    /// Sent again because the viewer asked ([`super::ControlMessage::Nack`]); it keeps the
    /// first sending's sequence number, so the receiver does not count it as new arrival.
    pub resent: bool,
    /// This chunk's index, `< chunk_count`.
    pub chunk_index: u16,
    /// Chunks in the band frame.
    pub chunk_count: u16,
    /// Per-band sequence number: one more for every encoded frame of this band, so a gap
    /// shows a lost frame.
    pub band_seq: u32,
    /// The encoded frame this band belongs to.
    pub frame_id: u64,
    /// Capture time, microseconds on the sender's session clock.
    pub captured_at_us: u64,
    /// Length of the whole band frame.
    pub total_len: u32,
    /// Where this chunk's payload sits in the band frame.
    pub offset: u32,
    /// The bytes.
    pub payload: &'a [u8],
}

impl VideoChunk<'_> {
    /// Append this chunk, header and payload, to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(VIDEO_HEADER_LEN + self.payload.len());
        out.put_u8(WIRE_VERSION);
        out.put_u8(kind::VIDEO);
        out.put_u32_le(self.send_seq);
        out.put_u32_le(self.sent_at_us);
        out.put_u16_le(self.stream);
        out.put_u8(self.band);
        out.put_u8(u8::from(self.keyframe) | u8::from(self.resent) << 1);
        out.put_u16_le(self.chunk_index);
        out.put_u16_le(self.chunk_count);
        out.put_u32_le(self.band_seq);
        out.put_u64_le(self.frame_id);
        out.put_u64_le(self.captured_at_us);
        out.put_u32_le(self.total_len);
        out.put_u32_le(self.offset);
        out.put_slice(self.payload);
    }
}

/// Parse a message from the `video` channel.
pub fn decode_video(buf: &[u8]) -> Result<VideoChunk<'_>, WireError> {
    let mut r = Reader::open(buf, Channel::Video)?;
    if r.kind != kind::VIDEO {
        return Err(r.unknown());
    }
    let send_seq = r.u32()?;
    let sent_at_us = r.u32()?;
    let stream = r.u16()?;
    let band = r.u8()?;
    let flags = r.u8()?;
    let chunk_index = r.u16()?;
    let chunk_count = r.u16()?;
    let band_seq = r.u32()?;
    let frame_id = r.u64()?;
    let captured_at_us = r.u64()?;
    let total_len = r.u32()?;
    let offset = r.u32()?;
    let payload = r.rest();
    if usize::from(band) >= MAX_WIRE_BANDS {
        return Err(invalid(
            "band",
            format!("{band} (expected < {MAX_WIRE_BANDS})"),
        ));
    }
    if flags & !3 != 0 {
        return Err(invalid("flags", format!("{flags:#04x} has unknown bits")));
    }
    if chunk_count == 0 || chunk_count > MAX_CHUNKS || chunk_index >= chunk_count {
        return Err(invalid(
            "chunk",
            format!("{chunk_index} of {chunk_count} (expected index < count <= {MAX_CHUNKS})"),
        ));
    }
    if total_len == 0 || total_len > MAX_BAND_BYTES {
        return Err(invalid(
            "band length",
            format!("{total_len} (expected 1..={MAX_BAND_BYTES})"),
        ));
    }
    let end = u64::from(offset) + payload.len() as u64;
    if payload.is_empty() || end > u64::from(total_len) {
        return Err(invalid(
            "chunk range",
            format!(
                "{offset}+{} outside a {total_len}-byte band frame",
                payload.len()
            ),
        ));
    }
    Ok(VideoChunk {
        send_seq,
        sent_at_us,
        stream,
        band,
        keyframe: flags & 1 != 0,
        resent: flags & 2 != 0,
        chunk_index,
        chunk_count,
        band_seq,
        frame_id,
        captured_at_us,
        total_len,
        offset,
        payload,
    })
}

/// Where the transport stamp sits in an encoded chunk.
const STAMP: std::ops::Range<usize> = 2..10;

/// Write the transport sequence number and send time into an encoded chunk as it leaves.
/// A message too short to be a chunk is left alone.
pub fn stamp_video(msg: &mut [u8], send_seq: u32, sent_at_us: u32) {
    if msg.len() >= VIDEO_HEADER_LEN {
        msg[STAMP.start..STAMP.start + 4].copy_from_slice(&send_seq.to_le_bytes());
        msg[STAMP.start + 4..STAMP.end].copy_from_slice(&sent_at_us.to_le_bytes());
    }
}

/// Where the flags sit in an encoded chunk.
const FLAGS: usize = 13;

/// Mark an encoded chunk as sent again on the viewer's request. A message too short to be a
/// chunk is left alone.
pub fn mark_resent(msg: &mut [u8]) {
    if msg.len() >= VIDEO_HEADER_LEN {
        msg[FLAGS] |= 2;
    }
}

/// Whether a video message is a chunk sent again on request.
pub fn is_resent(msg: &[u8]) -> bool {
    msg.len() >= VIDEO_HEADER_LEN && msg[1] == kind::VIDEO && msg[FLAGS] & 2 != 0
}

/// The transport stamp of a video message (sequence number, send time), read without
/// decoding the rest; `None` for anything that is not a whole chunk header.
pub fn video_stamp(msg: &[u8]) -> Option<(u32, u32)> {
    if msg.len() < VIDEO_HEADER_LEN || msg[1] != kind::VIDEO {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
    Some((word(STAMP.start), word(STAMP.start + 4)))
}
