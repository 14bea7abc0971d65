//! The `stablekeypointsboxes` element: object boxes from a file, attached to each frame as
//! the metadata an upstream detector would attach (for the keypoints of each person, where
//! no detector model can be had: true boxes of a rendered world, another program's
//! detections, hand-drawn ones).
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! stablekeypointsboxes location=boxes.jsonl \
//!     ! videoconvert ! autovideosink
//! ```
//!
//! Metadata-only filter for raw video in any format and memory; the pixels pass untouched.
//! `location` is read when the element starts ([`stablekeypoints::boxes`] has its two forms:
//! JSON lines per frame, or COCO detection results). Each buffer gets one
//! `GstVideoRegionOfInterestMeta` per box of its record: `roi_type` the box's label, the
//! rectangle the box rescaled to the frame (when the record gives the frame size it was
//! measured on), rounded and clipped to the frame, with DL Streamer's [`DETECTION`]
//! parameter structure and, when the box has an id, its [`OBJECT_ID`] structure (what
//! `gvadetect` and `gvatrack` attach). A box left empty by the clipping is skipped with a
//! warning in the debug log.
//!
//! Which record goes with a buffer (`frame-index`): `count`, the n-th buffer since the
//! element started (or since the last flush) is record `frame` n; `timestamp`, the record
//! whose `timestamp` lies within half a frame of the buffer's stream time (a file without
//! timestamps, such as COCO results: the record of the source's frame index, stream time
//! times the frame rate).

use gst::glib;
use gst::prelude::*;

mod imp;

/// DL Streamer's detection parameter structure on a ROI meta (`gvadetect`).
pub const DETECTION: &str = "detection";
/// Its fields: the box's corners normalised to the frame (doubles in [0, 1]) ...
pub const X_MIN: &str = "x_min";
pub const Y_MIN: &str = "y_min";
pub const X_MAX: &str = "x_max";
pub const Y_MAX: &str = "y_max";
/// ... the detector's confidence (double; 1 when the file gives none) ...
pub const CONFIDENCE: &str = "confidence";
/// ... the label (string) and its number (int).
pub const LABEL: &str = "label";
pub const LABEL_ID: &str = "label_id";
/// DL Streamer's tracker parameter structure (`gvatrack`), with the object's id in an int
/// field [`OBJECT_ID_FIELD`].
pub const OBJECT_ID: &str = "object_id";
pub const OBJECT_ID_FIELD: &str = "id";

/// Which record of the file goes with a buffer.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsBoxesFrameIndex")]
pub enum BoxesFrameIndexProp {
    /// Buffers since the element started (or since the last flush).
    #[enum_value(
        name = "The record of the buffer's count since the element started or the last flush",
        nick = "count"
    )]
    Count = 0,
    /// The record whose timestamp lies within half a frame of the buffer's stream time.
    #[enum_value(
        name = "The record whose timestamp is within half a frame of the buffer's stream time",
        nick = "timestamp"
    )]
    Timestamp = 1,
}

glib::wrapper! {
    pub struct StableKeypointsBoxes(ObjectSubclass<imp::StableKeypointsBoxes>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    BoxesFrameIndexProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "stablekeypointsboxes",
        gst::Rank::NONE,
        StableKeypointsBoxes::static_type(),
    )
}
