//! The thread pool bands encode on: named threads, joined when the pool is dropped.

use std::sync::Mutex;
use std::thread::JoinHandle;

/// A rayon pool whose threads are named `deskwire-band-N` and joined on drop, so shutting a
/// pipeline down leaves no thread behind.
pub struct Workers {
    pool: Option<rayon::ThreadPool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").finish_non_exhaustive()
    }
}

impl Workers {
    /// A pool of `threads` threads.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let handles = Mutex::new(Vec::with_capacity(threads));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .spawn_handler(|t| {
                let h = std::thread::Builder::new()
                    .name(format!("deskwire-band-{}", t.index()))
                    .spawn(|| t.run())?;
                handles
                    .lock()
                    .expect("not poisoned: only pushed here")
                    .push(h);
                Ok(())
            })
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            pool: Some(pool),
            handles,
        })
    }

    pub(crate) fn pool(&self) -> &rayon::ThreadPool {
        self.pool.as_ref().expect("present until drop")
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Dropping the pool tells its threads to finish; then wait for them.
        drop(self.pool.take());
        let handles = std::mem::take(self.handles.get_mut().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}
