//! Refuse to build without nasm on x86: OpenH264's build then silently drops its assembly
//! ("Failed to compile NASM files, not using any assembly") and encodes 1.8-2.7x slower.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" && arch != "x86" {
        return;
    }
    let ok = Command::new("nasm")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        panic!(
            "\n\nnasm was not found on PATH.\n\
             OpenH264 would build without its assembly and encode about 2x slower.\n\
             Install it (Debian: `apt-get install nasm`, or run scripts/setup) and build again.\n\n"
        );
    }
}
