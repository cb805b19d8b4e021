//! How often a real screen changes, as a 60 fps streamer could see it: the e2e table's
//! `source fps`. The peer's frame rate counts its 60 Hz grabs whether or not the screen
//! changed, and a workload may change the screen less often than it is asked to (ffplay
//! presents ~30 distinct frames a second here), so deskwire's rate is judged against this.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use deskwire_capture::{CaptureOutcome, Source, Timestamp, Waited, X11Source};

/// At most one look a frame interval at 60 fps.
const INTERVAL: Duration = Duration::from_micros(16_667);

/// Counts the changes of one display's screen on a thread of its own.
pub(crate) struct ChangeCounter {
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    thread: JoinHandle<Result<()>>,
    started: Instant,
}

impl ChangeCounter {
    pub(crate) fn start(display: &str) -> Result<Self> {
        let mut source = X11Source::open(Some(display))?;
        let mut frame = source.alloc_frame()?;
        // The first capture is news by definition: it is the baseline, not a change.
        source.capture(&mut frame, Timestamp::from_micros(1))?;
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(AtomicU64::new(0));
        let (stopped, counted) = (stop.clone(), changes.clone());
        let thread = std::thread::Builder::new()
            .name("bench-changes".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !stopped.load(Relaxed) {
                    if source.wait(Duration::from_millis(50))? != Waited::News {
                        continue;
                    }
                    let due = last + INTERVAL;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    last = Instant::now();
                    if source.capture(&mut frame, Timestamp::from_micros(2))?
                        == CaptureOutcome::Fresh
                    {
                        counted.fetch_add(1, Relaxed);
                    }
                    let _ = source.pointer();
                }
                Ok(())
            })?;
        Ok(Self {
            stop,
            changes,
            thread,
            started: Instant::now(),
        })
    }

    /// Changes a second since the start.
    pub(crate) fn finish(self) -> Result<f64> {
        self.stop.store(true, Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the change counter panicked"))??;
        Ok(self.changes.load(Relaxed) as f64 / secs)
    }
}
