//! `process --boxes`: one record per object and none for frames without.

use super::*;

/// An object: frame, id, label and normalised box.
type Object = (u64, u64, &'static str, [f64; 4]);

/// A boxes file at `boxes` for the clip's 96x72 frames: frames 3k+2 have no record, frame 4
/// an empty one; the others two boxes. Returns the objects each record must have.
fn write_boxes(boxes: &Path) -> Vec<Object> {
    let mut text = String::new();
    let mut want = Vec::new();
    for f in 0..FRAMES as u64 {
        if f % 3 == 2 {
            continue;
        }
        if f == 4 {
            text.push_str("{\"frame\": 4, \"objects\": []}\n");
            continue;
        }
        text.push_str(&format!(
            "{{\"frame\": {f}, \"objects\": [{{\"id\": 1, \"label\": \"person\", \"box\": [4, 4, 40, 60]}}, \
             {{\"id\": 7, \"label\": \"dog\", \"box\": [50, 10, 40, 50]}}]}}\n"
        ));
        want.push((
            f,
            1u64,
            "person",
            [4.0 / 96.0, 4.0 / 72.0, 40.0 / 96.0, 60.0 / 72.0],
        ));
        want.push((
            f,
            7,
            "dog",
            [50.0 / 96.0, 10.0 / 72.0, 40.0 / 96.0, 50.0 / 72.0],
        ));
    }
    std::fs::write(boxes, text).unwrap();
    want
}

#[test]
fn process_with_boxes_writes_a_record_per_object_and_none_for_frames_without() {
    // Issue 25: `--boxes` reuses a detector's output: keypoints per object, schema /2.
    let dir = temp_dir("boxes");
    let Some(clip) = make_clip(&dir) else { return };
    let tokens = tiny_dir().join("tokens.safetensors");
    let boxes = dir.join("boxes.jsonl");
    let want = write_boxes(&boxes);
    let result = dir.join("result");
    let run = |boxes: &Path, extra: &[&str]| {
        process_cmd(tiny_dir(), &clip, &result)
            .arg("--tokens")
            .arg(&tokens)
            .arg("--boxes")
            .arg(boxes)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&boxes, &["--coco"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("({FRAMES} frames)")), "{err}");
    let text = std::fs::read_to_string(result.join("keypoints.jsonl")).unwrap();
    let got: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{text}");
    for (r, (f, id, label, roi)) in got.iter().zip(&want) {
        assert_eq!(r["schema"], "stablekeypoints-frame/2");
        assert_eq!(r["frame"], *f);
        assert_eq!(r["object_id"], *id);
        assert_eq!(r["label"], *label);
        let g: Vec<f64> = serde_json::from_value(r["roi"].clone()).unwrap();
        for (a, b) in g.iter().zip(roi) {
            assert!((a - b).abs() < 1e-5, "frame {f}: roi {g:?} vs {roi:?}");
        }
        assert!(!r["keypoints"].as_array().unwrap().is_empty());
    }
    let before = snapshot(&result);
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["annotated.mp4", "keypoints.coco.json", "keypoints.jsonl"]
    );
    // A missing or malformed boxes file fails before decoding, naming it; the earlier
    // outputs stay as they were.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"frame\": 0, \"objects\": []}\nnot json\n").unwrap();
    for (file, named) in [
        (dir.join("missing.jsonl"), "missing.jsonl".to_string()),
        (bad.clone(), "bad.jsonl:2".to_string()),
    ] {
        let out = run(&file, &[]);
        assert_clean_error(&out, &[&named]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("running"), "checked before decoding: {err}");
        assert_eq!(snapshot(&result), before, "untouched ({named})");
    }
    labels_and_corpora_with_boxes(&dir, &clip, &boxes, want.len());
}

/// `--object-class` keeps those labels only (the element's object-class) of the `objects`
/// in `boxes`; one boxes file is the boxes of one video.
fn labels_and_corpora_with_boxes(dir: &Path, clip: &Path, boxes: &Path, objects: usize) {
    let tokens = tiny_dir().join("tokens.safetensors");
    let dogs = dir.join("dogs");
    let out = process_cmd(tiny_dir(), clip, &dogs)
        .arg("--tokens")
        .arg(&tokens)
        .arg("--boxes")
        .arg(boxes)
        .args(["--object-class", "dog", "--no-annotated"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dogs.join("keypoints.jsonl")).unwrap();
    let labels: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].clone())
        .collect();
    assert_eq!(labels.len(), objects / 2);
    assert!(labels.iter().all(|l| l == "dog"), "{labels:?}");
    // One boxes file is the boxes of one video.
    let out = bin()
        .args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--inputs")
        .arg(dir)
        .arg("--out-dir")
        .arg(dir.join("corpus"))
        .arg("--tokens")
        .arg(&tokens)
        .arg("--boxes")
        .arg(boxes)
        .output()
        .unwrap();
    assert_clean_error(&out, &["--boxes", "--inputs"]);
}
