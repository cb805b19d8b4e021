//! E-mailed ad-hoc support invitations, over SMTP.
//!
//! The broker reads the invitation link once to send it and keeps nothing (see
//! `deskwire_signal::adhoc`), so nothing here logs the link or the code, and no error message
//! echoes the SMTP password.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use deskwire_signal::UnixMillis;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use percent_encoding::percent_decode_str;

/// Each SMTP step (connect, TLS, every command): a stalled server must not hold a request.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole send; each step is bounded already, this bounds their sum.
const SEND_DEADLINE: Duration = Duration::from_secs(30);
/// RFC 5321's path limit (256) less the angle brackets.
const MAX_ADDRESS_LEN: usize = 254;
/// A display name and an address; anything longer is not something a person typed.
const MAX_MAILBOX_LEN: usize = 512;
/// Names are shown in a subject line: longer ones are cut, not refused.
const MAX_NAME_CHARS: usize = 80;
/// The link and the code are the broker's own output; a bound keeps a bug from mailing megabytes.
const MAX_LINK_LEN: usize = 2048;
const MAX_CODE_LEN: usize = 64;
const EXPECTED_URL: &str =
    "expected smtps://host:port, smtp+starttls://host:port or smtp://127.0.0.1:port, \
     optionally with user:password@ before the host";

/// Where invitation e-mails go out, and as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// `smtps://host:port` (TLS from the start), `smtp+starttls://host:port` (STARTTLS,
    /// required) or `smtp://host:port` (no TLS: loopback servers only), optionally with
    /// `user:password@` (percent-encoded) before the host. Default ports: 465, 587, 25.
    pub url: String,
    /// The sender's mailbox, e.g. `deskwire <support@example.com>`.
    pub from: String,
}

impl fmt::Debug for MailConfig {
    /// Never the password: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailConfig")
            .field("url", &redact(&self.url))
            .field("from", &self.from)
            .finish()
    }
}

impl MailConfig {
    /// Check both fields; the error names the field and what it expects.
    pub fn validate(&self) -> Result<(), MailError> {
        transport(&self.url)?;
        parse_from(&self.from)?;
        Ok(())
    }
}

/// Why an invitation was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// A [`MailConfig`] field is unusable (the message quotes it, password hidden).
    #[error("{field} {message}")]
    InvalidConfig {
        /// The setting: "mail url" or "mail from".
        field: &'static str,
        /// The value as given and what was expected instead.
        message: String,
    },
    /// The recipient is not one e-mail address; nothing was sent.
    #[error("cannot e-mail {to:?}: {reason}")]
    InvalidRecipient {
        /// The recipient as given (cut to 100 characters).
        to: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The invitation could not be written as an e-mail; nothing was sent.
    #[error("cannot write the invitation e-mail: {0}")]
    Build(String),
    /// The server could not be reached, or refused the message.
    #[error("could not send the invitation through {server}: {reason}")]
    Send {
        /// The server, without credentials.
        server: String,
        /// What failed, with the server's reply (code and text) when it gave one.
        reason: String,
    },
}

/// What an invitation e-mail says.
#[derive(Clone, Copy)]
pub struct Invitation<'a> {
    /// The inviting technician's name, shown in the subject and the body.
    pub technician: &'a str,
    /// The invitation link, `deskwire://adhoc/...`.
    pub link: &'a str,
    /// The security code the user types when the temporary host asks.
    pub code: &'a str,
    /// When the invitation stops working if it is not used.
    pub expires_at: UnixMillis,
}

impl fmt::Debug for Invitation<'_> {
    /// Never the link or the code: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Invitation {
            technician,
            expires_at,
            ..
        } = self;
        write!(
            f,
            "Invitation {{ technician: {technician:?}, expires_at: {expires_at:?}, .. }}"
        )
    }
}

/// Sends invitation e-mails through one SMTP server. Cheap to share: each send opens its own
/// connection (invitations are rare; a pool would hold idle connections the server drops).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
    deadline: Duration,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `config` (validated here). Connects to nothing until a send.
    pub fn new(config: &MailConfig) -> Result<Mailer, MailError> {
        let (builder, server) = transport(&config.url)?;
        let from = parse_from(&config.from)?;
        tracing::info!(%server, %from, "invitation e-mails enabled");
        let transport = builder.build();
        Ok(Mailer {
            transport,
            from,
            server,
            deadline: SEND_DEADLINE,
        })
    }

    /// Bound a whole send by `deadline` instead of 30 s (each SMTP step stays bounded by 10 s).
    pub fn with_deadline(mut self, deadline: Duration) -> Mailer {
        self.deadline = deadline;
        self
    }

    /// E-mail `invitation` to `to`, one address (`user@example.com` or
    /// `Name <user@example.com>`). Checks everything before connecting.
    pub async fn send_invitation(
        &self,
        to: &str,
        invitation: &Invitation<'_>,
    ) -> Result<(), MailError> {
        let message = self.message(to, invitation)?;
        let domain = message
            .envelope()
            .to()
            .first()
            .map(|a| a.domain().to_owned());
        let domain = domain.unwrap_or_default();
        let server = &self.server;
        // Only the domain is logged: the address is personal data, and the domain is enough
        // to tell a relay problem from a typo.
        let reason = match tokio::time::timeout(self.deadline, self.transport.send(message)).await {
            Ok(Ok(reply)) => {
                tracing::info!(%server, %domain, code = %reply.code(), "invitation e-mailed");
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", self.deadline.as_secs_f32()),
        };
        tracing::warn!(%server, %domain, %reason, "invitation e-mail not sent");
        Err(MailError::Send {
            server: server.clone(),
            reason,
        })
    }

    /// The e-mail, every part checked; pure, so that tests can read it.
    fn message(&self, to: &str, invitation: &Invitation<'_>) -> Result<Message, MailError> {
        let recipient = parse_recipient(to)?;
        let (subject, body) = render(invitation)?;
        // From the sender's domain: without lettre's `hostname` feature it would say
        // @localhost, which spam filters hold against a message.
        let id = format!(
            "<{:032x}@{}>",
            rand::random::<u128>(),
            self.from.email.domain()
        );
        Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(subject)
            .message_id(Some(id))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))
    }
}

type Smtp = AsyncSmtpTransport<Tokio1Executor>;

fn config_error(field: &'static str, value: &str, why: &str) -> MailError {
    MailError::InvalidConfig {
        field,
        message: format!("{:?}: {why}", redact(value)),
    }
}

/// The transport a mail URL describes, and the server as logs and errors name it (without
/// credentials).
fn transport(text: &str) -> Result<(AsyncSmtpTransportBuilder, String), MailError> {
    let refuse = |why: &str| config_error("mail url", text, why);
    let expected = |why: &str| refuse(&format!("{why}; {EXPECTED_URL}"));
    if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(expected("contains a space or a control character"));
    }
    let url = url::Url::parse(text).map_err(|e| expected(&format!("not a URL ({e})")))?;
    let default_port = match url.scheme() {
        "smtp" => 25,
        "smtp+starttls" => 587,
        "smtps" => 465,
        other => return Err(expected(&format!("unknown scheme {other:?}"))),
    };
    // Non-special URL schemes keep IPv4 hosts as names; IPv6 ones come bracketed.
    let (host, shown) = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => (d.to_owned(), d.to_owned()),
        Some(url::Host::Ipv4(a)) => (a.to_string(), a.to_string()),
        Some(url::Host::Ipv6(a)) => (a.to_string(), format!("[{a}]")),
        _ => return Err(expected("has no host")),
    };
    // lettre's own URL reader takes a path as the EHLO name and a query as the TLS mode:
    // refuse both rather than guess.
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(expected("has something after host:port"));
    }
    let port = url.port().unwrap_or(default_port);
    if port == 0 {
        return Err(refuse("port 0 is not a server's port"));
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let tls = |e| refuse(&format!("the host is unusable as a TLS server name ({e})"));
    let builder =
        match url.scheme() {
            "smtps" => Smtp::relay(&host).map_err(tls)?,
            "smtp+starttls" => Smtp::starttls_relay(&host).map_err(tls)?,
            _ if loopback => Smtp::builder_dangerous(&host),
            // Without TLS the password and the invitation link would cross the network in clear.
            _ => return Err(refuse(
                "plain SMTP is only allowed to a loopback server; use smtps:// or smtp+starttls://",
            )),
        };
    let mut builder = builder.port(port).timeout(Some(COMMAND_TIMEOUT));
    let decode = |s: &str| match percent_decode_str(s).decode_utf8() {
        Ok(s) => Ok(s.into_owned()),
        Err(_) => Err(refuse("the user or password is not UTF-8 once %-decoded")),
    };
    match (url.username(), url.password()) {
        ("", None) => {}
        (user, Some(password)) if !user.is_empty() => {
            builder = builder.credentials(Credentials::new(decode(user)?, decode(password)?));
        }
        _ => {
            return Err(refuse(
                "give both user and password (user:password@host) or neither",
            ))
        }
    }
    Ok((builder, format!("{}://{shown}:{port}", url.scheme())))
}

fn parse_from(text: &str) -> Result<Mailbox, MailError> {
    parse_mailbox(text).map_err(|why| {
        config_error(
            "mail from",
            text,
            &format!("{why}; expected a mailbox like deskwire <support@example.com>"),
        )
    })
}

fn parse_recipient(to: &str) -> Result<Mailbox, MailError> {
    parse_mailbox(to).map_err(|reason| MailError::InvalidRecipient {
        to: to.chars().take(100).collect(),
        reason,
    })
}

/// One mailbox, `user@host` or `Name <user@host>`, that is safe to put in a header.
fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    if text.trim().is_empty() {
        return Err("no address given".to_owned());
    }
    // lettre's parser takes CRLF + space as folding whitespace; refuse before it sees any.
    if text.chars().any(char::is_control) {
        return Err("contains a line break or another control character".to_owned());
    }
    if text.len() > MAX_MAILBOX_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_MAILBOX_LEN}",
            text.len()
        ));
    }
    let mailbox = Mailbox::from_str(text).map_err(|e| {
        if text.contains([',', ';']) {
            "give one address, not a list".to_owned()
        } else {
            format!("not an e-mail address ({e})")
        }
    })?;
    let len = AsRef::<str>::as_ref(&mailbox.email).len();
    if len > MAX_ADDRESS_LEN {
        return Err(format!(
            "the address is {len} characters long; at most {MAX_ADDRESS_LEN}"
        ));
    }
    Ok(mailbox)
}

/// The subject and the plain-text body.
fn render(invitation: &Invitation<'_>) -> Result<(String, String), MailError> {
    let technician = clean_name(invitation.technician);
    if technician.is_empty() {
        return Err(MailError::Build(
            "the technician's name is empty".to_owned(),
        ));
    }
    // Never echoed: the link carries the session's secret.
    let token_like = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if !token_like(invitation.link, MAX_LINK_LEN) {
        return Err(MailError::Build(format!(
            "the invitation link is empty, longer than {MAX_LINK_LEN} bytes or has spaces"
        )));
    }
    if !token_like(invitation.code, MAX_CODE_LEN) {
        return Err(MailError::Build(format!(
            "the security code is empty, longer than {MAX_CODE_LEN} bytes or has spaces"
        )));
    }
    let expires = rfc3339(invitation.expires_at)?;
    let (link, code) = (invitation.link, invitation.code);
    let subject = format!("Remote support invitation from {technician}");
    let body = format!(
        "{technician} invites you to a remote support session with deskwire.\n\
         \n\
         To let {technician} connect to this computer, run the temporary host:\n\
         \n\
         \x20   deskwire-agent adhoc --invite {link}\n\
         \n\
         Invitation link: {link}\n\
         Security code:   {code}\n\
         \n\
         Type the security code when the temporary host asks for it.\n\
         \n\
         This invitation expires at {expires} if it is not used. Once activated, the\n\
         session ends by itself 24 hours later.\n\
         \n\
         If you did not expect this e-mail, ignore it: nothing happens unless you run the\n\
         command above.\n"
    );
    Ok((subject, body))
}

/// A name fit for one header line: control characters, line and paragraph separators and
/// bidirectional overrides (which can make a subject read as something else) become spaces,
/// runs of spaces collapse, and it is cut to [`MAX_NAME_CHARS`].
fn clean_name(name: &str) -> String {
    let dangerous = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    let spaced: String = name
        .chars()
        .map(|c| if dangerous(c) { ' ' } else { c })
        .collect();
    let joined = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.chars().take(MAX_NAME_CHARS).collect()
}

/// `2024-05-06T07:08:09Z`: RFC 3339 in UTC, to the second.
fn rfc3339(at: UnixMillis) -> Result<String, MailError> {
    let seconds = i64::try_from(at.0 / 1000).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .map_err(|_| MailError::Build(format!("the expiry {at} is out of range")))
}

/// `text` with the password of a `scheme://user:password@host` replaced by `***`, by hand so
/// that it also works on what does not parse as a URL.
fn redact(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    let Some(at) = text[start..authority_end].rfind('@').map(|i| start + i) else {
        return text.to_owned();
    };
    match text[start..at].find(':') {
        Some(colon) => format!("{}***{}", &text[..start + colon + 1], &text[at..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> MailConfig {
        let from = "deskwire <support@example.com>".to_owned();
        MailConfig {
            url: url.to_owned(),
            from,
        }
    }

    fn refusal(url: &str) -> String {
        match config(url).validate() {
            Err(
                e @ MailError::InvalidConfig {
                    field: "mail url", ..
                },
            ) => e.to_string(),
            other => panic!("{url}: expected a mail url refusal, got {other:?}"),
        }
    }

    fn server(url: &str) -> String {
        transport(url)
            .map(|(_, server)| server)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const LINK: &str =
        "deskwire://adhoc/0123456789abcdef0123456789abcdef#00112233445566778899aabbccddeeff";

    fn invitation() -> Invitation<'static> {
        let expires_at = UnixMillis(1_700_000_000_999);
        Invitation {
            technician: "Ada Lovelace",
            link: LINK,
            code: "7KQ2-M9XA",
            expires_at,
        }
    }

    #[test]
    fn tls_urls_anywhere_and_plain_smtp_on_loopback_are_accepted() {
        assert_eq!(
            server("smtps://mail.example.com"),
            "smtps://mail.example.com:465"
        );
        assert_eq!(server("smtps://u:p%40ss@[::1]/"), "smtps://[::1]:465");
        assert_eq!(
            server("smtp+starttls://mail.example.com"),
            "smtp+starttls://mail.example.com:587"
        );
        assert_eq!(server("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
        assert_eq!(server("smtp://127.8.9.10"), "smtp://127.8.9.10:25");
        assert_eq!(server("smtp://[::1]:25"), "smtp://[::1]:25");
        assert_eq!(server("smtp://LocalHost"), "smtp://LocalHost:25");
    }

    #[test]
    fn plain_smtp_beyond_loopback_is_refused_naming_the_field_and_the_fix() {
        assert_eq!(
            refusal("smtp://mail.example.com"),
            "mail url \"smtp://mail.example.com\": plain SMTP is only allowed to a loopback \
             server; use smtps:// or smtp+starttls://"
        );
        for url in [
            "smtp://10.0.0.1:25",
            "smtp://[::2]",
            "smtp://localhost.example.com",
        ] {
            assert!(refusal(url).contains("plain SMTP is only allowed"), "{url}");
        }
    }

    #[test]
    fn malformed_urls_are_refused_with_what_was_expected() {
        for (url, why) in [
            ("", "not a URL"),
            ("mail.example.com:465", "unknown scheme"),
            ("https://mail.example.com", "unknown scheme \"https\""),
            ("smtps://", "has no host"),
            ("smtps://mail.example.com/ehlo", "after host:port"),
            ("smtps://mail.example.com?tls=none", "after host:port"),
            ("smtps://user@mail.example.com", "both user and password"),
            ("smtps://u:%ff@mail.example.com", "not UTF-8"),
            ("smtps://mail.example.com:0", "port 0"),
            ("smtps://mail.example.com:99999", "not a URL"),
            ("smtps://mail.example.com\r\n", "control character"),
        ] {
            let message = refusal(url);
            assert!(
                message.starts_with("mail url ") && message.contains(why),
                "{url}: {message}"
            );
        }
        assert!(refusal("ftp://x").contains("expected smtps://host:port"));
    }

    #[test]
    fn the_password_never_appears_in_errors_or_debug_output() {
        let url = "smtp://user:hunter2@mail.example.com:25";
        let message = refusal(url);
        assert!(
            !message.contains("hunter2") && message.contains("user:***@mail"),
            "{message}"
        );
        assert!(!format!("{:?}", config(url)).contains("hunter2"));
        let mailer = Mailer::new(&config("smtps://user:hunter2@mail.example.com")).expect("valid");
        assert!(!format!("{mailer:?}").contains("hunter2"));
        assert_eq!(redact("not a url:x@y"), "not a url:***@y");
    }

    #[test]
    fn the_sender_must_be_one_mailbox() {
        for from in [
            "",
            "deskwire",
            "a@b.example, c@d.example",
            "x <a@b.example>\r\nBcc: c@d.example",
        ] {
            let c = MailConfig {
                from: from.to_owned(),
                ..config("smtps://mail.example.com")
            };
            match c.validate() {
                Err(MailError::InvalidConfig {
                    field: "mail from",
                    message,
                }) => {
                    assert!(message.contains("expected a mailbox like"), "{message}")
                }
                other => panic!("{from:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn one_recipient_is_accepted_and_anything_else_refused_with_a_reason() {
        for to in [
            "user@example.com",
            " Zoë Doe <zoe@example.com> ",
            "\"Doe, J\" <j@example.com>",
        ] {
            assert!(parse_recipient(to).is_ok(), "{to}");
        }
        // lettre allows 64 + 1 + 253 characters; SMTP paths allow 254.
        let long = format!("{}@{}example.com", "a".repeat(64), "b.".repeat(100));
        for (to, why) in [
            ("", "no address"),
            ("a@b.example, c@d.example", "one address, not a list"),
            ("a@b.example; c@d.example", "one address, not a list"),
            ("Eve\r\n <a@b.example>", "line break"),
            ("a@b.example\r\nBcc: c@d.example", "line break"),
            ("not an address", "not an e-mail address"),
            ("@example.com", "not an e-mail address"),
            (&long, "at most 254"),
        ] {
            match parse_recipient(to) {
                Err(MailError::InvalidRecipient { reason, .. }) => {
                    assert!(reason.contains(why), "{to:?}: {reason}")
                }
                other => panic!("{to:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_body_gives_the_command_link_code_expiry_and_session_length() {
        let (subject, body) = render(&invitation()).expect("renders");
        assert_eq!(subject, "Remote support invitation from Ada Lovelace");
        for line in [
            format!("    deskwire-agent adhoc --invite {LINK}\n"),
            format!("Invitation link: {LINK}\n"),
            "Security code:   7KQ2-M9XA\n".to_owned(),
            "expires at 2023-11-14T22:13:20Z".to_owned(),
            "session ends by itself 24 hours later".to_owned(),
        ] {
            assert!(body.contains(&line), "{line:?} missing from:\n{body}");
        }
    }

    #[test]
    fn a_technician_name_cannot_add_headers_or_reverse_the_subject() {
        let technician = "Eve\r\nBcc: victim@example.com\u{202e}\t x";
        let (subject, _) = render(&Invitation {
            technician,
            ..invitation()
        })
        .expect("renders");
        assert_eq!(
            subject,
            "Remote support invitation from Eve Bcc: victim@example.com x"
        );
        let blank = Invitation {
            technician: " \r\n ",
            ..invitation()
        };
        assert!(matches!(render(&blank), Err(MailError::Build(_))));
        assert_eq!(clean_name(&"é".repeat(200)).chars().count(), MAX_NAME_CHARS);
        // And the whole message has the headers it should and no others.
        let mailer = Mailer::new(&config("smtps://mail.example.com")).expect("valid");
        let message = mailer.message(
            "u@example.com",
            &Invitation {
                technician,
                ..invitation()
            },
        );
        let text = String::from_utf8(message.expect("builds").formatted()).expect("utf-8");
        let (head, _) = text.split_once("\r\n\r\n").expect("a header block");
        let names: Vec<_> = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .map(|p| p.0)
            .collect();
        let expected = [
            "From",
            "To",
            "Subject",
            "Message-ID",
            "Content-Type",
            "Content-Transfer-Encoding",
            "Date",
        ];
        assert_eq!(names, expected, "{head}");
    }

    #[test]
    fn a_bad_link_code_or_expiry_is_refused_without_panicking() {
        for (link, code, at) in [
            ("", "C", 0),
            ("deskwire://x\nBcc: y", "C", 0),
            ("deskwire://x", "", 0),
            ("deskwire://x", "A B", 0),
            ("deskwire://x", "C", u64::MAX),
        ] {
            let inv = Invitation {
                link,
                code,
                expires_at: UnixMillis(at),
                ..invitation()
            };
            assert!(
                matches!(render(&inv), Err(MailError::Build(_))),
                "{link:?} {code:?} {at}"
            );
        }
    }
}
