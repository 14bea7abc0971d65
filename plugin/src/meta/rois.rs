//! Where each set of keypoints lives among a buffer's region-of-interest metas: reading the
//! objects' sets back (from their ROI metas, or from the carrier after a scaler) and writing
//! every set of a frame, each on its ROI meta.

use super::geometry::Geometry;
use super::{
    carrier, dlstreamer, fields, is_ours, our_param, parse_entry, FrameKeypoints, MetaError,
    ObjectMeta, PoseMeta, PARAM_NAME, POSE_PARAM_NAME, ROI_TYPE,
};

/// The objects' keypoints: from their ROI metas' structures, or after a scaler (which drops
/// them) from the carrier, with the rectangle of the ROI meta they belong to.
pub(super) fn objects_from_buffer(
    buffer: &gst::BufferRef,
) -> Vec<Result<FrameKeypoints, MetaError>> {
    let rois: Vec<_> = buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| m.roi_type() != ROI_TYPE)
        .collect();
    let on_rois: Vec<_> = rois
        .iter()
        .filter_map(|m| {
            let k = our_param(m, PARAM_NAME)?;
            let mut f = parse_entry(k, our_param(m, POSE_PARAM_NAME));
            if let Ok(f) = &mut f {
                f.rect = m.rect();
            }
            Some(f)
        })
        .collect();
    if !on_rois.is_empty() {
        return on_rois;
    }
    let Some(carried) = carrier::read(buffer) else {
        return Vec::new();
    };
    let (w, h) = carried
        .size
        .unwrap_or((carried.made.width, carried.made.height));
    let boxes: Vec<Roi> = rois.iter().map(|m| Roi::of(m)).collect();
    carried
        .objects
        .iter()
        .map(|(k, p)| {
            let mut f = parse_entry(k, p.as_deref())?;
            let Some(o) = &f.object else {
                return Err(MetaError(format!(
                    "an object entry without `{}`",
                    fields::OBJECT_ID
                )));
            };
            f.rect = match find_roi(&boxes, o, w, h, &[]) {
                Some(i) => boxes[i].rect,
                None => o.rect_in(w, h),
            };
            Ok(f)
        })
        .collect()
}

/// What a ROI meta is, to be found again or rebuilt.
#[derive(Clone, Debug)]
struct Roi {
    roi_type: String,
    rect: (u32, u32, u32, u32),
    id: i32,
    parent: i32,
    /// Parameter structures that are not ours.
    others: Vec<gst::Structure>,
    /// It carries our structures.
    ours: bool,
}

impl Roi {
    fn of(m: &gst_video::VideoRegionOfInterestMeta) -> Self {
        Self {
            roi_type: m.roi_type().to_string(),
            rect: m.rect(),
            id: m.id(),
            parent: m.parent_id(),
            others: m
                .params()
                .filter(|p| !is_ours(p))
                .map(|p| p.to_owned())
                .collect(),
            ours: m.params().any(is_ours),
        }
    }
}

fn iou(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> f32 {
    let (ax1, ay1) = (a.0 + a.2, a.1 + a.3);
    let (bx1, by1) = (b.0 + b.2, b.1 + b.3);
    let iw = ax1.min(bx1).saturating_sub(a.0.max(b.0)) as f32;
    let ih = ay1.min(by1).saturating_sub(a.1.max(b.1)) as f32;
    let inter = iw * ih;
    let union = (a.2 * a.3) as f32 + (b.2 * b.3) as f32 - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The ROI meta of `object` among `rois` (not in `taken`): its label, the box overlapping
/// the object's most (IoU >= 0.5), the same id preferred.
fn find_roi(rois: &[Roi], object: &ObjectMeta, w: u32, h: u32, taken: &[usize]) -> Option<usize> {
    let want = object.rect_in(w, h);
    rois.iter()
        .enumerate()
        .filter(|(i, r)| r.roi_type == object.label && !taken.contains(i))
        .map(|(i, r)| (i, r.id == object.roi_id, iou(r.rect, want)))
        .filter(|&(_, _, o)| o >= 0.5)
        .max_by(|a, b| {
            (a.1, a.2)
                .partial_cmp(&(b.1, b.2))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|(i, ..)| i)
}

/// Writes `entries` (the whole frame's and each object's keypoints) on `buffer`, a frame of
/// `geometry`, replacing ours (see [`FrameKeypoints::replace_all`]).
pub(super) fn write_entries(
    entries: &[FrameKeypoints],
    buffer: &mut gst::BufferRef,
    geometry: &Geometry,
) {
    let (w, h) = (geometry.width, geometry.height);
    let rois: Vec<Roi> = buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| Roi::of(&m))
        .collect();
    let (placed, taken) = place(entries, &rois, w, h);
    // Rebuilt: the ROI metas that get an entry, ours of before, and those that lose ours.
    let rebuilt: Vec<bool> = rois
        .iter()
        .enumerate()
        .map(|(i, r)| taken.contains(&i) || (r.ours && r.roi_type != ROI_TYPE))
        .collect();
    remove_rois(buffer, &rebuilt);
    let mut next_id = rois
        .iter()
        .map(|r| r.id)
        .max()
        .map_or(0, |m| m.saturating_add(1));
    let count = rois.len() as i32;
    let mut carried_frame = None;
    let mut carried_objects = Vec::new();
    for (e, at) in entries.iter().zip(&placed) {
        let ours = e.to_structure();
        let pose = e.pose.as_ref().map(PoseMeta::to_structure);
        let target = target(e, at.map(|i| &rois[i]), (w, h), count, &mut next_id);
        let mut params = vec![ours.clone()];
        params.extend(pose.clone());
        params.push(dlstreamer::keypoints_tensor(e, target.rect, w, h));
        params.extend(dlstreamer::pose_tensor(e, target.rect, w, h));
        add_roi(buffer, &target, params);
        match e.object {
            None => carried_frame = Some((ours, pose)),
            Some(_) => carried_objects.push((ours, pose)),
        }
    }
    // ROI metas that lose our structures keep the rest.
    for (i, r) in rois.iter().enumerate() {
        if rebuilt[i] && !taken.contains(&i) && r.roi_type != ROI_TYPE {
            add_roi(buffer, r, Vec::new());
        }
    }
    carrier::attach(buffer, carried_frame.as_ref(), &carried_objects, geometry);
}

/// Which of `rois` each entry goes on (`None`: a new one), and the ROI metas taken.
fn place(
    entries: &[FrameKeypoints],
    rois: &[Roi],
    w: u32,
    h: u32,
) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut taken: Vec<usize> = Vec::new();
    let mut placed: Vec<Option<usize>> = Vec::with_capacity(entries.len());
    for e in entries {
        let at = match &e.object {
            None => rois
                .iter()
                .position(|r| r.roi_type == ROI_TYPE)
                .filter(|i| !taken.contains(i)),
            Some(o) => find_roi(rois, o, w, h, &taken),
        };
        taken.extend(at);
        placed.push(at);
    }
    (placed, taken)
}

/// Removes the ROI metas of `buffer` that `rebuilt` marks, in their order.
fn remove_rois(buffer: &mut gst::BufferRef, rebuilt: &[bool]) {
    use gst::buffer::BufferMetaForeachAction as A;
    use std::ops::ControlFlow;
    let mut i = 0;
    buffer.foreach_meta_mut(|mut m| {
        if m.downcast_ref::<gst_video::VideoRegionOfInterestMeta>()
            .is_none()
        {
            return ControlFlow::Continue(A::Keep);
        }
        let remove = rebuilt.get(i).copied().unwrap_or(false);
        i += 1;
        ControlFlow::Continue(if remove { A::Remove } else { A::Keep })
    });
}

/// The ROI meta the entry `e` is written as: the one it was placed on (`at`), or a new one
/// (the frame's with id `count`, an object's with the next free id).
fn target(
    e: &FrameKeypoints,
    at: Option<&Roi>,
    (w, h): (u32, u32),
    count: i32,
    next_id: &mut i32,
) -> Roi {
    let (roi_type, rect, (id, parent), others) = match (&e.object, at) {
        (None, Some(r)) => (
            ROI_TYPE.to_string(),
            e.bounding_box_in(w, h),
            (r.id, r.parent),
            r.others.clone(),
        ),
        (None, None) => (
            ROI_TYPE.to_string(),
            e.bounding_box_in(w, h),
            (count, -1),
            Vec::new(),
        ),
        (Some(_), Some(r)) => (
            r.roi_type.clone(),
            r.rect,
            (r.id, r.parent),
            r.others.clone(),
        ),
        (Some(o), None) => {
            *next_id += 1;
            (
                o.label.clone(),
                o.rect_in(w, h),
                (*next_id - 1, -1),
                Vec::new(),
            )
        }
    };
    Roi {
        roi_type,
        rect,
        id,
        parent,
        others,
        ours: true,
    }
}

/// Adds `r` to `buffer` with `params` before its other structures.
fn add_roi(buffer: &mut gst::BufferRef, r: &Roi, params: Vec<gst::Structure>) {
    let mut meta = gst_video::VideoRegionOfInterestMeta::add(buffer, &r.roi_type, r.rect);
    meta.set_id(r.id);
    meta.set_parent_id(r.parent);
    for p in params.into_iter().chain(r.others.iter().cloned()) {
        meta.add_param(p);
    }
}
