//! The `stablekeypointspublish` element: per-frame keypoint records to a file, standard
//! output or an MQTT broker.
//!
//! ```text
//! gst-launch-1.0 videotestsrc num-buffers=100 ! stablekeypoints model=out/model \
//!     ! stablekeypointspublish address=mqtt://localhost:1883 topic=camera/1/keypoints ! fakesink
//! ```
//!
//! Passthrough (buffers leave untouched, without a copy): it reads the keypoint metadata of
//! `stablekeypoints` ([`crate::meta`]) from each buffer and writes one record per frame in
//! the JSON lines schema of `stablekeypoints::export`, or COCO keypoint results; with
//! keypoints per object (top-down inference), one record (and COCO result, and MQTT
//! message) per object, under schema `stablekeypoints-frame/2`. The
//! streaming thread never waits for the network: records queue for a connection thread, and
//! when the queue is full or the broker is away they are dropped and counted
//! (`records-dropped`, plus a rate-limited warning message) while buffers keep flowing; the
//! client reconnects by itself.

use gst::glib;
use gst::prelude::*;
use std::sync::LazyLock;

mod imp;
mod mqtt;
mod output;

/// The element's debug category; its connection thread (`mqtt.rs`) logs through it too.
static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "stablekeypointspublish",
        gst::DebugColorFlags::empty(),
        Some("StableKeypoints record publisher"),
    )
});

/// Record format (`format`).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsPublishFormat")]
pub enum FormatProp {
    /// One JSON object per frame (schema `stablekeypoints-frame/1`), or per object of a
    /// frame (`stablekeypoints-frame/2`).
    #[enum_value(
        name = "JSON lines: one record per frame, or per object",
        nick = "json-lines"
    )]
    JsonLines = 0,
    /// COCO keypoint results: one document for a file (rewritten every few seconds and at
    /// EOS) or stdout (at EOS), one per frame (or object) for MQTT.
    #[enum_value(name = "COCO keypoint results", nick = "coco")]
    Coco = 1,
}

/// How records are numbered (`frame-index`).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsPublishFrameIndex")]
pub enum FrameIndexProp {
    /// Buffers since the element started.
    #[enum_value(name = "Buffers since the element started", nick = "count")]
    Count = 0,
    /// The source's frame index: the stream time times the frame rate.
    #[enum_value(
        name = "The source's frame index, from the stream time and the frame rate",
        nick = "timestamp"
    )]
    Timestamp = 1,
}

/// MQTT quality of service (`mqtt-qos`).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsPublishQos")]
pub enum QosProp {
    #[enum_value(name = "At most once (QoS 0)", nick = "at-most-once")]
    AtMostOnce = 0,
    #[enum_value(name = "At least once (QoS 1)", nick = "at-least-once")]
    AtLeastOnce = 1,
    #[enum_value(name = "Exactly once (QoS 2)", nick = "exactly-once")]
    ExactlyOnce = 2,
}

glib::wrapper! {
    pub struct StableKeypointsPublish(ObjectSubclass<imp::StableKeypointsPublish>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    FormatProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    FrameIndexProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    QosProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "stablekeypointspublish",
        gst::Rank::NONE,
        StableKeypointsPublish::static_type(),
    )
}
