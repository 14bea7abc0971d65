//! Conversion to RGB: the caps list every raw format, converted formats match the core on
//! their RGB, other matrices go through the converter, hand-computed BT.601/BT.709 values, and
//! padded strides.

use super::*;

fn converted_formats() -> Vec<F> {
    element_formats()
        .into_iter()
        .filter(|&f| !is_native(f))
        .collect()
}

#[test]
fn caps_list_every_raw_format_native_ones_first() {
    let formats = element_formats();
    assert_eq!(
        formats[0],
        F::I420,
        "videotestsrc and friends pick the first"
    );
    assert!(formats[..13].iter().all(|&f| is_native(f)), "{formats:?}");
    let raw: Vec<F> = F::iter_raw().collect();
    assert_eq!(formats.len(), raw.len(), "{formats:?}");
    for f in &raw {
        assert!(formats.contains(f), "{f:?} missing");
    }
    // What decoders and cameras give (issue 12).
    for f in [
        F::Y444,
        F::Y44410le,
        F::Y44412le,
        F::I42010le,
        F::I42012le,
        F::I42210le,
        F::P01010le,
        F::Y42b,
        F::Yuy2,
        F::Uyvy,
        F::Gray8,
        F::Gbra12le,
    ] {
        assert!(formats.contains(&f), "{f:?} missing");
    }
}

#[test]
fn every_converted_format_matches_the_core_on_its_rgb_and_passes_bytes_through() {
    let formats = converted_formats();
    assert!(formats.len() > 90, "{}", formats.len());
    for (k, &format) in formats.iter().enumerate() {
        let mut hn = harness("", &video_info(format, 17, 9));
        // One reference per element: the noise stream goes on from frame to frame.
        let mut det = core_detector();
        for (i, (w, h)) in [(17, 9), (2, 3)].into_iter().enumerate() {
            let info = video_info(format, w, h);
            hn.set_src_caps(info.to_caps().unwrap());
            let input = timed(random_frame(&info, 500 + k as u64), i as u64);
            let expected = core_on_rgb(&mut det, &input, &info, i as u64);
            let before = bytes(&input);
            hn.push(input).unwrap();
            let out = hn.pull().unwrap();
            let what = format!("{format:?} {w}x{h}");
            assert_matches_core(&read_meta(&out), &expected, &what);
            assert!(
                bytes(&out) == before,
                "{what}: bytes changed with draw=false"
            );
        }
    }
}

#[test]
fn native_yuv_layouts_in_another_matrix_go_through_the_converter() {
    // The engine converts BT.601 and BT.709 itself; BT.2020 I420/YV12/NV12 (HDR decoders)
    // reach the model through GStreamer's converter, and are still drawn in place.
    init();
    for format in [F::I420, F::Yv12, F::Nv12] {
        let info = gst_video::VideoInfo::builder(format, 40, 30)
            .fps(gst::Fraction::new(25, 1))
            .colorimetry(&"bt2020".parse().unwrap())
            .build()
            .unwrap();
        let mut hn = harness("draw=true", &info);
        let input = timed(random_frame(&info, 61), 0);
        let expected = core_on_rgb(&mut core_detector(), &input, &info, 0);
        let before = bytes(&input);
        hn.push(input).unwrap();
        let out = hn.pull().unwrap();
        assert_matches_core(&read_meta(&out), &expected, &format!("{format:?} BT.2020"));
        assert!(bytes(&out) != before, "{format:?}: nothing drawn");
    }
}

/// RGB (0-255, unrounded) of limited-range Y'CbCr samples of `bits` bits.
fn yuv_rgb(y: f32, u: f32, v: f32, bits: u32, (kr, kb): (f32, f32)) -> [f32; 3] {
    let s = (1u32 << (bits - 8)) as f32;
    let (y, cb, cr) = (
        (y / s - 16.0) / 219.0,
        (u / s - 128.0) / 224.0,
        (v / s - 128.0) / 224.0,
    );
    let r = y + 2.0 * (1.0 - kr) * cr;
    let b = y + 2.0 * (1.0 - kb) * cb;
    let g = (y - kr * r - kb * b) / (1.0 - kr - kb);
    [r, g, b].map(|c| (c * 255.0).clamp(0.0, 255.0))
}

const BT601: (f32, f32) = (0.299, 0.114);
const BT709: (f32, f32) = (0.2126, 0.0722);
/// The frame size of the conversion tests.
const W: usize = 22;
const H: usize = 14;
/// The chroma of the subsampled formats: one value per frame, so that the converter's
/// chroma interpolation is exact.
const CU: u16 = 90;
const CV: u16 = 170;

/// Limited-range samples: luma varies per pixel, and so does chroma in 4:4:4.
struct Samples(Vec<u8>);

impl Samples {
    fn new() -> Self {
        Samples(noise_bytes(W * H * 3, 77))
    }

    fn luma(&self, x: usize, y: usize, bits: u32) -> u16 {
        let n = self.0[(y * W + x) * 3] as u32;
        ((16 + n * 219 / 255) << (bits - 8)) as u16
    }

    fn chroma(&self, x: usize, y: usize, c: usize, bits: u32) -> u16 {
        let n = self.0[(y * W + x) * 3 + 1 + c] as u32;
        ((16 + n * 224 / 255) << (bits - 8)) as u16
    }
}

/// Writes the samples of pixel (x, y) into a frame's data with its strides and offsets.
type Writer = fn(&Samples, &mut [u8], &[i32], &[usize], usize, usize);

/// (format, colorimetry, bits, chroma subsampled, writer)
const YUV_ROWS: [(F, &str, u32, bool, Writer); 7] = [
    (F::Y444, "bt601", 8, false, |sm, d, s, o, x, y| {
        d[o[0] + y * s[0] as usize + x] = sm.luma(x, y, 8) as u8;
        d[o[1] + y * s[1] as usize + x] = sm.chroma(x, y, 0, 8) as u8;
        d[o[2] + y * s[2] as usize + x] = sm.chroma(x, y, 1, 8) as u8;
    }),
    (F::Y44410le, "bt709", 10, false, |sm, d, s, o, x, y| {
        put(d, o[0] + y * s[0] as usize + 2 * x, 2, sm.luma(x, y, 10));
        put(
            d,
            o[1] + y * s[1] as usize + 2 * x,
            2,
            sm.chroma(x, y, 0, 10),
        );
        put(
            d,
            o[2] + y * s[2] as usize + 2 * x,
            2,
            sm.chroma(x, y, 1, 10),
        );
    }),
    (F::I42010le, "bt709", 10, true, |sm, d, s, o, x, y| {
        put(d, o[0] + y * s[0] as usize + 2 * x, 2, sm.luma(x, y, 10));
        let (cx, cy) = (x / 2, y / 2);
        put(d, o[1] + cy * s[1] as usize + 2 * cx, 2, CU << 2);
        put(d, o[2] + cy * s[2] as usize + 2 * cx, 2, CV << 2);
    }),
    (F::P01010le, "bt709", 10, true, |sm, d, s, o, x, y| {
        // 10 bits in the high bits of 16.
        put(
            d,
            o[0] + y * s[0] as usize + 2 * x,
            2,
            sm.luma(x, y, 10) << 6,
        );
        let (cx, cy) = (x / 2, y / 2);
        put(d, o[1] + cy * s[1] as usize + 4 * cx, 2, (CU << 2) << 6);
        put(d, o[1] + cy * s[1] as usize + 4 * cx + 2, 2, (CV << 2) << 6);
    }),
    (F::Nv21, "bt601", 8, true, |sm, d, s, o, x, y| {
        d[o[0] + y * s[0] as usize + x] = sm.luma(x, y, 8) as u8;
        let (cx, cy) = (x / 2, y / 2);
        d[o[1] + cy * s[1] as usize + 2 * cx] = CV as u8;
        d[o[1] + cy * s[1] as usize + 2 * cx + 1] = CU as u8;
    }),
    (F::Yuy2, "bt601", 8, true, |sm, d, s, o, x, y| {
        let p = o[0] + y * s[0] as usize + 2 * x;
        d[p] = sm.luma(x, y, 8) as u8;
        d[p + 1] = if x % 2 == 0 { CU } else { CV } as u8;
    }),
    (F::Uyvy, "bt709", 8, true, |sm, d, s, o, x, y| {
        let p = o[0] + y * s[0] as usize + 2 * x;
        d[p + 1] = sm.luma(x, y, 8) as u8;
        d[p] = if x % 2 == 0 { CU } else { CV } as u8;
    }),
];

/// The RGBx image that `ToRgb` makes of `data` laid out as `info`, and its stride.
fn converted(info: &gst_video::VideoInfo, data: Vec<u8>) -> (Vec<u8>, usize) {
    let buf = gst::Buffer::from_mut_slice(data);
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), info).unwrap();
    let mut to_rgb = ToRgb::new(info).unwrap();
    let stride = to_rgb.stride();
    let rgb = to_rgb.convert(&[frame]).unwrap();
    (rgb[0].to_vec(), stride)
}

#[test]
fn conversion_to_rgb_matches_hand_computed_values() {
    init();
    let sm = Samples::new();
    for (format, colorimetry, bits, subsampled, write) in YUV_ROWS {
        let info = gst_video::VideoInfo::builder(format, W as u32, H as u32)
            .fps(gst::Fraction::new(25, 1))
            .colorimetry(&colorimetry.parse().unwrap())
            .build()
            .unwrap();
        let mut data = vec![0u8; info.size()];
        for y in 0..H {
            for x in 0..W {
                write(&sm, &mut data, info.stride(), info.offset(), x, y);
            }
        }
        let (rgb, stride) = converted(&info, data);
        let k = if colorimetry == "bt601" { BT601 } else { BT709 };
        let mut worst = 0f32;
        for y in 0..H {
            for x in 0..W {
                let (u, v) = if subsampled {
                    ((CU as u32) << (bits - 8), (CV as u32) << (bits - 8))
                } else {
                    let c = |i| sm.chroma(x, y, i, bits) as u32;
                    (c(0), c(1))
                };
                let want = yuv_rgb(sm.luma(x, y, bits) as f32, u as f32, v as f32, bits, k);
                let got = &rgb[y * stride + 4 * x..][..3];
                for c in 0..3 {
                    worst = worst.max((got[c] as f32 - want[c]).abs());
                }
            }
        }
        // GStreamer's fast 8-bit YUV -> RGB path (the one videoconvert uses too) is off by up
        // to 5 levels (limited-range white, 235, becomes 253); its 16-bit matrix, used above
        // 8 bits, is exact to rounding.
        let bound = if bits == 8 { 6.0 } else { 2.0 };
        assert!(worst <= bound, "{format:?}: off by up to {worst}");
    }
}

/// Grey and planar RGB: samples copied (grey full range: R = G = B = Y).
#[test]
fn grey_and_planar_rgb_are_copied_to_rgb() {
    init();
    let noise = &noise_bytes(W * H * 3, 77);
    for format in [F::Gray8, F::Gray16Le, F::Gbr] {
        let info = video_info(format, W as u32, H as u32);
        let mut data = vec![0u8; info.size()];
        let (s, o) = (info.stride(), info.offset());
        for y in 0..H {
            for x in 0..W {
                let n = &noise[(y * W + x) * 3..][..3];
                let at = o[0] + y * s[0] as usize;
                match format {
                    F::Gray8 => data[at + x] = n[0],
                    F::Gray16Le => put(&mut data, at + 2 * x, 2, n[0] as u16 * 257),
                    _ => {
                        // Planes G, B, R.
                        for (p, c) in [(0, 1), (1, 2), (2, 0)] {
                            data[o[p] + y * s[p] as usize + x] = n[c];
                        }
                    }
                }
            }
        }
        let (rgb, stride) = converted(&info, data);
        for y in 0..H {
            for x in 0..W {
                let n = &noise[(y * W + x) * 3..][..3];
                let want = if format == F::Gbr {
                    [n[0], n[1], n[2]]
                } else {
                    [n[0]; 3]
                };
                let got = &rgb[y * stride + 4 * x..][..3];
                for c in 0..3 {
                    assert!(
                        (got[c] as i32 - want[c] as i32).abs() <= 1,
                        "{format:?} ({x}, {y}): {got:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

/// The frame `src` laid out with `pad` extra bytes per row and gaps between the planes,
/// described by a `GstVideoMeta`; also returns which bytes belong to the planes.
fn padded_copy(
    src: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    pad: usize,
) -> (gst::Buffer, Vec<bool>) {
    let rows = plane_rows(info).unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(src, info).unwrap();
    let (mut offsets, mut strides) = (Vec::new(), Vec::new());
    let mut at = 64;
    for &(row, n) in &rows {
        offsets.push(at);
        strides.push((row + pad) as i32);
        at += (row + pad) * n + 32;
    }
    let mut data = noise_bytes(at, 4242);
    let mut inside = vec![false; at];
    for (p, &(row, n)) in rows.iter().enumerate() {
        let plane = frame.plane_data(p as u32).unwrap();
        let stride = frame.plane_stride()[p] as usize;
        for r in 0..n {
            let to = offsets[p] + r * strides[p] as usize;
            data[to..to + row].copy_from_slice(&plane[r * stride..r * stride + row]);
            inside[to..to + row].fill(true);
        }
    }
    let mut buf = gst::Buffer::from_mut_slice(data);
    gst_video::VideoMeta::add_full(
        buf.get_mut().unwrap(),
        gst_video::VideoFrameFlags::empty(),
        info.format(),
        info.width(),
        info.height(),
        &offsets,
        &strides,
    )
    .unwrap();
    (buf, inside)
}

#[test]
fn padded_strides_of_converted_formats_are_read_and_drawn_in_place() {
    let (w, h) = (23, 13);
    let mut checked = 0;
    for (k, format) in converted_formats().into_iter().enumerate() {
        for overlay in DRAWERS {
            let info = video_info(format, w, h);
            if plane_rows(&info).is_none() {
                continue; // tiled, grouped or paletted: standard layout only (test above)
            }
            checked += 1;
            let standard = random_frame(&info, 900 + k as u64);
            let expected = core_on_rgb(&mut core_detector(), &standard, &info, 0);
            // Rows stay aligned to the pixel size, as a decoder's are.
            let pstride = info
                .format_info()
                .pixel_stride()
                .iter()
                .copied()
                .max()
                .unwrap();
            let (input, inside) = padded_copy(&standard, &info, 5 * pstride as usize);
            assert!(
                rgb_of(&input, &info).0 == rgb_of(&standard, &info).0,
                "{format:?}: the padded copy is another picture"
            );
            let before = bytes(&input);
            let mut hn = drawing("draw-ids=true radius=2", &info, overlay);
            hn.push(timed(input, 0)).unwrap();
            let out = hn.pull().unwrap();
            let what = format!("{format:?} {w}x{h} with padded rows (overlay element: {overlay})");
            assert_matches_core(&read_meta(&out), &expected, &what);
            let after = bytes(&out);
            assert_eq!(after.len(), before.len(), "{what}");
            assert!(after != before, "{what}: nothing drawn");
            for (j, (a, b)) in before.iter().zip(&after).enumerate() {
                assert!(inside[j] || a == b, "{what}: padding byte {j} changed");
            }
        }
    }
    assert!(checked > 140, "{checked}");
}
