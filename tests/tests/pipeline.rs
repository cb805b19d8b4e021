//! The threaded pipeline end to end: synthetic scenes and a real X server.
//!
//! Tests in this file run one at a time: one of them counts the process's threads.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deskwire_capture::synthetic::Scene;
use deskwire_capture::{open, OpenOptions, Rect, SourceSpec};
use deskwire_engine::stats::read;
use deskwire_engine::{
    BandDecoderSet, BandId, BandSpec, CodecConfig, ConfigError, Pipeline, PipelineConfig,
    PipelineError as Error,
};
use deskwire_tests::{Painter, Scene as Known, Xvfb};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn synthetic(scene: Scene, hints: bool) -> Box<dyn deskwire_capture::Source> {
    let opts = OpenOptions {
        width: 640,
        height: 360,
        synthetic_hints: hints,
        ..OpenOptions::default()
    };
    open(&SourceSpec::Synthetic(scene), &opts).unwrap()
}

/// Poll `cond` until it holds or `limit` passes; the pipeline runs on its own threads.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    cond()
}

/// Names of this process's threads that deskwire started.
fn deskwire_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
            if name.starts_with("deskwire-") {
                names.push(name.trim().to_string());
            }
        }
    }
    names
}

#[test]
fn static_screen_yields_exactly_one_encoded_frame() {
    let _g = serial();
    for hints in [true, false] {
        let config = PipelineConfig::default().capture_fps(Some(240));
        let p = Pipeline::start(synthetic(Scene::Static, hints), config).unwrap();
        let s = p.stats();
        let looked = || read(&s.frames_unchanged_at_source) + read(&s.frames_unchanged_after_diff);
        assert!(
            wait_until(Duration::from_secs(20), || looked() >= 40),
            "hints: {hints}"
        );
        let frames: Vec<_> = p.output().try_iter().collect();
        assert_eq!(frames.len(), 1, "hints: {hints}");
        assert!(frames[0].bands.iter().all(|b| b.keyframe));
        assert_eq!(read(&s.frames_encoded), 1);
        p.shutdown().unwrap();
    }
}

#[test]
fn shutdown_joins_every_thread_it_started() {
    let _g = serial();
    let before = deskwire_threads();
    let config = PipelineConfig::default().encoder_threads(2);
    let p = Pipeline::start(synthetic(Scene::Video, true), config).unwrap();
    assert!(p.output().recv_timeout(Duration::from_secs(10)).is_ok());
    let during = deskwire_threads();
    for name in [
        "deskwire-captur",
        "deskwire-encode",
        "deskwire-band-0",
        "deskwire-band-1",
    ] {
        assert!(
            during.iter().any(|n| n == name),
            "{name} missing from {during:?}"
        );
    }
    p.shutdown().unwrap();
    assert_eq!(deskwire_threads(), before);
}

#[test]
fn a_slow_consumer_does_not_hold_capture_back() {
    let _g = serial();
    let config = PipelineConfig::default().capture_fps(None).output_depth(1);
    let p = Pipeline::start(synthetic(Scene::Video, true), config).unwrap();
    let s = p.stats();
    // Nobody reads the output: the encoder soon waits, while capture keeps replacing the
    // waiting frame with a newer one.
    // Wait for both: the output full (the first keyframes can take a while) and capture
    // having replaced the waiting frame several times since.
    assert!(wait_until(Duration::from_secs(20), || p.output().is_full()));
    let superseded = read(&s.frames_superseded);
    let more = || read(&s.frames_superseded) >= superseded + 10;
    assert!(wait_until(Duration::from_secs(20), more));
    assert!(
        read(&s.frames_encoded) <= 2 + 1,
        "encoder should be blocked on the full output"
    );
    // The newest picture still gets through once the consumer reads again.
    let drained: Vec<_> = p.output().try_iter().collect();
    assert!(!drained.is_empty());
    assert!(p.output().recv_timeout(Duration::from_secs(10)).is_ok());
    p.shutdown().unwrap();
}

#[test]
fn a_keyframe_request_is_served_on_a_static_screen() {
    let _g = serial();
    let codec = CodecConfig::default().bands(BandSpec::Count(4));
    let p = Pipeline::start(
        synthetic(Scene::Static, true),
        PipelineConfig::default().codec(codec),
    )
    .unwrap();
    let first = p.output().recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first.bands.len(), 4);
    p.request_keyframe(Some(BandId(1)));
    let refresh = p.output().recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(refresh.bands.len(), 1);
    assert_eq!(
        (refresh.bands[0].band, refresh.bands[0].keyframe),
        (BandId(1), true)
    );
    p.shutdown().unwrap();
}

#[test]
fn invalid_settings_are_refused_before_any_thread_starts() {
    let _g = serial();
    let before = deskwire_threads();
    let codec = CodecConfig::default().bands(BandSpec::Count(40));
    let e = Pipeline::start(
        synthetic(Scene::Typing, true),
        PipelineConfig::default().codec(codec),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Config(ConfigError::BandCount { count: 40, .. })),
        "{e}"
    );
    assert!(e.to_string().contains("expected 1..=23"), "{e}");
    assert_eq!(deskwire_threads(), before);
}

#[test]
fn x11_pipeline_streams_the_screen_and_stops_cleanly_when_the_server_dies() {
    let _g = serial();
    let xvfb = Xvfb::start(640, 480).unwrap();
    let scene = Known::known(640, 480);
    scene.draw(&xvfb.display()).unwrap();
    let source = open(
        &SourceSpec::X11,
        &OpenOptions {
            display: Some(xvfb.display()),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let config = PipelineConfig::default();
    let codec = config.codec.clone();
    let p = Pipeline::start(source, config).unwrap();
    assert_eq!(p.source_name(), "x11");
    let mut viewer = BandDecoderSet::new(640, 480, codec.bands, codec.color).unwrap();
    let show = |viewer: &mut BandDecoderSet, f: deskwire_engine::EncodedFrame| {
        for b in &f.bands {
            viewer.decode(b.band, &b.data).unwrap().unwrap();
        }
    };
    show(
        &mut viewer,
        p.output().recv_timeout(Duration::from_secs(10)).unwrap(),
    );

    // What the viewer shows matches what the X server shows, to codec precision: check the
    // centre of every rectangle and of the background.
    let close = |got: [u8; 4], rgb: u32| {
        let want = deskwire_tests::bgr(rgb);
        got[..3].iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 12)
    };
    let check = |viewer: &BandDecoderSet, scene: &Known| {
        for (r, rgb) in &scene.rects {
            let (x, y) = (r.x + r.w / 2, r.y + r.h / 2);
            let got = viewer.canvas().pixel(x, y);
            assert!(
                close(got, scene.rgb_at(x, y)),
                "at ({x},{y}): {got:?} vs {rgb:06x}"
            );
        }
        assert!(close(viewer.canvas().pixel(600, 300), scene.background));
    };
    check(&viewer, &scene);

    // A change on the screen reaches the viewer, and encodes only the bands it touches.
    let mut changed = scene.clone();
    changed
        .rects
        .push((Rect::new(400, 300, 48, 32), 0xff_ff_00));
    Painter::connect(&xvfb.display())
        .unwrap()
        .fill(Rect::new(400, 300, 48, 32), 0xff_ff_00)
        .unwrap();
    let f = p.output().recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        f.bands.len() < p.layout().count(),
        "only touched bands: {}",
        f.bands.len()
    );
    show(&mut viewer, f);
    check(&viewer, &changed);

    // The X server going away ends the pipeline with a capture error, not a hang or panic.
    drop(xvfb);
    let stopped = wait_until(Duration::from_secs(10), || !p.is_running());
    assert!(stopped, "pipeline still running after its X server died");
    match p.shutdown() {
        Err(Error::Capture(_)) => {}
        other => panic!("expected a capture error, got {other:?}"),
    }
}
