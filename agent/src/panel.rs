//! The user's panel: a small window on the agent's own display that asks and tells what
//! the terminal asks and tells (a connection code with Try Again / Cancel, the consent
//! question with its countdown, unattended requests, who is connected with View only and
//! Terminate), for users who never see the agent's terminal.
//!
//! Drawn with the X core protocol (x11rb, which capture already uses) and the server's
//! built-in `fixed` font: no toolkit, no new dependency, nothing the agent's machine lacks
//! when it has an X display at all. The terminal and the control socket keep working
//! beside it; whichever answers first wins.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ChangeGCAux, ConnectionExt, CreateGCAux, CreateWindowAux, EventMask, Gcontext,
    PropMode, Rectangle, Window, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

mod form;
use form::{Form, Key};

/// The panel's size, and its buttons' place: 100 x 28 each from (10, 88), 110 apart (tests
/// click there). Four lines of text fit above them.
const WIDTH: u16 = 460;
const HEIGHT: u16 = 126;
const BUTTON: (i16, i16, u16, u16) = (10, 88, 100, 28);
const BUTTON_STEP: i16 = 110;
/// The `fixed` font's cell.
const CHAR_W: usize = 6;
const LINE_CHARS: usize = (WIDTH as usize - 20) / CHAR_W;

const BACKGROUND: u32 = 0x00f2_f2f2;
const TEXT: u32 = 0x0020_2020;
const BUTTON_FILL: u32 = 0x00d8_e4f4;
const BUTTON_EDGE: u32 = 0x0040_6090;

/// What the panel shows.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// Nothing to ask or tell: the panel is hidden.
    Hidden,
    /// A code is asked for (`why`: what happened to the last one, or what to type).
    AskingCode { why: String, kind: CodeKind },
    /// A technician asks to come in; silence at `deadline` lets them in or refuses.
    Consent {
        question: String,
        deadline: Instant,
        starts_on_its_own: bool,
    },
    /// A technician asks for unattended access; with `credentials`, the user allows it by
    /// typing their own account name and password.
    Grant { question: String, credentials: bool },
    /// A session runs; `end` names the button that ends it.
    Connected {
        who: String,
        control: bool,
        end: &'static str,
    },
}

/// Which code the panel asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// The technician's connection code (digits).
    Connection,
    /// An ad-hoc invitation's security code (letters and digits).
    Security,
}

impl CodeKind {
    fn name(self) -> &'static str {
        match self {
            CodeKind::Connection => "connection code",
            CodeKind::Security => "security code",
        }
    }
}

/// What the user clicked (or typed) on the panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Code(String),
    Cancel,
    Accept,
    ViewOnly,
    Reject,
    AllowGrant,
    /// Allowed with the customer's own account (a grant that asks for it).
    AllowGrantAs {
        user: String,
        password: String,
    },
    RefuseGrant,
    StopControl,
    Terminate,
}

/// The panel's thread, told what to show and telling what was clicked.
#[derive(Debug)]
pub struct Panel {
    views: mpsc::Sender<View>,
    actions: mpsc::Receiver<Action>,
}

impl Panel {
    /// Open the panel on `display` (hidden until there is something to show).
    pub fn open(display: Option<&str>) -> Result<Self> {
        let (conn, screen) = x11rb::connect(display)
            .with_context(|| format!("cannot open the panel on X display {display:?}"))?;
        let mut window = PanelWindow::create(conn, screen)?;
        let (views, view_rx) = mpsc::channel();
        let (action_tx, actions) = mpsc::channel();
        std::thread::Builder::new()
            .name("deskwire-panel".into())
            .spawn(move || {
                if let Err(e) = window.run(&view_rx, &action_tx) {
                    tracing::warn!(error = %e, "the panel stopped");
                }
            })?;
        Ok(Self { views, actions })
    }

    /// The panel on `display` when there is one and it opens; `None` otherwise (the
    /// terminal then asks alone). Why it did not open is logged, not fatal.
    pub fn open_if_possible(display: Option<&str>) -> Option<Self> {
        let display = display?;
        Self::open(Some(display))
            .map_err(|e| tracing::debug!("no panel: {e:#}"))
            .ok()
    }

    /// Show `view`.
    pub fn show(&self, view: View) {
        let _ = self.views.send(view);
    }

    /// What the user did on the panel since last asked, if anything.
    pub fn try_action(&self) -> Option<Action> {
        self.actions.try_recv().ok()
    }
}

struct PanelWindow {
    conn: RustConnection,
    window: Window,
    gc: Gcontext,
    keysyms: Vec<u32>,
    per_keycode: u8,
    min_keycode: u8,
    view: View,
    mapped: bool,
    /// What is being typed, while the view asks for it.
    form: Option<Form>,
    buttons: Vec<(Rectangle, Press)>,
}

/// What a button does: act at once, or send what the form holds.
#[derive(Debug, Clone)]
enum Press {
    Act(Action),
    Submit,
}

impl PanelWindow {
    fn create(conn: RustConnection, screen_num: usize) -> Result<Self> {
        let screen = conn.setup().roots[screen_num].clone();
        let window = conn.generate_id()?;
        let x = i16::try_from(screen.width_in_pixels.saturating_sub(WIDTH + 10)).unwrap_or(0);
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            window,
            screen.root,
            x,
            10,
            WIDTH,
            HEIGHT,
            1,
            WindowClass::INPUT_OUTPUT,
            x11rb::COPY_FROM_PARENT,
            &CreateWindowAux::new()
                .background_pixel(BACKGROUND)
                .event_mask(EventMask::EXPOSURE | EventMask::BUTTON_PRESS | EventMask::KEY_PRESS),
        )?;
        // Above other windows where a window manager honours it.
        let atom =
            |name: &[u8]| -> Result<u32> { Ok(conn.intern_atom(false, name)?.reply()?.atom) };
        let (state, above) = (atom(b"_NET_WM_STATE")?, atom(b"_NET_WM_STATE_ABOVE")?);
        conn.change_property32(PropMode::REPLACE, window, state, AtomEnum::ATOM, &[above])?;
        conn.change_property8(
            PropMode::REPLACE,
            window,
            AtomEnum::WM_CLASS,
            AtomEnum::STRING,
            b"deskwire-panel\0deskwire\0",
        )?;
        let font = conn.generate_id()?;
        conn.open_font(font, b"fixed")?;
        let gc = conn.generate_id()?;
        conn.create_gc(
            gc,
            window,
            &CreateGCAux::new()
                .foreground(TEXT)
                .background(BACKGROUND)
                .font(font),
        )?;
        let setup = conn.setup();
        let (min_keycode, max_keycode) = (setup.min_keycode, setup.max_keycode);
        let map = conn
            .get_keyboard_mapping(min_keycode, max_keycode - min_keycode + 1)?
            .reply()?;
        conn.flush()?;
        Ok(Self {
            conn,
            window,
            gc,
            keysyms: map.keysyms,
            per_keycode: map.keysyms_per_keycode,
            min_keycode,
            view: View::Hidden,
            mapped: false,
            form: None,
            buttons: Vec::new(),
        })
    }

    fn run(&mut self, views: &mpsc::Receiver<View>, actions: &mpsc::Sender<Action>) -> Result<()> {
        let mut last_draw = Instant::now();
        loop {
            match views.recv_timeout(Duration::from_millis(30)) {
                Ok(view) => {
                    // A new question starts with empty fields; a password typed for an
                    // earlier one is dropped as soon as that question is gone.
                    let asked_again =
                        std::mem::discriminant(&view) == std::mem::discriminant(&self.view);
                    self.form = match (&view, self.form.take()) {
                        (View::AskingCode { .. }, Some(f)) if asked_again => Some(f),
                        (View::AskingCode { kind, .. }, _) => Some(Form::code(*kind)),
                        (
                            View::Grant {
                                credentials: true, ..
                            },
                            _,
                        ) => Some(Form::credentials()),
                        _ => None,
                    };
                    self.view = view;
                    self.draw()?;
                    last_draw = Instant::now();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            while let Some(event) = self.conn.poll_for_event()? {
                let action = match event {
                    Event::Expose(_) => {
                        self.draw()?;
                        None
                    }
                    Event::ButtonPress(b) => {
                        let press = self
                            .buttons
                            .iter()
                            .find(|(r, _)| {
                                b.event_x >= r.x
                                    && b.event_x < r.x + r.width as i16
                                    && b.event_y >= r.y
                                    && b.event_y < r.y + r.height as i16
                            })
                            .map(|(_, p)| p.clone());
                        match press {
                            Some(Press::Act(a)) => Some(a),
                            Some(Press::Submit) => {
                                let action = self.form.as_mut().and_then(Form::submit);
                                self.draw()?;
                                action
                            }
                            None => None,
                        }
                    }
                    Event::KeyPress(k) => self.key(
                        k.detail,
                        k.state.contains(x11rb::protocol::xproto::KeyButMask::SHIFT),
                    )?,
                    _ => None,
                };
                if let Some(action) = action {
                    if actions.send(action).is_err() {
                        return Ok(());
                    }
                }
            }
            // The countdown moves once a second.
            if matches!(self.view, View::Consent { .. })
                && last_draw.elapsed() >= Duration::from_millis(500)
            {
                self.draw()?;
                last_draw = Instant::now();
            }
        }
    }

    /// A key typed while the panel asks for something (the code, or an account): into
    /// the form, which says when Enter or Escape ends it.
    fn key(&mut self, keycode: u8, shift: bool) -> Result<Option<Action>> {
        let Some(form) = self.form.as_mut() else {
            return Ok(None);
        };
        let index =
            usize::from(keycode.saturating_sub(self.min_keycode)) * usize::from(self.per_keycode);
        let plain = self.keysyms.get(index).copied().unwrap_or(0);
        let shifted = self.keysyms.get(index + 1).copied().unwrap_or(0);
        let keysym = if shift && shifted != 0 {
            shifted
        } else {
            plain
        };
        let action = form.handle(Key::from_keysym(keysym));
        self.draw()?;
        Ok(action)
    }

    fn draw(&mut self) -> Result<()> {
        let typed = self.form.as_ref().map(Form::lines).unwrap_or_default();
        let act = Press::Act;
        let (title, lines, buttons): (String, Vec<String>, Vec<(&str, Press)>) = match &self.view {
            View::Hidden => {
                if self.mapped {
                    self.conn.unmap_window(self.window)?;
                    self.conn.flush()?;
                    self.mapped = false;
                }
                self.buttons.clear();
                return Ok(());
            }
            View::AskingCode { why, kind } => (
                format!("deskwire: enter the {}", kind.name()),
                std::iter::once(why.clone()).chain(typed).collect(),
                vec![
                    ("Try Again", Press::Submit),
                    ("Cancel", act(Action::Cancel)),
                ],
            ),
            View::Consent {
                question,
                deadline,
                starts_on_its_own,
            } => {
                let left = deadline.saturating_duration_since(Instant::now()).as_secs();
                let then = if *starts_on_its_own {
                    format!("It starts on its own in {left} s unless you reject it.")
                } else {
                    format!("It is refused in {left} s unless you accept.")
                };
                let mut lines = wrap(question);
                lines.push(then);
                (
                    format!("deskwire: {question}"),
                    lines,
                    vec![
                        ("Accept", act(Action::Accept)),
                        ("View only", act(Action::ViewOnly)),
                        ("Reject", act(Action::Reject)),
                    ],
                )
            }
            View::Grant {
                question,
                credentials,
            } => (
                format!("deskwire: {question}"),
                wrap(question).into_iter().chain(typed).collect(),
                vec![
                    (
                        "Allow",
                        if *credentials {
                            Press::Submit
                        } else {
                            act(Action::AllowGrant)
                        },
                    ),
                    ("Refuse", act(Action::RefuseGrant)),
                ],
            ),
            View::Connected { who, control, end } => {
                let what = if *control {
                    "can see and control this screen"
                } else {
                    "can see this screen (view only)"
                };
                let mut buttons = vec![(*end, act(Action::Terminate))];
                if *control {
                    buttons.insert(0, ("View only", act(Action::StopControl)));
                }
                (
                    // The title says which buttons are there (tests wait on it).
                    if *control {
                        format!("deskwire: {who} is connected")
                    } else {
                        format!("deskwire: {who} is connected (view only)")
                    },
                    vec![format!("{who} is connected and {what}.")],
                    buttons,
                )
            }
        };
        let (c, win, gc) = (&self.conn, self.window, self.gc);
        c.change_property8(
            PropMode::REPLACE,
            win,
            AtomEnum::WM_NAME,
            AtomEnum::STRING,
            title.as_bytes(),
        )?;
        if !self.mapped {
            c.map_window(win)?;
            self.mapped = true;
        }
        let fill = |colour: u32, r: Rectangle| -> Result<()> {
            c.change_gc(gc, &ChangeGCAux::new().foreground(colour))?;
            c.poly_fill_rectangle(win, gc, &[r])?;
            Ok(())
        };
        fill(
            BACKGROUND,
            Rectangle {
                x: 0,
                y: 0,
                width: WIDTH,
                height: HEIGHT,
            },
        )?;
        c.change_gc(
            gc,
            &ChangeGCAux::new().foreground(TEXT).background(BACKGROUND),
        )?;
        for (i, line) in lines.iter().take(4).enumerate() {
            let text: String = line
                .chars()
                .filter(char::is_ascii)
                .take(LINE_CHARS)
                .collect();
            c.image_text8(win, gc, 10, 20 + 16 * i as i16, text.as_bytes())?;
        }
        self.buttons.clear();
        for (i, (label, press)) in buttons.into_iter().enumerate() {
            let r = Rectangle {
                x: BUTTON.0 + BUTTON_STEP * i as i16,
                y: BUTTON.1,
                width: BUTTON.2,
                height: BUTTON.3,
            };
            fill(BUTTON_FILL, r)?;
            c.change_gc(gc, &ChangeGCAux::new().foreground(BUTTON_EDGE))?;
            c.poly_rectangle(win, gc, &[r])?;
            c.change_gc(
                gc,
                &ChangeGCAux::new().foreground(TEXT).background(BUTTON_FILL),
            )?;
            let text_x = r.x + (r.width as i16 - (label.len() * CHAR_W) as i16) / 2;
            c.image_text8(win, gc, text_x, r.y + 18, label.as_bytes())?;
            self.buttons.push((r, press));
        }
        c.flush()?;
        Ok(())
    }
}

/// `text` in lines that fit the panel, at most two.
fn wrap(text: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + word.len() > LINE_CHARS {
            if lines.len() == 2 {
                break;
            }
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_questions_wrap_into_two_lines_that_fit() {
        let q = "Technician alice asks to see and control this screen, and to keep doing so for the next three days while nobody is here";
        let lines = wrap(q);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() <= LINE_CHARS), "{lines:?}");
        assert_eq!(wrap("short"), ["short"]);
    }
}
