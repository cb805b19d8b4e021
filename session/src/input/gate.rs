use super::{InjectOp, InputEvent, Key, PointerButton, MAX_TEXT_BYTES};

/// Why the gate refused an input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputRefusal {
    /// The session is not established yet (or has ended).
    #[error("the session is not established")]
    NotEstablished,
    /// The session is view-only, or control was revoked.
    #[error("the session is view-only")]
    ViewOnly,
    /// A text event over the size limit.
    #[error("text input longer than {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
    /// A release of a key or button that is not held: ignored so a viewer cannot
    /// release what the local user holds.
    #[error("release of a key or button that the viewer does not hold")]
    NotHeld,
    /// More keys held at once than any keyboard allows.
    #[error("too many keys held at once")]
    TooManyKeys,
    /// The inject thread is this far behind: the event would be stale by the time it ran.
    #[error("input queue full")]
    QueueFull,
    /// The bytes were not a valid input message.
    #[error("malformed input message")]
    Malformed,
    /// A press, move or text that reached the target more than a second later than the
    /// viewer's messages usually do (held up by an outage): acting on it now would surprise
    /// the user. Releases still go through.
    #[error("input that arrived more than a second late")]
    Stale,
}

/// Keys held at once beyond which presses are refused; a real keyboard rolls over far sooner.
pub(crate) const MAX_HELD_KEYS: usize = 16;

/// Decides, on the target, which viewer input may be injected.
///
/// Sans-IO: feed it events with [`InputGate::handle_event`] and act on what it returns. It
/// tracks what the viewer holds so [`InputGate::release_all`] can let go of everything
/// when the session ends or control is revoked.
#[derive(Debug)]
pub struct InputGate {
    established: bool,
    control: bool,
    width: u32,
    height: u32,
    held_keys: Vec<Key>,
    held_buttons: [bool; 5],
}

impl InputGate {
    /// A gate for a `width` x `height` screen. It refuses everything until
    /// [`InputGate::set_established`]; `control` false makes the session view-only.
    pub fn new(width: u32, height: u32, control: bool) -> Self {
        Self {
            established: false,
            control,
            width: width.max(1),
            height: height.max(1),
            held_keys: Vec::with_capacity(MAX_HELD_KEYS),
            held_buttons: [false; 5],
        }
    }

    /// Whether input is currently allowed at all.
    pub fn allows_input(&self) -> bool {
        self.established && self.control
    }

    /// The session is established (true) or over (false). Ending it releases everything.
    pub fn set_established(&mut self, established: bool) -> Vec<InjectOp> {
        self.established = established;
        if established {
            Vec::new()
        } else {
            self.release_all()
        }
    }

    /// Whether the viewer holds a key or a button down now.
    pub fn holds_any(&self) -> bool {
        !self.held_keys.is_empty() || self.held_buttons.iter().any(|b| *b)
    }

    /// Grant or revoke control. Revoking releases everything held.
    pub fn set_control(&mut self, control: bool) -> Vec<InjectOp> {
        self.control = control;
        if control {
            Vec::new()
        } else {
            self.release_all()
        }
    }

    /// The screen changed size: later pointer positions clamp to the new size.
    pub fn set_screen(&mut self, width: u32, height: u32) {
        self.width = width.max(1);
        self.height = height.max(1);
    }

    /// Decide one event: the operation to inject, or why not.
    pub fn handle_event(&mut self, event: InputEvent) -> Result<InjectOp, InputRefusal> {
        if !self.established {
            return Err(InputRefusal::NotEstablished);
        }
        if !self.control {
            return Err(InputRefusal::ViewOnly);
        }
        match event {
            InputEvent::PointerMove { x, y } => Ok(InjectOp::MoveTo {
                x: clamp(x, self.width),
                y: clamp(y, self.height),
            }),
            InputEvent::Button { button, down } => {
                let held = &mut self.held_buttons[usize::from(button.wire())];
                if !down && !*held {
                    return Err(InputRefusal::NotHeld);
                }
                *held = down;
                Ok(InjectOp::Button { button, down })
            }
            InputEvent::Wheel { dx, dy } => Ok(InjectOp::Wheel {
                dx: i32::from(dx),
                dy: i32::from(dy),
            }),
            InputEvent::Key { key, down } => {
                let pos = self.held_keys.iter().position(|k| *k == key);
                match (down, pos) {
                    (true, None) if self.held_keys.len() >= MAX_HELD_KEYS => {
                        return Err(InputRefusal::TooManyKeys)
                    }
                    (true, None) => self.held_keys.push(key),
                    (true, Some(_)) => {} // auto-repeat
                    (false, Some(i)) => {
                        self.held_keys.swap_remove(i);
                    }
                    (false, None) => return Err(InputRefusal::NotHeld),
                }
                Ok(InjectOp::Key { key, down })
            }
            InputEvent::Text(text) => {
                if text.len() > MAX_TEXT_BYTES {
                    return Err(InputRefusal::TextTooLong);
                }
                Ok(InjectOp::Text(text))
            }
        }
    }

    /// Release every key and button the viewer holds, in reverse order of pressing.
    pub fn release_all(&mut self) -> Vec<InjectOp> {
        let mut ops: Vec<InjectOp> = self
            .held_keys
            .drain(..)
            .rev()
            .map(|key| InjectOp::Key { key, down: false })
            .collect();
        for button in PointerButton::ALL {
            let held = &mut self.held_buttons[usize::from(button.wire())];
            if std::mem::take(held) {
                ops.push(InjectOp::Button {
                    button,
                    down: false,
                });
            }
        }
        ops
    }
}

fn clamp(v: i32, size: u32) -> i32 {
    let max = i32::try_from(size - 1).unwrap_or(i32::MAX);
    v.clamp(0, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::NamedKey;

    fn live(control: bool) -> InputGate {
        let mut g = InputGate::new(1920, 1080, control);
        assert!(g.set_established(true).is_empty());
        g
    }

    #[test]
    fn nothing_passes_before_the_session_is_established() {
        let mut g = InputGate::new(1920, 1080, true);
        assert_eq!(
            g.handle_event(InputEvent::PointerMove { x: 1, y: 1 }),
            Err(InputRefusal::NotEstablished)
        );
        g.set_established(true);
        assert!(g
            .handle_event(InputEvent::PointerMove { x: 1, y: 1 })
            .is_ok());
    }

    #[test]
    fn a_view_only_session_refuses_every_kind_of_event() {
        let mut g = live(false);
        let events = [
            InputEvent::PointerMove { x: 1, y: 1 },
            InputEvent::Button {
                button: PointerButton::Left,
                down: true,
            },
            InputEvent::Wheel { dx: 0, dy: 1 },
            InputEvent::Key {
                key: Key::Char('a'),
                down: true,
            },
            InputEvent::Text("hi".into()),
        ];
        for e in events {
            assert_eq!(g.handle_event(e), Err(InputRefusal::ViewOnly));
        }
        assert!(!g.allows_input());
    }

    #[test]
    fn pointer_positions_are_clamped_to_the_screen() {
        let mut g = live(true);
        let cases = [
            ((-5, -7), (0, 0)),
            ((5000, 5000), (1919, 1079)),
            ((10, 20), (10, 20)),
        ];
        for ((x, y), (cx, cy)) in cases {
            assert_eq!(
                g.handle_event(InputEvent::PointerMove { x, y }),
                Ok(InjectOp::MoveTo { x: cx, y: cy })
            );
        }
        g.set_screen(800, 600);
        assert_eq!(
            g.handle_event(InputEvent::PointerMove { x: 900, y: 0 }),
            Ok(InjectOp::MoveTo { x: 799, y: 0 })
        );
    }

    #[test]
    fn ending_the_session_releases_held_keys_and_buttons() {
        let mut g = live(true);
        let shift = Key::Named(NamedKey::Shift);
        g.handle_event(InputEvent::Key {
            key: shift,
            down: true,
        })
        .unwrap();
        g.handle_event(InputEvent::Key {
            key: Key::Char('a'),
            down: true,
        })
        .unwrap();
        g.handle_event(InputEvent::Button {
            button: PointerButton::Right,
            down: true,
        })
        .unwrap();
        let ops = g.set_established(false);
        assert_eq!(
            ops,
            vec![
                InjectOp::Key {
                    key: Key::Char('a'),
                    down: false
                },
                InjectOp::Key {
                    key: shift,
                    down: false
                },
                InjectOp::Button {
                    button: PointerButton::Right,
                    down: false
                },
            ]
        );
        assert!(g.release_all().is_empty(), "released once only");
    }

    #[test]
    fn revoking_control_releases_and_then_refuses() {
        let mut g = live(true);
        g.handle_event(InputEvent::Button {
            button: PointerButton::Left,
            down: true,
        })
        .unwrap();
        let ops = g.set_control(false);
        assert_eq!(
            ops,
            vec![InjectOp::Button {
                button: PointerButton::Left,
                down: false
            }]
        );
        assert_eq!(
            g.handle_event(InputEvent::PointerMove { x: 0, y: 0 }),
            Err(InputRefusal::ViewOnly)
        );
    }

    #[test]
    fn released_keys_are_not_released_again_and_unheld_releases_are_refused() {
        let mut g = live(true);
        let k = Key::Char('x');
        assert_eq!(
            g.handle_event(InputEvent::Key {
                key: k,
                down: false
            }),
            Err(InputRefusal::NotHeld)
        );
        g.handle_event(InputEvent::Key { key: k, down: true })
            .unwrap();
        g.handle_event(InputEvent::Key { key: k, down: true })
            .unwrap(); // repeat
        g.handle_event(InputEvent::Key {
            key: k,
            down: false,
        })
        .unwrap();
        assert!(g.release_all().is_empty());
    }

    #[test]
    fn long_text_and_key_floods_are_refused() {
        let mut g = live(true);
        let text = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(
            g.handle_event(InputEvent::Text(text)),
            Err(InputRefusal::TextTooLong)
        );
        for i in 0..MAX_HELD_KEYS {
            let c = char::from(b'a' + i as u8);
            g.handle_event(InputEvent::Key {
                key: Key::Char(c),
                down: true,
            })
            .unwrap();
        }
        assert_eq!(
            g.handle_event(InputEvent::Key {
                key: Key::Char('z'),
                down: true
            }),
            Err(InputRefusal::TooManyKeys)
        );
        assert_eq!(g.release_all().len(), MAX_HELD_KEYS);
    }
}
