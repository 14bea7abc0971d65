//! The keypoints in Intel DL Streamer's layout, next to ours on the same ROI meta, so that
//! its `gvawatermark` draws them and `gvametaconvert` exports them; and a reader of that
//! layout for keypoints other elements attached (the overlay draws those too).
//!
//! The layout, as DL Streamer's public sources read and write it (read, not copied:
//! `include/dlstreamer/gst/videoanalytics/tensor.h` for `Tensor::data`, `dims`, `precision`
//! and `get_vector`; `include/dlstreamer/gst/metadata/gva_tensor_meta.h` for
//! `gva_get_tensor_data`; `src/monolithic/gst/elements/gvawatermark/gstgvawatermarkimpl.cpp`
//! for `preparePrimsForKeypoints` and `preparePrimsForKeypointConnections`;
//! `src/monolithic/gst/elements/gvametaconvert/convert_tensor.cpp`; and the YOLOv8-pose
//! converter `src/monolithic/gst/inference_elements/common/post_processor/converters/to_roi/yolo_v8.cpp`,
//! which writes one), is a parameter structure of the ROI meta with
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `format` | string | `keypoints` (what readers look for; the structure's name is free) |
//! | `data_buffer` | `GVariant` of type `ay` | N x D native-endian f32, point i at `x = rect.x + rect.w * data[D i]`, `y = rect.y + rect.h * data[D i + 1]` |
//! | `dims` | array of uint | `[N, D]`, D = 2 (3 with a depth) |
//! | `precision` | int | 10 (`GVA_PRECISION_FP32`) |
//! | `layout` | int | 0 (`GVA_LAYOUT_ANY`) |
//! | `confidence` | array of float | one per point; `gvawatermark` skips points below 0.5 and points at (-1, -1) |
//! | `point_names` | array of string | N names |
//! | `point_connections` | array of string | the skeleton as name pairs, flattened |
//!
//! DL Streamer's writers also set `data`, a raw pointer into `data_buffer`; its readers use
//! `data_buffer`, and a pointer cannot be meaningfully stored from here, so it is left out.

use super::{FrameKeypoints, MetaError};
use gst::glib;
use gst::prelude::*;

/// Name of the structure with the keypoints (ids as `point_names`, no skeleton).
pub const KEYPOINTS_TENSOR: &str = "dlstreamer-keypoints";
/// Name of the structure with the pose landmarks and their skeleton.
pub const POSE_TENSOR: &str = "dlstreamer-pose";
/// `GVA_PRECISION_FP32`.
pub const PRECISION_FP32: i32 = 10;
/// `GVA_LAYOUT_ANY`.
pub const LAYOUT_ANY: i32 = 0;

/// Points in frame pixels -> the tensor structure named `name`, normalised to `rect`.
fn tensor(
    name: &str,
    points: &[(f32, f32)],
    confidence: &[f32],
    names: &[String],
    connections: &[[u32; 2]],
    rect: (u32, u32, u32, u32),
) -> gst::Structure {
    let (rx, ry, rw, rh) = (
        rect.0 as f32,
        rect.1 as f32,
        rect.2.max(1) as f32,
        rect.3.max(1) as f32,
    );
    let mut data = Vec::with_capacity(8 * points.len());
    for &(x, y) in points {
        data.extend_from_slice(&((x - rx) / rw).to_ne_bytes());
        data.extend_from_slice(&((y - ry) / rh).to_ne_bytes());
    }
    let strings = |v: &mut dyn Iterator<Item = &str>| gst::Array::new(v.map(|s| s.to_send_value()));
    let mut s = gst::Structure::builder(name)
        .field("format", "keypoints")
        .field(
            "data_buffer",
            glib::Variant::array_from_fixed_array(&data[..]),
        )
        .field(
            "dims",
            gst::Array::new([(points.len() as u32).to_send_value(), 2u32.to_send_value()]),
        )
        .field("precision", PRECISION_FP32)
        .field("layout", LAYOUT_ANY)
        .field(
            "confidence",
            gst::Array::new(confidence.iter().map(|c| c.to_send_value())),
        )
        .field(
            "point_names",
            strings(&mut names.iter().map(String::as_str)),
        )
        .build();
    // gvawatermark refuses an empty connection list: no field without a skeleton.
    if !connections.is_empty() {
        let pairs = connections
            .iter()
            .flatten()
            .map(|&i| names[i as usize].as_str());
        s.set("point_connections", strings(&mut pairs.into_iter()));
    }
    s
}

/// The keypoints as a DL Streamer tensor for a `w` x `h` frame whose ROI is `rect`: named by
/// their ids, confidence 1 for visible keypoints and 0 for the others (DL Streamer draws
/// points from 0.5 up; our scores are on another scale and stay in `keypoints`).
pub fn keypoints_tensor(
    frame: &FrameKeypoints,
    rect: (u32, u32, u32, u32),
    w: u32,
    h: u32,
) -> gst::Structure {
    let k = &frame.keypoints;
    let points: Vec<(f32, f32)> = k.iter().map(|p| p.pixel(w, h)).collect();
    let confidence: Vec<f32> = k
        .iter()
        .map(|p| if p.visible { 1.0 } else { 0.0 })
        .collect();
    let names: Vec<String> = k.iter().map(|p| p.id.to_string()).collect();
    tensor(KEYPOINTS_TENSOR, &points, &confidence, &names, &[], rect)
}

/// The pose landmarks with their skeleton as a DL Streamer tensor (confidence 1 each), if
/// the frame has a pose.
pub fn pose_tensor(
    frame: &FrameKeypoints,
    rect: (u32, u32, u32, u32),
    w: u32,
    h: u32,
) -> Option<gst::Structure> {
    let pose = frame.pose.as_ref()?;
    let points: Vec<(f32, f32)> = pose.landmarks.iter().map(|l| l.pixel(w, h)).collect();
    let names: Vec<String> = pose.landmarks.iter().map(|l| l.name.clone()).collect();
    let confidence = vec![1.0; points.len()];
    Some(tensor(
        POSE_TENSOR,
        &points,
        &confidence,
        &names,
        &pose.connections,
        rect,
    ))
}

/// A `format=keypoints` tensor as DL Streamer's readers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorKeypoints {
    /// Positions normalised to the ROI rectangle.
    pub points: Vec<(f32, f32)>,
    /// One per point, or empty when the tensor has none.
    pub confidence: Vec<f32>,
    /// Point names (empty when the tensor has none).
    pub names: Vec<String>,
    /// The skeleton as index pairs (resolved from the names, first match as DL Streamer).
    pub connections: Vec<[usize; 2]>,
}

impl TensorKeypoints {
    /// Reads a parameter structure: `Ok(None)` if it is not a keypoints tensor, an error
    /// naming the field if it is one that DL Streamer could not read either.
    pub fn from_structure(s: &gst::StructureRef) -> Result<Option<Self>, MetaError> {
        if s.get::<&str>("format").ok() != Some("keypoints") {
            return Ok(None);
        }
        let fields = TensorFields(s);
        let points = fields.points()?;
        let n = points.len();
        let confidence = fields.floats("confidence")?;
        if !confidence.is_empty() && confidence.len() != n {
            return Err(fields.bad(format!("{} confidences for {n} points", confidence.len())));
        }
        let names = fields.strings("point_names")?;
        let connections = fields.connections(&names, n)?;
        Ok(Some(Self {
            points,
            confidence,
            names,
            connections,
        }))
    }

    /// Whether point `i` is drawn at `min_confidence` (DL Streamer skips (-1, -1) points).
    pub fn shown(&self, i: usize, min_confidence: f32) -> bool {
        let (x, y) = self.points[i];
        let confident = self.confidence.get(i).is_none_or(|&c| c >= min_confidence);
        confident && !(x == -1.0 && y == -1.0)
    }

    /// Positions in pixels of a frame in which the ROI rectangle is `rect`.
    pub fn pixels(&self, rect: (u32, u32, u32, u32)) -> Vec<(f32, f32)> {
        let (rx, ry, rw, rh) = (rect.0 as f32, rect.1 as f32, rect.2 as f32, rect.3 as f32);
        self.points
            .iter()
            .map(|&(x, y)| (rx + rw * x, ry + rh * y))
            .collect()
    }
}

/// The fields of a keypoints tensor structure, read as DL Streamer reads them; errors name
/// the structure and the field.
struct TensorFields<'a>(&'a gst::StructureRef);

impl TensorFields<'_> {
    fn bad(&self, what: String) -> MetaError {
        MetaError(format!("keypoints tensor `{}`: {what}", self.0.name()))
    }

    /// `data_buffer`: FP32 points, `dims` [N, 2] or [N, 3] (x, y first).
    fn points(&self) -> Result<Vec<(f32, f32)>, MetaError> {
        let s = self.0;
        let variant = s
            .get::<glib::Variant>("data_buffer")
            .map_err(|e| self.bad(format!("field `data_buffer`: {e}")))?;
        let bytes = variant.fixed_array::<u8>().map_err(|_| {
            self.bad(format!(
                "`data_buffer` is a {} variant, not ay",
                variant.type_()
            ))
        })?;
        if let Ok(p) = s.get::<i32>("precision") {
            if p != PRECISION_FP32 {
                return Err(self.bad(format!("precision {p} is not FP32 ({PRECISION_FP32})")));
            }
        }
        let dims = self.uints("dims")?;
        let (n, d) = match dims[..] {
            [n, d, ..] if d >= 2 => (n as usize, d as usize),
            _ => return Err(self.bad(format!("dims {dims:?} are not [N, 2] or [N, 3]"))),
        };
        if bytes.len() % 4 != 0 || bytes.len() / 4 != n * d || n == 0 {
            return Err(self.bad(format!("{} bytes of data for dims {dims:?}", bytes.len())));
        }
        let f: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(f.chunks_exact(d).map(|p| (p[0], p[1])).collect())
    }

    fn uints(&self, name: &str) -> Result<Vec<u32>, MetaError> {
        let a = self
            .0
            .get::<gst::ArrayRef>(name)
            .map_err(|e| self.bad(format!("field `{name}`: {e}")))?;
        a.iter()
            .map(|v| {
                v.get::<u32>()
                    .map_err(|_| self.bad(format!("`{name}` holds a {}", v.type_())))
            })
            .collect()
    }

    /// An optional array of numbers (empty when absent).
    fn floats(&self, name: &str) -> Result<Vec<f32>, MetaError> {
        match self.0.get::<gst::ArrayRef>(name) {
            Err(_) if !self.0.has_field(name) => Ok(Vec::new()),
            Err(e) => Err(self.bad(format!("field `{name}`: {e}"))),
            Ok(a) => a
                .iter()
                .map(|v| {
                    v.get::<f32>()
                        .or_else(|_| v.get::<f64>().map(|x| x as f32))
                        .map_err(|_| self.bad(format!("`{name}` holds a {}", v.type_())))
                })
                .collect(),
        }
    }

    /// An optional array of strings (empty when absent).
    fn strings(&self, name: &str) -> Result<Vec<String>, MetaError> {
        match self.0.get::<gst::ArrayRef>(name) {
            Err(_) if !self.0.has_field(name) => Ok(Vec::new()),
            Err(e) => Err(self.bad(format!("field `{name}`: {e}"))),
            Ok(a) => a
                .iter()
                .map(|v| {
                    v.get::<String>()
                        .map_err(|_| self.bad(format!("`{name}` holds a {}", v.type_())))
                })
                .collect(),
        }
    }

    /// `point_connections`: pairs of the points `names` (none without names).
    fn connections(&self, names: &[String], n: usize) -> Result<Vec<[usize; 2]>, MetaError> {
        let pairs = self.strings("point_connections")?;
        let mut connections = Vec::new();
        if names.is_empty() || pairs.is_empty() {
            return Ok(connections);
        }
        if names.len() != n {
            return Err(self.bad(format!("{} point names for {n} points", names.len())));
        }
        if pairs.len() % 2 != 0 {
            return Err(self.bad("an odd number of point connections".into()));
        }
        let index = |name: &str| {
            names
                .iter()
                .position(|m| m == name)
                .ok_or_else(|| self.bad(format!("connection to unknown point {name:?}")))
        };
        for p in pairs.chunks_exact(2) {
            let (a, b) = (index(&p[0])?, index(&p[1])?);
            if a == b {
                return Err(self.bad(format!("point {:?} connected to itself", p[0])));
            }
            connections.push([a, b]);
        }
        Ok(connections)
    }
}

/// A ROI rectangle (x, y, w, h) in pixels.
pub type Rect = (u32, u32, u32, u32);

/// Keypoints of another producer with the rectangle of their ROI meta.
pub type Foreign = (TensorKeypoints, Rect);

/// Every keypoints tensor on the buffer's ROI metas other than ours (whose keypoints are in
/// `keypoints`, on our ROI meta or on an object's), with its ROI rectangle; malformed ones
/// as errors.
pub fn foreign_tensors(buffer: &gst::BufferRef) -> Vec<Result<Foreign, MetaError>> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| m.roi_type() != super::ROI_TYPE)
        .flat_map(|m| {
            let rect = m.rect();
            // On an object's ROI meta with our keypoints, our tensors are those keypoints.
            let has_ours = m
                .params()
                .any(|p| p.name() == super::PARAM_NAME && super::is_ours(p));
            m.params()
                .filter(move |p| !(has_ours && super::is_ours(p)))
                .filter_map(|p| TensorKeypoints::from_structure(p).transpose())
                .map(move |r| r.map(|t| (t, rect)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{KeypointMeta, LandmarkMeta, PoseMeta};

    fn frame() -> FrameKeypoints {
        let kp = |id, x, y, visible| KeypointMeta {
            id,
            x,
            y,
            confidence: 0.02,
            visible,
        };
        FrameKeypoints {
            source_width: 200,
            source_height: 100,
            keypoints: vec![
                kp(3, 0.25, 0.5, true),
                kp(7, 0.75, 0.2, true),
                kp(9, 0.1, 0.9, false),
            ],
            pose: Some(PoseMeta {
                landmarks: vec![
                    LandmarkMeta {
                        name: "head".into(),
                        x: 0.5,
                        y: 0.1,
                    },
                    LandmarkMeta {
                        name: "foot".into(),
                        x: 0.5,
                        y: 1.2,
                    },
                ],
                connections: vec![[1, 0]],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tensors_hold_the_points_normalised_to_the_roi() {
        gst::init().unwrap();
        let f = frame();
        let rect = f.bounding_box();
        // Visible points (50, 50) and (150, 20): the box spans x 50..150, y 20..50.
        assert_eq!(rect, (50, 20, 100, 30));
        let s = keypoints_tensor(&f, rect, 200, 100);
        assert_eq!(s.get::<&str>("format").unwrap(), "keypoints");
        assert_eq!(s.get::<i32>("precision").unwrap(), 10);
        let t = TensorKeypoints::from_structure(&s).unwrap().unwrap();
        assert_eq!(t.points[0], (0.0, 1.0));
        assert_eq!(t.points[1], (1.0, 0.0));
        assert_eq!(t.points[2], ((20.0 - 50.0) / 100.0, (90.0 - 20.0) / 30.0));
        assert_eq!(t.confidence, [1.0, 1.0, 0.0]);
        assert_eq!(t.names, ["3", "7", "9"]);
        assert!(t.connections.is_empty() && !s.has_field("point_connections"));
        assert_eq!(t.pixels(rect)[1], (150.0, 20.0));
        assert!(t.shown(1, 0.5) && !t.shown(2, 0.5));
        let p = pose_tensor(&f, rect, 200, 100).unwrap();
        let t = TensorKeypoints::from_structure(&p).unwrap().unwrap();
        assert_eq!(t.names, ["head", "foot"]);
        assert_eq!(t.connections, [[1, 0]]);
        let conn = p.get::<gst::Array>("point_connections").unwrap();
        let conn: Vec<&str> = conn.iter().map(|v| v.get::<&str>().unwrap()).collect();
        assert_eq!(conn, ["foot", "head"]);
        let (x, y) = t.pixels(rect)[1];
        assert!(
            (x - 100.0).abs() < 1e-4 && (y - 120.0).abs() < 1e-4,
            "{x} {y}"
        );
    }

    #[test]
    fn malformed_tensors_are_errors_and_other_formats_are_ignored() {
        gst::init().unwrap();
        let good = keypoints_tensor(&frame(), (0, 0, 200, 100), 200, 100);
        let other = gst::Structure::builder("detection")
            .field("format", "boxes")
            .build();
        assert_eq!(TensorKeypoints::from_structure(&other).unwrap(), None);
        type Edit = Box<dyn Fn(&mut gst::Structure)>;
        let cases: [(&str, Edit); 5] = [
            (
                "dims",
                Box::new(|s| {
                    s.set(
                        "dims",
                        gst::Array::new([4u32.to_send_value(), 2u32.to_send_value()]),
                    )
                }),
            ),
            (
                "data_buffer",
                Box::new(|s| s.set("data_buffer", glib::Variant::from(3i32))),
            ),
            ("precision", Box::new(|s| s.set("precision", 11i32))),
            (
                "confidences",
                Box::new(|s| s.set("confidence", gst::Array::new([1f32.to_send_value()]))),
            ),
            (
                "unknown point",
                Box::new(|s| {
                    s.set(
                        "point_connections",
                        gst::Array::new(["3".to_send_value(), "42".to_send_value()]),
                    )
                }),
            ),
        ];
        for (what, edit) in cases {
            let mut s = good.clone();
            edit(&mut s);
            let e = TensorKeypoints::from_structure(&s).unwrap_err();
            assert!(e.0.contains(what), "{what}: {e}");
        }
    }
}
