//! `deskwire-agent` as its user meets it on a terminal, or a service meets it with none:
//! a standing-by agent answers its control socket and stops when told or when its input
//! ends; a refused code with nobody left to type another ends the agent instead of asking
//! forever. Real binaries, a real broker.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use deskwire_broker::store::{Permission, Permissions, Policy};
use deskwire_tests::binaries::Running;
use deskwire_tests::session_fixtures::TestBroker;

const WAIT: Duration = Duration::from_secs(20);

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dw-terminal-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"));
    cmd.args(["--view-only", "--source", "synthetic:static"])
        .args(["--width", "320", "--height", "240"])
        .env("RUST_LOG", "error");
    cmd
}

fn ctl(socket: &std::path::Path, request: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_deskwire-agent"))
        .arg("ctl")
        .arg("--control-socket")
        .arg(socket)
        .arg(request)
        .output()
        .expect("running deskwire-agent ctl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn standby(broker: &TestBroker, dir: &std::path::Path) -> Running {
    let mut cmd = agent();
    cmd.args(["--standby", "--broker", broker.url()])
        .arg("--device-key")
        .arg(dir.join("device.key"))
        .arg("--grants")
        .arg(dir.join("grants.json"))
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"));
    let running = Running::start(cmd);
    running.wait_for("standing by", WAIT);
    running
}

fn unattended_broker() -> TestBroker {
    let permissions = Permissions::NONE.with(Permission::Unattended);
    TestBroker::start_with_accounts(permissions, Policy::default())
        .expect("starting the broker")
        .0
}

#[test]
fn a_standing_by_agent_answers_its_control_socket_and_stops_on_terminate() {
    let broker = unattended_broker();
    let dir = dir("standby-ctl");
    let mut agent = standby(&broker, &dir);
    let socket = dir.join("ctl.sock");

    let sessions = ctl(&socket, "sessions");
    assert!(
        sessions.contains("no session (standing by for unattended calls)"),
        "{sessions}"
    );
    let code = ctl(&socket, "code 123 456 7890");
    assert!(code.contains("no code is being asked for"), "{code}");
    let stop = ctl(&socket, "terminate");
    assert!(stop.contains("stopping"), "{stop}");
    agent.wait_for("stopped from the control socket", WAIT);
    assert_eq!(agent.wait_exit(WAIT), Some(0), "terminate is a clean stop");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_standing_by_agent_stops_when_its_terminal_input_ends() {
    let broker = unattended_broker();
    let dir = dir("standby-eof");
    let mut agent = standby(&broker, &dir);
    agent.close_stdin();
    agent.wait_for("end of input: stopping", WAIT);
    assert_eq!(
        agent.wait_exit(WAIT),
        Some(1),
        "stopped with nobody there is not a session that ended well"
    );
    assert!(
        !dir.join("ctl.sock").exists(),
        "the control socket is removed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_code_with_the_input_closed_ends_the_agent_instead_of_asking_forever() {
    let broker = TestBroker::start().expect("starting the broker");
    let dir = dir("closed-code");
    let mut cmd = agent();
    cmd.args(["--broker", broker.url(), "--code", "123 456 7890"])
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"));
    let mut agent = Running::start(cmd);
    agent.close_stdin();
    let said = agent.lines_until("stopping", WAIT);
    assert!(
        said.iter().any(|l| l.contains("no session has this code")),
        "the refusal is told first: {said:#?}"
    );
    assert!(
        said.last()
            .unwrap()
            .contains("end of input: no code to try"),
        "{said:#?}"
    );
    assert_eq!(agent.wait_exit(WAIT), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_terminal_a_refused_code_waits_for_the_control_socket_and_then_gives_up() {
    let broker = TestBroker::start().expect("starting the broker");
    let dir = dir("no-terminal");
    let mut cmd = agent();
    cmd.args(["--broker", broker.url(), "--code", "123 456 7890"])
        .args(["--answer-within", "2"])
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"));
    // As a service starts it: standard input is /dev/null.
    let mut agent = Running::start_with_stdin(cmd, Stdio::null());
    let asked = agent.wait_for("deskwire-agent ctl code CODE", WAIT);
    assert!(asked.contains("within 2.0 s"), "{asked}");
    // Another wrong code through the socket is tried, refused and asked for again.
    let sent = ctl(&dir.join("ctl.sock"), "code 654 321 0987");
    assert!(sent.contains("code sent"), "{sent}");
    agent.wait_for("deskwire-agent ctl code CODE", WAIT);
    agent.wait_for("no code came through the control socket in 2.0 s", WAIT);
    assert_eq!(agent.wait_exit(WAIT), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_good_session_says_what_happened_once_with_no_log_noise_or_colour_codes() {
    let broker = TestBroker::start().expect("starting the broker");
    let dir = dir("quiet");
    let mut viewer = Command::new(deskwire_tests::binaries::binary("deskwire-viewer"));
    viewer
        .args(["--broker", broker.url(), "--headless", "--duration", "2"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped());
    let mut viewer = Running::start(viewer);
    let code = viewer.wait_for_value("connection code: ", WAIT);

    let agent_err = dir.join("agent.stderr");
    let mut agent = agent();
    agent
        .args(["--broker", broker.url(), "--code", &code])
        .args(["--acceptance", "auto", "--answer-within", "0"])
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&agent_err).unwrap());
    let mut agent = Running::start(agent);
    let said = viewer.lines_until_exit(WAIT);
    let agent_said = agent.lines_until("session ended", WAIT);
    assert_eq!(agent.wait_exit(WAIT), Some(0), "{agent_said:#?}");

    assert!(
        said.iter().any(|l| l.starts_with("connected in ")),
        "{said:#?}"
    );
    let stats = said
        .iter()
        .find(|l| l.contains(" fps, "))
        .expect("a stats line");
    assert!(
        stats.contains("bit/s") && !stats.contains("Some(") && !stats.contains("kbps"),
        "{stats}"
    );
    assert_eq!(
        agent_said.last().unwrap(),
        "session ended: the technician ended the session"
    );
    // Logs go to stderr: on a good run there are none, and never colour codes in a file.
    let viewer_err = viewer.stderr_text();
    let agent_err = std::fs::read_to_string(&agent_err).unwrap();
    for (who, text) in [("viewer", &viewer_err), ("agent", &agent_err)] {
        assert!(
            !text.contains("WARN") && !text.contains("INFO") && !text.contains('\x1b'),
            "the {who} logged on a good run: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A network namespace with only `lo`: no multicast route, as in some containers.
struct Namespace(String);

impl Namespace {
    fn new(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = |args: &[&str]| {
            let out = Command::new("ip").args(args).output();
            assert!(
                out.as_ref().is_ok_and(|o| o.status.success()),
                "ip {args:?} failed (these tests need root and iproute2): {out:?}"
            );
        };
        ok(&["netns", "add", &name]);
        ok(&["-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn on_a_network_without_multicast_a_session_connects_and_says_nothing_of_mdns() {
    let ns = Namespace::new("dw-nomc");
    let dir = dir("no-multicast");
    let mut broker = ns.command(deskwire_tests::binaries::binary("deskwire-broker"));
    broker.args([
        "--listen",
        "127.0.0.1:8450",
        "--database",
        "sqlite::memory:",
    ]);
    let broker = Running::start(broker);
    broker.wait_for("listening on ws://", WAIT);
    let url = "ws://127.0.0.1:8450";
    let mut viewer = ns.command(deskwire_tests::binaries::binary("deskwire-viewer"));
    viewer
        .args(["--broker", url, "--headless", "--duration", "1"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped());
    let mut viewer = Running::start(viewer);
    let code = viewer.wait_for_value("connection code: ", WAIT);
    let mut agent = ns.command(env!("CARGO_BIN_EXE_deskwire-agent"));
    agent
        .args(["--view-only", "--source", "synthetic:static"])
        .args(["--width", "320", "--height", "240"])
        .args(["--broker", url, "--code", &code])
        .args(["--acceptance", "auto", "--answer-within", "0"])
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        .env_remove("RUST_LOG");
    let _agent = Running::start(agent);
    let said = viewer.lines_until_exit(WAIT);
    assert!(
        said.iter().any(|l| l.starts_with("connected in ")),
        "{said:#?}"
    );
    let err = viewer.stderr_text();
    assert!(
        !err.contains("os error") && !err.contains("ERROR"),
        "mDNS failing is not the user's business: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_retyped_code_gets_in_and_the_set_up_time_leaves_out_the_users_typing() {
    let broker = TestBroker::start().expect("starting the broker");
    let dir = dir("retyped");
    let mut viewer = Command::new(deskwire_tests::binaries::binary("deskwire-viewer"));
    viewer
        .args(["--broker", broker.url(), "--headless", "--duration", "1"])
        .env("RUST_LOG", "error");
    let viewer = Running::start(viewer);
    let code = viewer.wait_for_value("connection code: ", WAIT);
    let mut cmd = agent();
    cmd.args(["--broker", broker.url(), "--code", "123 456 7890"])
        .args(["--acceptance", "auto", "--answer-within", "0"])
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"));
    let mut agent = Running::start(cmd);
    agent.wait_for("enter the code again", WAIT);
    // The user reads the code again off the phone.
    let typing = Duration::from_secs(3);
    std::thread::sleep(typing);
    agent.type_line(&code);
    let connected = agent.wait_for("connected in ", WAIT);
    let took = connected
        .strip_prefix("connected in ")
        .and_then(|r| r.split(';').next())
        .unwrap_or_default();
    let secs = match took.split_once(' ') {
        Some((n, "ms")) => n.parse::<f64>().unwrap_or(f64::MAX) / 1e3,
        Some((n, "s")) => n.parse::<f64>().unwrap_or(f64::MAX),
        _ => f64::MAX,
    };
    assert!(
        secs < typing.as_secs_f64(),
        "the set-up time counts from the accepted code: {connected}"
    );
    let _ = viewer.lines_until_exit(WAIT);
    let _ = std::fs::remove_dir_all(&dir);
}
