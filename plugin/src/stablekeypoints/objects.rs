//! Top-down inference (`inference-region=roi-list`): which of a frame's region-of-interest
//! metas are inferred, the crops they become, and the objects followed across frames (their
//! ids, and the keypoints they hold between inferences).

use crate::boxes::{OBJECT_ID as TRACKER_PARAM, OBJECT_ID_FIELD as TRACKER_ID};
use crate::meta::{ObjectMeta, ROI_TYPE};
use stablekeypoints::{CropMode, Keypoint, Region};

/// Item keys (noise, warps) per frame: object j of the frame with key k is item
/// `k * KEYS_PER_FRAME + j`.
pub const KEYS_PER_FRAME: u64 = 1024;

/// What the object properties ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectSettings {
    /// Accepted `roi_type`s; empty = all.
    pub classes: Vec<String>,
    /// Share of the box's width and height added on each side before squaring.
    pub margin: f64,
    /// Boxes whose shorter side is below this many pixels are skipped.
    pub min_size: u32,
    /// Objects inferred per frame, at most (the largest first).
    pub max_objects: usize,
    /// How the detector squares a box (its crop mode).
    pub crop: CropMode,
    /// Crops per forward pass (`object-batch-size`).
    pub batch: usize,
}

/// The `object-class` property: comma-separated names, blanks ignored.
pub fn parse_classes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// One object of a frame to infer.
#[derive(Clone, Debug, PartialEq)]
pub struct Crop {
    pub roi_id: i32,
    pub label: String,
    /// The ROI's box clipped to the frame, in pixels.
    pub rect: (u32, u32, u32, u32),
    /// The upstream tracker's id, if it set one.
    pub tracker_id: Option<u64>,
    /// The box with its margin (squared by the detector's crop mode when cut).
    pub region: Region,
    /// What the detector sees of it: the region squared, normalised to the frame.
    pub view: [f32; 4],
}

impl Crop {
    /// The box normalised to a `w` x `h` frame.
    pub fn bbox(&self, w: u32, h: u32) -> [f32; 4] {
        let (x, y, bw, bh) = self.rect;
        let (w, h) = (w.max(1) as f32, h.max(1) as f32);
        [x as f32 / w, y as f32 / h, bw as f32 / w, bh as f32 / h]
    }
}

/// The objects of one frame, and what was left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    pub crops: Vec<Crop>,
    /// Below `min_size`.
    pub small: u64,
    /// Beyond `max_objects`.
    pub over_max: u64,
    /// ROI rectangles reaching past the frame, clipped to it.
    pub clipped: u64,
    /// ROI rectangles empty or wholly outside the frame, skipped (described).
    pub skipped: Vec<String>,
    /// Types of the ROI metas that `object-class` left out.
    pub other_classes: Vec<String>,
}

impl Selection {
    /// What the element warns of, once per kind: `(kind, message)`.
    pub fn warnings(&self, s: &ObjectSettings) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(first) = self.skipped.first() {
            out.push((
                "skipped",
                format!(
                    "Skipping a region of interest that is empty or outside the frame: {first}"
                ),
            ));
        }
        if self.clipped > 0 {
            out.push((
                "clipped",
                "A region of interest reaches past the frame: clipped to it".into(),
            ));
        }
        if self.crops.is_empty() && !self.other_classes.is_empty() {
            out.push((
                "classes",
                format!(
                    "No region of interest of object-class={} on a frame with some of {} (a typo?)",
                    s.classes.join(","),
                    self.other_classes.join(", ")
                ),
            ));
        }
        if self.over_max > 0 {
            out.push((
                "over-max",
                format!(
                    "A frame has more than max-objects={} objects: the largest are inferred",
                    s.max_objects
                ),
            ));
        }
        out
    }
}

/// The item key of object `j` of the frame with item key `frame_key`: each object of a
/// frame its own noise, from the frame's key and its place.
pub fn object_key(frame_key: u64, j: usize) -> u64 {
    frame_key
        .wrapping_mul(KEYS_PER_FRAME)
        .wrapping_add(j as u64)
}

/// The regions of the objects `crops` of frames with item keys `keys`, each with the frame's
/// place in the batch, and the objects' own item keys.
pub fn regions(crops: &[Vec<Crop>], keys: &[u64]) -> (Vec<(usize, Region)>, Vec<u64>) {
    let mut regions = Vec::new();
    let mut crop_keys = Vec::new();
    for (i, (c, key)) in crops.iter().zip(keys).enumerate() {
        for (j, crop) in c.iter().enumerate() {
            regions.push((i, crop.region));
            crop_keys.push(object_key(*key, j));
        }
    }
    (regions, crop_keys)
}

/// The accepted ROI metas of `buffer`, a `w` x `h` frame, as crops (ours excluded).
pub fn select(buffer: &gst::BufferRef, (w, h): (u32, u32), s: &ObjectSettings) -> Selection {
    let mut out = Selection::default();
    for m in buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
        let label = m.roi_type();
        if label == ROI_TYPE {
            continue;
        }
        if !(s.classes.is_empty() || s.classes.iter().any(|c| c == label)) {
            if !out.other_classes.iter().any(|c| c == label) {
                out.other_classes.push(label.to_string());
            }
            continue;
        }
        let (x, y, rw, rh) = m.rect();
        let (x1, y1) = (x.saturating_add(rw).min(w), y.saturating_add(rh).min(h));
        if x >= w || y >= h || rw == 0 || rh == 0 {
            out.skipped.push(format!(
                "{label} ROI {} at ({x}, {y}) size {rw}x{rh} of a {w}x{h} frame",
                m.id()
            ));
            continue;
        }
        let rect = (x, y, x1 - x, y1 - y);
        if rect != (x, y, rw, rh) {
            out.clipped += 1;
        }
        if rect.2.min(rect.3) < s.min_size {
            out.small += 1;
            continue;
        }
        let tracker_id = tracker_id(&m);
        let box_region = Region {
            x: rect.0 as f64,
            y: rect.1 as f64,
            w: rect.2 as f64,
            h: rect.3 as f64,
        };
        let region = box_region.grown(s.margin);
        let v = region.squared(s.crop);
        let (fw, fh) = (w as f64, h as f64);
        out.crops.push(Crop {
            roi_id: m.id(),
            label: label.to_string(),
            rect,
            tracker_id,
            region,
            view: [
                (v.x / fw) as f32,
                (v.y / fh) as f32,
                (v.w / fw) as f32,
                (v.h / fh) as f32,
            ],
        });
    }
    out.keep_largest(s.max_objects);
    out
}

impl Selection {
    /// Keeps the `max` largest objects, in the order of their ROI metas, counting the others.
    fn keep_largest(&mut self, max: usize) {
        if self.crops.len() <= max {
            return;
        }
        let mut by_area: Vec<usize> = (0..self.crops.len()).collect();
        by_area.sort_by_key(|&i| {
            std::cmp::Reverse(self.crops[i].rect.2 as u64 * self.crops[i].rect.3 as u64)
        });
        let keep: Vec<usize> = by_area[..max].to_vec();
        self.over_max = (self.crops.len() - max) as u64;
        self.crops = std::mem::take(&mut self.crops)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, c)| c)
            .collect();
    }
}

/// The upstream tracker's id of the ROI `m`, in whichever integer type it was set.
fn tracker_id(m: &gst_video::VideoRegionOfInterestMeta) -> Option<u64> {
    m.param(TRACKER_PARAM)
        .and_then(|p| {
            p.get::<i32>(TRACKER_ID)
                .map(|v| v as i64)
                .or_else(|_| p.get::<i64>(TRACKER_ID))
                .or_else(|_| p.get::<u64>(TRACKER_ID).map(|v| v as i64))
                .ok()
        })
        .and_then(|v| u64::try_from(v).ok())
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// An object followed across frames.
#[derive(Clone, Debug)]
struct Followed {
    id: u64,
    label: String,
    tracker_id: Option<u64>,
    bbox: [f32; 4],
    /// Its last inferred keypoints (frame-normalised), the box and the view they were
    /// inferred in.
    keypoints: Option<(Vec<Keypoint>, [f32; 4], [f32; 4])>,
    last_seen: u64,
}

/// The least box overlap with which an object of one frame is the same as one of the
/// frame before (without a tracker's id).
const MATCH_IOU: f32 = 0.3;
/// Frames an object may be absent before it is forgotten.
const FORGET_AFTER: u64 = 30;

/// The objects of a stream: ids (the tracker's when it gives them, else by box overlap with
/// the objects of the frames before) and the keypoints each holds.
#[derive(Debug, Default)]
pub struct Objects {
    followed: Vec<Followed>,
    next_id: u64,
}

/// One object of a resolved frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub object: ObjectMeta,
    /// Frame-normalised, `None` while the object has none (never inferred, or `gap-policy=none`).
    pub keypoints: Option<Vec<Keypoint>>,
}

impl Objects {
    /// Keypoints inferred for object `id` out of turn (in box `bbox`, seen as `view`): held
    /// from now on as those of an inferred frame.
    pub fn adopt(&mut self, id: u64, keypoints: &[Keypoint], bbox: [f32; 4], view: [f32; 4]) {
        if let Some(f) = self.followed.iter_mut().find(|f| f.id == id) {
            f.keypoints = Some((keypoints.to_vec(), bbox, view));
        }
    }

    /// A new stream (flush): nothing is followed any more; ids go on.
    pub fn flush(&mut self) {
        self.followed.clear();
    }

    /// The objects of frame `index` (its crops, in a `w` x `h` frame), matched to those
    /// followed: with `inferred` (their keypoints, in crop order) these become theirs;
    /// without, each holds its last keypoints moved with its box (`hold`), or none.
    pub fn resolve(
        &mut self,
        index: u64,
        crops: &[Crop],
        (w, h): (u32, u32),
        inferred: Option<Vec<Vec<Keypoint>>>,
        hold: bool,
    ) -> Vec<Resolved> {
        self.followed
            .retain(|f| index.saturating_sub(f.last_seen) <= FORGET_AFTER);
        let boxes: Vec<[f32; 4]> = crops.iter().map(|c| c.bbox(w, h)).collect();
        let matched = self.assign(index, crops, &boxes);
        let mut inferred = inferred.map(|k| k.into_iter());
        crops
            .iter()
            .zip(&boxes)
            .zip(matched)
            .map(|((c, &bbox), f)| {
                let f = &mut self.followed[f];
                f.bbox = bbox;
                f.last_seen = index;
                let (keypoints, view) = match inferred.as_mut() {
                    Some(k) => {
                        let k = k.next().unwrap_or_default();
                        f.keypoints = Some((k.clone(), bbox, c.view));
                        (Some(k), c.view)
                    }
                    None if hold => match &f.keypoints {
                        Some((k, was, view)) => {
                            (Some(moved(k, *was, bbox)), moved_box(*view, *was, bbox))
                        }
                        None => (None, c.view),
                    },
                    None => (None, c.view),
                };
                Resolved {
                    object: ObjectMeta {
                        id: f.id,
                        label: c.label.clone(),
                        bbox,
                        roi_id: c.roi_id,
                        view,
                    },
                    keypoints,
                }
            })
            .collect()
    }

    /// Indices into `followed` of each crop's object (new ones added).
    fn assign(&mut self, index: u64, crops: &[Crop], boxes: &[[f32; 4]]) -> Vec<usize> {
        let mut out: Vec<Option<usize>> = vec![None; crops.len()];
        let mut taken = vec![false; self.followed.len()];
        // A tracker's id names its object.
        for (i, c) in crops.iter().enumerate() {
            if let Some(t) = c.tracker_id {
                if let Some(j) = self
                    .followed
                    .iter()
                    .position(|f| f.tracker_id == Some(t) && f.label == c.label)
                {
                    if !taken[j] {
                        taken[j] = true;
                        out[i] = Some(j);
                    }
                }
            }
        }
        // The others by overlap, the best pairs first, only with objects of earlier frames
        // that have no tracker's id.
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, c) in crops.iter().enumerate() {
            if out[i].is_some() || c.tracker_id.is_some() {
                continue;
            }
            for (j, f) in self.followed.iter().enumerate() {
                if f.tracker_id.is_none() && f.label == c.label && f.last_seen < index {
                    let o = iou(boxes[i], f.bbox);
                    if o >= MATCH_IOU {
                        pairs.push((o, i, j));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, i, j) in pairs {
            if out[i].is_none() && !taken[j] {
                taken[j] = true;
                out[i] = Some(j);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| {
                    let c = &crops[i];
                    let id = c.tracker_id.unwrap_or_else(|| {
                        self.next_id += 1;
                        self.next_id
                    });
                    self.followed.push(Followed {
                        id,
                        label: c.label.clone(),
                        tracker_id: c.tracker_id,
                        bbox: boxes[i],
                        keypoints: None,
                        last_seen: index,
                    });
                    self.followed.len() - 1
                })
            })
            .collect()
    }
}

/// The map from box `was` to box `now` (both normalised): point -> point.
fn box_map(was: [f32; 4], now: [f32; 4]) -> impl Fn(f32, f32) -> (f32, f32) {
    let sx = if was[2] > 0.0 { now[2] / was[2] } else { 1.0 };
    let sy = if was[3] > 0.0 { now[3] / was[3] } else { 1.0 };
    move |x, y| (now[0] + (x - was[0]) * sx, now[1] + (y - was[1]) * sy)
}

/// Keypoints inferred in box `was`, moved with the object to box `now`.
fn moved(k: &[Keypoint], was: [f32; 4], now: [f32; 4]) -> Vec<Keypoint> {
    let map = box_map(was, now);
    k.iter()
        .map(|p| {
            let (x, y) = map(p.x, p.y);
            Keypoint { x, y, ..*p }
        })
        .collect()
}

/// A box (`x, y, w, h`) moved as its object moved from box `was` to box `now`.
fn moved_box(b: [f32; 4], was: [f32; 4], now: [f32; 4]) -> [f32; 4] {
    let map = box_map(was, now);
    let (x0, y0) = map(b[0], b[1]);
    let (x1, y1) = map(b[0] + b[2], b[1] + b[3]);
    [x0, y0, x1 - x0, y1 - y0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crop(label: &str, rect: (u32, u32, u32, u32), tracker: Option<u64>) -> Crop {
        Crop {
            roi_id: 0,
            label: label.into(),
            rect,
            tracker_id: tracker,
            region: Region {
                x: rect.0 as f64,
                y: rect.1 as f64,
                w: rect.2 as f64,
                h: rect.3 as f64,
            },
            view: [0.0, 0.0, 1.0, 1.0],
        }
    }

    fn kp(x: f32, y: f32) -> Vec<Keypoint> {
        vec![Keypoint {
            id: 0,
            x,
            y,
            score: 1.0,
        }]
    }

    #[test]
    fn objects_keep_their_ids_by_overlap_and_hold_keypoints_moved_with_their_box() {
        let mut o = Objects::default();
        let size = (100, 100);
        let a = crop("person", (10, 10, 20, 40), None);
        let b = crop("person", (60, 10, 20, 40), None);
        let first = o.resolve(
            0,
            &[a.clone(), b.clone()],
            size,
            Some(vec![kp(0.2, 0.3), kp(0.7, 0.3)]),
            true,
        );
        let (ia, ib) = (first[0].object.id, first[1].object.id);
        assert_ne!(ia, ib);
        // Next frame: listed the other way round, both moved 10 px right; a held.
        let a2 = crop("person", (20, 10, 20, 40), None);
        let b2 = crop("person", (70, 10, 20, 40), None);
        let held = o.resolve(1, &[b2, a2], size, None, true);
        assert_eq!((held[0].object.id, held[1].object.id), (ib, ia));
        let k = held[1].keypoints.as_ref().unwrap();
        assert!((k[0].x - 0.3).abs() < 1e-6 && (k[0].y - 0.3).abs() < 1e-6);
        // Without hold (gap-policy none), none; a far box is a new object.
        let far = crop("person", (0, 60, 20, 30), None);
        let none = o.resolve(2, &[far], size, None, false);
        assert!(none[0].keypoints.is_none());
        assert!(none[0].object.id != ia && none[0].object.id != ib);
        // Another label never matches.
        let car = crop("car", (20, 10, 20, 40), None);
        assert!(![ia, ib].contains(&o.resolve(3, &[car], size, None, true)[0].object.id));
    }

    #[test]
    fn a_trackers_id_is_the_objects_id() {
        let mut o = Objects::default();
        let size = (100, 100);
        let r = o.resolve(
            0,
            &[crop("person", (10, 10, 20, 40), Some(42))],
            size,
            Some(vec![kp(0.1, 0.1)]),
            true,
        );
        assert_eq!(r[0].object.id, 42);
        // Far away next frame, same tracker id: the same object, its keypoints held.
        let r = o.resolve(
            1,
            &[crop("person", (70, 50, 20, 40), Some(42))],
            size,
            None,
            true,
        );
        assert_eq!(r[0].object.id, 42);
        assert!(r[0].keypoints.is_some());
    }

    #[test]
    fn classes_are_comma_separated() {
        assert_eq!(parse_classes(" person, ,face"), ["person", "face"]);
        assert!(parse_classes("").is_empty());
    }
}
