//! The keypoint metadata the element attaches to every buffer, and a typed API to read it.
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
//! | `model` | string | the model directory |
//! | `source-width`, `source-height` | int | frame size the keypoints refer to |
//!
//! With the element's `pose` property set, a second parameter structure named
//! [`POSE_PARAM_NAME`] carries the landmarks regressed from the keypoints:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `point-names` | array of string | landmark names (the pose file's `names`) |
//! | `point-connections` | array of int | skeleton: pairs of indices into `point-names`, flattened `a0, b0, a1, b1, ...` |
//! | `x`, `y` | array of float | landmark positions normalised to the frame (may leave [0, 1]) |
//!
//! Positions are normalised because converters rescale ROI rectangles but not parameters.

use gst::prelude::*;
use std::fmt;

/// `roi_type` of the element's region-of-interest meta.
pub const ROI_TYPE: &str = "stablekeypoints";
/// Name of the parameter structure.
pub const PARAM_NAME: &str = "keypoints";
/// Name of the pose parameter structure.
pub const POSE_PARAM_NAME: &str = "pose";

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

/// The keypoints of one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameKeypoints {
    pub semantic_tag: String,
    pub model: String,
    pub source_width: u32,
    pub source_height: u32,
    pub inferred: bool,
    pub keypoints: Vec<KeypointMeta>,
    /// Landmarks of the element's `pose` file, if one is set.
    pub pose: Option<PoseMeta>,
    /// The ROI rectangle (x, y, w, h) in pixels of the buffer it was read from; on a buffer
    /// that was rescaled after the element this is the rescaled box.
    pub rect: (u32, u32, u32, u32),
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

impl KeypointMeta {
    /// Position in pixels of a `width` x `height` frame.
    pub fn pixel(&self, width: u32, height: u32) -> (f32, f32) {
        (self.x * width as f32, self.y * height as f32)
    }
}

fn float_array(v: impl Iterator<Item = f32>) -> gst::Array {
    gst::Array::new(v.map(|x| x.to_send_value()))
}

fn floats(s: &gst::StructureRef, name: &str) -> Result<Vec<f32>, MetaError> {
    let a = s
        .get::<gst::ArrayRef>(name)
        .map_err(|e| MetaError(format!("field `{name}`: {e}")))?;
    a.iter()
        .map(|v| {
            v.get::<f32>()
                .or_else(|_| v.get::<f64>().map(|d| d as f32))
                .map_err(|_| {
                    MetaError(format!(
                        "field `{name}` holds a {} instead of a float",
                        v.type_()
                    ))
                })
        })
        .collect()
}

fn typed<T: for<'a> glib::value::FromValue<'a> + 'static>(
    s: &gst::StructureRef,
    name: &str,
) -> Result<Vec<T>, MetaError> {
    let a = s
        .get::<gst::ArrayRef>(name)
        .map_err(|e| MetaError(format!("field `{name}`: {e}")))?;
    a.iter()
        .map(|v| {
            v.get::<T>()
                .map_err(|_| MetaError(format!("field `{name}` holds a {} value", v.type_())))
        })
        .collect()
}

use gst::glib;

impl PoseMeta {
    /// The pose parameter structure.
    pub fn to_structure(&self) -> gst::Structure {
        let l = &self.landmarks;
        gst::Structure::builder(POSE_PARAM_NAME)
            .field(
                fields::POINT_NAMES,
                gst::Array::new(l.iter().map(|p| p.name.to_send_value())),
            )
            .field(
                fields::POINT_CONNECTIONS,
                gst::Array::new(
                    self.connections
                        .iter()
                        .flatten()
                        .map(|&i| (i as i32).to_send_value()),
                ),
            )
            .field(fields::X, float_array(l.iter().map(|p| p.x)))
            .field(fields::Y, float_array(l.iter().map(|p| p.y)))
            .build()
    }

    /// Parses the pose parameter structure.
    pub fn from_structure(s: &gst::StructureRef) -> Result<Self, MetaError> {
        if s.name() != POSE_PARAM_NAME {
            return Err(MetaError(format!("structure is named {}", s.name())));
        }
        let names = typed::<String>(s, fields::POINT_NAMES)?;
        let x = floats(s, fields::X)?;
        let y = floats(s, fields::Y)?;
        if x.len() != names.len() || y.len() != names.len() {
            return Err(MetaError("pose arrays have different lengths".into()));
        }
        let flat = typed::<i32>(s, fields::POINT_CONNECTIONS)?;
        if flat.len() % 2 != 0 {
            return Err(MetaError(format!(
                "`{}` has an odd number of indices",
                fields::POINT_CONNECTIONS
            )));
        }
        let index = |i: i32| {
            u32::try_from(i)
                .ok()
                .filter(|&i| (i as usize) < names.len())
                .ok_or_else(|| {
                    MetaError(format!(
                        "`{}` holds {i}, not a landmark index",
                        fields::POINT_CONNECTIONS
                    ))
                })
        };
        let connections = flat
            .chunks_exact(2)
            .map(|p| Ok([index(p[0])?, index(p[1])?]))
            .collect::<Result<_, MetaError>>()?;
        Ok(Self {
            landmarks: names
                .into_iter()
                .zip(x.into_iter().zip(y))
                .map(|(name, (x, y))| LandmarkMeta { name, x, y })
                .collect(),
            connections,
        })
    }
}

impl FrameKeypoints {
    /// The parameter structure.
    pub fn to_structure(&self) -> gst::Structure {
        let k = &self.keypoints;
        gst::Structure::builder(PARAM_NAME)
            .field(fields::SEMANTIC_TAG, &self.semantic_tag)
            .field(
                fields::IDS,
                gst::Array::new(k.iter().map(|p| (p.id as i32).to_send_value())),
            )
            .field(fields::X, float_array(k.iter().map(|p| p.x)))
            .field(fields::Y, float_array(k.iter().map(|p| p.y)))
            .field(
                fields::CONFIDENCE,
                float_array(k.iter().map(|p| p.confidence)),
            )
            .field(
                fields::VISIBLE,
                gst::Array::new(k.iter().map(|p| p.visible.to_send_value())),
            )
            .field(fields::INFERRED, self.inferred)
            .field(fields::MODEL, &self.model)
            .field(fields::SOURCE_WIDTH, self.source_width as i32)
            .field(fields::SOURCE_HEIGHT, self.source_height as i32)
            .build()
    }

    /// Parses the keypoints parameter structure (`rect` is left at zero, `pose` at None).
    pub fn from_structure(s: &gst::StructureRef) -> Result<Self, MetaError> {
        if s.name() != PARAM_NAME {
            return Err(MetaError(format!("structure is named {}", s.name())));
        }
        let x = floats(s, fields::X)?;
        let y = floats(s, fields::Y)?;
        let conf = floats(s, fields::CONFIDENCE)?;
        let vis = typed::<bool>(s, fields::VISIBLE)?;
        let ids = typed::<i32>(s, fields::IDS)?;
        let n = x.len();
        if [y.len(), conf.len(), vis.len(), ids.len()]
            .iter()
            .any(|&l| l != n)
        {
            return Err(MetaError("arrays have different lengths".into()));
        }
        let get_str = |name: &str| {
            s.get::<String>(name)
                .map_err(|e| MetaError(format!("field `{name}`: {e}")))
        };
        let get_int = |name: &str| {
            s.get::<i32>(name)
                .map_err(|e| MetaError(format!("field `{name}`: {e}")))
                .and_then(|v| {
                    u32::try_from(v).map_err(|_| MetaError(format!("field `{name}` is negative")))
                })
        };
        Ok(Self {
            semantic_tag: get_str(fields::SEMANTIC_TAG)?,
            model: get_str(fields::MODEL)?,
            source_width: get_int(fields::SOURCE_WIDTH)?,
            source_height: get_int(fields::SOURCE_HEIGHT)?,
            inferred: s
                .get::<bool>(fields::INFERRED)
                .map_err(|e| MetaError(format!("field `{}`: {e}", fields::INFERRED)))?,
            keypoints: (0..n)
                .map(|i| KeypointMeta {
                    id: ids[i].max(0) as u32,
                    x: x[i],
                    y: y[i],
                    confidence: conf[i],
                    visible: vis[i],
                })
                .collect(),
            pose: None,
            rect: (0, 0, 0, 0),
        })
    }

    /// Bounding box (x, y, w, h) in source pixels of the visible keypoints; the whole frame
    /// when none is visible. Never empty for a non-empty frame.
    pub fn bounding_box(&self) -> (u32, u32, u32, u32) {
        let (w, h) = (self.source_width, self.source_height);
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

    /// Adds the ROI meta with the parameter structure(s) to `buffer`.
    pub fn attach(&self, buffer: &mut gst::BufferRef) {
        let mut meta =
            gst_video::VideoRegionOfInterestMeta::add(buffer, ROI_TYPE, self.bounding_box());
        meta.add_param(self.to_structure());
        if let Some(pose) = &self.pose {
            meta.add_param(pose.to_structure());
        }
    }

    /// Reads the element's metadata from `buffer`: `None` if there is none.
    pub fn from_buffer(buffer: &gst::BufferRef) -> Option<Result<Self, MetaError>> {
        buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .find(|m| m.roi_type() == ROI_TYPE)
            .map(|m| {
                let s = m
                    .param(PARAM_NAME)
                    .ok_or_else(|| MetaError(format!("no `{PARAM_NAME}` parameter structure")))?;
                let mut f = Self::from_structure(s)?;
                f.pose = m
                    .param(POSE_PARAM_NAME)
                    .map(PoseMeta::from_structure)
                    .transpose()?;
                f.rect = m.rect();
                Ok(f)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FrameKeypoints {
        FrameKeypoints {
            semantic_tag: semantic_tag(3),
            model: "m".into(),
            source_width: 100,
            source_height: 50,
            inferred: true,
            keypoints: vec![
                KeypointMeta {
                    id: 0,
                    x: 0.105,
                    y: 0.2,
                    confidence: 0.5,
                    visible: true,
                },
                KeypointMeta {
                    id: 1,
                    x: 0.5,
                    y: 0.9,
                    confidence: 0.01,
                    visible: false,
                },
                KeypointMeta {
                    id: 2,
                    x: 0.3,
                    y: 0.6,
                    confidence: 0.4,
                    visible: true,
                },
            ],
            pose: None,
            rect: (0, 0, 0, 0),
        }
    }

    fn sample_pose() -> PoseMeta {
        let lm = |name: &str, x, y| LandmarkMeta {
            name: name.into(),
            x,
            y,
        };
        PoseMeta {
            landmarks: vec![
                lm("head", 0.5, 0.1),
                lm("hip", 0.45, 0.6),
                lm("foot", 1.2, -0.1),
            ],
            connections: vec![[0, 1], [1, 2]],
        }
    }

    #[test]
    fn structure_round_trips_and_has_the_documented_types() {
        gst::init().unwrap();
        let f = sample();
        let s = f.to_structure();
        assert_eq!(s.name(), "keypoints");
        assert_eq!(
            s.get::<&str>("semantic-tag").unwrap(),
            "stablekeypoints-3-kp"
        );
        let x = s.get::<gst::Array>("x").unwrap();
        assert_eq!(x.as_slice()[0].type_(), glib::Type::F32);
        let vis = s.get::<gst::Array>("visible").unwrap();
        assert_eq!(vis.as_slice()[1].type_(), glib::Type::BOOL);
        assert_eq!(s.get::<i32>("source-width").unwrap(), 100);
        assert_eq!(FrameKeypoints::from_structure(&s).unwrap(), f);
        // Survives serialisation to text and back (what C and Python consumers see).
        let text = s.to_string();
        let parsed: gst::Structure = text.parse().unwrap();
        assert_eq!(FrameKeypoints::from_structure(&parsed).unwrap(), f);
    }

    #[test]
    fn bounding_box_covers_visible_points() {
        let f = sample();
        // x 10.5 .. 30, y 10 .. 30 in a 100x50 frame.
        assert_eq!(f.bounding_box(), (10, 10, 20, 20));
        let mut none = f.clone();
        none.keypoints.iter_mut().for_each(|k| k.visible = false);
        assert_eq!(none.bounding_box(), (0, 0, 100, 50));
        let mut edge = f.clone();
        edge.keypoints = vec![KeypointMeta {
            id: 0,
            x: 1.0,
            y: 1.0,
            confidence: 1.0,
            visible: true,
        }];
        assert_eq!(edge.bounding_box(), (99, 49, 1, 1));
    }

    #[test]
    fn attach_and_read_back() {
        gst::init().unwrap();
        let mut buf = gst::Buffer::with_size(4).unwrap();
        let f = sample();
        f.attach(buf.get_mut().unwrap());
        let back = FrameKeypoints::from_buffer(&buf).unwrap().unwrap();
        assert_eq!(back.rect, (10, 10, 20, 20));
        assert_eq!(back.keypoints, f.keypoints);
        assert!(FrameKeypoints::from_buffer(&gst::Buffer::new()).is_none());
    }

    #[test]
    fn pose_structure_round_trips_through_text_and_the_buffer() {
        gst::init().unwrap();
        let pose = sample_pose();
        let s = pose.to_structure();
        assert_eq!(s.name(), "pose");
        let names = s.get::<gst::Array>("point-names").unwrap();
        assert_eq!(names.as_slice()[2].get::<&str>().unwrap(), "foot");
        let conn = s.get::<gst::Array>("point-connections").unwrap();
        let flat: Vec<i32> = conn.iter().map(|v| v.get::<i32>().unwrap()).collect();
        assert_eq!(flat, [0, 1, 1, 2]);
        let parsed: gst::Structure = s.to_string().parse().unwrap();
        assert_eq!(PoseMeta::from_structure(&parsed).unwrap(), pose);

        let mut f = sample();
        f.pose = Some(pose);
        let mut buf = gst::Buffer::with_size(4).unwrap();
        f.attach(buf.get_mut().unwrap());
        let back = FrameKeypoints::from_buffer(&buf).unwrap().unwrap();
        assert_eq!(back.pose, f.pose);
        // The pose does not move the keypoints' box (the foot lies outside the frame).
        assert_eq!(back.rect, (10, 10, 20, 20));
    }

    #[test]
    fn malformed_pose_structures_are_errors() {
        gst::init().unwrap();
        let good = sample_pose().to_structure();
        let mut s = good.clone();
        s.set("point-connections", gst::Array::new([0i32.to_send_value()]));
        assert!(PoseMeta::from_structure(&s).unwrap_err().0.contains("odd"));
        let mut s = good.clone();
        s.set(
            "point-connections",
            gst::Array::new([0i32.to_send_value(), 3i32.to_send_value()]),
        );
        assert!(PoseMeta::from_structure(&s).unwrap_err().0.contains("3"));
        let mut s = good.clone();
        s.set("x", gst::Array::new([1.0f32.to_send_value()]));
        assert!(PoseMeta::from_structure(&s)
            .unwrap_err()
            .0
            .contains("lengths"));
        let mut s = good;
        s.remove_field("point-names");
        assert!(PoseMeta::from_structure(&s).is_err());
    }

    #[test]
    fn malformed_structures_are_errors() {
        gst::init().unwrap();
        let mut s = sample().to_structure();
        s.set("y", gst::Array::new([1.0f32.to_send_value()]));
        assert!(FrameKeypoints::from_structure(&s)
            .unwrap_err()
            .0
            .contains("lengths"));
        s.remove_field("x");
        assert!(FrameKeypoints::from_structure(&s).is_err());
    }
}
