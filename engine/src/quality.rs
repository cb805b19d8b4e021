//! Picture quality measures used by tests, benches and the demo.

/// PSNR in dB between two 8-bit planes of `width` x `height` with their own strides.
/// Identical planes give `f64::INFINITY`.
pub fn psnr_plane(
    a: &[u8],
    a_stride: usize,
    b: &[u8],
    b_stride: usize,
    width: usize,
    height: usize,
) -> f64 {
    let mut sse = 0u64;
    for y in 0..height {
        let ra = &a[y * a_stride..y * a_stride + width];
        let rb = &b[y * b_stride..y * b_stride + width];
        sse += ra
            .iter()
            .zip(rb)
            .map(|(&p, &q)| u64::from(p.abs_diff(q)).pow(2))
            .sum::<u64>();
    }
    if sse == 0 {
        return f64::INFINITY;
    }
    let mse = sse as f64 / (width * height) as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// Append the BT.601 luma (full range, rounded) of BGRA/BGRX pixels to `out`: the measure
/// every picture comparison here uses, whatever colour matrix the codec ran with.
pub fn bgra_luma(bgra: &[u8], out: &mut Vec<u8>) {
    out.extend(bgra.chunks_exact(4).map(|p| {
        let (b, g, r) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
        (0.299 * r + 0.587 * g + 0.114 * b).round() as u8
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_is_bt601_of_bgra() {
        let mut y = Vec::new();
        // Black, white, pure red, pure green, pure blue (B, G, R, X).
        let px = [
            0, 0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 0,
        ];
        bgra_luma(&px, &mut y);
        assert_eq!(y, [0, 255, 76, 150, 29]);
    }

    #[test]
    fn identical_planes_are_infinitely_close_and_known_error_gives_known_psnr() {
        let a = vec![100u8; 64];
        assert_eq!(psnr_plane(&a, 8, &a, 8, 8, 8), f64::INFINITY);
        let b = vec![110u8; 64];
        // MSE 100 -> 10*log10(65025/100) = 28.13 dB.
        assert!((psnr_plane(&a, 8, &b, 8, 8, 8) - 28.1308).abs() < 1e-3);
    }

    #[test]
    fn strides_are_respected() {
        let a = [1u8, 2, 99, 3, 4, 99];
        let b = [1u8, 2, 3, 4];
        assert_eq!(psnr_plane(&a, 3, &b, 2, 2, 2), f64::INFINITY);
    }
}
