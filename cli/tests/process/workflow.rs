//! The workflow of a user with real weights (docs/student.md), on the tiny random model:
//! label a corpus with the teacher as the shards of a job array (`process --inputs
//! --shard`), distil a student from those JSON lines on one machine (`distill --labels`),
//! run the student in the literal `decodebin` pipeline and export it as ONNX. Mechanics,
//! not accuracy.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

fn ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A 64x48 H.264 clip of `frames` frames of `pattern`.
fn clip(path: &Path, pattern: &str, frames: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut c = Command::new("gst-launch-1.0");
    c.args(["-q", "videotestsrc"])
        .arg(format!("pattern={pattern}"))
        .arg(format!("num-buffers={frames}"))
        .args("! video/x-raw,width=64,height=48,framerate=10/1 ! videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink".split(' '))
        .arg(format!("location={}", path.display()));
    ok(c);
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn label_a_corpus_in_shards_distil_run_the_student_and_export_it() {
    let d = temp_dir("workflow");
    let _ = std::fs::remove_dir_all(&d);
    clip(&d.join("videos/a.mp4"), "ball", 12);
    clip(&d.join("videos/b.mp4"), "smpte", 12);
    let (videos, labelled) = (d.join("videos"), d.join("labelled"));
    label_in_shards(&videos, &labelled);
    let student = d.join("student.safetensors");
    distil_from_the_labels(&videos, &labelled, &student);
    let w = stablekeypoints::student::StudentWeights::load(&student).unwrap();
    confidence_scale_is_the_records_mean(&w, &labelled);
    run_the_student(&d, &videos, &student, w.info.num_keypoints);
    let onnx = d.join("student.onnx");
    let mut c = bin();
    c.arg("export-onnx").arg(&student).arg("--out").arg(&onnx);
    ok(c);
    assert!(std::fs::metadata(&onnx).unwrap().len() > 1000);
    let _ = std::fs::remove_dir_all(&d);
}

/// Two shards, as two tasks of a job array would run them.
fn label_in_shards(videos: &Path, labelled: &Path) {
    for shard in ["0/2", "1/2"] {
        let mut c = bin();
        c.args(["process", "--model"])
            .arg(tiny_dir())
            .arg("--tokens")
            .arg(tiny_dir().join("tokens.safetensors"))
            .arg("--inputs")
            .arg(videos)
            .arg("--out-dir")
            .arg(labelled)
            .args(["--shard", shard, "--no-annotated"]);
        ok(c);
    }
}

/// `distill --labels`: every sampled frame has its record.
fn distil_from_the_labels(videos: &Path, labelled: &Path, student: &Path) {
    let mut c = bin();
    c.args(["distill", "--model"])
        .arg(tiny_dir())
        .arg("--inputs")
        .arg(videos)
        .arg("--labels")
        .arg(labelled)
        .arg("--out")
        .arg(student)
        .args([
            "--student-size",
            "64",
            "--widths",
            "8,8,16,16",
            "--steps",
            "2",
        ])
        .args([
            "--batch-size",
            "2",
            "--holdout-every",
            "0",
            "--max-frames",
            "8",
        ]);
    let out = ok(c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("8 of the 8 frames have a record"),
        "every sampled frame has its record: {err}"
    );
}

/// The labels are the records' keypoints: with nothing held out, the student's confidence
/// scale is their mean confidence over the sampled frames. 8 of the 24 frames of the corpus
/// (a then b), uniformly: 0, 3, 6, 9, 13, 16, 19, 23, i.e. frames 0, 3, 6, 9 of a and 1, 4,
/// 7, 11 of b.
fn confidence_scale_is_the_records_mean(
    w: &stablekeypoints::student::StudentWeights,
    labelled: &Path,
) {
    let mut expected = vec![0f64; w.info.num_keypoints];
    let mut n = 0;
    for dir in std::fs::read_dir(labelled).unwrap() {
        let dir = dir.unwrap().path();
        let jsonl = dir.join("keypoints.jsonl");
        if !jsonl.is_file() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let frames: &[u64] = if name.starts_with("a-") {
            &[0, 3, 6, 9]
        } else {
            assert!(name.starts_with("b-"), "{name}");
            &[1, 4, 7, 11]
        };
        for r in records(&jsonl) {
            if frames.contains(&r["frame"].as_u64().unwrap()) {
                assert_eq!(r["inferred"], false);
                for k in r["keypoints"].as_array().unwrap() {
                    expected[k["id"].as_u64().unwrap() as usize] +=
                        k["confidence"].as_f64().unwrap();
                }
                n += 1;
            }
        }
    }
    assert_eq!(n, 8, "four frames of each video");
    for (k, (s, e)) in w.info.confidence_scale.iter().zip(&expected).enumerate() {
        let e = e / n as f64;
        assert!(
            (f64::from(*s) - e).abs() <= 1e-6 * e.max(1e-12) + 1e-9,
            "keypoint {k}: scale {s}, mean record confidence {e}"
        );
    }
}

/// The student in the literal decodebin pipeline, or through `process` where the plugin
/// library is not built: a record for each of the 12 frames.
fn run_the_student(d: &Path, videos: &Path, student: &Path, num_keypoints: usize) {
    let plugin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let jsonl = d.join("student.jsonl");
    let so = [
        plugin.join("debug/libgststablekeypoints.so"),
        plugin.join("release/libgststablekeypoints.so"),
    ];
    let so_dir = d.join("plugin");
    std::fs::create_dir_all(&so_dir).unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| PathBuf::from(t).join("debug/libgststablekeypoints.so"))
        .into_iter()
        .chain(so)
        .find(|p| p.is_file());
    if let Some(so) = target {
        std::os::unix::fs::symlink(&so, so_dir.join("libgststablekeypoints.so")).unwrap();
        let mut c = Command::new("gst-launch-1.0");
        c.env("GST_PLUGIN_PATH", &so_dir)
            .arg("-q")
            .arg("filesrc")
            .arg(format!("location={}", videos.join("a.mp4").display()))
            .args("! decodebin ! stablekeypoints".split(' '))
            .arg(format!("model={}", student.display()))
            .args(["!", "stablekeypointspublish"])
            .arg(format!("location={}", jsonl.display()))
            .args(["!", "fakesink"]);
        ok(c);
        let recs = records(&jsonl);
        assert_eq!(recs.len(), 12, "every frame");
        assert_eq!(
            recs[0]["keypoints"].as_array().unwrap().len(),
            num_keypoints
        );
    } else {
        // The plugin library is built by `cargo build`/`test --workspace`; without it the
        // same element runs in process through `process`.
        let mut c = bin();
        c.args(["process", "--model"])
            .arg(student)
            .arg("--input")
            .arg(videos.join("a.mp4"))
            .arg("--out-dir")
            .arg(d.join("student-run"))
            .arg("--no-annotated");
        ok(c);
        assert_eq!(records(&d.join("student-run/keypoints.jsonl")).len(), 12);
    }
}
