//! A copy of our structures in a custom meta that scalers keep.
//!
//! GStreamer 1.22's `videoscale` rescales a `GstVideoRegionOfInterestMeta`'s rectangle but
//! drops its parameter structures (the scaled copy has none), so downstream of a scaler the
//! `keypoints` structure is gone. The same structures therefore also travel in a
//! `GstCustomMeta` named [`NAME`], tagged `video` only, whose transform copies them on copies
//! and on video scaling (positions are normalised, so they stay valid) and drops them on any
//! other transform (a rotation would move the points). [`super::FrameKeypoints::from_buffer`]
//! falls back to it when the ROI meta has lost its parameters.

use std::sync::Once;

/// Name of the custom meta.
pub const NAME: &str = "GstStableKeypointsMeta";
/// Its fields: our `keypoints` structure and, with a pose, the `pose` structure.
const KEYPOINTS: &str = "keypoints";
const POSE: &str = "pose";

/// Registers the custom meta once per process (GStreamer must be initialised).
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if gst::meta::CustomMeta::is_registered(NAME) {
            return;
        }
        let copy = glib::Quark::from_str("gst-copy");
        let scale = glib::Quark::from_str("gst-video-scale");
        gst::meta::CustomMeta::register_with_transform(
            NAME,
            &["video"],
            move |dest, meta, _, how| {
                if how != copy && how != scale {
                    return false;
                }
                let Ok(mut out) = gst::meta::CustomMeta::add(dest, NAME) else {
                    return false;
                };
                let to = out.mut_structure();
                for (field, value) in meta.structure().iter() {
                    to.set_value(field, value.clone());
                }
                true
            },
        );
    });
}

use gst::glib;

/// Attaches (or replaces) the carrier with these structures.
pub fn attach(
    buffer: &mut gst::BufferRef,
    keypoints: &gst::Structure,
    pose: Option<&gst::Structure>,
) {
    register();
    remove(buffer);
    let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, NAME) else {
        return;
    };
    let s = meta.mut_structure();
    s.set(KEYPOINTS, keypoints.clone());
    if let Some(p) = pose {
        s.set(POSE, p.clone());
    }
}

/// Removes the carrier, if any.
pub fn remove(buffer: &mut gst::BufferRef) {
    register();
    if let Ok(m) = gst::meta::CustomMeta::from_mut_buffer(buffer, NAME) {
        let _ = m.remove();
    }
}

/// The carried `keypoints` and `pose` structures, if the buffer has the carrier.
pub fn read(buffer: &gst::BufferRef) -> Option<(gst::Structure, Option<gst::Structure>)> {
    register();
    let m = gst::meta::CustomMeta::from_buffer(buffer, NAME).ok()?;
    let s = m.structure();
    let keypoints = s.get::<gst::Structure>(KEYPOINTS).ok()?;
    Some((keypoints, s.get::<gst::Structure>(POSE).ok()))
}
