//! Criterion benches per stage at 1080p (diff and convert also at 4K), on synthetic frames.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use deskwire_capture::synthetic::{Scene, SyntheticSource};
use deskwire_capture::{Frame, Rect, Source, Timestamp};
use deskwire_engine::{
    BandDecoderSet, BandEncoderSet, BandSpec, CodecConfig, ColorSpace, Differ, I420Image, Workers,
};

const SIZES: [(u32, u32, &str); 2] = [(1920, 1080, "1080p"), (3840, 2160, "4k")];

/// Two consecutive frames of a scene (the second one step later).
fn two_frames(scene: Scene, w: u32, h: u32) -> (Frame, Frame) {
    let mut s = SyntheticSource::new(scene, w, h, 1)
        .unwrap()
        .with_hints(false);
    let mut a = s.alloc_frame().unwrap();
    let mut b = s.alloc_frame().unwrap();
    s.capture(&mut a, Timestamp::default()).unwrap();
    s.capture(&mut b, Timestamp::default()).unwrap();
    (a, b)
}

fn diff(c: &mut Criterion) {
    let mut g = c.benchmark_group("diff");
    for (w, h, name) in SIZES {
        let (a, b) = two_frames(Scene::Static, w, h);
        let mut d = Differ::new(w, h);
        g.bench_function(BenchmarkId::new("identical_full_compare", name), |bench| {
            bench.iter(|| black_box(d.diff(&a, &b, None).len()))
        });
        let (a, b) = two_frames(Scene::Typing, w, h);
        g.bench_function(BenchmarkId::new("typing_full_compare", name), |bench| {
            bench.iter(|| black_box(d.diff(&a, &b, None).len()))
        });
        let (a, b) = two_frames(Scene::Video, w, h);
        g.bench_function(BenchmarkId::new("video_full_compare", name), |bench| {
            bench.iter(|| black_box(d.diff(&a, &b, None).len()))
        });
    }
    g.finish();
}

fn convert(c: &mut Criterion) {
    let mut g = c.benchmark_group("convert");
    for (w, h, name) in SIZES {
        let (a, _) = two_frames(Scene::Typing, w, h);
        let mut img = I420Image::new(w, h);
        g.bench_function(BenchmarkId::new("full_frame", name), |bench| {
            bench.iter(|| {
                img.convert_all(black_box(&a), ColorSpace::default())
                    .unwrap()
            })
        });
        let glyph = [Rect::new(400, 300, 16, 16)];
        g.bench_function(BenchmarkId::new("one_tile", name), |bench| {
            bench.iter(|| {
                img.convert_rects(black_box(&a), &glyph, ColorSpace::default())
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn encoders(bands: u32, w: u32, h: u32) -> BandEncoderSet {
    let workers = Arc::new(Workers::new(2).unwrap());
    let cfg = CodecConfig::default().bands(BandSpec::Count(bands));
    BandEncoderSet::new(w, h, &cfg, Some(workers)).unwrap()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_1080p");
    g.sample_size(30);
    let (w, h) = (1920, 1080);
    for bands in [1, 8] {
        // Typing: alternate two frames that differ by one glyph, so every encode has damage.
        let (a, b) = two_frames(Scene::Typing, w, h);
        let mut imgs = [I420Image::new(w, h), I420Image::new(w, h)];
        imgs[0].convert_all(&a, ColorSpace::default()).unwrap();
        imgs[1].convert_all(&b, ColorSpace::default()).unwrap();
        let damage = Differ::new(w, h).diff(&a, &b, None).to_vec();
        let mut enc = encoders(bands, w, h);
        enc.encode(&imgs[0], Timestamp::default()).unwrap();
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("typing_p_frame", bands), |bench| {
            bench.iter(|| {
                i += 1;
                enc.mark_damaged(&damage);
                let f = enc.encode(&imgs[(i % 2) as usize], Timestamp::from_micros(i * 16_667));
                black_box(f.unwrap().map(|f| f.byte_len()))
            })
        });
        // Video: every pixel changes, every band encodes.
        let mut s = SyntheticSource::new(Scene::Video, w, h, 1).unwrap();
        let mut f = s.alloc_frame().unwrap();
        let mut img = I420Image::new(w, h);
        let mut enc = encoders(bands, w, h);
        let all = [Rect::new(0, 0, w, h)];
        g.bench_function(BenchmarkId::new("video_frame", bands), |bench| {
            bench.iter(|| {
                i += 1;
                s.capture(&mut f, Timestamp::default()).unwrap();
                img.convert_all(&f, ColorSpace::default()).unwrap();
                enc.mark_damaged(&all);
                black_box(
                    enc.encode(&img, Timestamp::from_micros(i * 16_667))
                        .unwrap()
                        .is_some(),
                )
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_1080p");
    g.sample_size(30);
    let (w, h) = (1920, 1080);
    let (a, _) = two_frames(Scene::Typing, w, h);
    let mut img = I420Image::new(w, h);
    img.convert_all(&a, ColorSpace::default()).unwrap();
    let mut enc = encoders(1, w, h);
    let key = enc.encode(&img, Timestamp::default()).unwrap().unwrap();
    g.bench_function("keyframe_1_band", |bench| {
        bench.iter(|| {
            let mut d =
                BandDecoderSet::new(w, h, BandSpec::Count(1), ColorSpace::default()).unwrap();
            black_box(
                d.decode(key.bands[0].band, &key.bands[0].data)
                    .unwrap()
                    .is_some(),
            )
        })
    });
    g.finish();
}

fn capture(c: &mut Criterion) {
    let mut g = c.benchmark_group("capture_synthetic_1080p");
    for scene in [Scene::Typing, Scene::Video] {
        let mut s = SyntheticSource::new(scene, 1920, 1080, 1).unwrap();
        let mut f = s.alloc_frame().unwrap();
        g.bench_function(scene.to_string(), |bench| {
            bench.iter(|| black_box(s.capture(&mut f, Timestamp::default()).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, diff, convert, encode, decode, capture);
criterion_main!(benches);
