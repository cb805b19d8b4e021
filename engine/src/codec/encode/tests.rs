//! The band encoders: layouts, keyframes, rates, quality floors and refinement.
use super::*;
use crate::config::{BandSpec, DEFAULT_MIN_QP};
use crate::convert::ColorSpace;
use deskwire_capture::Frame;

fn encode_some(set: &mut BandEncoderSet, frames: std::ops::Range<u32>) {
    let mut f = Frame::new(320, 64);
    for n in frames {
        for (i, b) in f.data_mut().iter_mut().enumerate() {
            *b = (i as u32 ^ n.wrapping_mul(0x9E37)) as u8;
        }
        let mut img = I420Image::new(320, 64);
        img.convert_all(&f, ColorSpace::default()).unwrap();
        set.mark_damaged(&[Rect::new(0, 0, 320, 64)]);
        let ts = Timestamp::from_micros(u64::from(n) * 16_000);
        set.encode(&img, ts).unwrap().expect("a frame");
    }
}

/// What each band's rate control was told: (target, the layer's maximum).
fn layer_rates(set: &mut BandEncoderSet) -> Vec<(i32, i32)> {
    set.bands
        .iter_mut()
        .map(|b| {
            // SAFETY: all-zero is a valid SEncParamExt (plain integers and arrays of
            // them); the encoder fills it through the pointer during the call.
            let mut p: openh264_sys2::SEncParamExt = unsafe { std::mem::zeroed() };
            // SAFETY: an initialised encoder reads its parameters into `p`, which
            // outlives the call.
            let rc = unsafe {
                b.encoder.raw_api().get_option(
                    openh264_sys2::ENCODER_OPTION_SVC_ENCODE_PARAM_EXT,
                    std::ptr::addr_of_mut!(p).cast(),
                )
            };
            assert_eq!(rc, 0);
            let l = p.sSpatialLayers[0];
            (l.iSpatialBitrate, l.iMaxSpatialBitrate)
        })
        .collect()
}

/// Band 0 of a 320 x `h` stream at `bps` moves for three frames (`pixel` paints frame
/// n), then stands still: the quantisers of the passes that follow, and whether band
/// 1 was ever encoded again.
fn refine_after_moving(h: u32, bps: u32, pixel: fn(usize, u32) -> u8) -> (Vec<u8>, bool) {
    refine_planned(h, bps, None, DEFAULT_MIN_QP, pixel)
}

/// As `refine_after_moving`, the passes 33 ms apart, the encoders planning for
/// `plan` fps during them (`None`: the 60 they were made with), coding no finer than
/// `min_qp`.
fn refine_planned(
    h: u32,
    bps: u32,
    plan: Option<u32>,
    min_qp: u8,
    pixel: fn(usize, u32) -> u8,
) -> (Vec<u8>, bool) {
    let config = CodecConfig {
        bands: BandSpec::Count(2),
        bitrate_bps: bps,
        max_qp: 51,
        min_qp,
        ..CodecConfig::default()
    };
    let mut set = BandEncoderSet::new(320, h, &config, None).unwrap();
    let mut f = Frame::new(320, h);
    let mut img = I420Image::new(320, h);
    img.convert_all(&f, ColorSpace::default()).unwrap();
    set.encode(&img, Timestamp::from_micros(0)).unwrap();
    for n in 1..4u32 {
        for (i, b) in f
            .data_mut()
            .iter_mut()
            .enumerate()
            .take(320 * h as usize / 2 * 4)
        {
            *b = pixel(i, n);
        }
        img.convert_all(&f, ColorSpace::default()).unwrap();
        set.mark_damaged(&[Rect::new(0, 0, 320, h / 2)]);
        set.encode(&img, Timestamp::from_micros(u64::from(n) * 33_000))
            .unwrap();
    }
    if let Some(fps) = plan {
        set.set_frame_rate(fps).unwrap();
    }
    let (mut qps, mut other_band) = (Vec::new(), false);
    for n in 4..300u64 {
        set.mark_damaged(&[]);
        let Some(out) = set
            .encode(&img, Timestamp::from_micros(n * 33_000))
            .unwrap()
        else {
            continue;
        };
        for b in &out.bands {
            assert!(!b.keyframe);
            if b.band == BandId(0) {
                qps.push(b.qp);
            } else {
                other_band = true;
            }
        }
    }
    assert!(!set.refining());
    (qps, other_band)
}

/// Soft shapes, moving.
fn shapes(i: usize, n: u32) -> u8 {
    let (x, y) = ((i / 4) % 320, i / 4 / 320);
    ((x * 3 + y * 5) as u32 + n * 7) as u8 ^ (((x / 16 + y / 8) as u8 & 1) * 64)
}

#[test]
fn a_band_that_stops_moving_is_refined_until_its_quantiser_is_fine_and_a_still_one_never() {
    // Soft shapes that moved on a thin rate: coarse at first, refined pass by pass
    // down to the target, then silent.
    let (qps, other) = refine_after_moving(64, 100_000, shapes);
    assert!(!other, "band 1 never moved, so it is never refined");
    let (first, last) = (qps[0], *qps.last().unwrap());
    assert!(first > REFINE_QP, "{qps:?}");
    assert!(last <= REFINE_QP, "{qps:?}");
    assert!(qps.len() < usize::from(REFINE_PASSES), "{qps:?}");
    // A large band of noise (512 rows) never gets there at this rate: the passes stop at
    // the cap.
    let (qps, _) = refine_after_moving(1024, 100_000, |i, n| {
        (i as u32 ^ n.wrapping_mul(0x9E37)).wrapping_mul(2_654_435_761) as u8
    });
    assert_eq!(qps.len(), usize::from(REFINE_PASSES), "{qps:?}");
}

#[test]
fn passes_planned_at_their_own_frame_rate_converge_in_fewer_of_them() {
    // Passes 33 ms apart while the encoder plans for 60 fps get half the rate each.
    let (at_60, _) = refine_planned(64, 100_000, None, DEFAULT_MIN_QP, shapes);
    let (at_30, _) = refine_planned(64, 100_000, Some(30), DEFAULT_MIN_QP, shapes);
    assert!(*at_30.last().unwrap() <= REFINE_QP, "{at_30:?}");
    assert!(at_30.len() * 4 < at_60.len() * 3, "{at_30:?}\n{at_60:?}");
}

#[test]
fn the_bitrate_can_be_raised_above_the_one_the_encoders_started_with() {
    let config = CodecConfig {
        bands: BandSpec::Count(2),
        bitrate_bps: 200_000,
        ..CodecConfig::default()
    };
    let mut set = BandEncoderSet::new(320, 64, &config, None).unwrap();
    encode_some(&mut set, 0..3);
    set.set_bitrate(4_000_000).expect("a raise is taken");
    assert_eq!(layer_rates(&mut set), [(2_000_000, 4_000_000); 2]);
    encode_some(&mut set, 3..5);
    set.set_bitrate(300_000).expect("a cut is taken");
    assert_eq!(layer_rates(&mut set), [(150_000, 300_000); 2]);
    set.set_bitrate(8_000_000).expect("and a raise again");
    assert_eq!(layer_rates(&mut set), [(4_000_000, 8_000_000); 2]);
}

#[test]
fn a_band_is_never_coded_finer_than_the_quality_ceiling_and_its_refinement_ends_there() {
    // With the lowest ceiling OpenH264 takes, the passes go down to `REFINE_QP`.
    let (free, _) = refine_planned(64, 100_000, None, 12, shapes);
    assert!(*free.last().unwrap() <= REFINE_QP, "{free:?}");
    let (capped, _) = refine_planned(64, 100_000, None, 30, shapes);
    assert!(capped.iter().all(|&q| q >= 30), "{capped:?}");
    // A ceiling coarser than `REFINE_QP` ends the passes once reached, sooner.
    assert!(capped.len() < free.len(), "{capped:?}\n{free:?}");
}
