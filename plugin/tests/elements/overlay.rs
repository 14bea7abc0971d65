//! The `stablekeypointsoverlay` element: the same pixels as the inference element's
//! `draw=true` (whose drawing tests, in every format family, run through this element too:
//! `tests/inference/formats.rs`), drawing after a `videoscale`, keypoints another element attached in
//! DL Streamer's layout (built here as DL Streamer's YOLOv8-pose converter builds them),
//! `min-confidence`, malformed metadata, a pipeline, and objects in their colours.

use gst::glib;
use gst::prelude::*;
use gst_video::prelude::*;
use gst_video::VideoFormat as F;
use gststablekeypoints::overlay::{palette_rgb, Style, SKELETON_RGB};

use crate::common;
use common::*;

fn info(format: F, w: u32, h: u32) -> gst_video::VideoInfo {
    init();
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// The output of `desc` for frame `seed` of random content (a picture of valid samples).
fn through(desc: &str, info: &gst_video::VideoInfo, seed: u64) -> gst::Buffer {
    let mut hn = chain_harness(desc);
    hn.set_src_caps(info.to_caps().unwrap());
    let mut b = random_frame(info, seed);
    b.make_mut().set_pts(gst::ClockTime::ZERO);
    hn.push(b).unwrap();
    hn.pull().unwrap()
}

fn bytes(b: &gst::BufferRef) -> Vec<u8> {
    b.map_readable().unwrap().to_vec()
}

#[test]
fn draws_what_the_inference_elements_draw_true_draws() {
    let pose = format!("pose={}", test_pose().display());
    for format in [
        F::I420,
        F::Nv12,
        F::Rgb,
        F::Bgrx,
        F::Y444,
        F::Yuy2,
        F::Gray8,
        F::P01010le,
    ] {
        let info = info(format, 72, 56);
        for extra in ["draw-ids=true", "radius=5 line-width=3"] {
            for with_pose in [false, true] {
                let p = if with_pose { pose.as_str() } else { "" };
                let fused = through(
                    &format!("stablekeypoints {} {p} draw=true {extra}", props()),
                    &info,
                    3,
                );
                let split = through(
                    &format!(
                        "stablekeypoints {} {p} ! stablekeypointsoverlay {extra}",
                        props()
                    ),
                    &info,
                    3,
                );
                assert!(
                    bytes(&split) == bytes(&fused),
                    "{format:?} {extra} pose {with_pose}: other pixels"
                );
                assert!(
                    bytes(&split) != bytes(&random_frame(&info, 3)),
                    "{format:?}: nothing drawn"
                );
            }
        }
    }
}

#[test]
fn draws_after_videoscale_where_the_keypoints_are_now() {
    let (w, h) = (60u32, 40u32);
    let src = info(F::Rgb, w, h);
    let scale = "videoscale ! capsfilter caps=video/x-raw,width=150,height=100";
    let plain = through(&format!("stablekeypoints {} ! {scale}", props()), &src, 8);
    let drawn = through(
        &format!(
            "stablekeypoints {} ! {scale} ! stablekeypointsoverlay radius=3",
            props()
        ),
        &src,
        8,
    );
    let big = info(F::Rgb, 150, 100);
    let meta = read_meta(&drawn);
    // The ROI box was rescaled by the scaler (about 2.5 x).
    let (bx, by, bw, bh) = read_meta(&plain).rect;
    let (x0, y0, bw0, bh0) = meta.bounding_box_in(w, h);
    assert!(
        (bx as f32 - 2.5 * x0 as f32).abs() <= 3.0 && (bw as f32 - 2.5 * bw0 as f32).abs() <= 4.0,
        "{:?} vs {:?}",
        (bx, by, bw, bh),
        (x0, y0, bw0, bh0)
    );
    let pts: Vec<(f32, f32)> = meta.keypoints.iter().map(|k| k.pixel(150, 100)).collect();
    let extent = Style::for_frame(150, 100, 3, 0).dot_extent();
    let changed = changed_pixels(&plain, &drawn, &big);
    assert!(!changed.is_empty());
    for (_, x, y) in &changed {
        assert!(
            pts.iter()
                .any(|(px, py)| (x - px).hypot(y - py) <= extent + 1.0),
            "({x}, {y}) changed, far from {pts:?}"
        );
    }
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&drawn, &big).unwrap();
    let (data, stride) = (
        frame.plane_data(0).unwrap(),
        frame.plane_stride()[0] as usize,
    );
    for (i, (k, &(px, py))) in meta.keypoints.iter().zip(&pts).enumerate() {
        let covered = pts[i + 1..]
            .iter()
            .any(|(qx, qy)| (px - qx).hypot(py - qy) <= extent + 1.0);
        let (x, y) = (px.min(149.0) as usize, py.min(99.0) as usize);
        if !covered {
            assert_eq!(
                &data[y * stride + 3 * x..][..3],
                &palette_rgb(k.id as usize),
                "keypoint {} at ({px}, {py})",
                k.id
            );
        }
    }
}

/// A DL Streamer keypoints tensor as its YOLOv8-pose converter writes one: name and
/// format `keypoints`, positions normalised to the ROI box in `data_buffer` (a GVariant of
/// bytes), `dims` [N, 2] as uints, precision FP32 (10), a confidence per point, and the
/// point names with the skeleton as name pairs.
fn dlstreamer_tensor(
    points: &[(f32, f32)],
    confidence: &[f32],
    pairs: &[(&str, &str)],
) -> gst::Structure {
    let data: Vec<u8> = points
        .iter()
        .flat_map(|&(x, y)| [x, y])
        .flat_map(f32::to_ne_bytes)
        .collect();
    let names: Vec<String> = (0..points.len()).map(|i| format!("p{i}")).collect();
    gst::Structure::builder("keypoints")
        .field("format", "keypoints")
        .field(
            "data_buffer",
            glib::Variant::array_from_fixed_array(&data[..]),
        )
        .field(
            "dims",
            gst::Array::new([(points.len() as u32).to_send_value(), 2u32.to_send_value()]),
        )
        .field("precision", 10i32)
        .field(
            "confidence",
            gst::Array::new(confidence.iter().map(|c| c.to_send_value())),
        )
        .field(
            "point_names",
            gst::Array::new(names.iter().map(|n| n.to_send_value())),
        )
        .field(
            "point_connections",
            gst::Array::new(
                pairs
                    .iter()
                    .flat_map(|(a, b)| [a.to_send_value(), b.to_send_value()]),
            ),
        )
        .build()
}

/// A grey 120x80 RGB frame with a `person` ROI at (20, 10, 80, 60) holding `tensor`.
fn dlstreamer_frame(tensor: gst::Structure) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(vec![90u8; 120 * 80 * 3]);
    let r = b.get_mut().unwrap();
    let mut roi = gst_video::VideoRegionOfInterestMeta::add(r, "person", (20, 10, 80, 60));
    roi.add_param(tensor);
    b
}

fn rgb_at(b: &gst::BufferRef, x: usize, y: usize) -> [u8; 3] {
    let m = b.map_readable().unwrap();
    let p = (y * 120 + x) * 3;
    [m[p], m[p + 1], m[p + 2]]
}

#[test]
fn draws_keypoints_another_element_attached_in_dlstreamer_layout() {
    // In the box (20, 10, 80, 60): p0 (40, 25), p1 (80, 25), p2 (60, 64) at confidence 0.3,
    // p3 at (-1, -1) (DL Streamer's "no point"), p4 (60, 46).
    let points = [
        (0.25, 0.25),
        (0.75, 0.25),
        (0.5, 0.9),
        (-1.0, -1.0),
        (0.5, 0.6),
    ];
    let confidence = [0.9, 0.8, 0.3, 0.9, 0.6];
    let pairs = [("p0", "p1"), ("p1", "p2"), ("p4", "p3")];
    let grey = [90u8; 3];
    for min in ["0.5", "0.25"] {
        init();
        let mut hn = gst_check::Harness::new("stablekeypointsoverlay");
        let el = hn.element().unwrap();
        el.set_property_from_str("min-confidence", min);
        el.set_property("radius", 3u32);
        hn.set_src_caps_str("video/x-raw,format=RGB,width=120,height=80,framerate=25/1");
        hn.push(dlstreamer_frame(dlstreamer_tensor(
            &points,
            &confidence,
            &pairs,
        )))
        .unwrap();
        let out = hn.pull().unwrap();
        assert_eq!(rgb_at(&out, 40, 25), palette_rgb(0), "{min}");
        assert_eq!(rgb_at(&out, 80, 25), palette_rgb(1), "{min}");
        assert_eq!(rgb_at(&out, 60, 46), palette_rgb(4), "{min}");
        // The line p0-p1 between the dots.
        assert_eq!(rgb_at(&out, 60, 25), SKELETON_RGB, "{min}");
        // Nothing at the -1 point's "position" or towards it; nothing near the frame's corner.
        assert_eq!(rgb_at(&out, 19, 9), grey, "{min}");
        assert_eq!(rgb_at(&out, 2, 78), grey, "{min}");
        if min == "0.5" {
            // p2 is below the threshold: no dot, and no line to it.
            assert_eq!(rgb_at(&out, 60, 64), grey);
            assert_eq!(rgb_at(&out, 70, 44), grey);
        } else {
            assert_eq!(rgb_at(&out, 60, 64), palette_rgb(2));
            // Halfway along p1 (80, 25) - p2 (60, 64).
            assert_eq!(rgb_at(&out, 70, 44), SKELETON_RGB);
        }
    }
}

#[test]
fn malformed_metadata_is_warned_about_and_not_drawn() {
    init();
    let mut hn = gst_check::Harness::new("stablekeypointsoverlay");
    let bus = gst::Bus::new();
    hn.element().unwrap().set_bus(Some(&bus));
    hn.set_src_caps_str("video/x-raw,format=RGB,width=120,height=80,framerate=25/1");
    let mut t = dlstreamer_tensor(&[(0.5, 0.5)], &[1.0], &[]);
    t.set(
        "dims",
        gst::Array::new([3u32.to_send_value(), 2u32.to_send_value()]),
    );
    let input = dlstreamer_frame(t);
    let before = bytes(&input);
    hn.push(input).unwrap();
    assert!(bytes(&hn.pull().unwrap()) == before, "drawn anyway");
    let msg = bus
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("a warning");
    let gst::MessageView::Warning(w) = msg.view() else {
        unreachable!()
    };
    assert!(w.error().to_string().contains("dims"), "{}", w.error());
}

#[test]
fn pipeline_draws_after_a_scaler_to_eos() {
    init();
    let p = gst::parse::launch(&format!(
        "videotestsrc num-buffers=4 pattern=ball ! video/x-raw,format=NV12,width=64,height=48 \
         ! stablekeypoints {} ! videoscale ! video/x-raw,width=128,height=96 \
         ! tee name=t ! queue ! stablekeypointsoverlay draw-ids=true ! fakesink name=drawn \
         t. ! queue ! fakesink name=plain",
        props()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let keep = |name: &str| {
        let store = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = store.clone();
        p.by_name(name)
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(b) = info.buffer() {
                    s.lock().unwrap().push(b.copy_deep().unwrap());
                }
                gst::PadProbeReturn::Ok
            });
        store
    };
    let (drawn, plain) = (keep("drawn"), keep("plain"));
    p.set_state(gst::State::Playing).unwrap();
    for msg in p
        .bus()
        .unwrap()
        .iter_timed(gst::ClockTime::from_seconds(60))
    {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let (drawn, plain) = (drawn.lock().unwrap(), plain.lock().unwrap());
    assert_eq!((drawn.len(), plain.len()), (4, 4));
    for (d, q) in drawn.iter().zip(plain.iter()) {
        assert_eq!(read_meta(d), read_meta(q));
        assert!(bytes(d) != bytes(q), "nothing drawn");
    }
}

#[test]
fn keypoints_survive_converters_and_scalers() {
    // GStreamer 1.22's converters and scalers keep the ROI meta but drop its parameter
    // structures; the keypoints come through in the carrier meta, unchanged.
    let src = info(F::Rgb, 48, 36);
    let before = read_meta(&through(&format!("stablekeypoints {}", props()), &src, 5));
    for after in [
        "videoconvert ! capsfilter caps=video/x-raw,format=I420",
        "videoscale ! capsfilter caps=video/x-raw,width=96,height=72",
        "videoconvert ! capsfilter caps=video/x-raw,format=NV12 ! videoscale \
         ! capsfilter caps=video/x-raw,width=24,height=18",
    ] {
        let out = through(&format!("stablekeypoints {} ! {after}", props()), &src, 5);
        let roi = out
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .find(|m| m.roi_type() == "stablekeypoints")
            .unwrap_or_else(|| panic!("{after}: the ROI meta was not kept"));
        let dropped = roi.param("keypoints").is_none();
        let (major, minor, ..) = gst::version();
        if (major, minor) < (1, 24) {
            // What the carrier is for (Debian 12's 1.22, which CI runs).
            assert!(dropped, "{after}: this GStreamer kept the ROI parameters");
        }
        if dropped {
            // Without the carrier there would be no keypoints to read.
            let mut bare = out.copy();
            gststablekeypoints::meta::carrier::remove(bare.make_mut());
            assert!(
                matches!(
                    gststablekeypoints::meta::FrameKeypoints::from_buffer(&bare),
                    Some(Err(_))
                ),
                "{after}"
            );
        }
        let m = read_meta(&out);
        assert!(
            gststablekeypoints::meta::carrier::read(&out).is_some(),
            "{after}: the carrier meta was not kept"
        );
        assert_eq!(m.keypoints, before.keypoints, "{after}");
        assert_eq!(
            (m.origin, &m.tokens),
            (before.origin, &before.tokens),
            "{after}"
        );
    }
}

#[test]
fn objects_are_drawn_each_in_its_colour_with_its_box() {
    use gststablekeypoints::meta::{semantic_tag, FrameKeypoints, KeypointMeta, ObjectMeta};
    use gststablekeypoints::overlay::object_rgb;
    let info = info(F::Rgb, 120, 80);
    let grey = [128, 128, 128];
    // Objects 1 and 2 side by side, a keypoint in the middle of each box.
    let object = |id: u64, bbox: [f32; 4]| FrameKeypoints {
        semantic_tag: semantic_tag(1),
        model: "hand".into(),
        source_width: 120,
        source_height: 80,
        keypoints: vec![KeypointMeta {
            id: 0,
            x: bbox[0] + bbox[2] / 2.0,
            y: bbox[1] + bbox[3] / 2.0,
            confidence: 1.0,
            visible: true,
        }],
        object: Some(ObjectMeta {
            id,
            label: "person".into(),
            bbox,
            roi_id: id as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let sets = [
        object(1, [0.125, 0.25, 0.25, 0.5]),
        object(2, [0.5, 0.25, 0.375, 0.5]),
    ];
    let draw = |props: &str| {
        let mut hn = gst_check::Harness::new_parse(&format!("stablekeypointsoverlay {props}"));
        hn.set_src_caps(info.to_caps().unwrap());
        let mut b = uniform_frame(&info, grey);
        FrameKeypoints::attach_all(&sets, b.make_mut());
        hn.push(b).unwrap();
        hn.pull().unwrap()
    };
    let out = draw("radius=3 line-width=2");
    let (c1, c2) = (object_rgb(1), object_rgb(2));
    assert_ne!(c1, c2);
    // Boxes: x 15..45 and 60..105, y 20..60, outlined through their edge pixels.
    for (c, [x0, x1]) in [(c1, [15, 45]), (c2, [60, 105])] {
        let mid = (x0 + x1) / 2;
        assert_eq!(rgb_at(&out, mid, 20), c, "top side");
        assert_eq!(rgb_at(&out, mid, 59), c, "bottom side");
        assert_eq!(rgb_at(&out, x0, 30), c, "left side");
        assert_eq!(rgb_at(&out, x1 - 1, 30), c, "right side");
        // The keypoint in the middle, in the object's colour; inside the box, untouched.
        assert_eq!(rgb_at(&out, mid, 40), c, "keypoint");
        assert_eq!(rgb_at(&out, mid, 28), grey, "inside");
    }
    // Outside the boxes nothing is drawn.
    assert_eq!(rgb_at(&out, 52, 40), grey);
    assert_eq!(rgb_at(&out, 5, 5), grey);
    // With ids, each id's label (white digits on black) above its box.
    let ids = draw("radius=3 line-width=2 draw-ids=true");
    for x0 in [15, 60] {
        let label: Vec<[u8; 3]> = (0..10)
            .flat_map(|dy| (0..8).map(move |dx| (x0 + dx, 8 + dy)))
            .map(|(x, y)| rgb_at(&ids, x, y))
            .collect();
        assert!(label.contains(&[0, 0, 0]) && label.contains(&[255, 255, 255]));
    }
    assert_eq!(rgb_at(&out, 16, 9), grey, "no label without draw-ids");
}
