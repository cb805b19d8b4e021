use super::*;
use proptest::prelude::*;

fn bytes_of(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b);
    b.to_vec()
}

fn chunk(payload: &[u8]) -> VideoChunk<'_> {
    VideoChunk {
        send_seq: 0x0403_0201,
        sent_at_us: 0x0807_0605,
        stream: 0x0102,
        band: 3,
        keyframe: true,
        resent: false,
        chunk_index: 1,
        chunk_count: 2,
        band_seq: 0x0A0B0C0D,
        frame_id: 0x1122334455667788,
        captured_at_us: 1_000_000,
        total_len: 10,
        offset: 7,
        payload,
    }
}

#[test]
fn video_chunk_golden_bytes() {
    let got = bytes_of(|b| chunk(&[0xAA, 0xBB, 0xCC]).encode(b));
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        1, 0x10, 1, 2, 3, 4, 5, 6, 7, 8,
        0x02, 0x01, 3, 1, 1, 0, 2, 0,
        0x0D, 0x0C, 0x0B, 0x0A,
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        0x40, 0x42, 0x0F, 0, 0, 0, 0, 0,
        10, 0, 0, 0,
        7, 0, 0, 0,
        0xAA, 0xBB, 0xCC,
    ];
    assert_eq!(got, want);
    assert_eq!(decode_video(&got).unwrap(), chunk(&[0xAA, 0xBB, 0xCC]));
}

#[test]
fn a_chunk_stamped_as_it_leaves_carries_the_new_stamp_and_nothing_else_changes() {
    let mut msg = BytesMut::new();
    chunk(&[1, 2, 3]).encode(&mut msg);
    assert_eq!(video_stamp(&msg), Some((0x0403_0201, 0x0807_0605)));
    stamp_video(&mut msg, 99, 12_345);
    assert_eq!(video_stamp(&msg), Some((99, 12_345)));
    let back = decode_video(&msg).unwrap();
    assert_eq!((back.send_seq, back.sent_at_us), (99, 12_345));
    assert_eq!(
        back,
        VideoChunk {
            send_seq: 99,
            sent_at_us: 12_345,
            ..chunk(&[1, 2, 3])
        }
    );
    // Marked as sent again: the flag reads back, the rest is unchanged.
    assert!(!is_resent(&msg));
    mark_resent(&mut msg);
    assert!(is_resent(&msg));
    assert_eq!(
        decode_video(&msg).unwrap(),
        VideoChunk {
            send_seq: 99,
            sent_at_us: 12_345,
            resent: true,
            ..chunk(&[1, 2, 3])
        }
    );
    // Too short to be a chunk: left alone, and no stamp is read from it.
    let mut short = [1u8, 0x10, 0, 0];
    stamp_video(&mut short, 5, 5);
    assert_eq!(short, [1, 0x10, 0, 0]);
    assert_eq!(video_stamp(&short), None);
}

#[test]
fn control_golden_bytes() {
    let cases: Vec<(ControlMessage, Vec<u8>)> = vec![
        (
            ControlMessage::KeyframeRequest {
                stream: 1,
                bands: 0b101,
            },
            vec![1, 0x21, 1, 0, 5, 0, 0, 0],
        ),
        (
            ControlMessage::Ping {
                nonce: 7,
                sent_us: 258,
            },
            vec![1, 0x22, 7, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0],
        ),
        (
            ControlMessage::Permissions { control: true },
            vec![1, 0x25, 1],
        ),
        (
            ControlMessage::Feedback(Feedback {
                interval_us: 1,
                bytes: 2,
                received: 3,
                lost: 4,
                queue_delay_us: 5,
                highest_seq: 0x0102_0304,
                rtt_us: 6,
            }),
            vec![
                1, 0x29, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 4, 3, 2, 1, 6,
                0, 0, 0,
            ],
        ),
        (
            ControlMessage::Bye {
                reason: ByeReason::Ended,
                detail: "ok".into(),
            },
            vec![1, 0x26, 0, 2, 0, b'o', b'k'],
        ),
        (
            ControlMessage::GrantRequest {
                id: 3,
                request: "{}".into(),
            },
            vec![1, 0x27, 3, 0, 0, 0, 2, 0, b'{', b'}'],
        ),
        (
            ControlMessage::GrantAnswer {
                id: 3,
                approved: false,
                detail: "no".into(),
            },
            vec![1, 0x28, 3, 0, 0, 0, 0, 2, 0, b'n', b'o'],
        ),
        (
            ControlMessage::StreamStart {
                stream: 2,
                width: 1920,
                height: 1080,
                color: ColorSpace::Bt709Limited,
                tops: vec![0, 544],
            },
            vec![
                1, 0x20, 2, 0, 0x80, 0x07, 0x38, 0x04, 0, 2, 0, 0, 0x20, 0x02,
            ],
        ),
    ];
    for (msg, want) in cases {
        let got = bytes_of(|b| msg.encode(b));
        assert_eq!(got, want, "{msg:?}");
        assert_eq!(decode_control(&got).unwrap(), msg);
    }
}

#[test]
fn input_golden_bytes() {
    let cases: Vec<(InputEvent, Vec<u8>)> = vec![
        (
            InputEvent::PointerMove { x: -1, y: 2 },
            vec![
                1, 0x30, 0x78, 0x56, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0,
            ],
        ),
        (
            InputEvent::Button {
                button: PointerButton::Right,
                down: true,
            },
            vec![1, 0x31, 0x78, 0x56, 0x34, 0x12, 2, 1],
        ),
        (
            InputEvent::Wheel { dx: 0, dy: -3 },
            vec![1, 0x32, 0x78, 0x56, 0x34, 0x12, 0, 0, 0xFD, 0xFF],
        ),
        (
            InputEvent::Key {
                key: Key::Char('é'),
                down: false,
            },
            vec![1, 0x33, 0x78, 0x56, 0x34, 0x12, 0, 0xE9, 0, 0, 0, 0],
        ),
        (
            InputEvent::Key {
                key: Key::Named(NamedKey::Return),
                down: true,
            },
            vec![1, 0x33, 0x78, 0x56, 0x34, 0x12, 1, 1, 0, 0, 0, 1],
        ),
        (
            InputEvent::Text("hé".into()),
            vec![1, 0x34, 0x78, 0x56, 0x34, 0x12, 3, 0, b'h', 0xC3, 0xA9],
        ),
    ];
    for (ev, want) in cases {
        let got = bytes_of(|b| ev.encode_at(b, 0x1234_5678));
        assert_eq!(got, want, "{ev:?}");
        assert_eq!(decode_input_at(&got).unwrap(), (ev.clone(), 0x1234_5678));
        assert_eq!(decode_input(&got).unwrap(), ev);
    }
}

#[test]
fn unknown_versions_are_named() {
    assert_eq!(
        decode_control(&[2, 0x22]),
        Err(WireError::Version { got: 2 })
    );
    assert_eq!(decode_video(&[0]), Err(WireError::Version { got: 0 }));
    assert_eq!(decode_input(&[]), Err(WireError::Empty));
}

#[test]
fn kinds_of_another_channel_are_refused() {
    let ping = bytes_of(|b| {
        ControlMessage::Ping {
            nonce: 1,
            sent_us: 1,
        }
        .encode(b)
    });
    assert!(matches!(
        decode_input(&ping),
        Err(WireError::UnknownKind {
            kind: 0x22,
            channel: Channel::Input
        })
    ));
    assert!(matches!(
        decode_video(&ping),
        Err(WireError::UnknownKind { .. })
    ));
}

#[test]
fn every_truncation_of_a_valid_message_is_a_clean_error() {
    let msgs = [
        bytes_of(|b| chunk(&[1, 2, 3]).encode(b)),
        bytes_of(|b| {
            ControlMessage::Pong {
                nonce: 1,
                echo_us: 2,
                target_us: 3,
            }
            .encode(b)
        }),
        bytes_of(|b| InputEvent::Text("hello".into()).encode(b)),
        bytes_of(|b| {
            InputEvent::Key {
                key: Key::Char('a'),
                down: true,
            }
            .encode(b)
        }),
    ];
    for (i, m) in msgs.iter().enumerate() {
        // A video chunk's payload length is implicit: a cut inside it is a shorter chunk,
        // which the reassembler catches because the lengths no longer add up.
        let end = if i == 0 {
            VIDEO_HEADER_LEN + 1
        } else {
            m.len()
        };
        for cut in 0..end {
            let part = &m[..cut];
            let ok = decode_video(part).is_ok()
                || decode_control(part).is_ok()
                || decode_input(part).is_ok();
            assert!(!ok, "a {cut}-byte prefix of {m:?} decoded");
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut m = bytes_of(|b| ControlMessage::Permissions { control: false }.encode(b));
    m.push(0);
    assert_eq!(decode_control(&m), Err(WireError::Trailing { extra: 1 }));
}

#[test]
fn video_chunks_with_impossible_geometry_are_refused() {
    let good = chunk(&[1, 2, 3]);
    let bad = [
        VideoChunk {
            chunk_index: 2,
            ..good
        },
        VideoChunk {
            chunk_count: 0,
            chunk_index: 0,
            ..good
        },
        VideoChunk {
            total_len: 0,
            ..good
        },
        VideoChunk {
            total_len: MAX_BAND_BYTES + 1,
            ..good
        },
        VideoChunk { offset: 8, ..good },
        VideoChunk {
            offset: u32::MAX,
            ..good
        },
        VideoChunk { band: 32, ..good },
        VideoChunk {
            payload: &[],
            ..good
        },
    ];
    for c in bad {
        let m = bytes_of(|b| c.encode(b));
        assert!(
            matches!(decode_video(&m), Err(WireError::Invalid { .. })),
            "{c:?}"
        );
    }
    let mut flags = bytes_of(|b| good.encode(b));
    flags[13] = 0x80;
    assert!(matches!(
        decode_video(&flags),
        Err(WireError::Invalid { field: "flags", .. })
    ));
}

#[test]
fn oversized_lengths_are_refused_before_allocating() {
    // A text claiming 65535 bytes with none present: refused on the length, not by reading.
    let m = [1, 0x34, 0, 0, 0, 0, 0xFF, 0xFF];
    assert!(matches!(
        decode_input(&m),
        Err(WireError::Invalid { field: "text", .. })
    ));
    let m = [1, 0x26, 0, 0xFF, 0xFF];
    assert!(matches!(
        decode_control(&m),
        Err(WireError::Invalid {
            field: "bye detail",
            ..
        })
    ));
    let m = [1, 0x20, 0, 0, 0, 1, 0, 1, 0, 200];
    assert!(matches!(
        decode_control(&m),
        Err(WireError::Invalid {
            field: "band count",
            ..
        })
    ));
}

#[test]
fn invalid_values_are_refused_with_the_field_name() {
    let cases: [(&[u8], &str); 5] = [
        (&[1, 0x31, 0, 0, 0, 0, 9, 1], "button"),
        (&[1, 0x31, 0, 0, 0, 0, 0, 2], "button state"),
        (&[1, 0x33, 0, 0, 0, 0, 0, 0, 0xD8, 0, 0, 1], "key"),
        (&[1, 0x33, 0, 0, 0, 0, 1, 200, 0, 0, 0, 1], "key"),
        (&[1, 0x34, 0, 0, 0, 0, 1, 0, 0xFF], "text"),
    ];
    for (m, field) in cases {
        match decode_input(m) {
            Err(WireError::Invalid { field: f, .. }) => assert_eq!(f, field, "{m:?}"),
            other => panic!("{m:?}: {other:?}"),
        }
    }
}

#[test]
fn long_text_is_cut_on_a_character_boundary_when_encoded() {
    let text = "é".repeat(MAX_TEXT_BYTES); // 2 bytes each
    let m = bytes_of(|b| InputEvent::Text(text).encode(b));
    match decode_input(&m).unwrap() {
        InputEvent::Text(t) => assert_eq!(t.len(), MAX_TEXT_BYTES),
        other => panic!("{other:?}"),
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_video(&data);
        let _ = decode_control(&data);
        let _ = decode_input(&data);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(kind in 0x10u8..0x40, data in proptest::collection::vec(any::<u8>(), 0..96)) {
        let mut m = vec![WIRE_VERSION, kind];
        m.extend_from_slice(&data);
        let _ = decode_video(&m);
        let _ = decode_control(&m);
        let _ = decode_input(&m);
    }

    #[test]
    fn pointer_and_wheel_events_round_trip(x in any::<i32>(), y in any::<i32>(), dx in any::<i16>(), dy in any::<i16>()) {
        for ev in [InputEvent::PointerMove { x, y }, InputEvent::Wheel { dx, dy }] {
            let m = bytes_of(|b| ev.encode(b));
            prop_assert_eq!(decode_input(&m).unwrap(), ev);
        }
    }

    #[test]
    fn text_round_trips(text in "\\PC{0,200}") {
        let ev = InputEvent::Text(text);
        let m = bytes_of(|b| ev.encode(b));
        prop_assert_eq!(decode_input(&m).unwrap(), ev);
    }
}

#[test]
fn an_oversized_grant_message_is_refused_before_reading_it() {
    let mut bytes = vec![1, 0x27, 1, 0, 0, 0];
    bytes.extend_from_slice(&((MAX_GRANT_JSON + 1) as u16).to_le_bytes());
    bytes.resize(bytes.len() + MAX_GRANT_JSON + 1, b'x');
    assert!(decode_control(&bytes).is_err());
    // Truncated: the length promises more than there is.
    assert!(decode_control(&[1, 0x28, 1, 0, 0, 0, 1, 9, 0, b'a']).is_err());
}

#[test]
fn only_video_chunks_go_to_the_decoder_from_the_video_channel() {
    let start = bytes_of(|b| {
        ControlMessage::StreamStart {
            stream: 3,
            width: 64,
            height: 64,
            color: ColorSpace::Bt709Limited,
            tops: vec![0],
        }
        .encode(b)
    });
    assert!(!is_video_chunk(&start));
    let video = bytes_of(|b| chunk(b"x").encode(b));
    assert!(is_video_chunk(&video));
    let position = bytes_of(|b| ControlMessage::CursorPosition(position()).encode(b));
    assert!(!is_video_chunk(&position));
    let mut other_version = video.clone();
    other_version[0] = WIRE_VERSION + 1;
    assert!(!is_video_chunk(&other_version));
    assert!(!is_video_chunk(&[]) && !is_video_chunk(&[WIRE_VERSION]));
}

fn position() -> CursorPosition {
    CursorPosition {
        sent_us: 0xdead_beef,
        serial: 9,
        x: -3,
        y: 1079,
        visible: true,
    }
}

fn shape(width: u16, height: u16, hot: (u16, u16)) -> CursorImage {
    CursorImage {
        serial: 0x0102_0304,
        width,
        height,
        hot_x: hot.0,
        hot_y: hot.1,
        rgba: (0..usize::from(width) * usize::from(height) * 4)
            .map(|i| i as u8)
            .collect(),
    }
}

#[test]
fn cursor_shapes_and_positions_round_trip_in_the_documented_layout() {
    let msg = ControlMessage::CursorShape(Arc::new(shape(3, 2, (1, 1))));
    let b = bytes_of(|b| msg.encode(b));
    assert_eq!(&b[..14], &[1, 0x2a, 4, 3, 2, 1, 3, 0, 2, 0, 1, 0, 1, 0]);
    assert_eq!(b.len(), 14 + 3 * 2 * 4);
    assert_eq!(decode_control(&b).unwrap(), msg);

    let msg = ControlMessage::CursorPosition(position());
    let b = bytes_of(|b| msg.encode(b));
    assert_eq!(b.len(), 19);
    assert_eq!(&b[..6], &[1, 0x2b, 0xef, 0xbe, 0xad, 0xde]);
    assert_eq!(&b[10..14], &(-3i32).to_le_bytes());
    assert_eq!(decode_control(&b).unwrap(), msg);
    let biggest = ControlMessage::CursorShape(Arc::new(shape(96, 96, (95, 95))));
    let b = bytes_of(|b| biggest.encode(b));
    assert!(
        b.len() < 64 * 1024,
        "fits the smallest message a peer accepts"
    );
    assert_eq!(decode_control(&b).unwrap(), biggest);
}

#[test]
fn impossible_cursor_shapes_are_refused() {
    let encode =
        |c: &CursorImage| bytes_of(|b| ControlMessage::CursorShape(Arc::new(c.clone())).encode(b));
    let too_big = shape(97, 4, (0, 0));
    let e = decode_control(&encode(&too_big)).unwrap_err().to_string();
    assert!(e.contains("97x4") && e.contains("1..=96"), "{e}");
    let e = decode_control(&encode(&shape(0, 4, (0, 0)))).unwrap_err();
    assert!(matches!(e, WireError::Invalid { .. }), "{e}");
    let e = decode_control(&encode(&shape(4, 4, (4, 0))))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hotspot"), "{e}");
    let mut short = encode(&shape(4, 4, (0, 0)));
    short.pop();
    assert!(matches!(
        decode_control(&short),
        Err(WireError::Truncated { .. })
    ));
    let mut long = encode(&shape(4, 4, (0, 0)));
    long.push(0);
    assert!(matches!(
        decode_control(&long),
        Err(WireError::Trailing { extra: 1 })
    ));
    let mut bad_flag = bytes_of(|b| ControlMessage::CursorPosition(position()).encode(b));
    bad_flag[18] = 2;
    assert!(decode_control(&bad_flag).is_err());
}
