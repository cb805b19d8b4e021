use super::*;

const MS: Duration = Duration::from_millis(1);

/// Feedback for a 100 ms interval in which `bps` arrived, with this loss and queue.
fn fb(bps: u64, loss: f64, delay_ms: u32) -> Feedback {
    let received = 100;
    Feedback {
        interval_us: 100_000,
        bytes: (bps / 8 / 10) as u32,
        received,
        lost: (f64::from(received) * loss / (1.0 - loss)).round() as u32,
        queue_delay_us: delay_ms * 1000,
        highest_seq: 0,
        rtt_us: 0,
    }
}

fn rate_controller(start: u64) -> RateController {
    RateController::new(RateConfig {
        start_bps: start,
        ..RateConfig::default()
    })
}

/// Feed one feedback every 100 ms for `secs`, the path carrying at most `link_bps`:
/// what arrives is what was sent, capped at the link, and a queue grows while sending above.
fn run(rc: &mut RateController, from: Duration, secs: u32, link_bps: u64) -> Duration {
    let mut t = from;
    let mut queue_ms = 0.0f64;
    for _ in 0..secs * 10 {
        t += 100 * MS;
        let sent = rc.estimate_bps();
        let arrived = sent.min(link_bps);
        queue_ms = (queue_ms + (sent as f64 - link_bps as f64) / link_bps as f64 * 100.0)
            .clamp(0.0, 100.0);
        let loss = if queue_ms >= 100.0 { 0.05 } else { 0.0 };
        rc.handle_feedback(t, &fb(arrived, loss, queue_ms as u32), Some(40 * MS))
            .unwrap();
    }
    t
}

#[test]
fn a_clean_path_that_carries_everything_lets_the_estimate_grow_to_the_maximum() {
    let mut rc = rate_controller(2_000_000);
    run(&mut rc, Duration::ZERO, 10, 1_000_000_000);
    assert_eq!(rc.estimate_bps(), RateConfig::default().max_bps);
}

#[test]
fn the_estimate_settles_under_a_bottleneck_without_collapsing() {
    let mut rc = rate_controller(2_000_000);
    let t = run(&mut rc, Duration::ZERO, 10, 6_000_000);
    // Over the next seconds it stays between 60 % and 120 % of the link: it probes a
    // little above and cuts back when the queue shows.
    for s in 0..5 {
        run(&mut rc, t + Duration::from_secs(s), 1, 6_000_000);
        let e = rc.estimate_bps();
        assert!(
            (3_600_000..=7_200_000).contains(&e),
            "estimate {e} after {s} s"
        );
    }
}

#[test]
fn a_step_down_of_the_link_brings_the_estimate_under_it_within_a_second() {
    let mut rc = rate_controller(20_000_000);
    let t = run(&mut rc, Duration::ZERO, 5, 20_000_000);
    assert!(rc.estimate_bps() > 12_000_000, "{}", rc.estimate_bps());
    run(&mut rc, t, 1, 2_000_000);
    assert!(rc.estimate_bps() <= 2_000_000, "{}", rc.estimate_bps());
}

#[test]
fn a_long_queue_that_drains_is_not_cut_again() {
    let mut rc = rate_controller(4_000_000);
    let mut t = Duration::ZERO;
    // A queue builds: cut to what arrived.
    for q in [20, 40, 70, 100, 130, 160, 190, 220] {
        t += 100 * MS;
        rc.handle_feedback(t, &fb(2_000_000, 0.0, q), Some(40 * MS))
            .unwrap();
    }
    let cut = rc.estimate_bps();
    assert!(cut <= 1_700_000, "{cut}");
    // The sender is now under the path: the queue shrinks, still long, while less
    // arrives (the transport caught its breath). No further cut.
    for q in [200, 180, 150, 120, 100, 80, 70] {
        t += 100 * MS;
        rc.handle_feedback(t, &fb(1_000_000, 0.0, q), Some(40 * MS))
            .unwrap();
    }
    assert_eq!(rc.estimate_bps(), cut);
    // A long queue that stands still is too much again.
    for _ in 0..8 {
        t += 100 * MS;
        rc.handle_feedback(t, &fb(1_000_000, 0.0, 90), Some(40 * MS))
            .unwrap();
    }
    assert!(rc.estimate_bps() < cut, "{}", rc.estimate_bps());
}

#[test]
fn random_loss_below_the_hold_threshold_does_not_cut_the_rate() {
    let mut rc = rate_controller(3_000_000);
    for i in 1..=50 {
        rc.handle_feedback(i * 100 * MS, &fb(3_000_000, 0.015, 2), None)
            .unwrap();
    }
    assert!(rc.estimate_bps() >= 3_000_000);
}

#[test]
fn heavy_loss_cuts_the_rate_even_without_a_queue() {
    let mut rc = rate_controller(4_000_000);
    rc.handle_feedback(100 * MS, &fb(4_000_000, 0.3, 0), None)
        .unwrap();
    assert!(rc.estimate_bps() <= 3_400_000, "{}", rc.estimate_bps());
}

#[test]
fn one_lost_message_among_few_is_not_heavy_loss() {
    let mut rc = rate_controller(2_000_000);
    // A slow link: 6 messages a feedback, one of them now and then missing.
    for i in 1..=30u32 {
        let f = Feedback {
            received: 5,
            lost: u32::from(i % 3 == 0),
            ..fb(2_000_000, 0.0, 0)
        };
        rc.handle_feedback(i * 100 * MS, &f, None).unwrap();
    }
    assert!(rc.estimate_bps() >= 2_000_000, "{}", rc.estimate_bps());
    // Lasting heavy loss over as few messages still cuts.
    for i in 31..=45u32 {
        let f = Feedback {
            received: 4,
            lost: 2,
            ..fb(2_000_000, 0.0, 0)
        };
        rc.handle_feedback(i * 100 * MS, &f, None).unwrap();
    }
    assert!(rc.estimate_bps() < 2_000_000, "{}", rc.estimate_bps());
}

#[test]
fn an_idle_sender_does_not_grow_the_estimate_on_an_empty_path() {
    let mut rc = rate_controller(2_000_000);
    for i in 1..=100 {
        rc.handle_feedback(i * 100 * MS, &fb(50_000, 0.0, 0), None)
            .unwrap();
    }
    assert_eq!(rc.estimate_bps(), 2_000_000);
}

#[test]
fn the_start_climbs_to_the_configured_rate_soon_after_the_burst_unless_the_path_limits_it() {
    // Content that uses a third of the estimate, on a clean path: 1.5 s of start burst,
    // then 50 % a second.
    let config = RateConfig {
        start_bps: 4_000_000,
        max_encoder_bps: 8_000_000,
        ..RateConfig::default()
    };
    let mut rc = RateController::new(config);
    for i in 1..=35 {
        let used = rc.estimate_bps() / 3;
        rc.handle_feedback(i * 100 * MS, &fb(used, 0.0, 2), Some(40 * MS))
            .unwrap();
    }
    assert_eq!(rc.estimate_bps(), 8_000_000);
    // A path that queues at once: no climb past where it limits.
    let mut rc = RateController::new(config);
    let t = run(&mut rc, Duration::ZERO, 4, 3_000_000);
    assert!(rc.estimate_bps() < 4_000_000, "{}", rc.estimate_bps());
    run(&mut rc, t, 4, 3_000_000);
    assert!(rc.estimate_bps() < 4_000_000, "{}", rc.estimate_bps());
}

#[test]
fn cuts_wait_a_round_trip_for_the_last_one_to_show() {
    let mut rc = rate_controller(4_000_000);
    rc.handle_feedback(100 * MS, &fb(3_000_000, 0.0, 120), Some(300 * MS))
        .unwrap();
    let first = rc.estimate_bps();
    rc.handle_feedback(200 * MS, &fb(1_000_000, 0.0, 120), Some(300 * MS))
        .unwrap();
    assert_eq!(rc.estimate_bps(), first);
    // A round trip later it may cut again, from the best of the last three intervals
    // (one bad interval may be a transport stall, not the path).
    rc.handle_feedback(450 * MS, &fb(1_000_000, 0.0, 120), Some(300 * MS))
        .unwrap();
    rc.handle_feedback(550 * MS, &fb(1_000_000, 0.0, 120), Some(300 * MS))
        .unwrap();
    assert_eq!(rc.estimate_bps(), 850_000);
}

#[test]
fn hostile_feedback_is_refused_or_clamped_never_trusted() {
    let mut rc = rate_controller(2_000_000);
    for interval_us in [0, 999, 10_000_001, u32::MAX] {
        let bad = Feedback {
            interval_us,
            ..fb(2_000_000, 0.0, 0)
        };
        assert_eq!(
            rc.handle_feedback(MS, &bad, None),
            Err(FeedbackRefusal::Interval(interval_us))
        );
    }
    // Claims of absurd throughput cannot push past the configured maximum.
    for i in 1..=200 {
        let liar = Feedback {
            bytes: u32::MAX,
            ..fb(0, 0.0, 0)
        };
        rc.handle_feedback(i * 100 * MS, &liar, None).unwrap();
    }
    assert_eq!(rc.estimate_bps(), RateConfig::default().max_bps);
    // Absurd loss and delay only ever cut down to the floor.
    for i in 201..=400 {
        let gloom = Feedback {
            lost: u32::MAX,
            queue_delay_us: u32::MAX,
            ..fb(1_000, 0.0, 0)
        };
        rc.handle_feedback(i * 100 * MS, &gloom, None).unwrap();
    }
    assert_eq!(rc.estimate_bps(), RateConfig::default().min_bps);
}

#[test]
fn fewer_frames_are_asked_for_when_bits_are_short() {
    assert_eq!(rate_controller(8_000_000).target().max_fps, 60);
    assert_eq!(rate_controller(2_000_000).target().max_fps, 30);
    assert_eq!(rate_controller(200_000).target().max_fps, 15);
    let t = rate_controller(2_000_000).target();
    assert!(t.encoder_bps < t.estimate_bps && t.estimate_bps < t.pacing_bps);
}

#[test]
fn impossible_bounds_are_refused_with_the_rule() {
    let bad = RateConfig {
        start_bps: 10,
        ..RateConfig::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("min (150000) <= start (10)"), "{e}");
    let bad = RateConfig {
        best_qp: 45,
        worst_qp: 40,
        ..RateConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("best_qp (45) <= worst_qp (40)"));
    let bad = RateConfig {
        worst_qp: 52,
        ..RateConfig::default()
    };
    assert!(bad.validate().is_err());
    assert!(RateConfig::default().validate().is_ok());
}

#[test]
fn the_quality_floor_coarsens_soon_after_the_rate_falls_and_refines_only_after_it_held() {
    let mut rc = rate_controller(20_000_000);
    assert_eq!(rc.target().max_qp, 28);
    // The link drops to 8 Mbit/s: the floor opens within seconds, so the encoder's rate
    // control can meet the rate at full frame rate.
    let t = run(&mut rc, Duration::ZERO, 3, 8_000_000);
    let coarse = rc.target().max_qp;
    assert_eq!(coarse, 40, "at {} bit/s", rc.estimate_bps());
    // Below 2 Mbit/s to the worst: scrolled text at quantiser 40 costs 1.3-2.4 Mbit/s.
    let t = run(&mut rc, t, 4, 1_000_000);
    assert_eq!(rc.target().max_qp, 51, "at {} bit/s", rc.estimate_bps());
    // Back to a fast link: finer only after the rate held for 3 s.
    let t = run(&mut rc, t, 1, 1_000_000_000);
    assert!(rc.target().max_qp > 28, "too early to refine");
    run(&mut rc, t, 20, 1_000_000_000);
    assert!(rc.estimate_bps() >= 16_000_000, "{}", rc.estimate_bps());
    assert_eq!(rc.target().max_qp, 28);
}

#[test]
fn a_queue_during_the_start_burst_does_not_cut_but_loss_does_and_the_hold_ends() {
    let mut rc = rate_controller(8_000_000);
    rc.hold_delay_cuts(Duration::ZERO);
    // Slow start and the first keyframes: little arrives late. Not the path.
    rc.handle_feedback(500 * MS, &fb(2_000_000, 0.0, 200), Some(40 * MS))
        .unwrap();
    assert_eq!(rc.estimate_bps(), 8_000_000);
    // Heavy loss is evidence even then.
    rc.handle_feedback(700 * MS, &fb(2_000_000, 0.3, 200), Some(40 * MS))
        .unwrap();
    let after_loss = rc.estimate_bps();
    assert!(after_loss < 8_000_000, "{after_loss}");
    // Past the hold a queue cuts as usual.
    rc.handle_feedback(2000 * MS, &fb(2_000_000, 0.0, 200), Some(40 * MS))
        .unwrap();
    assert!(rc.estimate_bps() <= 2_000_000, "{}", rc.estimate_bps());
}

#[test]
fn on_a_long_path_the_start_hold_lasts_five_round_trips() {
    let mut rc = rate_controller(8_000_000);
    rc.hold_delay_cuts(Duration::ZERO);
    // 600 ms round trips: slow start needs seconds, not 1.5 s.
    rc.handle_feedback(2500 * MS, &fb(2_000_000, 0.0, 400), Some(600 * MS))
        .unwrap();
    assert_eq!(rc.estimate_bps(), 8_000_000);
    rc.handle_feedback(3100 * MS, &fb(2_000_000, 0.0, 400), Some(600 * MS))
        .unwrap();
    assert!(rc.estimate_bps() < 8_000_000);
}

#[test]
fn content_that_fills_a_slow_path_goes_compact_and_back_once_the_path_holds_more() {
    let mut rc = rate_controller(8_000_000);
    rc.set_wide(true);
    assert!(!rc.target().compact);
    let t = run(&mut rc, Duration::ZERO, 4, 1_500_000);
    assert!(rc.target().compact, "at {} bit/s", rc.estimate_bps());
    // A fast path again: full bands only once the estimate held above 8 Mbit/s for 5 s.
    let t = run(&mut rc, t, 3, 1_000_000_000);
    assert!(
        rc.target().compact,
        "too early, at {} bit/s",
        rc.estimate_bps()
    );
    run(&mut rc, t, 15, 1_000_000_000);
    assert!(!rc.target().compact, "at {} bit/s", rc.estimate_bps());
}

#[test]
fn a_path_never_shown_to_carry_the_full_layout_goes_compact_under_5_mbit() {
    // A 4 Mbit/s path from a 4 Mbit/s start: the estimate settles around 3.5-4.5, never
    // near 8, and wide content goes compact without waiting for it to fall under 3.
    let mut rc = rate_controller(4_000_000);
    rc.set_wide(true);
    run(&mut rc, Duration::ZERO, 4, 4_000_000);
    assert!(rc.estimate_bps() > COMPACT_BELOW, "{}", rc.estimate_bps());
    assert!(rc.target().compact, "at {} bit/s", rc.estimate_bps());

    // Before any cut an estimate under 5 says nothing (every session starts at 4).
    let mut rc = rate_controller(4_000_000);
    rc.set_wide(true);
    for i in 1..=10u32 {
        rc.handle_feedback(i * 100 * MS, &fb(500_000, 0.0, 0), Some(10 * MS))
            .unwrap();
    }
    assert!(rc.estimate_bps() < COMPACT_BELOW_UNPROVEN);
    assert!(!rc.target().compact);

    // The same path after the estimate once reached 8 Mbit/s: full bands, until the
    // estimate falls under 3.
    let mut rc = rate_controller(4_000_000);
    rc.set_wide(true);
    let t = run(&mut rc, Duration::ZERO, 3, 1_000_000_000);
    assert!(rc.estimate_bps() >= FULL_ABOVE);
    run(&mut rc, t, 4, 4_000_000);
    assert!(rc.estimate_bps() > COMPACT_BELOW, "{}", rc.estimate_bps());
    assert!(!rc.target().compact, "at {} bit/s", rc.estimate_bps());
}

#[test]
fn cheap_content_stays_in_full_bands_on_a_slow_path() {
    let mut rc = rate_controller(2_000_000);
    // Typing: 300 kbit/s arrive, with now and then a queue that cuts the estimate.
    for i in 1..=60u32 {
        let queue = if i % 10 < 3 { 90 } else { 5 };
        rc.handle_feedback(i * 100 * MS, &fb(300_000, 0.0, queue), Some(40 * MS))
            .unwrap();
    }
    assert!(rc.last_decrease.is_some(), "the queue cut");
    assert!(!rc.target().compact);
    // The same rates with most of the screen changing: compact.
    rc.set_wide(true);
    for i in 61..=80u32 {
        let queue = if i % 10 < 3 { 90 } else { 5 };
        rc.handle_feedback(i * 100 * MS, &fb(300_000, 0.0, queue), Some(40 * MS))
            .unwrap();
    }
    assert!(rc.target().compact);
}

#[test]
fn in_the_compact_layout_the_quality_floor_stays_loose_while_the_rate_moves() {
    // Each new floor is a keyframe of the whole screen in one band: none while compact.
    let mut rc = rate_controller(8_000_000);
    rc.set_wide(true);
    let t = run(&mut rc, Duration::ZERO, 4, 1_500_000);
    assert!(rc.target().compact);
    assert_eq!(rc.target().max_qp, 51);
    // The path widens to 5 Mbit/s (still under the way back to full bands), then narrows.
    let t = run(&mut rc, t, 8, 5_000_000);
    assert!(rc.estimate_bps() > 3_000_000, "{}", rc.estimate_bps());
    assert_eq!(rc.target().max_qp, 51);
    run(&mut rc, t, 4, 1_000_000);
    assert!(rc.target().compact);
    assert_eq!(rc.target().max_qp, 51);
}

#[test]
fn a_stalled_transport_does_not_hold_back_the_compact_layout() {
    // The estimate fell under the threshold, then next to nothing arrives (SCTP waits out a
    // timer): the layout goes compact on schedule anyway.
    let mut rc = rate_controller(2_000_000);
    rc.set_wide(true);
    let stalled = Feedback {
        received: 1,
        lost: 0,
        ..fb(10_000, 0.0, 0)
    };
    assert!(!rc.target().compact);
    for i in 1..=8u32 {
        rc.handle_feedback(i * 100 * MS, &stalled, Some(40 * MS))
            .unwrap();
    }
    assert!(rc.target().compact);
    assert_eq!(rc.estimate_bps(), 2_000_000, "a stall cuts nothing");
}

#[test]
fn wide_content_on_a_fast_path_goes_to_fewer_bands_and_back_once_it_stops() {
    let mut rc = rate_controller(8_000_000);
    let t = run(&mut rc, Duration::ZERO, 3, 1_000_000_000);
    assert!(
        !rc.target().fewer_bands,
        "small changes keep the configured bands"
    );
    rc.set_wide(true);
    let t = run(&mut rc, t, 1, 1_000_000_000);
    assert!(!rc.target().fewer_bands, "too early: a flick of the wheel");
    let t = run(&mut rc, t, 1, 1_000_000_000);
    let target = rc.target();
    assert!(target.fewer_bands && !target.compact, "{target:?}");
    // Typing again: the configured bands once that held for 5 s.
    rc.set_wide(false);
    let t = run(&mut rc, t, 4, 1_000_000_000);
    assert!(rc.target().fewer_bands, "too early");
    run(&mut rc, t, 2, 1_000_000_000);
    assert!(!rc.target().fewer_bands);
}

#[test]
fn a_slow_path_takes_wide_content_compact_not_to_fewer_bands_and_back_in_one_step() {
    let mut rc = rate_controller(8_000_000);
    rc.set_wide(true);
    let t = run(&mut rc, Duration::ZERO, 4, 1_500_000);
    let target = rc.target();
    assert!(target.compact && !target.fewer_bands, "{target:?}");
    // The path recovers under content still wide: out of compact straight into fewer
    // bands, never through the configured ones.
    let mut t = t;
    for _ in 0..200 {
        t = run(&mut rc, t, 1, 1_000_000_000);
        let target = rc.target();
        assert!(target.compact || target.fewer_bands, "{target:?}");
        if !target.compact {
            return;
        }
    }
    panic!("never left compact: {:?}", rc.target());
}

#[test]
fn fewer_bands_wait_for_a_path_shown_fast_and_are_never_entered_on_a_long_one() {
    // Wide from the start on a fast path: not before the estimate reached FULL_ABOVE.
    let mut rc = rate_controller(4_000_000);
    rc.set_wide(true);
    let mut t = Duration::ZERO;
    while rc.estimate_bps() < FULL_ABOVE {
        assert!(!rc.target().fewer_bands, "at {} bit/s", rc.estimate_bps());
        t = run(&mut rc, t, 1, 1_000_000_000);
        assert!(t < Duration::from_secs(30), "never reached {FULL_ABOVE}");
    }
    run(&mut rc, t, 3, 1_000_000_000);
    assert!(rc.target().fewer_bands);
    // The same path 600 ms long: the restart's keyframe would land in slow start.
    let mut rc = rate_controller(8_000_000);
    rc.set_wide(true);
    let mut t = Duration::ZERO;
    for _ in 0..100 {
        t += 100 * MS;
        let sent = rc.estimate_bps();
        rc.handle_feedback(t, &fb(sent, 0.0, 0), Some(600 * MS))
            .unwrap();
    }
    assert!(rc.estimate_bps() >= FULL_ABOVE, "{}", rc.estimate_bps());
    assert!(!rc.target().fewer_bands);
}

#[test]
fn after_an_outage_the_sender_follows_the_restarting_window_back_to_the_estimate() {
    let mut rc = rate_controller(20_000_000);
    let mut t = run(&mut rc, Duration::ZERO, 5, 20_000_000);
    let before = rc.target();
    assert!(before.estimate_bps > 12_000_000, "{before:?}");
    rc.restart(t, Some(30 * MS));
    // Four packets a round trip, the window SCTP restarts with.
    let first = rc.target();
    assert!(
        (1_100_000..=1_400_000).contains(&first.estimate_bps),
        "{first:?}"
    );
    assert!(first.encoder_bps < first.estimate_bps);
    // The layout and the quality floor stay: the return costs no restart of the stream.
    let kept = |r: &RateTarget| (r.compact, r.fewer_bands, r.max_qp);
    assert_eq!(kept(&first), kept(&before));
    let mut seen = vec![first.estimate_bps];
    for _ in 0..25 {
        t += 100 * MS;
        let sent = rc.target().estimate_bps;
        rc.handle_feedback(t, &fb(sent, 0.0, 0), Some(30 * MS))
            .unwrap();
        seen.push(rc.target().estimate_bps);
        assert_eq!(kept(&rc.target()), kept(&before));
    }
    // A packet more each round trip: 30 ms later the window carries 320 kbit/s more.
    assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    assert!((3_500_000..=5_000_000).contains(&seen[3]), "{seen:?}");
    // Within 2 s it is the estimate's again.
    assert!(
        *seen.last().unwrap() >= before.estimate_bps,
        "{seen:?} against {before:?}"
    );
}

#[test]
fn a_restart_under_an_estimate_the_window_already_carries_changes_nothing() {
    let mut rc = rate_controller(600_000);
    let before = rc.target();
    rc.restart(Duration::from_secs(1), Some(30 * MS));
    assert_eq!(rc.target(), before);
}

#[test]
fn losses_reported_just_after_an_outage_are_the_outages_and_later_ones_cut() {
    let mut rc = rate_controller(20_000_000);
    let mut t = run(&mut rc, Duration::ZERO, 5, 20_000_000);
    let before = rc.estimate_bps();
    rc.restart(t, Some(30 * MS));
    // The chunks the dark swallowed, named lost 400 ms after the viewer saw past them.
    for _ in 0..5 {
        t += 100 * MS;
        rc.handle_feedback(t, &fb(2_000_000, 0.5, 0), Some(30 * MS))
            .unwrap();
    }
    assert!(
        rc.estimate_bps() >= before,
        "{} < {before}",
        rc.estimate_bps()
    );
    // Past that, loss is the path's again.
    for _ in 0..3 {
        t += 100 * MS;
        rc.handle_feedback(t, &fb(2_000_000, 0.5, 0), Some(30 * MS))
            .unwrap();
    }
    assert!(
        rc.estimate_bps() < before * 9 / 10,
        "{} against {before}",
        rc.estimate_bps()
    );
}
