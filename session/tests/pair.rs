//! The session cores over a simulated link in virtual time: liveness, clock alignment,
//! keyframe requests, control changes, grant requests and hostile bytes, each seconds of
//! protocol run in well under a millisecond of test.

use std::time::Duration;

use bytes::BytesMut;
use deskwire_engine::ColorSpace;
use deskwire_session::input::{InjectOp, InputEvent, InputRefusal, Key, PointerButton};
use deskwire_session::pair::{LinkConfig, Pair};
use deskwire_session::wire::{ByeReason, Channel, ControlMessage};
use deskwire_session::{
    AgentSessionConfig, AgentSessionEvent, SessionEnd, StreamInfo, ViewerSessionConfig,
    ViewerSessionEvent,
};

const MS: Duration = Duration::from_millis(1);

fn stream() -> StreamInfo {
    StreamInfo {
        stream: 7,
        width: 640,
        height: 480,
        color: ColorSpace::default(),
        tops: vec![0, 160, 320],
    }
}

fn link(delay_ms: u32) -> LinkConfig {
    LinkConfig {
        delay: delay_ms * MS,
        ..LinkConfig::default()
    }
}

fn pair(control: bool, down: LinkConfig, up: LinkConfig) -> Pair {
    Pair::new(
        AgentSessionConfig::default(),
        ViewerSessionConfig::default(),
        stream(),
        control,
        down,
        up,
    )
}

fn host_end(p: &Pair) -> Option<(Duration, SessionEnd)> {
    p.host_events.iter().find_map(|(t, e)| match e {
        AgentSessionEvent::Ended(end) => Some((*t, end.clone())),
        _ => None,
    })
}

fn viewer_end(p: &Pair) -> Option<(Duration, SessionEnd)> {
    p.viewer_events.iter().find_map(|(t, e)| match e {
        ViewerSessionEvent::Ended(end) => Some((*t, end.clone())),
        _ => None,
    })
}

fn injected(p: &Pair) -> Vec<InjectOp> {
    p.host_events
        .iter()
        .filter_map(|(_, e)| match e {
            AgentSessionEvent::Inject(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_viewer_learns_the_stream_and_its_permissions_one_way_delay_after_opening() {
    let mut p = pair(true, link(40), link(40));
    p.run_until(100 * MS);
    let started = p.viewer_events.iter().find_map(|(t, e)| match e {
        ViewerSessionEvent::StreamStarted { stream, layout, .. } => {
            Some((*t, *stream, layout.count(), layout.width()))
        }
        _ => None,
    });
    assert_eq!(started, Some((40 * MS, 7, 3, 640)));
    assert!(p
        .viewer_events
        .iter()
        .any(|(_, e)| *e == ViewerSessionEvent::Permissions { control: true }));
}

#[test]
fn pings_give_the_round_trip_and_the_target_clock_offset() {
    let mut p = pair(true, link(30), link(20));
    p.run_until(Duration::from_secs(3));
    assert_eq!(p.viewer.rtt(), Some(50 * MS));
    // Both cores count from the same instant here; the asymmetric path skews the midpoint
    // estimate by half the difference of the two directions (5 ms), as NTP's does.
    assert_eq!(p.viewer.clock_offset_us(), Some(-5_000));
    assert!(host_end(&p).is_none() && viewer_end(&p).is_none());
}

#[test]
fn a_viewer_that_goes_silent_ends_the_target_after_the_peer_timeout() {
    let mut up = link(10);
    up.outages = vec![(Duration::from_secs(2), Duration::from_secs(60))];
    let mut p = pair(true, link(10), up);
    p.run_until(Duration::from_secs(40));
    let (at, end) = host_end(&p).expect("the target ends the session");
    assert!(
        matches!(end, SessionEnd::PeerTimeout(d) if d > Duration::from_secs(30)),
        "{end:?}"
    );
    // The last ping got through at ~1 s (pings go out each second; the one at 2 s is lost).
    assert!(
        at > Duration::from_secs(31) && at < Duration::from_secs(32),
        "{at:?}"
    );
}

#[test]
fn an_outage_shorter_than_the_peer_timeout_keeps_the_session() {
    // 1.5 s dark: with a ping a second, the longest silence is 2.5 s, under the 3 s timeout.
    let outage = vec![(Duration::from_secs(2), Duration::from_millis(3_500))];
    let mut down = link(10);
    down.outages = outage.clone();
    let mut up = link(10);
    up.outages = outage;
    let mut p = pair(true, down, up);
    p.run_until(Duration::from_secs(10));
    assert_eq!(host_end(&p), None);
    assert_eq!(viewer_end(&p), None);
}

#[test]
fn a_target_that_goes_silent_ends_the_viewer_after_the_peer_timeout() {
    let mut down = link(10);
    down.outages = vec![(Duration::from_secs(1), Duration::from_secs(60))];
    let mut p = pair(true, down, link(10));
    p.run_until(Duration::from_secs(40));
    let (at, end) = viewer_end(&p).expect("the viewer ends the session");
    assert!(matches!(end, SessionEnd::PeerTimeout(_)), "{end:?}");
    assert!(
        at > Duration::from_secs(30) && at < Duration::from_secs(32),
        "{at:?}"
    );
    // Long before that, the technician was told the session is reconnecting.
    let told = p
        .viewer_events
        .iter()
        .find_map(|(t, e)| matches!(e, ViewerSessionEvent::Reconnecting).then_some(*t));
    assert!(told.is_some_and(|t| t < Duration::from_secs(4)), "{told:?}");
}

#[test]
fn keyframe_requests_reach_the_target_for_its_stream_and_bands_only() {
    let mut p = pair(true, link(5), link(5));
    // The stream's first keyframe left (what a driver reports when its last piece does).
    let now = p.now();
    p.host.handle_keyframes_sent(now, 0b111);
    p.run_until(20 * MS);
    p.viewer.request_keyframe(7, 0b1010); // band 3 does not exist
    p.viewer.request_keyframe(6, 0b1); // an old stream

    // Past the holdoff that follows the first keyframe.
    p.run_until(400 * MS);
    let asked: Vec<u32> = p
        .host_events
        .iter()
        .filter_map(|(_, e)| match e {
            AgentSessionEvent::KeyframeRequested { bands } => Some(*bands),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![0b0010]);
}

#[test]
fn a_request_before_the_streams_first_keyframe_left_waits_for_it() {
    let mut p = pair(true, link(300), link(300));
    p.run_until(20 * MS);
    // Nothing of the first keyframe has arrived yet on a 600 ms path: the viewer asks.
    p.viewer.request_keyframe(7, 0b10);
    p.run_until(1500 * MS);
    let asked = |p: &Pair| {
        p.host_events
            .iter()
            .filter(|(_, e)| matches!(e, AgentSessionEvent::KeyframeRequested { .. }))
            .count()
    };
    assert_eq!(asked(&p), 0, "the first keyframe is still on its way");
    // It left; a round trip and a little later the request stands.
    let now = p.now();
    p.host.handle_keyframes_sent(now, 0b111);
    p.run_until(now + 800 * MS);
    assert_eq!(asked(&p), 1);
}

#[test]
fn input_is_injected_with_control_and_refused_without() {
    let mut p = pair(false, link(5), link(5));
    p.viewer
        .send_input(p.now(), &InputEvent::PointerMove { x: 10, y: 10 });
    p.run_until(20 * MS);
    assert!(injected(&p).is_empty());
    assert!(p.host_events.iter().any(|(_, e)| matches!(
        e,
        AgentSessionEvent::InputRefused {
            reason: InputRefusal::ViewOnly,
            ..
        }
    )));

    p.host.set_control(true);
    p.viewer
        .send_input(p.now(), &InputEvent::PointerMove { x: 10_000, y: 20 });
    p.run_until(40 * MS);
    assert_eq!(injected(&p), vec![InjectOp::MoveTo { x: 639, y: 20 }]);
    assert!(p
        .viewer_events
        .iter()
        .any(|(t, e)| *t > 20 * MS && *e == ViewerSessionEvent::Permissions { control: true }));
}

#[test]
fn revoking_control_releases_what_the_viewer_holds_and_tells_it() {
    let mut p = pair(true, link(5), link(5));
    p.viewer.send_input(
        p.now(),
        &InputEvent::Key {
            key: Key::Char('a'),
            down: true,
        },
    );
    p.viewer.send_input(
        p.now(),
        &InputEvent::Button {
            button: PointerButton::Left,
            down: true,
        },
    );
    p.run_until(20 * MS);
    assert_eq!(injected(&p).len(), 2);
    p.host.set_control(false);
    p.run_until(40 * MS);
    let released = p.host_events.iter().find_map(|(_, e)| match e {
        AgentSessionEvent::Release(ops) => Some(ops.clone()),
        _ => None,
    });
    let released = released.expect("held input is released");
    assert!(released.contains(&InjectOp::Key {
        key: Key::Char('a'),
        down: false
    }));
    assert!(released.contains(&InjectOp::Button {
        button: PointerButton::Left,
        down: false
    }));
    assert_eq!(
        p.viewer_events.last().map(|(_, e)| e.clone()),
        Some(ViewerSessionEvent::Permissions { control: false })
    );
}

#[test]
fn a_link_that_goes_quiet_releases_held_keys_long_before_the_session_times_out() {
    let mut up = link(5);
    up.outages = vec![(100 * MS, Duration::from_secs(60))];
    let mut p = pair(true, link(5), up);
    p.viewer.send_input(
        p.now(),
        &InputEvent::Key {
            key: Key::Char('x'),
            down: true,
        },
    );
    p.run_until(Duration::from_secs(40));
    let release_at = p.host_events.iter().find_map(|(t, e)| match e {
        AgentSessionEvent::Release(ops)
            if ops.contains(&InjectOp::Key {
                key: Key::Char('x'),
                down: false,
            }) =>
        {
            Some(*t)
        }
        _ => None,
    });
    // Released when the link went quiet (2.5 s after the last word), not at the end.
    let down_at = p
        .host_events
        .iter()
        .find_map(|(t, e)| matches!(e, AgentSessionEvent::LinkDown).then_some(*t));
    assert_eq!(release_at, down_at);
    assert!(
        release_at.is_some_and(|t| t < Duration::from_secs(3)),
        "{release_at:?}"
    );
    let (end_at, _) = host_end(&p).unwrap();
    assert!(end_at > Duration::from_secs(30));
}

#[test]
fn goodbye_ends_both_sides_with_the_reason() {
    let mut p = pair(true, link(15), link(15));
    p.run_until(100 * MS);
    p.viewer.close("the technician ended the session");
    p.run_until(200 * MS);
    assert_eq!(viewer_end(&p).map(|e| e.1), Some(SessionEnd::Local));
    assert_eq!(
        host_end(&p),
        Some((
            115 * MS,
            SessionEnd::PeerBye {
                reason: ByeReason::Ended,
                detail: "the technician ended the session".into()
            }
        ))
    );
}

#[test]
fn a_grant_request_is_raised_at_the_target_and_its_answer_reaches_the_viewer() {
    let mut p = pair(true, link(5), link(5));
    p.viewer.request_grant(3, "{\"days\":1}".into());
    p.run_until(20 * MS);
    assert!(p.host_events.iter().any(|(_, e)| *e
        == AgentSessionEvent::GrantRequested {
            id: 3,
            request: "{\"days\":1}".into()
        }));
    p.host.send_control(ControlMessage::GrantAnswer {
        id: 3,
        approved: false,
        detail: "no".into(),
    });
    p.run_until(40 * MS);
    assert!(p.viewer_events.iter().any(|(_, e)| *e
        == ViewerSessionEvent::GrantAnswered {
            id: 3,
            approved: false,
            detail: "no".into()
        }));
}

#[test]
fn reliable_messages_survive_loss_as_delay_and_arrive_in_order() {
    let mut up = link(10);
    up.loss = 0.3;
    up.seed = 99;
    let mut p = pair(true, link(10), up);
    for i in 0..20 {
        p.viewer
            .send_input(p.now(), &InputEvent::PointerMove { x: i, y: 0 });
    }
    p.run_until(Duration::from_secs(2));
    let xs: Vec<i32> = injected(&p)
        .into_iter()
        .map(|op| match op {
            InjectOp::MoveTo { x, .. } => x,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(xs, (0..20).collect::<Vec<_>>());
}

#[test]
fn hostile_bytes_are_refused_without_ending_the_session() {
    let mut p = pair(true, link(5), link(5));
    for junk in [
        &b""[..],
        b"\x01",
        b"\xff\xff\xff",
        b"\x01\x20\x00\x00\x00\x00",
        &[1u8; 200][..],
    ] {
        p.host.handle_message(p.now(), Channel::Control, junk);
        p.host.handle_message(p.now(), Channel::Input, junk);
        p.viewer.handle_message(p.now(), Channel::Control, junk);
    }
    p.run_until(Duration::from_secs(2));
    assert_eq!(host_end(&p), None);
    assert_eq!(viewer_end(&p), None);
    assert!(p.host_events.iter().any(|(_, e)| matches!(
        e,
        AgentSessionEvent::InputRefused {
            reason: InputRefusal::Malformed,
            ..
        }
    )));
}

#[test]
fn an_impossible_stream_ends_the_viewer_with_the_reason() {
    let mut p = pair(true, link(5), link(5));
    p.run_until(20 * MS);
    let mut bad = BytesMut::new();
    ControlMessage::StreamStart {
        stream: 8,
        width: 640,
        height: 480,
        color: ColorSpace::default(),
        tops: vec![0, 7, 3],
    }
    .encode(&mut bad);
    p.viewer.handle_message(p.now(), Channel::Control, &bad);
    p.run_until(40 * MS);
    assert!(matches!(
        viewer_end(&p),
        Some((_, SessionEnd::ProtocolViolation(_)))
    ));
}

/// A `len`-byte message the viewer takes for a video chunk (the version and the chunk
/// kind; the rest zeros): what the link carries is what these tests look at.
fn video(len: usize) -> BytesMut {
    let mut b = BytesMut::zeroed(len);
    b[0] = deskwire_session::wire::WIRE_VERSION;
    b[1] = 0x10;
    assert!(deskwire_session::wire::is_video_chunk(&b));
    b
}

#[test]
fn video_is_counted_by_the_viewer_and_lost_video_is_gone() {
    let mut down = link(5);
    down.loss = 0.5;
    down.seed = 7;
    let mut p = pair(true, down, link(5));
    for _ in 0..100 {
        p.send_video(video(1000));
    }
    p.run_until(Duration::from_millis(100));
    let (_, lost) = p.down_counts();
    assert!(lost > 20 && lost < 80, "{lost} of 100 lost");
    assert_eq!(p.viewer.bytes_received(), (100 - lost) * 1000);
}

#[test]
fn a_rate_limited_link_spaces_messages_by_their_size() {
    let mut down = link(0);
    down.rate_bps = Some(8_000_000); // 1 byte per microsecond
    let mut p = pair(true, down, link(0));
    p.run_until(10 * MS);
    let before = p.viewer.bytes_received();
    for _ in 0..10 {
        p.send_video(video(10_000)); // 10 ms each
    }
    p.run_until(10 * MS + 55 * MS);
    assert_eq!(p.viewer.bytes_received() - before, 50_000);
    p.run_until(10 * MS + 101 * MS);
    assert_eq!(p.viewer.bytes_received() - before, 100_000);
}

#[test]
fn statistics_are_reported_each_second_on_both_sides() {
    let mut p = pair(true, link(5), link(5));
    p.host.handle_video_sent(30, 125_000, 0);
    p.viewer.handle_decoded(30, Some(20 * MS), Some(40 * MS));
    p.run_until(Duration::from_millis(1_500));
    let host = p.host_events.iter().find_map(|(_, e)| match e {
        AgentSessionEvent::Stats(s) => Some(s.clone()),
        _ => None,
    });
    let host = host.expect("target statistics");
    assert!(
        (host.fps - 30.0).abs() < 1e-6 && (host.kbps - 1000.0).abs() < 1e-6,
        "{host:?}"
    );
    let viewer = p.viewer_events.iter().find_map(|(_, e)| match e {
        ViewerSessionEvent::Stats(s) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(viewer.expect("viewer statistics").frames_decoded, 30);
    // The viewer's report reached the target and shows in its next statistics.
    p.run_until(Duration::from_millis(2_500));
    let last = p.host_events.iter().rev().find_map(|(_, e)| match e {
        AgentSessionEvent::Stats(s) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(last.unwrap().viewer_latency_p50, Some(20 * MS));
}

#[test]
fn input_held_up_by_an_outage_is_refused_as_stale_but_its_releases_still_go_through() {
    let mut up = link(10);
    up.outages = vec![(Duration::from_secs(2), Duration::from_millis(3_600))];
    let mut p = pair(true, link(10), up);
    p.run_until(Duration::from_millis(1_500)); // pings teach the target the usual lateness
    let x = Key::Char('x');
    p.viewer
        .send_input(p.now(), &InputEvent::Key { key: x, down: true });
    p.run_until(Duration::from_millis(2_100));
    // Sent in the dark; they arrive 3 s late, at the first retransmission after the link
    // returned (at 2.3, 2.7, 3.5 s in the dark, then 5.1 s).
    p.viewer.send_input(
        p.now(),
        &InputEvent::Key {
            key: x,
            down: false,
        },
    );
    p.viewer
        .send_input(p.now(), &InputEvent::PointerMove { x: 5, y: 5 });
    p.run_until(Duration::from_millis(5_500));
    // Once the link is back, fresh input is acted on again.
    p.viewer
        .send_input(p.now(), &InputEvent::PointerMove { x: 7, y: 7 });
    p.run_until(Duration::from_millis(5_600));
    assert_eq!(
        injected(&p),
        vec![
            InjectOp::Key { key: x, down: true },
            InjectOp::Key {
                key: x,
                down: false
            },
            InjectOp::MoveTo { x: 7, y: 7 },
        ]
    );
    let stale = p.host_events.iter().filter(|(_, e)| {
        matches!(
            e,
            AgentSessionEvent::InputRefused {
                reason: InputRefusal::Stale,
                ..
            }
        )
    });
    assert_eq!(stale.count(), 1);
    assert_eq!(host_end(&p), None);
}

#[test]
fn a_restart_announced_on_both_channels_starts_the_stream_once_and_an_older_one_changes_nothing() {
    let mut v =
        deskwire_session::ViewerSession::new(ViewerSessionConfig::default(), Duration::ZERO);
    let start = |stream: u16, bands: u32| {
        let mut b = BytesMut::new();
        ControlMessage::StreamStart {
            stream,
            width: 640,
            height: 360,
            color: ColorSpace::Bt709Limited,
            tops: (0..bands).map(|i| i * 128).collect(),
        }
        .encode(&mut b);
        b
    };
    let mut started = Vec::new();
    let mut deliver = |v: &mut deskwire_session::ViewerSession, ch: Channel, data: &[u8]| {
        v.handle_message(Duration::ZERO, ch, data);
        while let Some(e) = v.poll_event() {
            if let ViewerSessionEvent::StreamStarted { stream, layout, .. } = e {
                started.push((stream, layout.count()));
            }
        }
    };
    deliver(&mut v, Channel::Control, &start(1, 3));
    // The restart's copy on the video channel overtakes the one on the control channel.
    deliver(&mut v, Channel::Video, &start(2, 1));
    deliver(&mut v, Channel::Control, &start(2, 1));
    // A stream announced twice in a row, the older one last: still stream 3.
    deliver(&mut v, Channel::Video, &start(3, 3));
    deliver(&mut v, Channel::Control, &start(2, 1));
    assert_eq!(started, vec![(1, 3), (2, 1), (3, 3)]);
    assert_eq!(v.stream(), Some(3));
}

#[test]
fn the_pointer_reaches_the_viewer_with_its_shape_and_its_last_position_survives_a_loss() {
    use deskwire_capture::{CursorImage, PointerState};
    use std::sync::Arc;
    let at = |x: i32, shape: bool| PointerState {
        x,
        y: 20,
        visible: true,
        serial: 4,
        shape: shape.then(|| {
            Arc::new(CursorImage {
                serial: 4,
                width: 1,
                height: 1,
                hot_x: 0,
                hot_y: 0,
                rgba: vec![1, 2, 3, 255],
            })
        }),
    };
    // The link to the viewer goes dark from 100 to 160 ms, and lost video is not resent.
    let down = LinkConfig {
        outages: vec![(100 * MS, 160 * MS)],
        video_resend_after: None,
        ..link(5)
    };
    let mut p = pair(true, down, link(5));
    p.run_until(10 * MS);
    p.host.handle_pointer(10 * MS, &at(10, true));
    p.run_until(40 * MS);
    let cursor = |p: &Pair| {
        p.viewer_events.iter().rev().find_map(|(_, e)| match e {
            ViewerSessionEvent::Cursor(c) => Some(c.clone()),
            _ => None,
        })
    };
    let c = cursor(&p).expect("the pointer arrived");
    assert_eq!((c.x, c.y), (10, 20));
    assert_eq!(c.shape.map(|s| s.rgba.clone()), Some(vec![1, 2, 3, 255]));

    // The last position of a move is lost in the dark: the resend brings it.
    p.run_until(110 * MS);
    p.host.handle_pointer(110 * MS, &at(300, false));
    p.run_until(300 * MS);
    assert_eq!(cursor(&p).map(|c| c.x), Some(10), "lost on the way");
    p.run_until(400 * MS);
    assert_eq!(cursor(&p).map(|c| c.x), Some(300), "sent again and shown");
}

#[test]
fn feedback_on_the_unordered_video_channel_steers_the_rate() {
    let mut p = pair(false, link(10), link(10));
    p.run_until(100 * MS);
    let before = p.host.rate_target().estimate_bps;
    // A viewer whose path queues 300 ms while 1 Mbit/s arrives (after the start's burst
    // grace): the rate comes down.
    for i in 1..=10u32 {
        let fb = ControlMessage::Feedback(deskwire_session::wire::Feedback {
            interval_us: 100_000,
            bytes: 12_500,
            received: 100,
            lost: 0,
            queue_delay_us: 300_000,
            highest_seq: i * 100,
            rtt_us: 20_000,
        });
        let mut data = BytesMut::new();
        fb.encode(&mut data);
        p.host
            .handle_message(2_000 * MS + i * 100 * MS, Channel::Video, &data);
    }
    let after = p.host.rate_target().estimate_bps;
    assert!(after < before / 2, "{before} -> {after}");
    assert!(p
        .host_events
        .iter()
        .all(|(_, e)| !matches!(e, AgentSessionEvent::Ended(_))));
}

#[test]
fn a_reconnecting_viewer_pings_twenty_times_a_second_on_the_unordered_video_channel() {
    let mut v =
        deskwire_session::ViewerSession::new(ViewerSessionConfig::default(), Duration::ZERO);
    // Video arrives, then the link goes dark: nothing more is heard.
    v.handle_message(Duration::ZERO, Channel::Video, &video(100));
    let mut reconnecting = None;
    let mut pings = Vec::new();
    let mut now = Duration::ZERO;
    while now < Duration::from_secs(8) {
        v.handle_timeout(now);
        while let Some(e) = v.poll_event() {
            if e == ViewerSessionEvent::Reconnecting {
                reconnecting.get_or_insert(now);
            }
        }
        while let Some(t) = v.poll_transmit() {
            if let Ok(ControlMessage::Ping { .. }) = deskwire_session::wire::decode_control(&t.data)
            {
                pings.push((now, t.channel));
            }
        }
        now += MS;
    }
    let reconnecting = reconnecting.expect("the viewer says it is reconnecting");
    assert!(v.ended().is_none());
    let after: Vec<_> = pings.iter().filter(|(t, _)| *t >= reconnecting).collect();
    // Over 5 s dark: the link's return is heard within 50 ms of it. A ping on the
    // ordered control channel would wait behind the lost ones until SCTP's backed-off
    // retransmission.
    assert!(after.len() >= 100, "{} pings: {pings:?}", after.len());
    assert!(after.iter().all(|(_, c)| *c == Channel::Video), "{after:?}");
    assert!(
        after.windows(2).all(|w| w[1].0 - w[0].0 <= 50 * MS),
        "{after:?}"
    );
    // Before the silence counted as an outage, pings go the usual way, once a second.
    let before: Vec<_> = pings.iter().filter(|(t, _)| *t < reconnecting).collect();
    assert!(
        before.iter().all(|(_, c)| *c == Channel::Control),
        "{before:?}"
    );
    assert!(before.len() <= 4, "{before:?}");
}
