//! The ad-hoc flow through the product binaries, as a technician and a user would run it:
//! `deskwire-viewer --adhoc-create`, `deskwire-agent adhoc --invite`, `deskwire-viewer --adhoc` twice, `viewer
//! --adhoc-end`, against a real broker with a database, on loopback.

use std::process::Command;
use std::time::Duration;

use deskwire_tests::binaries::{field, viewer, Running};

use deskwire_broker::store::{Permission, Permissions, Policy};
use deskwire_tests::session_fixtures::TestBroker;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_technician_and_a_user_run_an_adhoc_session_with_the_example_binaries() {
    let permissions = Permissions::NONE.with(Permission::Control);
    let (broker, token) = TestBroker::start_with_accounts(permissions, Policy::default()).unwrap();
    let url = broker.url();
    let (ok, created) = viewer(&["--broker", url, "--token", &token, "--adhoc-create"], &[]);
    assert!(ok, "{created}");
    // Times for people, and the instructions name the real broker.
    assert!(!created.contains("unix ms"), "{created}");
    assert!(
        created.contains(&format!("deskwire-agent adhoc --broker {url} --invite")),
        "{created}"
    );
    let (id, link, code) = (
        field(&created, "ad-hoc session:"),
        field(&created, "invitation link:"),
        field(&created, "security code:"),
    );
    let (ok, text) = viewer(&["--broker", url, "--token", &token, "--adhoc-create"], &[]);
    assert!(
        !ok && text.contains("the limit is 1 per technician"),
        "{text}"
    );

    let state = std::env::temp_dir().join(format!("dw-adhoc-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"));
    cmd.args(["adhoc", "--broker", url, "--invite", link, "--view-only"])
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
        .env_remove("DESKWIRE_SECURITY_CODE")
        .env("RUST_LOG", "error");
    let mut sender = Running::start(cmd);
    // The user mistypes the security code first: told so, and asked again.
    sender.wait_for("security code: ", WAIT);
    // First a code one character short, then one of the right shape but wrong.
    sender.type_line(&code[..code.len() - 1]);
    sender.wait_for("security code (empty to stop): ", WAIT);
    let wrong: String = code
        .chars()
        .map(|c| match c {
            '-' | ' ' => c,
            '1' => '2',
            _ => '1',
        })
        .collect();
    sender.type_line(&wrong);
    sender.wait_for("wrong security code: ", WAIT);
    sender.wait_for("security code (empty to stop): ", WAIT);
    sender.type_line(code);
    let wait_for = |what: &str| sender.wait_for(what, WAIT);
    wait_for("active on this computer");
    // Twice: a viewer leaving does not end the support session. Each writes the picture
    // it decoded.
    for n in 0..2 {
        let shot = state.with_extension(format!("shot{n}.png"));
        let shot_arg = shot.to_string_lossy().into_owned();
        let (ok, text) = viewer(
            &[
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
            ],
            &[],
        );
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
    let (ok, text) = viewer(
        &["--broker", url, "--token", &token, "--adhoc-end", id],
        &[],
    );
    assert!(ok && text.contains("alice ended the session"), "{text}");
    wait_for("the support session is over");
    wait_for("removed");
    assert!(!state.exists(), "the temporary host left its folder behind");
}
