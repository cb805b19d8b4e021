//! The real pipeline, run flat out, allocates nothing per frame once warmed up.
//!
//! This binary installs a global allocator that counts every allocation of the process, so
//! it holds a single test: cases run one after the other and nothing else runs meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskwire_capture::synthetic::Scene;
use deskwire_capture::{
    open, CaptureError, CaptureOutcome, Frame, OpenOptions, Source, SourceSpec, Timestamp,
};
use deskwire_engine::stats::read;
use deskwire_engine::{BandSpec, CodecConfig, Pipeline, PipelineConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect
// on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout`; forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.load(Ordering::SeqCst)
}

/// The synthetic source, slowed down while `slow` is set so that the encoder has to wait for
/// frames; otherwise it passes every call straight through.
struct Throttled {
    inner: Box<dyn Source>,
    slow: Arc<AtomicBool>,
}

impl Source for Throttled {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }
    fn alloc_frame(&mut self) -> Result<Frame, CaptureError> {
        self.inner.alloc_frame()
    }
    fn capture(
        &mut self,
        frame: &mut Frame,
        now: Timestamp,
    ) -> Result<CaptureOutcome, CaptureError> {
        if self.slow.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.inner.capture(frame, now)
    }
}

/// Read and drop output (as a fast network task would) until `done` or `deadline`.
fn drain_until(p: &Pipeline, deadline: Instant, done: impl Fn() -> bool) {
    while !done() && p.is_running() && Instant::now() < deadline {
        let _ = p.output().recv_timeout(Duration::from_millis(20));
    }
}

/// What one steady-state window measured.
#[derive(Debug)]
struct Window {
    scene: Scene,
    bands: u32,
    frames: u64,
    allocations: u64,
}

const WARM_UP_FRAMES: u64 = 60;
const MEASURED_FRAMES: u64 = 300;
const MIN_MEASURED_FRAMES: u64 = 200;

fn measure(scene: Scene, bands: u32) -> Window {
    let opts = OpenOptions {
        width: 640,
        height: 360,
        ..OpenOptions::default()
    };
    let slow = Arc::new(AtomicBool::new(true));
    let source = Throttled {
        inner: open(&SourceSpec::Synthetic(scene), &opts).unwrap(),
        slow: slow.clone(),
    };
    let mut config = PipelineConfig::default()
        .codec(CodecConfig::default().bands(BandSpec::Count(bands)))
        .capture_fps(None);
    // Bands encode in parallel even on a one-CPU machine, so that path is always measured.
    config.encoder_threads = config.encoder_threads.max(2);
    let depth = config.output_depth;
    let p = Pipeline::start(Box::new(source), config).unwrap();
    let encoded = || read(&p.stats().frames_encoded);
    let deadline = Instant::now() + Duration::from_secs(20);

    // Warm-up. Some things are set up on first use only: crossbeam-channel allocates a
    // channel's list of waiting threads, and a thread's wait context, the first time a thread
    // blocks on it (once, never again). So the warm-up makes every wait of the pipeline
    // happen at least once: the encoder waiting for a frame (slow capture), then for room in
    // the output (nobody reading).
    drain_until(&p, deadline, || encoded() >= 10);
    slow.store(false, Ordering::Relaxed);
    while p.output().len() < depth && p.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Long enough for the encoder to finish the next frame and block on the full output.
    std::thread::sleep(Duration::from_millis(100));
    let warm = encoded() + WARM_UP_FRAMES;
    drain_until(&p, deadline, || encoded() >= warm);

    // Steady state, flat out. Nothing in this window may allocate, this thread included.
    let (frames0, allocs0) = (encoded(), allocations());
    drain_until(&p, deadline, || encoded() >= frames0 + MEASURED_FRAMES);
    let (frames, allocs) = (encoded() - frames0, allocations() - allocs0);

    p.shutdown().unwrap();
    Window {
        scene,
        bands,
        frames,
        allocations: allocs,
    }
}

#[test]
fn steady_state_pipeline_allocates_nothing_per_frame() {
    let cases = [
        (Scene::Typing, 8),
        (Scene::Typing, 1),
        (Scene::Video, 1),
        (Scene::Video, 4),
        (Scene::Scroll, 8),
        (Scene::Drag, 8),
    ];
    let windows: Vec<Window> = cases.iter().map(|&(s, b)| measure(s, b)).collect();
    for w in &windows {
        assert!(
            w.frames >= MIN_MEASURED_FRAMES,
            "the pipeline processed too few frames to measure: {windows:?}"
        );
        assert_eq!(
            w.allocations, 0,
            "{} with {} bands allocated in steady state: {windows:?}",
            w.scene, w.bands
        );
    }
}
