//! The `stablekeypoints` element.
//!
//! ```text
//! gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! stablekeypoints model=out/model \
//!     tokens=out/model/tokens.safetensors draw=true ! videoconvert ! autovideosink
//! ```
//!
//! In-place video filter: every buffer gets one `GstVideoRegionOfInterestMeta` of type
//! `stablekeypoints` with a `keypoints` parameter structure (see [`crate::meta`]).

use gst::glib;
use gst::prelude::*;

mod imp;

pub use imp::{CropModeProp, GapPolicyProp, SmoothingProp, MESSAGE_NAME};

glib::wrapper! {
    pub struct StableKeypoints(ObjectSubclass<imp::StableKeypoints>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

/// The model of `dir` on `device` (the element's `model` and `device` properties), from the
/// cache elements share: loaded now unless an element holds it. While the caller keeps it,
/// elements that start reuse it instead of loading their own (the CLI keeps one across the
/// videos of a corpus).
pub fn shared_model(
    dir: &std::path::Path,
    device: &str,
) -> Result<std::sync::Arc<::stablekeypoints::Model>, String> {
    imp::load_model(dir, device)
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "stablekeypoints",
        gst::Rank::NONE,
        StableKeypoints::static_type(),
    )
}
