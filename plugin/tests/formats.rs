//! Every raw format (issue 12): the formats the core does not read go to the model through
//! GStreamer's converter and are drawn by blending. Keypoints equal the core's on the frame
//! converted to RGB, `draw=false` leaves the bytes alone, drawing reads in every format
//! family, padding is never touched, and the literal `filesrc ! decodebin ! stablekeypoints`
//! pipeline runs on clips that real encoders make in those formats.

use gst::prelude::*;
use gst_video::prelude::*;
use gst_video::VideoFormat as F;
use gststablekeypoints::convert::ToRgb;
use gststablekeypoints::overlay::{palette_rgb, Dot, Overlay, Style};
use stablekeypoints::{DetectOptions, Detector};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod common;
use common::*;

fn core_detector() -> Detector {
    core_detector_with(DetectOptions::default())
}

fn video_info(format: F, w: u32, h: u32) -> gst_video::VideoInfo {
    init();
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

fn timed(mut buf: gst::Buffer, i: u64) -> gst::Buffer {
    let b = buf.make_mut();
    b.set_pts(gst::ClockTime::from_mseconds(40 * i));
    b.set_duration(gst::ClockTime::from_mseconds(40));
    buf
}

fn harness(extra: &str, info: &gst_video::VideoInfo) -> gst_check::Harness {
    init();
    let element = gst::ElementFactory::make("stablekeypoints")
        .property("model", model_dir().to_str().unwrap())
        .property("tokens", tokens_path().to_str().unwrap())
        .build()
        .unwrap();
    for kv in extra.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap();
        element.set_property_from_str(k, v);
    }
    let mut hn = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    hn.set_src_caps(info.to_caps().unwrap());
    hn
}

/// Who draws: the inference element's `draw=true`, or `stablekeypointsoverlay` after it.
const DRAWERS: [bool; 2] = [false, true];

/// A harness drawing with `props` (`draw-ids`, `radius`, ...) into frames of `info`: with
/// `draw=true` on the inference element, or (`overlay`) by the overlay element after it.
fn drawing(props: &str, info: &gst_video::VideoInfo, overlay: bool) -> gst_check::Harness {
    if !overlay {
        return harness(&format!("draw=true {props}"), info);
    }
    let mut hn = chain_harness(&format!(
        "stablekeypoints {} ! stablekeypointsoverlay {props}",
        common::props()
    ));
    hn.set_src_caps(info.to_caps().unwrap());
    hn
}

fn converted_formats() -> Vec<F> {
    element_formats()
        .into_iter()
        .filter(|&f| !is_native(f))
        .collect()
}

fn bytes(buf: &gst::BufferRef) -> Vec<u8> {
    buf.map_readable().unwrap().to_vec()
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

/// Writes sample `v` (of `bytes` bytes, little-endian) at byte `at`.
fn put(data: &mut [u8], at: usize, bytes: usize, v: u16) {
    data[at..at + bytes].copy_from_slice(&v.to_le_bytes()[..bytes]);
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

#[test]
fn conversion_to_rgb_matches_hand_computed_values() {
    init();
    const BT601: (f32, f32) = (0.299, 0.114);
    const BT709: (f32, f32) = (0.2126, 0.0722);
    let (w, h) = (22usize, 14usize);
    let noise = &noise_bytes(w * h * 3, 77);
    // Luma varies per pixel; chroma varies per pixel in 4:4:4, and is one value per frame
    // where it is subsampled (so that the converter's chroma interpolation is exact).
    let luma = move |x: usize, y: usize, bits: u32| {
        let n = noise[(y * w + x) * 3] as u32;
        ((16 + n * 219 / 255) << (bits - 8)) as u16
    };
    let chroma = move |x: usize, y: usize, c: usize, bits: u32| {
        let n = noise[(y * w + x) * 3 + 1 + c] as u32;
        ((16 + n * 224 / 255) << (bits - 8)) as u16
    };
    let (cu, cv) = (90u16, 170u16);
    // (format, colorimetry, bits, subsampled, writer of (data, strides, offsets, x, y))
    type Writer<'a> = Box<dyn Fn(&mut [u8], &[i32], &[usize], usize, usize) + 'a>;
    let cases: Vec<(F, &str, u32, bool, Writer)> = vec![
        (
            F::Y444,
            "bt601",
            8,
            false,
            Box::new(move |d, s, o, x, y| {
                d[o[0] + y * s[0] as usize + x] = luma(x, y, 8) as u8;
                d[o[1] + y * s[1] as usize + x] = chroma(x, y, 0, 8) as u8;
                d[o[2] + y * s[2] as usize + x] = chroma(x, y, 1, 8) as u8;
            }),
        ),
        (
            F::Y44410le,
            "bt709",
            10,
            false,
            Box::new(move |d, s, o, x, y| {
                put(d, o[0] + y * s[0] as usize + 2 * x, 2, luma(x, y, 10));
                put(d, o[1] + y * s[1] as usize + 2 * x, 2, chroma(x, y, 0, 10));
                put(d, o[2] + y * s[2] as usize + 2 * x, 2, chroma(x, y, 1, 10));
            }),
        ),
        (
            F::I42010le,
            "bt709",
            10,
            true,
            Box::new(move |d, s, o, x, y| {
                put(d, o[0] + y * s[0] as usize + 2 * x, 2, luma(x, y, 10));
                let (cx, cy) = (x / 2, y / 2);
                put(d, o[1] + cy * s[1] as usize + 2 * cx, 2, cu << 2);
                put(d, o[2] + cy * s[2] as usize + 2 * cx, 2, cv << 2);
            }),
        ),
        (
            F::P01010le,
            "bt709",
            10,
            true,
            Box::new(move |d, s, o, x, y| {
                // 10 bits in the high bits of 16.
                put(d, o[0] + y * s[0] as usize + 2 * x, 2, luma(x, y, 10) << 6);
                let (cx, cy) = (x / 2, y / 2);
                put(d, o[1] + cy * s[1] as usize + 4 * cx, 2, (cu << 2) << 6);
                put(d, o[1] + cy * s[1] as usize + 4 * cx + 2, 2, (cv << 2) << 6);
            }),
        ),
        (
            F::Nv21,
            "bt601",
            8,
            true,
            Box::new(move |d, s, o, x, y| {
                d[o[0] + y * s[0] as usize + x] = luma(x, y, 8) as u8;
                let (cx, cy) = (x / 2, y / 2);
                d[o[1] + cy * s[1] as usize + 2 * cx] = cv as u8;
                d[o[1] + cy * s[1] as usize + 2 * cx + 1] = cu as u8;
            }),
        ),
        (
            F::Yuy2,
            "bt601",
            8,
            true,
            Box::new(move |d, s, o, x, y| {
                let p = o[0] + y * s[0] as usize + 2 * x;
                d[p] = luma(x, y, 8) as u8;
                d[p + 1] = if x % 2 == 0 { cu } else { cv } as u8;
            }),
        ),
        (
            F::Uyvy,
            "bt709",
            8,
            true,
            Box::new(move |d, s, o, x, y| {
                let p = o[0] + y * s[0] as usize + 2 * x;
                d[p + 1] = luma(x, y, 8) as u8;
                d[p] = if x % 2 == 0 { cu } else { cv } as u8;
            }),
        ),
    ];
    for (format, colorimetry, bits, subsampled, write) in cases {
        let info = gst_video::VideoInfo::builder(format, w as u32, h as u32)
            .fps(gst::Fraction::new(25, 1))
            .colorimetry(&colorimetry.parse().unwrap())
            .build()
            .unwrap();
        let mut data = vec![0u8; info.size()];
        for y in 0..h {
            for x in 0..w {
                write(&mut data, info.stride(), info.offset(), x, y);
            }
        }
        let buf = gst::Buffer::from_mut_slice(data);
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        let mut to_rgb = ToRgb::new(&info).unwrap();
        let stride = to_rgb.stride();
        let rgb = to_rgb.convert(&[frame]).unwrap();
        let k = if colorimetry == "bt601" { BT601 } else { BT709 };
        let mut worst = 0f32;
        for y in 0..h {
            for x in 0..w {
                let (u, v) = if subsampled {
                    ((cu as u32) << (bits - 8), (cv as u32) << (bits - 8))
                } else {
                    (chroma(x, y, 0, bits) as u32, chroma(x, y, 1, bits) as u32)
                };
                let want = yuv_rgb(luma(x, y, bits) as f32, u as f32, v as f32, bits, k);
                let got = &rgb[0][y * stride + 4 * x..][..3];
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
    // Grey and planar RGB: samples copied (grey full range: R = G = B = Y).
    for format in [F::Gray8, F::Gray16Le, F::Gbr] {
        let info = video_info(format, w as u32, h as u32);
        let mut data = vec![0u8; info.size()];
        let (s, o) = (info.stride(), info.offset());
        for y in 0..h {
            for x in 0..w {
                let n = &noise[(y * w + x) * 3..][..3];
                match format {
                    F::Gray8 => data[o[0] + y * s[0] as usize + x] = n[0],
                    F::Gray16Le => put(
                        &mut data,
                        o[0] + y * s[0] as usize + 2 * x,
                        2,
                        n[0] as u16 * 257,
                    ),
                    _ => {
                        // Planes G, B, R.
                        for (p, c) in [(0, 1), (1, 2), (2, 0)] {
                            data[o[p] + y * s[p] as usize + x] = n[c];
                        }
                    }
                }
            }
        }
        let buf = gst::Buffer::from_mut_slice(data);
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        let mut to_rgb = ToRgb::new(&info).unwrap();
        let stride = to_rgb.stride();
        let rgb = to_rgb.convert(&[frame]).unwrap();
        for y in 0..h {
            for x in 0..w {
                let n = &noise[(y * w + x) * 3..][..3];
                let want = if format == F::Gbr {
                    [n[0], n[1], n[2]]
                } else {
                    [n[0]; 3]
                };
                let got = &rgb[0][y * stride + 4 * x..][..3];
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

fn luma([r, g, b]: [u8; 3]) -> f32 {
    0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
}

fn pixel(rgb: &[u8], stride: usize, x: usize, y: usize) -> [u8; 3] {
    let p = y * stride + 3 * x;
    [rgb[p], rgb[p + 1], rgb[p + 2]]
}

/// One format of each family, converted and native.
const DRAW_FORMATS: [F; 23] = [
    // planar YUV, 8 and 10 bit
    F::Y444,
    F::Y42b,
    F::I420,
    F::Yv12,
    F::I42010le,
    F::I42210le,
    F::Y44410le,
    // semi-planar
    F::Nv12,
    F::Nv21,
    F::Nv16,
    F::P01010le,
    // packed YUV
    F::Yuy2,
    F::Uyvy,
    F::V210,
    F::Ayuv,
    // grey
    F::Gray8,
    F::Gray16Le,
    // RGB
    F::Rgb,
    F::Bgrx,
    F::Gbr,
    F::Rgb16,
    F::Argb64,
    F::Bgr10a2Le,
];

#[test]
fn drawing_shows_the_dots_near_the_keypoints_only_in_every_family() {
    let (w, h) = (90u32, 60u32);
    let style = Style::for_frame(w as usize, h as usize, 3, 0);
    for (format, overlay) in DRAW_FORMATS
        .into_iter()
        .flat_map(|f| DRAWERS.map(|o| (f, o)))
    {
        let info = video_info(format, w, h);
        let finfo = info.format_info();
        let sub = (0..finfo.n_components() as usize)
            .map(|c| finfo.w_sub()[c].max(finfo.h_sub()[c]))
            .max()
            .unwrap() as f32;
        let grey = finfo.is_gray();
        let mut hn = drawing("radius=3", &info, overlay);
        let input = timed(random_frame(&info, 31), 0);
        let (before, stride) = rgb_of(&input, &info);
        hn.push(input).unwrap();
        let out = hn.pull().unwrap();
        let (after, _) = rgb_of(&out, &info);
        let meta = read_meta(&out);
        let dots: Vec<(usize, f32, f32)> = meta
            .keypoints
            .iter()
            .map(|k| {
                let (x, y) = k.pixel(w, h);
                (
                    k.id as usize,
                    x.clamp(0.0, w as f32 - 0.5),
                    y.clamp(0.0, h as f32 - 0.5),
                )
            })
            .collect();
        // Subsampled chroma spreads a change over its sample's pixels.
        // (and the conversion back to RGB interpolates it over one more sample).
        let reach = style.dot_extent() + 1.0 + 2.0 * (2f32.powf(sub) - 1.0);
        let mut changed = 0;
        for y in 0..h as usize {
            for x in 0..w as usize {
                if pixel(&before, stride, x, y) == pixel(&after, stride, x, y) {
                    continue;
                }
                changed += 1;
                let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
                assert!(
                    dots.iter()
                        .any(|&(_, px, py)| (cx - px).hypot(cy - py) <= reach),
                    "{format:?}: ({x}, {y}) changed, far from every keypoint {dots:?}"
                );
            }
        }
        assert!(changed > 0, "{format:?}: nothing drawn");
        // The centre of each dot (not covered by a later one) has the id's colour.
        for (i, &(id, px, py)) in dots.iter().enumerate() {
            let covered = dots[i + 1..]
                .iter()
                .any(|&(_, qx, qy)| (px - qx).hypot(py - qy) <= style.dot_extent() + 1.0);
            if covered {
                continue;
            }
            let got = pixel(&after, stride, px as usize, py as usize);
            let want = palette_rgb(id);
            let close = if grey {
                (luma(got) - luma(want)).abs() <= 8.0
            } else {
                (0..3).all(|c| (got[c] as i32 - want[c] as i32).abs() <= 24)
            };
            assert!(
                close,
                "{format:?}: dot {id} at ({px}, {py}) is {got:?}, not {want:?}"
            );
        }
    }
}

#[test]
fn id_labels_read_on_white_and_yellow_in_every_family() {
    let (w, h) = (90u32, 60u32);
    let style = Style::for_frame(w as usize, h as usize, 3, 0);
    for (format, overlay) in DRAW_FORMATS
        .into_iter()
        .flat_map(|f| DRAWERS.map(|o| (f, o)))
    {
        let info = video_info(format, w, h);
        for bg in [[255u8, 255, 255], [255, 255, 0]] {
            let mut hn = drawing("draw-ids=true radius=3", &info, overlay);
            // The labels are where the element's layout put them: recomputed below from
            // the keypoints in the metadata.
            let input = timed(uniform_frame(&info, bg), 0);
            let bg_luma = luma(pixel(&rgb_of(&input, &info).0, 0, 0, 0));
            hn.push(input).unwrap();
            let out = hn.pull().unwrap();
            let (rgb, stride) = rgb_of(&out, &info);
            let meta = read_meta(&out);
            let dots: Vec<Dot> = meta
                .keypoints
                .iter()
                .map(|k| {
                    let (x, y) = k.pixel(w, h);
                    Dot {
                        id: k.id as usize,
                        x,
                        y,
                    }
                })
                .collect();
            let o = Overlay::new(w as usize, h as usize, style, &dots, true, &[]);
            assert_eq!(o.labels.len(), dots.len(), "{format:?}");
            for l in &o.labels {
                assert!(
                    l.x0 >= 0 && l.y0 >= 0 && l.x1 <= w as i64 && l.y1 <= h as i64,
                    "{format:?}: label {l:?} outside the frame"
                );
                let (mut dark, mut light) = (0, 0);
                for y in l.y0..l.y1 {
                    for x in l.x0..l.x1 {
                        let v = luma(pixel(&rgb, stride, x as usize, y as usize));
                        if v < 80.0 {
                            dark += 1;
                        } else if v > 170.0 {
                            light += 1;
                        }
                    }
                }
                let area = (l.x1 - l.x0) * (l.y1 - l.y0);
                let what = format!("{format:?} on {bg:?}: label {l:?}");
                // A black box (most of it) with white digits (at least the 7 cells of a
                // "1"), nothing in between, standing out from the background.
                assert_eq!(dark + light, area, "{what}: {dark} dark, {light} light");
                assert!(
                    dark * 2 > area && light >= 7,
                    "{what}: {dark} dark, {light} light"
                );
                assert!(bg_luma - 80.0 > 120.0, "{what}: background {bg_luma}");
            }
        }
    }
}

/// Encodes a short clip with `encode` (a gst-launch fragment from raw video to a muxed
/// stream) into `name`.
fn encode(name: &str, encode: &str) -> PathBuf {
    let path = scratch().join(name);
    let desc = format!(
        "videotestsrc num-buffers=3 pattern=ball ! video/x-raw,width=64,height=48,framerate=10/1 \
         ! videoconvert ! {encode} ! filesink location={}",
        path.display()
    );
    init();
    let p = gst::parse::launch(&desc)
        .unwrap_or_else(|e| panic!("{desc}: {e} (scripts/install-deps.sh installs the encoders)"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    run(&p).unwrap_or_else(|e| panic!("{desc}: {e}"));
    path
}

/// Plays a pipeline to EOS; the error text otherwise.
fn run(p: &gst::Pipeline) -> Result<(), String> {
    p.set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let bus = p.bus().unwrap();
    let mut result = Err("no EOS within 120 s".to_string());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                result = Ok(());
                break;
            }
            gst::MessageView::Error(e) => {
                result = Err(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    result
}

/// What went into and came out of the element in a pipeline.
struct Seen {
    caps: Option<gst::Caps>,
    inputs: Vec<gst::Buffer>,
    outputs: Vec<gst::Buffer>,
}

/// Runs the literal `filesrc ! decodebin ! stablekeypoints ! fakesink` on `clip`.
fn decode_through_element(clip: &std::path::Path, extra: &str) -> Seen {
    init();
    let desc = format!(
        "filesrc location={} ! decodebin ! stablekeypoints name=skp {} {extra} ! fakesink name=sink",
        clip.display(),
        props()
    );
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen {
        caps: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
    }));
    let sink_pad = p.by_name("skp").unwrap().static_pad("sink").unwrap();
    let s = seen.clone();
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(b) = info.buffer() {
            let mut s = s.lock().unwrap();
            s.caps = pad.current_caps();
            s.inputs.push(b.copy_deep().unwrap());
        }
        gst::PadProbeReturn::Ok
    });
    let out_pad = p.by_name("sink").unwrap().static_pad("sink").unwrap();
    let s = seen.clone();
    out_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(b) = info.buffer() {
            s.lock().unwrap().outputs.push(b.copy());
        }
        gst::PadProbeReturn::Ok
    });
    run(&p).unwrap_or_else(|e| panic!("{desc}: {e}"));
    let mut s = seen.lock().unwrap();
    Seen {
        caps: s.caps.take(),
        inputs: std::mem::take(&mut s.inputs),
        outputs: std::mem::take(&mut s.outputs),
    }
}

#[test]
fn decodebin_pipelines_run_on_what_real_encoders_give() {
    // (clip, encoder fragment, the format decodebin must give for the test to cover it)
    let clips: [(&str, &str, F); 12] = [
        ("x264-default.mp4", "x264enc ! mp4mux", F::Y44410le),
        (
            "x264-444.mp4",
            "video/x-raw,format=Y444 ! x264enc ! mp4mux",
            F::Y444,
        ),
        (
            "x264-422.mp4",
            "video/x-raw,format=Y42B ! x264enc ! mp4mux",
            F::Y42b,
        ),
        (
            "x264-420-10.mp4",
            "video/x-raw,format=I420_10LE ! x264enc ! mp4mux",
            F::I42010le,
        ),
        (
            "x264-422-10.mp4",
            "video/x-raw,format=I422_10LE ! x264enc ! mp4mux",
            F::I42210le,
        ),
        (
            "x265-420-10.mkv",
            "video/x-raw,format=I420_10LE ! x265enc ! h265parse ! matroskamux",
            F::I42010le,
        ),
        ("theora.ogg", "theoraenc ! oggmux", F::Y444),
        ("vp9.webm", "vp9enc ! webmmux", F::Y44412le),
        (
            "jpeg-grey.avi",
            "video/x-raw,format=GRAY8 ! jpegenc ! avimux",
            F::Gray8,
        ),
        ("yuy2.mkv", "video/x-raw,format=YUY2 ! matroskamux", F::Yuy2),
        ("uyvy.mkv", "video/x-raw,format=UYVY ! matroskamux", F::Uyvy),
        ("ffv1.mkv", "avenc_ffv1 ! matroskamux", F::Gbra12le),
    ];
    for (name, fragment, format) in clips {
        let clip = encode(name, fragment);
        let seen = decode_through_element(&clip, "");
        let mut det = core_detector();
        let info = gst_video::VideoInfo::from_caps(&seen.caps.expect("negotiated")).unwrap();
        assert_eq!(
            info.format(),
            format,
            "{name}: decodebin gives another format"
        );
        assert_eq!(seen.outputs.len(), 3, "{name}");
        for (i, (inp, out)) in seen.inputs.iter().zip(&seen.outputs).enumerate() {
            let what = format!("{name} ({format:?}) frame {i}");
            assert_matches_core(
                &read_meta(out),
                &core_on_rgb(&mut det, inp, &info, i as u64),
                &what,
            );
            assert!(
                bytes(out) == bytes(inp),
                "{what}: bytes changed with draw=false"
            );
        }
        let drawn = decode_through_element(&clip, "draw=true draw-ids=true");
        assert_eq!(drawn.outputs.len(), 3, "{name}");
        for (inp, out) in drawn.inputs.iter().zip(&drawn.outputs) {
            assert!(bytes(out) != bytes(inp), "{name}: nothing drawn");
        }
    }
    // No software decoder gives P010 (hardware ones do): the same checks from videotestsrc.
    init();
    let p = gst::parse::launch(&format!(
        "videotestsrc num-buffers=2 pattern=ball ! video/x-raw,format=P010_10LE,width=64,height=48 \
         ! stablekeypoints {} draw=true ! fakesink",
        props()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    run(&p).unwrap();
}
