//! The keypoint metadata the elements attach to every buffer, and a typed API to read it.
//!
//! Each buffer carries one `GstVideoRegionOfInterestMeta` with `roi_type` [`ROI_TYPE`]
//! whose rectangle is the bounding box of the visible keypoints in frame pixels (the whole
//! frame when none is visible), and one parameter structure named [`PARAM_NAME`]:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `semantic-tag` | string | `stablekeypoints-<K>-kp` (K keypoints) |
//! | `ids` | array of int | keypoint ids (token order; stable across frames) |
//! | `x`, `y` | array of float | positions normalised to the frame, [0, 1], origin top-left |
//! | `confidence` | array of float | peak of the keypoint's attention map (higher = surer) |
//! | `visible` | array of boolean | `confidence >= keypoint-threshold` |
//! | `inferred` | boolean | true when not computed from this frame (held, interpolated, QoS) |
//! | `origin` | string | `inference`, `interval` (held: not due), `late` (held: QoS), `interpolated` |
//! | `keypoint-threshold` | float | the threshold `visible` was computed with |
//! | `model` | string | the model directory |
//! | `source-width`, `source-height` | int | frame size the keypoints were computed on |
//! | `token-indices` | array of int | the tokens file's `indices` (which tokens gave the keypoints) |
//! | `tokens-hash` | string | [`stablekeypoints::Tokens::fingerprint`] of the tokens |
//!
//! With a pose, a second parameter structure named [`POSE_PARAM_NAME`] carries the
//! landmarks regressed from the keypoints:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `point-names` | array of string | landmark names (the pose file's `names`) |
//! | `point-connections` | array of int | skeleton: pairs of indices into `point-names`, flattened `a0, b0, a1, b1, ...` |
//! | `x`, `y` | array of float | landmark positions normalised to the frame (may leave [0, 1]) |
//!
//! The same meta also carries the keypoints (and landmarks) in DL Streamer's layout, for its
//! `gvawatermark` and `gvametaconvert` (see [`dlstreamer`]).
//!
//! Positions are normalised because converters rescale ROI rectangles but not parameters.
//! They are only true of the picture they were made for: readers go through
//! [`FrameKeypoints::for_frame`], which drops them after a flip, rotation, crop or border
//! ([`geometry`]).

use std::fmt;

pub mod carrier;
pub mod dlstreamer;
pub mod geometry;
mod rois;
mod structure;

use rois::{objects_from_buffer, write_entries};

use geometry::{Frames, Geometry, Mismatch};

pub use stablekeypoints::stream::Origin;

/// `roi_type` of the element's region-of-interest meta.
pub const ROI_TYPE: &str = "stablekeypoints";
/// Name of the parameter structure.
pub const PARAM_NAME: &str = "keypoints";
/// Name of the pose parameter structure.
pub const POSE_PARAM_NAME: &str = "pose";

/// The parameter structures our elements write (and rewrite).
const OUR_PARAMS: [&str; 4] = [
    PARAM_NAME,
    POSE_PARAM_NAME,
    dlstreamer::KEYPOINTS_TENSOR,
    dlstreamer::POSE_TENSOR,
];

/// Whether `p` is one of the structures our elements write: by name, and for the names
/// others use too (`keypoints`, `pose`: DL Streamer's tensors may be named so), by our
/// fields.
pub fn is_ours(p: &gst::StructureRef) -> bool {
    match p.name().as_str() {
        PARAM_NAME => p.has_field(fields::SEMANTIC_TAG),
        POSE_PARAM_NAME => p.has_field(fields::POINT_NAMES) && !p.has_field("format"),
        n => OUR_PARAMS.contains(&n),
    }
}

/// Our structure `name` on an object's ROI meta.
fn our_param<'a>(
    m: &'a gst_video::VideoRegionOfInterestMeta,
    name: &str,
) -> Option<&'a gst::StructureRef> {
    m.params().find(|p| p.name() == name && is_ours(p))
}

/// Field names of the parameter structure.
pub mod fields {
    pub const SEMANTIC_TAG: &str = "semantic-tag";
    pub const IDS: &str = "ids";
    pub const X: &str = "x";
    pub const Y: &str = "y";
    pub const CONFIDENCE: &str = "confidence";
    pub const VISIBLE: &str = "visible";
    pub const INFERRED: &str = "inferred";
    pub const MODEL: &str = "model";
    pub const SOURCE_WIDTH: &str = "source-width";
    pub const SOURCE_HEIGHT: &str = "source-height";
    pub const ORIGIN: &str = "origin";
    pub const THRESHOLD: &str = "keypoint-threshold";
    pub const TOKEN_INDICES: &str = "token-indices";
    pub const TOKENS_HASH: &str = "tokens-hash";
    /// Per object (top-down inference): the object's id, stable across frames.
    pub const OBJECT_ID: &str = "object-id";
    /// Per object: the object's label (its ROI meta's `roi_type`).
    pub const OBJECT_LABEL: &str = "object-label";
    /// Per object: its box `x, y, w, h` normalised to the frame.
    pub const OBJECT_BOX: &str = "object-box";
    /// Per object: the id of its ROI meta on the buffer.
    pub const OBJECT_ROI_ID: &str = "object-roi-id";
    /// Per object: the square the keypoints were inferred in, `x, y, w, h` normalised.
    pub const OBJECT_VIEW: &str = "object-view";
    /// Pose structure only.
    pub const POINT_NAMES: &str = "point-names";
    /// Pose structure only.
    pub const POINT_CONNECTIONS: &str = "point-connections";
}

/// `stablekeypoints-<K>-kp`.
pub fn semantic_tag(num_keypoints: usize) -> String {
    format!("stablekeypoints-{num_keypoints}-kp")
}

/// One keypoint as carried in the metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeypointMeta {
    pub id: u32,
    /// Normalised to the frame width.
    pub x: f32,
    /// Normalised to the frame height.
    pub y: f32,
    pub confidence: f32,
    pub visible: bool,
}

/// One landmark regressed by the pose model.
#[derive(Clone, Debug, PartialEq)]
pub struct LandmarkMeta {
    pub name: String,
    /// Normalised to the frame width (outside [0, 1] when the regressor extrapolates).
    pub x: f32,
    /// Normalised to the frame height.
    pub y: f32,
}

impl LandmarkMeta {
    /// Position in pixels of a `width` x `height` frame.
    pub fn pixel(&self, width: u32, height: u32) -> (f32, f32) {
        (self.x * width as f32, self.y * height as f32)
    }
}

/// The landmarks of one frame and the skeleton joining them.
#[derive(Clone, Debug, PartialEq)]
pub struct PoseMeta {
    pub landmarks: Vec<LandmarkMeta>,
    /// Pairs of indices into `landmarks`.
    pub connections: Vec<[u32; 2]>,
}

/// Which tokens produced the keypoints.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TokenIdentity {
    /// The tokens file's `indices`, in keypoint order.
    pub indices: Vec<u32>,
    /// [`stablekeypoints::Tokens::fingerprint`].
    pub hash: String,
}

impl TokenIdentity {
    pub fn of(tokens: &stablekeypoints::Tokens) -> Self {
        Self {
            indices: tokens.indices.iter().map(|&i| i as u32).collect(),
            hash: tokens.fingerprint(),
        }
    }
}

/// The object a set of keypoints belongs to, with top-down inference on an upstream
/// detector's boxes (`inference-region=roi-list`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ObjectMeta {
    /// Stable across frames: the upstream tracker's id (DL Streamer's `object_id`) when it
    /// set one, else the inference element's (matched by box overlap).
    pub id: u64,
    /// The object's ROI meta `roi_type` (e.g. `person`).
    pub label: String,
    /// The box, `x, y, w, h` normalised to the frame.
    pub bbox: [f32; 4],
    /// The id of the object's ROI meta on the buffer (unique within one buffer only).
    pub roi_id: i32,
    /// The square the keypoints were inferred in (the box with its margin, squared),
    /// `x, y, w, h` normalised to the frame: the model's view, in which a pose file's
    /// regressor reads them.
    pub view: [f32; 4],
}

impl ObjectMeta {
    /// The box in pixels of a `w` x `h` frame, rounded outwards and clipped to it.
    pub fn rect_in(&self, w: u32, h: u32) -> (u32, u32, u32, u32) {
        let [x, y, bw, bh] = self.bbox;
        let clip = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
        let (x0, y0) = (
            clip((x * w as f32 + 1e-3).floor(), w),
            clip((y * h as f32 + 1e-3).floor(), h),
        );
        let (x1, y1) = (
            clip(((x + bw) * w as f32 - 1e-3).ceil(), w),
            clip(((y + bh) * h as f32 - 1e-3).ceil(), h),
        );
        (x0, y0, x1.saturating_sub(x0), y1.saturating_sub(y0))
    }
}

/// The keypoints of one frame, or of one object of a frame.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FrameKeypoints {
    pub semantic_tag: String,
    pub model: String,
    pub source_width: u32,
    pub source_height: u32,
    pub inferred: bool,
    pub keypoints: Vec<KeypointMeta>,
    /// Landmarks of a pose file, if one is applied.
    pub pose: Option<PoseMeta>,
    /// The ROI rectangle (x, y, w, h) in pixels of the buffer it was read from; on a buffer
    /// that was rescaled after the element this is the rescaled box.
    pub rect: (u32, u32, u32, u32),
    /// Where the keypoints come from (`None` when the producer did not say).
    pub origin: Option<Origin>,
    /// The confidence threshold of `visible` (`None` when the producer did not say).
    pub threshold: Option<f32>,
    /// The tokens that produced the keypoints (`None` when the producer did not say).
    pub tokens: Option<TokenIdentity>,
    /// The object they are those of (`None`: the whole frame's).
    pub object: Option<ObjectMeta>,
}

/// Metadata that does not have the documented layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaError(pub String);

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {PARAM_NAME} metadata: {}", self.0)
    }
}

impl std::error::Error for MetaError {}

/// Why the keypoints on a buffer are not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    Malformed(MetaError),
    /// They no longer fit the frame: a geometric transform since they were made.
    Moved(Mismatch),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Malformed(e) => e.fmt(f),
            ReadError::Moved(m) => write!(f, "keypoints that no longer fit the frame: {m}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl KeypointMeta {
    /// Position in pixels of a `width` x `height` frame.
    pub fn pixel(&self, width: u32, height: u32) -> (f32, f32) {
        (self.x * width as f32, self.y * height as f32)
    }
}

impl FrameKeypoints {
    /// Bounding box (x, y, w, h) in source pixels of the visible keypoints; the whole frame
    /// when none is visible. Never empty for a non-empty frame.
    pub fn bounding_box(&self) -> (u32, u32, u32, u32) {
        self.bounding_box_in(self.source_width, self.source_height)
    }

    /// [`Self::bounding_box`] in a `w` x `h` frame (the keypoints are normalised, so this is
    /// the box after a scaler too).
    pub fn bounding_box_in(&self, w: u32, h: u32) -> (u32, u32, u32, u32) {
        let pts: Vec<(f32, f32)> = self
            .keypoints
            .iter()
            .filter(|k| k.visible && k.x.is_finite() && k.y.is_finite())
            .map(|k| k.pixel(w, h))
            .collect();
        if pts.is_empty() || w == 0 || h == 0 {
            return (0, 0, w, h);
        }
        let fold = |f: fn(f32, f32) -> f32, init: f32, pick: fn(&(f32, f32)) -> f32| {
            pts.iter().map(pick).fold(init, f)
        };
        let (x0, x1) = (
            fold(f32::min, f32::MAX, |p| p.0),
            fold(f32::max, f32::MIN, |p| p.0),
        );
        let (y0, y1) = (
            fold(f32::min, f32::MAX, |p| p.1),
            fold(f32::max, f32::MIN, |p| p.1),
        );
        // The small tolerance keeps float noise (0.3 * 100 = 30.000002) from widening the box.
        let lo = |v: f32, max: u32| ((v + 1e-3).floor().max(0.0) as u32).min(max - 1);
        let (bx, by) = (lo(x0, w), lo(y0, h));
        let hi = |v: f32, start: u32, max: u32| {
            ((v - 1e-3).ceil().max(0.0) as u32).clamp(start + 1, max)
        };
        (bx, by, hi(x1, bx, w) - bx, hi(y1, by, h) - by)
    }

    /// Adds the ROI meta with the parameter structures to `buffer`, a frame of the source
    /// size. Its `id` is the number of ROI metas already on the buffer (so that consumers
    /// that can only look ROI metas up by id, such as PyGObject on GStreamer 1.22, find it
    /// next to others); it has no parent (-1).
    ///
    /// The carrier records the source size as the frame's geometry; the producer signs it
    /// with the frame's picture ([`carrier::sign`]).
    pub fn attach(&self, buffer: &mut gst::BufferRef) {
        Self::attach_all(std::slice::from_ref(self), buffer);
    }

    /// Replaces the keypoints on `buffer`, a `w` x `h` frame, with these (see
    /// [`Self::replace_all`]).
    pub fn replace(&self, buffer: &mut gst::BufferRef, w: u32, h: u32) {
        Self::replace_all(std::slice::from_ref(self), buffer, w, h);
    }

    /// Attaches every set of keypoints of a frame of the source size (the first entry's):
    /// the whole frame's on a ROI meta of its own ([`Self::attach`]), each object's on the
    /// object's ROI meta.
    pub fn attach_all(entries: &[Self], buffer: &mut gst::BufferRef) {
        let Some(first) = entries.first() else {
            return;
        };
        let geometry = Geometry {
            width: first.source_width,
            height: first.source_height,
            signature: None,
        };
        write_entries(entries, buffer, &geometry);
    }

    /// Replaces the keypoints on `buffer`, a `w` x `h` frame, with `entries`: the first ROI
    /// meta of [`ROI_TYPE`] is rebuilt with the same id and parent, a new rectangle and our
    /// structures (attached anew when the buffer has none); each object's ROI meta (found by
    /// label and box, its id preferred) is rebuilt with its rectangle, id, parent and other
    /// parameter structures and our structures; our structures leave ROI metas that have no
    /// entry any more; every other meta is kept. The carrier records a `w` x `h` frame with
    /// the signature the buffer's carrier had (these keypoints were checked against it).
    pub fn replace_all(entries: &[Self], buffer: &mut gst::BufferRef, w: u32, h: u32) {
        let geometry = Geometry {
            width: w,
            height: h,
            signature: carrier::read(buffer).and_then(|c| c.made.signature),
        };
        write_entries(entries, buffer, &geometry);
    }

    /// Reads the keypoints on `buffer`, one of `frames` (the reader's caps; `None` when they
    /// are not raw video, and nothing can be checked), if they still fit its picture: the
    /// ROI meta's structures and the carrier's are trusted only while the carrier's record
    /// of the frame they were made for matches it ([`geometry::check`]; the signature is
    /// read from the frame only when the sizes match). `None` if there are none. Only the
    /// whole frame's keypoints: [`Self::all_for_frame`] has every object's too.
    pub fn for_frame(
        buffer: &gst::BufferRef,
        frames: Option<&Frames>,
    ) -> Option<Result<Self, ReadError>> {
        let read = Self::from_buffer(buffer)?;
        if let Err(m) = check_fit(buffer, frames) {
            return Some(Err(ReadError::Moved(m)));
        }
        Some(read.map_err(ReadError::Malformed))
    }

    /// Every set of keypoints on `buffer` that still fits its picture (as
    /// [`Self::for_frame`] checks): the whole frame's first, if any, then each object's in
    /// the order of their ROI metas. `None` if there are none.
    pub fn all_for_frame(
        buffer: &gst::BufferRef,
        frames: Option<&Frames>,
    ) -> Option<Result<Vec<Self>, ReadError>> {
        let mut read: Vec<Result<Self, MetaError>> =
            Self::from_buffer(buffer).into_iter().collect();
        read.extend(objects_from_buffer(buffer));
        if read.is_empty() {
            return None;
        }
        if let Err(m) = check_fit(buffer, frames) {
            return Some(Err(ReadError::Moved(m)));
        }
        Some(
            read.into_iter()
                .collect::<Result<_, _>>()
                .map_err(ReadError::Malformed),
        )
    }

    /// Reads the whole frame's keypoint metadata from `buffer` as it was attached, without
    /// checking that it still fits the frame (see [`Self::for_frame`]): `None` if there is
    /// none. After a scaler, whose ROI meta copy lost its parameter structures, they come
    /// from the [`carrier`]; `rect` is the (rescaled) ROI rectangle.
    pub fn from_buffer(buffer: &gst::BufferRef) -> Option<Result<Self, MetaError>> {
        let roi = buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .find(|m| m.roi_type() == ROI_TYPE);
        let on_roi = roi.as_ref().and_then(|m| {
            let k = m.param(PARAM_NAME)?.to_owned();
            Some((k, m.param(POSE_PARAM_NAME).map(|p| p.to_owned())))
        });
        let carried = || carrier::read(buffer).and_then(|c| c.frame);
        let Some((keypoints, pose)) = on_roi.or_else(carried) else {
            return roi.map(|_| Err(MetaError(format!("no `{PARAM_NAME}` parameter structure"))));
        };
        let parse = || {
            let mut f = parse_entry(&keypoints, pose.as_deref())?;
            f.rect = roi.as_ref().map_or_else(|| f.bounding_box(), |m| m.rect());
            Ok(f)
        };
        Some(parse())
    }
}

fn parse_entry(
    keypoints: &gst::StructureRef,
    pose: Option<&gst::StructureRef>,
) -> Result<FrameKeypoints, MetaError> {
    let mut f = FrameKeypoints::from_structure(keypoints)?;
    f.pose = pose.map(PoseMeta::from_structure).transpose()?;
    Ok(f)
}

/// Whether the keypoints on `buffer` were made for its picture (see
/// [`FrameKeypoints::for_frame`]).
fn check_fit(buffer: &gst::BufferRef, frames: Option<&Frames>) -> Result<(), Mismatch> {
    let Some(frames) = frames else {
        return Ok(());
    };
    let carried = carrier::read(buffer).ok_or(Mismatch::NoRecord)?;
    let signature = || frames.signature(buffer);
    geometry::check(&carried.made, carried.size, frames.size(), signature)
}

#[cfg(test)]
mod tests;
