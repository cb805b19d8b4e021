//! The link model in virtual time: every figure is exact or within a stated tolerance.

use std::time::Duration;

use super::*;
use crate::config::{GilbertElliott, Outage, RandomRate, RateStep};

const MS: Duration = Duration::from_millis(1);

fn packet(id: u64, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(8)];
    p[..8].copy_from_slice(&id.to_be_bytes());
    p
}

fn id(p: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[..8]);
    u64::from_be_bytes(b)
}

/// Delivers everything due up to `until`, at the exact times the link asks to be woken.
fn drain_until(link: &mut Link, until: Duration, out: &mut Vec<(Duration, u64, usize)>) {
    while let Some(t) = link.poll_timeout() {
        if t > until {
            break;
        }
        while let Some(p) = link.poll_deliver(t) {
            out.push((t, id(&p), p.len()));
        }
    }
}

/// Offers `arrivals` (time, length) in order; returns verdicts and (delivery time, id, len).
fn run(
    link: &mut Link,
    arrivals: impl IntoIterator<Item = (Duration, usize)>,
) -> (Vec<Verdict>, Vec<(Duration, u64, usize)>) {
    let mut verdicts = Vec::new();
    let mut out = Vec::new();
    for (i, (t, len)) in arrivals.into_iter().enumerate() {
        drain_until(link, t, &mut out);
        verdicts.push(link.handle_packet(t, packet(i as u64, len)));
    }
    drain_until(link, Duration::MAX, &mut out);
    (verdicts, out)
}

/// `len`-byte packets at `bits_per_sec` for `secs`.
fn constant_rate(bits_per_sec: u64, len: usize, secs: u64) -> Vec<(Duration, usize)> {
    let gap = Duration::from_nanos(len as u64 * 8 * 1_000_000_000 / bits_per_sec);
    let n = secs * bits_per_sec / (len as u64 * 8);
    (0..n).map(|i| (gap * i as u32, len)).collect()
}

fn bits_per_sec_between(out: &[(Duration, u64, usize)], from: Duration, to: Duration) -> f64 {
    let bytes: usize = out
        .iter()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .map(|(_, _, len)| len)
        .sum();
    bytes as f64 * 8.0 / (to - from).as_secs_f64()
}

fn link(config: LinkConfig) -> Link {
    Link::new(config).expect("valid test config")
}

#[test]
fn rate_limits_throughput_to_the_configured_bits_per_second() {
    let mut l = link(LinkConfig {
        rate: Some(2_000_000),
        ..LinkConfig::default()
    });
    let (verdicts, out) = run(&mut l, constant_rate(4_000_000, 1000, 10));
    let bps = bits_per_sec_between(&out, Duration::from_secs(1), Duration::from_secs(10));
    assert!((bps - 2e6).abs() < 2e6 * 0.01, "{bps} bit/s");
    let dropped = verdicts
        .iter()
        .filter(|v| **v == Verdict::DroppedByQueue)
        .count();
    assert!(
        (dropped as f64 / verdicts.len() as f64 - 0.5).abs() < 0.02,
        "half the offered load must be dropped, {dropped} of {}",
        verdicts.len()
    );
    assert_eq!(l.stats().dropped_queue, dropped as u64);
    assert_eq!(l.stats().delivered, out.len() as u64);
}

#[test]
fn serialisation_delay_is_length_over_rate_plus_propagation() {
    let mut l = link(LinkConfig {
        rate: Some(1_000_000),
        delay: 20 * MS,
        ..LinkConfig::default()
    });
    // 1250 bytes at 1 Mbit/s is 10 ms on the wire; the second waits for the first.
    let (_, out) = run(&mut l, [(Duration::ZERO, 1250), (Duration::ZERO, 1250)]);
    assert_eq!(out[0].0, 30 * MS);
    assert_eq!(out[1].0, 40 * MS);
}

#[test]
fn queue_overflow_drops_tail_not_head() {
    let mut l = link(LinkConfig {
        rate: Some(1_000_000),
        queue_limit: QueueLimit::Bytes(10_000),
        ..LinkConfig::default()
    });
    let (verdicts, out) = run(&mut l, (0..30).map(|_| (Duration::ZERO, 1000)));
    assert!(verdicts[..10].iter().all(|v| *v == Verdict::Accepted));
    assert!(verdicts[10..].iter().all(|v| *v == Verdict::DroppedByQueue));
    let ids: Vec<u64> = out.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, (0..10).collect::<Vec<u64>>());
}

#[test]
fn queue_limit_in_time_follows_the_current_rate_with_a_floor() {
    let mut l = link(LinkConfig {
        rate: Some(20_000_000),
        rate_steps: vec![RateStep {
            at: Duration::from_secs(5),
            bits_per_sec: 1_000_000,
        }],
        ..LinkConfig::default()
    });
    // The default: 100 ms at the rate, so 250 kB at 20 Mbit/s ...
    assert_eq!(l.queue_limit_at(Duration::ZERO), 250_000);
    // ... and 12.5 kB at 1 Mbit/s, raised to the 30 kB floor.
    assert_eq!(l.queue_limit_at(Duration::from_secs(6)), 30_000);
}

#[test]
fn a_full_queue_adds_its_limit_in_delay() {
    let mut l = link(LinkConfig {
        rate: Some(8_000_000),
        queue_limit: QueueLimit::Delay(50 * MS),
        ..LinkConfig::default()
    });
    let (_, out) = run(&mut l, constant_rate(16_000_000, 1000, 2));
    // Sent at t, delivered at most 50 ms (the queue) + 1 ms (one packet) later.
    let gap = Duration::from_nanos(500_000);
    let worst = out
        .iter()
        .map(|(t, id, _)| *t - gap * *id as u32)
        .max()
        .expect("something delivered");
    assert!(worst <= 51 * MS && worst >= 49 * MS, "{worst:?}");
}

#[test]
fn random_loss_matches_its_probability() {
    let mut l = link(LinkConfig {
        loss: 0.05,
        ..LinkConfig::default()
    });
    let (verdicts, _) = run(&mut l, (0..100_000).map(|i| (MS * i, 100)));
    let lost = verdicts
        .iter()
        .filter(|v| **v == Verdict::DroppedByLoss)
        .count();
    assert!((4_700..5_300).contains(&lost), "{lost} lost of 100000");
}

/// Mean length of runs of consecutive losses.
fn mean_loss_run(verdicts: &[Verdict]) -> (f64, usize) {
    let (mut runs, mut lost, mut in_run) = (0usize, 0usize, false);
    for v in verdicts {
        let l = *v == Verdict::DroppedByLoss;
        lost += usize::from(l);
        if l && !in_run {
            runs += 1;
        }
        in_run = l;
    }
    (lost as f64 / runs.max(1) as f64, lost)
}

#[test]
fn gilbert_elliott_loss_comes_in_bursts() {
    let n = 200_000;
    let arrivals = || (0..n).map(|i| (MS * i, 100));
    let ge = GilbertElliott {
        p_good_to_bad: 0.01,
        p_bad_to_good: 0.24,
        loss_in_good: 0.0,
        loss_in_bad: 1.0,
    };
    let mut bursty = link(LinkConfig {
        gilbert_elliott: Some(ge),
        ..LinkConfig::default()
    });
    let (v, _) = run(&mut bursty, arrivals());
    let (burst, lost) = mean_loss_run(&v);
    let rate = lost as f64 / n as f64;
    assert!((rate - 0.04).abs() < 0.004, "GE loss rate {rate}");
    // Mean burst 1 / p_bad_to_good, about 4.2 packets.
    assert!((3.6..4.8).contains(&burst), "GE mean burst {burst}");

    let mut random = link(LinkConfig {
        loss: 0.04,
        ..LinkConfig::default()
    });
    let (v, _) = run(&mut random, arrivals());
    let (burst, _) = mean_loss_run(&v);
    assert!(
        burst < 1.1,
        "random loss should be isolated, mean run {burst}"
    );
}

#[test]
fn outage_drops_everything_inside_its_window_only() {
    let mut l = link(LinkConfig {
        delay: 10 * MS,
        outages: vec![Outage {
            start: Duration::from_secs(2),
            length: Duration::from_secs(1),
        }],
        ..LinkConfig::default()
    });
    let (verdicts, _) = run(&mut l, (0..500).map(|i| (10 * MS * i, 100)));
    for (i, v) in verdicts.iter().enumerate() {
        let inside = (200..300).contains(&i);
        let expected = if inside {
            Verdict::DroppedByOutage
        } else {
            Verdict::Accepted
        };
        assert_eq!(*v, expected, "packet {i} at {} ms", i * 10);
    }
    assert_eq!(l.stats().dropped_outage, 100);
    assert_eq!(l.stats().delivered, 400);
}

#[test]
fn a_packet_still_in_the_bottleneck_when_the_outage_starts_is_lost() {
    let mut l = link(LinkConfig {
        rate: Some(1_000_000),
        outages: vec![Outage {
            start: Duration::from_secs(2),
            length: Duration::from_secs(1),
        }],
        ..LinkConfig::default()
    });
    // 10 ms on the wire: the first finishes before the outage, the second inside it.
    let (verdicts, out) = run(&mut l, [(1985 * MS, 1250), (1995 * MS, 1250)]);
    assert_eq!(verdicts, [Verdict::Accepted, Verdict::Accepted]);
    assert_eq!(out.len(), 1);
    assert_eq!(l.stats().dropped_outage, 1);
}

fn jittery(reorder: bool) -> Vec<(Duration, u64, usize)> {
    let mut l = link(LinkConfig {
        delay: 50 * MS,
        jitter: 20 * MS,
        reorder,
        ..LinkConfig::default()
    });
    run(&mut l, (0..2000).map(|i| (MS * i, 100))).1
}

#[test]
fn no_reordering_unless_jitter_allows_it() {
    let kept = jittery(false);
    assert!(
        kept.windows(2).all(|w| w[0].1 < w[1].1),
        "order must be kept"
    );
    let delays: Vec<Duration> = kept.iter().map(|(t, id, _)| *t - MS * *id as u32).collect();
    let spread = *delays.iter().max().unwrap_or(&MS) - *delays.iter().min().unwrap_or(&MS);
    assert!(
        spread > 10 * MS,
        "jitter must still vary the delay: {spread:?}"
    );

    let free = jittery(true);
    let overtaken = free.windows(2).filter(|w| w[0].1 > w[1].1).count();
    assert!(overtaken > 200, "only {overtaken} reordered of 2000");
}

#[test]
fn jitter_stays_within_its_bounds_around_the_base_delay() {
    for (shape, sd_range) in [
        (JitterShape::Uniform, 10.5..12.5), // 20 / sqrt(3) = 11.5 ms
        (JitterShape::Normal, 8.5..10.0),   // 10 ms, a little less after the cut
    ] {
        let mut l = link(LinkConfig {
            delay: 50 * MS,
            jitter: 20 * MS,
            jitter_shape: shape,
            reorder: true,
            ..LinkConfig::default()
        });
        // 100 ms apart: no packet can affect another.
        let (_, out) = run(&mut l, (0..5000).map(|i| (100 * MS * i, 100)));
        let delays: Vec<f64> = out
            .iter()
            .map(|(t, id, _)| (*t - 100 * MS * *id as u32).as_secs_f64() * 1e3)
            .collect();
        assert!(
            delays.iter().all(|d| (30.0..=70.0).contains(d)),
            "{shape:?}"
        );
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let sd =
            (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / delays.len() as f64).sqrt();
        assert!((mean - 50.0).abs() < 1.0, "{shape:?} mean {mean}");
        assert!(sd_range.contains(&sd), "{shape:?} sd {sd}");
    }
}

fn fate(seed: u64) -> (Vec<Verdict>, Vec<(Duration, u64, usize)>) {
    let mut l = link(LinkConfig {
        seed,
        loss: 0.05,
        gilbert_elliott: Some(GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.3,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        }),
        jitter: 10 * MS,
        delay: 30 * MS,
        random_rate: Some(RandomRate {
            min: 1_000_000,
            max: 5_000_000,
            every: Duration::from_secs(1),
        }),
        ..LinkConfig::default()
    });
    run(&mut l, constant_rate(3_000_000, 1200, 5))
}

#[test]
fn same_seed_same_fate() {
    assert_eq!(fate(7), fate(7));
    assert_ne!(fate(7).0, fate(8).0, "another seed must lose other packets");
}

#[test]
fn rate_steps_change_the_rate_at_their_time() {
    let mut l = link(LinkConfig {
        rate: Some(20_000_000),
        rate_steps: vec![RateStep {
            at: Duration::from_secs(5),
            bits_per_sec: 2_000_000,
        }],
        ..LinkConfig::default()
    });
    let (_, out) = run(&mut l, constant_rate(30_000_000, 1250, 10));
    let before = bits_per_sec_between(&out, Duration::from_secs(1), Duration::from_secs(5));
    let after = bits_per_sec_between(&out, Duration::from_secs(6), Duration::from_secs(10));
    assert!((before - 20e6).abs() < 20e6 * 0.01, "before {before}");
    assert!((after - 2e6).abs() < 2e6 * 0.01, "after {after}");
}

#[test]
fn random_rate_changes_every_period_within_bounds() {
    let config = LinkConfig {
        random_rate: Some(RandomRate {
            min: 2_000_000,
            max: 12_000_000,
            every: Duration::from_secs(3),
        }),
        ..LinkConfig::default()
    };
    let mut forward = link(config.clone());
    let rates: Vec<u64> = (0..20)
        .map(|p| {
            let start = forward.rate_at(Duration::from_secs(3 * p));
            let end = forward.rate_at(Duration::from_millis(3000 * p + 2999));
            assert_eq!(start, end, "constant within period {p}");
            start.unwrap_or(0)
        })
        .collect();
    assert!(rates.iter().all(|r| (2_000_000..=12_000_000).contains(r)));
    let mut distinct = rates.clone();
    distinct.dedup();
    assert!(distinct.len() > 10, "{rates:?}");
    // The schedule depends on the seed only, not on the order times are asked in.
    let mut backward = link(config);
    for p in (0..20).rev() {
        assert_eq!(
            backward.rate_at(Duration::from_secs(3 * p)),
            Some(rates[p as usize])
        );
    }
}

#[test]
fn poll_timeout_names_the_next_event() {
    let mut l = link(LinkConfig {
        rate: Some(1_000_000),
        delay: 20 * MS,
        ..LinkConfig::default()
    });
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(
        l.handle_packet(Duration::ZERO, packet(1, 1250)),
        Verdict::Accepted
    );
    assert_eq!(l.poll_timeout(), Some(10 * MS), "end of serialisation");
    assert_eq!(l.poll_deliver(10 * MS), None);
    assert_eq!(l.poll_timeout(), Some(30 * MS), "due time");
    assert_eq!(l.poll_deliver(29 * MS), None);
    assert!(l.poll_deliver(30 * MS).is_some());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn an_unlimited_link_only_delays() {
    let mut l = link(LinkConfig {
        delay: 15 * MS,
        ..LinkConfig::default()
    });
    let (verdicts, out) = run(&mut l, (0..1000).map(|_| (Duration::ZERO, 1500)));
    assert!(verdicts.iter().all(|v| *v == Verdict::Accepted));
    assert!(out.iter().all(|(t, _, _)| *t == 15 * MS));
}

#[test]
fn time_never_runs_backwards() {
    let mut l = link(LinkConfig {
        delay: 10 * MS,
        ..LinkConfig::default()
    });
    l.handle_packet(100 * MS, packet(1, 100));
    // A caller's clock glitch: the earlier time counts as the latest seen.
    l.handle_packet(50 * MS, packet(2, 100));
    assert!(l.poll_deliver(109 * MS).is_none());
    assert_eq!(l.poll_deliver(110 * MS).map(|p| id(&p)), Some(1));
    assert_eq!(l.poll_deliver(110 * MS).map(|p| id(&p)), Some(2));
}
