//! Per-frame cost of the element's format handling (median of `RUNS`):
//! - drawing 10 keypoints with ids and an 18-joint skeleton natively into RGB/I420/NV12
//!   frames, at 320x240 and 1920x1080 (the default, frame-relative sizes);
//! - for the formats the core does not read, at 1920x1080: the conversion to RGB for the
//!   model input, and drawing the same overlay by blending it into the frame;
//! - the `stablekeypointsoverlay` element at 1920x1080, per frame from push to pull:
//!   reading the metadata (the same keypoints and skeleton), laying it out and drawing it,
//!   in native formats and in blended ones.
//!
//! cargo run --release -p gst-plugin-stablekeypoints --example bench-overlay

use gst_video::prelude::*;
use gst_video::VideoFormat as F;
use gststablekeypoints::convert::ToRgb;
use gststablekeypoints::meta::{FrameKeypoints, KeypointMeta, LandmarkMeta, PoseMeta};
use gststablekeypoints::overlay::{Blender, Canvas, Dot, Layout, Overlay, Skeleton, Style, Yuv};
use std::time::Instant;

const RUNS: usize = 50;

/// Converted formats timed: what decoders and cameras commonly give.
const CONVERTED: [F; 20] = [
    F::Y444,
    F::Y42b,
    F::Nv21,
    F::Nv16,
    F::Yuy2,
    F::Uyvy,
    F::Gray8,
    F::Gray16Le,
    F::I42010le,
    F::I42210le,
    F::Y44410le,
    F::P01010le,
    F::I42012le,
    F::Y44412le,
    F::V210,
    F::Ayuv,
    F::Gbr,
    F::Gbr10le,
    F::Gbra12le,
    F::Rgb16,
];

/// Normalised positions of the 10 keypoints and the 18 joints drawn.
fn keypoint_at(i: usize) -> (f32, f32) {
    (0.1 + 0.08 * i as f32, 0.5 + 0.3 * ((i as f32) * 0.7).sin())
}

fn joint_at(i: usize) -> (f32, f32) {
    (0.2 + 0.03 * i as f32, 0.2 + 0.04 * i as f32)
}

fn overlay(w: usize, h: usize) -> Overlay {
    let dots: Vec<Dot> = (0..10)
        .map(|i| {
            let (x, y) = keypoint_at(i);
            Dot {
                id: i,
                x: x * w as f32,
                y: y * h as f32,
            }
        })
        .collect();
    let joints: Vec<(f32, f32)> = (0..18)
        .map(|i| {
            let (x, y) = joint_at(i);
            (x * w as f32, y * h as f32)
        })
        .collect();
    let bones: Vec<[u32; 2]> = (0..17).map(|i| [i, i + 1]).collect();
    Overlay::new(
        w,
        h,
        Style::for_frame(w, h, 0, 0),
        &dots,
        true,
        &[Skeleton {
            points: &joints,
            connections: &bones,
            joints: true,
        }],
    )
}

/// The same drawing as metadata on a frame, for the element.
fn metadata(w: u32, h: u32) -> FrameKeypoints {
    FrameKeypoints {
        source_width: w,
        source_height: h,
        keypoints: (0..10)
            .map(|i| {
                let (x, y) = keypoint_at(i);
                KeypointMeta {
                    id: i as u32,
                    x,
                    y,
                    confidence: 0.03,
                    visible: true,
                }
            })
            .collect(),
        pose: Some(PoseMeta {
            landmarks: (0..18)
                .map(|i| {
                    let (x, y) = joint_at(i);
                    LandmarkMeta {
                        name: format!("j{i}"),
                        x,
                        y,
                    }
                })
                .collect(),
            connections: (0..17).map(|i| [i, i + 1]).collect(),
        }),
        ..Default::default()
    }
}

/// Median of `f` over `RUNS` runs, each on what `setup` made (not timed).
fn median_with<T>(mut setup: impl FnMut() -> T, mut f: impl FnMut(T)) -> f64 {
    f(setup());
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let input = setup();
            let t = Instant::now();
            f(input);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn median(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

/// A frame of `format` holding a smooth test picture (valid samples for every format).
fn test_frame(format: F, w: u32, h: u32) -> (gst_video::VideoInfo, gst::Buffer) {
    let rgb_info = gst_video::VideoInfo::builder(F::Rgb, w, h).build().unwrap();
    let mut rgb = gst::Buffer::with_size(rgb_info.size()).unwrap();
    {
        let mut frame =
            gst_video::VideoFrameRef::from_buffer_ref_writable(rgb.get_mut().unwrap(), &rgb_info)
                .unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data_mut(0).unwrap();
        for y in 0..h as usize {
            for x in 0..w as usize {
                let p = y * stride + 3 * x;
                data[p] = (x * 255 / w as usize) as u8;
                data[p + 1] = (y * 255 / h as usize) as u8;
                data[p + 2] = ((x + y) % 256) as u8;
            }
        }
    }
    let info = gst_video::VideoInfo::builder(format, w, h).build().unwrap();
    let mut out = gst::Buffer::with_size(info.size()).unwrap();
    let conv = gst_video::VideoConverter::new(&rgb_info, &info, None).unwrap();
    let src = gst_video::VideoFrameRef::from_buffer_ref_readable(rgb.as_ref(), &rgb_info).unwrap();
    let mut dest =
        gst_video::VideoFrameRef::from_buffer_ref_writable(out.get_mut().unwrap(), &info).unwrap();
    conv.frame_ref(&src, &mut dest);
    drop(dest);
    (info, out)
}

fn main() {
    gst::init().unwrap();
    native_drawing();
    let (w, h) = (1920u32, 1080u32);
    converted_formats(w, h);
    gststablekeypoints::plugin_register_static().unwrap();
    element(w, h);
}

/// The canvas drawing each native layout, at two sizes.
fn native_drawing() {
    println!(
        "native drawing: 10 keypoints + ids + 18-joint skeleton, default sizes (median of {RUNS})"
    );
    for (w, h) in [(320usize, 240usize), (1920, 1080)] {
        let o = overlay(w, h);
        for (name, layout) in [
            (
                "RGB",
                Layout::Packed {
                    bpp: 3,
                    rgb: [0, 1, 2],
                    alpha: None,
                },
            ),
            ("I420", Layout::I420),
            ("NV12", Layout::Nv12),
        ] {
            let (mut p0, mut p1, mut p2) = match layout {
                Layout::Packed { bpp, .. } => (vec![0u8; w * h * bpp], vec![], vec![]),
                Layout::Nv12 => (vec![0u8; w * h], vec![0u8; w * h / 2], vec![]),
                _ => (vec![0u8; w * h], vec![0u8; w * h / 4], vec![0u8; w * h / 4]),
            };
            let strides = match layout {
                Layout::Packed { bpp, .. } => [w * bpp, 0, 0],
                Layout::Nv12 => [w, w, 0],
                _ => [w, w / 2, w / 2],
            };
            let t = median(|| {
                Canvas {
                    layout,
                    width: w,
                    height: h,
                    planes: [
                        (&mut p0[..], strides[0]),
                        (&mut p1[..], strides[1]),
                        (&mut p2[..], strides[2]),
                    ],
                    yuv: Yuv::default(),
                    origin: (0, 0),
                }
                .render(&o);
            });
            println!("  {w:>4}x{h:<4} {name:>4}: {t:8.1} us");
        }
    }
}

/// Conversion to RGB and blended drawing of the formats drawn through RGB.
fn converted_formats(w: u32, h: u32) {
    let o = overlay(w as usize, h as usize);
    println!(
        "converted formats at {w}x{h}: to RGB for the model, and drawing the same overlay by \
         blending (median of {RUNS})"
    );
    for format in CONVERTED {
        let (info, mut buf) = test_frame(format, w, h);
        let mut to_rgb = ToRgb::new(&info).unwrap();
        let convert = median(|| {
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
            to_rgb.convert(&[frame]).unwrap();
        });
        let mut blender = Blender::default();
        let draw = median(|| {
            let mut frame =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buf.get_mut().unwrap(), &info)
                    .unwrap();
            blender.blend(&mut frame, &o, Yuv::default()).unwrap();
        });
        println!(
            "  {:>10}: to RGB {:7.2} ms, blended drawing {:6.2} ms",
            format.to_str(),
            convert / 1e3,
            draw / 1e3
        );
    }
}

/// The element, push to pull, per format.
fn element(w: u32, h: u32) {
    println!(
        "stablekeypointsoverlay draw-ids=true at {w}x{h}, push to pull: metadata read, layout and \
         drawing of the same overlay (median of {RUNS})"
    );
    let meta = metadata(w, h);
    for format in [
        F::I420,
        F::Nv12,
        F::Rgb,
        F::Bgrx,
        F::Y444,
        F::Yuy2,
        F::Nv21,
        F::I42010le,
    ] {
        let (info, frame) = test_frame(format, w, h);
        let mut hn = gst_check::Harness::new("stablekeypointsoverlay");
        hn.element().unwrap().set_property("draw-ids", true);
        hn.set_src_caps(info.to_caps().unwrap());
        let t = median_with(
            || {
                let mut b = frame.copy_deep().unwrap();
                meta.attach(b.get_mut().unwrap());
                b
            },
            |b| {
                hn.push(b).unwrap();
                hn.pull().unwrap();
            },
        );
        let how = if matches!(format, F::I420 | F::Nv12 | F::Rgb | F::Bgrx) {
            "native"
        } else {
            "blended"
        };
        println!("  {:>10} ({how}): {:6.2} ms", format.to_str(), t / 1e3);
    }
}
