//! The `stablekeypoints` inference element.
//!
//! ```text
//! gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! stablekeypoints model=out/model \
//!     tokens=out/model/tokens.safetensors ! stablekeypointsoverlay ! videoconvert ! autovideosink
//! ```
//!
//! In-place video filter: every buffer gets one `GstVideoRegionOfInterestMeta` of type
//! `stablekeypoints` with a `keypoints` parameter structure (see [`crate::meta`]). Frame
//! scheduling, batching and the gap policy are [`stablekeypoints::stream`]; drawing
//! (`draw=true`) is the overlay element's code and `pose` the pose element's.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::LazyLock;

mod imp;
mod infer;
mod objects;
mod output;
mod props;
mod stats;

/// The element's debug category; its model loading (`infer.rs`) logs through it too.
static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "stablekeypoints",
        gst::DebugColorFlags::empty(),
        Some("StableKeypoints keypoint detector"),
    )
});

pub use crate::export::MESSAGE_NAME;
pub(crate) use imp::SCHEDULE_QUERY;

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsCropMode")]
pub enum CropModeProp {
    #[enum_value(
        name = "Letterbox: scale the whole frame into the square, pad with black",
        nick = "letterbox"
    )]
    Letterbox = 0,
    #[enum_value(
        name = "Center crop: scale the short side to the square, cut the centre",
        nick = "center-crop"
    )]
    CenterCrop = 1,
    #[enum_value(
        name = "Stretch: resize each axis on its own (PIL bilinear), as the reference's loaders",
        nick = "stretch"
    )]
    Stretch = 2,
}

/// The core's mode of each value: the one translation (the nicks are the core's names,
/// [`CropMode::name`](::stablekeypoints::CropMode::name)).
impl From<CropModeProp> for ::stablekeypoints::CropMode {
    fn from(p: CropModeProp) -> Self {
        match p {
            CropModeProp::Letterbox => Self::Letterbox,
            CropModeProp::CenterCrop => Self::CenterCrop,
            CropModeProp::Stretch => Self::Stretch,
        }
    }
}

impl From<::stablekeypoints::CropMode> for CropModeProp {
    fn from(m: ::stablekeypoints::CropMode) -> Self {
        match m {
            ::stablekeypoints::CropMode::Letterbox => Self::Letterbox,
            ::stablekeypoints::CropMode::CenterCrop => Self::CenterCrop,
            ::stablekeypoints::CropMode::Stretch => Self::Stretch,
        }
    }
}

/// Keypoints of the frames that are not inferred (interpolation is the track element's).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsGapPolicy")]
pub enum GapPolicyProp {
    #[enum_value(
        name = "None: frames without inference carry no keypoints",
        nick = "none"
    )]
    None = 0,
    #[enum_value(
        name = "Hold last: repeat the last inferred keypoints",
        nick = "hold-last"
    )]
    HoldLast = 1,
}

/// What is inferred: the whole frame, or each object an upstream detector found (DL
/// Streamer's names).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStableKeypointsInferenceRegion")]
pub enum InferenceRegionProp {
    #[enum_value(
        name = "Full frame: one set of keypoints per frame",
        nick = "full-frame"
    )]
    FullFrame = 0,
    #[enum_value(
        name = "ROI list: one set per region-of-interest meta of the frame (top-down)",
        nick = "roi-list"
    )]
    RoiList = 1,
}

glib::wrapper! {
    pub struct StableKeypoints(ObjectSubclass<imp::StableKeypoints>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

impl StableKeypoints {
    /// Testing aid, deliberately not a property: every inference (and the warm-up) of this
    /// instance takes `delay` longer, to act as a slower model. Read when the element
    /// starts (READY -> PAUSED).
    #[doc(hidden)]
    pub fn set_test_inference_delay(&self, delay: std::time::Duration) {
        self.imp().set_test_inference_delay(delay);
    }
}

/// The model `source` names on `device` (the element's `model`, `vae`, `no-ema` and `device` properties), from the
/// cache elements share: loaded now unless an element holds it. While the caller keeps it,
/// elements that start reuse it instead of loading their own (the CLI keeps one across the
/// videos of a corpus).
pub fn shared_model(
    source: &::stablekeypoints::model::ModelSource,
    device: &str,
) -> Result<std::sync::Arc<::stablekeypoints::Model>, String> {
    infer::load_model(source, device)
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    CropModeProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    GapPolicyProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    InferenceRegionProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "stablekeypoints",
        gst::Rank::NONE,
        StableKeypoints::static_type(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::stablekeypoints::CropMode;

    #[test]
    fn crop_mode_nicks_are_the_core_names_in_order() {
        let class = glib::EnumClass::new::<CropModeProp>();
        let nicks: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
        let names: Vec<&str> = CropMode::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(nicks, names);
        for (i, mode) in CropMode::ALL.into_iter().enumerate() {
            let prop = CropModeProp::from(mode);
            assert_eq!(prop as i32, i as i32);
            assert_eq!(CropMode::from(prop), mode);
        }
    }
}
