//! Latency CDF charts as SVG, for the `e2e` report.
//!
//! No system fonts needed: plotters is built without `ttf`/`ab_glyph`, so it lays text out
//! with its built-in estimate (`naive` font: ~0.7 em per character) and the SVG backend
//! writes every label as a `<text>` element for the viewer's own fonts to render. Nothing
//! here rasterises glyphs, so nothing looks for a font file (plotters' bitmap backend would).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::combinators::WithKeyPoints;
use plotters::prelude::*;

/// Chart size in pixels (SVG user units).
const SIZE: (u32, u32) = (960, 600);
/// Points drawn per series at most: a CDF of 100k samples looks the same from 2k quantiles,
/// and the SVG stays small.
const MAX_POINTS: usize = 2000;
/// Floor for the log axis: a latency of 0 (or less, from clock skew) cannot sit on it.
const MIN_MS: f64 = 0.01;

/// Write `path` as an SVG chart of the empirical CDF of each series' latencies (ms).
///
/// x: latency in ms on a log scale (tails are the interesting part and spread over decades);
/// y: fraction of samples at or below it. One line per series, named in the legend.
/// Non-finite samples are ignored; samples below 0.01 ms are drawn at 0.01 ms. A series with
/// no samples still gets a legend entry, so a missing scene is visible rather than silent.
pub(crate) fn latency_cdf_svg(
    path: &Path,
    title: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, samples)| (name.as_str(), cdf_points(samples)))
        .collect();
    let (lo, hi) = x_range(&curves);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(log_axis(lo, hi), 0.0..1.0)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of frames")
        .x_label_formatter(&|v| format_ms(*v))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(plot_err)?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present()
        .map_err(plot_err)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// plotters' errors borrow the backend's error type; keep only the message.
fn plot_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("plotting failed: {e}")
}

/// Sorted (latency, fraction <= latency) points, at most [`MAX_POINTS`] of them.
fn cdf_points(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| x.max(MIN_MS))
        .collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    // Evenly spaced ranks, always keeping the last one (the maximum is the tail we care about).
    let step = n.div_ceil(MAX_POINTS);
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if points.last().is_some_and(|p| p.1 < 1.0) {
        points.push((v[n - 1], 1.0));
    }
    points
}

/// The x range covering every point, a little wider; 0.1..100 ms when there is no data.
fn x_range(curves: &[(&str, Vec<(f64, f64)>)]) -> (f64, f64) {
    let xs = curves.iter().flat_map(|(_, p)| p.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0_f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() {
        return (0.1, 100.0);
    }
    // A log axis needs lo < hi; a single distinct value still gets a decade around it.
    let lo = (lo / 1.25).max(MIN_MS);
    let hi = (hi * 1.25).max(lo * 10.0);
    (lo, hi)
}

/// A log axis labelled 1-2-5 per decade with light lines at 1..9: plotters' own log ticks
/// repeat the decade's end (two "100" labels) and draw ~100 light lines per decade.
fn log_axis(lo: f64, hi: f64) -> WithKeyPoints<LogCoord<f64>> {
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let ticks = |mantissas: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    (lo..hi)
        .log_scale()
        .with_key_points(ticks(&[1.0, 2.0, 5.0]))
        .with_light_points(ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]))
}

fn format_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svg_with_both_series() {
        let dir = std::env::temp_dir().join(format!("deskwire-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cdf.svg");
        let typing: Vec<f64> = (0..500).map(|i| 5.0 + f64::from(i % 37) * 0.3).collect();
        let video: Vec<f64> = (0..5000).map(|i| 20.0 + f64::from(i % 101)).collect();
        latency_cdf_svg(
            &path,
            "capture -> decoded",
            &[("typing".into(), typing), ("video".into(), video)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains("typing"), "the legend names each series");
        assert!(svg.contains("video"));
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "a line is drawn"
        );
        assert!(svg.contains("<text"), "labels are SVG text, no font needed");
        assert!(svg.contains("latency (ms, log scale)"));
    }

    #[test]
    fn odd_input_does_not_fail() {
        let dir = std::env::temp_dir().join(format!("deskwire-plot-odd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("odd.svg");
        let series = [
            ("empty".to_string(), vec![]),
            (
                "weird".to_string(),
                vec![f64::NAN, -3.0, 0.0, f64::INFINITY, 4.0],
            ),
        ];
        latency_cdf_svg(&path, "odd", &series).unwrap();
        latency_cdf_svg(&path, "nothing", &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cdf_is_monotone_and_ends_at_one() {
        let samples: Vec<f64> = (0..10_001).rev().map(f64::from).collect();
        let p = cdf_points(&samples);
        assert!(p.len() <= MAX_POINTS + 1);
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(p.last().copied(), Some((10_000.0, 1.0)));
    }
}
