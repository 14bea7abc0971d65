//! The `stablekeypointsoverlay` element, and the drawing it shares with the inference
//! element's `draw=true`.
//!
//! ```text
//! gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! stablekeypoints model=out/model \
//!     ! videoscale ! video/x-raw,width=640,height=360 ! stablekeypointsoverlay draw-ids=true \
//!     ! videoconvert ! autovideosink
//! ```
//!
//! In-place video filter: draws the keypoints, ids and pose skeleton of the metadata on each
//! buffer (ours, and keypoints other elements attached in DL Streamer's layout), in every
//! raw format. Each frame's drawing is laid out once ([`Overlay`]: sizes from the frame,
//! labels placed), then rendered either straight into the frame's planes ([`Canvas`], for
//! the RGB family, I420/YV12 and NV12) or into small ARGB/AYUV rectangles that GStreamer
//! blends into any other raw format ([`Blender`]). With keypoints per object (top-down
//! inference) each object's keypoints and box are drawn in a colour of its own
//! ([`object_rgb`], from its id), with its id beside the box under `draw-ids`.

use gst::glib;
use gst::prelude::*;

mod blend;
mod canvas;
mod draw;
mod imp;
mod scene;
#[cfg(test)]
mod tests;

pub use crate::formats::{Layout, Yuv};
pub use blend::Blender;
pub use canvas::Canvas;
pub use draw::{
    draw_buffer, render, scene as frame_scene, scene_all as frame_scene_all, DrawSettings, Foreign,
};
pub use scene::{
    object_rgb, palette_rgb, Dot, Label, ObjectMark, Overlay, Skeleton, Style, SKELETON_RGB,
};

glib::wrapper! {
    pub struct StableKeypointsOverlay(ObjectSubclass<imp::StableKeypointsOverlay>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "stablekeypointsoverlay",
        gst::Rank::NONE,
        StableKeypointsOverlay::static_type(),
    )
}
