//! The `stablekeypointspose` element: named landmarks and a skeleton regressed from the
//! keypoint metadata by a pose file (`stablekeypoints eval --save-regressor`).
//!
//! ```text
//! gst-launch-1.0 filesrc location=taichi.mp4 ! decodebin ! stablekeypoints model=M tokens=T \
//!     ! stablekeypointstrack smoothing=one-euro ! stablekeypointspose pose=pose.json \
//!     ! stablekeypointsoverlay ! videoconvert ! autovideosink
//! ```
//!
//! Metadata-only filter for raw video in any format and memory: adds the `pose` structure
//! (and DL Streamer's landmarks tensor) to each buffer's keypoint meta, in place. A pose
//! file fitted with other tokens than those named in the metadata (`token-indices`) is an
//! error. The regression is [`regress::Pose`], which the inference element's `pose`
//! property runs too. With keypoints per object (top-down inference) each object gets its
//! own landmarks, regressed in the square around its box and normalised to the frame.

use gst::glib;
use gst::prelude::*;

mod imp;
mod regress;

pub use regress::{Pose, PoseError};

glib::wrapper! {
    pub struct StableKeypointsPose(ObjectSubclass<imp::StableKeypointsPose>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "stablekeypointspose",
        gst::Rank::NONE,
        StableKeypointsPose::static_type(),
    )
}
