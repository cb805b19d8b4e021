//! Keyboard and mouse on the return path: the events a viewer sends, the gate that decides
//! on the target whether each one may be injected, and the thread that injects them.
//!
//! The gate is sans-IO and owns the safety rules, so they are tested without an X server:
//! nothing before the session is established, nothing in a view-only session, pointer
//! coordinates clamped to the screen, and every key or button still held released when the
//! session ends or control is revoked.

mod gate;

pub(crate) use gate::MAX_HELD_KEYS;

pub use gate::{InputGate, InputRefusal};

/// A pointer button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointerButton {
    /// Primary.
    Left,
    /// Wheel click.
    Middle,
    /// Secondary.
    Right,
    /// Browser back.
    Back,
    /// Browser forward.
    Forward,
}

impl PointerButton {
    pub(crate) const ALL: [PointerButton; 5] = [
        PointerButton::Left,
        PointerButton::Middle,
        PointerButton::Right,
        PointerButton::Back,
        PointerButton::Forward,
    ];

    pub(crate) fn wire(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_wire(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }
}

/// Keys that are not characters. The set every desktop keyboard has; more can be added
/// without changing the wire format (unknown values are refused, not misread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum NamedKey {
    Return = 1,
    Tab,
    Backspace,
    Escape,
    Delete,
    Insert,
    Home,
    End,
    PageUp,
    PageDown,
    Left,
    Right,
    Up,
    Down,
    Shift,
    Control,
    Alt,
    Meta,
    CapsLock,
    Space,
    F1,
    F2,
    F3,
    F4,
    F5,
    F6,
    F7,
    F8,
    F9,
    F10,
    F11,
    F12,
}

impl NamedKey {
    pub(crate) fn from_wire(v: u32) -> Option<Self> {
        use NamedKey::*;
        const ALL: [NamedKey; 32] = [
            Return, Tab, Backspace, Escape, Delete, Insert, Home, End, PageUp, PageDown, Left,
            Right, Up, Down, Shift, Control, Alt, Meta, CapsLock, Space, F1, F2, F3, F4, F5, F6,
            F7, F8, F9, F10, F11, F12,
        ];
        let i = usize::try_from(v).ok()?.checked_sub(1)?;
        ALL.get(i).copied()
    }
}

/// A key: a character (as typed, layout-independent) or a named key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// The key that types this character.
    Char(char),
    /// A key without a character.
    Named(NamedKey),
}

/// One input event, in the target screen's pixel coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEvent {
    /// Move the pointer to an absolute position (clamped to the screen on the target).
    PointerMove {
        /// Column.
        x: i32,
        /// Row.
        y: i32,
    },
    /// Press or release a pointer button.
    Button {
        /// Which.
        button: PointerButton,
        /// Pressed (true) or released.
        down: bool,
    },
    /// Scroll by whole notches (positive: right / down).
    Wheel {
        /// Horizontal notches.
        dx: i16,
        /// Vertical notches.
        dy: i16,
    },
    /// Press or release a key.
    Key {
        /// Which.
        key: Key,
        /// Pressed (true) or released.
        down: bool,
    },
    /// Type this text (at most [`MAX_TEXT_BYTES`] bytes of UTF-8).
    Text(String),
}

/// Longest text event, in bytes: a paste is several events, so one event stays small.
pub const MAX_TEXT_BYTES: usize = 1024;

/// One injection the gate allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectOp {
    /// Move the pointer to this (already clamped) position.
    MoveTo {
        /// Column.
        x: i32,
        /// Row.
        y: i32,
    },
    /// Press or release a button.
    Button {
        /// Which.
        button: PointerButton,
        /// Pressed or released.
        down: bool,
    },
    /// Scroll.
    Wheel {
        /// Horizontal notches.
        dx: i32,
        /// Vertical notches.
        dy: i32,
    },
    /// Press or release a key.
    Key {
        /// Which.
        key: Key,
        /// Pressed or released.
        down: bool,
    },
    /// Type text.
    Text(String),
}

/// The kind of an input event, for reporting without copying text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Pointer move.
    PointerMove,
    /// Button press or release.
    Button,
    /// Scroll.
    Wheel,
    /// Key press or release.
    Key,
    /// Text.
    Text,
}

impl From<&InputEvent> for InputKind {
    fn from(e: &InputEvent) -> Self {
        match e {
            InputEvent::PointerMove { .. } => InputKind::PointerMove,
            InputEvent::Button { .. } => InputKind::Button,
            InputEvent::Wheel { .. } => InputKind::Wheel,
            InputEvent::Key { .. } => InputKind::Key,
            InputEvent::Text(_) => InputKind::Text,
        }
    }
}

impl From<&InjectOp> for InputKind {
    fn from(op: &InjectOp) -> Self {
        match op {
            InjectOp::MoveTo { .. } => InputKind::PointerMove,
            InjectOp::Button { .. } => InputKind::Button,
            InjectOp::Wheel { .. } => InputKind::Wheel,
            InjectOp::Key { .. } => InputKind::Key,
            InjectOp::Text(_) => InputKind::Text,
        }
    }
}
