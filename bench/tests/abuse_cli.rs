//! `deskwire-bench abuse` runs end to end: a real broker under a join spam, with sessions
//! set up before, during and after it. No timing is asserted (that is the bench's
//! business); that every set-up succeeded while the spam ran is.

use std::process::Command;

#[test]
fn sessions_are_still_set_up_while_the_broker_is_spammed_with_joins() {
    let out = Command::new(env!("CARGO_BIN_EXE_deskwire-bench"))
        .args(["abuse", "--seconds", "1", "--spammers", "4"])
        .output()
        .expect("running deskwire-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "abuse failed (a set-up failed or the broker died): {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = stdout
        .lines()
        .find(|l| l.starts_with("| during the spam |"))
        .expect("a row for the spam");
    let setups: u32 = during.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(setups >= 3, "{during}");
    let spam = stdout
        .lines()
        .find(|l| l.starts_with("spam: "))
        .expect("a spam line");
    let joins: u64 = spam["spam: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(joins > 100, "{spam}");
    assert!(stdout.contains("broker RSS: "), "{stdout}");
}
