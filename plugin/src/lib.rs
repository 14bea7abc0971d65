//! GStreamer plugin `stablekeypoints`: the `stablekeypoints` element detects StableKeypoints
//! (unsupervised keypoints read from Stable Diffusion cross-attention maps) on video frames,
//! attaches them as metadata, and optionally draws them, posts bus messages and writes JSON
//! lines. The model code lives in the GStreamer-free `stablekeypoints` crate.

use gst::glib;

#[cfg(feature = "analytics")]
pub mod analytics;
/// Model input through GStreamer's converter (public for the tests and examples).
pub mod convert;
mod export;
pub mod meta;
/// Drawing into raw frames (public for the tests and `examples/bench-overlay.rs`).
pub mod overlay;
mod publish;
mod stablekeypoints;

pub use publish::{FormatProp, QosProp, StableKeypointsPublish};
pub use stablekeypoints::{
    shared_model, CropModeProp, GapPolicyProp, SmoothingProp, StableKeypoints, MESSAGE_NAME,
};

pub use overlay::palette_rgb;

// The plugin's Rust allocations (model activations) reuse freed large blocks instead of
// faulting in fresh pages every frame; memory handed to GStreamer goes through GLib's
// allocator as before. Behind the default `caching-alloc` feature, so that a program linking
// the rlib with an allocator of its own can turn it off.
#[cfg(feature = "caching-alloc")]
#[global_allocator]
static ALLOC: ::stablekeypoints::alloc::CachingAlloc =
    ::stablekeypoints::alloc::CachingAlloc::new();

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    stablekeypoints::register(plugin)?;
    publish::register(plugin)
}

gst::plugin_define!(
    stablekeypoints,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
