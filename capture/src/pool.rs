//! A fixed set of frames that circulate between capture and its consumers.
//!
//! Frames are large (8 MB at 1080p) and some are backed by X11 shared memory, so they are made
//! once and recycled: a [`PooledFrame`] goes back to its pool when dropped, wherever that
//! happens. The pool is a bounded crossbeam channel, so hand-back is lock-free and never
//! allocates.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::{CaptureError, Frame};

/// Frames made once by a source, handed out and returned on drop.
#[derive(Debug, Clone)]
pub struct FramePool {
    home: Sender<Frame>,
    free: Receiver<Frame>,
    size: usize,
}

impl FramePool {
    /// A pool of `size` frames made by `alloc` (usually [`crate::Source::alloc_frame`]).
    pub fn new(
        size: usize,
        mut alloc: impl FnMut() -> Result<Frame, CaptureError>,
    ) -> Result<Self, CaptureError> {
        let (home, free) = crossbeam_channel::bounded(size);
        for _ in 0..size {
            home.try_send(alloc()?)
                .expect("the channel holds exactly `size` frames");
        }
        Ok(Self { home, free, size })
    }

    /// How many frames the pool owns in all.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many frames are free right now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// A free frame, if there is one.
    pub fn try_take(&self) -> Option<PooledFrame> {
        self.free.try_recv().ok().map(|f| self.wrap(f))
    }

    /// A free frame, waiting up to `timeout` for one to come back.
    pub fn take_timeout(&self, timeout: Duration) -> Option<PooledFrame> {
        self.free.recv_timeout(timeout).ok().map(|f| self.wrap(f))
    }

    fn wrap(&self, frame: Frame) -> PooledFrame {
        PooledFrame {
            frame: Some(frame),
            home: self.home.clone(),
        }
    }
}

/// A frame on loan from a [`FramePool`]; dereferences to [`Frame`] and returns home on drop.
#[derive(Debug)]
pub struct PooledFrame {
    // Always `Some` until drop takes it.
    frame: Option<Frame>,
    home: Sender<Frame>,
}

impl Deref for PooledFrame {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        self.frame.as_ref().expect("present until drop")
    }
}

impl DerefMut for PooledFrame {
    fn deref_mut(&mut self) -> &mut Frame {
        self.frame.as_mut().expect("present until drop")
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        if let Some(f) = self.frame.take() {
            // The channel has room for every frame the pool made, so this only fails when the
            // pool itself is gone; then the frame is simply freed.
            let _ = self.home.try_send(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_frames_return_to_the_pool() {
        let pool = FramePool::new(2, || Ok(Frame::new(4, 4))).unwrap();
        let a = pool.try_take().unwrap();
        let b = pool.try_take().unwrap();
        assert!(pool.try_take().is_none(), "only two frames exist");
        drop(a);
        assert_eq!(pool.available(), 1);
        drop(b);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn frames_keep_their_contents_across_loans() {
        let pool = FramePool::new(1, || Ok(Frame::new(2, 2))).unwrap();
        let mut f = pool.try_take().unwrap();
        f.data_mut()[0] = 7;
        drop(f);
        assert_eq!(pool.try_take().unwrap().data()[0], 7);
    }
}
