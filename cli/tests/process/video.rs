//! `train --input VIDEO` and `process` on the clips: frames sampled uniformly, one JSON line
//! per frame and a playable MP4, COCO and a pose, errors that name the file and the missing
//! tool, and every decoded raw format.

use super::*;

/// The raw format decodebin gives for `path` (to be sure a test decodes what it says).
fn decoded_format(path: &Path) -> String {
    let caps = first_decoded_caps(path);
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "video/x-raw", "{}: {caps}", path.display());
    s.get::<String>("format").unwrap()
}

#[test]
fn train_on_a_video_samples_frames_uniformly_over_it() {
    let dir = temp_dir("train");
    let Some(clip) = make_clip(&dir) else { return };
    let tokens = dir.join("tokens.safetensors");
    let out = train_cmd(&clip, &tokens)
        .args(["--max-frames", "10", "--seed", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(tokens.is_file(), "{err}");
    assert!(
        err.contains(
            "sampled 10 of 30 frames (96x72) uniformly over the video: 0 3 6 9 12 16 19 22 25 29"
        ),
        "{err}"
    );
    assert!(err.contains("on 10 images"), "{err}");
}

#[test]
fn process_trains_then_writes_one_json_line_per_frame_and_a_playable_mp4() {
    let dir = temp_dir("process");
    let Some(clip) = make_clip(&dir) else { return };
    let run = |out_dir: &Path, extra: &[&str]| {
        process_cmd(tiny_dir(), &clip, out_dir)
            .args(["--no-noise", "--seed", "5", "--coco"])
            .args(extra)
            .output()
            .unwrap()
    };

    // No tokens: trains on the video first.
    let d1 = dir.join("out1");
    let out = run(&d1, &TINY_TRAIN);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("training 16 tokens"), "{err}");
    assert!(d1.join("tokens.safetensors").is_file());
    let lines = read_jsonl(&d1.join("keypoints.jsonl"));
    assert_eq!(lines.len(), FRAMES, "one JSON line per frame");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["frame"], i, "{l}");
        assert!(l["pts"].is_u64(), "{l}");
        assert_eq!(
            (l["width"].as_u64(), l["height"].as_u64()),
            (Some(96), Some(72))
        );
        assert_eq!(l["keypoints"].as_array().unwrap().len(), 4, "{l}");
    }
    assert_eq!(decoded_frames(&d1.join("annotated.mp4")), FRAMES);
    coco_results_are_the_json_lines(&read_json(&d1.join("keypoints.coco.json")), &lines);

    // With tokens: no training, the same keypoints; with a pose fitted with them, the
    // landmarks in the JSON lines and a COCO keypoint dataset.
    let d2 = dir.join("out2");
    let tokens = d1.join("tokens.safetensors");
    let pose = dir.join("pose.json");
    common::write_pose(&pose, &stablekeypoints::Tokens::load(&tokens).unwrap());
    let out = run(
        &d2,
        &[
            "--tokens",
            tokens.to_str().unwrap(),
            "--pose",
            pose.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("training"), "{err}");
    assert!(!d2.join("tokens.safetensors").exists());
    let again = read_jsonl(&d2.join("keypoints.jsonl"));
    assert_eq!(again.len(), FRAMES);
    for (a, b) in lines.iter().zip(&again) {
        assert_eq!(a["keypoints"], b["keypoints"]);
    }
    assert_eq!(decoded_frames(&d2.join("annotated.mp4")), FRAMES);
    coco_dataset_has_the_hand_computed_landmarks(
        &read_json(&d2.join("keypoints.coco.json")),
        &again,
    );
}

fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap()
}

/// COCO keypoint results, one per frame, the JSON `lines`' keypoints in COCO's pixel-index
/// coordinates (x - 0.5), by COCO's field rules.
fn coco_results_are_the_json_lines(coco: &serde_json::Value, lines: &[serde_json::Value]) {
    let f = num;
    let results = common::check_results(coco, 4, &[(96, 72); FRAMES]);
    assert_eq!(results.len(), FRAMES);
    for (i, (res, l)) in results.iter().zip(lines).enumerate() {
        assert_eq!(coco[i]["image_id"], i);
        for (t, kp) in res.iter().zip(l["keypoints"].as_array().unwrap()) {
            assert!(
                (t.0 - (f(&kp["x"]) - 0.5).clamp(0.0, 95.0)).abs() < 1e-3,
                "{kp}"
            );
            assert!(
                (t.1 - (f(&kp["y"]) - 0.5).clamp(0.0, 71.0)).abs() < 1e-3,
                "{kp}"
            );
            assert_eq!(t.2, 2);
        }
    }
}

/// With a pose: a COCO keypoint dataset whose landmarks, and those of the JSON lines `again`,
/// are the hand-computed ones.
fn coco_dataset_has_the_hand_computed_landmarks(
    coco: &serde_json::Value,
    again: &[serde_json::Value],
) {
    let f = num;
    let (cat, anns) = common::check_dataset(coco);
    assert_eq!(cat["keypoints"], serde_json::json!(common::POSE_NAMES));
    assert_eq!(cat["skeleton"], serde_json::json!([[1, 2], [2, 3]]));
    assert_eq!(anns.len(), FRAMES);
    for (ann, l) in anns.iter().zip(again) {
        let norm: Vec<(f64, f64)> = l["keypoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kp| (f(&kp["nx"]), f(&kp["ny"])))
            .collect();
        let want = common::hand_landmarks(&norm);
        for ((t, lm), (x, y)) in ann.iter().zip(l["pose"].as_array().unwrap()).zip(want) {
            assert!(
                (f(&lm["nx"]) - x).abs() < 1e-5 && (f(&lm["ny"]) - y).abs() < 1e-5,
                "{lm}"
            );
            let (px, py) = (f(&lm["x"]), f(&lm["y"]));
            if (0.0..96.0).contains(&px) && (0.0..72.0).contains(&py) {
                assert!(
                    (t.0 - (px - 0.5).max(0.0)).abs() < 1e-3
                        && (t.1 - (py - 0.5).max(0.0)).abs() < 1e-3
                );
                assert_eq!(t.2, 2);
            } else {
                assert_eq!(*t, (0.0, 0.0, 0));
            }
        }
    }
}

#[test]
fn video_errors_name_the_file_and_the_missing_tool() {
    let dir = temp_dir("errors");
    let bad = dir.join("not-a-video.mp4");
    std::fs::write(&bad, "hello").unwrap();
    let tokens = dir.join("t.safetensors");
    let train = |input: &Path| train_cmd(input, &tokens);
    if gst(&["--version"]).is_some() {
        let out = train(&bad).output().unwrap();
        assert_clean_error(&out, &["not-a-video.mp4", "cannot decode"]);
    }
    // Without gst-launch-1.0 on PATH the same error: decoding needs no command line tool
    // (it used to say "gst-launch-1.0 not found"; see train_on_a_video_needs_no_gst_launch).
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = train(&bad).env("PATH", &empty).output().unwrap();
    assert_clean_error(&out, &["not-a-video.mp4", "cannot decode"]);
    // The element that failed is named.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GStreamer element"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // process: a missing input, and a plugin that is not there.
    let out = bin()
        .args(["process", "--model"])
        .arg(tiny_dir())
        .args(["--input", "/nonexistent/clip.mp4", "--out-dir"])
        .arg(dir.join("o"))
        .output()
        .unwrap();
    assert_clean_error(&out, &["/nonexistent/clip.mp4"]);
    let out = process_cmd(tiny_dir(), &bad, dir.join("o"))
        .env("SKP_PLUGIN_PATH", "/nonexistent/libgststablekeypoints.so")
        .output()
        .unwrap();
    assert_clean_error(
        &out,
        &["SKP_PLUGIN_PATH", "/nonexistent/libgststablekeypoints.so"],
    );
    assert!(
        !dir.join("o").exists(),
        "nothing is written before the checks pass"
    );
}

#[test]
fn train_on_a_video_needs_no_gst_launch() {
    let dir = temp_dir("no-gst-launch");
    let Some(clip) = make_clip(&dir) else { return };
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let tokens = dir.join("tokens.safetensors");
    let out = train_cmd(&clip, &tokens)
        .env("PATH", &empty)
        .args(["--max-frames", "10", "--seed", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("sampled 10 of 30 frames (96x72) uniformly over the video"),
        "{err}"
    );
    assert_eq!(
        stablekeypoints::Tokens::load(&tokens)
            .unwrap()
            .indices
            .len(),
        4
    );
}

/// Issue 12: whatever raw format the decoder outputs, `videoconvert ! videoscale` before the
/// appsink (train) and before the element (process) takes it.
#[test]
fn any_decoded_raw_format_trains_and_processes() {
    let dir = temp_dir("formats");
    let h264 = ["x264enc", "!", "mp4mux"];
    let raw = ["matroskamux"];
    let cases: [(&str, &str, &[&str], &str); 4] = [
        // x264enc without a caps filter on 4:4:4 input gives High 4:4:4.
        ("y444.mp4", "Y444", &h264, "Y444"),
        ("i420-10.mp4", "I420_10LE", &h264, "I420_10LE"),
        ("gray.mkv", "GRAY8", &raw, "GRAY8"),
        ("yuy2.mkv", "YUY2", &raw, "YUY2"),
    ];
    let mut clips = Vec::new();
    for (name, format, encode, decoded) in cases {
        let Some(clip) = make_clip_as(&dir, name, format, encode) else {
            return;
        };
        assert_eq!(decoded_format(&clip), decoded, "{name}");
        let tokens = dir.join(format!("{name}.safetensors"));
        let out = train_cmd(&clip, &tokens)
            .args(["--steps", "1", "--max-frames", "4"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(
            err.contains("sampled 4 of 30 frames (96x72) uniformly over the video: 0 9 19 29"),
            "{name}: {err}"
        );
        clips.push((name, clip));
    }
    // The element's pipeline on the 4:4:4 and the grey clip, with the tiny model's tokens.
    for (name, clip) in clips
        .iter()
        .filter(|(n, _)| n.starts_with("y444") || n.starts_with("gray"))
    {
        let out_dir = dir.join(format!("out-{name}"));
        let out = process_cmd(tiny_dir(), clip, &out_dir)
            .arg("--tokens")
            .arg(tiny_dir().join("tokens.safetensors"))
            .args(["--no-noise"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        let lines = std::fs::read_to_string(out_dir.join("keypoints.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), FRAMES, "{name}");
        assert_eq!(
            decoded_frames(&out_dir.join("annotated.mp4")),
            FRAMES,
            "{name}"
        );
        // Progress without a terminal: plain lines, frames done of the total.
        assert!(
            err.contains(&format!("frame {FRAMES}/{FRAMES}")),
            "{name}: {err}"
        );
        assert!(
            !err.contains('\r') && !err.contains("\x1b["),
            "{name}: {err:?}"
        );
    }
}
