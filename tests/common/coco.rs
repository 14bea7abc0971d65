//! COCO's field rules, written from the format's description (cocodataset.org, "Keypoint
//! Detection" results and the keypoint annotation format), not from our writers; shared by
//! the test crates of the workspace (each includes this file from its own `common`).

use serde_json::Value;

/// A keypoint as COCO writes it: x, y and the visibility v.
pub type Triple = (f64, f64, u64);

fn uint(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} must be a non-negative integer, got {v}"))
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} must be a number, got {v}"))
}

/// One result, `{"image_id": int, "category_id": int, "keypoints": [x1, y1, v1, ...],
/// "score": float}`, of `k` keypoints on an image `w` x `h`: v is 0 (not labelled, then
/// x = y = 0), 1 (labelled, not visible) or 2 (visible); labelled points lie in the image in
/// 0-indexed pixel coordinates. Returns the (x, y, v) triples.
pub fn check_result(r: &Value, k: usize, w: u64, h: u64) -> Vec<Triple> {
    uint(&r["image_id"], "image_id");
    uint(&r["category_id"], "category_id");
    num(&r["score"], "score");
    let flat = r["keypoints"].as_array().expect("keypoints is an array");
    assert_eq!(flat.len(), 3 * k, "3 numbers per keypoint: {r}");
    flat.chunks(3)
        .map(|t| {
            let (x, y, v) = (num(&t[0], "x"), num(&t[1], "y"), uint(&t[2], "v"));
            assert!(v <= 2, "visibility {v}");
            if v == 0 {
                assert_eq!((x, y), (0.0, 0.0), "an unlabelled point is at 0, 0");
            } else {
                assert!((0.0..=(w - 1) as f64).contains(&x), "x {x}, image {w} wide");
                assert!((0.0..=(h - 1) as f64).contains(&y), "y {y}, image {h} high");
            }
            (x, y, v)
        })
        .collect()
}

/// A results file: a JSON array of results, `sizes[image_id]` the image sizes. Returns the
/// results with their triples.
pub fn check_results(doc: &Value, k: usize, sizes: &[(u64, u64)]) -> Vec<Vec<Triple>> {
    let arr = doc.as_array().expect("COCO results are a JSON array");
    arr.iter()
        .map(|r| {
            let id = uint(&r["image_id"], "image_id") as usize;
            let &(w, h) = sizes.get(id).unwrap_or_else(|| panic!("image_id {id}"));
            check_result(r, k, w, h)
        })
        .collect()
}

/// A keypoint dataset: `images` with unique ids, one keypoint category whose `skeleton`
/// pairs are 1-based indices into its `keypoints` names, and `annotations` with unique ids,
/// an existing `image_id` and `category_id`, valid keypoints, `num_keypoints` the labelled
/// count, `bbox` `[x, y, w, h]` around them, `area` and `iscrowd`. Returns the category and
/// the annotations' triples in order.
pub fn check_dataset(doc: &Value) -> (Value, Vec<Vec<Triple>>) {
    let images = doc["images"].as_array().expect("images");
    let mut sizes = std::collections::HashMap::new();
    for i in images {
        let id = uint(&i["id"], "image id");
        let size = (uint(&i["width"], "width"), uint(&i["height"], "height"));
        assert!(sizes.insert(id, size).is_none(), "image id {id} twice");
    }
    let cats = doc["categories"].as_array().expect("categories");
    assert_eq!(cats.len(), 1, "one keypoint category");
    let cat = cats[0].clone();
    let cat_id = uint(&cat["id"], "category id");
    assert!(cat["name"].is_string() && cat["supercategory"].is_string());
    let names = cat["keypoints"].as_array().expect("keypoint names");
    assert!(names.iter().all(Value::is_string));
    let k = names.len();
    for pair in cat["skeleton"].as_array().expect("skeleton") {
        let p = pair.as_array().expect("a skeleton pair");
        assert_eq!(p.len(), 2);
        for i in p {
            let i = uint(i, "skeleton index");
            assert!((1..=k as u64).contains(&i), "1-based: {pair}");
        }
    }
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for a in doc["annotations"].as_array().expect("annotations") {
        assert!(
            ids.insert(uint(&a["id"], "annotation id")),
            "annotation id twice"
        );
        assert_eq!(uint(&a["category_id"], "category_id"), cat_id);
        let image = uint(&a["image_id"], "image_id");
        let &(w, h) = sizes.get(&image).expect("annotation of a listed image");
        let kp = check_result(a, k, w, h);
        let labelled: Vec<_> = kp.iter().filter(|t| t.2 > 0).collect();
        assert_eq!(
            uint(&a["num_keypoints"], "num_keypoints"),
            labelled.len() as u64
        );
        assert_eq!(uint(&a["iscrowd"], "iscrowd"), 0);
        let b: Vec<f64> = a["bbox"]
            .as_array()
            .expect("bbox")
            .iter()
            .map(|v| num(v, "bbox"))
            .collect();
        assert_eq!(b.len(), 4);
        for t in labelled {
            assert!(
                t.0 >= b[0] - 1e-3 && t.0 <= b[0] + b[2] + 1e-3,
                "{b:?} holds {t:?}"
            );
            assert!(
                t.1 >= b[1] - 1e-3 && t.1 <= b[1] + b[3] + 1e-3,
                "{b:?} holds {t:?}"
            );
        }
        assert!((num(&a["area"], "area") - b[2] * b[3]).abs() < 1e-2);
        out.push(kp);
    }
    (cat, out)
}
