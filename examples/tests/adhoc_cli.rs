//! The ad-hoc flow through the example binaries, as a technician and a user would run it:
//! `viewer --adhoc-create`, `sender adhoc --invite`, `viewer --adhoc` twice, `viewer
//! --adhoc-end`, against a real broker with a database, on loopback.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deskwire_broker::store::{Permission, Permissions, Policy};
use deskwire_tests::session_fixtures::TestBroker;

const WAIT: Duration = Duration::from_secs(20);

/// An example cargo built next to this test (`cargo test` builds examples first).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} is missing: run this through `cargo test`",
        bin.display()
    );
    bin
}

fn viewer(args: &[&str]) -> (bool, String) {
    let out = Command::new(example("viewer"))
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running the viewer");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The value after `label: ` on its line of `text`.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        .trim()
}

/// The temporary host, killed by its PID if the test fails.
struct Sender(Child);

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_technician_and_a_user_run_an_adhoc_session_with_the_example_binaries() {
    let permissions = Permissions::NONE.with(Permission::Control);
    let (broker, token) = TestBroker::start_with_accounts(permissions, Policy::default()).unwrap();
    let url = broker.url();
    let (ok, created) = viewer(&["--broker", url, "--token", &token, "--adhoc-create"]);
    assert!(ok, "{created}");
    let (id, link, code) = (
        field(&created, "ad-hoc session:"),
        field(&created, "invitation link:"),
        field(&created, "security code:"),
    );
    let (ok, text) = viewer(&["--broker", url, "--token", &token, "--adhoc-create"]);
    assert!(
        !ok && text.contains("the limit is 1 per technician"),
        "{text}"
    );

    let state = std::env::temp_dir().join(format!("dw-adhoc-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut child = Command::new(example("sender"))
        .args(["adhoc", "--broker", url, "--invite", link, "--view-only"])
        .args([
            "--source",
            "synthetic:typing",
            "--width",
            "640",
            "--height",
            "480",
        ])
        .arg("--state-dir")
        .arg(&state)
        .env("DESKWIRE_SECURITY_CODE", code)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the temporary host");
    let stdout = child.stdout.take().unwrap();
    let sender = Sender(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("the temporary host never said {what:?}"),
            }
        }
    };
    wait_for("active on this computer");
    // Twice: a viewer leaving does not end the support session. Each writes the picture
    // it decoded.
    for n in 0..2 {
        let shot = state.with_extension(format!("shot{n}.png"));
        let shot_arg = shot.to_string_lossy().into_owned();
        let (ok, text) = viewer(&[
            "--broker",
            url,
            "--token",
            &token,
            "--adhoc",
            id,
            "--invite",
            link,
            "--headless",
            "--duration",
            "1",
            "--snapshot",
            &shot_arg,
        ]);
        assert!(ok && text.contains("snapshot:"), "ok {ok}: {text}");
        let png = std::fs::read(&shot).expect("the snapshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 1000,
            "{} bytes",
            png.len()
        );
        let _ = std::fs::remove_file(&shot);
        wait_for("they may connect again");
    }
    let (ok, text) = viewer(&["--broker", url, "--token", &token, "--adhoc-end", id]);
    assert!(ok && text.contains("alice ended the session"), "{text}");
    wait_for("the support session is over");
    wait_for("removed");
    assert!(!state.exists(), "the temporary host left its folder behind");
    drop(sender);
}
