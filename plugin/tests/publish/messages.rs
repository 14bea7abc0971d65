//! The inference element's former `post-messages` and `json-location` tests, through this
//! element (same assertions).

use super::*;

#[test]
fn messages_and_json_lines_one_per_frame() {
    let n = 5;
    let json = scratch().join("keypoints.jsonl");
    let desc = format!(
        "videotestsrc num-buffers={n} pattern=smpte ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! stablekeypoints {} ! stablekeypointspublish post-messages=true location={} ! fakesink name=sink",
        props(),
        json.display()
    );
    let (msgs, bufs) = run_pipeline(&desc, Some("sink")).unwrap();
    let ours = keypoint_messages(&msgs);
    assert_eq!(ours.len(), n, "one message per frame");
    let mut last_ts = None;
    for (s, b) in ours.iter().zip(&bufs) {
        let ts = s.get::<u64>("timestamp").unwrap();
        assert_eq!(Some(ts), b.pts().map(|t| t.nseconds()));
        assert!(last_ts.is_none_or(|l| ts > l), "timestamps increase");
        last_ts = Some(ts);
        for f in ["stream-time", "running-time", "duration"] {
            assert!(s.get::<u64>(f).unwrap() != u64::MAX, "{f} set");
        }
        let list = s.get::<gst::List>("keypoints").unwrap();
        assert_eq!(list.len(), NUM_KEYPOINTS);
        let meta = read_meta(b);
        for (v, k) in list.iter().zip(&meta.keypoints) {
            let kp = v.get::<gst::Structure>().unwrap();
            assert_eq!(kp.get::<u32>("id").unwrap(), k.id);
            assert_eq!(kp.get::<f32>("nx").unwrap(), k.x);
            assert!((kp.get::<f32>("x").unwrap() - k.x * 64.0).abs() < 1e-3);
        }
    }
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    assert_eq!(lines.len(), n, "one JSON line per frame");
    let mut last_pts = -1i64;
    for (rec, b) in lines.iter().zip(&bufs) {
        let pts = rec["pts"].as_i64().unwrap();
        assert!(pts > last_pts, "pts increase");
        last_pts = pts;
        assert!(rec["stream_time"].is_u64());
        assert_eq!(
            (rec["width"].as_u64(), rec["height"].as_u64()),
            (Some(64), Some(48))
        );
        assert_eq!(rec["inferred"], false);
        let kps = rec["keypoints"].as_array().unwrap();
        let meta = read_meta(b);
        assert_eq!(kps.len(), NUM_KEYPOINTS);
        for (j, k) in kps.iter().zip(&meta.keypoints) {
            assert_eq!(j["id"].as_u64(), Some(k.id as u64));
            assert!((j["nx"].as_f64().unwrap() - k.x as f64).abs() < 1e-6);
            assert!((j["x"].as_f64().unwrap() - k.x as f64 * 64.0).abs() < 1e-3);
            assert!((j["y"].as_f64().unwrap() - k.y as f64 * 48.0).abs() < 1e-3);
            assert!(j["confidence"].is_f64() && j["visible"].is_boolean());
        }
    }
}

#[test]
fn pose_landmarks_in_meta_messages_and_json_equal_the_core_regression() {
    let (n, w, h) = (4usize, 64u32, 48u32);
    let json = scratch().join("pose.jsonl");
    let desc = format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format=RGB,width={w},height={h},framerate=30/1 \
         ! stablekeypoints {} pose={} ! stablekeypointspublish post-messages=true location={} \
         ! fakesink name=sink",
        props(),
        test_pose().display(),
        json.display()
    );
    let (msgs, bufs) = run_pipeline(&desc, Some("sink")).unwrap();
    assert_eq!(bufs.len(), n);
    let ours = keypoint_messages(&msgs);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((ours.len(), lines.len()), (n, n));
    let mut spread = 0.0f64;
    for ((b, msg), rec) in bufs.iter().zip(&ours).zip(&lines) {
        let meta = read_meta(b);
        let pose = meta.pose.as_ref().expect("pose metadata");
        let names: Vec<&str> = pose.landmarks.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, POSE_NAMES);
        assert_eq!(pose.connections, [[0, 1], [1, 2], [2, 3]]);
        let (core, hand) = expected_landmarks(&meta);
        let msg_pose = msg.get::<gst::List>("pose").unwrap();
        let skeleton: Vec<i32> = msg
            .get::<gst::Array>("skeleton")
            .unwrap()
            .iter()
            .map(|v| v.get::<i32>().unwrap())
            .collect();
        assert_eq!(skeleton, [0, 1, 1, 2, 2, 3]);
        assert_eq!(rec["skeleton"], serde_json::json!([[0, 1], [1, 2], [2, 3]]));
        let rec_pose = rec["pose"].as_array().unwrap();
        assert_eq!((msg_pose.len(), rec_pose.len()), (4, 4));
        for (j, l) in pose.landmarks.iter().enumerate() {
            let (x, y) = (l.x as f64, l.y as f64);
            assert!(
                (x - core[j][0]).abs() < 1e-6 && (y - core[j][1]).abs() < 1e-6,
                "landmark {j}: {l:?} vs core {:?}",
                core[j]
            );
            assert!(
                (x - hand[j].0).abs() < 1e-6 && (y - hand[j].1).abs() < 1e-6,
                "landmark {j}: {l:?} vs hand {:?}",
                hand[j]
            );
            let m = msg_pose.as_slice()[j].get::<gst::Structure>().unwrap();
            assert_eq!(m.name(), "landmark");
            assert_eq!(m.get::<&str>("name").unwrap(), POSE_NAMES[j]);
            assert_eq!(
                (m.get::<f32>("nx").unwrap(), m.get::<f32>("ny").unwrap()),
                (l.x, l.y)
            );
            assert!((m.get::<f32>("x").unwrap() - l.x * w as f32).abs() < 1e-3);
            assert!((m.get::<f32>("y").unwrap() - l.y * h as f32).abs() < 1e-3);
            let r = &rec_pose[j];
            assert_eq!(r["name"], POSE_NAMES[j]);
            assert!((r["nx"].as_f64().unwrap() - x).abs() < 1e-6);
            assert!((r["ny"].as_f64().unwrap() - y).abs() < 1e-6);
            assert!((r["x"].as_f64().unwrap() - x * w as f64).abs() < 1e-3);
            assert!((r["y"].as_f64().unwrap() - y * h as f64).abs() < 1e-3);
        }
        spread += (pose.landmarks[0].x - pose.landmarks[1].x).abs() as f64;
    }
    // The landmarks move with the keypoints (not a constant the regressor fell back to).
    assert!(spread > 0.0);
}

#[test]
fn frame_index_timestamp_keeps_the_source_index_after_lost_frames() {
    // Issue 24, 10: frames lost upstream (a damaged file) shifted every later record's
    // `frame` down. With frame-index=timestamp a record's `frame` is the source's: the
    // stream time (here 40 ms a frame: 25 fps) times the caps' frame rate. Frames 3 to 5
    // are lost; frame 7 carries no keypoints (no record, its index still used).
    let metas: Vec<FrameKeypoints> = (0..9).map(|i| meta(i, false)).collect();
    let sent = [0u32, 1, 2, 6, 7, 8];
    let run = |name: &str, props: &str, caps: &str| -> Vec<(u64, Option<u64>)> {
        let path = scratch().join(format!("index-{name}.jsonl"));
        let mut h = harness(&format!("location={} {props}", path.display()), caps);
        for &i in &sent {
            let m = (i != 7).then(|| &metas[i as usize]);
            h.push(buffer(i, m)).unwrap();
            h.pull().unwrap();
        }
        assert!(h.push_event(gst::event::Eos::new()));
        lines(&path).iter().map(|r| (r.frame, r.pts)).collect()
    };
    let ms = |i: u64| Some(40_000_000 * i);
    let caps = "video/x-raw,format=RGB,width=100,height=50,framerate=25/1";
    assert_eq!(
        run("timestamp", "frame-index=timestamp", caps),
        [0, 1, 2, 6, 8].map(|i| (i, ms(i))),
        "the source's indices"
    );
    // The default counts buffers, as before.
    assert_eq!(
        run("count", "", caps),
        [(0, ms(0)), (1, ms(1)), (2, ms(2)), (3, ms(6)), (5, ms(8))]
    );
    // Without a frame rate (a variable-rate stream) there is no index to read: counted.
    let vfr = "video/x-raw,format=RGB,width=100,height=50,framerate=0/1";
    assert_eq!(
        run("vfr", "frame-index=timestamp", vfr),
        [(0, ms(0)), (1, ms(1)), (2, ms(2)), (3, ms(6)), (5, ms(8))]
    );
}

/// A COCO file is rewritten every few seconds before EOS: a pipeline killed without one
/// (SIGTERM, a crash) leaves the results of all but its last seconds, never a `[]` that
/// reads as "no frames".
#[test]
fn a_coco_file_keeps_the_frames_of_a_run_stopped_without_eos() {
    let path = scratch().join("killed.coco.json");
    let mut h = harness(
        &format!("location={} format=coco", path.display()),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    let frames_in = |path: &Path| {
        let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let mut ids: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["image_id"].as_u64().unwrap())
            .collect();
        ids.dedup();
        ids.len()
    };
    for i in 0..3 {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
    }
    assert_eq!(frames_in(&path), 0, "not yet rewritten");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    h.push(buffer(3, Some(&meta(3, false)))).unwrap();
    assert_eq!(frames_in(&path), 4);
    h.push(buffer(4, Some(&meta(4, false)))).unwrap();
    // Dropped without an EOS, as a killed process leaves it.
    drop(h);
    assert!(frames_in(&path) >= 4);
}
