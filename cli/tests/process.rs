//! Video input (issue 4, issue 12): `train --input VIDEO` and `process` on synthetic clips
//! made with gst-launch-1.0 (videotestsrc pattern=ball, 30 frames; H.264 in MP4 as I420,
//! Y444 and 10-bit, raw GRAY8 in Matroska), with tiny training settings so that everything
//! runs in seconds; progress lines without a terminal; and their error messages.
//!
//! The CLI decodes in process (GStreamer linked, the element registered statically): the
//! tests only need gst-launch-1.0 with x264enc to make the clips (GStreamer's tools and
//! -ugly plugins). They say so and return early when it is truly absent (CI must not skip).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::clips::clip_at_times;

const FRAMES: usize = 30;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stablekeypoints"))
}

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tiny-sd1")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("skp-process-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gst(args: &[&str]) -> Option<Output> {
    Command::new("gst-launch-1.0").args(args).output().ok()
}

/// The synthetic clip, or None (with a message) when GStreamer cannot make it.
fn make_clip(dir: &Path) -> Option<PathBuf> {
    make_clip_as(dir, "ball.mp4", "I420", &["x264enc", "!", "mp4mux"])
}

/// A clip whose frames are `format` before `encode` (elements, `!`-separated).
fn make_clip_as(dir: &Path, name: &str, format: &str, encode: &[&str]) -> Option<PathBuf> {
    let clip = dir.join(name);
    let loc = format!("location={}", clip.display());
    let num = format!("num-buffers={FRAMES}");
    let caps = format!("video/x-raw,format={format}");
    let mut args = vec![
        "-q",
        "videotestsrc",
        "pattern=ball",
        &num,
        "!",
        "video/x-raw,width=96,height=72,framerate=30/1",
        "!",
        "videoconvert",
        "!",
        &caps,
        "!",
    ];
    args.extend_from_slice(encode);
    args.extend(["!", "filesink", &loc]);
    let out = gst(&args);
    match out {
        Some(o) if o.status.success() => Some(clip),
        Some(o) => {
            let msg = format!(
                "gst-launch-1.0 cannot encode the test clip (x264enc missing?): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            None
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "gst-launch-1.0 is not installed"
            );
            eprintln!("SKIPPED: gst-launch-1.0 is not installed");
            None
        }
    }
}

/// The raw format decodebin gives for `path` (to be sure a test decodes what it says), read
/// from the first decoded sample in process: `gst-launch-1.0 -v` can reach EOS before it
/// prints the sink's caps on a loaded machine.
fn decoded_format(path: &Path) -> String {
    use gst::prelude::*;
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! appsink name=sink sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample();
    pipeline.set_state(gst::State::Null).unwrap();
    let sample = sample.unwrap_or_else(|e| panic!("no decoded frame in {}: {e}", path.display()));
    let caps = sample.caps().expect("a decoded sample has caps");
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "video/x-raw", "{}: {caps}", path.display());
    s.get::<String>("format").unwrap()
}

/// Tiny training settings: a few steps on small maps.
const TINY_TRAIN: [&str; 14] = [
    "--steps",
    "3",
    "--batch-size",
    "1",
    "--num-tokens",
    "16",
    "--num-candidates",
    "8",
    "--num-keypoints",
    "4",
    "--num-indices",
    "4",
    "--map-res",
    "16",
];

/// Frames of a video, counted by decoding it.
fn decoded_frames(path: &Path) -> usize {
    let loc = format!("location={}", path.display());
    let out = gst(&[
        "-v",
        "filesrc",
        &loc,
        "!",
        "decodebin",
        "!",
        "fakesink",
        "name=count",
        "silent=false",
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "{} does not decode: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("count: last-message = chain"))
        .count()
}

fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{err}");
    for n in needles {
        assert!(last.contains(n), "error {last:?} does not mention {n:?}");
    }
}

#[test]
fn train_on_a_video_samples_frames_uniformly_over_it() {
    let dir = temp_dir("train");
    let Some(clip) = make_clip(&dir) else { return };
    let tokens = dir.join("tokens.safetensors");
    let out = bin()
        .args(["train", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(&clip)
        .arg("--out")
        .arg(&tokens)
        .args(TINY_TRAIN)
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
        bin()
            .args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(out_dir)
            .args(["--no-noise", "--seed", "5", "--coco"])
            .args(extra)
            .output()
            .unwrap()
    };
    let read_jsonl = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
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
    // COCO keypoint results, one per frame, the JSON lines' keypoints in COCO's pixel-index
    // coordinates (x - 0.5), by COCO's field rules.
    let read_json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let coco = read_json(&d1.join("keypoints.coco.json"));
    let results = common::check_results(&coco, 4, &[(96, 72); FRAMES]);
    assert_eq!(results.len(), FRAMES);
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    for (i, (res, l)) in results.iter().zip(&lines).enumerate() {
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
    let coco = read_json(&d2.join("keypoints.coco.json"));
    let (cat, anns) = common::check_dataset(&coco);
    assert_eq!(cat["keypoints"], serde_json::json!(common::POSE_NAMES));
    assert_eq!(cat["skeleton"], serde_json::json!([[1, 2], [2, 3]]));
    assert_eq!(anns.len(), FRAMES);
    for (ann, l) in anns.iter().zip(&again) {
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
    let train = |input: &Path| {
        let mut c = bin();
        c.args(["train", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&tokens)
            .args(TINY_TRAIN);
        c
    };
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
    let out = bin()
        .args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(&bad)
        .arg("--out-dir")
        .arg(dir.join("o"))
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
    let out = bin()
        .env("PATH", &empty)
        .args(["train", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(&clip)
        .arg("--out")
        .arg(&tokens)
        .args(TINY_TRAIN)
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
        let out = bin()
            .args(["train", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(&clip)
            .arg("--out")
            .arg(&tokens)
            .args(TINY_TRAIN)
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
        let out = bin()
            .args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(clip)
            .arg("--out-dir")
            .arg(&out_dir)
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

/// The files of `dir` and their bytes; the run's lock file (`.lock`, which names the last
/// run that held the folder) is not an output.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != ".lock")
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn process_with_tokens(clip: &Path, out_dir: &Path, model: &Path, tokens: &Path) -> Output {
    bin()
        .args(["process", "--model"])
        .arg(model)
        .arg("--input")
        .arg(clip)
        .arg("--out-dir")
        .arg(out_dir)
        .arg("--tokens")
        .arg(tokens)
        .output()
        .unwrap()
}

#[test]
fn process_checks_model_and_tokens_before_touching_earlier_outputs() {
    // Issue 13: a typo in --tokens (or --model) over an earlier result deleted
    // keypoints.jsonl and truncated annotated.mp4, and the error named the video.
    let dir = temp_dir("earlier");
    let Some(clip) = make_clip(&dir) else { return };
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = snapshot(&result);
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["annotated.mp4", "keypoints.jsonl"]);
    let typo = dir.join("typo.safetensors");
    for (model, tokens, named) in [
        (tiny_dir(), typo.clone(), "typo.safetensors"),
        (dir.join("no-model"), tokens.clone(), "no-model"),
    ] {
        let out = process_with_tokens(&clip, &result, &model, &tokens);
        assert_clean_error(&out, &[named]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("running"),
            "checked before the pipeline: {err}"
        );
        assert!(
            !err.contains("ball.mp4"),
            "the file at fault is named, not the video: {err}"
        );
        assert_eq!(
            snapshot(&result),
            before,
            "earlier outputs untouched ({named})"
        );
    }
    // An --out-dir that is a file.
    let file = dir.join("file");
    std::fs::write(&file, "x").unwrap();
    let out = process_with_tokens(&clip, &file, &tiny_dir(), &tokens);
    assert_clean_error(&out, &["--out-dir", "is a file"]);
}

#[test]
fn a_truncated_video_is_an_error_not_a_short_success() {
    // Issue 13: `process` reported "wrote ... (67 frames)" and exited 0 on a clip of 120
    // frames cut in the middle. Now the frames decoded are checked against the frames the
    // file declares (and the lines and encoded frames against the frames decoded).
    let dir = temp_dir("truncated");
    let Some(clip) = make_clip_as(
        &dir,
        "faststart.mp4",
        "I420",
        &["x264enc", "!", "mp4mux", "faststart=true"],
    ) else {
        return;
    };
    let bytes = std::fs::read(&clip).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    // The whole clip first: the earlier result.
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = snapshot(&result);
    let out = process_with_tokens(&cut, &result, &tiny_dir(), &tokens);
    assert_clean_error(
        &out,
        &[
            "cut.mp4",
            "decoding ended at",
            "of the 1.000 s the file declares",
            "nothing was written",
        ],
    );
    assert_eq!(snapshot(&result), before);
}

#[test]
fn an_audio_track_longer_than_the_video_is_not_a_truncation() {
    // A container's duration is its longest stream's: 30 frames (1 s) with 2 s of AAC
    // declare 2 s, which read as 61 frames refused a complete file as truncated.
    let dir = temp_dir("audio");
    let clip = dir.join("av.mp4");
    let pipeline = format!(
        "-q videotestsrc pattern=ball num-buffers={FRAMES} \
         ! video/x-raw,width=96,height=72,framerate=30/1 ! videoconvert \
         ! video/x-raw,format=I420 ! x264enc ! queue ! mux. \
         audiotestsrc num-buffers=94 samplesperbuffer=1024 ! audio/x-raw,rate=48000 \
         ! avenc_aac ! queue ! mux. mp4mux name=mux ! filesink location={}",
        clip.display()
    );
    let args: Vec<&str> = pipeline.split_whitespace().collect();
    match gst(&args) {
        Some(o) if o.status.success() => {}
        o => {
            let msg = format!(
                "gst-launch-1.0 cannot make the clip with audio (avenc_aac missing?): {:?}",
                o.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return;
        }
    }
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(result.join("keypoints.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), FRAMES);
    assert_eq!(decoded_frames(&result.join("annotated.mp4")), FRAMES);
}

/// Sends `signal` to `process` once it runs frames through the element: it must stop,
/// exit with 128 + the signal, leave the earlier outputs as they were and no temporaries.
fn interrupted(signal: &str, code: i32) {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir(&format!("signal-{signal}"));
    let Some(clip) = make_clip(&dir) else { return };
    let long = dir.join("long.mp4");
    let loc = format!("location={}", long.display());
    let made = gst(&[
        "-q",
        "videotestsrc",
        "pattern=ball",
        "num-buffers=600",
        "!",
        "video/x-raw,width=96,height=72,framerate=30/1",
        "!",
        "videoconvert",
        "!",
        "video/x-raw,format=I420",
        "!",
        "x264enc",
        "!",
        "mp4mux",
        "!",
        "filesink",
        &loc,
    ])
    .unwrap();
    assert!(made.status.success());
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = snapshot(&result);
    let mut child = bin()
        .args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(&long)
        .arg("--out-dir")
        .arg(&result)
        .arg("--tokens")
        .arg(&tokens)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut err = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        err += &l;
        err.push('\n');
        if l.starts_with("running") {
            break;
        }
    }
    // Into the frames, then the signal.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap()
        .success());
    for l in lines {
        err += &l.unwrap();
        err.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(code), "{err}");
    assert!(
        err.contains(&format!("interrupted by SIG{signal}")),
        "{err}"
    );
    assert!(!err.contains("wrote"), "{err}");
    assert_eq!(
        snapshot(&result),
        before,
        "earlier outputs as they were, no temporaries"
    );
}

#[test]
fn sigint_stops_process_and_keeps_the_earlier_outputs() {
    interrupted("INT", 130);
}

#[test]
fn sigterm_stops_process_and_keeps_the_earlier_outputs() {
    interrupted("TERM", 143);
}

/// Runs `cmd` to its end, or kills it after `secs` seconds and fails: the cases below used
/// to wait forever.
fn output_within(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = std::thread::spawn(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let _ = pipes.1.read_to_end(&mut err);
        let _ = pipes.0.read_to_end(&mut out);
        (out, err)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (_, err) = readers.join().unwrap();
            panic!(
                "{cmd:?} still running after {secs} s: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (stdout, stderr) = readers.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A raw GRAY8 clip of `w x h` pixels in Matroska (no encoder has a minimum size).
fn tiny_clip(dir: &Path, w: usize, h: usize) -> Option<PathBuf> {
    let caps = format!("video/x-raw,width={w},height={h},framerate=30/1");
    let clip = dir.join(format!("v{w}x{h}.mkv"));
    let loc = format!("location={}", clip.display());
    let num = format!("num-buffers={FRAMES}");
    let out = gst(&[
        "-q",
        "videotestsrc",
        "pattern=ball",
        &num,
        "!",
        &caps,
        "!",
        "videoconvert",
        "!",
        "video/x-raw,format=GRAY8",
        "!",
        "matroskamux",
        "!",
        "filesink",
        &loc,
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(clip)
}

/// The size of the first decoded frame of `path`.
fn decoded_size(path: &Path) -> (i32, i32) {
    use gst::prelude::*;
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! appsink name=sink sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample();
    pipeline.set_state(gst::State::Null).unwrap();
    let caps = sample.unwrap().caps().unwrap().to_owned();
    let s = caps.structure(0).unwrap();
    (s.get("width").unwrap(), s.get("height").unwrap())
}

#[test]
fn videos_under_16_pixels_are_processed_with_the_annotated_video_scaled_up() {
    // Issue 24 (1): below 16 pixels the annotated branch (H.264 in MP4) could not link, the
    // video went nowhere and `process` never ended.
    let dir = temp_dir("tiny");
    let tokens = tiny_dir().join("tokens.safetensors");
    for ((w, h), encoded) in [((2, 2), (16, 16)), ((640, 8), (1280, 16))] {
        let Some(clip) = tiny_clip(&dir, w, h) else {
            return;
        };
        let result = dir.join(format!("out{w}x{h}"));
        let out = output_within(
            bin()
                .args(["process", "--model"])
                .arg(tiny_dir())
                .arg("--input")
                .arg(&clip)
                .arg("--out-dir")
                .arg(&result)
                .arg("--tokens")
                .arg(&tokens),
            120,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{w}x{h}: {err}");
        assert!(
            err.contains(&format!(
                "the annotated video is {}x{}",
                encoded.0, encoded.1
            )),
            "{err}"
        );
        let lines = std::fs::read_to_string(result.join("keypoints.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), FRAMES, "{w}x{h}");
        let annotated = result.join("annotated.mp4");
        assert_eq!(decoded_frames(&annotated), FRAMES, "{w}x{h}");
        assert_eq!(decoded_size(&annotated), encoded);
    }
}

#[test]
fn a_file_without_video_says_so_at_once() {
    // Issue 24 (2): `train --input` on an audio-only file waited forever at 0% CPU, and
    // `process` gave up after 60 s ("no video frame within 60 s").
    let dir = temp_dir("audio-only");
    let clip = dir.join("audio.mp4");
    let loc = format!("location={}", clip.display());
    match gst(&[
        "-q",
        "audiotestsrc",
        "num-buffers=40",
        "!",
        "avenc_aac",
        "!",
        "mp4mux",
        "!",
        "filesink",
        &loc,
    ]) {
        Some(o) if o.status.success() => {}
        o => {
            let msg = format!("gst-launch-1.0 cannot make an AAC file: {o:?}");
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return;
        }
    }
    let tokens = tiny_dir().join("tokens.safetensors");
    let started = std::time::Instant::now();
    let train = output_within(
        bin()
            .args(["train", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(&clip)
            .arg("--out")
            .arg(dir.join("t.safetensors"))
            .args(TINY_TRAIN),
        30,
    );
    assert_clean_error(&train, &["audio.mp4", "has no video stream", "audio/x-raw"]);
    let process = output_within(
        bin()
            .args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(dir.join("out"))
            .arg("--tokens")
            .arg(&tokens),
        30,
    );
    assert_clean_error(&process, &["audio.mp4", "has no video stream"]);
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn no_output_replaces_an_input_and_one_run_per_out_dir() {
    // Issue 24 (5, 6): `train --input clip.mp4 --out clip.mp4` replaced the video with the
    // tokens; `process --input OUT/annotated.mp4 --out-dir OUT` replaced its own input; and
    // two runs into one folder both exited 0, the last replacing the other's outputs.
    let dir = temp_dir("inputs");
    let Some(clip) = make_clip(&dir) else { return };
    let before = std::fs::read(&clip).unwrap();
    let out = bin()
        .args(["train", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(&clip)
        .arg("--out")
        .arg(dir.join("./ball.mp4"))
        .args(TINY_TRAIN)
        .output()
        .unwrap();
    assert_clean_error(&out, &["--out", "is the input --input", "ball.mp4"]);
    assert_eq!(std::fs::read(&clip).unwrap(), before);

    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let annotated = result.join("annotated.mp4");
    // The annotated video as the input, by its name and through a link.
    let link = dir.join("link.mp4");
    std::os::unix::fs::symlink(&annotated, &link).unwrap();
    for input in [&annotated, &link] {
        let before = snapshot(&result);
        let out = process_with_tokens(input, &result, &tiny_dir(), &tokens);
        assert_clean_error(
            &out,
            &["--out-dir", "annotated.mp4", "is the input --input"],
        );
        assert_eq!(snapshot(&result), before);
    }

    // A second run while one holds the folder stops at once, naming the first.
    let first = std::process::Command::new("flock")
        .arg(result.join(".lock"))
        .args([
            "sh",
            "-c",
            "echo process 4242 on elsewhere > \"$0\"; sleep 30",
        ])
        .arg(result.join(".lock"))
        .spawn();
    let Ok(mut first) = first else {
        eprintln!("SKIPPED: flock(1) is not installed");
        return;
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = output_within(
        bin()
            .args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(&result)
            .arg("--tokens")
            .arg(&tokens),
        30,
    );
    let _ = first.kill();
    let _ = first.wait();
    assert_clean_error(
        &out,
        &[
            "--out-dir",
            "in use by another run",
            "process 4242 on elsewhere",
        ],
    );
}

/// The `frame` and `stream_time` (the time in the source) of every line of a keypoints
/// file.
fn frames_and_times(jsonl: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["frame"].as_u64().unwrap(),
                v["stream_time"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_variable_frame_rate_video_is_processed_frame_by_frame() {
    // Issue 24, 9: a file without a frame rate (screen recorders, phones) was refused as
    // "truncated or damaged" and every output discarded: the decoder gives its last frame
    // no duration, so decoding "ended" a frame short of what the file declares. Frames 30
    // ms to 1 s apart, the last one held for a second. Matroska says framerate=0/1; an
    // MP4 of such frames reads as 1000000000/1, a rate that is no frame rate either.
    let times: Vec<u64> = vec![
        0, 30, 70, 100, 400, 430, 1430, 1460, 1500, 1800, 1830, 1870, 2900,
    ];
    for (name, mux) in [("vfr.mkv", "matroskamux"), ("vfr.mp4", "mp4mux")] {
        let dir = temp_dir(&format!("vfr-{mux}"));
        let Some(clip) = clip_at_times(&dir.join(name), &times, 1000, (0, 1), mux) else {
            return;
        };
        let result = dir.join("result");
        let tokens = tiny_dir().join("tokens.safetensors");
        let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(
            !err.contains("missing"),
            "{name}: no frame is missing: {err}"
        );
        let got = frames_and_times(&result.join("keypoints.jsonl"));
        let want: Vec<(u64, u64)> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| (i as u64, t * 1_000_000))
            .collect();
        assert_eq!(got, want, "{name}: every frame, counted, at its own time");
        // Each frame in the annotated video too (mp4mux used to drop the last one).
        assert_eq!(
            decoded_frames(&result.join("annotated.mp4")),
            times.len(),
            "{name}"
        );
    }
}

#[test]
fn frames_lost_in_the_middle_are_reported_and_later_frames_keep_their_index() {
    // Issue 24, 10: 15 of 120 frames missing in the middle of a file: `process` said
    // nothing and numbered the frames after the gap 40, 41, ... instead of 55, 56, ...
    let dir = temp_dir("gap");
    let ms = |i: u64| (i * 1000).div_ceil(30);
    let kept: Vec<u64> = (0..40).chain(55..120).collect();
    let times: Vec<u64> = kept.iter().map(|&i| ms(i)).collect();
    let Some(clip) = clip_at_times(&dir.join("gap.mp4"), &times, 33, (30, 1), "mp4mux") else {
        return;
    };
    let result = dir.join("result");
    let tokens = tiny_dir().join("tokens.safetensors");
    let out = process_with_tokens(&clip, &result, &tiny_dir(), &tokens);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("gap.mp4: frames 40 to 54 (15 frames, 1.333 s to 1.833 s) are missing"),
        "no warning naming the lost frames: {err}"
    );
    let got = frames_and_times(&result.join("keypoints.jsonl"));
    assert_eq!(got.len(), kept.len());
    for ((frame, pts), (&i, &t)) in got.iter().zip(kept.iter().zip(&times)) {
        assert_eq!(*frame, i, "the source's frame index");
        // The muxer's time scale rounds: within a millisecond of the source's time.
        assert!(
            pts.abs_diff(t * 1_000_000) <= 1_000_000,
            "frame {i}: at {pts} ns"
        );
    }
    assert_eq!(decoded_frames(&result.join("annotated.mp4")), kept.len());
}

/// A file cut so that its end falls within the end-of-file tolerance (an AVI cut at half
/// still declares the frames it indexes) is processed with a warning naming the frames
/// decoded against those declared; the whole file gets none.
#[test]
fn a_file_a_frame_short_of_what_it_declares_is_warned_about() {
    let dir = temp_dir("cut-avi");
    let Some(whole) = make_clip_as(&dir, "whole.avi", "I420", &["jpegenc", "!", "avimux"]) else {
        return;
    };
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.join("cut.avi");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let process = |input: &Path, out: &str| {
        let o = bin()
            .args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(tiny_dir().join("tokens.safetensors"))
            .arg("--no-noise")
            .arg("--input")
            .arg(input)
            .arg("--out-dir")
            .arg(dir.join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = process(&whole, "whole");
    assert!(!err.contains("warning"), "{err}");
    let err = process(&cut, "cut");
    let warning = err
        .lines()
        .find(|l| l.contains("frames the file declares were decoded"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    // "N of the M frames ...": fewer decoded than declared, and the lines match the N.
    let words: Vec<&str> = warning.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "of").unwrap();
    let (decoded, declared): (usize, usize) = (
        words[at - 1].parse().unwrap(),
        words[at + 2].parse().unwrap(),
    );
    assert!(decoded < declared, "{warning}");
    let lines = std::fs::read_to_string(dir.join("cut/keypoints.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), decoded);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn process_with_boxes_writes_a_record_per_object_and_none_for_frames_without() {
    // Issue 25: `--boxes` reuses a detector's output: keypoints per object, schema /2.
    let dir = temp_dir("boxes");
    let Some(clip) = make_clip(&dir) else { return };
    let tokens = tiny_dir().join("tokens.safetensors");
    // Frames 3k+2 have no record, frame 4 an empty one; the others two boxes (96x72 frames).
    let boxes = dir.join("boxes.jsonl");
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
    std::fs::write(&boxes, text).unwrap();
    let result = dir.join("result");
    let run = |boxes: &Path, extra: &[&str]| {
        bin()
            .args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--input")
            .arg(&clip)
            .arg("--out-dir")
            .arg(&result)
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
    // --object-class keeps those labels only (the element's object-class).
    let dogs = dir.join("dogs");
    let out = bin()
        .args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(&clip)
        .arg("--out-dir")
        .arg(&dogs)
        .arg("--tokens")
        .arg(&tokens)
        .arg("--boxes")
        .arg(&boxes)
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
    assert_eq!(labels.len(), want.len() / 2);
    assert!(labels.iter().all(|l| l == "dog"), "{labels:?}");
    // One boxes file is the boxes of one video.
    let out = bin()
        .args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--inputs")
        .arg(&dir)
        .arg("--out-dir")
        .arg(dir.join("corpus"))
        .arg("--tokens")
        .arg(&tokens)
        .arg("--boxes")
        .arg(&boxes)
        .output()
        .unwrap();
    assert_clean_error(&out, &["--boxes", "--inputs"]);
    let _ = std::fs::remove_dir_all(&dir);
}
