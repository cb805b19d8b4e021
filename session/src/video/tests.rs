use super::*;
use crate::wire::decode_video;
use bytes::Bytes;
use deskwire_engine::{BandId, EncodedBand, FrameId};
use std::time::Duration;

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
                qp: 0,
            })
            .collect(),
        layout_generation: 0,
        timings: Default::default(),
        changed_rows: 0,
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

/// A reassembler on a short path (the retry interval governs its requests).
fn rx() -> Reassembler {
    let mut r = Reassembler::new(RETRY);
    r.set_rtt(Duration::from_millis(1));
    r.handle_stream_start(7, &[64 * 32, 64 * 32], Duration::ZERO);
    r
}

/// Feed messages; return (band, frame id, bytes) of every band frame handed out.
fn feed(r: &mut Reassembler, msgs: &[BytesMut]) -> Vec<(u8, u64, Vec<u8>)> {
    feed_at(r, msgs, Duration::ZERO)
}

fn feed_at(r: &mut Reassembler, msgs: &[BytesMut], now: Duration) -> Vec<(u8, u64, Vec<u8>)> {
    let mut done = Vec::new();
    for m in msgs {
        let c = decode_video(m).unwrap();
        r.handle_chunk(&c);
        done.extend(drain(r, now));
    }
    done
}

fn drain(r: &mut Reassembler, now: Duration) -> Vec<(u8, u64, Vec<u8>)> {
    let mut done = Vec::new();
    while let Some(b) = r.poll_band(now) {
        done.push((b.band, b.frame_id, b.data.to_vec()));
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
fn a_gap_in_a_band_chain_waits_then_requests_that_band_at_a_limited_rate() {
    let mut p = Packetizer::new(7, 1200);
    let mut r = rx();
    let key = packets(&mut p, &frame(1, &[(0, true, 50), (1, true, 50)]));
    assert_eq!(feed(&mut r, &key).len(), 2);
    let _lost = packets(&mut p, &frame(2, &[(1, false, 50)]));
    let after = packets(&mut p, &frame(3, &[(1, false, 50)]));
    let t0 = Duration::from_secs(5);
    assert!(
        feed_at(&mut r, &after, t0).is_empty(),
        "frame 3 of band 1 waits for the lost frame 2"
    );
    assert_eq!(
        r.poll_keyframe_request(t0),
        None,
        "a retransmission may come"
    );
    let wait = r.gap_wait();
    assert_eq!(r.poll_timeout(), Some(t0 + wait));
    assert!(drain(&mut r, t0 + wait).is_empty());
    let t1 = t0 + wait;
    assert_eq!(
        r.poll_keyframe_request(t1),
        Some((7, 0b10)),
        "only the broken band"
    );
    assert_eq!(
        r.poll_keyframe_request(t1 + RETRY / 2),
        None,
        "rate-limited"
    );
    assert_eq!(
        r.poll_keyframe_request(t1 + RETRY),
        Some((7, 0b10)),
        "asked again"
    );
    assert_eq!(r.requests(), 2);
    // Band 0 keeps flowing meanwhile.
    let ok = packets(&mut p, &frame(4, &[(0, false, 50)]));
    assert_eq!(feed_at(&mut r, &ok, t1).len(), 1);
    let recovered = packets(&mut p, &frame(5, &[(1, true, 50)]));
    assert_eq!(feed_at(&mut r, &recovered, t1).len(), 1);
    assert_eq!(r.poll_keyframe_request(t1 + RETRY * 3), None);
}

#[test]
fn a_chunk_resent_within_the_gap_wait_repairs_the_chain_without_a_keyframe() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 20);
    let mut r = rx();
    let key = packets(&mut p, &frame(1, &[(0, true, 50), (1, true, 50)]));
    assert_eq!(feed(&mut r, &key).len(), 2);
    let f2 = packets(&mut p, &frame(2, &[(0, false, 50)]));
    let f3 = packets(&mut p, &frame(3, &[(0, false, 50)]));
    let t = Duration::from_millis(100);
    assert!(feed_at(&mut r, &f2[1..], t).is_empty());
    assert!(
        feed_at(&mut r, &f3, t).is_empty(),
        "frame 3 waits for frame 2"
    );
    let wait = r.gap_wait();
    let late = feed_at(&mut r, &f2[..1], t + wait / 2);
    let ids: Vec<u64> = late.iter().map(|d| d.1).collect();
    assert_eq!(ids, [2, 3], "both, in order");
    assert_eq!(late[0].2, &frame(2, &[(0, false, 50)]).bands[0].data[..]);
    assert_eq!(r.poll_keyframe_request(t + RETRY * 10), None);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn a_lost_chunk_of_the_last_frame_is_noticed_without_a_later_frame() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 20);
    let mut r = rx();
    let key = packets(&mut p, &frame(1, &[(0, true, 50), (1, true, 50)]));
    assert_eq!(feed(&mut r, &key).len(), 2);
    let f2 = packets(&mut p, &frame(2, &[(0, false, 50)]));
    let t = Duration::from_secs(1);
    assert!(feed_at(&mut r, &f2[..2], t).is_empty());
    let wait = r.gap_wait();
    assert!(drain(&mut r, t + wait - Duration::from_millis(1)).is_empty());
    assert_eq!(r.poll_keyframe_request(t), None);
    drain(&mut r, t + wait);
    assert_eq!(
        r.poll_keyframe_request(t + wait),
        Some((7, 0b01)),
        "the content stopped on a broken frame: ask for the band again"
    );
}

#[test]
fn a_whole_keyframe_skips_a_missing_frame_at_once() {
    let mut p = Packetizer::new(7, 1200);
    let mut r = rx();
    let key = packets(&mut p, &frame(1, &[(0, true, 50), (1, true, 50)]));
    assert_eq!(feed(&mut r, &key).len(), 2);
    let _lost = packets(&mut p, &frame(2, &[(0, false, 50)]));
    let key = packets(&mut p, &frame(3, &[(0, true, 50)]));
    let done = feed(&mut r, &key);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1, 3);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn frames_piling_up_behind_a_gap_stay_bounded_and_a_keyframe_still_gets_in() {
    let mut p = Packetizer::new(7, 1200);
    let mut r = rx();
    let key = packets(&mut p, &frame(1, &[(0, true, 50), (1, true, 50)]));
    assert_eq!(feed(&mut r, &key).len(), 2);
    let _lost = packets(&mut p, &frame(2, &[(0, false, 50)]));
    let mut fates = Vec::new();
    for id in 3..200 {
        for m in packets(&mut p, &frame(id, &[(0, false, 50)])) {
            fates.push(r.handle_chunk(&decode_video(&m).unwrap()));
        }
    }
    assert!(fates.contains(&ChunkFate::Dropped), "the wait was given up");
    assert!(drain(&mut r, Duration::ZERO).is_empty());
    assert_eq!(
        r.poll_keyframe_request(Duration::from_secs(1)),
        Some((7, 1))
    );
    let key = packets(&mut p, &frame(200, &[(0, true, 50)]));
    assert_eq!(feed(&mut r, &key).len(), 1);
}

#[test]
fn on_a_long_path_a_keyframe_is_not_asked_for_again_within_the_round_trip() {
    let mut r = rx();
    r.set_rtt(Duration::from_millis(600));
    let t = Duration::from_secs(1);
    assert_eq!(r.poll_keyframe_request(t), Some((7, 0b11)));
    assert_eq!(
        r.poll_keyframe_request(t + RETRY),
        None,
        "it cannot be back yet"
    );
    assert_eq!(
        r.poll_keyframe_request(t + Duration::from_millis(650)),
        Some((7, 0b11))
    );
}

#[test]
fn a_keyframe_still_arriving_is_not_asked_for_again() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 100);
    let key = packets(&mut p, &frame(1, &[(0, true, 1000)]));
    let mut r = rx();
    let t = Duration::from_secs(1);
    // Band 1 never got anything; band 0's keyframe trickles in over the retries.
    feed_at(&mut r, &key[..3], t);
    assert_eq!(r.poll_keyframe_request(t), Some((7, 0b10)));
    feed_at(&mut r, &key[3..6], t + RETRY);
    assert_eq!(r.poll_keyframe_request(t + RETRY), Some((7, 0b10)));
    // It stopped coming: ask again.
    assert_eq!(r.poll_keyframe_request(t + RETRY * 2), Some((7, 0b11)));
    let done = feed_at(&mut r, &key[6..], t + RETRY * 3);
    assert_eq!(done.len(), 1);
    // A keyframe with a hole is still coming while its chunks arrive (the hole is asked
    // for again); once they stop, it is asked for.
    let key = packets(&mut p, &frame(2, &[(1, true, 1000)]));
    let t = t + RETRY * 4;
    feed_at(&mut r, &key[..2], t);
    feed_at(&mut r, &key[3..6], t);
    assert_eq!(r.poll_keyframe_request(t), None);
    assert_eq!(r.poll_keyframe_request(t + RETRY), Some((7, 0b10)));
}

#[test]
fn a_new_streams_keyframe_that_overtakes_its_announcement_is_kept_for_it() {
    let mut p = Packetizer::new(8, VIDEO_HEADER_LEN + 100);
    let key = packets(&mut p, &frame(1, &[(0, true, 300)]));
    let mut r = rx();
    for m in &key {
        assert_eq!(r.handle_message(m.clone()), Ok(ChunkFate::OtherStream));
    }
    assert!(drain(&mut r, Duration::ZERO).is_empty());
    r.handle_stream_start(8, &[64 * 64], Duration::ZERO);
    assert_eq!(drain(&mut r, Duration::ZERO).len(), 1, "taken at its start");
    assert!(r.handle_message(BytesMut::from(&[1u8, 2, 3][..])).is_err());
}

#[test]
fn the_gap_wait_follows_the_round_trip_within_bounds() {
    let mut r = rx();
    r.set_rtt(Duration::from_millis(30));
    assert_eq!(r.gap_wait(), Duration::from_millis(160));
    r.set_rtt(Duration::from_millis(1));
    assert_eq!(r.gap_wait(), Duration::from_millis(150));
    r.set_rtt(Duration::from_secs(3));
    assert_eq!(r.gap_wait(), Duration::from_secs(1));
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
    assert_eq!(r.handle_chunk(&c), ChunkFate::Stale);
}

#[test]
fn a_newer_keyframe_abandons_an_incomplete_older_one() {
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
    assert_eq!(r.handle_chunk(&c), ChunkFate::Stale);
}

#[test]
fn chunks_of_another_stream_or_beyond_the_band_limit_are_refused() {
    let mut p = Packetizer::new(8, 1200);
    let mut r = rx();
    let other = packets(&mut p, &frame(1, &[(0, true, 50)]));
    assert_eq!(
        r.handle_chunk(&decode_video(&other[0]).unwrap()),
        ChunkFate::OtherStream
    );
    let mut p = Packetizer::new(7, 1_000_000);
    let huge = packets(&mut p, &frame(1, &[(0, true, 64 * 1024 + 1)]));
    let mut small = Reassembler::new(RETRY);
    small.handle_stream_start(7, &[16], Duration::ZERO);
    assert_eq!(
        small.handle_chunk(&decode_video(&huge[0]).unwrap()),
        ChunkFate::Inconsistent
    );
    let mut p = Packetizer::new(7, 1200);
    let band5 = packets(&mut p, &frame(1, &[(5, true, 10)]));
    assert_eq!(
        r.handle_chunk(&decode_video(&band5[0]).unwrap()),
        ChunkFate::Inconsistent
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
    assert_eq!(r.handle_chunk(&short), ChunkFate::Pending);
    let second = decode_video(&msgs[1]).unwrap();
    assert_eq!(r.handle_chunk(&second), ChunkFate::Inconsistent);
}

#[test]
fn a_keyframe_arriving_slowly_is_judged_over_a_retry_interval_not_between_two_polls() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 100);
    let key = packets(&mut p, &frame(1, &[(0, true, 1000), (1, true, 100)]));
    let mut r = rx();
    let t = Duration::from_secs(1);
    feed_at(&mut r, &key[..2], t);
    feed_at(&mut r, &key[10..], t);
    assert_eq!(r.poll_keyframe_request(t), None, "band 0 is arriving");
    // Polls a few milliseconds apart with no chunk between them: not yet judged.
    for ms in 1..5 {
        assert_eq!(r.poll_keyframe_request(t + Duration::from_millis(ms)), None);
    }
    feed_at(&mut r, &key[2..4], t + RETRY / 2);
    assert_eq!(r.poll_keyframe_request(t + RETRY), None, "it moved");
    // Nothing more for a whole interval: asked for.
    assert_eq!(r.poll_keyframe_request(t + RETRY * 2), Some((7, 0b1)));
}

#[test]
fn a_keyframe_whose_hole_stays_open_past_the_gap_wait_is_asked_for_again() {
    let mut p = Packetizer::new(7, VIDEO_HEADER_LEN + 100);
    let key = packets(&mut p, &frame(1, &[(0, true, 1000), (1, true, 100)]));
    let mut r = rx();
    r.set_rtt(Duration::from_millis(20));
    let t = Duration::from_secs(1);
    // Chunk 3 of band 0 is missing; the rest keep coming for a while.
    feed_at(&mut r, &key[..3], t);
    feed_at(&mut r, &key[4..6], t);
    feed_at(&mut r, &key[10..], t);
    assert_eq!(
        r.poll_keyframe_request(t),
        None,
        "a hole is repaired as a rule"
    );
    let gap = r.gap_wait();
    feed_at(&mut r, &key[6..10], t + gap / 2);
    assert_eq!(r.poll_keyframe_request(t + gap / 2), None);
    assert_eq!(
        r.poll_keyframe_request(t + gap),
        Some((7, 0b1)),
        "still open after the gap wait"
    );
}
