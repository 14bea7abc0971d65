//! A pipeline with the tiny model: records equal to the metadata, COCO files by COCO's field
//! rules, and start errors.

use super::*;

#[test]
fn pipeline_records_equal_the_metadata() {
    let n = 5;
    let ours = scratch().join("publish.jsonl");
    let (metas, msgs) = model_pipeline(
        n,
        &format!("location={} post-messages=true", ours.display()),
    );
    assert_eq!(metas.len(), n as usize);
    let recs = lines(&ours);
    assert_eq!(recs.len(), n as usize);
    for (i, (r, m)) in recs.iter().zip(&metas).enumerate() {
        assert_record_is(r, m, i as u64, 64, 48);
        assert_eq!(r.pts, Some(i as u64 * 1_000_000_000 / 30));
    }
    // Bus messages: the inference element's structure, one per frame, from our element.
    let ours: Vec<&gst::StructureRef> = msgs
        .iter()
        .filter(|m| m.src().is_some_and(|s| s.name() == "pub"))
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e.structure(),
            _ => None,
        })
        .collect();
    assert_eq!(ours.len(), n as usize);
    for (i, (s, m)) in ours.iter().zip(&metas).enumerate() {
        assert_eq!(s.name(), gststablekeypoints::MESSAGE_NAME);
        assert_eq!(s.get::<u64>("frame").unwrap(), i as u64);
        assert_eq!(s.get::<i32>("width").unwrap(), 64);
        assert_eq!(s.get::<bool>("inferred").unwrap(), m.inferred);
        let list = s.get::<gst::List>("keypoints").unwrap();
        assert_eq!(list.len(), m.keypoints.len());
        for (v, k) in list.iter().zip(&m.keypoints) {
            let kp = v.get::<gst::Structure>().unwrap();
            assert_eq!(kp.get::<u32>("id").unwrap(), k.id);
            assert_eq!(kp.get::<f32>("nx").unwrap(), k.x);
            assert_eq!(kp.get::<f32>("x").unwrap(), k.x * 64.0);
            assert_eq!(kp.get::<f32>("confidence").unwrap(), k.confidence);
        }
    }
}

#[test]
fn coco_file_from_the_model_follows_the_field_rules() {
    let n = 4;
    let path = scratch().join("results.coco.json");
    let (metas, _) = model_pipeline(n, &format!("location={} format=coco", path.display()));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let results = coco_results(
        v.as_array().expect("a results array"),
        NUM_KEYPOINTS,
        64.0,
        48.0,
    );
    assert_eq!(results.len(), n as usize);
    for (i, ((id, kp), m)) in results.iter().zip(&metas).enumerate() {
        assert_eq!(*id, i as u64, "image_id is the frame index");
        for (t, k) in kp.chunks(3).zip(&m.keypoints) {
            // 0-indexed pixels: half a pixel left of and above our pixel positions, within
            // the image.
            let want = |v: f32, size: f64| (v as f64 * size - 0.5).clamp(0.0, size - 1.0);
            assert!((t[0] - want(k.x, 64.0)).abs() < 1e-4, "{t:?} {k:?}");
            assert!((t[1] - want(k.y, 48.0)).abs() < 1e-4, "{t:?} {k:?}");
            assert_eq!(t[2], if k.visible { 2.0 } else { 1.0 });
        }
        let mean = m.keypoints.iter().map(|k| k.confidence).sum::<f32>() / m.keypoints.len() as f32;
        let score = v[i]["score"].as_f64().unwrap();
        assert!(
            (score - mean as f64).abs() < 1e-6,
            "score {score} vs mean {mean}"
        );
    }
}

#[test]
fn coco_with_a_pose_names_the_keypoints_and_a_1_based_skeleton() {
    let path = scratch().join("pose.coco.json");
    let mut h = harness(
        &format!("location={} format=coco", path.display()),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    // Until the first EOS the file already holds a valid (empty) result list.
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "[]");
    for i in 0..3 {
        h.push(buffer(i, Some(&meta(i, true)))).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let cat = &v["categories"][0];
    assert_eq!(cat["id"], 1);
    assert_eq!(cat["keypoints"], serde_json::json!(["head", "tail"]));
    assert_eq!(cat["skeleton"], serde_json::json!([[1, 2]]));
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert!(images
        .iter()
        .all(|i| i["width"] == 100 && i["height"] == 50));
    let anns = v["annotations"].as_array().unwrap();
    let results = coco_results(anns, 2, 100.0, 50.0);
    for (j, ((id, kp), a)) in results.iter().zip(anns).enumerate() {
        assert_eq!(*id, j as u64);
        assert_eq!(a["id"], j as u64 + 1, "annotation ids from 1");
        // head at (50, 10) px -> (49.5, 9.5); the tail at x = 150 is outside the frame.
        assert_eq!(kp, &[49.5, 9.5, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(a["num_keypoints"], 1);
        assert_eq!(a["iscrowd"], 0);
    }
    assert_eq!(h.element().unwrap().property::<u64>("records-sent"), 3);
}

fn start_error(props: &str) -> String {
    init();
    let desc = format!("videotestsrc num-buffers=1 ! stablekeypointspublish {props} ! fakesink");
    let pipeline = gst::parse::launch(&desc).unwrap();
    let _ = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .expect("an error or EOS");
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        _ => panic!("{props}: the pipeline ran"),
    }
}

#[test]
fn bad_settings_fail_the_state_change_naming_the_property_and_value() {
    let free = free_port();
    for (props, want) in [
        (
            "location=/nonexistent/dir/k.jsonl".to_string(),
            "location=/nonexistent/dir/k.jsonl",
        ),
        ("".into(), "nothing to publish to"),
        ("location=/tmp/x address=localhost".into(), "both set"),
        (
            "address=mqtt://localhost:99999".into(),
            "address=mqtt://localhost:99999",
        ),
        (
            "address=http://localhost".into(),
            "address=http://localhost",
        ),
        (
            format!("address=127.0.0.1:{free}"),
            &format!("address=127.0.0.1:{free}"),
        ),
        (
            format!("address=mqtts://127.0.0.1:{free} tls-ca-file=/nonexistent/ca.pem"),
            "tls-ca-file=/nonexistent/ca.pem",
        ),
        (
            format!("address=127.0.0.1:{free} topic=a/+/b"),
            "topic=a/+/b",
        ),
    ]
    .iter()
    .map(|(p, w)| (p.clone(), w.to_string()))
    .collect::<Vec<_>>()
    {
        let err = start_error(&props);
        assert!(err.contains(&want), "{props}: {err}");
    }
}
