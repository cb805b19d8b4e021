//! Selective retransmission requests, viewer to target on the `control` channel: the video
//! messages (by transport sequence number) that did not arrive. The target sends again what
//! it still holds, flagged as a retransmission, so one lost packet costs one packet again a
//! round trip later instead of a keyframe. The shape follows RTCP's generic NACK (RFC 4585):
//! a sequence number and a bitmask of the sixteen after it.
//!
//! ```text
//! nack   u8 version, u8 0x2c, u8 count (1..=32), then count times:
//!        u32 seq, u16 mask (bit i set: seq + 1 + i is missing too)
//! ```
//! All little-endian, for a browser's `DataView`.

use bytes::{BufMut, BytesMut};

use super::{invalid, kind, Reader, WireError};

/// Most ranges one request carries: 32 x 17 = 544 messages, far more than a round trip
/// loses on any link worth retransmitting over.
pub const MAX_NACK_RANGES: usize = 32;

/// A sequence number and the sixteen after it that are missing too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackRange {
    /// A missing message.
    pub first: u32,
    /// Bit i: `first + 1 + i` is missing too.
    pub mask: u16,
}

impl NackRange {
    /// Every sequence number the range names, in order.
    pub fn seqs(self) -> impl Iterator<Item = u32> {
        std::iter::once(self.first).chain(
            (0..16u32)
                .filter(move |i| self.mask & (1 << i) != 0)
                .map(move |i| self.first.wrapping_add(1 + i)),
        )
    }
}

/// Pack ascending sequence numbers into ranges, at most [`MAX_NACK_RANGES`]; what does not
/// fit is left out (it is asked for on the next round).
pub fn nack_ranges(seqs: impl IntoIterator<Item = u32>) -> Vec<NackRange> {
    let mut out: Vec<NackRange> = Vec::new();
    for seq in seqs {
        if let Some(last) = out.last_mut() {
            let d = seq.wrapping_sub(last.first);
            if (1..=16).contains(&d) {
                last.mask |= 1 << (d - 1);
                continue;
            }
        }
        if out.len() == MAX_NACK_RANGES {
            break;
        }
        out.push(NackRange {
            first: seq,
            mask: 0,
        });
    }
    out
}

pub(super) fn encode(ranges: &[NackRange], out: &mut BytesMut) {
    // More cannot be sent; `nack_ranges` never makes more.
    let n = ranges.len().min(MAX_NACK_RANGES);
    out.reserve(2 + n * 6);
    out.put_u8(kind::NACK);
    out.put_u8(n as u8);
    for r in &ranges[..n] {
        out.put_u32_le(r.first);
        out.put_u16_le(r.mask);
    }
}

pub(super) fn decode(r: &mut Reader<'_>) -> Result<Vec<NackRange>, WireError> {
    let n = usize::from(r.u8()?);
    if n == 0 || n > MAX_NACK_RANGES {
        return Err(invalid(
            "nack ranges",
            format!("{n} (expected 1..={MAX_NACK_RANGES})"),
        ));
    }
    r.need(n * 6)?;
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        ranges.push(NackRange {
            first: r.u32()?,
            mask: r.u16()?,
        });
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_control, ControlMessage};

    #[test]
    fn ranges_pack_neighbours_into_masks_and_unpack_to_the_same_numbers() {
        let seqs = [5u32, 6, 9, 21, 22, 40];
        let ranges = nack_ranges(seqs);
        assert_eq!(
            ranges,
            vec![
                NackRange {
                    first: 5,
                    mask: 0b1001 | 1 << 15
                },
                NackRange { first: 22, mask: 0 },
                NackRange { first: 40, mask: 0 },
            ]
        );
        let back: Vec<u32> = ranges.iter().flat_map(|r| r.seqs()).collect();
        assert_eq!(back, seqs);
    }

    #[test]
    fn ranges_cross_the_sequence_wrap() {
        let ranges = nack_ranges([u32::MAX, 0, 1]);
        assert_eq!(ranges.len(), 1);
        let back: Vec<u32> = ranges[0].seqs().collect();
        assert_eq!(back, [u32::MAX, 0, 1]);
    }

    #[test]
    fn ranges_stop_at_the_limit() {
        let ranges = nack_ranges((0..1000u32).map(|i| i * 100));
        assert_eq!(ranges.len(), MAX_NACK_RANGES);
    }

    #[test]
    fn a_nack_round_trips_and_bad_counts_are_refused() {
        let msg = ControlMessage::Nack(nack_ranges([7, 8, 30]));
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        assert_eq!(buf.len(), 3 + 2 * 6);
        assert_eq!(decode_control(&buf).unwrap(), msg);

        let mut none = buf[..2].to_vec();
        none.push(0);
        assert!(matches!(
            decode_control(&none),
            Err(WireError::Invalid {
                field: "nack ranges",
                ..
            })
        ));
        let mut many = buf[..2].to_vec();
        many.push(MAX_NACK_RANGES as u8 + 1);
        many.extend(std::iter::repeat_n(0u8, 6 * (MAX_NACK_RANGES + 1)));
        assert!(decode_control(&many).is_err());
        assert!(matches!(
            decode_control(&buf[..buf.len() - 1]),
            Err(WireError::Truncated { .. })
        ));
    }
}
