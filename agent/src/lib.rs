//! The agent's program, `deskwire-agent`, as a library: its control socket, the user's
//! panel and the ad-hoc temporary host. Built on the public `deskwire` API only.

pub mod adhoc;
pub mod control;
pub mod panel;

use anyhow::Result;

/// The X display to capture and inject into: `display`, else `$DISPLAY`; refused when there
/// is none and input is to be injected.
pub fn target_display(display: Option<String>, view_only: bool) -> Result<Option<String>> {
    let display = display.or_else(|| std::env::var("DISPLAY").ok());
    if display.is_none() && !view_only {
        anyhow::bail!(
            "no X display to inject input into: set $DISPLAY or --display, or pass --view-only"
        );
    }
    Ok(display)
}
