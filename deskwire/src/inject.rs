use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use enigo::{Axis, Button, Coordinate, Direction, Enigo, Keyboard, Mouse, Settings};

use deskwire_session::input::{InjectOp, Key, NamedKey, PointerButton};

pub(crate) type Report = Box<dyn Fn(&InjectOp, Result<(), String>) + Send>;

/// Pending injections beyond which new ones are refused: input that old is useless, and a
/// flood must not grow memory. Releases bypass the limit (they block instead).
const QUEUE: usize = 1024;

/// The `deskwire-inject` thread: owns the enigo connection and injects in order.
pub(crate) struct Injector {
    tx: Option<Sender<InjectOp>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").finish_non_exhaustive()
    }
}

impl Injector {
    /// Connect to the X display (`None`: `$DISPLAY`) on a new thread and wait for the result.
    pub(crate) fn start(display: Option<String>, report: Report) -> Result<Self, String> {
        let (tx, rx) = crossbeam_channel::bounded::<InjectOp>(QUEUE);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(1);
        let thread = std::thread::Builder::new()
            .name("deskwire-inject".into())
            .spawn(move || {
                let settings = Settings {
                    // enigo's default sleeps 12 ms after each X request; we want the event now.
                    linux_delay: 0,
                    x11_display: display,
                    release_keys_when_dropped: true,
                    ..Settings::default()
                };
                let mut enigo = match Enigo::new(&settings) {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for op in rx {
                    let result = inject(&mut enigo, &op).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::warn!(?op, error = %e, "injection failed");
                    }
                    report(&op, result);
                }
            })
            .map_err(|e| format!("cannot start the inject thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                tx: Some(tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(format!("cannot open the display for input injection: {e}"))
            }
            Err(_) => {
                let _ = thread.join();
                Err("the inject thread ended before it was ready".into())
            }
        }
    }

    /// Queue an injection; gives it back when the queue is full.
    pub(crate) fn submit(&self, op: InjectOp) -> Result<(), InjectOp> {
        let Some(tx) = &self.tx else { return Err(op) };
        tx.try_send(op).map_err(|e| match e {
            TrySendError::Full(op) | TrySendError::Disconnected(op) => op,
        })
    }

    /// Queue releases, waiting for room: a release must never be dropped.
    pub(crate) fn submit_releases(&self, ops: Vec<InjectOp>) {
        if let Some(tx) = &self.tx {
            for op in ops {
                let _ = tx.send(op);
            }
        }
    }

    /// Inject what is queued, then stop and join the thread.
    pub(crate) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn inject(enigo: &mut Enigo, op: &InjectOp) -> enigo::InputResult<()> {
    let dir = |down: bool| {
        if down {
            Direction::Press
        } else {
            Direction::Release
        }
    };
    match op {
        InjectOp::MoveTo { x, y } => enigo.move_mouse(*x, *y, Coordinate::Abs),
        InjectOp::Button { button, down } => enigo.button(enigo_button(*button), dir(*down)),
        InjectOp::Wheel { dx, dy } => {
            if *dx != 0 {
                enigo.scroll(*dx, Axis::Horizontal)?;
            }
            if *dy != 0 {
                enigo.scroll(*dy, Axis::Vertical)?;
            }
            Ok(())
        }
        InjectOp::Key { key, down } => enigo.key(enigo_key(*key), dir(*down)),
        InjectOp::Text(text) => enigo.text(text),
    }
}

fn enigo_button(b: PointerButton) -> Button {
    match b {
        PointerButton::Left => Button::Left,
        PointerButton::Middle => Button::Middle,
        PointerButton::Right => Button::Right,
        PointerButton::Back => Button::Back,
        PointerButton::Forward => Button::Forward,
    }
}

fn enigo_key(k: Key) -> enigo::Key {
    use enigo::Key as E;
    match k {
        Key::Char(c) => E::Unicode(c),
        Key::Named(n) => match n {
            NamedKey::Return => E::Return,
            NamedKey::Tab => E::Tab,
            NamedKey::Backspace => E::Backspace,
            NamedKey::Escape => E::Escape,
            NamedKey::Delete => E::Delete,
            NamedKey::Insert => E::Insert,
            NamedKey::Home => E::Home,
            NamedKey::End => E::End,
            NamedKey::PageUp => E::PageUp,
            NamedKey::PageDown => E::PageDown,
            NamedKey::Left => E::LeftArrow,
            NamedKey::Right => E::RightArrow,
            NamedKey::Up => E::UpArrow,
            NamedKey::Down => E::DownArrow,
            NamedKey::Shift => E::Shift,
            NamedKey::Control => E::Control,
            NamedKey::Alt => E::Alt,
            NamedKey::Meta => E::Meta,
            NamedKey::CapsLock => E::CapsLock,
            NamedKey::Space => E::Space,
            NamedKey::F1 => E::F1,
            NamedKey::F2 => E::F2,
            NamedKey::F3 => E::F3,
            NamedKey::F4 => E::F4,
            NamedKey::F5 => E::F5,
            NamedKey::F6 => E::F6,
            NamedKey::F7 => E::F7,
            NamedKey::F8 => E::F8,
            NamedKey::F9 => E::F9,
            NamedKey::F10 => E::F10,
            NamedKey::F11 => E::F11,
            NamedKey::F12 => E::F12,
        },
    }
}
