//! A copy of our structures in custom metas that scalers keep, with the geometry of the
//! frame they were made for.
//!
//! GStreamer 1.22's `videoscale` rescales a `GstVideoRegionOfInterestMeta`'s rectangle but
//! drops its parameter structures (the scaled copy has none), so downstream of a scaler the
//! `keypoints` structure is gone. The same structures therefore also travel in a
//! `GstCustomMeta` named [`NAME`], tagged `video` only, with the [`Geometry`] of the frame
//! they were made for (fields `width`, `height` and, when the producer read the frame,
//! `signature`). GStreamer's video filters copy such a meta unchanged through any transform
//! (its transform copies it on copies and scaling and drops it otherwise), so the readers'
//! [`geometry::check`](super::geometry::check) sees what a flip, crop or border did.
//!
//! Its size is also followed through scalers by a second custom meta, [`SIZE_NAME`] (fields
//! `width`, `height`), tagged `video` and `size`: scalers hand it their sizes, and elements
//! that change the geometry otherwise (`videocrop`, `videobox`, and `videoflip` even as
//! an identity, on 1.22) drop it, as they drop the ROI meta. [`super::FrameKeypoints::for_frame`]
//! reads both.

use super::geometry::{Geometry, Signature};
use gst::glib;
use gst::glib::translate::{from_glib, IntoGlib};
use gst::prelude::*;
use std::sync::Once;

/// Name of the custom meta carrying the structures.
pub const NAME: &str = "GstStableKeypointsMeta";
/// Name of the custom meta following the frame size through scalers.
pub const SIZE_NAME: &str = "GstStableKeypointsSizeMeta";
/// The carrier's fields: our `keypoints` structure and, with a pose, the `pose` structure;
/// the frame size and signature (the size meta has the size).
const KEYPOINTS: &str = "keypoints";
const POSE: &str = "pose";
/// Per-object entries: an array of structures named [`OBJECT`] with fields `keypoints` and,
/// with a pose, `pose`.
const OBJECTS: &str = "objects";
const OBJECT: &str = "object";
const WIDTH: &str = "width";
const HEIGHT: &str = "height";
const SIGNATURE: &str = "signature";

/// Registers the custom metas once per process (GStreamer must be initialised).
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !gst::meta::CustomMeta::is_registered(NAME) {
            let copy = glib::Quark::from_str("gst-copy");
            let scale = glib::Quark::from_str("gst-video-scale");
            gst::meta::CustomMeta::register_with_transform(
                NAME,
                &["video"],
                move |dest, meta, _, how| {
                    (how == copy || how == scale) && copy_to(dest, NAME, meta.structure())
                },
            );
        }
        if !gst::meta::CustomMeta::is_registered(SIZE_NAME) {
            // gstreamer-rs' `register_with_transform` does not hand the transform's data
            // (the scaler's sizes) on, so the C registration is used directly.
            let name = std::ffi::CString::new(SIZE_NAME).expect("no NUL");
            let mut tags = [c"video".as_ptr(), c"size".as_ptr(), std::ptr::null()];
            // SAFETY: GStreamer copies the name and tags; `transform_size` has the
            // signature of a GstCustomMetaTransformFunction and takes no user data.
            unsafe {
                gst::ffi::gst_meta_register_custom(
                    name.as_ptr(),
                    tags.as_mut_ptr(),
                    Some(transform_size),
                    std::ptr::null_mut(),
                    None,
                );
            }
        }
    });
}

/// Adds a custom meta `name` to `dest` with the fields of `from`.
fn copy_to(dest: &mut gst::BufferRef, name: &str, from: &gst::StructureRef) -> bool {
    let Ok(mut out) = gst::meta::CustomMeta::add(dest, name) else {
        return false;
    };
    let to = out.mut_structure();
    for (field, value) in from.iter() {
        to.set_value(field, value.clone());
    }
    true
}

/// The size meta's transform: copied on copies; on scaling, the scaler's output size when
/// the meta had its input size, else 0 x 0 (a transform before the scaler changed the
/// frame, and no size after it is right); dropped on any other transform.
unsafe extern "C" fn transform_size(
    dest: *mut gst::ffi::GstBuffer,
    meta: *mut gst::ffi::GstCustomMeta,
    _src: *mut gst::ffi::GstBuffer,
    type_: glib::ffi::GQuark,
    data: glib::ffi::gpointer,
    _user_data: glib::ffi::gpointer,
) -> glib::ffi::gboolean {
    let kind: glib::Quark = unsafe { from_glib(type_) };
    let scaled = if kind == glib::Quark::from_str("gst-copy") {
        None
    } else if kind == glib::Quark::from_str("gst-video-scale") && !data.is_null() {
        // SAFETY: with "gst-video-scale", GStreamer passes a GstVideoMetaTransform whose
        // infos live for the call.
        let t = unsafe { &*(data as *const gst_video::ffi::GstVideoMetaTransform) };
        if t.in_info.is_null() || t.out_info.is_null() {
            return false.into_glib();
        }
        let size = |i: *const gst_video::ffi::GstVideoInfo| {
            // SAFETY: checked non-null above.
            let i = unsafe { &*i };
            (i.width.max(0) as u32, i.height.max(0) as u32)
        };
        Some((size(t.in_info), size(t.out_info)))
    } else {
        return false.into_glib();
    };
    // SAFETY: GStreamer hands a writable destination buffer and the source buffer's meta,
    // which CustomMeta wraps transparently.
    let (dest, meta) = unsafe {
        (
            gst::BufferRef::from_mut_ptr(dest),
            &*(meta as *const gst::meta::CustomMeta),
        )
    };
    let from = meta.structure();
    let Some((input, output)) = scaled else {
        return copy_to(dest, SIZE_NAME, from).into_glib();
    };
    let had = (
        from.get::<u32>(WIDTH).unwrap_or(0),
        from.get::<u32>(HEIGHT).unwrap_or(0),
    );
    let now = if had == input { output } else { (0, 0) };
    add_size(dest, now).into_glib()
}

fn add_size(buffer: &mut gst::BufferRef, (w, h): (u32, u32)) -> bool {
    let Ok(mut m) = gst::meta::CustomMeta::add(buffer, SIZE_NAME) else {
        return false;
    };
    let s = m.mut_structure();
    s.set(WIDTH, w);
    s.set(HEIGHT, h);
    true
}

/// A set of keypoints as the carrier holds it: the `keypoints` structure and the `pose`
/// structure, if any.
pub type Entry = (gst::Structure, Option<gst::Structure>);

/// Attaches (or replaces) the carrier with these structures, made for `geometry`, and the
/// size meta: the whole frame's keypoints (`frame`) and each object's.
pub fn attach(
    buffer: &mut gst::BufferRef,
    frame: Option<&Entry>,
    objects: &[Entry],
    geometry: &Geometry,
) {
    register();
    remove(buffer);
    let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, NAME) else {
        return;
    };
    let s = meta.mut_structure();
    if let Some((k, p)) = frame {
        s.set(KEYPOINTS, k.clone());
        if let Some(p) = p {
            s.set(POSE, p.clone());
        }
    }
    if !objects.is_empty() {
        let entry = |(k, p): &Entry| {
            let mut o = gst::Structure::builder(OBJECT)
                .field(KEYPOINTS, k.clone())
                .build();
            if let Some(p) = p {
                o.set(POSE, p.clone());
            }
            o.to_send_value()
        };
        s.set(OBJECTS, gst::Array::new(objects.iter().map(entry)));
    }
    s.set(WIDTH, geometry.width);
    s.set(HEIGHT, geometry.height);
    if let Some(sig) = &geometry.signature {
        s.set(SIGNATURE, glib::Bytes::from(&sig.0[..]));
    }
    add_size(buffer, (geometry.width, geometry.height));
}

/// Records `signature` as the picture the carrier's keypoints were made for.
pub fn sign(buffer: &mut gst::BufferRef, signature: &Signature) {
    register();
    if let Ok(mut m) = gst::meta::CustomMeta::from_mut_buffer(buffer, NAME) {
        m.mut_structure()
            .set(SIGNATURE, glib::Bytes::from(&signature.0[..]));
    }
}

/// Removes the carrier and the size meta, if any.
pub fn remove(buffer: &mut gst::BufferRef) {
    register();
    for name in [NAME, SIZE_NAME] {
        if let Ok(m) = gst::meta::CustomMeta::from_mut_buffer(buffer, name) {
            let _ = m.remove();
        }
    }
}

/// What the carrier metas hold.
pub struct Carried {
    /// The whole frame's keypoints (full-frame inference).
    pub frame: Option<Entry>,
    /// Each object's (top-down inference).
    pub objects: Vec<Entry>,
    /// The frame the keypoints were made for.
    pub made: Geometry,
    /// Its size after the scalers since, while the size meta is there.
    pub size: Option<(u32, u32)>,
}

/// The carried structures and geometry, if the buffer has the carrier.
pub fn read(buffer: &gst::BufferRef) -> Option<Carried> {
    register();
    let m = gst::meta::CustomMeta::from_buffer(buffer, NAME).ok()?;
    let s = m.structure();
    let dims = |s: &gst::StructureRef| {
        (
            s.get::<u32>(WIDTH).unwrap_or(0),
            s.get::<u32>(HEIGHT).unwrap_or(0),
        )
    };
    let entry = |s: &gst::StructureRef| {
        Some((
            s.get::<gst::Structure>(KEYPOINTS).ok()?,
            s.get::<gst::Structure>(POSE).ok(),
        ))
    };
    let objects = s
        .get::<gst::ArrayRef>(OBJECTS)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.get::<gst::Structure>().ok())
                .filter_map(|o| entry(&o))
                .collect()
        })
        .unwrap_or_default();
    let (width, height) = dims(s);
    Some(Carried {
        frame: entry(s),
        objects,
        made: Geometry {
            width,
            height,
            signature: s
                .get::<glib::Bytes>(SIGNATURE)
                .ok()
                .and_then(|b| Signature::from_bytes(&b)),
        },
        size: gst::meta::CustomMeta::from_buffer(buffer, SIZE_NAME)
            .ok()
            .map(|m| dims(m.structure())),
    })
}
