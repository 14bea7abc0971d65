//! The parameter structures of the metadata: ours and the pose's, to and from
//! `gst::Structure` (field names in [`fields`]).

use super::{
    fields, FrameKeypoints, KeypointMeta, LandmarkMeta, MetaError, ObjectMeta, Origin, PoseMeta,
    TokenIdentity, PARAM_NAME, POSE_PARAM_NAME,
};
use gst::glib;
use gst::prelude::*;

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

/// A field of 4 floats (a box).
fn four(s: &gst::StructureRef, name: &str) -> Result<[f32; 4], MetaError> {
    floats(s, name)?
        .try_into()
        .map_err(|v: Vec<f32>| MetaError(format!("`{name}` holds {} values, not 4", v.len())))
}

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
        let mut st = gst::Structure::builder(PARAM_NAME)
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
            .build();
        if let Some(o) = self.origin {
            st.set(fields::ORIGIN, o.as_str());
        }
        if let Some(t) = self.threshold {
            st.set(fields::THRESHOLD, t);
        }
        if let Some(t) = &self.tokens {
            st.set(
                fields::TOKEN_INDICES,
                gst::Array::new(t.indices.iter().map(|&i| (i as i32).to_send_value())),
            );
            st.set(fields::TOKENS_HASH, &t.hash);
        }
        if let Some(o) = &self.object {
            st.set(fields::OBJECT_ID, o.id);
            st.set(fields::OBJECT_LABEL, &o.label);
            st.set(fields::OBJECT_BOX, float_array(o.bbox.into_iter()));
            st.set(fields::OBJECT_ROI_ID, o.roi_id);
            st.set(fields::OBJECT_VIEW, float_array(o.view.into_iter()));
        }
        st
    }

    /// Parses the keypoints parameter structure (`rect` is left at zero, `pose` at None; the
    /// optional fields may be missing).
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
        Ok(Self {
            semantic_tag: field::<String>(s, fields::SEMANTIC_TAG)?,
            model: field::<String>(s, fields::MODEL)?,
            source_width: non_negative(s, fields::SOURCE_WIDTH)?,
            source_height: non_negative(s, fields::SOURCE_HEIGHT)?,
            inferred: field::<bool>(s, fields::INFERRED)?,
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
            origin: origin(s)?,
            threshold: s
                .get_optional::<f32>(fields::THRESHOLD)
                .map_err(|e| MetaError(format!("field `{}`: {e}", fields::THRESHOLD)))?,
            tokens: tokens(s)?,
            object: object(s)?,
        })
    }
}

/// Field `name` of `s`; the error names it.
fn field<T: for<'a> glib::value::FromValue<'a> + 'static>(
    s: &gst::StructureRef,
    name: &str,
) -> Result<T, MetaError> {
    s.get::<T>(name)
        .map_err(|e| MetaError(format!("field `{name}`: {e}")))
}

/// A count or size: an `i32` field that must not be negative.
fn non_negative(s: &gst::StructureRef, name: &str) -> Result<u32, MetaError> {
    field::<i32>(s, name).and_then(|v| {
        u32::try_from(v).map_err(|_| MetaError(format!("field `{name}` is negative")))
    })
}

/// The optional `origin` field.
fn origin(s: &gst::StructureRef) -> Result<Option<Origin>, MetaError> {
    match s.get_optional::<String>(fields::ORIGIN) {
        Ok(None) => Ok(None),
        Ok(Some(o)) => Origin::parse(&o)
            .map(Some)
            .ok_or_else(|| MetaError(format!("field `{}` is {o:?}", fields::ORIGIN))),
        Err(e) => Err(MetaError(format!("field `{}`: {e}", fields::ORIGIN))),
    }
}

/// The tokens' identity, when the structure has its indices.
fn tokens(s: &gst::StructureRef) -> Result<Option<TokenIdentity>, MetaError> {
    if !s.has_field(fields::TOKEN_INDICES) {
        return Ok(None);
    }
    Ok(Some(TokenIdentity {
        indices: typed::<i32>(s, fields::TOKEN_INDICES)?
            .into_iter()
            .map(|i| {
                u32::try_from(i)
                    .map_err(|_| MetaError(format!("`{}` holds {i}", fields::TOKEN_INDICES)))
            })
            .collect::<Result<_, _>>()?,
        hash: field::<String>(s, fields::TOKENS_HASH)?,
    }))
}

/// The object an entry is of (top-down inference), when the structure has its id.
fn object(s: &gst::StructureRef) -> Result<Option<ObjectMeta>, MetaError> {
    if !s.has_field(fields::OBJECT_ID) {
        return Ok(None);
    }
    Ok(Some(ObjectMeta {
        id: field::<u64>(s, fields::OBJECT_ID)?,
        label: field::<String>(s, fields::OBJECT_LABEL)?,
        bbox: four(s, fields::OBJECT_BOX)?,
        roi_id: field::<i32>(s, fields::OBJECT_ROI_ID)?,
        view: four(s, fields::OBJECT_VIEW)?,
    }))
}
