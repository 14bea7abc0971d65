//! Keypoints after geometric transforms (issue 24, 7): every `videoflip` method, `videocrop`,
//! `videobox` and `aspectratiocrop` move the picture under the keypoints, which GStreamer
//! 1.22 cannot move with it; after them no element of ours draws, tracks, regresses or
//! publishes the keypoints, and each says why once. After `videoscale` (and a converter)
//! they are followed to the new size.

use gst::prelude::*;
use gststablekeypoints::meta::FrameKeypoints;
use stablekeypoints::export::Record;
use std::sync::{Arc, Mutex};

use crate::common;
use common::*;

const FRAMES: usize = 3;

/// What a transform must do to the keypoints.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Followed: published at the keypoints' positions in the frame after the transform,
    /// drawn there, landmarks regressed.
    Kept,
    /// Dropped by every reader, each warning once with a message holding this text.
    Dropped(&'static str),
}

/// One run: the keypoints the inference element attached, the records published, and per
/// frame the picture drawn by the overlay and the one that bypassed it (with its metadata).
struct Run {
    made: Vec<FrameKeypoints>,
    records: Vec<Record>,
    drawn: Vec<gst::Buffer>,
    plain: Vec<gst::Buffer>,
    /// The frame size after the transform.
    size: (u32, u32),
    /// (element name, message) of every warning.
    warnings: Vec<(String, String)>,
}

/// Collects a copy of every buffer reaching the sink pad of `name`.
fn keep(p: &gst::Pipeline, name: &str) -> Arc<Mutex<Vec<gst::Buffer>>> {
    let store = Arc::new(Mutex::new(Vec::new()));
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
}

/// `FRAMES` frames of SMPTE bars (a picture no flip or rotation leaves unchanged), `w` x
/// `h` RGB, through the inference element, `transform`, and then every reader of ours.
fn run(transform: &str, (w, h): (u32, u32), case: usize) -> Run {
    init();
    let path = scratch().join(format!("transform-{case}.jsonl"));
    let desc = format!(
        "videotestsrc num-buffers={FRAMES} pattern=smpte \
         ! video/x-raw,format=RGB,width={w},height={h},framerate=25/1 \
         ! stablekeypoints name=skp {} ! {transform} \
         ! stablekeypointstrack name=track ! stablekeypointspose name=pose pose={} \
         ! stablekeypointspublish name=publish location={} ! tee name=t \
         ! queue ! stablekeypointsoverlay name=overlay radius=2 ! fakesink name=drawn \
         t. ! queue ! fakesink name=plain",
        props(),
        test_pose().display(),
        path.display()
    );
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let made = Arc::new(Mutex::new(Vec::new()));
    let m = made.clone();
    p.by_name("skp")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                m.lock().unwrap().push(read_meta(b));
            }
            gst::PadProbeReturn::Ok
        });
    let (drawn, plain) = (keep(&p, "drawn"), keep(&p, "plain"));
    p.set_state(gst::State::Playing).unwrap();
    let mut warnings = Vec::new();
    for msg in p
        .bus()
        .unwrap()
        .iter_timed(gst::ClockTime::from_seconds(120))
    {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                p.set_state(gst::State::Null).unwrap();
                panic!("{transform}: {} {:?}", e.error(), e.debug())
            }
            gst::MessageView::Warning(e) => warnings.push((
                msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                e.error().to_string(),
            )),
            _ => {}
        }
    }
    let caps = p
        .by_name("plain")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .current_caps()
        .unwrap();
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    p.set_state(gst::State::Null).unwrap();
    let records = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let take = |s: Arc<Mutex<Vec<gst::Buffer>>>| std::mem::take(&mut *s.lock().unwrap());
    let made = std::mem::take(&mut *made.lock().unwrap());
    Run {
        made,
        records,
        drawn: take(drawn),
        plain: take(plain),
        size: (info.width(), info.height()),
        warnings,
    }
}

fn bytes(b: &gst::Buffer) -> Vec<u8> {
    b.map_readable().unwrap().to_vec()
}

const SQUARE: (u32, u32) = (64, 64);

/// (transforms after the inference element, frame size, what our elements do after them)
const TRANSFORM_ROWS: [(&str, (u32, u32), Expect); 18] = [
    ("videoflip video-direction=identity", SQUARE, Expect::Kept),
    (
        "videoscale ! video/x-raw,width=96,height=80",
        SQUARE,
        Expect::Kept,
    ),
    (
        "videoconvert ! video/x-raw,format=NV12 ! videoscale \
         ! video/x-raw,width=40,height=40 ! videoconvert ! video/x-raw,format=RGB",
        SQUARE,
        Expect::Kept,
    ),
    (
        "videoflip video-direction=horiz",
        SQUARE,
        Expect::Dropped("mirrored left to right"),
    ),
    (
        "videoflip video-direction=vert",
        SQUARE,
        Expect::Dropped("flipped upside down"),
    ),
    (
        "videoflip video-direction=180",
        SQUARE,
        Expect::Dropped("rotated 180 degrees"),
    ),
    (
        "videoflip video-direction=90r",
        SQUARE,
        Expect::Dropped("rotated 90 degrees clockwise"),
    ),
    (
        "videoflip video-direction=90l",
        SQUARE,
        Expect::Dropped("rotated 90 degrees counter-clockwise"),
    ),
    (
        "videoflip video-direction=ul-lr",
        SQUARE,
        Expect::Dropped("upper-left diagonal"),
    ),
    (
        "videoflip video-direction=ur-ll",
        SQUARE,
        Expect::Dropped("upper-right diagonal"),
    ),
    (
        "videoflip video-direction=90r",
        (64, 48),
        Expect::Dropped("made for a 64x48 frame and this one is 48x64"),
    ),
    (
        // videoflip drops the record of the size: the scaled frame is another size.
        "videoflip video-direction=horiz ! videoscale ! video/x-raw,width=128,height=128",
        SQUARE,
        Expect::Dropped("made for a 64x64 frame and this one is 128x128"),
    ),
    (
        "videocrop left=8 right=4 top=2 bottom=6",
        SQUARE,
        Expect::Dropped("no longer fit"),
    ),
    (
        "videocrop left=16 ! videoscale ! video/x-raw,width=64,height=64",
        SQUARE,
        Expect::Dropped("no longer the one they were made for"),
    ),
    (
        "videoscale ! video/x-raw,width=96,height=96 ! videoflip video-direction=180",
        SQUARE,
        Expect::Dropped("made for a 64x64 frame and this one is 96x96"),
    ),
    (
        "videobox left=-8 right=-8 top=-4 bottom=-4",
        SQUARE,
        Expect::Dropped("no longer fit"),
    ),
    (
        "videobox left=6 top=4",
        SQUARE,
        Expect::Dropped("no longer fit"),
    ),
    (
        "aspectratiocrop aspect-ratio=2/1",
        SQUARE,
        Expect::Dropped("no longer fit"),
    ),
];

/// The records follow the frame, landmarks are regressed and the overlay draws; none of
/// `ours` (the warnings of our elements) is posted.
fn assert_followed(what: &str, r: &Run, ours: &[&(String, String)]) {
    assert!(ours.is_empty(), "{what}: {ours:?}");
    assert_eq!(r.records.len(), FRAMES, "{what}: a record per frame");
    for (i, (rec, made)) in r.records.iter().zip(&r.made).enumerate() {
        let frame = &r.plain[i];
        let (w, h) = r.size;
        assert_eq!((rec.width, rec.height), (w, h), "{what}");
        for (k, m) in rec.keypoints.iter().zip(&made.keypoints) {
            // Followed: the same place in the picture, in its pixels now.
            assert_eq!((k.nx, k.ny), (m.x, m.y), "{what}");
            assert_eq!((k.x, k.y), (m.x * w as f32, m.y * h as f32), "{what}");
        }
        assert!(rec.pose.is_some(), "{what}: landmarks regressed");
        assert!(bytes(&r.drawn[i]) != bytes(frame), "{what}: nothing drawn");
    }
}

/// Nothing is published, drawn or regressed, and each element warns once saying `why`.
fn assert_dropped(what: &str, r: &Run, ours: &[&(String, String)], why: &str) {
    assert!(r.records.is_empty(), "{what}: published {:?}", r.records);
    for (d, p) in r.drawn.iter().zip(&r.plain) {
        assert!(bytes(d) == bytes(p), "{what}: drawn at the old place");
        let pose = FrameKeypoints::from_buffer(p).and_then(|m| m.ok()?.pose);
        assert!(pose.is_none(), "{what}: landmarks regressed");
    }
    for name in ["track", "pose", "overlay", "publish"] {
        let said: Vec<&&(String, String)> = ours.iter().filter(|(src, _)| src == name).collect();
        assert_eq!(said.len(), 1, "{what}: {name} warns once: {ours:?}");
        assert!(
            said[0].1.contains("no longer fit") && said[0].1.contains(why),
            "{what}: {name} says {:?}, not {why:?}",
            said[0].1
        );
    }
}

#[test]
fn keypoints_follow_scaling_and_are_dropped_after_other_transforms() {
    // `videoflip video-direction=`: on 1.22 a `method=` in a launch line leaves the frames
    // as they are.
    for (case, &(transform, size, expect)) in TRANSFORM_ROWS.iter().enumerate() {
        let r = run(transform, size, case);
        let what = format!("{transform} on {}x{}", size.0, size.1);
        assert_eq!(r.made.len(), FRAMES, "{what}");
        assert_eq!((r.drawn.len(), r.plain.len()), (FRAMES, FRAMES), "{what}");
        let ours: Vec<&(String, String)> = r
            .warnings
            .iter()
            .filter(|(src, _)| ["track", "pose", "overlay", "publish"].contains(&src.as_str()))
            .collect();
        match expect {
            Expect::Kept => assert_followed(&what, &r, &ours),
            Expect::Dropped(why) => assert_dropped(&what, &r, &ours, why),
        }
    }
}
