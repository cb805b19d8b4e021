//! Rate-quality curves: a rate at a given quality, and the average rate difference of two
//! curves at equal quality (BD-rate, with the logarithm of the rate interpolated linearly
//! over PSNR between measured points rather than by a fitted polynomial).

/// The rate (kbit/s) at which `curve` (points of kbit/s and PSNR dB) reaches `psnr`,
/// interpolating log-rate linearly between the two points around it (the lowest-rate
/// pair, if PSNR is not monotonic). `None` when no two points enclose it.
pub(crate) fn rate_at(curve: &[(f64, f64)], psnr: f64) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = curve
        .iter()
        .copied()
        .filter(|(k, q)| *k > 0.0 && q.is_finite())
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.windows(2).find_map(|w| {
        let ((k0, q0), (k1, q1)) = (w[0], w[1]);
        let (lo, hi) = (q0.min(q1), q0.max(q1));
        if !(lo..=hi).contains(&psnr) {
            return None;
        }
        if hi - lo < 1e-9 {
            return Some(k0);
        }
        let t = (psnr - q0) / (q1 - q0);
        Some(10f64.powf(k0.log10() + t * (k1.log10() - k0.log10())))
    })
}

/// How many more bits `test` spends than `reference` at equal PSNR, averaged over the
/// PSNR range both curves cover: 0.25 is 25 % more, -0.2 is 20 % fewer. `None` when the
/// ranges do not overlap.
pub(crate) fn bd_rate(reference: &[(f64, f64)], test: &[(f64, f64)]) -> Option<f64> {
    let range = |c: &[(f64, f64)]| {
        c.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            })
    };
    let (a, b) = (range(reference), range(test));
    let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    const STEPS: usize = 64;
    let mut sum = 0.0;
    for i in 0..=STEPS {
        let q = lo + (hi - lo) * i as f64 / STEPS as f64;
        let (r, t) = (rate_at(reference, q)?, rate_at(test, q)?);
        sum += t.log10() - r.log10();
    }
    Some(10f64.powf(sum / (STEPS + 1) as f64) - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_at_a_quality_interpolates_log_rate_between_the_points_around_it() {
        let c = [(1000.0, 40.0), (4000.0, 50.0), (16000.0, 60.0)];
        assert!((rate_at(&c, 40.0).unwrap() - 1000.0).abs() < 1e-6);
        assert!((rate_at(&c, 45.0).unwrap() - 2000.0).abs() < 1e-6);
        assert!((rate_at(&c, 55.0).unwrap() - 8000.0).abs() < 1e-6);
        assert_eq!(rate_at(&c, 39.0), None);
        assert_eq!(rate_at(&c, 61.0), None);
        // Order of the points does not matter.
        let shuffled = [c[2], c[0], c[1]];
        assert!((rate_at(&shuffled, 45.0).unwrap() - 2000.0).abs() < 1e-6);
    }

    #[test]
    fn bd_rate_is_zero_for_the_same_curve_and_follows_a_constant_rate_factor() {
        let reference = [
            (1000.0, 40.0),
            (2000.0, 44.0),
            (4000.0, 47.0),
            (8000.0, 49.0),
        ];
        assert!(bd_rate(&reference, &reference).unwrap().abs() < 1e-9);
        let doubled: Vec<_> = reference.iter().map(|(k, q)| (k * 2.0, *q)).collect();
        assert!((bd_rate(&reference, &doubled).unwrap() - 1.0).abs() < 1e-9);
        assert!((bd_rate(&doubled, &reference).unwrap() + 0.5).abs() < 1e-9);
    }

    #[test]
    fn curves_that_share_no_quality_have_no_bd_rate() {
        let a = [(1000.0, 30.0), (2000.0, 35.0)];
        let b = [(1000.0, 40.0), (2000.0, 45.0)];
        assert_eq!(bd_rate(&a, &b), None);
        assert_eq!(bd_rate(&a, &[(1000.0, 33.0)]), None);
    }
}
