//! Chunks of a stream the viewer has not been told of yet.
//!
//! A restarted stream is announced on the control channel and its first keyframe leaves on
//! the video channel a few milliseconds later; the two channels are delivered separately, so
//! the keyframe can arrive first. Dropped, it would cost a keyframe request and a second
//! keyframe of the whole screen, on the slow link that made the stream restart. Kept here,
//! it is replayed once the announcement comes.

use bytes::BytesMut;

/// At most this many chunks, and this many bytes, wait.
const MAX_CHUNKS: usize = 256;
const MAX_BYTES: usize = 4 << 20;

/// Chunks of the newest stream ahead of the current one. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct EarlyChunks {
    stream: Option<u16>,
    chunks: Vec<BytesMut>,
    bytes: usize,
}

impl EarlyChunks {
    /// A chunk of `stream` arrived while `current` is the stream being shown: kept if
    /// `stream` is ahead of it (a later generation, within half the number space), and
    /// room remains. Chunks of an older stream, or of one behind a newer one kept, are not.
    pub(crate) fn keep(&mut self, current: Option<u16>, stream: u16, data: BytesMut) {
        if current.is_some_and(|c| stream.wrapping_sub(c) as i16 <= 0) {
            return;
        }
        match self.stream {
            Some(s) if s == stream => {}
            Some(s) if stream.wrapping_sub(s) as i16 <= 0 => return,
            _ => {
                self.stream = Some(stream);
                self.chunks.clear();
                self.bytes = 0;
            }
        }
        if self.chunks.len() < MAX_CHUNKS && self.bytes + data.len() <= MAX_BYTES {
            self.bytes += data.len();
            self.chunks.push(data);
        }
    }

    /// Stream `stream` starts: its chunks that came early, in arrival order. Everything
    /// else kept is dropped.
    pub(crate) fn take(&mut self, stream: u16) -> Vec<BytesMut> {
        let kept = std::mem::take(&mut self.chunks);
        self.bytes = 0;
        match self.stream.take() {
            Some(s) if s == stream => kept,
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> BytesMut {
        BytesMut::from(&[n; 10][..])
    }

    #[test]
    fn chunks_of_the_next_stream_are_replayed_when_it_starts() {
        let mut e = EarlyChunks::default();
        e.keep(Some(1), 2, chunk(1));
        e.keep(Some(1), 2, chunk(2));
        assert_eq!(e.take(2), vec![chunk(1), chunk(2)]);
        assert!(e.take(2).is_empty(), "replayed once");
    }

    #[test]
    fn chunks_of_the_current_or_an_older_stream_are_not_kept() {
        let mut e = EarlyChunks::default();
        e.keep(Some(5), 5, chunk(1));
        e.keep(Some(5), 4, chunk(2));
        assert!(e.take(5).is_empty());
        // Past wrap-around, 0 comes after 65535.
        e.keep(Some(u16::MAX), 0, chunk(3));
        assert_eq!(e.take(0), vec![chunk(3)]);
    }

    #[test]
    fn a_newer_stream_replaces_what_waited_and_a_start_of_another_drops_it() {
        let mut e = EarlyChunks::default();
        e.keep(None, 2, chunk(1));
        e.keep(None, 3, chunk(2));
        e.keep(None, 2, chunk(3));
        assert_eq!(e.take(3), vec![chunk(2)]);
        e.keep(None, 4, chunk(4));
        assert!(e.take(7).is_empty());
        assert!(e.take(4).is_empty());
    }

    #[test]
    fn what_waits_is_bounded() {
        let mut e = EarlyChunks::default();
        for _ in 0..1000 {
            e.keep(Some(1), 2, chunk(1));
        }
        assert_eq!(e.take(2).len(), MAX_CHUNKS);
        let big = BytesMut::from(&vec![0u8; MAX_BYTES][..]);
        e.keep(Some(1), 2, chunk(1));
        e.keep(Some(1), 2, big);
        assert_eq!(e.take(2).len(), 1);
    }
}
