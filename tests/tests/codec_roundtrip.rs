//! Real H.264 through the band encoders and decoders, on every synthetic scene.
//!
//! Frames are fed in virtual time (16.7 ms apart), so the rate controller sees 60 fps however
//! fast the test machine runs.

use std::sync::Arc;

use deskwire_capture::synthetic::{Scene, SyntheticSource};
use deskwire_capture::{CaptureOutcome, Frame, Rect, Source, Timestamp};
use deskwire_engine::quality::psnr_plane;
use deskwire_engine::{
    BandDecoderSet, BandEncoderSet, BandId, BandSpec, CodecConfig, CodecError, ColorSpace,
    ContentTuning, FrameEncoder, FrameOutcome, I420Image, Workers,
};

const W: u32 = 640;
const H: u32 = 360;
const FRAME_US: u64 = 16_667;

struct Outcome {
    encoded_frames: usize,
    worst_band_psnr: f64,
    canvas_rgb_psnr: f64,
}

/// PSNR over the B, G, R bytes of two frames.
fn rgb_psnr(a: &Frame, b: &Frame) -> f64 {
    let strip = |f: &Frame| -> Vec<u8> {
        f.data()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect()
    };
    let (a, b) = (strip(a), strip(b));
    psnr_plane(&a, a.len(), &b, b.len(), a.len(), 1)
}

/// Capture, diff, convert, encode and decode `frames` frames of `scene`, checking every
/// decoded band against the encoder's input.
fn round_trip(scene: Scene, bands: u32, frames: u64, hints: bool) -> Outcome {
    let mut source = SyntheticSource::new(scene, W, H, 42)
        .unwrap()
        .with_hints(hints);
    let codec = CodecConfig::default().bands(BandSpec::Count(bands));
    let workers = Arc::new(Workers::new(2).unwrap());
    let mut core = FrameEncoder::new(W, H, &codec, Some(workers)).unwrap();
    let mut dec = BandDecoderSet::new(W, H, codec.bands, codec.color).unwrap();
    let (mut prev, mut cur) = (source.alloc_frame().unwrap(), source.alloc_frame().unwrap());
    let mut first = true;
    let (mut encoded_frames, mut worst) = (0, f64::INFINITY);
    for i in 0..frames {
        let now = Timestamp::from_micros(i * FRAME_US);
        if source.capture(&mut cur, now).unwrap() == CaptureOutcome::Unchanged {
            continue;
        }
        let reference = (!first).then_some(&prev);
        let FrameOutcome::Changed(out) = core.handle_frame(reference, &cur).unwrap() else {
            continue;
        };
        if let Some(frame) = out {
            encoded_frames += 1;
            if first {
                assert_eq!(
                    frame.bands.len(),
                    bands as usize,
                    "the first frame carries every band"
                );
                assert!(
                    frame.bands.iter().all(|b| b.keyframe),
                    "and every band starts with a keyframe"
                );
            }
            for b in &frame.bands {
                let d = dec
                    .decode(b.band, &b.data)
                    .unwrap()
                    .expect("every access unit decodes to a picture");
                let src = &core.image().y_plane()[(d.top * W) as usize..];
                let p = psnr_plane(
                    d.y(),
                    d.y_stride(),
                    src,
                    W as usize,
                    W as usize,
                    d.height as usize,
                );
                worst = worst.min(p);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
        first = false;
    }
    Outcome {
        encoded_frames,
        worst_band_psnr: worst,
        canvas_rgb_psnr: rgb_psnr(dec.canvas(), &prev),
    }
}

#[test]
fn every_scene_round_trips_above_35_db_with_one_band_and_many() {
    for scene in Scene::ALL {
        for bands in [1, 3, 8] {
            let o = round_trip(scene, bands, 40, true);
            assert!(
                o.worst_band_psnr >= 35.0,
                "{scene} with {bands} bands: worst band Y-PSNR {:.1} dB",
                o.worst_band_psnr
            );
            // The reassembled BGRA picture must match the screen; 4:2:0 alone caps RGB PSNR
            // near 30 dB on text, while a misplaced band would fall far below 20.
            assert!(
                o.canvas_rgb_psnr >= 24.0,
                "{scene} with {bands} bands: canvas RGB PSNR {:.1} dB",
                o.canvas_rgb_psnr
            );
        }
    }
}

#[test]
fn static_scene_encodes_only_its_first_frame_with_or_without_hints() {
    for hints in [true, false] {
        let o = round_trip(Scene::Static, 4, 30, hints);
        assert_eq!(o.encoded_frames, 1, "hints: {hints}");
        assert!(o.worst_band_psnr.min(99.0) >= 35.0);
    }
}

#[test]
fn moving_scenes_encode_every_frame() {
    for scene in [Scene::Typing, Scene::Scroll, Scene::Video, Scene::Drag] {
        assert_eq!(
            round_trip(scene, 4, 20, false).encoded_frames,
            20,
            "{scene}"
        );
    }
}

#[test]
fn typing_encodes_only_the_bands_it_touches() {
    let mut source = SyntheticSource::new(Scene::Typing, W, H, 1).unwrap();
    let codec = CodecConfig::default().bands(BandSpec::Count(8));
    let mut enc = BandEncoderSet::new(W, H, &codec, None).unwrap();
    let mut image = I420Image::new(W, H);
    let mut f = source.alloc_frame().unwrap();
    source.capture(&mut f, Timestamp::default()).unwrap();
    image.convert_all(&f, codec.color).unwrap();
    enc.mark_damaged(&[Rect::new(0, 0, W, H)]);
    assert_eq!(
        enc.encode(&image, Timestamp::default())
            .unwrap()
            .unwrap()
            .bands
            .len(),
        8
    );
    let mut per_frame = Vec::new();
    for i in 1..30 {
        source
            .capture(&mut f, Timestamp::from_micros(i * FRAME_US))
            .unwrap();
        let hint = f.damage().hint().unwrap().to_vec();
        image.convert_rects(&f, &hint, codec.color).unwrap();
        enc.mark_damaged(&hint);
        let out = enc
            .encode(&image, Timestamp::from_micros(i * FRAME_US))
            .unwrap()
            .unwrap();
        per_frame.push(out.bands.len());
    }
    assert!(
        per_frame.iter().all(|&n| n <= 2),
        "a glyph touches at most two bands: {per_frame:?}"
    );
}

#[test]
fn an_unchanged_picture_is_not_encoded_and_a_keyframe_request_refreshes_one_band() {
    let codec = CodecConfig::default().bands(BandSpec::Count(4));
    let mut enc = BandEncoderSet::new(W, H, &codec, None).unwrap();
    let mut source = SyntheticSource::new(Scene::Drag, W, H, 3).unwrap();
    let mut f = source.alloc_frame().unwrap();
    source.capture(&mut f, Timestamp::default()).unwrap();
    let mut image = I420Image::new(W, H);
    image.convert_all(&f, codec.color).unwrap();
    let first = enc.encode(&image, Timestamp::default()).unwrap().unwrap();
    assert!(enc
        .encode(&image, Timestamp::from_micros(FRAME_US))
        .unwrap()
        .is_none());

    enc.request_keyframe(Some(BandId(2))).unwrap();
    let refresh = enc
        .encode(&image, Timestamp::from_micros(2 * FRAME_US))
        .unwrap()
        .unwrap();
    assert_eq!(refresh.bands.len(), 1);
    assert_eq!(refresh.bands[0].band, BandId(2));
    assert!(refresh.bands[0].keyframe);
    // A viewer that joins late needs nothing but that keyframe to show the band.
    let mut late = BandDecoderSet::new(W, H, codec.bands, codec.color).unwrap();
    assert!(late
        .decode(BandId(2), &refresh.bands[0].data)
        .unwrap()
        .is_some());
    assert!(first.id < refresh.id);
    assert!(matches!(
        enc.request_keyframe(Some(BandId(9))),
        Err(CodecError::NoSuchBand { band: 9, count: 4 })
    ));
}

#[test]
fn bad_bitstreams_are_errors_or_nothing_never_a_panic() {
    let codec = CodecConfig::default().bands(BandSpec::Count(2));
    let mut dec = BandDecoderSet::new(W, H, codec.bands, ColorSpace::default()).unwrap();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for len in (0..2000).step_by(37) {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = dec.decode(BandId(0), &junk);
        // Junk behind a start code reaches the NAL parser proper.
        let mut nal = vec![0, 0, 0, 1, 0x67];
        nal.extend_from_slice(&junk);
        let _ = dec.decode(BandId(1), &nal);
    }
    assert!(matches!(
        dec.decode(BandId(7), &[0, 0, 0, 1]),
        Err(CodecError::NoSuchBand { band: 7, count: 2 })
    ));

    // A valid stream of another size is refused by name, not painted out of bounds.
    let other = CodecConfig::default().bands(BandSpec::Count(1));
    let mut enc = BandEncoderSet::new(320, 180, &other, None).unwrap();
    let mut f = Frame::new(320, 180);
    f.data_mut().fill(90);
    let mut img = I420Image::new(320, 180);
    img.convert_all(&f, other.color).unwrap();
    let au = enc.encode(&img, Timestamp::default()).unwrap().unwrap();
    let mut fresh = BandDecoderSet::new(W, H, codec.bands, ColorSpace::default()).unwrap();
    let e = fresh.decode(BandId(0), &au.bands[0].data).unwrap_err();
    assert!(matches!(e, CodecError::WrongSize { .. }), "{e}");
}

/// The scroll scene fed to band encoders in virtual time, and the viewer's decoders.
struct ScrollRig {
    codec: CodecConfig,
    enc: BandEncoderSet,
    source: SyntheticSource,
    f: Frame,
    image: I420Image,
    dec: BandDecoderSet,
}

impl ScrollRig {
    fn new(bands: u32, seed: u64) -> Self {
        let codec = CodecConfig::default().bands(BandSpec::Count(bands));
        let mut source = SyntheticSource::new(Scene::Scroll, W, H, seed).unwrap();
        Self {
            enc: BandEncoderSet::new(W, H, &codec, None).unwrap(),
            f: source.alloc_frame().unwrap(),
            source,
            image: I420Image::new(W, H),
            dec: BandDecoderSet::new(W, H, codec.bands, codec.color).unwrap(),
            codec,
        }
    }

    /// Capture frame `i` of the scene and encode it whole.
    fn encode(&mut self, i: u64) -> deskwire_engine::EncodedFrame {
        let t = Timestamp::from_micros(i * FRAME_US);
        self.source.capture(&mut self.f, t).unwrap();
        self.image.convert_all(&self.f, self.codec.color).unwrap();
        self.enc.mark_damaged(&[Rect::new(0, 0, W, H)]);
        self.enc.encode(&self.image, t).unwrap().unwrap()
    }
}

#[test]
fn a_new_band_layout_starts_with_keyframes_and_the_viewer_keeps_the_picture_until_they_land() {
    let mut rig = ScrollRig::new(8, 5);
    for i in 0..5u64 {
        let frame = rig.encode(i);
        assert_eq!(frame.layout_generation, 0);
        for b in &frame.bands {
            rig.dec.decode(b.band, &b.data).unwrap();
        }
    }
    let before = rgb_psnr(rig.dec.canvas(), &rig.f);
    assert!(before > 30.0, "8 bands: {before:.1} dB");

    // The next capture, encoded in the new layout.
    let t = Timestamp::from_micros(4 * FRAME_US);
    rig.source.capture(&mut rig.f, t).unwrap();
    rig.image.convert_all(&rig.f, rig.codec.color).unwrap();
    let ScrollRig {
        codec,
        mut enc,
        f,
        image,
        dec,
        ..
    } = rig;
    enc.set_layout(BandSpec::Count(1), ContentTuning::Screen)
        .unwrap();
    let frame = enc
        .encode(&image, Timestamp::from_micros(6 * FRAME_US))
        .unwrap()
        .expect("a new layout encodes at once");
    assert_eq!(frame.layout_generation, 1);
    assert_eq!(frame.bands.len(), 1);
    assert!(frame.bands[0].keyframe);
    // The viewer's new decoders show the old picture until the keyframe lands, not black.
    let mut next = BandDecoderSet::new(W, H, BandSpec::Count(1), codec.color).unwrap();
    next.keep_picture(&dec);
    assert_eq!(next.canvas().data(), dec.canvas().data());
    next.decode(BandId(0), &frame.bands[0].data)
        .unwrap()
        .expect("the keyframe decodes alone");
    let after = rgb_psnr(next.canvas(), &f);
    assert!(after > 30.0, "1 band: {after:.1} dB");
    assert!(matches!(
        enc.set_layout(BandSpec::Count(0), ContentTuning::Screen),
        Err(CodecError::Config(_))
    ));
}

/// Bytes of each frame after the first when a one-band encoder at `tuning` sees scrolling
/// text every `step`-th capture (the others skipped, as on a slow link), and the last
/// picture's PSNR against the screen.
fn late_scroll_frames(tuning: ContentTuning, step: u64) -> (Vec<usize>, f64) {
    let codec = CodecConfig::default()
        .bands(BandSpec::Count(1))
        .tuning(tuning)
        .bitrate_bps(1_000_000)
        .max_qp(40);
    let mut enc = BandEncoderSet::new(W, H, &codec, None).unwrap();
    let mut dec = BandDecoderSet::new(W, H, codec.bands, codec.color).unwrap();
    let mut source = SyntheticSource::new(Scene::Scroll, W, H, 9).unwrap();
    let mut f = source.alloc_frame().unwrap();
    let mut image = I420Image::new(W, H);
    let (mut sizes, mut db) = (Vec::new(), 0.0);
    for i in 0..=5 * step {
        let t = Timestamp::from_micros(i * FRAME_US);
        source.capture(&mut f, t).unwrap();
        if i % step != 0 {
            continue;
        }
        image.convert_all(&f, codec.color).unwrap();
        enc.mark_damaged(&[Rect::new(0, 0, W, H)]);
        let frame = enc.encode(&image, t).unwrap().unwrap();
        let data = &frame.bands[0].data;
        dec.decode(BandId(0), data).unwrap();
        db = rgb_psnr(dec.canvas(), &f);
        if i > 0 {
            sizes.push(data.len());
        }
    }
    (sizes, db)
}

#[test]
fn screen_tuning_keeps_scrolled_text_that_arrives_late_small() {
    // A slow link takes every 12th frame: the text moved 48 px between two. Camera mode
    // codes most of it anew; screen-content mode finds the move. That is why the compact
    // layout of slow paths encodes with screen tuning.
    let (camera, camera_db) = late_scroll_frames(ContentTuning::Camera, 12);
    let (screen, screen_db) = late_scroll_frames(ContentTuning::Screen, 12);
    let total = |v: &[usize]| v.iter().sum::<usize>();
    assert!(
        total(&screen) * 2 < total(&camera),
        "screen {screen:?} bytes vs camera {camera:?}"
    );
    assert!(
        screen_db > 30.0 && camera_db > 25.0,
        "{screen_db:.1} / {camera_db:.1} dB"
    );
}

#[test]
fn a_tuning_switch_renews_one_band_per_frame_with_a_keyframe_and_the_picture_stays_right() {
    let mut rig = ScrollRig::new(4, 9);
    let mut keys_after_switch = Vec::new();
    for i in 0..10u64 {
        if i == 3 {
            rig.enc.set_tuning(ContentTuning::Screen);
        }
        let frame = rig.encode(i);
        let keys: Vec<u8> = frame
            .bands
            .iter()
            .filter(|b| b.keyframe)
            .map(|b| b.band.0)
            .collect();
        if i >= 3 {
            keys_after_switch.push(keys);
        } else if i > 0 {
            assert!(keys.is_empty(), "frame {i}: {keys:?}");
        }
        for b in &frame.bands {
            rig.dec
                .decode(b.band, &b.data)
                .unwrap()
                .expect("every band decodes across the switch");
        }
        let db = rgb_psnr(rig.dec.canvas(), &rig.f);
        assert!(db > 30.0, "frame {i}: {db:.1} dB");
    }
    // One band a frame, each once, then P-frames again.
    let mut renewed: Vec<u8> = keys_after_switch.iter().flatten().copied().collect();
    assert!(
        keys_after_switch.iter().all(|k| k.len() <= 1),
        "{keys_after_switch:?}"
    );
    renewed.sort_unstable();
    assert_eq!(renewed, vec![0, 1, 2, 3], "{keys_after_switch:?}");
    // Asking again for the tuning it has changes nothing.
    rig.enc.set_tuning(ContentTuning::Screen);
    let frame = rig.encode(10);
    assert!(frame.bands.iter().all(|b| !b.keyframe));
}
