//! The e2e results as JSON lines and as a Markdown table.
// Printing the results is this module's job.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::Write as _;

use super::SceneResult;

/// Nearest-rank quantile of sorted values; None when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub(crate) fn print_json(r: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(r)?)?;
    out.flush()?;
    Ok(())
}

pub(crate) fn print_table(table: &str) {
    print!("{table}");
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Two tables: deskwire per scene, then the peers and the ratios where there are peers.
pub(crate) fn markdown(results: &[SceneResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| scene | size | fps | source fps | lat p50 ms | p95 | p99 | kbps | target ms/frame | target % core | viewer ms/frame | Y-PSNR dB | first frame ms |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {}x{} | {:.1} | {} | {} | {} | {} | {:.1} | {} | {:.1} | {} | {} | {:.0} |",
            r.scene,
            r.width,
            r.height,
            r.fps,
            num(r.source_fps, 1),
            num(r.latency_ms_p50, 2),
            num(r.latency_ms_p95, 2),
            num(r.latency_ms_p99, 2),
            r.kbps,
            num(r.cpu_ms_per_frame_target, 2),
            r.cpu_pct_target,
            num(r.cpu_ms_per_frame_viewer, 2),
            num(r.psnr_y_db, 1),
            r.first_frame_ms,
        );
    }
    let peered: Vec<&SceneResult> = results.iter().filter(|r| r.ffmpeg_x264.is_some()).collect();
    if !peered.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| scene | peer | fps | kbps | ms/frame | Y-PSNR dB | deskwire/peer CPU per frame | deskwire/peer kbps |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for r in peered {
            let rows = [
                (
                    "ffmpeg+x264",
                    &r.ffmpeg_x264,
                    r.cpu_ratio_ffmpeg,
                    r.kbps_ratio_ffmpeg,
                ),
                (
                    "naive xcap+openh264",
                    &r.naive,
                    r.cpu_ratio_naive,
                    r.kbps_ratio_naive,
                ),
            ];
            for (name, p, cpu, kbps) in rows {
                let Some(p) = p else { continue };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1} | {:.1} | {:.2} | {} | {} | {} |",
                    r.scene,
                    name,
                    p.fps,
                    p.kbps,
                    p.cpu_ms_per_frame,
                    num(p.psnr_y_db, 1),
                    num(cpu, 3),
                    num(kbps, 3),
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[3.0], 0.01), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
