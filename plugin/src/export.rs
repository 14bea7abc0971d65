//! One frame's keypoints as an export record (`stablekeypoints::export::Record`, the JSON
//! lines schema) and as the `stablekeypoints` bus message: shared by the elements so that
//! they write the same fields.

use gst::prelude::*;
use stablekeypoints::export::{
    KeypointRecord, LandmarkRecord, ObjectRecord, Record, OBJECT_SCHEMA, SCHEMA,
};

use crate::meta::FrameKeypoints;

/// Name of the bus message structure.
pub const MESSAGE_NAME: &str = "stablekeypoints";
/// Name of the message's keypoint entries.
pub const MESSAGE_KEYPOINT: &str = "keypoint";
/// Name of the message's landmark entries.
pub const MESSAGE_LANDMARK: &str = "landmark";

/// Where a frame sits in time.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameTimes {
    pub pts: Option<gst::ClockTime>,
    pub duration: Option<gst::ClockTime>,
    pub stream_time: Option<gst::ClockTime>,
    pub running_time: Option<gst::ClockTime>,
}

impl FrameTimes {
    /// The buffer's timestamp and duration, and its position in `segment` (a time segment;
    /// others give no stream and running time).
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

/// The record of frame `index` (or of one of its objects, schema
/// [`OBJECT_SCHEMA`]), positions in pixels of a `width` x `height` frame.
pub fn record(
    frame: &FrameKeypoints,
    index: u64,
    times: &FrameTimes,
    width: u32,
    height: u32,
) -> Record {
    let ns = |t: Option<gst::ClockTime>| t.map(|t| t.nseconds());
    Record {
        schema: match frame.object {
            None => SCHEMA.into(),
            Some(_) => OBJECT_SCHEMA.into(),
        },
        frame: index,
        image: None,
        pts: ns(times.pts),
        stream_time: ns(times.stream_time),
        running_time: ns(times.running_time),
        duration: ns(times.duration),
        width,
        height,
        inferred: frame.inferred,
        object: frame.object.as_ref().map(|o| ObjectRecord {
            object_id: o.id,
            label: o.label.clone(),
            roi: o.bbox,
        }),
        keypoints: frame
            .keypoints
            .iter()
            .map(|k| KeypointRecord::new(k.id, k.x, k.y, k.confidence, k.visible, width, height))
            .collect(),
        pose: frame.pose.as_ref().map(|p| {
            p.landmarks
                .iter()
                .map(|l| LandmarkRecord::new(&l.name, l.x, l.y, width, height))
                .collect()
        }),
        skeleton: frame.pose.as_ref().map(|p| p.connections.clone()),
    }
}

/// The `stablekeypoints` element message of frame `index` (`facedetect` style: times in
/// nanoseconds, `GST_CLOCK_TIME_NONE` when unknown); one of its objects' has their
/// `object-id`, `object-label` and `object-box` (as the metadata's fields).
pub fn message(
    frame: &FrameKeypoints,
    index: u64,
    times: &FrameTimes,
    width: u32,
    height: u32,
) -> gst::Structure {
    let list = gst::List::new(frame.keypoints.iter().map(|k| {
        let (x, y) = k.pixel(width, height);
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
    let ns = |t: Option<gst::ClockTime>| t.map_or(u64::MAX, |t| t.nseconds());
    let mut st = gst::Structure::builder(MESSAGE_NAME)
        .field("timestamp", ns(times.pts))
        .field("stream-time", ns(times.stream_time))
        .field("running-time", ns(times.running_time))
        .field("duration", ns(times.duration))
        .field("frame", index)
        .field("width", width as i32)
        .field("height", height as i32)
        .field("inferred", frame.inferred)
        .field("keypoints", list)
        .build();
    if let Some(o) = &frame.object {
        use crate::meta::fields;
        st.set(fields::OBJECT_ID, o.id);
        st.set(fields::OBJECT_LABEL, &o.label);
        st.set(
            fields::OBJECT_BOX,
            gst::Array::new(o.bbox.iter().map(|v| v.to_send_value())),
        );
    }
    if let Some(pose) = &frame.pose {
        let list = gst::List::new(pose.landmarks.iter().map(|l| {
            let (x, y) = l.pixel(width, height);
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
