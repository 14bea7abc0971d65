//! `stablekeypointsboxes`: a boxes file's records as ROI metas on real pipelines, by buffer
//! count and by timestamp, with clipping, skipping and the errors of bad files.

use gststablekeypoints::boxes::{
    CONFIDENCE, DETECTION, LABEL, LABEL_ID, OBJECT_ID, OBJECT_ID_FIELD, X_MAX, X_MIN, Y_MAX, Y_MIN,
};
use std::path::PathBuf;

use crate::common;
use common::*;

const W: u32 = 160;
const H: u32 = 80;

/// One ROI meta as the tests compare it.
#[derive(Debug, PartialEq)]
struct Roi {
    label: String,
    rect: (u32, u32, u32, u32),
    detection: [f64; 4],
    confidence: f64,
    label_id: i32,
    id: Option<i32>,
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `frames` test frames of W x H at 10 fps through the element; each frame's ROIs.
fn run(props: &str, frames: u32) -> Result<Vec<Vec<Roi>>, String> {
    let desc = format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,format=RGB,width={W},height={H},framerate=10/1 \
         ! stablekeypointsboxes {props} ! appsink name=sink sync=false wait-on-eos=false"
    );
    let (_, buffers) = run_pipeline(&desc, Some("sink"))?;
    Ok(buffers.iter().map(|b| rois(b)).collect())
}

fn rois(buf: &gst::BufferRef) -> Vec<Roi> {
    buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let d = m.param(DETECTION).expect("detection structure");
            let f = |n: &str| d.get::<f64>(n).unwrap();
            Roi {
                label: m.roi_type().to_string(),
                rect: m.rect(),
                detection: [f(X_MIN), f(Y_MIN), f(X_MAX), f(Y_MAX)],
                confidence: f(CONFIDENCE),
                label_id: d.get::<i32>(LABEL_ID).unwrap(),
                id: m
                    .param(OBJECT_ID)
                    .map(|s| s.get::<i32>(OBJECT_ID_FIELD).unwrap()),
            }
            .checked(d.get::<String>(LABEL).unwrap())
        })
        .collect()
}

impl Roi {
    /// The detection structure's label is the ROI type, and its corners the rectangle's.
    fn checked(self, label: String) -> Self {
        assert_eq!(label, self.label);
        let (x, y, w, h) = self.rect;
        let want = [
            x as f64 / W as f64,
            y as f64 / H as f64,
            (x + w) as f64 / W as f64,
            (y + h) as f64 / H as f64,
        ];
        assert_eq!(self.detection, want, "{self:?}");
        self
    }
}

fn roi(
    label: &str,
    rect: (u32, u32, u32, u32),
    confidence: f64,
    label_id: i32,
    id: Option<i32>,
) -> Roi {
    let (x, y, w, h) = rect;
    Roi {
        label: label.into(),
        rect,
        detection: [
            x as f64 / W as f64,
            y as f64 / H as f64,
            (x + w) as f64 / W as f64,
            (y + h) as f64 / H as f64,
        ],
        confidence,
        label_id,
        id,
    }
}

/// Frames 0, 1 and 3 have boxes (1 measured on a frame twice as large, 3 only timed).
const FILE: &str = concat!(
    r#"{"frame": 0, "timestamp": 0.0, "objects": [{"id": 3, "box": [10.4, 5, 30, 40.6], "confidence": 0.75}, {"label": "ball", "box": [100, 60, 10, 10]}]}"#,
    "\n",
    r#"{"frame": 1, "timestamp": 0.1, "width": 320, "height": 160, "objects": [{"id": 4, "box": [20, 10, 60, 80]}]}"#,
    "\n\n",
    r#"{"timestamp": 0.3, "objects": [{"id": 5, "box": [0, 0, 16, 8]}]}"#,
    "\n"
);

#[test]
fn each_frame_gets_its_records_boxes_by_count() {
    let f = write("count.jsonl", FILE);
    let frames = run(&format!("location={}", f.display()), 4).unwrap();
    assert_eq!(frames.len(), 4);
    assert_eq!(
        frames[0],
        vec![
            roi("person", (10, 5, 30, 41), 0.75, 1, Some(3)),
            roi("ball", (100, 60, 10, 10), 1.0, 0, None),
        ]
    );
    // Rescaled from 320 x 160 to the 160 x 80 frame.
    assert_eq!(
        frames[1],
        vec![roi("person", (10, 5, 30, 40), 1.0, 1, Some(4))]
    );
    assert!(frames[2].is_empty(), "no record");
    assert!(frames[3].is_empty(), "counted frames do not look at times");
}

#[test]
fn each_frame_gets_its_records_boxes_by_timestamp() {
    let f = write("time.jsonl", FILE);
    let frames = run(
        &format!("location={} frame-index=timestamp", f.display()),
        4,
    )
    .unwrap();
    assert_eq!(frames[0].len(), 2);
    assert_eq!(
        frames[1],
        vec![roi("person", (10, 5, 30, 40), 1.0, 1, Some(4))]
    );
    assert!(frames[2].is_empty());
    assert_eq!(
        frames[3],
        vec![roi("person", (0, 0, 16, 8), 1.0, 1, Some(5))]
    );
}

#[test]
fn coco_results_are_found_by_frame_in_either_mode() {
    let f = write(
        "coco.json",
        r#"[{"image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]"#,
    );
    for mode in ["count", "timestamp"] {
        let frames = run(&format!("location={} frame-index={mode}", f.display()), 3).unwrap();
        assert!(frames[0].is_empty() && frames[1].is_empty());
        assert_eq!(
            frames[2],
            vec![roi("person", (1, 2, 3, 4), 0.5, 0, None)],
            "{mode}"
        );
    }
}

#[test]
fn boxes_partly_outside_are_clipped_and_wholly_outside_skipped() {
    let f = write(
        "outside.jsonl",
        concat!(
            r#"{"frame": 0, "objects": [{"box": [-20, -10, 50, 30]}, {"box": [150, 70, 40, 40]}, {"box": [200, 10, 5, 5]}, {"box": [5, 90, 5, 5]}, {"box": [7, 7, 0, 9]}]}"#,
            "\n"
        ),
    );
    let frames = run(&format!("location={}", f.display()), 1).unwrap();
    assert_eq!(
        frames[0],
        vec![
            roi("person", (0, 0, 30, 20), 1.0, 0, None),
            roi("person", (150, 70, 10, 10), 1.0, 0, None),
        ]
    );
}

#[test]
fn a_missing_file_fails_the_state_change_naming_it() {
    let missing = scratch().join("no-such-boxes.jsonl");
    let e = run(&format!("location={}", missing.display()), 1).unwrap_err();
    assert!(e.contains("no-such-boxes.jsonl"), "{e}");
}

#[test]
fn a_malformed_line_fails_the_state_change_naming_the_line() {
    let f = write(
        "bad.jsonl",
        concat!(
            r#"{"frame": 0, "objects": []}"#,
            "\n",
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3]}]}"#,
            "\n"
        ),
    );
    let e = run(&format!("location={}", f.display()), 1).unwrap_err();
    assert!(
        e.contains("bad.jsonl:2:") && e.contains("`box` has 3 numbers, not 4"),
        "{e}"
    );
}
