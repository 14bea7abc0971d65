//! GStreamer plugin `stablekeypoints`, one element per stage:
//!
//! - `stablekeypoints`: inference (StableKeypoints: unsupervised keypoints read from Stable
//!   Diffusion cross-attention maps), attached as metadata to each frame;
//! - `stablekeypointstrack`: One-Euro smoothing and interpolation between inferences;
//! - `stablekeypointspose`: named landmarks and a skeleton regressed from the keypoints;
//! - `stablekeypointsoverlay`: draws the metadata (ours and DL Streamer's keypoints);
//! - `stablekeypointspublish`: per-frame records to a file, standard output or MQTT;
//! - `stablekeypointsboxes`: object boxes from a file as the ROI metadata an upstream
//!   detector would attach.
//!
//! The model code lives in the GStreamer-free `stablekeypoints` crate.

use gst::glib;
use std::sync::{Mutex, MutexGuard};

#[cfg(feature = "analytics")]
pub mod analytics;
/// Object boxes from a file (the DL Streamer names they are attached with are public).
pub mod boxes;
/// Model input through GStreamer's converter (public for the tests and examples).
pub mod convert;
mod export;
mod formats;
/// Nominal frame rates and the source's frame indices (shared with the CLI).
pub mod framerate;
pub mod meta;
/// The overlay element and its drawing (public for the tests and `examples/bench-overlay.rs`).
pub mod overlay;
mod pose;
mod publish;
mod stablekeypoints;
mod track;

pub use boxes::{BoxesFrameIndexProp, StableKeypointsBoxes};
pub use overlay::{palette_rgb, StableKeypointsOverlay};
pub use pose::StableKeypointsPose;
pub use publish::{FormatProp, FrameIndexProp, QosProp, StableKeypointsPublish};
pub use stablekeypoints::{
    shared_model, CropModeProp, GapPolicyProp, StableKeypoints, MESSAGE_NAME,
};
pub use track::{SmoothingProp, StableKeypointsTrack, TrackGapProp};

// The plugin's Rust allocations (model activations) reuse freed large blocks instead of
// faulting in fresh pages every frame; memory handed to GStreamer goes through GLib's
// allocator as before. Behind the default `caching-alloc` feature, so that a program linking
// the rlib with an allocator of its own can turn it off.
#[cfg(feature = "caching-alloc")]
#[global_allocator]
static ALLOC: ::stablekeypoints::alloc::CachingAlloc =
    ::stablekeypoints::alloc::CachingAlloc::new();

/// Locks a mutex; a panic elsewhere must not turn into a panic in the streaming thread.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    stablekeypoints::register(plugin)?;
    track::register(plugin)?;
    pose::register(plugin)?;
    overlay::register(plugin)?;
    publish::register(plugin)?;
    boxes::register(plugin)
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
