use super::*;

fn parse(text: &str) -> Result<Boxes> {
    Boxes::parse(Path::new("in/boxes.jsonl"), text.as_bytes())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(b) => panic!("accepted {text:?}: {b:?}"),
        Err(e) => e.to_string(),
    }
}

const LINES: &str = concat!(
    r#"{"frame": 0, "timestamp": 0.0, "width": 200, "height": 100, "objects": [{"id": 3, "label": "person", "box": [10, 20, 30, 40], "confidence": 0.9}, {"box": [-5, 0, 20.5, 10]}]}"#,
    "\n\n",
    r#"{"frame": 2, "timestamp": 0.2, "objects": []}"#,
    "\n",
    r#"{"timestamp": 0.3, "objects": [{"box": [1, 2, 3, 4], "label": "dog", "id": null}], "extra": true}"#,
    "\n"
);

#[test]
fn json_lines_by_frame_and_by_time() {
    let b = parse(LINES).unwrap();
    assert_eq!(b.records().len(), 3);
    assert!(b.has_timestamps());
    let f0 = b.by_frame(0);
    assert_eq!(
        f0[0],
        ObjectBox {
            id: Some(3),
            label: "person".into(),
            x: 10.0,
            y: 20.0,
            w: 30.0,
            h: 40.0,
            confidence: Some(0.9),
        }
    );
    assert_eq!(f0[1].label, DEFAULT_LABEL);
    assert_eq!((f0[1].id, f0[1].confidence), (None, None));
    assert!(b.by_frame(1).is_empty(), "no record");
    assert!(b.by_frame(2).is_empty(), "an empty record");
    assert_eq!(b.record_by_frame(2).unwrap().timestamp, Some(0.2));
    // Nearest within the tolerance; ties go to the earlier record.
    assert_eq!(b.by_time(0.29, 0.05)[0].label, "dog");
    assert_eq!(b.by_time(0.04, 0.05).len(), 2);
    assert!(b.by_time(0.1, 0.04).is_empty());
    assert_eq!(b.record_by_time(0.25, 0.05).unwrap().frame, Some(2));
    assert!(b.by_time(f64::NAN, 1.0).is_empty());
    assert!(b.by_time(-1.0, 0.5).is_empty());
}

#[test]
fn boxes_are_rescaled_to_the_frame_they_are_applied_to() {
    let b = parse(LINES).unwrap();
    let r = b.record_by_frame(0).unwrap();
    assert_eq!(r.size, Some((200, 100)));
    let s = r.scaled_to(400, 50);
    assert_eq!([s[0].x, s[0].y, s[0].w, s[0].h], [20.0, 10.0, 60.0, 20.0]);
    assert_eq!(r.scaled_to(200, 100), r.objects);
    // Without a size, the boxes are the frame's pixels.
    let r = b.record_by_time(0.3, 0.0).unwrap();
    assert_eq!(r.scaled_to(999, 7), r.objects);
}

#[test]
fn pixel_rects_are_rounded_and_clipped() {
    let o = |x, y, w, h| ObjectBox {
        id: None,
        label: "person".into(),
        x,
        y,
        w,
        h,
        confidence: None,
    };
    assert_eq!(
        o(1.4, 2.6, 10.2, 5.0).pixel_rect(100, 50),
        Some([1, 3, 12, 8])
    );
    assert_eq!(
        o(-5.0, 40.0, 20.0, 30.0).pixel_rect(100, 50),
        Some([0, 40, 15, 50])
    );
    assert_eq!(
        o(100.0, 0.0, 5.0, 5.0).pixel_rect(100, 50),
        None,
        "right of it"
    );
    assert_eq!(
        o(-9.0, 0.0, 9.0, 5.0).pixel_rect(100, 50),
        None,
        "left of it"
    );
    assert_eq!(o(3.0, 3.0, 0.2, 5.0).pixel_rect(100, 50), None, "empty");
    assert_eq!(o(1e300, -1e300, 1e300, 1e300).pixel_rect(100, 50), None);
    assert_eq!(
        o(-1e300, -1e300, 2e300, 2e300).pixel_rect(100, 50),
        Some([0, 0, 100, 50])
    );
}

#[test]
fn malformed_json_lines_name_the_line_and_the_fault() {
    let ok = r#"{"frame": 0, "objects": []}"#;
    let cases: &[(&str, &str)] = &[
        ("{\"frame\": 1, \"objects\": [", "not JSON"),
        ("frame 1", "not JSON"),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, NaN, 4]}]}"#,
            "not JSON",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 1e999, 4]}]}"#,
            "not JSON",
        ),
        ("[1, 2]", "a JSON object, not an array"),
        ("17", "a JSON object, not a number"),
        (r#"{"objects": []}"#, "neither `frame` nor `timestamp`"),
        (r#"{"frame": null, "objects": []}"#, "neither"),
        (
            r#"{"frame": -1, "objects": []}"#,
            "`frame` is a whole number from 0, not -1",
        ),
        (
            r#"{"frame": 1.5, "objects": []}"#,
            "`frame` is a whole number",
        ),
        (
            r#"{"timestamp": -0.5, "objects": []}"#,
            "timestamp -0.5 is negative",
        ),
        (
            r#"{"timestamp": "1s", "objects": []}"#,
            "`timestamp` is a number, not a string",
        ),
        (r#"{"frame": 1}"#, "no `objects` array"),
        (
            r#"{"frame": 1, "objects": {}}"#,
            "`objects` is an array, not an object",
        ),
        (
            r#"{"frame": 1, "width": 10, "objects": []}"#,
            "one is missing",
        ),
        (
            r#"{"frame": 1, "width": 0, "height": 5, "objects": []}"#,
            "`width` 0 is not a frame size",
        ),
        (
            r#"{"frame": 1, "width": 5, "height": 1e10, "objects": []}"#,
            "`height` is a whole number",
        ),
        (
            r#"{"frame": 1, "objects": [7]}"#,
            "objects[0]: an object is a JSON object",
        ),
        (r#"{"frame": 1, "objects": [{}]}"#, "objects[0]: no `box`"),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3]}]}"#,
            "`box` has 3 numbers, not 4",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3, 4, 5]}]}"#,
            "5 numbers",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": "1 2 3 4"}]}"#,
            "`box` is [x, y, w, h], not a string",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, -3, 4]}]}"#,
            "negative width, -3",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3, -4]}]}"#,
            "negative height",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, null, 3, 4]}]}"#,
            "`box[1]` is a number, not null",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3, 4], "id": "a"}]}"#,
            "`id` is a whole number",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3, 4], "label": 3}]}"#,
            "`label` is a string, not a number",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3, 4], "confidence": 1e300}]}"#,
            "`confidence` 1e300 is out of range",
        ),
        (
            r#"{"frame": 1, "objects": [{"box": [1, 2, 3, 4]}, {"box": [1]}]}"#,
            "objects[1]: `box` has 1 numbers",
        ),
    ];
    for (bad, want) in cases {
        let text = format!("{ok}\n\n{bad}\n{ok}");
        let e = err(&text);
        assert!(
            e.starts_with("in/boxes.jsonl:3: ") && e.contains(want),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        err("{\"frame\": 4, \"objects\": []}\n{\"frame\": 4, \"objects\": []}"),
        "in/boxes.jsonl: line 2: frame 4 was already given (line 1)"
    );
    assert!(
        err("{\"timestamp\": 1, \"objects\": []}\n\n{\"timestamp\": 1.0, \"objects\": []}")
            .contains("line 3: timestamp 1 was already given (line 1)")
    );
    assert!(err("\u{1}").starts_with("in/boxes.jsonl:1: not JSON"));
    let e = Boxes::parse(Path::new("b"), b"{\"frame\": 0, \"objects\": []}\n\xff").unwrap_err();
    assert_eq!(e.to_string(), "b:2: not UTF-8 text");
}

#[test]
fn empty_files_have_no_boxes_and_missing_files_are_named() {
    for text in ["", "\n\n  \n"] {
        let b = parse(text).unwrap();
        assert!(b.records().is_empty() && b.by_frame(0).is_empty());
    }
    let e = Boxes::read(Path::new("/nonexistent/boxes.jsonl")).unwrap_err();
    assert!(
        e.to_string().starts_with("/nonexistent/boxes.jsonl: "),
        "{e}"
    );
}

#[test]
fn coco_results_map_image_ids_to_frames() {
    let text = r#"[
            {"image_id": 4, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
            {"image_id": 0, "category_id": 3, "bbox": [5, 6, 7, 8], "score": 0.25, "track_id": 9},
            {"image_id": 4, "bbox": [0, 0, 1, 1]}
        ]"#;
    let b = parse(text).unwrap();
    assert!(!b.has_timestamps());
    assert_eq!(b.records().len(), 2);
    let f4 = b.by_frame(4);
    assert_eq!(f4.len(), 2);
    assert_eq!((f4[0].x, f4[0].h, f4[0].confidence), (1.0, 4.0, Some(0.5)));
    assert_eq!(f4[0].label, "person");
    assert_eq!(f4[1].label, "person", "category 1 by default");
    let f0 = b.by_frame(0);
    assert_eq!((f0[0].label.as_str(), f0[0].id), ("3", Some(9)));
    assert!(b.by_time(0.0, 1.0).is_empty(), "COCO has no times");
    assert_eq!(b.record_by_frame(4).unwrap().size, None);
}

#[test]
fn coco_documents_give_sizes_and_labels() {
    let text = r#"{"images": [{"id": 2, "width": 640, "height": 480, "file_name": "b.png"}],
            "categories": [{"id": 1, "name": "pedestrian"}, {"id": 2, "name": "cyclist"}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 2, "bbox": [10, 10, 20, 20], "score": 1},
                            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5]}]}"#;
    let b = parse(text).unwrap();
    let r = b.record_by_frame(2).unwrap();
    assert_eq!(r.size, Some((640, 480)));
    assert_eq!(r.objects[0].label, "cyclist");
    assert_eq!(r.scaled_to(320, 240)[0].w, 10.0);
    let r = b.record_by_frame(3).unwrap();
    assert_eq!((r.size, r.objects[0].label.as_str()), (None, "pedestrian"));
    // A document without annotations is read as a JSON-lines record (and fails there).
    assert!(err(r#"{"images": []}"#).contains(":1: the record has neither"));
}

#[test]
fn malformed_coco_names_the_array_index() {
    let cases: &[(&str, &str)] = &[
        ("[1, 2", "in/boxes.jsonl:1: not JSON (a COCO results array)"),
        (
            r#"[{"image_id": 0, "bbox": [1, 2, 3, 4]}, 5]"#,
            "in/boxes.jsonl: results[1]: a result is a JSON object",
        ),
        (
            r#"[{"bbox": [1, 2, 3, 4]}]"#,
            "results[0]: `image_id` is a whole number from 0, not null",
        ),
        (
            r#"[{"image_id": -3, "bbox": [1, 2, 3, 4]}]"#,
            "results[0]: `image_id`",
        ),
        (r#"[{"image_id": 0}]"#, "results[0]: no `bbox`"),
        (
            r#"[{"image_id": 0, "bbox": [1, 2, 3]}]"#,
            "results[0]: `bbox` has 3 numbers, not 4",
        ),
        (
            r#"[{"image_id": 0, "bbox": [1, 2, -3, 4]}]"#,
            "results[0]: `bbox` has a negative width",
        ),
        (
            r#"[{"image_id": 0, "bbox": [1, 2, 3, 4], "score": "high"}]"#,
            "`score` is a number, not a string",
        ),
        (
            r#"[{"image_id": 0, "bbox": [1, 2, 3, 4], "category_id": 1.5}]"#,
            "`category_id` is a whole number",
        ),
        (
            r#"{"annotations": {}}"#,
            "COCO `annotations` is an array, not an object",
        ),
        (
            r#"{"annotations": [], "images": 3}"#,
            "COCO `images` is an array, not a number",
        ),
        (
            r#"{"annotations": [], "images": [{"width": 3, "height": 4}]}"#,
            "images[0]: `id` is a whole number",
        ),
        (
            r#"{"annotations": [], "images": [{"id": 1, "width": 3}]}"#,
            "images[0]: `width` and `height` go together",
        ),
        (
            r#"{"annotations": [], "categories": [null]}"#,
            "categories[0]: not an object but null",
        ),
        (
            r#"{"annotations": [{"image_id": 0, "bbox": [0, 0, 0]}]}"#,
            "annotations[0]: `bbox` has 3 numbers",
        ),
    ];
    for (bad, want) in cases {
        let e = err(bad);
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn no_input_panics() {
    // Every prefix of valid files, and some byte soup.
    let coco = r#"{"images": [{"id": 0, "width": 4, "height": 4}], "annotations": [{"image_id": 0, "bbox": [0, 0, 1, 1]}]}"#;
    for text in [LINES, coco] {
        for end in 0..=text.len() {
            if let Some(t) = text.get(..end) {
                let _ = parse(t);
            }
        }
    }
    let mut x: u32 = 7;
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..40)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                b"{}[],:\"0123456789.-eE \nframeobjectsbox"[(x >> 16) as usize % 38]
            })
            .collect();
        let _ = Boxes::parse(Path::new("soup"), &bytes);
    }
}
