use super::*;
use crate::wire::decode_video;
use bytes::Bytes;
use deskwire_engine::{BandId, EncodedBand, FrameId};

const RETRY: Duration = Duration::from_millis(100);

/// An encoded frame of these `(band, keyframe, bytes)`, for tests here and of the pacer.
pub(crate) fn frame(id: u64, bands: &[(u8, bool, usize)]) -> EncodedFrame {
    EncodedFrame {
        id: FrameId(id),
        captured_at: deskwire_capture::Timestamp::from_micros(id * 1000),
        width: 64,
        height: 64,
        bands: bands
            .iter()
            .map(|&(b, key, len)| EncodedBand {
                band: BandId(b),
                keyframe: key,
                data: Bytes::from(
                    (0..len)
                        .map(|i| (i as u8) ^ b ^ id as u8)
                        .collect::<Vec<u8>>(),
                ),
                encode_us: 0,
            })
            .collect(),
        timings: Default::default(),
    }
}

fn packets(p: &mut Packetizer, f: &EncodedFrame) -> Vec<BytesMut> {
    let mut out = Vec::new();
    p.packetize(f, f.captured_at.as_micros(), |_, m| {
        out.push(m);
        true
    });
    out
}

fn rx() -> Reassembler {
    let mut r = Reassembler::new(RETRY);
    r.handle_stream_start(7, &[64 * 32, 64 * 32], Duration::ZERO);
    r
}

/// Feed messages; return (band, frame id, bytes) of every completed band frame.
fn feed(r: &mut Reassembler, msgs: &[BytesMut]) -> Vec<(u8, u64, Vec<u8>)> {
    let mut done = Vec::new();
    for m in msgs {
        let c = decode_video(m).unwrap();
        if let Ok(b) = r.handle_chunk(&c) {
            done.push((b.band, b.frame_id, b.data.to_vec()));
        }
    }
    done
}

#[test]
fn chunks_respect_the_message_size_and_reassemble_in_any_order() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 100);
    let f = frame(1, &[(0, true, 950), (1, true, 100)]);
    let mut msgs = packets(&mut p, &f);
    assert_eq!(msgs.len(), 10 + 1);
    assert!(msgs.iter().all(|m| m.len() <= VIDEO_HEADER_LEN + 100));
    msgs.reverse();
    let mut r = rx();
    let done = feed(&mut r, &msgs);
    assert_eq!(done.len(), 2);
    for (band, id, data) in done {
        assert_eq!(id, 1);
        assert_eq!(&data[..], &f.bands[usize::from(band)].data[..]);
    }
}

#[test]
fn duplicate_chunks_do_not_complete_a_frame_early() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 100);
    let msgs = packets(&mut p, &frame(1, &[(0, true, 300)]));
    let mut r = rx();
    let dup = vec![msgs[0].clone(), msgs[0].clone(), msgs[1].clone()];
    assert!(feed(&mut r, &dup).is_empty());
    assert_eq!(feed(&mut r, &msgs[2..]).len(), 1);
}

#[test]
fn a_band_starts_only_with_a_keyframe_and_asks_for_one() {
    let mut p = Packetizer::new(7, 1200);
    let _lost_key = packets(&mut p, &frame(1, &[(0, true, 50)]));
    let delta = packets(&mut p, &frame(2, &[(0, false, 50)]));
    let mut r = rx();
    assert!(
        feed(&mut r, &delta).is_empty(),
        "a P-frame without its keyframe is not decodable"
    );
    assert_eq!(
        r.poll_keyframe_request(Duration::from_millis(10)),
        None,
        "too soon after start"
    );
    assert_eq!(r.poll_keyframe_request(RETRY), Some((7, 0b11)));
}

#[test]
fn a_gap_in_a_band_chain_requests_that_band_at_a_limited_rate() {
    let mut p = Packetizer::new(7, 1200);
    let mut r = rx();
    let key = packets(&mut p, &frame(1, &[(0, true, 50), (1, true, 50)]));
    assert_eq!(feed(&mut r, &key).len(), 2);
    let _lost = packets(&mut p, &frame(2, &[(1, false, 50)]));
    let after = packets(&mut p, &frame(3, &[(1, false, 50)]));
    assert!(
        feed(&mut r, &after).is_empty(),
        "frame 3 of band 1 follows a lost frame"
    );
    let t0 = Duration::from_secs(5);
    assert_eq!(
        r.poll_keyframe_request(t0),
        Some((7, 0b10)),
        "only the broken band"
    );
    assert_eq!(
        r.poll_keyframe_request(t0 + RETRY / 2),
        None,
        "rate-limited"
    );
    assert_eq!(
        r.poll_keyframe_request(t0 + RETRY),
        Some((7, 0b10)),
        "asked again"
    );
    assert_eq!(r.requests(), 2);
    // Band 0 keeps flowing meanwhile.
    let ok = packets(&mut p, &frame(4, &[(0, false, 50)]));
    assert_eq!(feed(&mut r, &ok).len(), 1);
    let recovered = packets(&mut p, &frame(5, &[(1, true, 50)]));
    assert_eq!(feed(&mut r, &recovered).len(), 1);
    assert_eq!(r.poll_keyframe_request(t0 + RETRY * 3), None);
}

#[test]
fn frames_older_than_what_was_shown_are_dropped() {
    let mut p = Packetizer::new(7, 1200);
    let mut r = rx();
    let f1 = packets(&mut p, &frame(1, &[(0, true, 50)]));
    let f2 = packets(&mut p, &frame(2, &[(0, false, 50)]));
    assert_eq!(feed(&mut r, &f1).len(), 1);
    assert_eq!(feed(&mut r, &f2).len(), 1);
    let c = decode_video(&f1[0]).unwrap();
    assert_eq!(r.handle_chunk(&c).err(), Some(ChunkFate::Stale));
}

#[test]
fn a_newer_frame_abandons_an_incomplete_older_one() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 10);
    let mut r = rx();
    let f1 = packets(&mut p, &frame(1, &[(0, true, 30)]));
    let f2 = packets(&mut p, &frame(2, &[(0, true, 30)]));
    assert!(feed(&mut r, &f1[..2]).is_empty());
    let done = feed(&mut r, &f2);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1, 2);
    // The rest of frame 1 is now stale.
    let c = decode_video(&f1[2]).unwrap();
    assert_eq!(r.handle_chunk(&c).err(), Some(ChunkFate::Stale));
}

#[test]
fn chunks_of_another_stream_or_beyond_the_band_limit_are_refused() {
    let mut p = Packetizer::new(8, 1200);
    let mut r = rx();
    let other = packets(&mut p, &frame(1, &[(0, true, 50)]));
    assert_eq!(
        r.handle_chunk(&decode_video(&other[0]).unwrap()).err(),
        Some(ChunkFate::OtherStream)
    );
    let mut p = Packetizer::new(7, 1_000_000);
    let huge = packets(&mut p, &frame(1, &[(0, true, 64 * 1024 + 1)]));
    let mut small = Reassembler::new(RETRY);
    small.handle_stream_start(7, &[16], Duration::ZERO);
    assert_eq!(
        small.handle_chunk(&decode_video(&huge[0]).unwrap()).err(),
        Some(ChunkFate::Inconsistent)
    );
    let mut p = Packetizer::new(7, 1200);
    let band5 = packets(&mut p, &frame(1, &[(5, true, 10)]));
    assert_eq!(
        r.handle_chunk(&decode_video(&band5[0]).unwrap()).err(),
        Some(ChunkFate::Inconsistent)
    );
}

#[test]
fn a_refused_send_marks_the_band_and_still_advances_its_sequence() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 10);
    let f = frame(1, &[(0, true, 30), (1, true, 30)]);
    let mut sent = 0;
    let failed = p.packetize(&f, 0, |band, _| {
        sent += 1;
        band == 0
    });
    assert_eq!(failed, 0b10);
    assert_eq!(sent, 3 + 1, "band 1 stops at its first refused chunk");
    let next = packets(&mut p, &frame(2, &[(1, false, 10)]));
    assert_eq!(decode_video(&next[0]).unwrap().band_seq, 2);
}

#[test]
fn chunks_that_do_not_add_up_to_the_band_length_are_refused() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 10);
    let msgs = packets(&mut p, &frame(1, &[(0, true, 20)]));
    let mut r = rx();
    let first = decode_video(&msgs[0]).unwrap();
    let short = VideoChunk {
        payload: &first.payload[..5],
        ..first
    };
    assert_eq!(r.handle_chunk(&short).err(), Some(ChunkFate::Pending));
    let second = decode_video(&msgs[1]).unwrap();
    assert_eq!(r.handle_chunk(&second).err(), Some(ChunkFate::Inconsistent));
}
