//! The user's panel (on by default when the agent has an X display) driven as a user would,
//! on a real X server: a refused code is retyped on it and tried again, the consent question
//! is answered with its Accept button, control is taken back with View only, Terminate ends
//! the session, and an unattended request that asks for the user's own account is approved
//! by typing it there.
//! Clicks and keys go through xdotool; the panel is read by its window title (what it
//! asks) and by what the agent does. With `DESKWIRE_PANEL_SHOTS=DIR` it also writes a PNG
//! of each state (the pictures in docs/).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use deskwire_tests::binaries::{binary, field, Running};
use deskwire_tests::session_fixtures::TestBroker;
use deskwire_tests::Xvfb;

const WAIT: Duration = Duration::from_secs(20);
/// The agent's screen in these tests: a small still synthetic desktop (the panel is on the
/// real display beside it).
const SMALL_DESKTOP: [&str; 6] = [
    "--source",
    "synthetic:static",
    "--width",
    "640",
    "--height",
    "360",
];
/// Where the panel's buttons are (see `agent/src/panel.rs`): 100 x 28 from (10, 88), 110
/// apart. A click goes to the middle of one.
fn button(i: u32) -> (u32, u32) {
    (60 + 110 * i, 102)
}

fn xdotool(display: &str, args: &[&str]) -> String {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .expect("running xdotool (scripts/setup installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The panel's window, once it is shown, and its title.
fn panel(display: &str) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = xdotool(display, &["search", "--onlyvisible", "--name", "^deskwire"]);
        if let Some(id) = found.lines().next() {
            let title = xdotool(display, &["getwindowname", id]);
            return (id.to_owned(), title);
        }
        assert!(Instant::now() < deadline, "the panel never showed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the panel's title contains `what`; its window id.
fn panel_says(display: &str, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (id, title) = panel(display);
        if title.contains(what) {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "the panel never said {what:?}; it says {title:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Type `text` on the panel: the pointer over its text first, so the keys go to it (no
/// window manager: the keyboard follows the pointer).
fn type_on(display: &str, window: &str, text: &str) {
    xdotool(display, &["mousemove", "--window", window, "200", "40"]);
    xdotool(display, &["type", "--delay", "20", text]);
}

fn click(display: &str, window: &str, i: u32) {
    let (x, y) = button(i);
    xdotool(
        display,
        &[
            "mousemove",
            "--window",
            window,
            &x.to_string(),
            &y.to_string(),
            "click",
            "1",
        ],
    );
}

/// A picture of the panel for the docs, when asked for.
fn shot(display: &str, name: &str) {
    let Some(dir) = std::env::var_os("DESKWIRE_PANEL_SHOTS").map(PathBuf::from) else {
        return;
    };
    let (id, _) = panel(display);
    let geometry = xdotool(display, &["getwindowgeometry", "--shell", &id]);
    let field = |k: &str| {
        geometry
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("0")
            .to_owned()
    };
    let (x, y, w, h) = (field("X="), field("Y="), field("WIDTH="), field("HEIGHT="));
    let _ = std::fs::create_dir_all(&dir);
    let out = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "x11grab",
            "-draw_mouse",
            "0",
        ])
        .args(["-video_size", &format!("{w}x{h}")])
        .args(["-i", &format!("{display}+{x},{y}"), "-frames:v", "1"])
        .arg(dir.join(format!("{name}.png")))
        .output()
        .expect("running ffmpeg");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_user_retypes_a_code_accepts_takes_control_back_and_terminates_on_the_panel() {
    let screen = Xvfb::start(1280, 720).expect("starting the user's Xvfb");
    let display = screen.display();
    let broker = TestBroker::start().expect("starting the broker");
    let mut viewer = Command::new(binary("deskwire-viewer"));
    viewer
        .args(["--broker", broker.url(), "--headless", "--duration", "30"])
        .env("RUST_LOG", "error");
    let viewer = Running::start(viewer);
    let code = viewer.wait_for_value("connection code: ", WAIT);

    let dir = std::env::temp_dir().join(format!("dw-panel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"));
    agent
        .args([
            "--panel",
            "--broker",
            broker.url(),
            "--code",
            "123 456 7890",
        ])
        .args(SMALL_DESKTOP)
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        .env("DISPLAY", &display)
        .env("RUST_LOG", "error");
    let agent = Running::start(agent);

    // The code was wrong: the panel asks for it again. Typed there, tried with the button.
    let window = panel_says(&display, "enter the connection code");
    shot(&display, "panel-code");
    type_on(&display, &window, &code);
    click(&display, &window, 0);

    // The question, answered with Accept.
    let window = panel_says(&display, "asks to see and control this screen");
    shot(&display, "panel-consent");
    click(&display, &window, 0);
    agent.wait_for("connected in ", WAIT);
    let window = panel_says(&display, "is connected");
    shot(&display, "panel-connected");

    // View only takes control back; Terminate (now the first button) ends the session.
    click(&display, &window, 0);
    agent.wait_for("control taken back", WAIT);
    let window = panel_says(&display, "is connected (view only)");
    click(&display, &window, 0);
    agent.wait_for("session terminated on this computer", WAIT);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unattended_request_on_the_users_own_account_is_approved_by_typing_it_on_the_panel() {
    use deskwire::accounts::AdminAccounts;
    use deskwire_broker::store::{Permission, Permissions, Policy};

    let screen = Xvfb::start(1280, 720).expect("starting the user's Xvfb");
    let display = screen.display();
    let permissions = Permissions::NONE
        .with(Permission::Control)
        .with(Permission::Unattended);
    let (broker, token) = TestBroker::start_with_accounts(permissions, Policy::default())
        .expect("starting the broker");
    let dir = std::env::temp_dir().join(format!("dw-panel-grant-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (accounts, grants, ticket) = (
        dir.join("accounts"),
        dir.join("grants.json"),
        dir.join("ticket.json"),
    );
    AdminAccounts::at(&accounts)
        .set("maria", "blue tulip 42")
        .unwrap();

    let mut viewer = Command::new(binary("deskwire-viewer"));
    viewer
        .args(["--broker", broker.url(), "--token", &token, "--headless"])
        .args(["--duration", "10", "--request-unattended", "7"])
        .args(["--grant-credentials", "customer", "--zone", "UTC"])
        .arg("--save-grant")
        .arg(&ticket)
        .env("RUST_LOG", "error");
    let viewer = Running::start(viewer);
    let code = viewer.wait_for_value("connection code: ", WAIT);
    // No --panel: a display is there, so the panel is.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"));
    agent
        .args(["--broker", broker.url(), "--code", &code])
        .args(SMALL_DESKTOP)
        .arg("--customer-accounts")
        .arg(&accounts)
        .arg("--grants")
        .arg(&grants)
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        .env("DISPLAY", &display)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("RUST_LOG", "error");
    let agent = Running::start(agent);

    let window = panel_says(&display, "asks to see and control this screen");
    click(&display, &window, 0);
    let window = panel_says(&display, "asks to connect when nobody is here");
    // Allow with nothing typed sends nothing: the account field takes the keyboard.
    click(&display, &window, 0);
    type_on(&display, &window, "maria");
    xdotool(&display, &["key", "Tab"]);
    type_on(&display, &window, "blue tulip 42");
    shot(&display, "panel-grant-credentials");
    click(&display, &window, 0);
    agent.wait_for("unattended access granted (grant 1)", WAIT);
    // Back to the session it was asked in.
    panel_says(&display, "is connected");
    let saved = viewer.lines_until_exit(WAIT);
    assert!(
        saved.iter().any(|l| l.starts_with("grant saved to")),
        "{saved:#?}"
    );
    let kept = deskwire::grants::GrantTicket::from_json(&std::fs::read_to_string(&ticket).unwrap())
        .unwrap();
    assert_eq!(
        kept.grant.request().credential_mode,
        deskwire_signal::grant::CredentialMode::CustomerCredentials
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_adhoc_user_types_the_security_code_on_the_panel_and_ends_the_session_there() {
    use deskwire_broker::store::{Permission, Permissions, Policy};

    let screen = Xvfb::start(1280, 720).expect("starting the user's Xvfb");
    let display = screen.display();
    let permissions = Permissions::NONE.with(Permission::Control);
    let (broker, token) = TestBroker::start_with_accounts(permissions, Policy::default())
        .expect("starting the broker");
    let url = broker.url();
    let (ok, created) = deskwire_tests::binaries::viewer(
        &["--broker", url, "--token", &token, "--adhoc-create"],
        &[],
    );
    assert!(ok, "{created}");
    let (id, link, code) = (
        field(&created, "ad-hoc session:"),
        field(&created, "invitation link:"),
        field(&created, "security code:"),
    );
    let state = std::env::temp_dir().join(format!("dw-panel-adhoc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut host = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"));
    host.args(["adhoc", "--broker", url, "--invite", link])
        .args(SMALL_DESKTOP)
        .arg("--state-dir")
        .arg(&state)
        .env("DISPLAY", &display)
        .env_remove("DESKWIRE_SECURITY_CODE")
        .env("RUST_LOG", "error");
    let host = Running::start(host);

    // The code is asked on the panel; typed there (letters too) and sent with the button.
    let window = panel_says(&display, "enter the security code");
    shot(&display, "panel-security-code");
    type_on(&display, &window, code);
    click(&display, &window, 0);
    host.wait_for("active on this computer", WAIT);

    // The technician comes in: the panel says who, and ends the whole support session.
    let mut viewer = Command::new(binary("deskwire-viewer"));
    viewer
        .args(["--broker", url, "--token", &token, "--adhoc", id])
        .args(["--invite", link, "--headless", "--duration", "20"])
        .env("RUST_LOG", "error");
    let _viewer = Running::start(viewer);
    let window = panel_says(&display, "is connected");
    // View only, then End session.
    click(&display, &window, 0);
    host.wait_for("control taken back", WAIT);
    let window = panel_says(&display, "is connected (view only)");
    click(&display, &window, 0);
    host.wait_for("the support session is over", WAIT);
    assert!(!state.exists(), "the temporary host left its folder behind");
}
