//! Ad-hoc support on the technician's side: `deskwire-viewer --adhoc-create`, `--adhoc`,
//! `--adhoc-end`.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::time::Duration;

use deskwire::adhoc::Invitation;

/// Print an invitation for the technician to pass on.
pub fn print_invitation(invitation: &Invitation, broker: &str) {
    println!("ad-hoc session: {}", invitation.session);
    println!("invitation link: {}", invitation.link);
    println!("security code: {}", invitation.code);
    println!(
        "valid until: {}",
        deskwire_signal::words::when(deskwire::UnixMillis::now(), invitation.expires_at)
    );
    if let Some(to) = &invitation.mailed_to {
        println!("e-mailed to: {to}");
    }
    if let Some(e) = &invitation.mail_error {
        println!("not e-mailed: {e}");
    }
    println!(
        "the user runs: deskwire-agent adhoc --broker {broker} --invite '{}'",
        invitation.link
    );
    let _ = std::io::stdout().flush();
}

/// How long technician requests wait for the broker.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
