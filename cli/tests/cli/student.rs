//! `distill`, `export-onnx` and a student through `detect` and `eval`, on the tiny random
//! model (the mechanics; the figure world's test checks what a student learns).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run stablekeypoints")
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    o
}

/// Exit status != 0, the last stderr line mentions every needle, no panic.
fn fails(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    for n in needles {
        assert!(last.contains(n), "error {last:?} does not mention {n:?}");
    }
}

/// `n` images of a bright square on a dark ground, moving from image to image.
fn images(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let mut img = image::RgbImage::from_pixel(80, 60, image::Rgb([20, 30, 40]));
            let (x0, y0) = (5 + (i * 7) % 60, 5 + (i * 5) % 40);
            for y in y0..y0 + 14 {
                for x in x0..x0 + 14 {
                    img.put_pixel(x as u32, y as u32, image::Rgb([230, 200, 60]));
                }
            }
            let p = dir.join(format!("{i:03}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect()
}

fn distill(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "distill",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--student-size",
        "64",
        "--widths",
        "8,8,16,16",
        "--batch-size",
        "2",
        "--holdout-every",
        "4",
        "--checkpoint-every",
        "2",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn distill_resumes_and_every_command_takes_the_student() {
    let d = temp_dir("mechanics");
    let model = data("tiny-sd1");
    let imgs = images(&d.join("images"), 8);
    let student = d.join("out/student.safetensors");
    let out = ok(distill(
        &model,
        &d.join("images"),
        &student,
        &["--steps", "3"],
    ));
    let err = stderr(&out);
    assert!(err.contains("held-out error"), "{err}");
    assert!(student.is_file());
    let labels = d.join("out/student.safetensors.labels.safetensors");
    assert!(labels.is_file(), "the teacher's labels are cached");

    // A second run over the same output without --resume keeps what is there.
    let before = std::fs::read(&student).unwrap();
    fails(
        &distill(&model, &d.join("images"), &student, &["--steps", "3"]),
        &["--resume", "labels"],
    );
    assert_eq!(std::fs::read(&student).unwrap(), before);
    // --resume continues from step 3: the labels are not recomputed.
    let out = ok(distill(
        &model,
        &d.join("images"),
        &student,
        &["--steps", "5", "--resume"],
    ));
    let err = stderr(&out);
    assert!(err.contains("resumed labelling at 8 of 8"), "{err}");
    assert!(err.contains("resumed at step 3"), "{err}");
    assert_ne!(std::fs::read(&student).unwrap(), before, "two more steps");

    let s = student.to_str().unwrap();
    detect_takes_the_student(&d, &model, s, &imgs);
    eval_takes_the_student(&d, &model, s, &imgs);
    export_onnx_takes_the_student(&d, &model, s);
}

/// `detect` with the student (`s`, distilled from `model`) on the images `imgs`.
fn detect_takes_the_student(d: &Path, model: &Path, s: &str, imgs: &[PathBuf]) {
    // detect: the student's K keypoints in the image, as JSON records.
    let out = ok(run(&[
        "detect",
        "--model",
        s,
        "--json",
        imgs[0].to_str().unwrap(),
    ]));
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kps = rec["keypoints"].as_array().unwrap();
    let k = stablekeypoints::Tokens::load(&model.join("tokens.safetensors"))
        .unwrap()
        .indices
        .len();
    assert_eq!(kps.len(), k);
    for p in kps {
        let (x, y) = (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap());
        assert!(
            (0.0..=80.0).contains(&x) && (0.0..=60.0).contains(&y),
            "{p}"
        );
    }
    // The teacher's own tokens are accepted with the student, others are not.
    let tokens = model.join("tokens.safetensors");
    ok(run(&[
        "detect",
        "--model",
        s,
        "--tokens",
        tokens.to_str().unwrap(),
        imgs[1].to_str().unwrap(),
    ]));
    let other = d.join("other.safetensors");
    let mut t = stablekeypoints::Tokens::load(&tokens).unwrap();
    t.embeddings[3] += 0.5;
    t.save(&other).unwrap();
    fails(
        &run(&[
            "detect",
            "--model",
            s,
            "--tokens",
            other.to_str().unwrap(),
            imgs[1].to_str().unwrap(),
        ]),
        &["student.safetensors", "distilled from tokens"],
    );
    // The teacher's options are errors naming them.
    fails(
        &run(&[
            "detect",
            "--model",
            s,
            "--size",
            "64",
            imgs[0].to_str().unwrap(),
        ]),
        &["--size", "student"],
    );
}

/// `eval` with the student: one pass per image, and a pose file keyed to the teacher's
/// tokens that applies to the teacher too.
fn eval_takes_the_student(d: &Path, model: &Path, s: &str, imgs: &[PathBuf]) {
    let tokens = model.join("tokens.safetensors");
    let csv = d.join("labels.csv");
    let rows: String = imgs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (x, y) = (12 + (i * 7) % 60, 12 + (i * 5) % 40);
            format!("{},{x},{y},{},{}\n", p.display(), x + 3, y + 2)
        })
        .collect();
    std::fs::write(&csv, format!("image,x0,y0,x1,y1\n{rows}")).unwrap();
    let pose = d.join("pose.json");
    let out = ok(run(&[
        "eval",
        "--model",
        s,
        "--train",
        csv.to_str().unwrap(),
        "--test",
        csv.to_str().unwrap(),
        "--metric",
        "visible",
        "--save-regressor",
        pose.to_str().unwrap(),
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["augmentations"], 1, "{report}");
    assert!(report["student"]
        .as_str()
        .unwrap()
        .contains("student.safetensors"));
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&pose).unwrap()).unwrap();
    assert_eq!(
        p["tokens_hash"].as_str().unwrap(),
        stablekeypoints::Tokens::load(&tokens)
            .unwrap()
            .fingerprint(),
        "the pose is keyed to the teacher's tokens"
    );
    // That pose applies to the teacher too.
    ok(run(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--pose",
        pose.to_str().unwrap(),
        imgs[2].to_str().unwrap(),
    ]));
}

/// `export-onnx` of the student, and of a file that is no student.
fn export_onnx_takes_the_student(d: &Path, model: &Path, s: &str) {
    let tokens = model.join("tokens.safetensors");
    // export-onnx writes an ONNX protobuf (ModelProto field 1, ir_version = 8).
    let onnx = d.join("student.onnx");
    ok(run(&["export-onnx", s, "--out", onnx.to_str().unwrap()]));
    let bytes = std::fs::read(&onnx).unwrap();
    assert_eq!(&bytes[..2], &[0x08, 0x08]);
    fails(
        &run(&[
            "export-onnx",
            tokens.to_str().unwrap(),
            "--out",
            onnx.to_str().unwrap(),
        ]),
        &["tokens.safetensors", "student"],
    );
}

#[test]
fn distill_checks_its_inputs_and_outputs_before_any_work() {
    let d = temp_dir("checks");
    let model = data("tiny-sd1");
    images(&d.join("images"), 3);
    fails(
        &distill(
            &model,
            &d.join("no-such-folder"),
            &d.join("s.safetensors"),
            &[],
        ),
        &["no-such-folder"],
    );
    fails(
        &distill(
            &d.join("no-model"),
            &d.join("images"),
            &d.join("s.safetensors"),
            &[],
        ),
        &["no-model"],
    );
    fails(
        &distill(
            &model,
            &d.join("images"),
            &d.join("s.safetensors"),
            &["--student-size", "60"],
        ),
        &["--student-size 60"],
    );
    assert!(!d.join("s.safetensors").exists());
    let _ = std::fs::remove_dir_all(&d);
}
