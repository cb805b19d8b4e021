//! Per-stage statistics, recorded without locks or allocation and read at any time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Time spent in each stage for one encoded frame, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimings {
    /// Grabbing the frame from the source.
    pub capture_us: u32,
    /// Finding dirty rectangles.
    pub diff_us: u32,
    /// Converting dirty rectangles to I420.
    pub convert_us: u32,
    /// Encoding the damaged bands (wall time, bands in parallel).
    pub encode_us: u32,
}

const SUB: usize = 16;
const BUCKETS: usize = 40 * SUB;

/// A log-linear histogram of microsecond values (about 6% resolution), updated with relaxed
/// atomics: recording is a few instructions and never allocates.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64; BUCKETS]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize; // >= 4
    let mantissa = (v >> (exp - 4)) as usize & (SUB - 1);
    ((exp - 3) * SUB + mantissa).min(BUCKETS - 1)
}

fn bucket_value(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let exp = i / SUB + 3;
    let mantissa = (i % SUB) as u64;
    // The middle of the bucket.
    ((SUB as u64 + mantissa) << (exp - 4)) + ((1u64 << (exp - 4)) >> 1)
}

impl Histogram {
    /// Record one value.
    pub fn record(&self, v: u64) {
        self.buckets[bucket_of(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Mean of the values (0 when empty).
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum.load(Relaxed) as f64 / n as f64
        }
    }

    /// Largest value recorded.
    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The value at quantile `q` (0..=1), to bucket resolution; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                // The top bucket also holds everything beyond the histogram's range.
                if i == BUCKETS - 1 {
                    return self.max();
                }
                return bucket_value(i).min(self.max());
            }
        }
        self.max()
    }
}

/// Counters and histograms of a running pipeline, shared between its threads.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Captures that produced a fresh frame.
    pub frames_captured: AtomicU64,
    /// Captures where the source reported nothing changed (no frame produced).
    pub frames_unchanged_at_source: AtomicU64,
    /// Fresh frames replaced in the latest-wins slot before the encoder took them.
    pub frames_superseded: AtomicU64,
    /// Frames the diff found identical to the last processed one (no encode, no bytes).
    pub frames_unchanged_after_diff: AtomicU64,
    /// Frames that produced encoded output.
    pub frames_encoded: AtomicU64,
    /// Band pictures encoded.
    pub bands_encoded: AtomicU64,
    /// Encoded bytes produced.
    pub bytes_encoded: AtomicU64,
    /// Capture time of fresh frames.
    pub capture_us: Histogram,
    /// Diff time per frame taken by the encoder thread.
    pub diff_us: Histogram,
    /// Conversion time per frame with changes.
    pub convert_us: Histogram,
    /// Encode wall time per encoded frame.
    pub encode_us: Histogram,
    /// Encoded bytes per encoded frame.
    pub frame_bytes: Histogram,
}

/// Add to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// Read a counter.
pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_bucket_resolution() {
        let h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 10);
        }
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.01, 100.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max(), 10_000);
        assert!((h.mean() - 5005.0).abs() < 1e-9);
    }

    #[test]
    fn small_values_are_exact_and_huge_ones_saturate() {
        let h = Histogram::default();
        h.record(3);
        assert_eq!(h.quantile(0.5), 3);
        h.record(u64::MAX / 2);
        assert_eq!(h.quantile(1.0), u64::MAX / 2);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn bucket_values_lie_inside_their_bucket() {
        for v in [16u64, 17, 100, 1023, 1024, 65_537, 1 << 30] {
            let b = bucket_of(v);
            assert_eq!(bucket_of(bucket_value(b)), b, "{v}");
        }
    }
}
