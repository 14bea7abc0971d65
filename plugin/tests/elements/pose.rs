//! The `stablekeypointspose` element: landmarks equal to the core regression (and to the
//! inference element's `pose`), the tokens' identity in the metadata checked against the
//! pose file, clear errors for bad files, metadata rewritten in place, and each object's
//! landmarks regressed in its own box. The skeleton drawing through this element and the
//! overlay is in `tests/inference/`
//! (`pose_skeleton_is_drawn_along_its_segments_and_nowhere_else`).

use gst::prelude::*;
use gststablekeypoints::meta::{
    dlstreamer::TensorKeypoints, semantic_tag, FrameKeypoints, KeypointMeta, ObjectMeta, Origin,
    TokenIdentity,
};
use stablekeypoints::Tokens;

use crate::common;
use common::*;

fn rgb_info(w: u32, h: u32) -> gst_video::VideoInfo {
    init();
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// The buffers of `n` random frames through a chain.
fn through(desc: &str, info: &gst_video::VideoInfo, n: u64) -> Vec<gst::Buffer> {
    let mut hn = chain_harness(desc);
    hn.set_src_caps(info.to_caps().unwrap());
    (0..n)
        .map(|i| {
            let mut b = gst::Buffer::from_mut_slice(noise_bytes(info.size(), 500 + i));
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(40 * i));
            hn.push(b).unwrap();
            hn.pull().unwrap()
        })
        .collect()
}

#[test]
fn landmarks_equal_the_core_regression_and_the_inference_elements_pose() {
    let info = rgb_info(64, 48);
    let pose = format!("pose={}", test_pose().display());
    let split = through(
        &format!("stablekeypoints {} ! stablekeypointspose {pose}", props()),
        &info,
        4,
    );
    let fused = through(&format!("stablekeypoints {} {pose}", props()), &info, 4);
    let mut spread = 0.0f64;
    for (b, f) in split.iter().zip(&fused) {
        let meta = read_meta(b);
        let p = meta.pose.as_ref().expect("pose metadata");
        let names: Vec<&str> = p.landmarks.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, POSE_NAMES);
        assert_eq!(p.connections, [[0, 1], [1, 2], [2, 3]]);
        let (core, hand) = expected_landmarks(&meta);
        for (j, l) in p.landmarks.iter().enumerate() {
            let (x, y) = (l.x as f64, l.y as f64);
            assert!(
                (x - core[j][0]).abs() < 1e-6 && (y - core[j][1]).abs() < 1e-6,
                "landmark {j}: {l:?} vs core {:?}",
                core[j]
            );
            assert!(
                (x - hand[j].0).abs() < 1e-6 && (y - hand[j].1).abs() < 1e-6,
                "landmark {j}: {l:?} vs hand {:?}",
                hand[j]
            );
        }
        // The same code as the inference element's `pose`: the same metadata.
        assert_eq!(meta, read_meta(f));
        // DL Streamer's landmark tensor came with it.
        let roi = b
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .next()
            .unwrap();
        let t = TensorKeypoints::from_structure(roi.param("dlstreamer-pose").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(t.names, POSE_NAMES);
        spread += (p.landmarks[0].x - p.landmarks[1].x).abs() as f64;
    }
    assert!(spread > 0.0, "the landmarks do not move with the keypoints");
}

#[test]
fn a_pose_recording_the_tokens_fingerprint_is_accepted() {
    let info = rgb_info(32, 32);
    let hash = Tokens::load(&tokens_path()).unwrap().fingerprint();
    let pose = pose_with_hash("pose-element-right-hash.json", &hash);
    let desc = |p: &str| format!("stablekeypoints {} {p}", props());
    let split = through(
        &format!("{} ! stablekeypointspose pose={}", desc(""), pose.display()),
        &info,
        1,
    );
    let fused = through(&desc(&format!("pose={}", pose.display())), &info, 1);
    assert!(read_meta(&split[0]).pose.is_some());
    assert_eq!(read_meta(&split[0]), read_meta(&fused[0]));
}

#[test]
fn the_metadata_names_its_tokens() {
    let info = rgb_info(32, 32);
    let tokens = Tokens::load(&tokens_path()).unwrap();
    let b = &through(&format!("stablekeypoints {}", props()), &info, 1)[0];
    let ids = read_meta(b).tokens.expect("token identity");
    let want: Vec<u32> = tokens.indices.iter().map(|&i| i as u32).collect();
    assert_eq!(ids.indices, want);
    assert_eq!(ids.hash, tokens.fingerprint());
}

#[test]
fn bad_or_mismatched_pose_files_are_errors_naming_the_file() {
    init();
    let cases = bad_pose_cases("pose-element");
    for (path, why) in cases {
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers=2 ! video/x-raw,width=32,height=32 ! stablekeypoints {} \
             ! stablekeypointspose pose={} ! fakesink",
            props(),
            path.display()
        ))
        .unwrap();
        let _ = p.set_state(gst::State::Playing);
        let bus = p.bus().unwrap();
        let mut err = None;
        for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    err = Some(e.error().to_string());
                    break;
                }
                gst::MessageView::Eos(_) => break,
                _ => {}
            }
        }
        p.set_state(gst::State::Null).unwrap();
        let err = err.unwrap_or_else(|| panic!("{}: no error", path.display()));
        assert!(
            err.contains(&path.display().to_string()) && err.contains(why),
            "{}: {err}",
            path.display()
        );
    }
}

/// Hand-made metadata of 6 keypoints from tokens with `indices` (`None`: unnamed tokens).
fn hand_meta(indices: Option<Vec<u32>>) -> FrameKeypoints {
    FrameKeypoints {
        semantic_tag: semantic_tag(NUM_KEYPOINTS),
        model: "hand".into(),
        source_width: 64,
        source_height: 32,
        keypoints: (0..NUM_KEYPOINTS as u32)
            .map(|id| KeypointMeta {
                id,
                x: 0.1 + 0.1 * id as f32,
                y: 0.9 - 0.1 * id as f32,
                confidence: 0.5,
                visible: true,
            })
            .collect(),
        origin: Some(Origin::Inference),
        tokens: indices.map(|indices| TokenIdentity {
            indices,
            hash: "feedfacecafebeef".into(),
        }),
        ..Default::default()
    }
}

fn pose_harness() -> gst_check::Harness {
    init();
    let el = gst::ElementFactory::make("stablekeypointspose")
        .property("pose", test_pose().to_str().unwrap())
        .build()
        .unwrap();
    let mut hn = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    hn.set_src_caps_str("video/x-raw,format=RGB,width=64,height=32,framerate=25/1");
    hn
}

fn buffer_with(meta: &FrameKeypoints) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(64 * 32 * 3).unwrap();
    let r = b.get_mut().unwrap();
    gst_video::VideoRegionOfInterestMeta::add(r, "car", (1, 1, 2, 2));
    meta.attach(r);
    b
}

#[test]
fn harness_checks_the_identity_and_keeps_other_metas() {
    let indices: Vec<u32> = Tokens::load(&tokens_path())
        .unwrap()
        .indices
        .iter()
        .map(|&i| i as u32)
        .collect();
    // Matching tokens: landmarks regressed from these keypoints, other metas kept.
    let mut hn = pose_harness();
    let meta = hand_meta(Some(indices.clone()));
    hn.push(buffer_with(&meta)).unwrap();
    let out = hn.pull().unwrap();
    let got = read_meta(&out);
    let (core, hand) = expected_landmarks(&meta);
    let p = got.pose.as_ref().unwrap();
    for (j, l) in p.landmarks.iter().enumerate() {
        assert!((l.x as f64 - core[j][0]).abs() < 1e-6 && (l.y as f64 - hand[j].1).abs() < 1e-6);
    }
    assert_eq!(got.keypoints, meta.keypoints);
    assert!(out
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .any(|m| m.roi_type() == "car"));
    // No identity: regressed unchecked (with a warning in the log).
    let mut hn = pose_harness();
    hn.push(buffer_with(&hand_meta(None))).unwrap();
    assert!(read_meta(&hn.pull().unwrap()).pose.is_some());
    // Other tokens: an error naming the file and the indices, and no buffer.
    let mut other = indices.clone();
    other.swap(0, 1);
    let mut hn = pose_harness();
    let bus = gst::Bus::new();
    hn.element().unwrap().set_bus(Some(&bus));
    assert_eq!(
        hn.push(buffer_with(&hand_meta(Some(other)))),
        Err(gst::FlowError::Error)
    );
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = e.error().to_string();
    assert!(text.contains("token indices"), "{text}");
    assert!(text.contains(&test_pose().display().to_string()), "{text}");
}

#[test]
fn each_object_gets_its_own_landmarks_regressed_in_its_box() {
    let indices: Vec<u32> = Tokens::load(&tokens_path())
        .unwrap()
        .indices
        .iter()
        .map(|&i| i as u32)
        .collect();
    // Two objects of the 64x32 frame, side by side, each its keypoints in its box.
    let object = |id: u64, bbox: [f32; 4]| {
        let mut m = hand_meta(Some(indices.clone()));
        for k in &mut m.keypoints {
            k.x = bbox[0] + k.x * bbox[2];
            k.y = bbox[1] + k.y * bbox[3];
        }
        m.object = Some(ObjectMeta {
            id,
            label: "person".into(),
            bbox,
            roi_id: id as i32,
            // Regressed in the square the model saw: here the box itself.
            view: bbox,
        });
        m
    };
    let sets = [
        object(7, [0.0, 0.0, 0.5, 1.0]),
        object(9, [0.5, 0.25, 0.25, 0.5]),
    ];
    let mut b = gst::Buffer::with_size(64 * 32 * 3).unwrap();
    FrameKeypoints::attach_all(&sets, b.get_mut().unwrap());
    let mut hn = pose_harness();
    hn.push(b).unwrap();
    let got = FrameKeypoints::all_for_frame(&hn.pull().unwrap(), None)
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 2);
    for (g, s) in got.iter().zip(&sets) {
        assert_eq!(g.object, s.object);
        assert_eq!(g.keypoints, s.keypoints);
        // The test pose's landmarks with "the centre" the view's (the box's): `a` is keypoint 0, `b` its
        // mirror image through the box's centre, `c` the x of keypoint 1 and the y of
        // keypoint 2 mirrored, `d` the mean x of keypoints 3 and 4 and the y of 5; all
        // normalised to the frame.
        let [x, y, w, h] = s.object.as_ref().unwrap().bbox;
        let (cx, cy) = (x + w / 2.0, y + h / 2.0);
        let k = &s.keypoints;
        let want = [
            (k[0].x, k[0].y),
            (2.0 * cx - k[0].x, 2.0 * cy - k[0].y),
            (k[1].x, 2.0 * cy - k[2].y),
            ((k[3].x + k[4].x) / 2.0, k[5].y),
        ];
        let p = g.pose.as_ref().expect("each object its pose");
        assert_eq!(p.landmarks.len(), want.len());
        for (l, (wx, wy)) in p.landmarks.iter().zip(want) {
            assert!(
                (l.x - wx).abs() < 1e-5 && (l.y - wy).abs() < 1e-5,
                "object {:?}, {}: ({}, {}) vs ({wx}, {wy})",
                s.object,
                l.name,
                l.x,
                l.y
            );
        }
    }
}
