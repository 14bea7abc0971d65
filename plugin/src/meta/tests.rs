//! Round trips of the metadata through structures, text and buffers.

use super::*;
use gst::glib;
use gst::prelude::*;

fn sample() -> FrameKeypoints {
    FrameKeypoints {
        semantic_tag: semantic_tag(3),
        model: "m".into(),
        source_width: 100,
        source_height: 50,
        inferred: true,
        keypoints: vec![
            KeypointMeta {
                id: 0,
                x: 0.105,
                y: 0.2,
                confidence: 0.5,
                visible: true,
            },
            KeypointMeta {
                id: 1,
                x: 0.5,
                y: 0.9,
                confidence: 0.01,
                visible: false,
            },
            KeypointMeta {
                id: 2,
                x: 0.3,
                y: 0.6,
                confidence: 0.4,
                visible: true,
            },
        ],
        pose: None,
        rect: (0, 0, 0, 0),
        origin: Some(Origin::Late),
        threshold: Some(0.25),
        tokens: Some(TokenIdentity {
            indices: vec![4, 0, 9],
            hash: "00ff00ff00ff00ff".into(),
        }),
        object: None,
    }
}

fn sample_pose() -> PoseMeta {
    let lm = |name: &str, x, y| LandmarkMeta {
        name: name.into(),
        x,
        y,
    };
    PoseMeta {
        landmarks: vec![
            lm("head", 0.5, 0.1),
            lm("hip", 0.45, 0.6),
            lm("foot", 1.2, -0.1),
        ],
        connections: vec![[0, 1], [1, 2]],
    }
}

#[test]
fn structure_round_trips_and_has_the_documented_types() {
    gst::init().unwrap();
    let f = sample();
    let s = f.to_structure();
    assert_eq!(s.name(), "keypoints");
    assert_eq!(
        s.get::<&str>("semantic-tag").unwrap(),
        "stablekeypoints-3-kp"
    );
    let x = s.get::<gst::Array>("x").unwrap();
    assert_eq!(x.as_slice()[0].type_(), glib::Type::F32);
    let vis = s.get::<gst::Array>("visible").unwrap();
    assert_eq!(vis.as_slice()[1].type_(), glib::Type::BOOL);
    assert_eq!(s.get::<i32>("source-width").unwrap(), 100);
    assert_eq!(FrameKeypoints::from_structure(&s).unwrap(), f);
    // Survives serialisation to text and back (what C and Python consumers see).
    let text = s.to_string();
    let parsed: gst::Structure = text.parse().unwrap();
    assert_eq!(FrameKeypoints::from_structure(&parsed).unwrap(), f);
}

#[test]
fn bounding_box_covers_visible_points() {
    let f = sample();
    // x 10.5 .. 30, y 10 .. 30 in a 100x50 frame.
    assert_eq!(f.bounding_box(), (10, 10, 20, 20));
    let mut none = f.clone();
    none.keypoints.iter_mut().for_each(|k| k.visible = false);
    assert_eq!(none.bounding_box(), (0, 0, 100, 50));
    let mut edge = f.clone();
    edge.keypoints = vec![KeypointMeta {
        id: 0,
        x: 1.0,
        y: 1.0,
        confidence: 1.0,
        visible: true,
    }];
    assert_eq!(edge.bounding_box(), (99, 49, 1, 1));
}

#[test]
fn attach_and_read_back() {
    gst::init().unwrap();
    let mut buf = gst::Buffer::with_size(4).unwrap();
    let f = sample();
    f.attach(buf.get_mut().unwrap());
    let back = FrameKeypoints::from_buffer(&buf).unwrap().unwrap();
    assert_eq!(back.rect, (10, 10, 20, 20));
    assert_eq!(back.keypoints, f.keypoints);
    assert!(FrameKeypoints::from_buffer(&gst::Buffer::new()).is_none());
}

#[test]
fn pose_structure_round_trips_through_text_and_the_buffer() {
    gst::init().unwrap();
    let pose = sample_pose();
    let s = pose.to_structure();
    assert_eq!(s.name(), "pose");
    let names = s.get::<gst::Array>("point-names").unwrap();
    assert_eq!(names.as_slice()[2].get::<&str>().unwrap(), "foot");
    let conn = s.get::<gst::Array>("point-connections").unwrap();
    let flat: Vec<i32> = conn.iter().map(|v| v.get::<i32>().unwrap()).collect();
    assert_eq!(flat, [0, 1, 1, 2]);
    let parsed: gst::Structure = s.to_string().parse().unwrap();
    assert_eq!(PoseMeta::from_structure(&parsed).unwrap(), pose);

    let mut f = sample();
    f.pose = Some(pose);
    let mut buf = gst::Buffer::with_size(4).unwrap();
    f.attach(buf.get_mut().unwrap());
    let back = FrameKeypoints::from_buffer(&buf).unwrap().unwrap();
    assert_eq!(back.pose, f.pose);
    // The pose does not move the keypoints' box (the foot lies outside the frame).
    assert_eq!(back.rect, (10, 10, 20, 20));
}

#[test]
fn malformed_pose_structures_are_errors() {
    gst::init().unwrap();
    let good = sample_pose().to_structure();
    let mut s = good.clone();
    s.set("point-connections", gst::Array::new([0i32.to_send_value()]));
    assert!(PoseMeta::from_structure(&s).unwrap_err().0.contains("odd"));
    let mut s = good.clone();
    s.set(
        "point-connections",
        gst::Array::new([0i32.to_send_value(), 3i32.to_send_value()]),
    );
    assert!(PoseMeta::from_structure(&s).unwrap_err().0.contains("3"));
    let mut s = good.clone();
    s.set("x", gst::Array::new([1.0f32.to_send_value()]));
    assert!(PoseMeta::from_structure(&s)
        .unwrap_err()
        .0
        .contains("lengths"));
    let mut s = good;
    s.remove_field("point-names");
    assert!(PoseMeta::from_structure(&s).is_err());
}

#[test]
fn malformed_structures_are_errors() {
    gst::init().unwrap();
    let mut s = sample().to_structure();
    s.set("y", gst::Array::new([1.0f32.to_send_value()]));
    assert!(FrameKeypoints::from_structure(&s)
        .unwrap_err()
        .0
        .contains("lengths"));
    s.remove_field("x");
    assert!(FrameKeypoints::from_structure(&s).is_err());
}

#[test]
fn optional_fields_may_be_missing_and_are_checked_when_present() {
    gst::init().unwrap();
    let f = sample();
    let mut s = f.to_structure();
    assert_eq!(s.get::<&str>("origin").unwrap(), "late");
    assert_eq!(s.get::<&str>("tokens-hash").unwrap(), "00ff00ff00ff00ff");
    for name in [
        "origin",
        "keypoint-threshold",
        "token-indices",
        "tokens-hash",
    ] {
        s.remove_field(name);
    }
    let old = FrameKeypoints::from_structure(&s).unwrap();
    assert_eq!((old.origin, old.threshold, old.tokens), (None, None, None));
    assert_eq!(old.keypoints, f.keypoints);
    let mut s = f.to_structure();
    s.set("origin", "guessed");
    assert!(FrameKeypoints::from_structure(&s)
        .unwrap_err()
        .0
        .contains("guessed"));
    let mut s = f.to_structure();
    s.remove_field("tokens-hash");
    assert!(FrameKeypoints::from_structure(&s).is_err());
}

#[test]
fn replace_rebuilds_our_roi_and_keeps_everything_else() {
    gst::init().unwrap();
    let mut buf = gst::Buffer::with_size(4).unwrap();
    let b = buf.get_mut().unwrap();
    let mut other = gst_video::VideoRegionOfInterestMeta::add(b, "face", (1, 2, 3, 4));
    other.set_id(7);
    other.add_param(
        gst::Structure::builder("detection")
            .field("confidence", 0.9f64)
            .build(),
    );
    let mut f = sample();
    f.attach(b);
    // Someone else's parameter on our ROI.
    b.iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
        .find(|m| m.roi_type() == ROI_TYPE)
        .unwrap()
        .add_param(gst::Structure::builder("label").field("text", "x").build());
    let ids: Vec<i32> = b
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| m.id())
        .collect();
    assert_eq!(
        ids,
        [7, 1],
        "ours is numbered after the ROI metas before it"
    );
    f.keypoints[1].visible = true;
    f.keypoints[0].x = 0.9;
    // Rescaled to 200x100 (twice the source size).
    f.replace(b, 200, 100);
    let rois: Vec<_> = b
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .collect();
    assert_eq!(rois.len(), 2);
    let face = rois.iter().find(|m| m.roi_type() == "face").unwrap();
    assert_eq!((face.rect(), face.id()), ((1, 2, 3, 4), 7));
    assert!(face.param("detection").is_some());
    let ours = rois.iter().find(|m| m.roi_type() == ROI_TYPE).unwrap();
    assert_eq!(ours.id(), 1);
    let names: Vec<String> = ours.params().map(|p| p.name().to_string()).collect();
    assert_eq!(names, ["keypoints", "dlstreamer-keypoints", "label"]);
    let back = FrameKeypoints::from_buffer(b).unwrap().unwrap();
    assert_eq!(back.keypoints, f.keypoints);
    // Points at (180, 20), (100, 90) and (60, 60) of 200x100.
    assert_eq!(back.rect, (60, 20, 120, 70));
}

fn person(id: u64, roi_id: i32, bbox: [f32; 4], x: f32) -> FrameKeypoints {
    let mut f = sample();
    for k in &mut f.keypoints {
        k.x = bbox[0] + x * bbox[2];
    }
    f.object = Some(ObjectMeta {
        id,
        label: "person".into(),
        bbox,
        roi_id,
        view: [bbox[0] - 0.05, bbox[1], bbox[3], bbox[3]],
    });
    f
}

#[test]
fn objects_keypoints_go_on_their_own_roi_metas_and_come_back() {
    gst::init().unwrap();
    let mut buf = gst::Buffer::with_size(4).unwrap();
    let b = buf.get_mut().unwrap();
    // A detector's metas on a 100x50 frame: two people and a face (ids as a detector sets
    // them, not unique), one person with a tracker's id.
    let add = |b: &mut gst::BufferRef, t: &str, rect, id| {
        let mut m = gst_video::VideoRegionOfInterestMeta::add(b, t, rect);
        m.set_id(id);
        m.add_param(
            gst::Structure::builder("detection")
                .field("confidence", 0.9f64)
                .build(),
        );
    };
    add(b, "person", (10, 5, 20, 40), 0);
    add(b, "face", (12, 6, 5, 5), 0);
    add(b, "person", (60, 10, 30, 35), 0);
    let a = person(4, 0, [0.1, 0.1, 0.2, 0.8], 0.5);
    let c = person(9, 0, [0.6, 0.2, 0.3, 0.7], 0.25);
    FrameKeypoints::attach_all(&[a.clone(), c.clone()], b);
    let rois: Vec<_> = b
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .collect();
    assert_eq!(
        rois.len(),
        3,
        "no ROI meta of ours: the keypoints are on the people's"
    );
    assert!(rois.iter().all(|m| m.roi_type() != ROI_TYPE));
    let face = rois.iter().find(|m| m.roi_type() == "face").unwrap();
    assert!(face.param(PARAM_NAME).is_none() && face.param("detection").is_some());
    for m in rois.iter().filter(|m| m.roi_type() == "person") {
        assert!(
            m.param("detection").is_some(),
            "the detector's structures stay"
        );
        let k = FrameKeypoints::from_structure(m.param(PARAM_NAME).unwrap()).unwrap();
        let want = if m.rect().0 == 10 { &a } else { &c };
        assert_eq!(k.object, want.object);
        // DL Streamer's tensor is relative to the person's box, not clamped into it.
        let t = dlstreamer::TensorKeypoints::from_structure(
            m.param(dlstreamer::KEYPOINTS_TENSOR).unwrap(),
        )
        .unwrap()
        .unwrap();
        let px = t.pixels(m.rect());
        assert!(
            (px[0].0 - want.keypoints[0].x * 100.0).abs() < 1e-3,
            "{px:?}"
        );
    }
    let mut back = FrameKeypoints::all_for_frame(b, None).unwrap().unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].rect, (10, 5, 20, 40));
    assert_eq!(back[1].rect, (60, 10, 30, 35));
    for (g, w) in back.iter().zip([&a, &c]) {
        assert_eq!((&g.keypoints, &g.object), (&w.keypoints, &w.object));
    }
    assert!(
        FrameKeypoints::from_buffer(b).is_none(),
        "no whole-frame keypoints"
    );

    // Rewritten by a later element (one person only now): the other loses ours and keeps
    // the detector's structure.
    back[0].keypoints[0].x = 0.2;
    back.truncate(1);
    FrameKeypoints::replace_all(&back, b, 100, 50);
    let again = FrameKeypoints::all_for_frame(b, None).unwrap().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].keypoints[0].x, 0.2);
    let rois: Vec<_> = b
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .collect();
    assert_eq!(rois.len(), 3);
    assert!(rois.iter().all(|m| m.param("detection").is_some()));

    // A ROI meta that lost its structures (as after a scaler): the carrier has them.
    let mut plain = gst::Buffer::with_size(4).unwrap();
    let p = plain.get_mut().unwrap();
    for m in b.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
        let mut n = gst_video::VideoRegionOfInterestMeta::add(p, m.roi_type(), m.rect());
        n.set_id(m.id());
    }
    let carried = carrier::read(b).unwrap();
    carrier::attach(p, None, &carried.objects, &carried.made);
    let from_carrier = FrameKeypoints::all_for_frame(p, None).unwrap().unwrap();
    assert_eq!(from_carrier.len(), 1);
    assert_eq!(from_carrier[0].keypoints, again[0].keypoints);
    assert_eq!(from_carrier[0].rect, (10, 5, 20, 40));
}

#[test]
fn object_fields_round_trip_and_malformed_ones_are_errors() {
    gst::init().unwrap();
    let f = person(u64::MAX, 3, [0.5, 0.5, 0.75, 0.5], 0.1);
    let s = f.to_structure();
    assert_eq!(FrameKeypoints::from_structure(&s).unwrap().object, f.object);
    let mut short = s.clone();
    short.set(
        fields::OBJECT_BOX,
        gst::Array::new([0.5f32.to_send_value()]),
    );
    assert!(FrameKeypoints::from_structure(&short).is_err());
    let mut no_label = s.clone();
    no_label.remove_field(fields::OBJECT_LABEL);
    assert!(FrameKeypoints::from_structure(&no_label).is_err());
    // A box reaching past the frame is clipped to it in pixels.
    assert_eq!(f.object.unwrap().rect_in(100, 50), (50, 25, 50, 25));
}
