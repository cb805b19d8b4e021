//! What the binary-driving tests share: finding the product binaries cargo built, and a
//! child process killed by its PID when the test ends, whose output lines can be waited for.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A binary of the workspace (`deskwire-agent`, `deskwire-viewer`) that cargo built beside
/// this test: `cargo test --workspace` builds every binary before it runs a test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test), which builds it",
        bin.display()
    );
    bin
}

/// A running program whose stdout is read line by line; killed by its PID on drop.
#[derive(Debug)]
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// What it wrote to stderr, when that was piped (collected on a thread so the program
    /// never blocks on a full pipe).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// Start `cmd` with its stdin held open and its stdout piped.
    pub fn start(cmd: Command) -> Self {
        Self::start_with_stdin(cmd, Stdio::piped())
    }

    /// Start `cmd` with this stdin (`Stdio::null()`: as a service runs it) and its stdout
    /// piped.
    pub fn start_with_stdin(mut cmd: Command, stdin: Stdio) -> Self {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting a binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut text);
                text
            })
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || read_lines(stdout, &tx));
        Self {
            child,
            lines,
            stderr,
        }
    }

    /// Everything the program wrote to a piped stderr; waits for it to close it (exit).
    pub fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .expect("stderr was piped")
            .join()
            .expect("the stderr reader")
    }

    /// Type `line` (and Enter) on the program's standard input.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped and open");
        writeln!(stdin, "{line}").expect("typing to the program");
        stdin.flush().expect("typing to the program");
    }

    /// Close the program's standard input, as a user pressing Ctrl-D or a pipe ending.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Wait for the program to exit, failing after `timeout`; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the program") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the program did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next line, waiting until `deadline`.
    fn next_line(&self, deadline: Instant) -> Result<String, mpsc::RecvTimeoutError> {
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// The next line containing `what`, failing after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("the program never said {what:?} in {timeout:?}"),
            }
        }
    }

    /// What follows `label` on the next line that has it, trimmed: a value the program
    /// printed as `label value` (a connection code, an id), failing after `timeout`.
    pub fn wait_for_value(&self, label: &str, timeout: Duration) -> String {
        let line = self.wait_for(label, timeout);
        line.split_once(label)
            .map_or("", |(_, value)| value)
            .trim()
            .to_owned()
    }

    /// The lines printed so far and not yet read, without waiting.
    pub fn lines_so_far(&self) -> Vec<String> {
        std::iter::from_fn(|| self.lines.try_recv().ok()).collect()
    }

    /// Every line until the program exits (its stdout closes), failing after `timeout`.
    pub fn lines_until_exit(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            match self.next_line(deadline) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the program did not exit within {timeout:?}; it said {lines:#?}")
                }
            }
        }
    }

    /// Every line up to and including the first containing `what`, failing after `timeout`.
    pub fn lines_until(&self, what: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let Ok(line) = self.next_line(deadline) else {
                panic!("the program never said {what:?} in {timeout:?}; it said {lines:#?}")
            };
            let done = line.contains(what);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

/// Send each line `from` prints to `tx`; a prompt (text ending in ": " that the program
/// flushed without a newline, waiting for an answer) counts as a line too.
fn read_lines(from: impl Read, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(from);
    let mut pending = Vec::new();
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk.to_vec(),
        };
        reader.consume(chunk.len());
        pending.extend_from_slice(&chunk);
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            let text = String::from_utf8_lossy(&line[..at])
                .trim_end_matches('\r')
                .to_owned();
            if tx.send(text).is_err() {
                return;
            }
        }
        if pending.ends_with(b": ") {
            let text = String::from_utf8_lossy(&pending).into_owned();
            pending.clear();
            if tx.send(text).is_err() {
                return;
            }
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&pending).into_owned());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What follows `label` on the first line of `text` that starts with it, trimmed.
pub fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        .trim()
}

/// `deskwire-viewer`, run to its end with `args` and these environment variables: its
/// exit status and everything it printed.
pub fn viewer(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(binary("deskwire-viewer"))
        .args(args)
        .envs(env.iter().copied())
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
