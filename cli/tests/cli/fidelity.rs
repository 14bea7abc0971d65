//! The reference's settings through the command line (issue 11): `--noise-level`,
//! `--layers`, `--crop stretch`, the augmentation ranges, `eval`'s 10 warped passes and
//! `--protocol`, training with the reference's knobs on a label CSV with masks, and
//! `import-tokens` / `import-pose` of its `torch.save` files. Maps are checked against the
//! PyTorch goldens; everything else against the library, whose functions tests/golden.rs and
//! tests/engine/fidelity.rs check against PyTorch, PIL and numpy.

use candle_core::{DType, Device, IndexOp, Tensor};
use stablekeypoints::detect::content_key;
use stablekeypoints::estimator::Estimator;
use stablekeypoints::eval::{self, row_input, LabelSet, Metric, PoseModel, Protocol};
use stablekeypoints::model::LayerSet;
use stablekeypoints::ops::warp::AugmentRanges;
use stablekeypoints::train::select::TopKStrategy;
use stablekeypoints::train::{self, MemoryImages, Outcome, RunOptions, TrainConfig, Trainer};
use stablekeypoints::{CropMode, DetectOptions, Detector, FrameRef, Model, PixelFormat, Tokens};
use std::ffi::OsStr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use crate::common::*;

fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stablekeypoints"))
        .args(args)
        .output()
        .expect("run stablekeypoints")
}

fn ok<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Exit code 1, one line on stderr naming every needle, no panic.
fn assert_runtime_error(out: &Output, needles: &[&str]) {
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    for n in needles {
        assert!(e.contains(n), "{e:?} does not mention {n:?}");
    }
}

fn tiny() -> Arc<Model> {
    Arc::new(Model::load(&data("tiny-sd1"), &Device::Cpu, DType::F32).unwrap())
}

fn tiny_tokens() -> Tokens {
    Tokens::load(&data("tiny-sd1/tokens.safetensors")).unwrap()
}

/// max |a - b| / max |b|.
fn rel_max(a: &Tensor, b: &Tensor) -> f32 {
    let d: f32 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let s: f32 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    d / s
}

/// `detect --no-noise --dump-maps` of the golden image: the dumped `maps` [K, R, R].
fn dumped_maps(dir: &Path, extra: &[&str]) -> Tensor {
    let dump = dir.join("maps.safetensors");
    let model = data("tiny-sd1");
    let mut args: Vec<String> = vec![
        "detect".into(),
        "--model".into(),
        model.display().to_string(),
        "--no-noise".into(),
        "--dump-maps".into(),
        dump.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(model.join("image.png").display().to_string());
    ok(&args);
    candle_core::safetensors::load(&dump, &Device::Cpu).unwrap()["maps"].clone()
}

#[test]
fn detect_noise_level_and_layers_give_the_references_maps() {
    let dir = temp_dir("maps");
    let g =
        candle_core::safetensors::load(data("tiny-sd1/golden.safetensors"), &Device::Cpu).unwrap();
    let default = dumped_maps(&dir, &[]);
    // The reference's noise_level -2 is t = 20: PyTorch's maps there.
    let t20 = dumped_maps(&dir, &["--noise-level", "-2"]);
    let e = rel_max(&t20, &g["maps_zero_t20_sel"]);
    assert!(e < 1e-4, "--noise-level -2 vs PyTorch at t = 20: {e}");
    assert!(
        rel_max(&default, &g["maps_zero_t20_sel"]) > 10.0 * e.max(1e-6),
        "the default is t = 20 too"
    );
    // -1, the last timestep (t = 0), is the default for this tokens file.
    let t0 = dumped_maps(&dir, &["--noise-level", "-1"]);
    assert_eq!(
        t0.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        default.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // --layers 1,3: the mean of those two layers' maps (PyTorch, per layer, two tokens).
    let per_layer = &g["layer_maps_zero_sel2"];
    let want = ((per_layer.i(1).unwrap() + per_layer.i(3).unwrap()).unwrap() / 2.0).unwrap();
    let got = dumped_maps(&dir, &["--layers", "1,3"])
        .narrow(0, 0, 2)
        .unwrap();
    let e = rel_max(&got, &want);
    assert!(e < 1e-4, "--layers 1,3 vs PyTorch: {e}");
    let all = default.narrow(0, 0, 2).unwrap();
    assert!(rel_max(&all, &want) > 1e-2, "--layers had no effect");
    // A layer the model does not have among its observed ones.
    let out = run(&[
        "detect",
        "--model",
        data("tiny-sd1").to_str().unwrap(),
        "--layers",
        "4",
        data("tiny-sd1/image.png").to_str().unwrap(),
    ]);
    assert_runtime_error(&out, &["layers", "4"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `detect --json` keypoints: (nx, ny) and (x, y) per keypoint.
fn json_keypoints(out: &Output) -> Vec<([f32; 2], [f32; 2])> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["keypoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let f = |n: &str| k[n].as_f64().unwrap() as f32;
            ([f("nx"), f("ny")], [f("x"), f("y")])
        })
        .collect()
}

fn core_keypoints(image: &Path, opts: DetectOptions) -> Vec<[f32; 2]> {
    let img = image::open(image).unwrap().to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let frame = FrameRef::packed(PixelFormat::Rgb, w, h, img.as_raw(), w * 3).unwrap();
    let mut det = Detector::new(tiny(), &tiny_tokens(), opts).unwrap();
    // The CLI keys each image's noise and warps by its pixels.
    det.detect(vec![stablekeypoints::Item::frame(
        frame,
        content_key(w, h, img.as_raw()),
    )])
    .unwrap()
    .remove(0)
    .keypoints
    .iter()
    .map(|k| [k.x, k.y])
    .collect()
}

#[test]
fn detect_stretch_and_augmentation_ranges_equal_the_library() {
    let image = data("tiny-sd1/image_wide.png"); // 160 x 120
    let detect = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "detect".into(),
            "--model".into(),
            data("tiny-sd1").display().to_string(),
            "--json".into(),
            "--no-noise".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(image.display().to_string());
        json_keypoints(&ok(&a))
    };
    let norm = |k: &[([f32; 2], [f32; 2])]| k.iter().map(|p| p.0).collect::<Vec<_>>();
    let stretch = detect(&["--crop", "stretch"]);
    let opts = DetectOptions {
        noise: false,
        crop: CropMode::Stretch,
        ..Default::default()
    };
    assert_eq!(norm(&stretch), core_keypoints(&image, opts));
    // Pixels of the original image, each axis scaled on its own.
    for (n, px) in &stretch {
        assert!((px[0] - n[0] * 160.0).abs() < 1e-3 && (px[1] - n[1] * 120.0).abs() < 1e-3);
    }
    assert_ne!(
        norm(&stretch),
        norm(&detect(&[])),
        "--crop stretch = letterbox"
    );

    // Test-time augmentation with other warp ranges than the tokens file's.
    let flags = [
        "--augmentations",
        "3",
        "--seed",
        "4",
        "--augment-degrees",
        "5",
        "--augment-scale",
        "0.9,1.0",
        "--augment-translate",
        "0.1,0",
    ];
    let ranges = AugmentRanges {
        degrees: 5.0,
        scale: [0.9, 1.0],
        translate: [0.1, 0.0],
    };
    let with = |augment: Option<AugmentRanges>| DetectOptions {
        noise: false,
        augmentations: 3,
        seed: 4,
        augment,
        ..Default::default()
    };
    let got = norm(&detect(&flags));
    assert_eq!(got, core_keypoints(&image, with(Some(ranges))));
    assert_ne!(got, core_keypoints(&image, with(None)), "ranges ignored");
    let out = run(&[
        "detect",
        "--model",
        data("tiny-sd1").to_str().unwrap(),
        "--augment-scale",
        "1.0,0.5",
        image.to_str().unwrap(),
    ]);
    assert_runtime_error(&out, &["--augment-scale", "1,0.5"]);
}

// ---------------------------------------------------------------------------------- eval

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

/// `n` textured 64 x 48 images with random labels of 3 landmarks, as a label CSV.
fn label_csv(dir: &Path, name: &str, n: usize, r: &mut Lcg) -> PathBuf {
    let mut csv = String::from("image,x0,y0,x1,y1,x2,y2\n");
    for i in 0..n {
        let (cx, cy) = (10.0 + r.next() * 44.0, 8.0 + r.next() * 32.0);
        let tint = [r.next(), r.next(), r.next()];
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let a = (8.0 - d).clamp(0.0, 1.0);
            let tex = 0.2 + 0.1 * (((x * 7 + y * 13) % 5) as f64 / 4.0);
            image::Rgb([0, 1, 2].map(|c| ((tex * tint[c] * (1.0 - a) + a) * 255.0) as u8))
        });
        let file = format!("{name}{i}.png");
        img.save(dir.join(&file)).unwrap();
        csv.push_str(&file);
        for _ in 0..3 {
            csv.push_str(&format!(",{:.2},{:.2}", r.next() * 64.0, r.next() * 48.0));
        }
        csv.push('\n');
    }
    let p = dir.join(format!("{name}.csv"));
    std::fs::write(&p, csv).unwrap();
    p
}

#[test]
fn eval_runs_ten_warped_passes_and_the_chosen_protocol() {
    let dir = temp_dir("eval");
    let mut r = Lcg(11);
    let train = label_csv(&dir, "train", 5, &mut r);
    let test = label_csv(&dir, "test", 2, &mut r);
    let eval_json = |extra: &[&str]| -> serde_json::Value {
        let mut a: Vec<String> = [
            "eval",
            "--model",
            data("tiny-sd1").to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--test",
            test.to_str().unwrap(),
            "--metric",
            "inter-ocular",
            "--json",
            "--size",
            "64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        serde_json::from_slice(&ok(&a).stdout).unwrap()
    };
    // The library as the reference evaluates: 10 passes, every one warped, seeded noise (at
    // a 64 x 64 input, to keep the test fast).
    let (train_set, test_set) = (
        LabelSet::load(&train).unwrap(),
        LabelSet::load(&test).unwrap(),
    );
    let opts = DetectOptions {
        input_size: Some(64),
        ..eval::default_detect_options()
    };
    let mut det = Estimator::teacher(Detector::new(tiny(), &tiny_tokens(), opts).unwrap());
    let tr = eval::detect_set(&mut det, &train_set, &mut |_, _| {}).unwrap();
    let te = eval::detect_set(&mut det, &test_set, &mut |_, _| {}).unwrap();
    let metric = Metric::InterOcular { left: 0, right: 1 };
    let want = |p: Protocol| {
        let reg = eval::fit(&tr, &metric, p).unwrap();
        eval::evaluate(&reg, &te, &metric, p).unwrap().value
    };
    let close = |a: f64, b: f64| ((a - b) / b).abs() < 1e-12;
    let paper = eval_json(&[]);
    assert_eq!(paper["augmentations"], 10);
    assert_eq!(paper["timestep"], 0);
    assert_eq!(paper["protocol"], "paper");
    let v = paper["value"].as_f64().unwrap();
    assert!(close(v, want(Protocol::Paper)), "{v} vs the library's");
    let vis = eval_json(&["--protocol", "visibility"]);
    assert_eq!(vis["protocol"], "visibility");
    let w = vis["value"].as_f64().unwrap();
    assert!(close(w, want(Protocol::Visibility)), "{w}");
    // Normalised coordinates vs pixels on 64 x 48 images: the two protocols differ.
    assert!((v - w).abs() > 1e-6 * v.abs(), "{v} = {w}");
    // One plain-pass setting is not what eval runs: fewer passes give another value.
    let one = eval_json(&["--augmentations", "1"]);
    assert_eq!(one["augmentations"], 1);
    assert!(!close(one["value"].as_f64().unwrap(), v));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------- train

/// The augmentation ranges of [`REFERENCE_KNOBS`].
const AUGMENT: AugmentRanges = AugmentRanges {
    degrees: 5.0,
    scale: [0.9, 1.0],
    translate: [0.1, 0.05],
};

/// `train`'s flags for the reference's knobs, which [`library_tokens`] sets in the library.
const REFERENCE_KNOBS: &str = "--steps 2 --batch-size 1 --num-tokens 16 --num-candidates 6 \
    --num-keypoints 3 --num-indices 2 --map-res 16 --seed 2 --noise-level -2 --layers 1,3 \
    --top-k-strategy entropy --num-subjects 2 --sigma 1.5 --sharpening-weight 50 \
    --equivariance-weight 500 --augment-degrees 5 --augment-scale 0.9,1.0 \
    --augment-translate 0.1,0.05";

/// Three images in `dir` and a label CSV whose first two rows have Human3.6M-style masks
/// (0 and 1); returns the CSV.
fn write_masked_labels(dir: &Path) -> PathBuf {
    let mut r = Lcg(5);
    let mut csv = String::from("image,mask,x0,y0\n");
    for i in 0..3 {
        let off = r.next();
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            let v = ((x as f64 * 0.2 + off * 6.0).sin() * (y as f64 * 0.15).cos() + 1.0) * 120.0;
            image::Rgb([v as u8, (255 - x * 3) as u8, (y * 4) as u8])
        });
        img.save(dir.join(format!("im{i}.png"))).unwrap();
        // Human3.6M-style masks, 0 and 1; the last row has none.
        let mask = if i < 2 {
            let name = format!("m{i}.png");
            image::GrayImage::from_fn(64, 64, |x, y| {
                image::Luma([u8::from((16..48).contains(&x) && y > 8 * i)])
            })
            .save(dir.join(&name))
            .unwrap();
            name
        } else {
            String::new()
        };
        csv.push_str(&format!("im{i}.png,{mask},10,20\n"));
    }
    let labels = dir.join("labels.csv");
    std::fs::write(&labels, csv).unwrap();
    labels
}

/// The library's tokens on the masked model inputs of `labels` with the settings of
/// [`REFERENCE_KNOBS`]; the mask changes the first image's input.
fn library_tokens(dir: &Path, labels: &Path) -> Tokens {
    let set = LabelSet::load(labels).unwrap();
    let images: Vec<Vec<f32>> = set
        .rows
        .iter()
        .map(|row| row_input(&set, row, 128, CropMode::Letterbox).unwrap().0)
        .collect();
    let plain = stablekeypoints::frame::to_model_input(
        &FrameRef::packed(
            PixelFormat::Rgb,
            64,
            64,
            image::open(dir.join("im0.png")).unwrap().to_rgb8().as_raw(),
            64 * 3,
        )
        .unwrap(),
        128,
        CropMode::Letterbox,
    )
    .0;
    assert_ne!(images[0], plain, "the mask changes the input");
    let cfg = TrainConfig {
        steps: 2,
        batch_size: 1,
        num_tokens: 16,
        num_candidates: 6,
        num_keypoints: 3,
        num_indices: 2,
        input_size: 128,
        map_res: 16,
        seed: 2,
        timestep: 20,
        layers: LayerSet::from_indices(&[1, 3]).unwrap(),
        top_k_strategy: TopKStrategy::Entropy,
        num_subjects: 2,
        sigma: 1.5,
        sharpening_weight: 50.0,
        equivariance_weight: 500.0,
        augment: AUGMENT,
        ..Default::default()
    };
    let model = tiny();
    let memory = MemoryImages { size: 128, images };
    let mut trainer = Trainer::new(&model, &memory, cfg).unwrap();
    let opts = RunOptions {
        checkpoint: None,
        checkpoint_every: 0,
        resume: false,
    };
    match train::run(&mut trainer, &opts, &mut |_| ControlFlow::Continue(())).unwrap() {
        Outcome::Finished { tokens, .. } => *tokens,
        Outcome::Stopped { step } => panic!("stopped at {step}"),
    }
}

#[test]
fn train_on_a_masked_label_csv_with_the_references_knobs() {
    let dir = temp_dir("train");
    let labels = write_masked_labels(&dir);
    let out = dir.join("tokens.safetensors");
    let (model, labels_arg) = (data("tiny-sd1"), labels.to_str().unwrap());
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--input",
        labels_arg,
    ];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(REFERENCE_KNOBS.split_whitespace());
    ok(&args);
    let got = Tokens::load(&out).unwrap();
    let want = library_tokens(&dir, &labels);
    assert_eq!(got.embeddings, want.embeddings);
    assert_eq!(got.indices, want.indices);
    // Recorded for detection and for whoever reads the file.
    assert_eq!(got.timestep, 20);
    assert_eq!(got.layers.indices(), vec![1, 3]);
    assert_eq!(got.augment, AUGMENT);
    let cfg: serde_json::Value = serde_json::from_str(&got.extra["train_config"]).unwrap();
    assert_eq!(cfg["top_k_strategy"], "entropy");
    assert_eq!(cfg["num_subjects"], 2);
    assert_eq!(cfg["sigma"], 1.5);
    assert_eq!(
        (
            cfg["sharpening_weight"].as_f64(),
            cfg["equivariance_weight"].as_f64()
        ),
        (Some(50.0), Some(500.0))
    );
    // A mask that is missing is named with its CSV line before any training.
    std::fs::write(&labels, "image,mask,x0,y0\nim0.png,gone.png,1,2\n").unwrap();
    let out = run(&[
        "train",
        "--model",
        data("tiny-sd1").to_str().unwrap(),
        "--input",
        labels.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_runtime_error(&out, &["labels.csv:2", "gone.png"]);
}

// ---------------------------------------------------------------------------------- import

#[test]
fn import_tokens_converts_the_references_files() {
    let dir = temp_dir("import");
    let src = data("reference-tokens");
    let file = dir.join("t.safetensors");
    ok(&[
        OsStr::new("import-tokens"),
        src.as_os_str(),
        OsStr::new("--out"),
        file.as_os_str(),
    ]);
    let t = Tokens::load(&file).unwrap();
    let direct = Tokens::load(&src).unwrap();
    assert_eq!(
        (&t.embeddings, &t.indices),
        (&direct.embeddings, &direct.indices)
    );
    // The reference's defaults.
    assert_eq!((t.input_size, t.map_res, t.timestep), (512, 128, 0));
    assert_eq!(t.layers.indices(), vec![0, 1, 2, 3]);
    assert_eq!(t.augment, AugmentRanges::default());
    assert_eq!(t.extra["generator"], "stablekeypoints import-tokens");
    // A run of the reference with other settings.
    ok(&[
        OsStr::new("import-tokens"),
        src.as_os_str(),
        OsStr::new("--out"),
        file.as_os_str(),
        OsStr::new("--noise-level"),
        OsStr::new("-2"),
        OsStr::new("--layers"),
        OsStr::new("0,2"),
        OsStr::new("--map-res"),
        OsStr::new("64"),
        OsStr::new("--augment-degrees"),
        OsStr::new("30"),
    ]);
    let t = Tokens::load(&file).unwrap();
    assert_eq!((t.map_res, t.timestep), (64, 20));
    assert_eq!(t.layers.indices(), vec![0, 2]);
    assert_eq!(t.augment.degrees, 30.0);
    // Bad inputs: a folder without the files, a garbage indices.pt, a layer it never records.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let import = |d: &Path, extra: &[&str]| {
        let mut a = vec![
            "import-tokens".to_string(),
            d.display().to_string(),
            "--out".into(),
            dir.join("x.safetensors").display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        run(&a)
    };
    assert_runtime_error(&import(&bad, &[]), &["embedding.pt"]);
    std::fs::copy(src.join("embedding.pt"), bad.join("embedding.pt")).unwrap();
    std::fs::write(bad.join("indices.pt"), b"PK\x03\x04 not really").unwrap();
    assert_runtime_error(&import(&bad, &[]), &["indices.pt"]);
    assert_runtime_error(&import(&src, &["--layers", "1,4"]), &["--layers", "1,4"]);
    assert!(!dir.join("x.safetensors").exists());
}

/// The regressor, with names and a skeleton, for the tokens next to it.
#[test]
fn import_pose_converts_the_references_regressor() {
    let dir = temp_dir("import-pose");
    let src = data("reference-tokens");
    let direct = Tokens::load(&src).unwrap();
    let names = dir.join("names.txt");
    std::fs::write(&names, "a\nb\nc\nd\ne\n").unwrap();
    let skeleton = dir.join("skeleton.txt");
    std::fs::write(&skeleton, "a b\nc 4\n").unwrap();
    let pose_path = dir.join("pose.json");
    let reg = src.join("regressor.pt");
    let import_pose = |names: &Path| {
        run(&[
            OsStr::new("import-pose"),
            reg.as_os_str(),
            OsStr::new("--label-order"),
            OsStr::new("yx"),
            OsStr::new("--names"),
            names.as_os_str(),
            OsStr::new("--skeleton"),
            skeleton.as_os_str(),
            OsStr::new("--out"),
            pose_path.as_os_str(),
        ])
    };
    let out = import_pose(&names);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pose = PoseModel::load(&pose_path).unwrap();
    let want = PoseModel::import_reference(
        &reg,
        direct.indices.clone(),
        Some(["a", "b", "c", "d", "e"].map(String::from).to_vec()),
        vec![[0, 1], [2, 4]],
        true,
    )
    .unwrap();
    // Equal but for the last bit of the f64s, which JSON does not keep exactly.
    assert_eq!(
        (&pose.token_indices, &pose.names, &pose.skeleton),
        (&want.token_indices, &want.names, &want.skeleton)
    );
    let (a, b) = (pose.weights.concat(), want.weights.concat());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} vs {y}");
    }
    std::fs::write(&names, "a\nb\n").unwrap();
    std::fs::write(&skeleton, "0 1\n2 4\n").unwrap();
    assert_runtime_error(
        &import_pose(&names),
        &["regressor.pt", "names.txt", "2 landmark names"],
    );
}
