//! `deskwire-bench paint` (hidden): a 60 fps source that this machine can keep up with.
//! ffplay decoding and scaling 1080p in software on Xvfb presents only 29-31 distinct
//! frames a second here (DAMAGE and ffmpeg's `mpdecimate` agree), so it cannot show
//! whether deskwire streams 60. This painter fills the screen with a smooth colour field
//! that slides a few pixels each frame (every band changes, and motion search can follow
//! it), with X core requests that cost the server little, on a steady 60 Hz clock.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ChangeGCAux, ConnectionExt as _, CreateGCAux, Rectangle};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// X display to paint on.
    #[arg(long)]
    display: String,
    /// Frames per second.
    #[arg(long, default_value_t = 60)]
    fps: u32,
}

/// The side of a colour cell, in pixels.
const CELL: u16 = 24;

pub(crate) fn run(args: &Args) -> Result<()> {
    let (conn, screen) = x11rb::connect(Some(&args.display))
        .with_context(|| format!("connecting to {}", args.display))?;
    let s = &conn.setup().roots[screen];
    let (root, width, height) = (s.root, s.width_in_pixels, s.height_in_pixels);
    let gc = conn.generate_id()?;
    conn.create_gc(gc, root, &CreateGCAux::new())?.check()?;
    let interval = Duration::from_secs(1) / args.fps.max(1);
    let mut next = Instant::now();
    for frame in 0u32.. {
        // Slides 4 px a frame to the right, and the colours drift.
        let shift = (frame * 4) as i32;
        for cy in 0..height.div_ceil(CELL) {
            // One column more than fits: the cells slide left by up to a cell.
            for cx in 0..=width / CELL {
                let x = i32::from(cx * CELL) - shift.rem_euclid(i32::from(CELL));
                let u = (i32::from(cx * CELL) - shift).rem_euclid(4096) as u32;
                let v = u32::from(cy * CELL);
                let rgb = (((u / 16 + frame / 2) & 0xff) << 16)
                    | (((v / 4 + u / 32) & 0xff) << 8)
                    | ((frame + v / 8) & 0xff);
                conn.change_gc(gc, &ChangeGCAux::new().foreground(rgb))?;
                conn.poly_fill_rectangle(
                    root,
                    gc,
                    &[Rectangle {
                        x: x as i16,
                        y: (cy * CELL) as i16,
                        width: CELL,
                        height: CELL,
                    }],
                )?;
            }
        }
        // Drawn when the server answers, so frames do not pile up in its queue.
        conn.get_input_focus()?.reply()?;
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Late: skip ahead rather than burst.
            next = now;
        }
    }
    Ok(())
}
