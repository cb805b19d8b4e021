//! Seeds for the fuzz targets: one well-formed message of every kind a peer can send,
//! built with the same constructors the wire's golden-bytes tests use, so the fuzzers
//! start from messages that decode and mutate inward from there.
//!
//! `cargo run -p deskwire-session --example fuzz_seeds -- DIR` writes
//! `DIR/peer_wire/KIND.bin` (the bare message) and `DIR/session_core/KIND.bin` (framed as
//! that target reads its input: channel, time step, length, bytes); `scripts/fuzz` does it
//! before fuzzing.
// A command-line tool: it says what it wrote.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use deskwire_capture::CursorImage;
use deskwire_engine::ColorSpace;
use deskwire_session::input::{InputEvent, Key, NamedKey, PointerButton};
use deskwire_session::wire::{
    ByeReason, Channel, ControlMessage, CursorPosition, Feedback, VideoChunk,
};

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: fuzz_seeds DIR");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    let mut seeds: Vec<(String, Channel, Vec<u8>)> = Vec::new();
    for (name, msg) in control_messages() {
        let mut b = BytesMut::new();
        msg.encode(&mut b);
        // The cursor's position and a restart's announcement travel on the video channel.
        let channel = match msg {
            ControlMessage::CursorPosition(_) | ControlMessage::Nack(_) => Channel::Video,
            _ => Channel::Control,
        };
        seeds.push((name.into(), channel, b.to_vec()));
    }
    for (name, event) in input_events() {
        let mut b = BytesMut::new();
        event.encode_at(&mut b, 1_000);
        seeds.push((format!("input-{name}"), Channel::Input, b.to_vec()));
    }
    let payload = [0u8, 0, 0, 1, 0x65, 0x88, 0x84, 0x00];
    let mut b = BytesMut::new();
    VideoChunk {
        send_seq: 1,
        sent_at_us: 1_000,
        stream: 1,
        band: 0,
        keyframe: true,
        resent: false,
        chunk_index: 0,
        chunk_count: 1,
        band_seq: 1,
        frame_id: 1,
        captured_at_us: 900,
        total_len: payload.len() as u32,
        offset: 0,
        payload: &payload,
    }
    .encode(&mut b);
    seeds.push(("video-chunk".into(), Channel::Video, b.to_vec()));

    for target in ["peer_wire", "session_core"] {
        std::fs::create_dir_all(dir.join(target))?;
    }
    let mut written = 0;
    for (name, channel, bytes) in &seeds {
        std::fs::write(dir.join("peer_wire").join(format!("{name}.bin")), bytes)?;
        // session_core reads [channel % 3, time step, length <= 255, bytes]...
        if let Ok(len) = u8::try_from(bytes.len()) {
            let code = match channel {
                Channel::Control => 0,
                Channel::Video => 1,
                Channel::Input => 2,
            };
            let mut framed = vec![code, 5, len];
            framed.extend_from_slice(bytes);
            std::fs::write(dir.join("session_core").join(format!("{name}.bin")), framed)?;
        }
        written += 1;
    }
    println!("{written} seeds in {}", dir.display());
    Ok(())
}

fn control_messages() -> Vec<(&'static str, ControlMessage)> {
    vec![
        (
            "stream-start",
            ControlMessage::StreamStart {
                stream: 2,
                width: 640,
                height: 360,
                color: ColorSpace::Bt709Limited,
                tops: vec![0, 128, 256],
            },
        ),
        (
            "keyframe-request",
            ControlMessage::KeyframeRequest {
                stream: 1,
                bands: 0b101,
            },
        ),
        (
            "ping",
            ControlMessage::Ping {
                nonce: 7,
                sent_us: 1_000,
            },
        ),
        (
            "pong",
            ControlMessage::Pong {
                nonce: 7,
                echo_us: 1_000,
                target_us: 1_500,
            },
        ),
        (
            "receiver-report",
            ControlMessage::ReceiverReport {
                frames: 30,
                latency_p50_us: 9_000,
                latency_p99_us: 20_000,
                keyframe_requests: 1,
            },
        ),
        (
            "feedback",
            ControlMessage::Feedback(Feedback {
                interval_us: 100_000,
                bytes: 50_000,
                received: 40,
                lost: 1,
                queue_delay_us: 2_000,
                highest_seq: 41,
                rtt_us: 50_000,
            }),
        ),
        ("permissions", ControlMessage::Permissions { control: true }),
        (
            "nack",
            ControlMessage::Nack(deskwire_session::wire::nack_ranges([7, 8, 12, 90])),
        ),
        (
            "grant-request",
            ControlMessage::GrantRequest {
                id: 1,
                request: r#"{"days":3}"#.into(),
            },
        ),
        (
            "grant-answer",
            ControlMessage::GrantAnswer {
                id: 1,
                approved: false,
                detail: "no".into(),
            },
        ),
        (
            "cursor-shape",
            ControlMessage::CursorShape(Arc::new(CursorImage {
                serial: 3,
                width: 2,
                height: 2,
                hot_x: 1,
                hot_y: 0,
                rgba: vec![255; 16],
            })),
        ),
        (
            "cursor-position",
            ControlMessage::CursorPosition(CursorPosition {
                sent_us: 2_000,
                serial: 3,
                x: 100,
                y: 50,
                visible: true,
            }),
        ),
        (
            "bye",
            ControlMessage::Bye {
                reason: ByeReason::Ended,
                detail: "bye".into(),
            },
        ),
    ]
}

fn input_events() -> Vec<(&'static str, InputEvent)> {
    vec![
        ("move", InputEvent::PointerMove { x: 10, y: 20 }),
        (
            "button",
            InputEvent::Button {
                button: PointerButton::Left,
                down: true,
            },
        ),
        ("wheel", InputEvent::Wheel { dx: 0, dy: -1 }),
        (
            "key-char",
            InputEvent::Key {
                key: Key::Char('a'),
                down: true,
            },
        ),
        (
            "key-named",
            InputEvent::Key {
                key: Key::Named(NamedKey::Return),
                down: false,
            },
        ),
        ("text", InputEvent::Text("hello".into())),
    ]
}
