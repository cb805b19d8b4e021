//! What the echo scenarios share: run `deskwire-bench echo` small and read its JSON lines.

use std::process::Command;

/// `deskwire-bench echo` with 4 keys, 4 pointer moves and 2 clicks (and `extra`); its JSON
/// lines, each key's and then the summary. Fails the test if the bench failed.
pub fn echo(extra: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_deskwire-bench"))
        .args(["echo", "--keys", "4", "--pointer", "4", "--clicks", "2"])
        .args(["--still", "0", "--json"])
        .args(extra)
        .output()
        .expect("running deskwire-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "echo {extra:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
