//! The `stablekeypointstrack` element on the keypoints of several objects per frame
//! (top-down inference): each object is smoothed and interpolated on its own, as its own
//! sequence would be alone, keeps its id, and may come and go.

use gststablekeypoints::meta::{
    semantic_tag, FrameKeypoints, KeypointMeta, ObjectMeta, Origin, TokenIdentity,
};

use crate::common;
use common::*;

const CAPS: &str = "video/x-raw,format=RGB,width=100,height=50,framerate=25/1";

/// Hand-made keypoints on a 100x50 frame: keypoint 0 at (x, y), keypoint 1 at (1 - x, 0.25),
/// of object `id` (none: the whole frame's).
fn set(id: Option<u64>, x: f32, y: f32, origin: Origin) -> FrameKeypoints {
    let kp = |id, x, y| KeypointMeta {
        id,
        x,
        y,
        confidence: 0.5,
        visible: true,
    };
    FrameKeypoints {
        semantic_tag: semantic_tag(2),
        model: "hand".into(),
        source_width: 100,
        source_height: 50,
        inferred: origin.inferred(),
        keypoints: vec![kp(0, x, y), kp(1, 1.0 - x, 0.25)],
        origin: Some(origin),
        threshold: Some(0.15),
        tokens: Some(TokenIdentity {
            indices: vec![3, 1],
            hash: "0123456789abcdef".into(),
        }),
        object: id.map(|id| ObjectMeta {
            id,
            label: "person".into(),
            // Side by side, a fifth of the frame wide each.
            bbox: [0.2 * (id % 5) as f32, 0.1, 0.2, 0.8],
            roi_id: id as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pushes one buffer per frame (timestamps 40 ms apart) carrying its sets through
/// `stablekeypointstrack` with `props`; the sets on every buffer that came out, in order.
fn track(props: &str, frames: &[Vec<FrameKeypoints>]) -> Vec<Vec<FrameKeypoints>> {
    init();
    let mut hn = gst_check::Harness::new_parse(&format!("stablekeypointstrack {props}"));
    hn.set_src_caps_str(CAPS);
    let mut outs = Vec::new();
    for (i, sets) in frames.iter().enumerate() {
        let mut buf = gst::Buffer::with_size(100 * 50 * 3).unwrap();
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40 * i as u64));
        FrameKeypoints::attach_all(sets, b);
        hn.push(buf).unwrap();
        outs.extend(std::iter::from_fn(|| hn.try_pull()));
    }
    hn.push_event(gst::event::Eos::new());
    outs.extend(std::iter::from_fn(|| hn.try_pull()));
    assert_eq!(outs.len(), frames.len(), "every frame leaves");
    outs.iter()
        .map(|b| match FrameKeypoints::all_for_frame(b, None) {
            None => Vec::new(),
            Some(r) => r.unwrap(),
        })
        .collect()
}

/// Object `id`'s set on a tracked frame.
fn of(sets: &[FrameKeypoints], id: u64) -> Option<&FrameKeypoints> {
    sets.iter()
        .find(|s| s.object.as_ref().is_some_and(|o| o.id == id))
}

/// Positions of the keypoints.
fn xy(f: &FrameKeypoints) -> Vec<(f32, f32)> {
    f.keypoints.iter().map(|k| (k.x, k.y)).collect()
}

/// Object `id`'s sets of `frames` as whole-frame sets (frames without it: none).
fn alone(frames: &[Vec<FrameKeypoints>], id: u64) -> Vec<Vec<FrameKeypoints>> {
    frames
        .iter()
        .map(|sets| {
            of(sets, id)
                .map(|s| FrameKeypoints {
                    object: None,
                    ..s.clone()
                })
                .into_iter()
                .collect()
        })
        .collect()
}

#[test]
fn each_objects_smoothing_equals_its_own_sequence_smoothed_alone() {
    let props = "smoothing=one-euro min-cutoff=0.5 beta=0.3 d-cutoff=2";
    // Three objects, each jittering its own way, with a whole-frame set besides.
    let frames: Vec<Vec<FrameKeypoints>> = (0..10)
        .map(|i| {
            let j = |a: f32| a * if i % 2 == 0 { 1.0 } else { -1.0 };
            vec![
                set(None, 0.5 + j(0.04), 0.6, Origin::Inference),
                set(Some(11), 0.25 + j(0.02), 0.3, Origin::Inference),
                set(
                    Some(12),
                    0.45 + j(0.05) + 0.01 * i as f32,
                    0.5,
                    Origin::Inference,
                ),
                set(Some(13), 0.65, 0.4 + j(0.03), Origin::Inference),
            ]
        })
        .collect();
    let out = track(props, &frames);
    let mut moved = 0.0f32;
    for id in [11, 12, 13] {
        let want = track(props, &alone(&frames, id));
        for (i, (got, want)) in out.iter().zip(&want).enumerate() {
            assert_eq!(got.len(), 4, "frame {i}: every set stays");
            let g = of(got, id).expect("the object keeps its id");
            assert_eq!(xy(g), xy(&want[0]), "object {id}, frame {i}");
            assert_eq!(g.object, frames[i][(id - 10) as usize].object);
            moved =
                moved.max((g.keypoints[0].x - of(&frames[i], id).unwrap().keypoints[0].x).abs());
        }
    }
    assert!(moved > 1e-3, "smoothing changed nothing");
    // The whole frame's set too, first as it came.
    let whole: Vec<Vec<FrameKeypoints>> = frames.iter().map(|f| vec![f[0].clone()]).collect();
    for (got, want) in out.iter().zip(track(props, &whole)) {
        assert_eq!(got[0].object, None);
        assert_eq!(xy(&got[0]), xy(&want[0]));
    }
    // The objects' order on the frame is kept.
    let ids: Vec<Option<u64>> = out[5]
        .iter()
        .map(|s| s.object.as_ref().map(|o| o.id))
        .collect();
    assert_eq!(ids, [None, Some(11), Some(12), Some(13)]);
}

#[test]
fn objects_are_interpolated_each_on_its_own_and_come_and_go() {
    use Origin::*;
    // Object 1 throughout; 2 leaves after frame 2 (so it is held there, not interpolated);
    // 3 comes on frame 2 (no inference of it before: it keeps what it carries) and is
    // interpolated from frame 3 to 5 like 1.
    let frames = vec![
        vec![
            set(Some(1), 0.1, 0.5, Inference),
            set(Some(2), 0.3, 0.5, Inference),
        ],
        vec![
            set(Some(1), 0.1, 0.5, Interval),
            set(Some(2), 0.3, 0.5, Interval),
        ],
        vec![
            set(Some(1), 0.1, 0.5, Interval),
            set(Some(2), 0.3, 0.5, Interval),
            set(Some(3), 0.6, 0.5, Interval),
        ],
        vec![
            set(Some(1), 0.4, 0.5, Inference),
            set(Some(3), 0.6, 0.2, Inference),
        ],
        vec![
            set(Some(1), 0.4, 0.5, Interval),
            set(Some(3), 0.6, 0.2, Interval),
        ],
        vec![
            set(Some(1), 0.2, 0.5, Inference),
            set(Some(3), 0.8, 0.4, Inference),
        ],
    ];
    let out = track("gap-policy=interpolate", &frames);
    let ids = |f: &[FrameKeypoints]| -> Vec<u64> {
        f.iter().map(|s| s.object.as_ref().unwrap().id).collect()
    };
    let want_ids: Vec<Vec<u64>> = frames.iter().map(|f| ids(f)).collect();
    assert_eq!(out.iter().map(|f| ids(f)).collect::<Vec<_>>(), want_ids);
    let close = |f: &FrameKeypoints, x: f32, y: f32, origin: Origin, what: &str| {
        let k = f.keypoints[0];
        assert!(
            (k.x - x).abs() < 1e-6 && (k.y - y).abs() < 1e-6,
            "{what}: ({}, {}) vs ({x}, {y})",
            k.x,
            k.y
        );
        assert!((f.keypoints[1].x - (1.0 - x)).abs() < 1e-6, "{what}");
        assert_eq!(f.origin, Some(origin), "{what}");
    };
    // Object 1: 0.1 -> 0.4 over frames 0..3, 0.4 -> 0.2 over 3..5.
    for (i, x, o) in [
        (0, 0.1, Inference),
        (1, 0.2, Interpolated),
        (2, 0.3, Interpolated),
        (3, 0.4, Inference),
        (4, 0.3, Interpolated),
        (5, 0.2, Inference),
    ] {
        close(
            of(&out[i], 1).unwrap(),
            x,
            0.5,
            o,
            &format!("object 1, frame {i}"),
        );
    }
    // Object 2 left: held.
    for i in [1, 2] {
        close(
            of(&out[i], 2).unwrap(),
            0.3,
            0.5,
            Interval,
            &format!("object 2, frame {i}"),
        );
    }
    // Object 3: as it came on frame 2, then on the line from frame 3 to 5.
    close(
        of(&out[2], 3).unwrap(),
        0.6,
        0.5,
        Interval,
        "object 3, frame 2",
    );
    close(
        of(&out[4], 3).unwrap(),
        0.7,
        0.3,
        Interpolated,
        "object 3, frame 4",
    );
    // Object 1 alone, as the whole frame's keypoints, is interpolated the same.
    let single = track("gap-policy=interpolate", &alone(&frames, 1));
    for (i, (got, want)) in out.iter().zip(&single).enumerate() {
        let g = of(got, 1).unwrap();
        assert_eq!(xy(g), xy(&want[0]), "frame {i}");
        assert_eq!((g.origin, g.inferred), (want[0].origin, want[0].inferred));
    }
}

#[test]
fn an_object_gone_for_seconds_comes_back_afresh() {
    // One-Euro on object 5, then 5 s without it (forgotten after 3 s), then back: it starts
    // from its new position as a new object would, while the object that stayed is smoothed
    // on.
    let props = "smoothing=one-euro min-cutoff=0.1";
    let mut frames: Vec<Vec<FrameKeypoints>> = (0..5)
        .map(|_| {
            vec![
                set(Some(4), 0.2, 0.5, Origin::Inference),
                set(Some(5), 0.5, 0.5, Origin::Inference),
            ]
        })
        .collect();
    frames.extend((0..125).map(|_| vec![set(Some(4), 0.2, 0.5, Origin::Inference)]));
    frames.push(vec![
        set(Some(4), 0.25, 0.5, Origin::Inference),
        set(Some(5), 0.7, 0.5, Origin::Inference),
    ]);
    let out = track(props, &frames);
    let last = out.last().unwrap();
    assert_eq!(
        of(last, 5).unwrap().keypoints[0].x,
        0.7,
        "afresh: its first position"
    );
    assert!(of(last, 4).unwrap().keypoints[0].x < 0.25, "smoothed on");
    assert_eq!(out[10].len(), 1);
}
