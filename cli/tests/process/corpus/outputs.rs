//! `train --inputs` over a corpus, and `process --inputs` with a pose and COCO.

use super::*;

#[test]
fn process_takes_a_pose_and_writes_coco_results() {
    let dir = temp_dir("pose");
    let clip = dir.join("a.mp4");
    if !make_clip(&clip, "ball", 5) {
        return;
    }
    // A pose whose one landmark is keypoint 0: rows 0 and 1 of W are the identity.
    let tokens = stablekeypoints::Tokens::load(&tiny_tokens()).unwrap();
    let k = tokens.indices.len();
    let mut weights = vec![vec![0.0, 0.0]; 2 * k];
    weights[0] = vec![1.0, 0.0];
    weights[1] = vec![0.0, 1.0];
    let pose = dir.join("pose.json");
    std::fs::write(
        &pose,
        serde_json::json!({
            "format": "stablekeypoints-pose", "version": 1, "num_keypoints": k,
            "num_landmarks": 1, "token_indices": tokens.indices, "names": ["nose"],
            "skeleton": [], "weights": weights,
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.join("out");
    let o = run({
        let mut c = bin();
        c.args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(tiny_tokens())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(&out)
            .arg("--pose")
            .arg(&pose)
            .args(["--coco", "--no-annotated"]);
        c
    });
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("annotated.mp4").exists());
    let records: Vec<Value> = std::fs::read_to_string(out.join("keypoints.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    for r in &records {
        let (lm, kp) = (&r["pose"][0], &r["keypoints"][0]);
        assert_eq!(lm["name"], "nose");
        for axis in ["nx", "ny"] {
            let (a, b) = (lm[axis].as_f64().unwrap(), kp[axis].as_f64().unwrap());
            assert!((a - b).abs() < 1e-5, "{axis}: {a} vs {b}");
        }
    }
    // COCO with a pose: a keypoint dataset, one annotation per frame, the named landmark.
    let coco = json(&out.join("keypoints.coco.json"));
    assert_eq!(coco["images"].as_array().unwrap().len(), 5);
    assert_eq!(coco["annotations"].as_array().unwrap().len(), 5);
    assert_eq!(
        coco["categories"][0]["keypoints"],
        serde_json::json!(["nose"])
    );
    // A pose fitted with other tokens is refused before anything runs.
    let mut other = json(&pose);
    other["token_indices"] = serde_json::json!((0..k).map(|i| i + 1000).collect::<Vec<_>>());
    std::fs::write(&pose, other.to_string()).unwrap();
    let o = run({
        let mut c = bin();
        c.args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(tiny_tokens())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(dir.join("out2"))
            .arg("--pose")
            .arg(&pose);
        c
    });
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("--pose") && err.contains("pose.json"), "{err}");
    assert!(!dir.join("out2").exists());
}

#[test]
fn train_on_a_corpus_samples_frames_uniformly_over_all_its_videos() {
    let dir = temp_dir("train");
    let clips = dir.join("clips");
    if !(make_clip(&clips.join("a.mp4"), "ball", 10)
        && make_clip(&clips.join("b/b.mp4"), "smpte", 20)
        && make_clip(&clips.join("c.mp4"), "pinwheel", 30))
    {
        return;
    }
    std::fs::write(clips.join("bad.mkv"), "not a video").unwrap();
    let out = dir.join("tokens.safetensors");
    let o = run({
        let mut c = bin();
        c.args(["train", "--model"])
            .arg(tiny_dir())
            .arg("--inputs")
            .arg(&clips)
            .arg("--out")
            .arg(&out)
            .args(crate::TINY_TRAIN)
            .args(["--steps", "2", "--max-frames", "7"]);
        c
    });
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // 60 frames in list order a (0-9), b/b (10-29), c (30-59); 7 spread uniformly:
    // i * 59 / 6 = 0 9 19 29 39 49 59, i.e. a: 0 9; b: 9 19; c: 9 19 29.
    assert!(err.contains("skipped "), "{err}");
    assert!(err.contains("bad.mkv"), "{err}");
    assert!(
        err.contains(
            "sampled 7 of the 60 frames of 3 videos uniformly, from 3 of them (1 skipped):"
        ),
        "{err}"
    );
    for line in ["  a.mp4: 0 9\n", "  b/b.mp4: 9 19\n", "  c.mp4: 9 19 29\n"] {
        assert!(err.contains(line), "{line:?} in {err}");
    }
    assert!(err.contains("on 7 images"), "{err}");
    assert_eq!(
        stablekeypoints::Tokens::load(&out).unwrap().indices.len(),
        4
    );
}
