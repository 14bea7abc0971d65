use super::*;

/// `to_model_input` as first written: every supersample interpolated on its own.
fn model_input_by_samples(frame: &FrameRef, size: usize, mode: CropMode) -> Vec<f32> {
    let fit = Fit::new(frame.width, frame.height, size, mode);
    let mut out = vec![0f32; 3 * size * size];
    let inv = 1.0 / fit.scale_x;
    let taps = (inv.ceil() as usize).clamp(1, 4);
    let (w, h) = (frame.width as f64, frame.height as f64);
    let plane = size * size;
    for i in 0..size {
        for j in 0..size {
            let mut acc = [0f32; 3];
            for ty in 0..taps {
                for tx in 0..taps {
                    let fx = (j as f64 + (tx as f64 + 0.5) / taps as f64 - fit.offset_x) * inv;
                    let fy = (i as f64 + (ty as f64 + 0.5) / taps as f64 - fit.offset_y) * inv;
                    if fx < 0.0 || fy < 0.0 || fx >= w || fy >= h {
                        continue;
                    }
                    let c = bilinear(frame, fx - 0.5, fy - 0.5);
                    for k in 0..3 {
                        acc[k] += c[k];
                    }
                }
            }
            for k in 0..3 {
                out[k * plane + i * size + j] = acc[k] / (taps * taps) as f32;
            }
        }
    }
    out
}

#[test]
fn separable_fit_equals_sampling_each_supersample() {
    let mut seed = 9u32;
    let mut byte = move || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 24) as u8
    };
    // Shrinking (1 to 4 taps), enlarging, odd sides, both YUV layouts and a packed one.
    for &(w, h) in &[
        (1920usize, 1080usize),
        (227, 128),
        (33, 57),
        (300, 301),
        (7, 5),
    ] {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y: Vec<u8> = (0..w * h).map(|_| byte()).collect();
        let u: Vec<u8> = (0..cw * ch).map(|_| byte()).collect();
        let v: Vec<u8> = (0..cw * ch).map(|_| byte()).collect();
        let uv: Vec<u8> = (0..cw * ch * 2).map(|_| byte()).collect();
        let bgrx: Vec<u8> = (0..w * h * 4).map(|_| byte()).collect();
        let frames = [
            FrameRef::new(PixelFormat::I420, w, h, [(&y, w), (&u, cw), (&v, cw)]).unwrap(),
            FrameRef::new(PixelFormat::Nv12, w, h, [(&y, w), (&uv, cw * 2), (&[], 0)]).unwrap(),
            FrameRef::packed(PixelFormat::Bgrx, w, h, &bgrx, w * 4).unwrap(),
        ];
        for f in &frames {
            for mode in [CropMode::Letterbox, CropMode::CenterCrop] {
                for size in [64, 128] {
                    let want = model_input_by_samples(f, size, mode);
                    let (got, _) = to_model_input(f, size, mode);
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        err < 1e-5,
                        "{:?} {w}x{h} {mode:?} at {size}: {err}",
                        f.format
                    );
                }
            }
        }
    }
}
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn a_region_is_the_frame_cut_to_it() {
    let (w, h) = (97usize, 61usize);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    let frame = FrameRef::packed(PixelFormat::Rgb, w, h, &rgb, w * 3).unwrap();
    // A square region inside the frame equals the frame cut to it (same pixels, letterbox
    // of a square pads nothing), and its fit maps model coordinates into the region.
    let (x0, y0, side) = (20usize, 9usize, 40usize);
    let cut: Vec<u8> = (y0..y0 + side)
        .flat_map(|y| rgb[(y * w + x0) * 3..][..side * 3].to_vec())
        .collect();
    let sub = FrameRef::packed(PixelFormat::Rgb, side, side, &cut, side * 3).unwrap();
    let region = Region {
        x: x0 as f64,
        y: y0 as f64,
        w: side as f64,
        h: side as f64,
    };
    for mode in [CropMode::Letterbox, CropMode::CenterCrop, CropMode::Stretch] {
        for size in [16, 32, 64] {
            let (want, _) = to_model_input(&sub, size, CropMode::CenterCrop);
            let (got, fit) = region_to_model_input(&frame, &region, size, mode).unwrap();
            // The outermost samples differ: the cut frame repeats its edge where the
            // region reads the frame's pixels beyond it.
            let inner = |v: &[f32]| -> Vec<f32> {
                (0..3 * size * size)
                    .filter(|i| {
                        let (r, c) = (i / size % size, i % size);
                        (1..size - 1).contains(&r) && (1..size - 1).contains(&c)
                    })
                    .map(|i| v[i])
                    .collect()
            };
            assert!(
                max_diff(&inner(&got), &inner(&want)) < 1e-6,
                "{mode:?} at {size}"
            );
            let (x, y) = fit.to_frame(0.25, 0.75);
            assert!((x - (x0 as f32 + 10.0)).abs() < 1e-4 && (y - (y0 as f32 + 30.0)).abs() < 1e-4);
        }
    }
    // The whole frame as a region is the frame itself, in either squaring mode.
    let whole = Region {
        x: 0.0,
        y: 0.0,
        w: w as f64,
        h: h as f64,
    };
    for mode in [CropMode::Letterbox, CropMode::CenterCrop] {
        let (want, wfit) = to_model_input(&frame, 48, mode);
        let (got, gfit) = region_to_model_input(&frame, &whole, 48, mode).unwrap();
        assert!(max_diff(&got, &want) < 1e-6, "{mode:?}");
        assert_eq!(wfit.to_frame(0.3, 0.6), gfit.to_frame(0.3, 0.6));
    }
    // Letterbox pads a tall box with black beside it, not with the frame's pixels.
    let tall = Region {
        x: 30.0,
        y: 10.0,
        w: 20.0,
        h: 40.0,
    };
    let (lb, _) = region_to_model_input(&frame, &tall, 40, CropMode::Letterbox).unwrap();
    for c in 0..3 {
        for y in 0..40 {
            for x in (0..10).chain(30..40) {
                assert_eq!(lb[c * 1600 + y * 40 + x], 0.0, "({x}, {y})");
            }
            assert!(lb[c * 1600 + y * 40 + 20] > 0.0 || c > 0);
        }
    }
    // Past the frame is black, and empty or non-finite regions are errors.
    let out = Region {
        x: -200.0,
        y: -200.0,
        w: 50.0,
        h: 50.0,
    };
    let (black, _) = region_to_model_input(&frame, &out, 16, CropMode::Letterbox).unwrap();
    assert!(black.iter().all(|&v| v == 0.0));
    for bad in [
        Region { w: 0.0, ..region },
        Region { h: -3.0, ..region },
        Region {
            x: f64::NAN,
            ..region
        },
        Region {
            w: f64::INFINITY,
            ..region
        },
    ] {
        assert!(region_to_model_input(&frame, &bad, 16, CropMode::Letterbox).is_err());
    }
}

#[test]
fn regions_are_grown_and_squared_about_their_centre() {
    let r = Region {
        x: 10.0,
        y: 20.0,
        w: 40.0,
        h: 100.0,
    };
    assert_eq!(
        r.grown(0.1),
        Region {
            x: 6.0,
            y: 10.0,
            w: 48.0,
            h: 120.0
        }
    );
    assert_eq!(
        r.squared(CropMode::Letterbox),
        Region {
            x: -20.0,
            y: 20.0,
            w: 100.0,
            h: 100.0
        }
    );
    assert_eq!(
        r.squared(CropMode::CenterCrop),
        Region {
            x: 10.0,
            y: 50.0,
            w: 40.0,
            h: 40.0
        }
    );
    assert_eq!(r.squared(CropMode::Stretch), r);
}

fn bilinear(frame: &FrameRef, x: f64, y: f64) -> [f32; 3] {
    let x = x.clamp(0.0, (frame.width - 1) as f64);
    let y = y.clamp(0.0, (frame.height - 1) as f64);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = (
        (x0 + 1).min(frame.width - 1),
        (y0 + 1).min(frame.height - 1),
    );
    let (ax, ay) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let p00 = frame.rgb(x0, y0);
    let p01 = frame.rgb(x1, y0);
    let p10 = frame.rgb(x0, y1);
    let p11 = frame.rgb(x1, y1);
    let mut o = [0f32; 3];
    for k in 0..3 {
        let top = p00[k] + (p01[k] - p00[k]) * ax;
        let bot = p10[k] + (p11[k] - p10[k]) * ax;
        o[k] = top + (bot - top) * ay;
    }
    o
}

#[test]
fn square_frame_of_model_size_is_copied_exactly() {
    let (w, h) = (4, 4);
    let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
    let f = FrameRef::packed(PixelFormat::Rgb, w, h, &data, w * 3).unwrap();
    let (t, fit) = to_model_input(&f, 4, CropMode::Letterbox);
    assert_eq!((fit.scale_x, fit.scale_y), (1.0, 1.0));
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                assert!(
                    (t[c * 16 + y * 4 + x] - data[(y * w + x) * 3 + c] as f32 / 255.0).abs() < 1e-6
                );
            }
        }
    }
}

#[test]
fn letterbox_and_crop_mappings_round_trip() {
    for mode in [CropMode::Letterbox, CropMode::CenterCrop, CropMode::Stretch] {
        let fit = Fit::new(320, 180, 128, mode);
        let (nx, ny) = fit.to_model(100.0, 50.0);
        let (x, y) = fit.to_frame(nx, ny);
        assert!(
            (x - 100.0).abs() < 1e-3 && (y - 50.0).abs() < 1e-3,
            "{mode:?}"
        );
    }
    // Letterbox: 320x180 -> scale 0.4, 72 px of content height centred: bars of 28 px.
    let fit = Fit::new(320, 180, 128, CropMode::Letterbox);
    assert!((fit.offset_y - 28.0).abs() < 1e-9 && fit.offset_x == 0.0);
    // A point in the bar clamps to the frame edge.
    assert_eq!(fit.to_frame(0.5, 0.0).1, 0.0);
    // Stretch: each axis on its own, no offsets; the square's corners are the frame's.
    let fit = Fit::new(320, 180, 128, CropMode::Stretch);
    assert_eq!((fit.scale_x, fit.scale_y), (0.4, 128.0 / 180.0));
    assert_eq!((fit.offset_x, fit.offset_y), (0.0, 0.0));
    assert_eq!(fit.to_frame(1.0, 1.0), (320.0, 180.0));
    assert_eq!(fit.to_frame(0.25, 0.5), (80.0, 90.0));
    assert_eq!("stretch".parse::<CropMode>().unwrap(), CropMode::Stretch);
    for (s, mode) in [
        ("letterbox", CropMode::Letterbox),
        ("pad", CropMode::Letterbox),
        ("center-crop", CropMode::CenterCrop),
        ("crop", CropMode::CenterCrop),
    ] {
        assert_eq!(s.parse::<CropMode>().unwrap(), mode);
    }
    for mode in CropMode::ALL {
        assert_eq!(mode.name().parse::<CropMode>().unwrap(), mode);
        assert_eq!(mode.to_string(), mode.name());
    }
    assert!("squash"
        .parse::<CropMode>()
        .unwrap_err()
        .to_string()
        .contains("stretch"));
}

#[test]
fn pil_taps_by_hand() {
    // Upscaling 2 -> 4: plain bilinear, half-pixel centres, edges clamped.
    let t = pil_bilinear_taps(2, 4);
    assert_eq!(t[0], (0, vec![1.0]));
    assert_eq!(t[1], (0, vec![0.75, 0.25]));
    assert_eq!(t[2], (0, vec![0.25, 0.75]));
    assert_eq!(t[3], (1, vec![1.0]));
    // Halving 4 -> 2: the triangle widens to support 2, centres at 1 and 3.
    let t = pil_bilinear_taps(4, 2);
    // Output 0: centre 1, inputs 0..3 at distances 0.5, 0.5, 1.5 (/2): 0.75, 0.75, 0.25.
    assert_eq!(t[0].0, 0);
    let w: Vec<f64> = [0.75, 0.75, 0.25].iter().map(|v| v / 1.75).collect();
    for (a, b) in t[0].1.iter().zip(&w) {
        assert!((a - b).abs() < 1e-15);
    }
    for (_, w) in pil_bilinear_taps(37, 8)
        .iter()
        .chain(&pil_bilinear_taps(5, 64))
    {
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn masks_are_binarised_resampled_and_applied() {
    // 4x2 mask, left half foreground (value 1 as in Human3.6M, 255 alike), stretched to 4.
    let mask = [1u8, 1, 0, 0, 255, 255, 0, 0];
    let m = mask_to_model_input(&mask, 4, 2, 4, CropMode::Stretch).unwrap();
    for row in m.chunks_exact(4) {
        assert_eq!(row, &[1.0, 1.0, 0.0, 0.0]);
    }
    let mut img: Vec<f32> = (0..48).map(|i| i as f32).collect();
    apply_mask(&mut img, &m).unwrap();
    assert_eq!(&img[16..20], &[16.0, 17.0, 0.0, 0.0]);
    assert!(apply_mask(&mut img, &m[..8]).is_err());
    assert!(mask_to_model_input(&mask, 3, 2, 4, CropMode::Stretch).is_err());
}

#[test]
fn letterbox_pads_black_and_keeps_content() {
    let (w, h) = (8, 4);
    let data = vec![255u8; w * h * 4];
    let f = FrameRef::packed(PixelFormat::Bgrx, w, h, &data, w * 4).unwrap();
    let (t, _) = to_model_input(&f, 8, CropMode::Letterbox);
    assert_eq!(t[0], 0.0); // top bar
    assert!((t[4 * 8 + 4] - 1.0).abs() < 1e-6); // middle row
}

#[test]
fn yuv_formats_agree_with_rgb() {
    // Neutral chroma, limited range: grey level (Y - 16) / 219.
    let (w, h) = (4, 2);
    let y = vec![126u8; w * h];
    let u = vec![128u8; 2];
    let v = vec![128u8; 2];
    let f = FrameRef::new(PixelFormat::I420, w, h, [(&y, w), (&u, 2), (&v, 2)]).unwrap();
    let c = f.rgb(3, 1);
    assert!(c.iter().all(|&x| (x - 110.0 / 219.0).abs() < 1e-6), "{c:?}");
    let uv = vec![128u8; 4];
    let f = FrameRef::new(PixelFormat::Nv12, w, h, [(&y, w), (&uv, 4), (&[], 0)]).unwrap();
    assert_eq!(f.rgb(2, 0), c);
    // Pure red in BT.601 limited range: Y=81, U=90, V=240.
    let r = yuv_to_rgb(81.0, 90.0, 240.0, YuvMatrix::Bt601, false);
    assert!(
        (r[0] - 1.0).abs() < 0.01 && r[1] < 0.01 && r[2] < 0.02,
        "{r:?}"
    );
}

#[test]
fn huge_sizes_and_strides_are_errors_not_overflows() {
    // Regression (fuzz target `frame`): `width * bpp` and `stride * (rows - 1)`
    // overflowed (a panic with overflow checks, a bogus size check without).
    let data = vec![0u8; 64];
    let m = usize::MAX;
    for (w, h, stride) in [
        (m, 1, 3),
        (m / 3 + 1, 1, m),
        (4, m, m / 2),
        (1, 3, m),
        (2, 2, m),
    ] {
        assert!(FrameRef::packed(PixelFormat::Rgb, w, h, &data, stride).is_err());
        assert!(FrameRef::packed(PixelFormat::Bgrx, w, h, &data, stride).is_err());
    }
    let e = FrameRef::new(PixelFormat::Nv12, m, 2, [(&data, m), (&data, m), (&[], 0)]);
    assert!(e.unwrap_err().to_string().contains("plane 0"));
    let planes = [(&data[..], 4), (&data[..], m), (&data[..], 2)];
    assert!(FrameRef::new(PixelFormat::I420, 4, 4, planes).is_err());
}

/// Stable stand-in for the `frame` fuzz target (fuzz/): seeded random layouts either
/// are rejected or resample in bounds to colours in [0, 1].
#[test]
fn random_layouts_are_rejected_or_read_in_bounds() {
    use crate::ops::rng::Rng;
    const FORMATS: [PixelFormat; 12] = [
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Rgbx,
        PixelFormat::Bgrx,
        PixelFormat::Argb,
        PixelFormat::Abgr,
        PixelFormat::Xrgb,
        PixelFormat::Xbgr,
        PixelFormat::I420,
        PixelFormat::Nv12,
    ];
    let mut rng = Rng::new(6);
    let data: Vec<u8> = (0..2048).map(|_| rng.below(256) as u8).collect();
    let mut accepted = 0;
    for _ in 0..4000 {
        let size = |rng: &mut Rng| match rng.below(8) {
            0 => rng.next_u64() as usize,
            1 => usize::MAX - rng.below(4),
            _ => rng.below(40),
        };
        let (w, h) = (size(&mut rng), size(&mut rng));
        let plane = |rng: &mut Rng| {
            let start = rng.below(data.len() + 1);
            let len = rng.below(data.len() - start + 1);
            (&data[start..start + len], size(rng))
        };
        let planes = [plane(&mut rng), plane(&mut rng), plane(&mut rng)];
        let format = FORMATS[rng.below(FORMATS.len())];
        let Ok(mut f) = FrameRef::new(format, w, h, planes) else {
            continue;
        };
        accepted += 1;
        f.full_range = rng.below(2) == 0;
        let mode = [CropMode::Letterbox, CropMode::CenterCrop, CropMode::Stretch][rng.below(3)];
        let (t, _) = to_model_input(&f, 1 + rng.below(12), mode);
        assert!(
            t.iter().all(|v| (0.0..=1.0).contains(v)),
            "{format:?} {w}x{h}"
        );
    }
    assert!(
        accepted > 50,
        "too few valid layouts to mean anything: {accepted}"
    );
}

#[test]
fn short_planes_are_rejected() {
    let data = vec![0u8; 10];
    let e = FrameRef::packed(PixelFormat::Rgb, 4, 4, &data, 12).unwrap_err();
    assert!(e.to_string().contains("plane 0"), "{e}");
    assert!(FrameRef::packed(PixelFormat::Rgb, 0, 4, &data, 12).is_err());
}
