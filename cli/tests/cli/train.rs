//! `train` on image folders: every image checked first, output paths checked before
//! training, byte-identical reruns, an unfinished checkpoint kept (the trainer itself:
//! the core's `tests/engine/train.rs`).

use crate::common::images::frame;
use crate::common::*;
use stablekeypoints::train::checkpoint_path;
use stablekeypoints::Tokens;
use std::path::Path;
use std::time::Instant;

fn write_png(path: &Path, img: &[f32], size: usize) {
    let mut buf = image::RgbImage::new(size as u32, size as u32);
    for y in 0..size {
        for x in 0..size {
            let px = [0, 1, 2].map(|c| (img[c * size * size + y * size + x] * 255.0).round() as u8);
            buf.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    buf.save(path).unwrap();
}

/// A run of a few steps on the tiny model with a checkpoint every 2.
const SMALL_RUN: &str = "--steps 3 --batch-size 1 --num-tokens 16 --num-candidates 6 \
    --num-keypoints 3 --num-indices 2 --map-res 16 --checkpoint-every 2 --seed 3";

#[test]
fn cli_trains_on_an_image_folder() {
    let dir = temp_dir("cli");
    let frames = dir.join("frames");
    std::fs::create_dir_all(frames.join("sub")).unwrap();
    for t in 0..4 {
        let sub = if t % 2 == 0 { "" } else { "sub" };
        write_png(
            &frames.join(sub).join(format!("f{t}.png")),
            &frame(t, 4, 96),
            96,
        );
    }
    std::fs::write(frames.join("notes.txt"), "not an image").unwrap();
    // The output directory does not exist yet: train creates it.
    let out = dir.join("new").join("tok.safetensors");
    let m = tiny_dir();
    let args = |extra: &[&'static str]| {
        let mut a = vec!["train", "--model", m.to_str().unwrap()];
        a.extend([
            "--input",
            frames.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        a.extend(SMALL_RUN.split_whitespace());
        a.extend(extra);
        a
    };
    let res = bin().args(args(&[])).output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    assert!(stderr.contains("4 images"), "{stderr}");
    assert!(stderr.contains("step 3/3"), "{stderr}");
    assert!(stderr.contains("loss"), "{stderr}");
    // Without a terminal, progress is plain lines: every step, and the vote's end.
    for line in [
        "step 1/3 loss",
        "step 2/3 loss",
        "step 3/3 loss",
        "vote 2/2",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(line)),
            "{line}: {stderr}"
        );
    }
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b["),
        "{stderr:?}"
    );
    let tok = Tokens::load(&out).unwrap();
    assert_eq!(tok.indices.len(), 3);
    assert_eq!(tok.num_tokens, 16);
    assert_eq!(tok.input_size, 128);
    // The reference's noise_level -1: t = 0.
    assert_eq!(tok.timestep, 0);
    assert!(tok.extra.contains_key("model_config_hash"));
    assert!(checkpoint_path(&out).is_file());

    resume_redoes_the_vote_and_an_empty_folder_is_refused(&dir, &out, &tok, args);
}

/// After the run of `cli_trains_on_an_image_folder`: its resume only redoes the vote (same
/// tokens `tok`); `--resume` without a checkpoint and an empty folder are errors.
fn resume_redoes_the_vote_and_an_empty_folder_is_refused<'a>(
    dir: &Path,
    out: &Path,
    tok: &Tokens,
    args: impl Fn(&[&'static str]) -> Vec<&'a str>,
) {
    let m = tiny_dir();
    // Resume of a finished run only redoes the vote: same tokens.
    let res = bin().args(args(&["--resume"])).output().unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(&Tokens::load(out).unwrap(), tok);

    // --resume without a checkpoint is a clear error.
    std::fs::remove_file(checkpoint_path(out)).unwrap();
    let res = bin().args(args(&["--resume"])).output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(stderr.contains("no checkpoint"), "{stderr}");

    // An empty folder is refused.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let res = bin()
        .args(["train", "--model", m.to_str().unwrap(), "--input"])
        .arg(&empty)
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(stderr.contains("no png/jpg images"), "{stderr}");
}

fn train_cli(frames: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stablekeypoints"))
        .args(["train", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(frames)
        .arg("--out")
        .arg(out)
        .args([
            "--batch-size",
            "1",
            "--num-tokens",
            "16",
            "--num-candidates",
            "6",
            "--num-keypoints",
            "3",
            "--num-indices",
            "2",
            "--map-res",
            "16",
            "--checkpoint-every",
            "1",
            "--seed",
            "3",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn train_checks_every_image_first_and_resumes_after_a_bad_one_is_removed() {
    // Issue 13: one unreadable png among good ones failed training at the step that drew
    // it, and the checkpoint it advised resuming from could then never be resumed.
    let dir = temp_dir("bad-image");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for t in 0..5 {
        write_png(&frames.join(format!("f{t}.png")), &frame(t, 5, 64), 64);
    }
    std::fs::write(frames.join("bad.png"), "not a png").unwrap();
    let out = dir.join("tok.safetensors");
    let res = train_cli(&frames, &out, &["--steps", "4"]);
    let err = stderr_of(&res);
    assert!(res.status.success(), "{err}");
    // Checked and listed before step 1.
    let skipped = err.find("skipped").expect("the bad image is listed");
    assert!(err[skipped..].contains("bad.png"), "{err}");
    assert!(skipped < err.find("step 1/4").unwrap(), "{err}");
    assert!(
        err.contains("checked 6 images") && err.contains("5 readable"),
        "{err}"
    );
    let first = std::fs::read(&out).unwrap();
    // The user removes the file they were told about: the checkpoint resumes.
    std::fs::remove_file(frames.join("bad.png")).unwrap();
    let res = train_cli(&frames, &out, &["--steps", "6", "--resume"]);
    let err = stderr_of(&res);
    assert!(res.status.success(), "{err}");
    assert!(err.contains("resumed at step 4"), "{err}");
    assert!(
        err.contains("step 6/6") && !err.contains("step 4/6"),
        "{err}"
    );
    // Other data is still refused, naming the files that differ.
    write_png(&frames.join("f9.png"), &frame(9, 10, 64), 64);
    let res = train_cli(&frames, &out, &["--steps", "7", "--resume"]);
    let err = stderr_of(&res);
    assert!(!res.status.success(), "{err}");
    assert!(
        err.contains("different training data") && err.contains("new now: f9.png"),
        "{err}"
    );
    // --resume with fewer steps than done: an error, and the result is kept.
    std::fs::remove_file(frames.join("f9.png")).unwrap();
    let kept = std::fs::read(&out).unwrap();
    assert_ne!(kept, first);
    let res = train_cli(&frames, &out, &["--steps", "3", "--resume"]);
    let err = stderr_of(&res);
    assert!(!res.status.success());
    assert!(
        err.contains("6 steps are done") && err.contains("--steps 6"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), kept);
    // No readable image at all: an error naming them.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("a.png"), "x").unwrap();
    let res = train_cli(&broken, &dir.join("t2.safetensors"), &["--steps", "1"]);
    let err = stderr_of(&res);
    assert!(!res.status.success());
    assert!(
        err.contains("none of the 1 images") && err.contains("a.png"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_checks_its_output_paths_before_training() {
    // Issue 13: `train --out EXISTING_DIR` trained to the end and failed writing the result.
    let dir = temp_dir("out-check");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    write_png(&frames.join("f0.png"), &frame(0, 1, 64), 64);
    let res = train_cli(&frames, &dir, &["--steps", "2"]);
    let err = stderr_of(&res);
    assert!(!res.status.success());
    assert!(
        err.contains("--out") && err.contains("is a folder"),
        "{err}"
    );
    assert!(!err.contains("step 1"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A file where its folder should be.
    let res = train_cli(
        &frames,
        &frames.join("f0.png").join("t.safetensors"),
        &["--steps", "2"],
    );
    let err = stderr_of(&res);
    assert!(!res.status.success());
    assert!(
        err.contains("cannot create its folder") && !err.contains("step 1"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn training_twice_writes_byte_identical_tokens_and_checkpoints() {
    let dir = temp_dir("twice");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for t in 0..2 {
        write_png(&frames.join(format!("f{t}.png")), &frame(t, 2, 64), 64);
    }
    let (a, b) = (dir.join("a/tok.safetensors"), dir.join("b/tok.safetensors"));
    for out in [&a, &b] {
        let res = train_cli(&frames, out, &["--steps", "2"]);
        assert!(res.status.success(), "{}", stderr_of(&res));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(
        std::fs::read(checkpoint_path(&a)).unwrap(),
        std::fs::read(checkpoint_path(&b)).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_run_does_not_replace_an_unfinished_checkpoint() {
    // Rerunning an interrupted `train` without --resume replaced its checkpoint at the new
    // run's first step: the steps done were lost.
    let dir = temp_dir("unfinished");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for t in 0..2 {
        write_png(&frames.join(format!("f{t}.png")), &frame(t, 2, 64), 64);
    }
    let out = dir.join("tok.safetensors");
    let ckpt = dir.join("tok.ckpt.safetensors");
    // Interrupted: killed once its first checkpoints are written.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stablekeypoints"))
        .args(["train", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(&frames)
        .arg("--out")
        .arg(&out)
        .args([
            "--batch-size",
            "1",
            "--num-tokens",
            "16",
            "--num-candidates",
            "6",
        ])
        .args([
            "--num-keypoints",
            "3",
            "--num-indices",
            "2",
            "--map-res",
            "16",
        ])
        .args([
            "--checkpoint-every",
            "1",
            "--seed",
            "3",
            "--steps",
            "100000",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ckpt.is_file() {
        assert!(start.elapsed().as_secs() < 120, "no checkpoint written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = std::fs::read(&ckpt).unwrap();
    let res = train_cli(&frames, &out, &["--steps", "4"]);
    let err = stderr_of(&res);
    assert!(!res.status.success(), "{err}");
    assert!(
        err.contains("tok.ckpt.safetensors")
            && err.contains("unfinished run")
            && err.contains("of 100000")
            && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("step 1/"), "refused before training: {err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), kept);
    // A finished checkpoint may be replaced by a new run.
    std::fs::remove_file(&ckpt).unwrap();
    for steps in ["2", "3"] {
        let res = train_cli(&frames, &out, &["--steps", steps]);
        assert!(res.status.success(), "{}", stderr_of(&res));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
