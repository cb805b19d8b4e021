use super::*;
use crate::video::tests::frame;
use crate::wire::{decode_video, video_stamp, VIDEO_HEADER_LEN};

const MS: Duration = Duration::from_millis(1);

/// 1000-byte payloads, 1 Mbit/s: one full chunk every ~8.4 ms.
fn sender() -> VideoSender {
    VideoSender::new(
        1,
        PacerConfig {
            max_message: VIDEO_HEADER_LEN + 1000,
            start_bps: 1_000_000,
            stale_after: 200 * MS,
        },
    )
}

/// Drain everything the pacer lets out until `until`, stepping to each `poll_timeout`.
fn drain(s: &mut VideoSender, from: Duration, until: Duration) -> Vec<(Duration, u8, BytesMut)> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= until {
        while let Some((band, m)) = s.poll_transmit(now) {
            out.push((now, band, m));
        }
        match s.poll_timeout() {
            Some(t) if t > now => now = t,
            Some(_) => now += MS,
            None => break,
        }
    }
    out
}

#[test]
fn video_leaves_at_the_pacing_rate_not_in_a_burst() {
    let mut s = sender();
    s.handle_frame(Duration::ZERO, &frame(1, &[(0, true, 10_000)]), 0);
    let sent = drain(&mut s, Duration::ZERO, Duration::from_secs(1));
    assert_eq!(sent.len(), 10);
    let bytes: usize = sent.iter().map(|(_, _, m)| m.len()).sum();
    let took = sent.last().unwrap().0 - sent[0].0;
    let expect = Duration::from_micros((bytes as u64 - 2 * 1046) * 8); // less the first credit
    assert!(
        took + 10 * MS >= expect && took <= expect + 10 * MS,
        "{took:?} vs {expect:?}"
    );
}

#[test]
fn every_message_is_stamped_in_sequence_with_its_send_time() {
    let mut s = sender();
    s.handle_frame(Duration::ZERO, &frame(1, &[(0, true, 3_000)]), 0);
    let sent = drain(&mut s, Duration::ZERO, Duration::from_secs(1));
    for (i, (at, _, m)) in sent.iter().enumerate() {
        assert_eq!(video_stamp(m), Some((i as u32 + 1, at.as_micros() as u32)));
        assert!(decode_video(m).is_ok());
    }
}

#[test]
fn no_new_frame_is_wanted_while_the_queue_would_take_longer_than_the_budget() {
    let mut s = sender();
    s.set_budget(50 * MS);
    assert!(s.wants_frame());
    // 10 kB at 1 Mbit/s is 80 ms of queue.
    s.handle_frame(Duration::ZERO, &frame(1, &[(0, true, 10_000)]), 0);
    assert!(!s.wants_frame());
    s.set_rate(Duration::ZERO, 4_000_000);
    assert!(s.wants_frame(), "at 4 Mbit/s it drains in 20 ms");
}

#[test]
fn a_stale_band_is_dropped_whole_and_sends_only_a_keyframe_after() {
    let mut s = sender();
    s.set_rate(Duration::ZERO, 100_000);
    s.handle_frame(
        Duration::ZERO,
        &frame(1, &[(0, false, 3_000), (1, false, 500)]),
        0,
    );
    // Band 0's first chunk goes at once, then the rest waits past the stale limit.
    let first = s.poll_transmit(Duration::ZERO).map(|(b, _)| b);
    assert_eq!(first, Some(0));
    let late = drain(&mut s, 300 * MS, 300 * MS);
    assert!(
        late.iter().all(|(_, b, _)| *b != 0),
        "stale band 0 was sent"
    );
    assert_eq!(s.poll_lost() & 1, 1);
    assert_eq!(s.poll_lost(), 0, "reported once");
    // A delta for band 0 is skipped; its keyframe goes.
    s.handle_frame(400 * MS, &frame(2, &[(0, false, 100)]), 0);
    assert!(drain(&mut s, 400 * MS, 500 * MS).is_empty());
    s.handle_frame(500 * MS, &frame(3, &[(0, true, 100)]), 0);
    let sent = drain(&mut s, 500 * MS, 600 * MS);
    assert_eq!(sent.len(), 1);
    assert!(decode_video(&sent[0].2).unwrap().keyframe);
}

#[test]
fn a_refused_message_drops_the_rest_of_its_band_and_reports_it() {
    let mut s = sender();
    s.set_rate(Duration::ZERO, 100_000_000);
    s.handle_frame(
        Duration::ZERO,
        &frame(1, &[(0, true, 3_000), (1, true, 100)]),
        0,
    );
    let (band, _) = s.poll_transmit(Duration::ZERO).unwrap();
    s.handle_refused(band);
    let rest: Vec<u8> = drain(&mut s, Duration::ZERO, MS)
        .into_iter()
        .map(|(_, b, _)| b)
        .collect();
    assert_eq!(rest, vec![1]);
    assert_eq!(s.poll_lost(), 1);
    assert_eq!(s.totals().bands_dropped, 1);
}

#[test]
fn a_keyframe_request_drops_the_bands_waiting_deltas_but_not_a_queued_keyframe() {
    let mut s = sender();
    s.set_rate(Duration::ZERO, 100_000);
    s.set_budget(250 * MS);
    // Band 0 has deltas waiting, band 1 a keyframe then a delta, band 2 deltas not asked for.
    s.handle_frame(
        Duration::ZERO,
        &frame(1, &[(0, false, 2_000), (1, true, 1_500), (2, false, 500)]),
        0,
    );
    s.handle_frame(Duration::ZERO, &frame(2, &[(1, false, 500)]), 0);
    assert!(
        !s.wants_frame(),
        "4.5 KB at 100 kbit/s: 360 ms, over the budget"
    );
    s.handle_keyframe_request(0b011);
    assert!(s.wants_frame(), "band 0's deltas no longer hold the queue");
    // A new delta of band 0 is skipped until its keyframe; band 1 goes on from its key.
    s.handle_frame(10 * MS, &frame(3, &[(0, false, 300), (1, false, 300)]), 0);
    s.handle_frame(20 * MS, &frame(4, &[(0, true, 300)]), 0);
    // Faster from here, so nothing goes stale while it drains.
    s.set_rate(20 * MS, 1_000_000);
    let sent: Vec<(u8, bool, u64)> = drain(&mut s, 20 * MS, 2000 * MS)
        .iter()
        .map(|(_, b, m)| {
            let c = decode_video(m).unwrap();
            (*b, c.keyframe, c.frame_id)
        })
        .collect();
    let frames = |band: u8| -> Vec<(bool, u64)> {
        sent.iter()
            .filter(|x| x.0 == band)
            .map(|x| (x.1, x.2))
            .collect()
    };
    assert_eq!(frames(0), [(true, 4)], "only band 0's keyframe");
    let band1: Vec<u64> = frames(1).iter().map(|x| x.1).collect();
    assert!(band1.starts_with(&[1]) && band1.contains(&2) && band1.contains(&3));
    assert!(frames(2).iter().all(|x| x.1 == 1), "band 2 untouched");
    assert_eq!(s.poll_lost(), 0, "a request is not a loss to report back");
}

#[test]
fn a_keyframe_leaves_whole_however_long_it_takes() {
    // 100 kbit/s: a 6 KB keyframe takes about half a second, past the 200 ms stale limit.
    let mut s = sender();
    s.set_rate(Duration::ZERO, 100_000);
    s.handle_frame(Duration::ZERO, &frame(1, &[(0, true, 6_000)]), 0);
    let sent = drain(&mut s, Duration::ZERO, 2000 * MS);
    let bytes: usize = sent
        .iter()
        .map(|(_, _, m)| decode_video(m).unwrap().payload.len())
        .sum();
    assert_eq!(bytes, 6_000, "the whole keyframe left");
    assert_eq!(s.poll_lost(), 0, "nothing was dropped");
    assert!(
        sent.last().unwrap().0 > 200 * MS,
        "it did take past the stale limit"
    );
}

#[test]
fn a_missing_message_goes_out_again_as_it_was_flagged_and_ahead_of_new_video() {
    let mut s = sender();
    s.handle_frame(Duration::ZERO, &frame(1, &[(0, true, 3_000)]), 0);
    let sent = drain(&mut s, Duration::ZERO, Duration::from_secs(1));
    assert_eq!(sent.len(), 3);
    let (at, _, original) = &sent[1];
    s.handle_frame(*at + 50 * MS, &frame(2, &[(0, false, 2_000)]), 0);
    assert_eq!(s.handle_nack(*at + 60 * MS, &[2]), 1);
    let again = drain(&mut s, *at + 60 * MS, Duration::from_secs(1));
    let (_, band, first) = &again[0];
    assert_eq!(*band, 0);
    assert!(crate::wire::is_resent(first));
    let (a, b) = (
        decode_video(first).unwrap(),
        decode_video(original).unwrap(),
    );
    assert_eq!(a, crate::wire::VideoChunk { resent: true, ..b });
    // The new frame follows, numbered on from where the sequence was.
    assert_eq!(video_stamp(&again[1].2).map(|(seq, _)| seq), Some(4));
    assert_eq!(s.totals().resent, 1);
}

#[test]
fn requests_for_unknown_old_or_too_often_asked_messages_send_nothing() {
    let mut s = sender();
    s.handle_frame(Duration::ZERO, &frame(1, &[(0, true, 3_000)]), 0);
    drain(&mut s, Duration::ZERO, Duration::from_secs(1));
    // Never sent, or from the future.
    assert_eq!(s.handle_nack(30 * MS, &[0, 4, 9_999, u32::MAX]), 0);
    // Asked again before the answer could have arrived: once.
    assert_eq!(s.handle_nack(30 * MS, &[1, 1]), 1);
    drain(&mut s, 30 * MS, Duration::from_secs(1));
    for i in 1..MAX_RESENDS {
        assert_eq!(s.handle_nack(30 * MS + u32::from(i) * 50 * MS, &[1]), 1);
        drain(
            &mut s,
            30 * MS + u32::from(i) * 50 * MS,
            Duration::from_secs(1),
        );
    }
    assert_eq!(s.handle_nack(500 * MS, &[1]), 0, "asked too often");
    // Past the history, nothing is kept.
    assert_eq!(s.handle_nack(HISTORY_FOR + 100 * MS, &[2, 3]), 0);
}

#[test]
fn a_band_waiting_for_its_keyframe_is_not_repaired() {
    let mut s = sender();
    s.handle_frame(
        Duration::ZERO,
        &frame(1, &[(0, true, 2_000), (1, true, 2_000)]),
        0,
    );
    let sent = drain(&mut s, Duration::ZERO, Duration::from_secs(1));
    let seq_of = |band: u8| {
        sent.iter()
            .filter(|(_, b, _)| *b == band)
            .map(|(_, _, m)| video_stamp(m).unwrap().0)
            .collect::<Vec<_>>()
    };
    let (zero, one) = (seq_of(0), seq_of(1));
    assert_eq!(s.handle_nack(40 * MS, &zero), 2);
    // The viewer gives band 0 up: its queued repairs are dropped, and none are made.
    s.handle_keyframe_request(0b1);
    assert_eq!(s.handle_nack(60 * MS, &zero), 0);
    let again = drain(&mut s, 60 * MS, Duration::from_secs(1));
    assert!(again.is_empty(), "{} messages left", again.len());
    assert_eq!(s.handle_nack(80 * MS, &one), 2);
}

#[test]
fn a_viewer_asking_for_everything_gets_a_bounded_queue() {
    let mut s = VideoSender::new(
        1,
        PacerConfig {
            max_message: VIDEO_HEADER_LEN + 1000,
            start_bps: 1_000_000_000,
            stale_after: 200 * MS,
        },
    );
    s.set_rate(Duration::ZERO, 1_000_000_000);
    for id in 0..40u64 {
        let at = id as u32 * 10 * MS;
        s.handle_frame(at, &frame(id + 1, &[(0, id == 0, 100_000)]), 0);
        drain(&mut s, at, at + 9 * MS);
    }
    assert_eq!(s.backlog(), Duration::ZERO);
    let all: Vec<u32> = (0..5_000).collect();
    assert!(s.handle_nack(400 * MS, &all) > 100);
    assert!(s.backlog() <= Duration::from_micros(RESEND_QUEUE_BYTES as u64 * 8 / 1_000 + 1));
}
