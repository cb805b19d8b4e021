//! What the user types on the panel: the connection code, or their account name and
//! password for a grant that asks for them. Pure (keys in, lines and actions out), so the
//! editing rules are tested without a display.

use super::{Action, CodeKind};

/// A key as the panel cares about it, from an X keysym (shift already applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Char(char),
    Backspace,
    Tab,
    Enter,
    Escape,
    Other,
}

impl Key {
    pub(crate) fn from_keysym(keysym: u32) -> Self {
        match keysym {
            // Latin-1 printable keysyms are their ASCII codes.
            0x20..=0x7e => Key::Char(char::from(keysym as u8)),
            // The keypad's digits.
            0xffb0..=0xffb9 => Key::Char(char::from(b'0' + (keysym - 0xffb0) as u8)),
            0xff08 => Key::Backspace,
            0xff09 | 0xfe20 => Key::Tab,
            0xff0d | 0xff8d => Key::Enter,
            0xff1b => Key::Escape,
            _ => Key::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code(CodeKind),
    Credentials,
}

/// The fields being typed into, and which one has the keyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Form {
    kind: Kind,
    fields: Vec<String>,
    focus: usize,
}

/// Longest code typed (with its spaces), account name and password.
const CODE_MAX: usize = 20;
const ACCOUNT_MAX: usize = 64;
const PASSWORD_MAX: usize = 128;

impl Form {
    pub(crate) fn code(kind: CodeKind) -> Self {
        Self {
            kind: Kind::Code(kind),
            fields: vec![String::new()],
            focus: 0,
        }
    }

    pub(crate) fn credentials() -> Self {
        Self {
            kind: Kind::Credentials,
            fields: vec![String::new(), String::new()],
            focus: 0,
        }
    }

    /// Take `key`; `Some` when it ends the form (Enter on the last field, Escape).
    pub(crate) fn handle(&mut self, key: Key) -> Option<Action> {
        match key {
            Key::Char(c) if self.accepts(c) => self.fields[self.focus].push(c),
            Key::Char(_) | Key::Other => {}
            Key::Backspace => {
                self.fields[self.focus].pop();
            }
            Key::Tab => self.focus = (self.focus + 1) % self.fields.len(),
            Key::Enter if self.focus + 1 < self.fields.len() => self.focus += 1,
            Key::Enter => return self.submit(),
            Key::Escape => {
                return Some(match self.kind {
                    Kind::Code(_) => Action::Cancel,
                    Kind::Credentials => Action::RefuseGrant,
                })
            }
        }
        None
    }

    fn accepts(&self, c: char) -> bool {
        let field = &self.fields[self.focus];
        match (self.kind, self.focus) {
            (Kind::Code(CodeKind::Connection), _) => {
                (c.is_ascii_digit() || c == ' ' || c == '-') && field.len() < CODE_MAX
            }
            (Kind::Code(CodeKind::Security), _) => {
                (c.is_ascii_alphanumeric() || c == ' ' || c == '-') && field.len() < CODE_MAX
            }
            // Account names have no spaces; passwords may.
            (Kind::Credentials, 0) => c.is_ascii_graphic() && field.len() < ACCOUNT_MAX,
            (Kind::Credentials, _) => {
                (c.is_ascii_graphic() || c == ' ') && field.len() < PASSWORD_MAX
            }
        }
    }

    /// What the form says when sent (Enter, or the panel's first button); `None` while a
    /// needed field is empty (the keyboard then goes to it).
    pub(crate) fn submit(&mut self) -> Option<Action> {
        if let Some(empty) = self.fields.iter().position(|f| f.trim().is_empty()) {
            if self.kind == Kind::Credentials {
                self.focus = empty;
                return None;
            }
        }
        Some(match self.kind {
            Kind::Code(_) => Action::Code(self.fields[0].trim().to_owned()),
            Kind::Credentials => Action::AllowGrantAs {
                user: self.fields[0].clone(),
                password: self.fields[1].clone(),
            },
        })
    }

    /// The fields as the panel draws them: the password as stars, a cursor where the
    /// keyboard is.
    pub(crate) fn lines(&self) -> Vec<String> {
        let cursor = |i: usize| if i == self.focus { "_" } else { "" };
        match self.kind {
            Kind::Code(_) => vec![format!("Code: {}{}", self.fields[0], cursor(0))],
            Kind::Credentials => vec![
                format!("Your account: {}{}", self.fields[0], cursor(0)),
                format!(
                    "Your password: {}{}",
                    "*".repeat(self.fields[1].chars().count()),
                    cursor(1)
                ),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(form: &mut Form, text: &str) {
        for c in text.chars() {
            assert_eq!(form.handle(Key::Char(c)), None);
        }
    }

    #[test]
    fn a_code_takes_digits_spaces_and_dashes_only_and_enter_tries_it() {
        let mut f = Form::code(CodeKind::Connection);
        typed(&mut f, "123 abc456-7890");
        assert_eq!(f.lines(), ["Code: 123 456-7890_"]);
        f.handle(Key::Backspace);
        assert_eq!(
            f.handle(Key::Enter),
            Some(Action::Code("123 456-789".into()))
        );
        assert_eq!(
            Form::code(CodeKind::Connection).handle(Key::Escape),
            Some(Action::Cancel)
        );
        // A security code has letters too.
        let mut f = Form::code(CodeKind::Security);
        typed(&mut f, "7kqm-2X9P!");
        assert_eq!(f.handle(Key::Enter), Some(Action::Code("7kqm-2X9P".into())));
    }

    #[test]
    fn credentials_hide_the_password_and_are_sent_only_when_both_are_typed() {
        let mut f = Form::credentials();
        typed(&mut f, "ma ria");
        // Enter on the account moves to the password; an empty password is not sent.
        assert_eq!(f.handle(Key::Enter), None);
        assert_eq!(f.submit(), None);
        typed(&mut f, "blue tulip");
        assert_eq!(
            f.lines(),
            ["Your account: maria", "Your password: **********_"]
        );
        assert_eq!(
            f.handle(Key::Enter),
            Some(Action::AllowGrantAs {
                user: "maria".into(),
                password: "blue tulip".into()
            })
        );
        // Tab goes round the fields; an empty account takes the keyboard back on submit.
        let mut f = Form::credentials();
        f.handle(Key::Tab);
        typed(&mut f, "pw");
        assert_eq!(f.submit(), None);
        assert_eq!(f.lines()[0], "Your account: _");
        assert_eq!(f.handle(Key::Escape), Some(Action::RefuseGrant));
    }

    #[test]
    fn keysyms_map_to_keys_the_form_understands() {
        assert_eq!(Key::from_keysym(0x41), Key::Char('A'));
        assert_eq!(Key::from_keysym(0xffb7), Key::Char('7'));
        assert_eq!(Key::from_keysym(0xff09), Key::Tab);
        assert_eq!(Key::from_keysym(0xff8d), Key::Enter);
        assert_eq!(Key::from_keysym(0xffe1), Key::Other);
    }
}
