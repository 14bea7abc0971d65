//! COCO keypoint results from [`Record`]s.
//!
//! Without a pose the output is what COCO evaluation tools read as results
//! (pycocotools' `loadRes`): a JSON array of
//! `{"image_id", "category_id": 1, "keypoints": [x1, y1, v1, ...], "score"}`, the K
//! keypoints in token order. With a pose (records that carry `pose`), the keypoints are the
//! named landmarks and the output is a COCO keypoint dataset, as annotation tools import it:
//! `{"images": [{"id", "width", "height"}], "categories": [{"id": 1, "name", "supercategory",
//! "keypoints": [names], "skeleton": [[a, b], ...]}], "annotations": [the same results plus
//! "id", "num_keypoints", "bbox", "area", "iscrowd": 0]}`, whose `annotations` array is again
//! a results list.
//!
//! Coordinates are COCO's 0-indexed pixel coordinates: the centre of the top-left pixel is
//! (0, 0), so `x_coco = x - 0.5` for a record's `x`, within `[0, width - 1]`. Visibility `v`:
//! 2 for a visible keypoint, 1 for one below the element's threshold (located, not visible);
//! a landmark inside the frame is 2, one the regressor puts outside it is 0 with x = y = 0
//! (COCO's "not labelled"). `score` is the mean confidence of the frame's keypoints. The
//! skeleton is 1-based, as COCO's.
//!
//! Records of objects (schema `/2`, one per object of a frame) give one result each, all
//! with their frame's `image_id` (one image per frame), with the object's box in pixels as
//! the result's `bbox` (`[x, y, w, h]`, its edges: a box over the whole frame is
//! `[0, 0, width, height]`), as COCO's detection results have it; in a dataset it is the
//! annotation's `bbox`.

use super::Record;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `category_id` of every result.
pub const CATEGORY_ID: u32 = 1;
/// Name and supercategory of the pose category.
pub const CATEGORY_NAME: &str = "pose";
pub const SUPERCATEGORY: &str = "stablekeypoints";

/// Flattened `[x1, y1, v1, x2, ...]`, written with integer visibilities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Keypoints(pub Vec<(f32, f32, u8)>);

impl Serialize for Keypoints {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len() * 3))?;
        for &(x, y, v) in &self.0 {
            seq.serialize_element(&x)?;
            seq.serialize_element(&y)?;
            seq.serialize_element(&v)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Keypoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let flat = Vec::<f64>::deserialize(d)?;
        if flat.len() % 3 != 0 {
            return Err(serde::de::Error::custom(format!(
                "{} keypoint values, not a multiple of 3",
                flat.len()
            )));
        }
        Ok(Self(
            flat.chunks_exact(3)
                .map(|c| (c[0] as f32, c[1] as f32, c[2] as u8))
                .collect(),
        ))
    }
}

/// One result (one frame's keypoints or landmarks, or one object's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    pub image_id: u64,
    pub category_id: u32,
    pub keypoints: Keypoints,
    pub score: f32,
    /// An object's box `[x, y, w, h]` in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: u64,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub id: u32,
    pub name: String,
    pub supercategory: String,
    pub keypoints: Vec<String>,
    /// 1-based landmark index pairs.
    pub skeleton: Vec<[u32; 2]>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub id: u64,
    #[serde(flatten)]
    pub result: CocoResult,
    pub num_keypoints: u32,
    /// `[x, y, w, h]` of the labelled landmarks.
    pub bbox: [f32; 4],
    pub area: f32,
    pub iscrowd: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub images: Vec<Image>,
    pub categories: Vec<Category>,
    pub annotations: Vec<Annotation>,
}

/// Collects frames and writes them as one COCO document.
#[derive(Clone, Debug, Default)]
pub struct Coco {
    /// Set by the first record; `Some` when the records carry a pose.
    category: Option<Option<Category>>,
    images: Vec<Image>,
    results: Vec<CocoResult>,
}

/// `(x, y, visibility)` per keypoint in COCO's pixel coordinates: the pose's landmarks
/// (not labelled outside the frame) when it has one, else the keypoints.
fn coco_keypoints(record: &Record) -> Vec<(f32, f32, u8)> {
    let (w, h) = (record.width, record.height);
    match &record.pose {
        None => record
            .keypoints
            .iter()
            .map(|k| {
                let v = if k.visible { 2 } else { 1 };
                (coco_coord(k.x, w), coco_coord(k.y, h), v)
            })
            .collect(),
        Some(pose) => pose
            .iter()
            .map(|l| {
                let inside = (0.0..w as f32).contains(&l.x) && (0.0..h as f32).contains(&l.y);
                if inside {
                    (coco_coord(l.x, w), coco_coord(l.y, h), 2)
                } else {
                    (0.0, 0.0, 0)
                }
            })
            .collect(),
    }
}

/// The mean of the finite keypoint confidences (0 without any).
fn mean_confidence(record: &Record) -> f32 {
    let conf: Vec<f32> = record
        .keypoints
        .iter()
        .map(|k| k.confidence)
        .filter(|c| c.is_finite())
        .collect();
    if conf.is_empty() {
        0.0
    } else {
        conf.iter().sum::<f32>() / conf.len() as f32
    }
}

/// COCO pixel index coordinate of `v` (a record's pixel position) in a frame `size` wide.
fn coco_coord(v: f32, size: u32) -> f32 {
    (v - 0.5).clamp(0.0, size.saturating_sub(1) as f32)
}

impl Coco {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of results added (a frame's, or each object's).
    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// Adds one frame as image `image_id` (or one object of it: the image is added once for
    /// consecutive records of the same `image_id`). All records must agree on having a pose
    /// and on its landmark names and skeleton (one category).
    pub fn add(
        &mut self,
        image_id: u64,
        file_name: Option<&str>,
        record: &Record,
    ) -> Result<(), String> {
        self.check_category(record)?;
        let (w, h) = (record.width, record.height);
        let keypoints = coco_keypoints(record);
        let score = mean_confidence(record);
        if self.images.last().map(|i| i.id) != Some(image_id) {
            self.images.push(Image {
                id: image_id,
                width: w,
                height: h,
                file_name: file_name.map(str::to_string),
            });
        }
        let bbox = record.object.as_ref().map(|o| {
            let [x, y, bw, bh] = o.roi;
            let (w, h) = (w as f32, h as f32);
            [x * w, y * h, bw * w, bh * h]
        });
        self.results.push(CocoResult {
            image_id,
            category_id: CATEGORY_ID,
            keypoints: Keypoints(keypoints),
            score,
            bbox,
        });
        Ok(())
    }

    /// The record's keypoint category (its pose's landmarks and skeleton, or none) must be
    /// the first record's: one COCO file holds one category.
    fn check_category(&mut self, record: &Record) -> Result<(), String> {
        let category = record.pose.as_ref().map(|pose| Category {
            id: CATEGORY_ID,
            name: CATEGORY_NAME.into(),
            supercategory: SUPERCATEGORY.into(),
            keypoints: pose.iter().map(|l| l.name.clone()).collect(),
            skeleton: record
                .skeleton
                .iter()
                .flatten()
                .map(|&[a, b]| [a + 1, b + 1])
                .collect(),
        });
        match &self.category {
            None => self.category = Some(category.clone()),
            Some(first) if *first != category => {
                return Err(format!(
                    "frame {}: its pose landmarks or skeleton differ from the first frame's \
                     (one COCO file holds one keypoint category)",
                    record.frame
                ))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The results array, or with a pose the dataset (see the module documentation).
    pub fn to_json(&self) -> Vec<u8> {
        let out = match self.category.clone().flatten() {
            None => serde_json::to_vec(&self.results),
            Some(category) => serde_json::to_vec(&Dataset {
                images: self.images.clone(),
                categories: vec![category],
                annotations: self
                    .results
                    .iter()
                    .enumerate()
                    .map(|(i, r)| annotation(i as u64 + 1, r.clone()))
                    .collect(),
            }),
        };
        out.expect("COCO documents always serialise")
    }

    /// One frame's document (what a broker message or a stream carries per frame).
    pub fn frame_json(
        image_id: u64,
        file_name: Option<&str>,
        record: &Record,
    ) -> Result<Vec<u8>, String> {
        let mut c = Self::new();
        c.add(image_id, file_name, record)?;
        Ok(c.to_json())
    }
}

fn annotation(id: u64, mut result: CocoResult) -> Annotation {
    // An object's box is the annotation's (written once).
    let object_box = result.bbox.take();
    let labelled: Vec<(f32, f32)> = result
        .keypoints
        .0
        .iter()
        .filter(|k| k.2 > 0)
        .map(|k| (k.0, k.1))
        .collect();
    let bbox = if let Some(b) = object_box {
        b
    } else if labelled.is_empty() {
        [0.0; 4]
    } else {
        let min = |f: fn(&(f32, f32)) -> f32| labelled.iter().map(f).fold(f32::MAX, f32::min);
        let max = |f: fn(&(f32, f32)) -> f32| labelled.iter().map(f).fold(f32::MIN, f32::max);
        let (x0, y0) = (min(|p| p.0), min(|p| p.1));
        [x0, y0, max(|p| p.0) - x0, max(|p| p.1) - y0]
    };
    Annotation {
        id,
        num_keypoints: labelled.len() as u32,
        area: bbox[2] * bbox[3],
        bbox,
        iscrowd: 0,
        result,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::export::tests::sample;
    use serde_json::Value;

    fn int(v: &Value, what: &str) -> u64 {
        v.as_u64()
            .unwrap_or_else(|| panic!("{what} is not a non-negative integer: {v}"))
    }

    /// COCO's field rules for one result object: the four fields with their types, 3 values
    /// per keypoint, v an integer in {0, 1, 2}, x = y = 0 when v = 0, labelled points inside
    /// the image in 0-indexed pixels. Returns (image_id, flattened keypoints).
    fn check_result(r: &Value, k: usize, sizes: &[(u64, u64, u64)]) -> (u64, Vec<f64>) {
        let image_id = int(&r["image_id"], "image_id");
        assert_eq!(int(&r["category_id"], "category_id"), 1);
        assert!(r["score"].is_number(), "score: {r}");
        let kp: Vec<&Value> = r["keypoints"]
            .as_array()
            .expect("keypoints array")
            .iter()
            .collect();
        assert_eq!(kp.len(), 3 * k, "3 values per keypoint: {r}");
        let &(_, w, h) = sizes
            .iter()
            .find(|s| s.0 == image_id)
            .unwrap_or_else(|| panic!("image_id {image_id} has no image"));
        for t in kp.chunks(3) {
            let v = int(t[2], "v");
            assert!(v <= 2, "v = {v}");
            let (x, y) = (t[0].as_f64().unwrap(), t[1].as_f64().unwrap());
            if v == 0 {
                assert_eq!((x, y), (0.0, 0.0), "unlabelled points are at 0, 0");
            } else {
                assert!(
                    (0.0..=(w - 1) as f64).contains(&x),
                    "x {x} in a {w} wide image"
                );
                assert!(
                    (0.0..=(h - 1) as f64).contains(&y),
                    "y {y} in a {h} high image"
                );
            }
        }
        (image_id, kp.iter().map(|v| v.as_f64().unwrap()).collect())
    }

    /// Parses a results array by the rules; `sizes` are (image_id, width, height).
    pub(crate) fn check_results(doc: &[u8], k: usize, sizes: &[(u64, u64, u64)]) -> Vec<Vec<f64>> {
        let v: Value = serde_json::from_slice(doc).unwrap();
        let arr = v.as_array().expect("results are a JSON array");
        arr.iter().map(|r| check_result(r, k, sizes).1).collect()
    }

    /// Parses a keypoint dataset by the rules: ids unique and resolvable, the category's
    /// names and 1-based skeleton consistent, each annotation a valid result with
    /// `num_keypoints` = the labelled count and a bbox around them.
    pub(crate) fn check_dataset(doc: &[u8]) -> (Value, Vec<Vec<f64>>) {
        let v: Value = serde_json::from_slice(doc).unwrap();
        let images = v["images"].as_array().expect("images");
        let sizes: Vec<(u64, u64, u64)> = images
            .iter()
            .map(|i| {
                (
                    int(&i["id"], "id"),
                    int(&i["width"], "width"),
                    int(&i["height"], "height"),
                )
            })
            .collect();
        let mut ids: Vec<u64> = sizes.iter().map(|s| s.0).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), sizes.len(), "image ids unique");
        let cats = v["categories"].as_array().expect("categories");
        assert_eq!(cats.len(), 1);
        let cat = &cats[0];
        assert_eq!(int(&cat["id"], "category id"), 1);
        assert!(cat["name"].is_string() && cat["supercategory"].is_string());
        let names = cat["keypoints"].as_array().expect("keypoint names");
        assert!(names.iter().all(Value::is_string));
        let k = names.len();
        for pair in cat["skeleton"].as_array().expect("skeleton") {
            let p = pair.as_array().unwrap();
            assert_eq!(p.len(), 2);
            for i in p {
                assert!(
                    (1..=k as u64).contains(&int(i, "skeleton index")),
                    "1-based: {pair}"
                );
            }
        }
        let mut ann_ids = Vec::new();
        let mut points = Vec::new();
        for a in v["annotations"].as_array().expect("annotations") {
            ann_ids.push(int(&a["id"], "annotation id"));
            let (_, kp) = check_result(a, k, &sizes);
            let labelled: Vec<(f64, f64)> = kp
                .chunks(3)
                .filter(|t| t[2] > 0.0)
                .map(|t| (t[0], t[1]))
                .collect();
            assert_eq!(
                int(&a["num_keypoints"], "num_keypoints"),
                labelled.len() as u64
            );
            assert_eq!(int(&a["iscrowd"], "iscrowd"), 0);
            let b: Vec<f64> = a["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(b.len(), 4);
            assert!(b[2] >= 0.0 && b[3] >= 0.0);
            for (x, y) in labelled {
                assert!(
                    x >= b[0] - 1e-4 && x <= b[0] + b[2] + 1e-4,
                    "bbox holds x {x}: {b:?}"
                );
                assert!(
                    y >= b[1] - 1e-4 && y <= b[1] + b[3] + 1e-4,
                    "bbox holds y {y}: {b:?}"
                );
            }
            assert!((a["area"].as_f64().unwrap() - b[2] * b[3]).abs() < 1e-3);
            points.push(kp);
        }
        let n = ann_ids.len();
        ann_ids.sort();
        ann_ids.dedup();
        assert_eq!(ann_ids.len(), n, "annotation ids unique");
        assert!(!ann_ids.contains(&0), "annotation ids start at 1");
        (v, points)
    }

    #[test]
    fn results_follow_the_coco_rules_with_hand_computed_values() {
        let mut c = Coco::new();
        for f in 0..3 {
            c.add(f, None, &sample(f, false)).unwrap();
        }
        let doc = c.to_json();
        let pts = check_results(&doc, 3, &[(0, 100, 50), (1, 100, 50), (2, 100, 50)]);
        assert_eq!(pts.len(), 3);
        // Keypoint 0: (10.5, 10) px -> (10, 9.5); 1: (50, 45), not visible -> v 1;
        // 2: (30, 30) -> (29.5, 29.5).
        let want = [10.0, 9.5, 2.0, 49.5, 44.5, 1.0, 29.5, 29.5, 2.0];
        for (got, w) in pts[0].iter().zip(want) {
            assert!((got - w).abs() < 1e-5, "{:?} vs {want:?}", pts[0]);
        }
        let v: Value = serde_json::from_slice(&doc).unwrap();
        // Mean confidence (0.5 + 0.01 + 0.25) / 3, and integer visibilities.
        assert!((v[0]["score"].as_f64().unwrap() - 0.76 / 3.0).abs() < 1e-6);
        assert!(v[0]["keypoints"][2].is_u64());
        // Read back through the typed structs.
        let back: Vec<CocoResult> = serde_json::from_slice(&doc).unwrap();
        assert_eq!(back[2].image_id, 2);
        assert_eq!(back[1].keypoints.0[1], (49.5, 44.5, 1));
    }

    #[test]
    fn with_a_pose_the_dataset_carries_the_category_with_names_and_a_1_based_skeleton() {
        let mut c = Coco::new();
        c.add(7, Some("a.png"), &sample(0, true)).unwrap();
        c.add(8, Some("b.png"), &sample(1, true)).unwrap();
        let (v, pts) = check_dataset(&c.to_json());
        let cat = &v["categories"][0];
        assert_eq!(cat["keypoints"], serde_json::json!(["head", "hip", "foot"]));
        assert_eq!(cat["skeleton"], serde_json::json!([[1, 2], [2, 3]]));
        assert_eq!(v["images"][1]["file_name"], "b.png");
        assert_eq!(v["annotations"][1]["image_id"], 8);
        // head (50, 5) -> (49.5, 4.5); hip (45, 30) -> (44.5, 29.5); the foot (120, -5)
        // lies outside: unlabelled.
        let want = [49.5, 4.5, 2.0, 44.5, 29.5, 2.0, 0.0, 0.0, 0.0];
        for (got, w) in pts[0].iter().zip(want) {
            assert!((got - w).abs() < 1e-5, "{:?} vs {want:?}", pts[0]);
        }
        assert_eq!(v["annotations"][0]["num_keypoints"], 2);
        let bbox: Vec<f64> = v["annotations"][0]["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (got, w) in bbox.iter().zip([44.5, 4.5, 5.0, 25.0]) {
            assert!((got - w).abs() < 1e-5, "bbox {bbox:?}");
        }
        let back: Dataset = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(back.annotations[0].result.keypoints.0[2], (0.0, 0.0, 0));
    }

    #[test]
    fn one_category_per_document() {
        let mut c = Coco::new();
        c.add(0, None, &sample(0, true)).unwrap();
        let err = c.add(1, None, &sample(1, false)).unwrap_err();
        assert!(err.contains("frame 1"), "{err}");
        let mut other = sample(2, true);
        other.pose.as_mut().unwrap()[0].name = "nose".into();
        assert!(c.add(2, None, &other).is_err());
        assert_eq!(c.len(), 1);
        // A single frame's document, as sent per message.
        let one = Coco::frame_json(4, None, &sample(4, false)).unwrap();
        assert_eq!(check_results(&one, 3, &[(4, 100, 50)]).len(), 1);
    }
}
