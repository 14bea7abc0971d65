//! Top-down inference (`inference-region=roi-list`): keypoints of each object an upstream
//! detector attached, against the core's keypoints of the same region.

use crate::common;

use common::*;
use gst::prelude::*;
use gststablekeypoints::meta::FrameKeypoints;
use stablekeypoints::estimator::Estimator;
use stablekeypoints::{CropMode, DetectOptions, FrameRef, PixelFormat, Region};

const W: u32 = 96;
const H: u32 = 64;

fn harness(extra: &str) -> (gst_check::Harness, gst_video::VideoInfo) {
    let element = inference_element(&format!("inference-region=roi-list noise=false {extra}"));
    let mut hn = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, W, H)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap();
    hn.set_src_caps(info.to_caps().unwrap());
    (hn, info)
}

/// A ROI meta: type, rectangle, tracker id.
type Roi<'a> = (&'a str, (u32, u32, u32, u32), Option<i32>);

/// Frame `i` (random pixels) with ROI metas.
fn frame(info: &gst_video::VideoInfo, i: u64, rois: &[Roi]) -> gst::Buffer {
    let mut buf = random_frame(info, 100 + i);
    {
        let b = buf.make_mut();
        b.set_pts(gst::ClockTime::from_mseconds(40 * i));
        for (n, &(t, rect, tracker)) in rois.iter().enumerate() {
            let mut m = gst_video::VideoRegionOfInterestMeta::add(b, t, rect);
            m.set_id(n as i32);
            if let Some(id) = tracker {
                m.add_param(gst::Structure::builder("object_id").field("id", id).build());
            }
        }
    }
    buf
}

fn objects(buf: &gst::BufferRef) -> Vec<FrameKeypoints> {
    FrameKeypoints::all_for_frame(buf, None)
        .map(|r| r.expect("well-formed metadata"))
        .unwrap_or_default()
}

fn stat(hn: &gst_check::Harness, name: &str) -> u64 {
    let e = hn.element().unwrap();
    e.property::<gst::Structure>("stats")
        .get::<u64>(name)
        .unwrap()
}

/// The core's keypoints of `region` of `buf` (noise off, letterbox).
fn core_region(
    buf: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    region: Region,
) -> Vec<(f32, f32)> {
    let mut est = Estimator::teacher(core_detector_with(DetectOptions {
        noise: false,
        crop: CropMode::Letterbox,
        ..Default::default()
    }));
    let (rgb, stride) = rgb_of(buf, info);
    let f = FrameRef::packed(PixelFormat::Rgb, W as usize, H as usize, &rgb, stride).unwrap();
    est.detect(stablekeypoints::Item::regions(&[f], &[(0, region)], &[0]).unwrap())
        .unwrap()[0]
        .keypoints
        .iter()
        .map(|k| (k.x, k.y))
        .collect()
}

#[test]
fn each_object_gets_the_keypoints_of_its_box_on_its_own_roi_meta() {
    let (mut hn, info) = harness("object-margin=0.1 object-class=person");
    let rois = [
        ("person", (10, 4, 24, 50), None),
        ("car", (40, 10, 30, 20), None),
        // Reaches past the right edge: clipped to (70, 20, 26, 30).
        ("person", (70, 20, 40, 30), None),
    ];
    let input = frame(&info, 0, &rois);
    hn.push(input.clone()).unwrap();
    let out = hn.pull().unwrap();
    let got = objects(&out);
    assert_eq!(got.len(), 2, "two people; the car is not of object-class");
    for ((g, rect), roi) in got
        .iter()
        .zip([(10u32, 4u32, 24u32, 50u32), (70, 20, 26, 30)])
        .zip([rois[0].1, rois[2].1])
    {
        let o = g.object.as_ref().unwrap();
        assert_eq!(o.label, "person");
        assert_eq!(g.rect, roi, "the detector's ROI meta keeps its rectangle");
        assert_eq!(
            o.rect_in(W, H),
            rect,
            "the object's box is clipped to the frame"
        );
        let r = Region {
            x: rect.0 as f64,
            y: rect.1 as f64,
            w: rect.2 as f64,
            h: rect.3 as f64,
        }
        .grown(0.1);
        let want = core_region(&input, &info, r);
        assert_eq!(g.keypoints.len(), want.len());
        for (k, (x, y)) in g.keypoints.iter().zip(want) {
            assert!(
                (k.x - x).abs() < 1e-5 && (k.y - y).abs() < 1e-5,
                "{k:?} vs ({x}, {y})"
            );
        }
    }
    assert_ne!(
        got[0].object.as_ref().unwrap().id,
        got[1].object.as_ref().unwrap().id
    );
    assert!(
        FrameKeypoints::from_buffer(&out).is_none(),
        "no whole-frame keypoints"
    );
    assert_eq!(stat(&hn, "objects-inferred"), 2);
    assert_eq!(stat(&hn, "rois-clipped"), 1);
}

#[test]
fn a_frame_without_objects_passes_through_without_inference() {
    let (mut hn, info) = harness("");
    let input = frame(&info, 0, &[]);
    hn.push(input.clone()).unwrap();
    let out = hn.pull().unwrap();
    assert!(objects(&out).is_empty());
    assert_eq!(stat(&hn, "objects-inferred"), 0);
    assert_eq!(
        out.map_readable().unwrap().as_slice(),
        input.map_readable().unwrap().as_slice()
    );
}

#[test]
fn bad_small_and_surplus_rois_are_skipped_and_counted() {
    let (mut hn, info) = harness("min-object-size=10 max-objects=2");
    let rois = [
        ("person", (200, 10, 20, 20), None), // outside the frame
        ("person", (5, 5, 0, 30), None),     // empty
        ("person", (5, 5, 8, 30), None),     // narrower than 10
        ("person", (0, 0, 30, 30), None),
        ("person", (40, 0, 50, 60), None),
        ("person", (10, 10, 12, 12), None), // the smallest of three: over max-objects
    ];
    hn.push(frame(&info, 0, &rois)).unwrap();
    let out = hn.pull().unwrap();
    let got = objects(&out);
    let rects: Vec<_> = got.iter().map(|g| g.rect).collect();
    assert_eq!(rects, [(0, 0, 30, 30), (40, 0, 50, 60)]);
    assert_eq!(stat(&hn, "rois-skipped"), 2);
    assert_eq!(stat(&hn, "objects-small"), 1);
    assert_eq!(stat(&hn, "objects-over-max"), 1);
}

#[test]
fn between_inferences_objects_hold_their_keypoints_moved_with_their_box() {
    let (mut hn, info) = harness("inference-interval=2");
    let boxes = |dx: u32| {
        [
            ("person", (4 + dx, 4, 24, 40), None),
            ("person", (50 + dx, 10, 20, 40), Some(7)),
        ]
    };
    hn.push(frame(&info, 0, &boxes(0))).unwrap();
    let first = objects(&hn.pull().unwrap());
    // Listed the other way round and moved 6 px right: not inferred, held and moved.
    let mut moved = boxes(6);
    moved.reverse();
    hn.push(frame(&info, 1, &moved)).unwrap();
    let held = objects(&hn.pull().unwrap());
    assert_eq!(held.len(), 2);
    assert_eq!(stat(&hn, "objects-inferred"), 2);
    assert_eq!(stat(&hn, "objects-held"), 2);
    let tracked = held
        .iter()
        .find(|h| h.object.as_ref().unwrap().id == 7)
        .unwrap();
    assert_eq!(tracked.rect.0, 56, "the tracker's id is the object's id");
    for h in &held {
        let o = h.object.as_ref().unwrap();
        let was = first
            .iter()
            .find(|f| f.object.as_ref().unwrap().id == o.id)
            .unwrap();
        assert!(h.inferred, "held keypoints are marked inferred");
        for (a, b) in h.keypoints.iter().zip(&was.keypoints) {
            assert!((a.x - (b.x + 6.0 / W as f32)).abs() < 1e-5 && (a.y - b.y).abs() < 1e-6);
        }
    }
}

#[test]
fn an_object_first_seen_between_inferences_is_inferred_on_its_frame() {
    let (mut hn, info) = harness("inference-interval=3 object-margin=0.1");
    let a = ("person", (4, 4, 24, 40), None);
    let b = ("person", (50, 10, 20, 40), Some(7));
    hn.push(frame(&info, 0, &[a])).unwrap();
    let first = objects(&hn.pull().unwrap());
    // Frame 1 is not due: `a` holds its keypoints, `b` (new) is inferred on this frame.
    let input = frame(&info, 1, &[a, b]);
    hn.push(input.clone()).unwrap();
    let second = objects(&hn.pull().unwrap());
    assert_eq!(second.len(), 2);
    let id = |f: &FrameKeypoints| f.object.as_ref().unwrap().id;
    let held = second.iter().find(|f| id(f) != 7).unwrap();
    assert_eq!(id(held), id(&first[0]));
    assert!(held.inferred, "held keypoints are not of this frame");
    assert_eq!(held.keypoints, first[0].keypoints);
    let new = second.iter().find(|f| id(f) == 7).unwrap();
    assert!(
        !new.inferred,
        "the new object's keypoints are of this frame"
    );
    let r = Region {
        x: 50.0,
        y: 10.0,
        w: 20.0,
        h: 40.0,
    }
    .grown(0.1);
    let want = core_region(&input, &info, r);
    assert_eq!(new.keypoints.len(), want.len());
    for (k, (x, y)) in new.keypoints.iter().zip(want) {
        assert!(
            (k.x - x).abs() < 1e-5 && (k.y - y).abs() < 1e-5,
            "{k:?} vs ({x}, {y})"
        );
    }
    assert_eq!(stat(&hn, "objects-inferred"), 2);
    assert_eq!(stat(&hn, "objects-held"), 1);
    assert_eq!(
        stat(&hn, "frames-inferred"),
        1,
        "frame 1 is not counted as inferred"
    );
    // Frame 2, not due either: both hold, `b` the keypoints it got on frame 1.
    hn.push(frame(&info, 2, &[a, b])).unwrap();
    let third = objects(&hn.pull().unwrap());
    let again = third.iter().find(|f| id(f) == 7).unwrap();
    assert!(again.inferred);
    assert_eq!(again.keypoints, new.keypoints);
    assert_eq!(stat(&hn, "objects-inferred"), 2);
    assert_eq!(stat(&hn, "objects-held"), 3);
}

#[test]
fn object_ids_and_keypoints_survive_a_scaler() {
    let mut hn = chain_harness(&format!(
        "stablekeypoints {} inference-region=roi-list noise=false ! videoscale \
         ! capsfilter caps=video/x-raw,width={},height={}",
        props(),
        W * 2,
        H * 2
    ));
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, W, H)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap();
    hn.set_src_caps(info.to_caps().unwrap());
    let rois = [
        ("person", (4, 4, 24, 40), Some(3)),
        ("person", (50, 10, 20, 40), None),
    ];
    hn.push(frame(&info, 0, &rois)).unwrap();
    let scaled = hn.pull().unwrap();
    let got = objects(&scaled);
    assert_eq!(got.len(), 2);
    let ids: Vec<u64> = got.iter().map(|g| g.object.as_ref().unwrap().id).collect();
    assert!(ids.contains(&3));
    for g in &got {
        let o = g.object.as_ref().unwrap();
        let want = o.rect_in(W * 2, H * 2);
        assert!(
            (g.rect.0 as i64 - want.0 as i64).abs() <= 1
                && (g.rect.2 as i64 - want.2 as i64).abs() <= 1,
            "{:?} vs {want:?}",
            g.rect
        );
    }
}

#[test]
fn object_ids_survive_track_pose_a_scaler_overlay_and_publish() {
    // Boxes 3 and 8 on every frame, moving right; the chain as the docs write it.
    let dir = scratch().join("ids-chain");
    std::fs::create_dir_all(&dir).unwrap();
    let boxes = dir.join("boxes.jsonl");
    let lines: String = (0..6)
        .map(|f| {
            format!(
                "{{\"frame\": {f}, \"objects\": [{{\"id\": 3, \"box\": [{}, 4, 24, 50]}}, {{\"id\": 8, \"box\": [{}, 10, 20, 40]}}]}}\n",
                4 + f,
                60 - f
            )
        })
        .collect();
    std::fs::write(&boxes, lines).unwrap();
    let jsonl = dir.join("records.jsonl");
    let (msgs, _) = run_pipeline(
        &format!(
            "videotestsrc num-buffers=6 ! video/x-raw,format=RGB,width={W},height={H},framerate=25/1 \
             ! stablekeypointsboxes location={} \
             ! stablekeypoints {} inference-region=roi-list inference-interval=2 \
             ! stablekeypointstrack gap-policy=interpolate smoothing=one-euro \
             ! stablekeypointspose pose={} ! videoscale ! video/x-raw,width={},height={} \
             ! stablekeypointsoverlay draw-ids=true ! stablekeypointspublish location={} \
             ! fakesink",
            boxes.display(),
            props(),
            test_pose().display(),
            W * 2,
            H * 2,
            jsonl.display()
        ),
        None,
    )
    .unwrap();
    assert!(
        !msgs.iter().any(|m| m.type_() == gst::MessageType::Error),
        "{msgs:?}"
    );
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        12,
        "two objects on each of 6 frames:\n{text}"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["schema"], "stablekeypoints-frame/2");
        assert_eq!(r["frame"].as_u64().unwrap(), i as u64 / 2);
        assert_eq!(r["label"], "person");
        assert!(r["pose"].as_array().is_some_and(|p| !p.is_empty()), "{r}");
        assert_eq!(r["width"].as_u64().unwrap(), (W * 2) as u64);
    }
    let ids: Vec<u64> = records
        .iter()
        .map(|r| r["object_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [3, 8].repeat(6));
}
