//! The viewer's window (part of the `deskwire-viewer` program, not of its library): the
//! remote screen with the target's pointer on top, and the technician's keyboard and mouse
//! sent back. The loop is paced by the session's events and a short input poll, not by
//! minifb's frame rate (ARCHITECTURE.md, "The viewer's window").

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deskwire::{DisconnectReason, Viewer, ViewerEvent};
use deskwire_viewer::window::{
    remote_point, KeyTranslator, PointerState, PointerTracker, WindowInput,
};
use deskwire_viewer::Canvas;
use minifb::{MouseButton, MouseMode, Window, WindowOptions};

use crate::Session;

/// Forwards the window's keyboard callbacks, in order, to the loop.
struct Keys(mpsc::Sender<WindowInput>);

impl minifb::InputCallback for Keys {
    fn add_char(&mut self, c: u32) {
        if let Some(c) = char::from_u32(c) {
            let _ = self.0.send(WindowInput::Char(c));
        }
    }

    fn set_key_state(&mut self, key: minifb::Key, down: bool) {
        let _ = self.0.send(WindowInput::Key(key, down));
    }
}

/// How often the window's input is read while the session is quiet: the longest a key
/// or a pointer move waits before it is sent.
const INPUT_POLL: Duration = Duration::from_millis(4);

/// The same when the technician has not typed or moved the pointer for [`ACTIVE_FOR`]:
/// a window left open in the background polls a quarter as often, and only the first
/// key after a pause waits longer.
const IDLE_INPUT_POLL: Duration = Duration::from_millis(16);

/// How long after the last input the window counts as in use.
const ACTIVE_FOR: Duration = Duration::from_secs(3);

/// The largest window the remote screen opens in; it can be resized.
const MAX_WINDOW: (f64, f64) = (1600.0, 900.0);

pub(crate) fn run_window(
    viewer: &Viewer,
    session: &mut Session,
) -> Result<Option<DisconnectReason>> {
    let mut window: Option<Window> = None;
    // The remote size the window was opened for: a stream restarted at the same size (the
    // target changed its band layout for the link) keeps its window.
    let mut window_for: Option<(u32, u32)> = None;
    let (key_tx, key_rx) = mpsc::channel();
    let mut keys = KeyTranslator::default();
    let mut pointer = PointerTracker::default();
    let mut canvas = Canvas::default();
    let mut shown = (0u64, 0u64);
    let mut last_input = Instant::now();
    loop {
        // Block until the session says something (a picture, the pointer), at most one
        // input poll: a picture is shown when it is decoded and a key leaves within
        // INPUT_POLL of the window system delivering it, instead of at the next 60 Hz turn.
        let poll = if last_input.elapsed() < ACTIVE_FOR {
            INPUT_POLL
        } else {
            IDLE_INPUT_POLL
        };
        let mut first = viewer.events().recv_timeout(poll).ok();
        while let Some(event) = first.take().or_else(|| viewer.events().try_recv().ok()) {
            let restart = matches!(event, ViewerEvent::StreamStarted { .. });
            if let Some(reason) = session.handle(event) {
                return Ok(Some(reason));
            }
            session.ask_for_grant(viewer);
            if restart && session.size != window_for {
                window_for = session.size;
                if let Some((w, h)) = session.size {
                    // A new stream (or a new screen size): a window of the right shape.
                    let scale = (MAX_WINDOW.0 / f64::from(w))
                        .min(MAX_WINDOW.1 / f64::from(h))
                        .min(1.0);
                    let (ww, wh) = (
                        (f64::from(w) * scale) as usize,
                        (f64::from(h) * scale) as usize,
                    );
                    let mut win = Window::new(
                        &format!("deskwire - {}", session.code),
                        ww.max(1),
                        wh.max(1),
                        WindowOptions {
                            resize: true,
                            scale_mode: minifb::ScaleMode::Stretch,
                            ..WindowOptions::default()
                        },
                    )
                    .context("cannot open the viewer window")?;
                    // The loop paces itself on the session's events and INPUT_POLL;
                    // minifb's own rate limit would hold every key and picture up to a
                    // frame.
                    win.set_target_fps(0);
                    win.set_input_callback(Box::new(Keys(key_tx.clone())));
                    window = Some(win);
                }
            }
        }
        let (Some(win), Some(remote)) = (window.as_mut(), session.size) else {
            continue;
        };
        if !win.is_open() {
            return Ok(None);
        }
        if (session.frames, session.cursor_moves) != shown {
            let new_frame = session.frames != shown.0;
            shown = (session.frames, session.cursor_moves);
            let cursor = viewer.cursor();
            let drawn = if new_frame {
                viewer
                    .with_frame(|f| canvas.set_frame(f, cursor.as_ref()))
                    .is_some()
            } else {
                canvas.set_cursor(cursor.as_ref());
                canvas.size().0 > 0
            };
            if drawn {
                let (w, h) = canvas.size();
                win.update_with_buffer(canvas.pixels(), w, h)
                    .context("cannot draw the remote screen")?;
            } else {
                win.update();
            }
        } else {
            win.update();
        }

        let mut out = Vec::new();
        while let Ok(input) = key_rx.try_recv() {
            keys.handle(input, &mut out);
        }
        keys.flush(&mut out);
        let pos = win
            .get_unscaled_mouse_pos(MouseMode::Discard)
            .and_then(|p| remote_point(p, win.get_size(), remote));
        pointer.handle(
            PointerState {
                pos,
                buttons: [
                    win.get_mouse_down(MouseButton::Left),
                    win.get_mouse_down(MouseButton::Middle),
                    win.get_mouse_down(MouseButton::Right),
                ],
                wheel: win.get_scroll_wheel().unwrap_or((0.0, 0.0)),
            },
            &mut out,
        );
        if !out.is_empty() {
            last_input = Instant::now();
        }
        // A view-only target would refuse it all; don't send what cannot arrive.
        if session.control {
            for event in out {
                if viewer.send_input(event).is_err() {
                    break;
                }
            }
        }
    }
}
