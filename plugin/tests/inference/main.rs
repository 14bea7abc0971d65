//! The inference element on a tiny generated model, one module per subject: Harness for
//! buffer-exact checks, real pipelines (including the literal `filesrc ! decodebin !
//! stablekeypoints ! fakesink`) for the rest; every raw format (`formats`), top-down
//! inference (`objects`), a student as the model, and geometric transforms.

use gst::prelude::*;
use gst_video::prelude::*;
use gststablekeypoints::meta::{FrameKeypoints, Origin, ROI_TYPE};
use stablekeypoints::frame::YuvMatrix;
use stablekeypoints::{CropMode, DetectOptions, Detector, FrameRef, Tokens};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[path = "../common/mod.rs"]
mod common;
use common::*;

mod batching;
mod drawing;
mod formats;
mod keypoints;
mod live;
mod objects;
mod settings;
mod student;
mod transforms;

/// A frame buffer with random content and timestamps of frame `i` at 25 fps.
fn frame_buffer(info: &gst_video::VideoInfo, i: u64) -> gst::Buffer {
    let mut buf = gst::Buffer::from_mut_slice(noise_bytes(info.size(), i + 1));
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(40 * i));
        b.set_duration(gst::ClockTime::from_mseconds(40));
    }
    buf
}

fn read_meta(buf: &gst::BufferRef) -> FrameKeypoints {
    FrameKeypoints::from_buffer(buf)
        .expect("buffer carries keypoint metadata")
        .expect("metadata is well formed")
}

fn harness(
    extra: &str,
    format: gst_video::VideoFormat,
    w: u32,
    h: u32,
) -> (gst_check::Harness, gst_video::VideoInfo) {
    let element = inference_element(extra);
    let mut hn = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    let info = video_info(format, w, h);
    hn.set_src_caps(info.to_caps().unwrap());
    (hn, info)
}

/// Same keypoints (positions exactly, confidences to float rounding), flags and landmarks.
fn assert_same_meta(a: &FrameKeypoints, b: &FrameKeypoints, what: &str) {
    assert_eq!(a.inferred, b.inferred, "{what}");
    assert_eq!(
        (a.source_width, a.source_height),
        (b.source_width, b.source_height),
        "{what}"
    );
    assert_eq!(a.keypoints.len(), b.keypoints.len(), "{what}");
    for (p, q) in a.keypoints.iter().zip(&b.keypoints) {
        assert_eq!(
            (p.id, p.x, p.y, p.visible),
            (q.id, q.x, q.y, q.visible),
            "{what}"
        );
        assert!(
            (p.confidence - q.confidence).abs() <= 1e-6 * q.confidence.abs().max(1e-3),
            "{what}: {p:?} vs {q:?}"
        );
    }
    match (&a.pose, &b.pose) {
        (Some(p), Some(q)) => {
            assert_eq!(p.connections, q.connections, "{what}");
            for (l, m) in p.landmarks.iter().zip(&q.landmarks) {
                assert_eq!(l.name, m.name, "{what}");
                assert!(
                    (l.x - m.x).abs() < 1e-6 && (l.y - m.y).abs() < 1e-6,
                    "{what}"
                );
            }
        }
        (p, q) => assert_eq!(p.is_some(), q.is_some(), "{what}"),
    }
}

/// What the sink of a live run saw.
struct LiveRun {
    /// Per buffer: PTS, and how far the clock's running time was past the buffer's when it
    /// reached the sink (before the sink waits for it), in ms.
    pts: Vec<gst::ClockTime>,
    lag_ms: Vec<f64>,
    metas: Vec<Option<FrameKeypoints>>,
    stats: gst::Structure,
    latency: gst::ClockTime,
}
