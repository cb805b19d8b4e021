//! The invitation mailer against a real SMTP server: Debian's aiosmtpd on loopback, which
//! stores what it accepts in a maildir that these tests read back with Python's own e-mail
//! parser (so the subject's and the body's transfer encodings are decoded by a second,
//! independent implementation, not by ours).

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[allow(dead_code)] // each test file uses its own subset
mod common;
mod support;

use deskwire_broker::mail::{Invitation, MailConfig, MailError, Mailer};
use deskwire_signal::{AdhocMail, BrokerMessage, ClientMessage, UnixMillis};

/// Debian's python3-aiosmtpd installs for /usr/bin/python3, which a pyenv or venv `python3`
/// earlier on PATH does not see: that one is tried first.
const PYTHONS: [&str; 2] = ["/usr/bin/python3", "python3"];
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Far above a loopback send, far below lettre's own timeouts added up.
const SEND_BOUND: Duration = Duration::from_secs(20);
const FROM: &str = "deskwire <support@deskwire.test>";
const LINK: &str =
    "deskwire://adhoc/0123456789abcdef0123456789abcdef#00112233445566778899aabbccddeeff";
const CODE: &str = "7KQ2-M9XA";

fn invitation() -> Invitation<'static> {
    Invitation {
        // Not ASCII, so the subject goes out RFC 2047-encoded and the body quoted-printable.
        technician: "Zoë Técnico",
        link: LINK,
        code: CODE,
        expires_at: UnixMillis(1_700_000_000_000),
    }
}

fn mailer(addr: SocketAddr) -> Mailer {
    let config = MailConfig {
        url: format!("smtp://{addr}"),
        from: FROM.to_owned(),
    };
    Mailer::new(&config).expect("a loopback smtp:// URL is valid")
}

/// A port that was free a moment ago (another process may take it before we use it).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

fn python_with_aiosmtpd() -> &'static str {
    let has_it = |python: &str| {
        Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    PYTHONS.into_iter().find(|p| has_it(p)).unwrap_or_else(|| {
        panic!(
            "no python3 with the aiosmtpd module (tried {PYTHONS:?}); \
             run scripts/setup, which installs Debian's python3-aiosmtpd"
        )
    })
}

/// A private directory, removed with the server.
fn temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "deskwire-mail-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// One message as Python's `email` package reads it back from the maildir.
#[derive(Debug)]
struct Delivered {
    /// The envelope recipients, as aiosmtpd recorded them.
    rcpt_to: String,
    to: String,
    from: String,
    subject: String,
    message_id: String,
    body: String,
}

/// aiosmtpd on a loopback port with the Mailbox handler; killed (by its pid) on drop.
struct SmtpServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    python: &'static str,
}

impl SmtpServer {
    fn start(extra_args: &[&str]) -> SmtpServer {
        let python = python_with_aiosmtpd();
        let dir = temp_dir();
        let mut last_error = String::new();
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = fs::File::create(dir.join("aiosmtpd.log")).expect("create the log");
            let mut cmd = Command::new(python);
            cmd.args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .args(extra_args)
                .arg(dir.join("maildir"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log"))
                .stderr(log);
            // SAFETY: the closure runs between fork and exec and only calls prctl(2), which
            // is async-signal-safe. It makes the server die with this test's thread (the
            // one that forks), so a killed test run leaves no server behind.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawn aiosmtpd");
            let mut server = SmtpServer {
                child,
                addr,
                dir: dir.clone(),
                python,
            };
            match server.wait_until_greeting() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("aiosmtpd did not start: {last_error}");
    }

    /// Ready once the port answers with aiosmtpd's own banner (not merely accepts: another
    /// process could hold the port we picked).
    fn wait_until_greeting(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited ({status}): {}", self.log()));
            }
            if let Ok(banner) = smtp_banner(self.addr) {
                if banner.starts_with("220 ") && banner.contains("Python SMTP") {
                    return Ok(());
                }
                return Err(format!("{} answered {banner:?}, not aiosmtpd", self.addr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no greeting within {START_TIMEOUT:?}: {}",
            self.log()
        ))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("aiosmtpd.log")).unwrap_or_default()
    }

    fn stored(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = fs::read_dir(self.dir.join("maildir").join(sub)) {
                files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
        files
    }

    /// The stored messages once there are `count` (aiosmtpd stores before it answers 250, so
    /// this is immediate; the wait only guards against a slow disk).
    fn wait_for_messages(&self, count: usize) -> Vec<Delivered> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.stored().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stored = self.stored();
        assert_eq!(stored.len(), count, "messages in the maildir: {stored:?}");
        stored
            .iter()
            .map(|p| read_message(self.python, p))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's pid, which is not reused before the wait.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn smtp_banner(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut banner = String::new();
    BufReader::new(&stream).read_line(&mut banner)?;
    let _ = stream.write_all(b"QUIT\r\n");
    Ok(banner.trim_end().to_owned())
}

/// Python prints the headers one per line, then the decoded plain-text body.
const READ_MESSAGE: &str = r#"
import email, email.policy, sys
with open(sys.argv[1], "rb") as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
for name in ("X-RcptTo", "To", "From", "Subject", "Message-ID"):
    print(m[name])
sys.stdout.write(m.get_body(("plain",)).get_content())
"#;

fn read_message(python: &str, path: &Path) -> Delivered {
    let out = Command::new(python)
        .args(["-c", READ_MESSAGE])
        .arg(path)
        .output()
        .expect("run python to read the message");
    let text = String::from_utf8(out.stdout).expect("utf-8 from python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut parts = text.splitn(6, '\n').map(str::to_owned);
    let mut next = || parts.next().unwrap_or_default();
    Delivered {
        rcpt_to: next(),
        to: next(),
        from: next(),
        subject: next(),
        message_id: next(),
        body: next(),
    }
}

/// `send` with a bound, so a hang fails the test instead of stalling the run.
async fn send(mailer: &Mailer, to: &str, invitation: &Invitation<'_>) -> Result<(), MailError> {
    tokio::time::timeout(SEND_BOUND, mailer.send_invitation(to, invitation))
        .await
        .unwrap_or_else(|_| panic!("send_invitation({to:?}) took over {SEND_BOUND:?}"))
}

#[tokio::test]
async fn invitation_arrives_with_link_code_and_expiry() {
    let server = SmtpServer::start(&[]);
    let mailer = mailer(server.addr);

    send(&mailer, "Ulla User <ulla@example.com>", &invitation())
        .await
        .expect("sent");

    let [message] = <[Delivered; 1]>::try_from(server.wait_for_messages(1)).expect("one");
    assert_eq!(message.rcpt_to, "ulla@example.com");
    assert_eq!(message.to, "Ulla User <ulla@example.com>");
    assert_eq!(message.from, FROM);
    assert_eq!(
        message.subject,
        "Remote support invitation from Zoë Técnico"
    );
    assert!(
        message.message_id.ends_with("@deskwire.test>"),
        "{message:?}"
    );
    for expected in [
        format!("deskwire-agent adhoc --invite {LINK}\n"),
        format!("Invitation link: {LINK}\n"),
        format!("Security code:   {CODE}\n"),
        "expires at 2023-11-14T22:13:20Z".to_owned(),
        "session ends by itself 24 hours later".to_owned(),
        "Zoë Técnico invites you".to_owned(),
    ] {
        assert!(
            message.body.contains(&expected),
            "{expected:?} not in:\n{}",
            message.body
        );
    }
}

#[tokio::test]
async fn refused_recipient_is_refused_before_connecting_and_nothing_arrives() {
    let refused = [
        "a@b.example, c@d.example",
        "ulla@example.com\r\nBcc: eve@example.com",
        "Eve\r\n <eve@example.com>",
        "not an address",
        "",
    ];
    // A listener that never accepts: the kernel would still complete a connection to it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let quiet = mailer(listener.local_addr().expect("address"));
    for to in refused {
        let result = send(&quiet, to, &invitation()).await;
        assert!(
            matches!(result, Err(MailError::InvalidRecipient { .. })),
            "{to:?}: {result:?}"
        );
    }
    let accepted = listener.accept().map(|(_, peer)| peer);
    assert!(
        matches!(&accepted, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a refused recipient still opened a connection: {accepted:?}"
    );

    // And against the real server, only the one valid invitation arrives.
    let server = SmtpServer::start(&[]);
    let mailer = mailer(server.addr);
    for to in refused {
        let result = send(&mailer, to, &invitation()).await;
        let message = result.expect_err("refused").to_string();
        assert!(
            message.starts_with(&format!("cannot e-mail {to:?}: ")),
            "{message}"
        );
    }
    send(&mailer, "ulla@example.com", &invitation())
        .await
        .expect("sent");
    let delivered = server.wait_for_messages(1);
    assert_eq!(delivered[0].rcpt_to, "ulla@example.com");
}

#[tokio::test]
async fn unreachable_server_gives_a_send_error_promptly() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let started = Instant::now();
    match send(&mailer(addr), "ulla@example.com", &invitation()).await {
        Err(MailError::Send { server, reason }) => {
            assert_eq!(server, format!("smtp://{addr}"));
            assert!(!reason.is_empty());
        }
        other => panic!("expected a send error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn silent_server_gives_a_send_error_at_the_deadline() {
    // Never accepted and never spoken to: the connection opens, the greeting never comes.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mailer =
        mailer(listener.local_addr().expect("address")).with_deadline(Duration::from_secs(1));
    let started = Instant::now();
    let result = send(&mailer, "ulla@example.com", &invitation()).await;
    let elapsed = started.elapsed();
    match result {
        Err(MailError::Send { reason, .. }) => assert_eq!(reason, "no answer within 1 s"),
        other => panic!("expected a send error, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn server_refusal_is_reported_with_its_reply_text() {
    // aiosmtpd refuses any message over 200 bytes; an invitation is larger.
    let server = SmtpServer::start(&["-s", "200"]);
    match send(&mailer(server.addr), "ulla@example.com", &invitation()).await {
        Err(MailError::Send { reason, .. }) => {
            // The code and aiosmtpd's own words: "552 Error: Too much mail data".
            assert!(
                reason.contains("552") && reason.contains("Too much mail data"),
                "{reason}"
            )
        }
        other => panic!("expected a send error, got {other:?}"),
    }
    assert!(server.stored().is_empty(), "a refused message was stored");
}

/// The whole path: a technician's `create_adhoc` with an address, on a real broker with a
/// database, reaches the user's mailbox with the link (the technician's secret included)
/// and the security code; a failed e-mail still leaves the session created, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_adhoc_session_is_mailed_through_a_real_broker() {
    let server = SmtpServer::start(&[]);
    let db = common::TestDb::sqlite("adhoc_mail");
    let store = db.open().await;
    let (alice, bob) = common::fixtures::accounts(&store).await.unwrap();
    let tokens = [
        store.create_token(alice, "t", 0).await.unwrap().token,
        store.create_token(bob, "t", 0).await.unwrap().token,
    ];
    let config = deskwire_broker::BrokerConfig::default().mail(MailConfig {
        url: format!("smtp://{}", server.addr),
        from: FROM.into(),
    });
    let clock = std::sync::Arc::new(deskwire_broker::ManualClock::new(support::T0));
    let broker = support::Broker::start_with_store(config, store, clock)
        .await
        .unwrap();
    let secret = "00112233445566778899aabbccddeeff";
    let create = |token: &str, to: &str| ClientMessage::CreateAdhoc {
        token: token.to_owned(),
        mail: Some(AdhocMail {
            to: to.to_owned(),
            secret: secret.to_owned(),
        }),
    };

    let mut c = broker.peer().await.unwrap();
    c.send(&create(&tokens[0], "ulla@example.com"))
        .await
        .unwrap();
    let BrokerMessage::AdhocCreated {
        token,
        code,
        mailed_to,
        mail_error,
        ..
    } = c.recv().await.unwrap()
    else {
        panic!("no adhoc_created");
    };
    assert_eq!(
        (mailed_to.as_deref(), mail_error),
        (Some("ulla@example.com"), None)
    );
    let [message] = <[Delivered; 1]>::try_from(server.wait_for_messages(1)).expect("one");
    assert_eq!(message.rcpt_to, "ulla@example.com");
    for expected in [
        format!("deskwire://adhoc/{token}#{secret}"),
        code.to_string(),
    ] {
        assert!(
            message.body.contains(&expected),
            "{expected:?} not in:\n{}",
            message.body
        );
    }

    // A recipient the mailer refuses: the session exists, the answer says the mail did not go.
    let mut c = broker.peer().await.unwrap();
    c.send(&create(&tokens[1], "a@b.example, c@d.example"))
        .await
        .unwrap();
    let BrokerMessage::AdhocCreated {
        mailed_to,
        mail_error,
        ..
    } = c.recv().await.unwrap()
    else {
        panic!("no adhoc_created");
    };
    assert_eq!(mailed_to, None);
    assert!(
        mail_error.is_some_and(|e| e.contains("a@b.example")),
        "no reason given"
    );
    server.wait_for_messages(1);
    broker.stop().await.unwrap();
}
