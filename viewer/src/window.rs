//! What the viewer window turns into [`InputEvent`]s, kept apart from the window itself so the
//! rules are tested without a display.
//!
//! Text and shortcuts travel differently. Printable characters are sent as the text the local
//! keyboard layout produced (`Text`), so a technician with a German keyboard types what they
//! see on their keys whatever layout the target has. With Control, Alt or Super held, a
//! character key is a shortcut: it is sent as key down/up of the unshifted character, which
//! the target maps through its own layout (Ctrl+C stays Ctrl+C). Named keys (arrows, Enter,
//! F-keys, modifiers) always travel as key down/up, so they can be held and repeated.

use deskwire::input::{InputEvent, Key, NamedKey, PointerButton};
use minifb::Key as K;

/// One thing the window reported, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowInput {
    /// The platform's text for a key press (already shifted, composed, and so on).
    Char(char),
    /// A physical key went down (`true`) or up.
    Key(K, bool),
}

/// Turns window keyboard input into session input events.
#[derive(Debug, Default)]
pub struct KeyTranslator {
    ctrl: bool,
    alt: bool,
    meta: bool,
    /// Character keys sent down as part of a shortcut and not yet released.
    held: Vec<char>,
    /// Text waiting to be sent as one `Text` event.
    text: String,
}

impl KeyTranslator {
    /// Handle one window input; the events it produces are appended to `out`.
    pub fn handle(&mut self, input: WindowInput, out: &mut Vec<InputEvent>) {
        match input {
            WindowInput::Char(c) => {
                if !c.is_control() && !self.shortcut_held() {
                    self.text.push(c);
                }
            }
            WindowInput::Key(key, down) => {
                if let Some(named) = named(key) {
                    match named {
                        NamedKey::Control => self.ctrl = down,
                        NamedKey::Alt => self.alt = down,
                        NamedKey::Meta => self.meta = down,
                        // Space is text unless it is part of a shortcut (Ctrl+Space).
                        NamedKey::Space if !self.shortcut_held() => return,
                        _ => {}
                    }
                    self.flush(out);
                    out.push(InputEvent::Key {
                        key: Key::Named(named),
                        down,
                    });
                } else if let Some(c) = character(key) {
                    if down && self.shortcut_held() {
                        self.flush(out);
                        self.held.push(c);
                        out.push(InputEvent::Key {
                            key: Key::Char(c),
                            down: true,
                        });
                    } else if let Some(i) = self.held.iter().position(|h| *h == c) {
                        // Released after the modifier? Still release it, or it stays held.
                        self.held.swap_remove(i);
                        self.flush(out);
                        out.push(InputEvent::Key {
                            key: Key::Char(c),
                            down: false,
                        });
                    }
                }
            }
        }
    }

    /// Send what text has accumulated.
    pub fn flush(&mut self, out: &mut Vec<InputEvent>) {
        if !self.text.is_empty() {
            out.push(InputEvent::Text(std::mem::take(&mut self.text)));
        }
    }

    fn shortcut_held(&self) -> bool {
        self.ctrl || self.alt || self.meta
    }
}

/// Map a point in the window (pixels, `win` its size) to the remote screen (`remote` size);
/// None outside the window.
pub fn remote_point(
    pos: (f32, f32),
    win: (usize, usize),
    remote: (u32, u32),
) -> Option<(i32, i32)> {
    let (x, y) = pos;
    let (ww, wh) = (win.0 as f32, win.1 as f32);
    if ww < 1.0 || wh < 1.0 || x < 0.0 || y < 0.0 || x >= ww || y >= wh {
        return None;
    }
    let rx = (x * remote.0 as f32 / ww) as i32;
    let ry = (y * remote.1 as f32 / wh) as i32;
    Some((
        rx.min(remote.0 as i32 - 1).max(0),
        ry.min(remote.1 as i32 - 1).max(0),
    ))
}

/// Pointer state the window reports each tick.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PointerState {
    /// Position on the remote screen, when the pointer is over the window.
    pub pos: Option<(i32, i32)>,
    /// Left, middle, right held.
    pub buttons: [bool; 3],
    /// Wheel movement since the last tick (window units; positive y is away from the user).
    pub wheel: (f32, f32),
}

/// Turns successive pointer states into moves, presses, releases and wheel steps.
#[derive(Debug, Default)]
pub struct PointerTracker {
    last: PointerState,
}

impl PointerTracker {
    /// Compare with the last state and append the differences to `out`.
    pub fn handle(&mut self, now: PointerState, out: &mut Vec<InputEvent>) {
        if let Some((x, y)) = now.pos {
            if now.pos != self.last.pos {
                out.push(InputEvent::PointerMove { x, y });
            }
        }
        const BUTTONS: [PointerButton; 3] = [
            PointerButton::Left,
            PointerButton::Middle,
            PointerButton::Right,
        ];
        for (i, button) in BUTTONS.into_iter().enumerate() {
            if now.buttons[i] != self.last.buttons[i] {
                out.push(InputEvent::Button {
                    button,
                    down: now.buttons[i],
                });
            }
        }
        let steps = |v: f32| -> i16 {
            if v.abs() < f32::EPSILON {
                0
            } else {
                // One notch is one step whatever the platform's scale; at least one.
                (v.signum() * v.abs().clamp(1.0, 10.0)).round() as i16
            }
        };
        // The window reports up and left as positive; on the wire positive is down and right.
        let (dx, dy) = (-steps(now.wheel.0), -steps(now.wheel.1));
        if dx != 0 || dy != 0 {
            out.push(InputEvent::Wheel { dx, dy });
        }
        self.last = PointerState {
            wheel: (0.0, 0.0),
            ..now
        };
    }
}

fn named(key: K) -> Option<NamedKey> {
    use NamedKey as N;
    Some(match key {
        K::Enter | K::NumPadEnter => N::Return,
        K::Tab => N::Tab,
        K::Backspace => N::Backspace,
        K::Escape => N::Escape,
        K::Delete => N::Delete,
        K::Insert => N::Insert,
        K::Home => N::Home,
        K::End => N::End,
        K::PageUp => N::PageUp,
        K::PageDown => N::PageDown,
        K::Left => N::Left,
        K::Right => N::Right,
        K::Up => N::Up,
        K::Down => N::Down,
        K::LeftShift | K::RightShift => N::Shift,
        K::LeftCtrl | K::RightCtrl => N::Control,
        K::LeftAlt | K::RightAlt => N::Alt,
        K::LeftSuper | K::RightSuper => N::Meta,
        K::CapsLock => N::CapsLock,
        K::Space => N::Space,
        K::F1 => N::F1,
        K::F2 => N::F2,
        K::F3 => N::F3,
        K::F4 => N::F4,
        K::F5 => N::F5,
        K::F6 => N::F6,
        K::F7 => N::F7,
        K::F8 => N::F8,
        K::F9 => N::F9,
        K::F10 => N::F10,
        K::F11 => N::F11,
        K::F12 => N::F12,
        _ => return None,
    })
}

/// The unshifted character of a character key (US positions), for shortcuts.
fn character(key: K) -> Option<char> {
    let letters = [
        K::A,
        K::B,
        K::C,
        K::D,
        K::E,
        K::F,
        K::G,
        K::H,
        K::I,
        K::J,
        K::K,
        K::L,
        K::M,
        K::N,
        K::O,
        K::P,
        K::Q,
        K::R,
        K::S,
        K::T,
        K::U,
        K::V,
        K::W,
        K::X,
        K::Y,
        K::Z,
    ];
    if let Some(i) = letters.iter().position(|k| *k == key) {
        return Some((b'a' + i as u8) as char);
    }
    let digits = [
        K::Key0,
        K::Key1,
        K::Key2,
        K::Key3,
        K::Key4,
        K::Key5,
        K::Key6,
        K::Key7,
        K::Key8,
        K::Key9,
    ];
    if let Some(i) = digits.iter().position(|k| *k == key) {
        return Some((b'0' + i as u8) as char);
    }
    Some(match key {
        K::Apostrophe => '\'',
        K::Backquote => '`',
        K::Backslash => '\\',
        K::Comma => ',',
        K::Equal => '=',
        K::LeftBracket => '[',
        K::Minus => '-',
        K::Period => '.',
        K::RightBracket => ']',
        K::Semicolon => ';',
        K::Slash => '/',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(inputs: &[WindowInput]) -> Vec<InputEvent> {
        let mut t = KeyTranslator::default();
        let mut out = Vec::new();
        for i in inputs {
            t.handle(*i, &mut out);
        }
        t.flush(&mut out);
        out
    }

    fn key(k: Key, down: bool) -> InputEvent {
        InputEvent::Key { key: k, down }
    }

    #[test]
    fn typed_characters_travel_as_one_text_in_order_with_named_keys() {
        use WindowInput::{Char, Key as Wk};
        let out = run(&[
            Wk(K::LeftShift, true),
            Wk(K::H, true),
            Char('H'),
            Wk(K::H, false),
            Wk(K::LeftShift, false),
            Wk(K::I, true),
            Char('i'),
            Wk(K::I, false),
            Wk(K::Space, true),
            Char(' '),
            Wk(K::Space, false),
            Char('!'),
            Wk(K::Enter, true),
            Char('\r'),
            Wk(K::Enter, false),
        ]);
        assert_eq!(
            out,
            vec![
                key(Key::Named(NamedKey::Shift), true),
                InputEvent::Text("H".into()),
                key(Key::Named(NamedKey::Shift), false),
                InputEvent::Text("i !".into()),
                key(Key::Named(NamedKey::Return), true),
                key(Key::Named(NamedKey::Return), false),
            ]
        );
    }

    #[test]
    fn shortcuts_travel_as_keys_and_their_text_is_dropped() {
        use WindowInput::{Char, Key as Wk};
        let out = run(&[
            Wk(K::LeftCtrl, true),
            Wk(K::C, true),
            Char('c'),
            Wk(K::LeftCtrl, false),
            Wk(K::C, false),
            Wk(K::RightAlt, true),
            Wk(K::Space, true),
            Wk(K::Space, false),
            Wk(K::RightAlt, false),
        ]);
        assert_eq!(
            out,
            vec![
                key(Key::Named(NamedKey::Control), true),
                key(Key::Char('c'), true),
                key(Key::Named(NamedKey::Control), false),
                key(Key::Char('c'), false),
                key(Key::Named(NamedKey::Alt), true),
                key(Key::Named(NamedKey::Space), true),
                key(Key::Named(NamedKey::Space), false),
                key(Key::Named(NamedKey::Alt), false),
            ]
        );
    }

    #[test]
    fn window_points_scale_to_the_remote_screen_and_outside_is_none() {
        let remote = (1920, 1080);
        assert_eq!(remote_point((0.0, 0.0), (960, 540), remote), Some((0, 0)));
        assert_eq!(
            remote_point((480.0, 270.0), (960, 540), remote),
            Some((960, 540))
        );
        assert_eq!(
            remote_point((959.9, 539.9), (960, 540), remote),
            Some((1919, 1079))
        );
        assert_eq!(remote_point((960.0, 10.0), (960, 540), remote), None);
        assert_eq!(remote_point((-1.0, 10.0), (960, 540), remote), None);
        assert_eq!(remote_point((1.0, 1.0), (0, 0), remote), None);
    }

    #[test]
    fn pointer_changes_become_moves_presses_releases_and_wheel_steps() {
        let mut t = PointerTracker::default();
        let mut out = Vec::new();
        let at = |x, y| PointerState {
            pos: Some((x, y)),
            ..PointerState::default()
        };
        t.handle(at(10, 20), &mut out);
        t.handle(at(10, 20), &mut out);
        t.handle(
            PointerState {
                buttons: [true, false, false],
                ..at(10, 20)
            },
            &mut out,
        );
        t.handle(
            PointerState {
                wheel: (0.0, 1.0),
                ..at(11, 20)
            },
            &mut out,
        );
        t.handle(
            PointerState {
                pos: None,
                wheel: (0.0, -3.0),
                ..PointerState::default()
            },
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                InputEvent::PointerMove { x: 10, y: 20 },
                InputEvent::Button {
                    button: PointerButton::Left,
                    down: true
                },
                InputEvent::PointerMove { x: 11, y: 20 },
                InputEvent::Button {
                    button: PointerButton::Left,
                    down: false
                },
                InputEvent::Wheel { dx: 0, dy: -1 },
                InputEvent::Wheel { dx: 0, dy: 3 },
            ]
        );
    }
}
