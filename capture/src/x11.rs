//! The fast X11 backend: MIT-SHM grabs into shared-memory frames, DAMAGE to skip unchanged
//! screens and to hint which rectangles changed.
//!
//! Each changed capture costs one pipelined round trip (subtract damage, fetch its region, grab
//! the root window into the frame's segment); an unchanged screen costs one non-blocking read of
//! the socket and no request at all.

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::ReplyError;
use x11rb::protocol::damage::{self, ConnectionExt as _, ReportLevel};
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::protocol::xinput::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    ChangeWindowAttributesAux, ConnectionExt as _, EventMask, ImageFormat, ImageOrder, Rectangle,
    Window,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

use crate::frame::Storage;
use crate::{
    CaptureError, CaptureOutcome, CursorImage, Frame, PixelFormat, PointerState, Rect, Source,
    Timestamp, Waited,
};

fn backend(reason: impl fmt::Display) -> CaptureError {
    CaptureError::Backend {
        backend: "x11",
        reason: reason.to_string(),
    }
}

/// Captures the root window of an X server through MIT-SHM, guided by DAMAGE.
pub struct X11Source {
    conn: Arc<RustConnection>,
    root: Window,
    width: u32,
    height: u32,
    damage: damage::Damage,
    region: xfixes::Region,
    /// Sequence number of the last `DamageSubtract`: notifications stamped earlier describe
    /// drawing that the subtract (and the grab after it) already covered.
    last_subtract: u64,
    /// A notification newer than the last subtract arrived: the screen changed.
    dirty: bool,
    /// The next fresh frame must report unknown damage (first capture, or a failed one).
    full: bool,
    /// The cursor's shape changed since it was last read (XFIXES `CursorNotify`).
    shape_changed: bool,
    /// The serial of the shape last read.
    serial: u32,
    /// XInput 2 reports pointer motion as events (raw motion on the root window): the
    /// pointer need not be asked for while none came.
    motion_events: bool,
    /// Motion was reported since the pointer was last read.
    moved: bool,
    /// The pointer as last read, and when.
    last_pointer: Option<(PointerState, Instant)>,
    /// The root window's new size, seen while waiting: the next capture reports it.
    resized: Option<(u32, u32)>,
}

/// How long a pointer reading stands while no motion event came: an application that
/// warps the pointer (no device moved, so no raw motion) is seen within this.
const POINTER_STANDS: Duration = Duration::from_millis(250);

impl fmt::Debug for X11Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X11Source")
            .field("root", &self.root)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("dirty", &self.dirty)
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

impl X11Source {
    /// Connect to `display` (`None`: `$DISPLAY`) and set up shared memory and damage tracking.
    pub fn open(display: Option<&str>) -> Result<Self, CaptureError> {
        let (conn, screen_num) = x11rb::connect(display).map_err(|e| CaptureError::NoDisplay {
            display: display.map(str::to_owned),
            reason: e.to_string(),
        })?;
        let conn = Arc::new(conn);

        let needed = [
            (shm::X11_EXTENSION_NAME, "MIT-SHM"),
            (damage::X11_EXTENSION_NAME, "DAMAGE"),
            (xfixes::X11_EXTENSION_NAME, "XFIXES"),
        ];
        for (name, _) in needed {
            conn.prefetch_extension_information(name).map_err(backend)?;
        }
        for (name, label) in needed {
            if conn.extension_information(name).map_err(backend)?.is_none() {
                return Err(CaptureError::MissingExtension(label));
            }
        }
        // DAMAGE and XFIXES refuse requests from clients that did not announce a version.
        let shm_v = conn.shm_query_version().map_err(backend)?;
        let damage_v = conn.damage_query_version(1, 1).map_err(backend)?;
        let xfixes_v = conn.xfixes_query_version(5, 0).map_err(backend)?;
        shm_v
            .reply()
            .map_err(|e| backend(format_args!("MIT-SHM: {e}")))?;
        damage_v
            .reply()
            .map_err(|e| backend(format_args!("DAMAGE: {e}")))?;
        let xfixes_v = xfixes_v
            .reply()
            .map_err(|e| backend(format_args!("XFIXES: {e}")))?;
        if xfixes_v.major_version < 2 {
            return Err(backend(format_args!(
                "XFIXES {}.{} has no regions (need 2.0)",
                xfixes_v.major_version, xfixes_v.minor_version
            )));
        }

        let root = check_pixel_layout(&conn, screen_num)?;
        let geometry = conn.get_geometry(root).map_err(backend)?;
        let geometry = geometry.reply().map_err(backend)?;

        // ConfigureNotify on the root tells us about resizes at no cost per capture.
        let mask = ChangeWindowAttributesAux::new().event_mask(EventMask::STRUCTURE_NOTIFY);
        let damage_id = conn.generate_id().map_err(backend)?;
        let region = conn.generate_id().map_err(backend)?;
        let select = conn
            .change_window_attributes(root, &mask)
            .map_err(backend)?;
        let create = conn
            .damage_create(damage_id, root, ReportLevel::NON_EMPTY)
            .map_err(backend)?;
        let region_created = conn.xfixes_create_region(region, &[]).map_err(backend)?;
        select.check().map_err(backend)?;
        create.check().map_err(backend)?;
        region_created.check().map_err(backend)?;
        // Shape changes arrive as events; the shape itself is read only then.
        conn.xfixes_select_cursor_input(root, xfixes::CursorNotifyMask::DISPLAY_CURSOR)
            .map_err(backend)?
            .check()
            .map_err(backend)?;

        let motion_events = select_raw_motion(&conn, root);
        // A server on another host cannot attach our segments; find out now so that `Auto`
        // falls back to xcap instead of failing at the first frame.
        drop(ShmBuffer::new(&conn, 4096)?);

        let (width, height) = (u32::from(geometry.width), u32::from(geometry.height));
        let name = display.unwrap_or("$DISPLAY");
        tracing::debug!(
            display = name,
            width,
            height,
            "X11 capture ready (MIT-SHM, DAMAGE)"
        );
        Ok(Self {
            conn,
            root,
            width,
            height,
            damage: damage_id,
            region,
            last_subtract: 0,
            dirty: false,
            full: true,
            shape_changed: true,
            serial: 0,
            motion_events,
            moved: true,
            last_pointer: None,
            resized: None,
        })
    }

    /// Read queued events without blocking: notes damage, shape changes, pointer motion and
    /// a resized root (which the next capture reports).
    fn drain_events(&mut self) -> Result<(), CaptureError> {
        while let Some((event, seq)) = self.conn.poll_for_event_with_sequence().map_err(backend)? {
            match event {
                // Older notifications describe drawing the last subtract already covered.
                Event::DamageNotify(ev)
                    if ev.damage == self.damage && seq >= self.last_subtract =>
                {
                    self.dirty = true;
                }
                Event::XfixesCursorNotify(_) => self.shape_changed = true,
                Event::XinputRawMotion(_) => self.moved = true,
                Event::ConfigureNotify(ev) if ev.window == self.root => {
                    let size = (u32::from(ev.width), u32::from(ev.height));
                    self.resized = (size != (self.width, self.height)).then_some(size);
                }
                Event::Error(e) => {
                    self.full = true;
                    return Err(backend(format_args!("X error {e:?}")));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether anything waits to be captured or read.
    fn has_news(&self) -> bool {
        self.full || self.dirty || self.shape_changed || self.moved || self.resized.is_some()
    }

    /// Adopt a new root size; frames of the old size become foreign.
    fn resized_to(&mut self, new_w: u32, new_h: u32) -> CaptureError {
        let err = CaptureError::SizeChanged {
            old_w: self.width,
            old_h: self.height,
            new_w,
            new_h,
        };
        tracing::info!(%err, "X11 root window resized");
        self.width = new_w;
        self.height = new_h;
        self.full = true;
        err
    }

    /// The segment of `frame` if this source made it for the current size.
    fn segment_of(&self, frame: &Frame) -> Result<shm::Seg, CaptureError> {
        let foreign = |what| CaptureError::ForeignFrame {
            got_w: frame.width(),
            got_h: frame.height(),
            want_w: self.width,
            want_h: self.height,
            what,
        };
        let Storage::Shm(buf) = frame.storage() else {
            return Err(foreign("heap frame, not this source's shared memory"));
        };
        if !Arc::ptr_eq(&buf.conn, &self.conn) {
            return Err(foreign("shared memory of another X11 source"));
        }
        if (frame.width(), frame.height()) != (self.width, self.height)
            || frame.stride() != self.width as usize * 4
        {
            return Err(foreign("size differs from the screen"));
        }
        Ok(buf.seg)
    }

    /// After a failed grab: a resized root is the usual cause, so say so when it is.
    fn explain_grab_error(&mut self, e: ReplyError) -> CaptureError {
        self.full = true;
        let geometry = self
            .conn
            .get_geometry(self.root)
            .ok()
            .and_then(|c| c.reply().ok());
        match geometry {
            Some(g) if (u32::from(g.width), u32::from(g.height)) != (self.width, self.height) => {
                self.resized_to(u32::from(g.width), u32::from(g.height))
            }
            _ => backend(format_args!("MIT-SHM GetImage failed: {e}")),
        }
    }

    fn grab(&mut self, frame: &mut Frame, seg: shm::Seg) -> Result<(), CaptureError> {
        let conn = &*self.conn;
        // Order matters: the server runs these in sequence, so whatever is drawn after the
        // subtract shows up as new damage even if it also made it into this grab.
        let subtract = conn
            .damage_subtract(self.damage, x11rb::NONE, self.region)
            .map_err(backend)?;
        self.last_subtract = subtract.sequence_number();
        self.dirty = false;
        let fetch = conn.xfixes_fetch_region(self.region).map_err(backend)?;
        let (w, h) = (self.width as u16, self.height as u16);
        let image = conn
            .shm_get_image(
                self.root,
                0,
                0,
                w,
                h,
                !0,
                ImageFormat::Z_PIXMAP.into(),
                seg,
                0,
            )
            .map_err(backend)?;

        let region = fetch.reply();
        let image = image.reply();
        // Both replies are in, so this costs no extra round trip.
        subtract.check().map_err(backend)?;
        let region = region.map_err(|e| backend(format_args!("XFixesFetchRegion failed: {e}")))?;
        if let Err(e) = image {
            return Err(self.explain_grab_error(e));
        }

        let damage = frame.damage_mut();
        if self.full {
            damage.set_unknown();
        } else {
            damage.set_known_empty();
            for r in &region.rectangles {
                damage.push(to_rect(r).clip_to(self.width, self.height));
            }
        }
        self.full = false;
        Ok(())
    }
}

impl Source for X11Source {
    fn name(&self) -> &'static str {
        "x11"
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn alloc_frame(&mut self) -> Result<Frame, CaptureError> {
        let stride = self.width as usize * 4;
        let buf = ShmBuffer::new(&self.conn, stride * self.height as usize)?;
        Ok(Frame::from_storage(
            self.width,
            self.height,
            stride,
            PixelFormat::Bgrx,
            Storage::Shm(buf),
        ))
    }

    fn capture(
        &mut self,
        frame: &mut Frame,
        now: Timestamp,
    ) -> Result<CaptureOutcome, CaptureError> {
        self.drain_events()?;
        if let Some((w, h)) = self.resized.take() {
            return Err(self.resized_to(w, h));
        }
        let seg = self.segment_of(frame)?;
        if !self.full && !self.dirty {
            return Ok(CaptureOutcome::Unchanged);
        }
        if let Err(e) = self.grab(frame, seg) {
            // The subtract may have gone through: the next frame cannot rely on damage.
            self.full = true;
            return Err(e);
        }
        frame.set_timestamp(now);
        Ok(CaptureOutcome::Fresh)
    }

    fn pointer(&mut self) -> Result<Option<PointerState>, CaptureError> {
        let now = Instant::now();
        let (x, y, visible, shape) = if self.shape_changed {
            // The image carries the position too: one request.
            let image = self.conn.xfixes_get_cursor_image().map_err(backend)?;
            let image = image
                .reply()
                .map_err(|e| backend(format_args!("XFixesGetCursorImage failed: {e}")))?;
            self.shape_changed = false;
            self.serial = image.cursor_serial;
            let shape = CursorImage::from_premultiplied_argb(
                image.cursor_serial,
                image.width,
                image.height,
                (image.xhot, image.yhot),
                &image.cursor_image,
            );
            (image.x, image.y, shape.is_some(), shape.map(Arc::new))
        } else {
            if let Some((last, at)) = &self.last_pointer {
                if self.motion_events && !self.moved && now < *at + POINTER_STANDS {
                    return Ok(Some(last.clone()));
                }
            }
            let at = self.conn.query_pointer(self.root).map_err(backend)?;
            let at = at.reply().map_err(backend)?;
            (at.root_x, at.root_y, at.same_screen, None)
        };
        self.moved = false;
        let state = PointerState {
            x: i32::from(x),
            y: i32::from(y),
            visible,
            serial: self.serial,
            shape: None,
        };
        self.last_pointer = Some((state.clone(), now));
        Ok(Some(PointerState { shape, ..state }))
    }

    fn wait(&mut self, timeout: Duration) -> Result<Waited, CaptureError> {
        self.drain_events()?;
        if self.has_news() {
            return Ok(Waited::News);
        }
        // Everything buffered was read above: new news means new bytes on the socket.
        let mut fd = libc::pollfd {
            fd: self.conn.stream().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // An unread reading of the pointer is due when it stops standing.
        let timeout = match &self.last_pointer {
            Some((_, at)) => {
                timeout.min((*at + POINTER_STANDS).saturating_duration_since(Instant::now()))
            }
            None => Duration::ZERO,
        };
        let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, the count says one.
        let ready = unsafe { libc::poll(&mut fd, 1, ms) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(backend(format_args!("waiting on the X connection: {e}")));
            }
        }
        self.drain_events()?;
        Ok(if self.has_news() {
            Waited::News
        } else {
            Waited::Timeout
        })
    }
}

impl Drop for X11Source {
    fn drop(&mut self) {
        // Frames may keep the connection alive; stop the server from sending us events.
        let quiet = ChangeWindowAttributesAux::new().event_mask(EventMask::NO_EVENT);
        let _ = self.conn.change_window_attributes(self.root, &quiet);
        let _ = self
            .conn
            .xfixes_select_cursor_input(self.root, xfixes::CursorNotifyMask::default());
        let _ = self.conn.damage_destroy(self.damage);
        let _ = self.conn.xfixes_destroy_region(self.region);
        let _ = self.conn.flush();
    }
}

/// Ask for XInput 2 raw motion on `root`, so pointer moves wake a waiting capture; false
/// when the server cannot (then the pointer is read at each capture and every
/// [`POINTER_STANDS`]).
fn select_raw_motion(conn: &RustConnection, root: Window) -> bool {
    let available = conn
        .extension_information(xinput::X11_EXTENSION_NAME)
        .ok()
        .flatten()
        .is_some();
    let selected = available
        && conn
            .xinput_xi_query_version(2, 0)
            .ok()
            .and_then(|c| c.reply().ok())
            .is_some_and(|v| v.major_version >= 2)
        && conn
            .xinput_xi_select_events(
                root,
                &[xinput::EventMask {
                    deviceid: xinput::Device::ALL_MASTER.into(),
                    mask: vec![xinput::XIEventMask::RAW_MOTION],
                }],
            )
            .ok()
            .and_then(|c| c.check().ok())
            .is_some();
    if !selected {
        tracing::debug!("no XInput 2 raw motion: the pointer is read at each capture");
    }
    selected
}

/// The root window of `screen_num`, once its pixels are known to be 32-bit little-endian
/// B, G, R, pad in memory.
fn check_pixel_layout(conn: &RustConnection, screen_num: usize) -> Result<Window, CaptureError> {
    let setup = conn.setup();
    let screen = setup
        .roots
        .get(screen_num)
        .ok_or_else(|| backend(format_args!("the server has no screen {screen_num}")))?;
    let depth = screen.root_depth;
    if depth != 24 && depth != 32 {
        return Err(backend(format_args!(
            "root window depth {depth} is not supported (need 24 or 32)"
        )));
    }
    let bpp = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == depth)
        .map(|f| f.bits_per_pixel);
    if bpp != Some(32) {
        return Err(backend(format_args!(
            "depth {depth} images use {bpp:?} bits per pixel (need 32)"
        )));
    }
    if setup.image_byte_order != ImageOrder::LSB_FIRST || cfg!(target_endian = "big") {
        return Err(backend("only little-endian image byte order is supported"));
    }
    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| &d.visuals)
        .find(|v| v.visual_id == screen.root_visual);
    match visual {
        Some(v) if (v.red_mask, v.green_mask, v.blue_mask) == (0xff_0000, 0xff00, 0xff) => {
            Ok(screen.root)
        }
        _ => Err(backend(
            "root visual is not 8-bit-per-channel RGB (masks ff0000/ff00/ff)",
        )),
    }
}

/// An X rectangle (which may start left of or above the origin) as a `Rect`.
fn to_rect(r: &Rectangle) -> Rect {
    let x0 = i32::from(r.x).max(0);
    let y0 = i32::from(r.y).max(0);
    let x1 = (i32::from(r.x) + i32::from(r.width)).max(x0);
    let y1 = (i32::from(r.y) + i32::from(r.height)).max(y0);
    Rect::new(x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32)
}

/// A SysV shared-memory mapping in this process, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone (nothing else in the process has its
// address), so moving it to another thread moves exclusive ownership with it.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only ever yields `&[u8]` (see `ShmBuffer::bytes`); writes need `&mut`.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from a successful `shmat` and is detached exactly once, here; no
        // slice borrowed from it can outlive `self`.
        unsafe { libc::shmdt(self.ptr.cast()) };
    }
}

/// Pixel memory shared with the X server: a SysV segment attached on both sides.
///
/// The segment is marked for removal as soon as the server has attached it, so the kernel
/// frees it when both sides detach, even if either crashes. `Send` and `Sync` follow from
/// [`Mapping`] and the thread-safe connection.
pub(crate) struct ShmBuffer {
    map: Mapping,
    seg: shm::Seg,
    /// The connection that attached `seg`; also identifies the source that made the frame.
    conn: Arc<RustConnection>,
}

impl ShmBuffer {
    fn new(conn: &Arc<RustConnection>, len: usize) -> Result<Self, CaptureError> {
        // SAFETY: shmget only takes integers and touches no memory of ours.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            let err = std::io::Error::last_os_error();
            return Err(backend(format_args!("shmget of {len} bytes failed: {err}")));
        }
        // SAFETY: `id` names the segment just created; a null address lets the kernel choose
        // where to map it and flags 0 map it read-write.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if addr as isize == -1 {
            let err = std::io::Error::last_os_error();
            // SAFETY: removing a segment we created and nobody attached; no pointer involved.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            return Err(backend(format_args!("shmat failed: {err}")));
        }
        let map = Mapping {
            ptr: addr.cast(),
            len,
        };
        let attached = conn
            .generate_id()
            .map_err(|e| e.to_string())
            .and_then(|seg| {
                let cookie = conn.shm_attach(seg, id as u32, false);
                // The round trip makes sure the server has attached before the removal below.
                cookie
                    .map_err(|e| e.to_string())?
                    .check()
                    .map_err(|e| e.to_string())
                    .map(|()| seg)
            });
        // SAFETY: marks our own segment for removal once every attachment is gone; the
        // mapping above stays valid until `Mapping` drops.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        match attached {
            Ok(seg) => Ok(Self {
                map,
                seg,
                conn: Arc::clone(conn),
            }),
            Err(e) => Err(backend(format_args!(
                "the X server cannot attach shared memory (remote display?): {e}"
            ))),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as `self`; the server
        // writes into it only during `X11Source::capture`, which holds `&mut Frame`, so no
        // shared borrow exists then.
        unsafe { std::slice::from_raw_parts(self.map.ptr, self.map.len) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr, self.map.len) }
    }
}

impl Drop for ShmBuffer {
    fn drop(&mut self) {
        // Let the server drop its attachment now rather than when the connection closes
        // (frames are freed long before that after a resize). `map` unmaps ours afterwards.
        let _ = self.conn.shm_detach(self.seg);
        let _ = self.conn.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_rectangles_are_clamped_to_the_origin() {
        let r = |x, y, width, height| Rectangle {
            x,
            y,
            width,
            height,
        };
        assert_eq!(to_rect(&r(3, 4, 5, 6)), Rect::new(3, 4, 5, 6));
        assert_eq!(to_rect(&r(-2, -3, 5, 6)), Rect::new(0, 0, 3, 3));
        assert!(to_rect(&r(-10, 0, 5, 6)).is_empty());
    }
}
