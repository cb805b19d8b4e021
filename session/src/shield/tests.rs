use super::*;

const MS: Duration = Duration::from_millis(1);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A DTLS 1.2 application-data record of `len` payload bytes whose content says `seq`.
fn record(epoch: u16, seq: u64, len: usize) -> Vec<u8> {
    let mut d = vec![23, 0xFE, 0xFD];
    d.extend_from_slice(&epoch.to_be_bytes());
    d.extend_from_slice(&seq.to_be_bytes()[2..]);
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    d
}

/// Send records `seqs` at 1 ms intervals from `start`; returns every datagram on the wire
/// in order (records and parities).
fn send(
    sender: &mut ShieldSender,
    start: u64,
    seqs: impl IntoIterator<Item = u64>,
) -> Vec<Vec<u8>> {
    let mut wire = Vec::new();
    for (k, seq) in seqs.into_iter().enumerate() {
        let d = record(1, seq, 100 + (seq as usize % 7) * 50);
        let now = MS * (start + k as u64) as u32;
        let parity = sender.handle_sent(now, addr(1), &d);
        wire.push(d);
        wire.extend(parity);
    }
    wire
}

/// `wire` less the records `a` and `b`: a burst took them.
fn without(wire: &[Vec<u8>], a: u64, b: u64) -> Vec<Vec<u8>> {
    wire.iter()
        .filter(|d| !record_id(d).is_some_and(|(_, s)| s == a || s == b))
        .cloned()
        .collect()
}

fn drain(r: &mut ShieldReceiver) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| r.poll_datagram())
        .map(|(_, d)| d.to_vec())
        .collect()
}

fn seqs<D: AsRef<[u8]>>(ds: &[D]) -> Vec<u64> {
    ds.iter()
        .map(|d| record_id(d.as_ref()).expect("a record").1)
        .collect()
}

#[test]
fn a_group_of_ten_records_is_followed_by_one_parity() {
    let mut s = ShieldSender::new();
    let wire = send(&mut s, 0, 0..20);
    let parities: Vec<_> = wire.iter().filter(|d| d[0] == PARITY_MARKER).collect();
    assert_eq!(parities.len(), 2);
    assert_eq!(wire.len(), 22);
}

#[test]
fn a_slow_flow_closes_its_group_after_four_records_and_the_span() {
    let mut s = ShieldSender::new();
    let mut parities = 0;
    for seq in 0..8u64 {
        let d = record(1, seq, 200);
        parities += usize::from(s.handle_sent(MS * (seq * 10) as u32, addr(1), &d).is_some());
    }
    // Records 0..3 span 30 ms >= MAX_SPAN: a parity after the fourth, then after the eighth.
    assert_eq!(parities, 2);
}

#[test]
fn anything_but_one_record_of_a_ciphered_epoch_is_not_protected() {
    let mut s = ShieldSender::new();
    let stun = vec![0u8, 1, 0, 0];
    let mut handshake = record(0, 1, 50);
    handshake[0] = 22;
    let mut truncated = record(1, 2, 50);
    truncated.pop();
    let mut two = record(1, 3, 50);
    two.extend(record(1, 4, 50));
    let mut unknown_type = record(1, 5, 50);
    unknown_type[0] = 99;
    for _ in 0..20 {
        for d in [&stun, &handshake, &truncated, &two, &unknown_type] {
            assert_eq!(s.handle_sent(Duration::ZERO, addr(1), d), None);
        }
    }
}

#[test]
fn one_lost_record_in_a_group_is_rebuilt_in_order() {
    let mut s = ShieldSender::new();
    let wire = send(&mut s, 0, 0..10);
    let mut r = ShieldReceiver::new();
    for (k, d) in wire.iter().enumerate() {
        if record_id(d).is_some_and(|(_, seq)| seq == 3) {
            continue;
        }
        r.handle_datagram(MS * k as u32, addr(1), d.clone());
    }
    let got = drain(&mut r);
    assert_eq!(seqs(&got), (0..10).collect::<Vec<_>>());
    assert_eq!(got[3], record(1, 3, 100 + 3 * 50), "rebuilt byte for byte");
    assert_eq!(r.stats().rebuilt, 1);
    assert_eq!(r.poll_timeout(), None, "nothing left waiting");
}

#[test]
fn two_lost_records_in_a_group_are_asked_for_and_given_up_after_the_hold() {
    let mut s = ShieldSender::new();
    let wire = send(&mut s, 0, 0..10);
    let mut r = ShieldReceiver::new();
    for d in wire
        .iter()
        .filter(|d| !record_id(d).is_some_and(|(_, s)| s == 3 || s == 6))
    {
        r.handle_datagram(10 * MS, addr(1), d.clone());
    }
    assert_eq!(seqs(&drain(&mut r)), vec![0, 1, 2], "held behind the gap");
    assert_eq!(r.poll_timeout(), Some(10 * MS + NACK_AFTER));
    r.handle_timeout(10 * MS + NACK_AFTER);
    let (to, nack) = r.poll_transmit().expect("a NACK");
    assert_eq!((to, parse_nack(&nack)), (addr(1), Some((1, 3, 0b1001))));
    assert_eq!(r.poll_transmit(), None, "both in one");
    // No answer: named once more, then given up when the first hold (no round trip
    // measured yet) ends.
    r.handle_timeout(10 * MS + FIRST_HOLD - MS);
    assert!(r.poll_transmit().is_some(), "named again");
    assert!(drain(&mut r).is_empty(), "not before the hold ends");
    r.handle_timeout(10 * MS + FIRST_HOLD);
    assert_eq!(seqs(&drain(&mut r)), vec![4, 5, 7, 8, 9]);
    assert_eq!(r.stats().gaps_given_up, 2);
    assert_eq!(r.stats().nacked, 4);
    r.handle_timeout(Duration::from_secs(1));
    assert_eq!(r.poll_transmit(), None, "a given-up gap is not asked for");
}

#[test]
fn a_burst_the_parity_cannot_rebuild_is_sent_again_on_a_nack_and_handed_up_in_order() {
    let mut s = ShieldSender::new();
    let wire = send(&mut s, 0, 0..10);
    let mut r = ShieldReceiver::new();
    let lost = |d: &Vec<u8>| record_id(d).is_some_and(|(_, s)| (3..=5).contains(&s));
    for d in wire.iter().filter(|d| !lost(d)) {
        r.handle_datagram(10 * MS, addr(1), d.clone());
    }
    r.handle_timeout(10 * MS + NACK_AFTER);
    let (_, nack) = r.poll_transmit().expect("a NACK");
    let again = s.handle_nack(50 * MS, addr(1), &nack);
    assert_eq!(seqs(&again), vec![3, 4, 5]);
    for d in again {
        r.handle_datagram(90 * MS, addr(1), d);
    }
    assert_eq!(seqs(&drain(&mut r)), (0..10).collect::<Vec<_>>());
    // The first two sent again let the group's parity rebuild the third.
    assert_eq!((r.stats().repaired, r.stats().rebuilt), (2, 1));
    assert_eq!(r.stats().gaps_given_up, 0);
    assert_eq!(s.resent(), 3);
}

#[test]
fn the_hold_follows_the_measured_repair_round_trip() {
    let mut s = ShieldSender::new();
    let mut r = ShieldReceiver::new();
    let wire = send(&mut s, 0, 0..10);
    for d in wire
        .iter()
        .filter(|d| !record_id(d).is_some_and(|(_, s)| s == 3 || s == 4))
    {
        r.handle_datagram(10 * MS, addr(1), d.clone());
    }
    r.handle_timeout(10 * MS + NACK_AFTER);
    let (_, nack) = r.poll_transmit().expect("a NACK");
    // Repaired 20 ms after the NACK.
    for d in s.handle_nack(50 * MS, addr(1), &nack) {
        r.handle_datagram(60 * MS, addr(1), d);
    }
    drain(&mut r);
    // The next gap waits NACK_AFTER + 20 ms * 1.25 + 10 ms = 65 ms.
    let wire = send(&mut s, 100, 10..20);
    for d in wire
        .iter()
        .filter(|d| !record_id(d).is_some_and(|(_, s)| s == 12 || s == 13))
    {
        r.handle_datagram(200 * MS, addr(1), d.clone());
    }
    r.handle_timeout(200 * MS + NACK_AFTER);
    while r.poll_transmit().is_some() {}
    r.handle_timeout(264 * MS);
    assert_eq!(seqs(&drain(&mut r)), vec![10, 11]);
    r.handle_timeout(265 * MS);
    assert_eq!(seqs(&drain(&mut r)), (14..20).collect::<Vec<_>>());
}

/// Records 3 and 4 of ten lost, named in a NACK and sent again; the gap is given up when
/// the first hold ends, and the repair lands `rtt` after the first NACK.
fn repair_after_the_hold(s: &mut ShieldSender, r: &mut ShieldReceiver, rtt: Duration) {
    for d in without(&send(s, 0, 0..10), 3, 4) {
        r.handle_datagram(10 * MS, addr(1), d);
    }
    r.handle_timeout(10 * MS + NACK_AFTER);
    let (_, nack) = r.poll_transmit().expect("a NACK");
    let again = s.handle_nack(50 * MS, addr(1), &nack);
    r.handle_timeout(10 * MS + FIRST_HOLD);
    for d in again {
        r.handle_datagram(10 * MS + NACK_AFTER + rtt, addr(1), d);
    }
    drain(r);
}

#[test]
fn a_repair_that_lands_after_its_hold_still_lengthens_the_next_hold() {
    let mut s = ShieldSender::new();
    let mut r = ShieldReceiver::new();
    // The path's repair round trip (200 ms) is longer than the first hold: given up.
    repair_after_the_hold(&mut s, &mut r, 200 * MS);
    assert_eq!(r.stats().gaps_given_up, 1);
    assert_eq!(r.stats().repaired, 2, "late, but repaired");
    // The next gap waits NACK_AFTER + 200 ms * 1.25 + 10 ms = 290 ms, not FIRST_HOLD.
    for d in without(&send(&mut s, 400, 10..20), 12, 13) {
        r.handle_datagram(500 * MS, addr(1), d);
    }
    r.handle_timeout(500 * MS + FIRST_HOLD);
    assert_eq!(seqs(&drain(&mut r)), vec![10, 11], "still held");
    r.handle_timeout(789 * MS);
    assert!(drain(&mut r).is_empty(), "held until the learnt round trip");
    r.handle_timeout(790 * MS);
    assert_eq!(seqs(&drain(&mut r)), (14..20).collect::<Vec<_>>());
}

#[test]
fn a_repair_slower_than_the_longest_hold_is_not_waited_for() {
    let mut s = ShieldSender::new();
    let mut r = ShieldReceiver::new();
    // A 600 ms path: the repair lands long after any hold.
    repair_after_the_hold(&mut s, &mut r, 600 * MS);
    for d in without(&send(&mut s, 900, 10..20), 12, 13) {
        r.handle_datagram(1000 * MS, addr(1), d);
    }
    r.handle_timeout(1000 * MS + FIRST_HOLD - MS);
    assert_eq!(seqs(&drain(&mut r)), vec![10, 11]);
    r.handle_timeout(1000 * MS + FIRST_HOLD);
    assert_eq!(
        seqs(&drain(&mut r)),
        (14..20).collect::<Vec<_>>(),
        "the first hold, not the longest"
    );
}

#[test]
fn a_peer_that_sends_no_parity_gets_no_nack_and_a_short_hold() {
    let mut r = ShieldReceiver::new();
    for seq in [0u64, 1, 3, 4] {
        r.handle_datagram(Duration::ZERO, addr(1), record(1, seq, 80));
    }
    assert_eq!(r.poll_timeout(), Some(MIN_HOLD));
    r.handle_timeout(MIN_HOLD);
    assert_eq!(r.poll_transmit(), None);
    assert_eq!(seqs(&drain(&mut r)), vec![0, 1, 3, 4]);
}

#[test]
fn a_nack_gets_only_what_was_sent_to_its_sender_lately_and_at_most_twice() {
    let mut s = ShieldSender::new();
    send(&mut s, 0, 0..4);
    let nack = nack_bytes(1, 0, 0b1111);
    assert_eq!(
        s.handle_nack(10 * MS, addr(2), &nack),
        Vec::<Vec<u8>>::new(),
        "not its records"
    );
    assert!(
        s.handle_nack(10 * MS, addr(1), &nack_bytes(2, 0, 0b1111))
            .is_empty(),
        "other epoch"
    );
    assert!(
        s.handle_nack(10 * MS, addr(1), &nack[..11]).is_empty(),
        "malformed"
    );
    assert!(s
        .handle_nack(10 * MS, addr(1), &nack_bytes(1, u64::MAX, 0xFFFF))
        .is_empty());
    assert_eq!(s.handle_nack(10 * MS, addr(1), &nack).len(), 4);
    assert_eq!(s.handle_nack(11 * MS, addr(1), &nack).len(), 4);
    assert!(
        s.handle_nack(12 * MS, addr(1), &nack).is_empty(),
        "twice is the most"
    );
    send(&mut s, 0, 4..8);
    assert!(
        s.handle_nack(Duration::from_secs(2), addr(1), &nack_bytes(1, 4, 0b1111))
            .is_empty(),
        "older than a second"
    );
}

#[test]
fn a_record_lost_with_its_groups_other_loss_is_rebuilt_when_that_one_comes_late() {
    let mut s = ShieldSender::new();
    let wire = send(&mut s, 0, 0..10);
    let mut r = ShieldReceiver::new();
    let late = wire
        .iter()
        .find(|d| record_id(d).is_some_and(|(_, s)| s == 6))
        .cloned();
    for d in wire
        .iter()
        .filter(|d| !record_id(d).is_some_and(|(_, s)| s == 3 || s == 6))
    {
        r.handle_datagram(MS, addr(1), d.clone());
    }
    r.handle_datagram(2 * MS, addr(1), late.expect("record 6"));
    assert_eq!(seqs(&drain(&mut r)), (0..10).collect::<Vec<_>>());
    assert_eq!(r.stats().rebuilt, 1);
}

#[test]
fn reordered_records_reach_the_stack_in_order() {
    let mut r = ShieldReceiver::new();
    for seq in [0u64, 2, 1, 5, 3, 4, 6] {
        r.handle_datagram(MS, addr(1), record(1, seq, 80));
    }
    assert_eq!(seqs(&drain(&mut r)), (0..7).collect::<Vec<_>>());
    assert_eq!(r.stats().gaps_given_up, 0);
}

#[test]
fn a_record_later_than_the_hold_still_reaches_the_stack() {
    let mut r = ShieldReceiver::new();
    for seq in [0u64, 2] {
        r.handle_datagram(Duration::ZERO, addr(1), record(1, seq, 80));
    }
    r.handle_timeout(MAX_HOLD);
    r.handle_datagram(MAX_HOLD + MS, addr(1), record(1, 1, 80));
    assert_eq!(seqs(&drain(&mut r)), vec![0, 2, 1]);
}

#[test]
fn a_jump_after_an_outage_starts_over_without_holding() {
    let mut r = ShieldReceiver::new();
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 0, 80));
    r.handle_datagram(MS, addr(1), record(1, 5_000, 80));
    r.handle_datagram(MS, addr(1), record(1, 5_001, 80));
    assert_eq!(seqs(&drain(&mut r)), vec![0, 5_000, 5_001]);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn a_new_epoch_releases_what_waited_and_starts_again() {
    let mut r = ShieldReceiver::new();
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 7, 80));
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 9, 80));
    r.handle_datagram(MS, addr(1), record(2, 0, 80));
    let got = drain(&mut r);
    let ids: Vec<_> = got.iter().map(|d| record_id(d).expect("record")).collect();
    assert_eq!(ids, vec![(1, 7), (1, 9), (2, 0)]);
}

#[test]
fn peers_are_kept_apart() {
    let mut r = ShieldReceiver::new();
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 0, 80));
    r.handle_datagram(Duration::ZERO, addr(2), record(1, 100, 80));
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 1, 80));
    assert_eq!(drain(&mut r).len(), 3);
}

#[test]
fn other_datagrams_pass_at_once() {
    let mut r = ShieldReceiver::new();
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 0, 80));
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 2, 80));
    let stun = vec![0u8, 1, 0, 8, 1, 2, 3];
    r.handle_datagram(Duration::ZERO, addr(1), stun.clone());
    let got = drain(&mut r);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], stun, "not held behind record 1's gap");
}

/// A parity's header for epoch 1 from sequence number 0: `mask` says which records it
/// covers, `len_xor` the XOR of their lengths.
fn parity_header(mask: u16, len_xor: u16) -> Vec<u8> {
    let mut p = vec![PARITY_MARKER, PARITY_VERSION, 0, 1, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&mask.to_be_bytes());
    p.extend_from_slice(&len_xor.to_be_bytes());
    p
}

#[test]
fn malformed_and_lying_parities_rebuild_nothing() {
    let mut r = ShieldReceiver::new();
    for seq in [0u64, 1, 3] {
        r.handle_datagram(Duration::ZERO, addr(1), record(1, seq, 80));
    }
    // Too short, wrong version, one member only.
    let mut one_member = parity_header(0b1, 0);
    one_member.extend([0u8; 40]);
    for bad in [
        vec![PARITY_MARKER],
        vec![PARITY_MARKER, 9, 0, 1],
        one_member,
    ] {
        r.handle_datagram(MS, addr(1), bad);
    }
    // Covers 0..=3 but its bytes are noise: what it rebuilds is no record 2.
    let mut lie = parity_header(0x0F, 93);
    lie.extend((0..93).map(|i| i as u8));
    r.handle_datagram(MS, addr(1), lie);
    // Claims a length longer than its bytes.
    let mut long = parity_header(0x0F, 0xFFFF);
    long.extend([0u8; 20]);
    r.handle_datagram(MS, addr(1), long);
    assert_eq!(r.stats().rebuilt, 0);
    assert_eq!(r.stats().bad_parities, 5);
    assert_eq!(seqs(&drain(&mut r)), vec![0, 1], "3 still waits for 2");
}

#[test]
fn a_flood_of_records_ahead_of_a_gap_holds_a_bounded_number() {
    let mut r = ShieldReceiver::new();
    r.handle_datagram(Duration::ZERO, addr(1), record(1, 0, 10));
    let mut delivered = seqs(&drain(&mut r));
    // Never record 1.
    for seq in 2..2_000u64 {
        r.handle_datagram(Duration::ZERO, addr(1), record(1, seq, 10));
        delivered.extend(seqs(&drain(&mut r)));
        assert!(r.held() <= MAX_HELD);
    }
    r.handle_timeout(MAX_HOLD);
    delivered.extend(seqs(&drain(&mut r)));
    let expected: Vec<u64> = std::iter::once(0).chain(2..2_000).collect();
    assert_eq!(
        delivered, expected,
        "every record reached the stack once, in order"
    );
}

#[test]
fn the_first_record_after_a_silence_starts_over_without_holding_or_asking() {
    let mut s = ShieldSender::new();
    let mut r = ShieldReceiver::new();
    for d in send(&mut s, 0, 0..10) {
        r.handle_datagram(10 * MS, addr(1), d);
    }
    drain(&mut r);
    // Records 10..30 were lost in an outage; 30 arrives a second later.
    r.handle_datagram(Duration::from_secs(1), addr(1), record(1, 30, 80));
    r.handle_datagram(Duration::from_secs(1), addr(1), record(1, 31, 80));
    assert_eq!(seqs(&drain(&mut r)), vec![30, 31]);
    assert_eq!(r.poll_timeout(), None, "nothing held, nothing to ask for");
}
