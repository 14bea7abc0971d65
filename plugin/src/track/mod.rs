//! The `stablekeypointstrack` element: temporal smoothing and interpolation of the keypoint
//! metadata.
//!
//! ```text
//! gst-launch-1.0 v4l2src ! videoconvert ! stablekeypoints model=out/model inference-interval=3 \
//!     ! stablekeypointstrack gap-policy=interpolate smoothing=one-euro \
//!     ! stablekeypointsoverlay ! videoconvert ! autovideosink
//! ```
//!
//! Metadata-only filter for raw video in any format and memory: rewrites the keypoints on
//! each buffer in place (One-Euro smoothing on the buffer timestamps), and with
//! `gap-policy=interpolate` holds the frames the inference element did not infer until the
//! next inference, placing their keypoints on the line between the two (adds that look-ahead
//! to the pipeline latency). The logic is [`stablekeypoints::stream::Interpolator`] and
//! [`stablekeypoints::track::KeypointSmoother`].
//!
//! With top-down inference (keypoints per object) each object, keyed by its id, is smoothed
//! and interpolated on its own (`sets.rs`), as its sequence alone would be: an object missing
//! from the inference that ends a gap keeps the keypoints it carries, one that appears
//! starts afresh, and one missing for 3 seconds is forgotten.

use gst::glib;
use gst::prelude::*;

mod imp;
mod sets;

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsSmoothing")]
pub enum SmoothingProp {
    #[enum_value(name = "None", nick = "none")]
    None = 0,
    #[enum_value(name = "One-Euro filter on each coordinate", nick = "one-euro")]
    OneEuro = 1,
}

/// What happens to the frames the inference element did not infer.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsTrackGapPolicy")]
pub enum TrackGapProp {
    #[enum_value(
        name = "Hold last: they keep the last inferred keypoints, as they come",
        nick = "hold-last"
    )]
    HoldLast = 1,
    #[enum_value(
        name = "Interpolate: hold them until the next inference and interpolate (adds latency)",
        nick = "interpolate"
    )]
    Interpolate = 2,
}

glib::wrapper! {
    pub struct StableKeypointsTrack(ObjectSubclass<imp::StableKeypointsTrack>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    SmoothingProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    TrackGapProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "stablekeypointstrack",
        gst::Rank::NONE,
        StableKeypointsTrack::static_type(),
    )
}
