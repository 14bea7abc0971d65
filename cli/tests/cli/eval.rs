//! `stablekeypoints eval` end to end on the tiny model (the library's evaluation:
//! tests/engine/eval.rs): labels that are an exact linear function of the detected keypoints give ~0
//! error, shuffled labels a large one; and its errors.

use candle_core::{DType, Device};
use stablekeypoints::estimator::Estimator;
use stablekeypoints::eval::{self, LabelSet, Metric, PoseModel, Protocol};
use stablekeypoints::{DetectOptions, Detector, Model, Tokens};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use crate::common::*;

const VIS: Protocol = Protocol::Visibility;

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------- end to end

/// A 64x48 RGB image: textured background and a bright disk at a random place.
fn synthetic_image(r: &mut Lcg) -> image::RgbImage {
    let (w, h) = (64u32, 48u32);
    let (cx, cy) = (8.0 + r.next() * 48.0, 8.0 + r.next() * 32.0);
    let rad = 5.0 + r.next() * 6.0;
    let tint = [r.next(), r.next(), r.next()];
    image::RgbImage::from_fn(w, h, |x, y| {
        let d = ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
        let a = (rad + 0.5 - d).clamp(0.0, 1.0);
        let tex = 0.2 + 0.1 * (((x * 7 + y * 13) % 5) as f64 / 4.0);
        let px = |c: usize| ((tex * tint[c] * (1.0 - a) + a) * 255.0).round() as u8;
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// Landmarks 0.5 + (x - 0.5) W for keypoints `kp` (normalised), in pixels of a w x h image:
/// three landmarks mixing keypoints 0, 1, 2 and the last.
fn linear_labels(kp: &[[f64; 2]], w: f64, h: f64) -> Vec<[f64; 2]> {
    let c = |k: usize, a: usize| kp[k][a] - 0.5;
    let last = kp.len() - 1;
    let norm = [
        [0.5 + 0.8 * c(0, 0), 0.5 + 0.8 * c(0, 1)],
        [
            0.5 + 0.5 * c(1, 0) + 0.3 * c(2, 1),
            0.5 + 0.4 * c(0, 0) + 0.4 * c(1, 1),
        ],
        [0.5 + 0.9 * c(last, 1), 0.5 - 0.6 * c(last, 0)],
    ];
    norm.iter().map(|p| [p[0] * w, p[1] * h]).collect()
}

fn write_csv(path: &Path, rows: &[(String, Vec<Option<[f64; 2]>>)], header: bool) {
    let mut s = String::new();
    if header {
        s.push_str("image,x0,y0,x1,y1,x2,y2\n");
    }
    for (name, pts) in rows {
        s.push_str(name);
        for p in pts {
            match p {
                Some(p) => s.push_str(&format!(",{:.6},{:.6}", p[0], p[1])),
                None => s.push_str(",,"),
            }
        }
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn eval_cli(dir: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("eval")
        .arg("--model")
        .arg(tiny_dir())
        .arg("--tokens")
        .arg(tiny_dir().join("tokens.safetensors"))
        .arg("--train")
        .arg(dir.join("train.csv"))
        .arg("--test")
        .arg(dir.join("test.csv"))
        .args(["--no-noise", "--size", "64", "--augmentations", "1"])
        .args(extra)
        .output()
        .unwrap()
}

/// A label row: the image and its landmarks (`None`: not visible).
type Row = (String, Vec<Option<[f64; 2]>>);

/// 44 synthetic images in `dir` detected as the CLI will (no noise, one pass, a random warp
/// as every eval pass, the tokens' settings; train then test images with one detector), and
/// labels that are an exact linear function of the detections, landmark 2 hidden on every
/// fourth image. Returns the detections, the labels and the tokens.
fn exact_labels(dir: &Path) -> (Vec<eval::Sample>, Vec<Row>, Tokens) {
    let img_dir = dir.join("images");
    std::fs::create_dir_all(&img_dir).unwrap();
    let mut r = Lcg(2024);
    let n = 44;
    let mut rows = Vec::new();
    for i in 0..n {
        let name = format!("images/{i:02}.png");
        synthetic_image(&mut r).save(dir.join(&name)).unwrap();
        rows.push((name, vec![Some([0.0, 0.0]); 3]));
    }
    write_csv(&dir.join("all.csv"), &rows, false);
    let all = LabelSet::load(&dir.join("all.csv")).unwrap();
    let model = Arc::new(Model::load(&tiny_dir(), &Device::Cpu, DType::F32).unwrap());
    let tokens = Tokens::load(&tiny_dir().join("tokens.safetensors")).unwrap();
    // A 64x64 model input keeps the test fast (the tiny model accepts multiples of 64).
    let opts = DetectOptions {
        noise: false,
        input_size: Some(64),
        augmentations: 1,
        warp_every_pass: true,
        ..Default::default()
    };
    let mut det = Estimator::teacher(Detector::new(model.clone(), &tokens, opts.clone()).unwrap());
    let samples = eval::detect_set(&mut det, &all, &mut |_, _| {}).unwrap();
    let spread = |a: usize| {
        let v: Vec<f64> = samples.iter().map(|s| s.keypoints[0][a]).collect();
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!(spread(0) > 0.0 || spread(1) > 0.0, "keypoint 0 never moves");
    let mut exact = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let mut pts: Vec<Option<[f64; 2]>> = linear_labels(&s.keypoints, 64.0, 48.0)
            .into_iter()
            .map(Some)
            .collect();
        if i % 4 == 1 {
            pts[2] = None; // not visible: excluded from its fit and from the metric
        }
        exact.push((rows[i].0.clone(), pts));
    }
    (samples, exact, tokens)
}

#[test]
fn eval_end_to_end_exact_labels_score_zero_and_shuffled_labels_do_not() {
    let dir = temp_dir("e2e");
    let (samples, exact, tokens) = exact_labels(&dir);
    let (train, test) = exact.split_at(32);
    write_csv(&dir.join("train.csv"), train, true);
    write_csv(&dir.join("test.csv"), test, false);
    std::fs::write(dir.join("names.txt"), "head\nleft\n\nright\n").unwrap();
    std::fs::write(dir.join("skeleton.txt"), "# pairs\nhead left\n0 2\n").unwrap();
    let pose = dir.join("pose.json");
    let out = eval_cli(
        &dir,
        &[
            "--metric",
            "taichi",
            "--json",
            "--save-regressor",
            pose.to_str().unwrap(),
            "--names",
            dir.join("names.txt").to_str().unwrap(),
            "--skeleton",
            dir.join("skeleton.txt").to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Progress without a terminal: plain lines at the end of each set.
    assert!(stderr.contains("detecting train 32/32"), "{stderr}");
    assert!(stderr.contains("detecting test 12/12"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let value = report["value"].as_f64().unwrap();
    eprintln!("exact labels: taichi {value}");
    assert!(value < 0.05, "exact linear labels: {report}");
    assert_eq!(report["metric"], "taichi");
    assert_eq!(report["test_images"], 12);
    assert_eq!(report["train_images"], 32);
    assert_eq!(report["landmarks"], 3);
    assert_eq!(report["keypoints"], tokens.indices.len());
    let pose = PoseModel::load(&pose).unwrap();
    assert_eq!(pose.names, ["head", "left", "right"]);
    assert_eq!(pose.skeleton, [[0, 1], [0, 2]]);
    assert_eq!(pose.token_indices, tokens.indices);
    assert_eq!(pose.tokens_hash, Some(tokens.fingerprint()));
    assert_eq!(pose.weights.len(), 2 * tokens.indices.len());

    shuffled_labels_score_far_worse(&dir, train, test, value);
    library_metrics_agree(&samples, train, test);
}

/// The same labels with the images' order shuffled (a fixed derangement) through the CLI:
/// far worse than the exact labels' `value`.
fn shuffled_labels_score_far_worse(dir: &Path, train: &[Row], test: &[Row], value: f64) {
    let shuffle = |rows: &[Row]| {
        let k = rows.len();
        (0..k)
            .map(|i| (rows[i].0.clone(), rows[(i * 7 + 3) % k].1.clone()))
            .collect::<Vec<_>>()
    };
    write_csv(&dir.join("train.csv"), &shuffle(train), true);
    write_csv(&dir.join("test.csv"), &shuffle(test), false);
    let out = eval_cli(dir, &["--metric", "taichi"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shuffled: f64 = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("taichi: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout}"));
    eprintln!("shuffled labels: taichi {shuffled}");
    assert!(
        shuffled > 10.0 && shuffled > 200.0 * value.max(1e-3),
        "shuffled {shuffled} vs exact {value}"
    );
    assert!(stdout.contains("per landmark"), "{stdout}");
}

/// The other metrics agree: ~perfect on exact labels (library path, same detections).
fn library_metrics_agree(samples: &[eval::Sample], train: &[Row], test: &[Row]) {
    let train_s = &samples[..32];
    let fit_rows = |set: &[Row], s: &[eval::Sample]| {
        s.iter()
            .zip(set)
            .map(|(s, r)| eval::Sample {
                labels: r.1.clone(),
                raw_labels: r.1.clone(),
                ..s.clone()
            })
            .collect::<Vec<_>>()
    };
    let train_rows = fit_rows(train, train_s);
    let test_s = fit_rows(test, &samples[32..]);
    let pck = Metric::Pck { px: 0.5 };
    let reg = eval::fit(&train_rows, &pck, VIS).unwrap();
    let v = eval::evaluate(&reg, &test_s, &pck, VIS).unwrap();
    assert!(v.value > 99.9, "{v:?}");
    let v = eval::evaluate(&reg, &test_s, &Metric::Visible, VIS).unwrap();
    assert!(v.value < 0.01, "{v:?}");
    // The paper's all-landmark metrics need every landmark's coordinates: the hidden ones
    // (empty fields) are an error naming the image.
    let e = eval::fit(&train_rows, &pck, Protocol::Paper)
        .unwrap_err()
        .to_string();
    assert!(e.contains("landmark 2") && e.contains(".png"), "{e}");
    let v = eval::evaluate(&reg, &test_s, &Metric::Visible, Protocol::Paper).unwrap();
    assert!(v.value < 0.01, "{v:?}");
}

#[test]
fn eval_cli_errors_name_the_file_and_line() {
    let dir = temp_dir("errors");
    std::fs::write(dir.join("train.csv"), "a.png,1,2\nb.png,1\n").unwrap();
    std::fs::write(dir.join("test.csv"), "a.png,1,2\n").unwrap();
    let out = eval_cli(&dir, &["--metric", "taichi"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("train.csv:2:"), "{e}");

    // A missing image: the CSV line and the image path.
    std::fs::write(dir.join("train.csv"), "a.png,1,2\n").unwrap();
    let out = eval_cli(&dir, &["--metric", "taichi"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("train.csv:1:") && e.contains("a.png"), "{e}");

    // Metric options are checked against the labels before any detection.
    let out = eval_cli(&dir, &["--metric", "inter-ocular", "--eyes", "0,4"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("--eyes"), "{e}");
    let out = eval_cli(&dir, &["--metric", "orientation-invariant"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("--flip-pairs"), "{e}");
    let out = eval_cli(&dir, &["--metric", "mse"]);
    let e = String::from_utf8_lossy(&out.stderr);
    // clap's wording ("unknown metric" before): the value, the flag and the choices.
    assert!(
        !out.status.success() && e.contains("invalid value 'mse' for '--metric"),
        "{e}"
    );
}

#[test]
fn eval_without_a_visible_landmark_fails_before_detecting_naming_the_csv() {
    // Issue 24 (12): a test set with no visible landmark scored a perfect 0.0, and a
    // training set without one failed only after detecting every image, naming no CSV. The
    // images do not exist: the check comes before any of them is read.
    let dir = temp_dir("invisible");
    for (train, test, named, why) in [
        (
            "a.png,-1,-1\nb.png,,\n",
            "c.png,1,2\n",
            "train.csv",
            "nothing to fit",
        ),
        (
            "a.png,1,2\n",
            "c.png,,\nd.png,-3,4\n",
            "test.csv",
            "nothing to score",
        ),
    ] {
        std::fs::write(dir.join("train.csv"), train).unwrap();
        std::fs::write(dir.join("test.csv"), test).unwrap();
        let out = eval_cli(&dir, &["--metric", "visible"]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(
            e.contains(&dir.join(named).display().to_string()) && e.contains(why),
            "{e}"
        );
    }
}

/// `eval` with seeded noise and warped passes (so that a shared random stream would make
/// the order matter), on `train`/`test` CSVs of `dir`.
fn eval_noisy(dir: &Path, train: &str, test: &str, extra: &[&str]) -> Output {
    bin()
        .arg("eval")
        .arg("--model")
        .arg(tiny_dir())
        .arg("--train")
        .arg(dir.join(train))
        .arg("--test")
        .arg(dir.join(test))
        .args([
            "--size",
            "64",
            "--augmentations",
            "3",
            "--metric",
            "visible",
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn noisy_set(name: &str) -> TempDir {
    let dir = temp_dir(name);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut r = Lcg(77);
    let mut rows = Vec::new();
    for i in 0..12 {
        let name = format!("images/{i:02}.png");
        synthetic_image(&mut r).save(dir.join(&name)).unwrap();
        let pts = (0..2)
            .map(|_| Some([r.next() * 60.0 + 2.0, r.next() * 40.0 + 2.0]))
            .collect();
        rows.push((name, pts));
    }
    let (train, test) = rows.split_at(8);
    write_csv(&dir.join("train.csv"), train, false);
    write_csv(&dir.join("test.csv"), test, false);
    let rev = |v: &[(String, Vec<Option<[f64; 2]>>)]| v.iter().rev().cloned().collect::<Vec<_>>();
    write_csv(&dir.join("train_rev.csv"), &rev(train), false);
    write_csv(&dir.join("test_rev.csv"), &rev(test), false);
    dir
}

#[test]
fn eval_scores_do_not_depend_on_the_csv_order() {
    // Issue 13: the noise was one stream per run, so reordering the CSV changed the score.
    let dir = noisy_set("order");
    let report = |train: &str, test: &str| -> serde_json::Value {
        let out = eval_noisy(&dir, train, test, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let a = report("train.csv", "test.csv");
    let b = report("train_rev.csv", "test_rev.csv");
    let num = |v: &serde_json::Value| v.as_f64().unwrap();
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(1.0);
    assert!(num(&a["value"]) > 0.0);
    assert!(close(num(&a["value"]), num(&b["value"])), "{a} vs {b}");
    for (x, y) in a["per_landmark_px"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["per_landmark_px"].as_array().unwrap())
    {
        assert!(close(num(x), num(y)), "{a} vs {b}");
    }
    // The noise is really on: another seed gives another score.
    let c = {
        let out = eval_noisy(&dir, "train.csv", "test.csv", &["--seed", "9"]);
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert!(!close(num(&a["value"]), num(&c["value"])), "{a} vs {c}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_checks_save_regressor_before_detecting_and_writes_it_reproducibly() {
    // Issue 13: `--save-regressor /missing/dir/p.json` detected everything and then failed.
    let dir = noisy_set("save");
    let file = dir.join("file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("p.json");
    let out = eval_noisy(
        &dir,
        "train.csv",
        "test.csv",
        &["--save-regressor", bad.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--save-regressor") && err.contains("file/p.json"),
        "{err}"
    );
    assert!(
        !err.contains("detecting"),
        "checked before detection: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A missing folder is created; the same run twice writes the same bytes.
    let (p, q) = (dir.join("new/a/p.json"), dir.join("new/b/p.json"));
    for path in [&p, &q] {
        let out = eval_noisy(
            &dir,
            "train.csv",
            "test.csv",
            &["--save-regressor", path.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
