//! One record per object, with its id, label and region, and COCO results per person.

use super::*;

/// Pushes frames 0 and 1 with two objects each, frame 2 with the whole frame's keypoints,
/// and EOS through a publisher with `props`.
fn publish_objects(props: &str) {
    let mut h = harness(
        props,
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    for i in 0..3 {
        let mut b = buffer(i, None);
        let sets = match i {
            2 => vec![meta(2, false)],
            i => objects(i),
        };
        FrameKeypoints::attach_all(&sets, b.get_mut().unwrap());
        h.push(b).unwrap();
        h.pull().unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
}

#[test]
fn one_record_per_object_with_its_id_label_and_roi_under_schema_2() {
    let path = scratch().join("objects.jsonl");
    publish_objects(&format!("location={}", path.display()));
    let recs = lines(&path);
    assert_eq!(
        recs.len(),
        5,
        "two objects on frames 0 and 1, the whole frame on 2"
    );
    for (r, (i, m)) in recs[..4].iter().zip(
        [0, 1]
            .into_iter()
            .flat_map(|i| objects(i).into_iter().map(move |m| (i, m))),
    ) {
        assert_eq!(r.schema, OBJECT_SCHEMA);
        assert_eq!(r.frame, i as u64);
        assert_eq!(r.pts, Some(40_000_000 * i as u64));
        let o = m.object.as_ref().unwrap();
        let ro = r.object.as_ref().expect("the object's fields");
        assert_eq!(
            (ro.object_id, ro.label.as_str(), ro.roi),
            (o.id, "person", o.bbox)
        );
        // Otherwise the record of /1, from the object's keypoints.
        let mut plain = r.clone();
        plain.schema = SCHEMA.into();
        assert_record_is(&plain, &m, i as u64, 100, 50);
    }
    assert_eq!(recs[4].schema, SCHEMA);
    assert!(recs[4].object.is_none());
    assert_record_is(&recs[4], &meta(2, false), 2, 100, 50);
    // The fields as a reader of the JSON sees them; none on the whole frame's record.
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[1]["schema"], "stablekeypoints-frame/2");
    assert_eq!(v[1]["object_id"], 8);
    assert_eq!(v[1]["label"], "person");
    assert_eq!(v[1]["roi"], serde_json::json!([0.5, 0.0, 0.5, 1.0]));
    assert_eq!(v[4]["schema"], "stablekeypoints-frame/1");
    assert!(v[4].get("object_id").is_none() && v[4].get("roi").is_none());
}

#[test]
fn coco_has_one_result_per_person_with_its_box_on_the_frames_image() {
    let path = scratch().join("objects.coco.json");
    publish_objects(&format!("location={} format=coco", path.display()));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let arr = v.as_array().expect("a results array");
    let results = coco_results(arr, 2, 100.0, 50.0);
    let ids: Vec<u64> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        [0, 0, 1, 1, 2],
        "one result per person, on its frame's image"
    );
    for (r, m) in arr.iter().zip(objects(0).iter().chain(&objects(1))) {
        let [x, y, w, h] = m.object.as_ref().unwrap().bbox;
        let want = [x * 100.0, y * 50.0, w * 100.0, h * 50.0];
        let got: Vec<f32> = r["bbox"]
            .as_array()
            .expect("the object's bbox")
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, want);
        let mean = m.keypoints.iter().map(|k| k.confidence).sum::<f32>() / 2.0;
        assert!((r["score"].as_f64().unwrap() - mean as f64).abs() < 1e-6);
    }
    assert!(arr[4].get("bbox").is_none(), "the whole frame has no box");
}
