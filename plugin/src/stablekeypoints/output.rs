//! The inference element's per-frame outputs besides the metadata: the `stablekeypoints`
//! bus message (`post-messages`) and the JSON lines file (`json-location`).

use gst::prelude::*;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::meta::{semantic_tag, FrameKeypoints, KeypointMeta, Origin, TokenIdentity};
use stablekeypoints::Keypoint;

/// Name of the bus message structure and of its keypoint entries.
pub const MESSAGE_NAME: &str = "stablekeypoints";
const MESSAGE_KEYPOINT: &str = "keypoint";
const MESSAGE_LANDMARK: &str = "landmark";

/// The metadata of a `width` x `height` frame whose `keypoints` (frame-normalised) come
/// from `origin`: positions clamped into the frame, `visible` from `threshold`.
pub fn frame_keypoints(
    keypoints: &[Keypoint],
    origin: Origin,
    (width, height): (u32, u32),
    threshold: f32,
    (num_keypoints, model, tokens): (usize, String, TokenIdentity),
) -> FrameKeypoints {
    FrameKeypoints {
        semantic_tag: semantic_tag(num_keypoints),
        model,
        source_width: width,
        source_height: height,
        inferred: origin.inferred(),
        keypoints: keypoints
            .iter()
            .map(|k| KeypointMeta {
                id: k.id as u32,
                x: k.x.clamp(0.0, 1.0),
                y: k.y.clamp(0.0, 1.0),
                confidence: k.score,
                visible: k.score >= threshold,
            })
            .collect(),
        origin: Some(origin),
        threshold: Some(threshold),
        tokens: Some(tokens),
        ..Default::default()
    }
}

/// Where a frame sits in time.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameTimes {
    pub pts: Option<gst::ClockTime>,
    pub duration: Option<gst::ClockTime>,
    pub stream_time: Option<gst::ClockTime>,
    pub running_time: Option<gst::ClockTime>,
}

impl FrameTimes {
    /// The buffer's timestamp and duration, and its position in `segment`.
    pub fn of(buffer: &gst::BufferRef, segment: &gst::Segment) -> Self {
        let pts = buffer.pts();
        let seg = segment.downcast_ref::<gst::ClockTime>();
        Self {
            pts,
            duration: buffer.duration(),
            stream_time: seg.and_then(|s| s.to_stream_time(pts)),
            running_time: seg.and_then(|s| s.to_running_time(pts)),
        }
    }
}

/// The `stablekeypoints` element message of frame `index` (`facedetect` style: times in
/// nanoseconds, `GST_CLOCK_TIME_NONE` when unknown).
pub fn message(frame: &FrameKeypoints, index: u64, t: &FrameTimes) -> gst::Structure {
    let (w, h) = (frame.source_width, frame.source_height);
    let list = gst::List::new(frame.keypoints.iter().map(|k| {
        let (x, y) = k.pixel(w, h);
        gst::Structure::builder(MESSAGE_KEYPOINT)
            .field("id", k.id)
            .field("x", x)
            .field("y", y)
            .field("nx", k.x)
            .field("ny", k.y)
            .field("confidence", k.confidence)
            .field("visible", k.visible)
            .build()
            .to_send_value()
    }));
    let none = u64::MAX;
    let ns = |t: Option<gst::ClockTime>| t.map_or(none, |t| t.nseconds());
    let mut st = gst::Structure::builder(MESSAGE_NAME)
        .field("timestamp", ns(t.pts))
        .field("stream-time", ns(t.stream_time))
        .field("running-time", ns(t.running_time))
        .field("duration", ns(t.duration))
        .field("frame", index)
        .field("width", w as i32)
        .field("height", h as i32)
        .field("inferred", frame.inferred)
        .field("keypoints", list)
        .build();
    if let Some(pose) = &frame.pose {
        let list = gst::List::new(pose.landmarks.iter().map(|l| {
            let (x, y) = l.pixel(w, h);
            gst::Structure::builder(MESSAGE_LANDMARK)
                .field("name", &l.name)
                .field("x", x)
                .field("y", y)
                .field("nx", l.x)
                .field("ny", l.y)
                .build()
                .to_send_value()
        }));
        st.set("pose", list);
        st.set(
            "skeleton",
            gst::Array::new(
                pose.connections
                    .iter()
                    .flatten()
                    .map(|&i| (i as i32).to_send_value()),
            ),
        );
    }
    st
}

fn clock_ns(t: Option<gst::ClockTime>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| t.nseconds().into())
}

fn finite(v: f32) -> serde_json::Value {
    if v.is_finite() {
        (v as f64).into()
    } else {
        serde_json::Value::Null
    }
}

/// The JSON record of frame `index`.
pub fn record(frame: &FrameKeypoints, index: u64, t: &FrameTimes) -> serde_json::Value {
    let (w, h) = (frame.source_width, frame.source_height);
    let kps: Vec<serde_json::Value> = frame
        .keypoints
        .iter()
        .map(|k| {
            let (x, y) = k.pixel(w, h);
            serde_json::json!({
                "id": k.id, "x": finite(x), "y": finite(y), "nx": finite(k.x), "ny": finite(k.y),
                "confidence": finite(k.confidence), "visible": k.visible,
            })
        })
        .collect();
    let mut record = serde_json::json!({
        "frame": index,
        "pts": clock_ns(t.pts),
        "stream_time": clock_ns(t.stream_time),
        "running_time": clock_ns(t.running_time),
        "duration": clock_ns(t.duration),
        "width": w,
        "height": h,
        "inferred": frame.inferred,
        "keypoints": kps,
    });
    if let Some(pose) = &frame.pose {
        let landmarks: Vec<serde_json::Value> = pose
            .landmarks
            .iter()
            .map(|l| {
                let (x, y) = l.pixel(w, h);
                serde_json::json!({
                    "name": l.name, "x": finite(x), "y": finite(y),
                    "nx": finite(l.x), "ny": finite(l.y),
                })
            })
            .collect();
        record["pose"] = landmarks.into();
        record["skeleton"] = serde_json::json!(pose.connections);
    }
    record
}

/// The `json-location` file.
pub struct JsonWriter {
    pub path: PathBuf,
    file: File,
    /// Bytes of complete lines in the file.
    complete: u64,
}

impl JsonWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: File::create(path)?,
            complete: 0,
        })
    }

    /// One `write` per record so that a crash never leaves half a line. A failed write
    /// (disk full, file size limit) may still have written part of the line: the file is
    /// cut back to its complete lines, so it stays well formed.
    pub fn write_line(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        match self.file.write_all(&line) {
            Ok(()) => {
                self.complete += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.complete);
                let _ = self.file.seek(SeekFrom::Start(self.complete));
                Err(e)
            }
        }
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush().and_then(|_| self.file.sync_data())
    }
}
