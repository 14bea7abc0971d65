//! Fidelity to the reference's own runs (issue 11), against goldens that
//! tests/reference/make_goldens.py computes independently in PyTorch / PIL / numpy:
//! PIL's bilinear resize (the `stretch` crop), one training step (candidates, furthest point
//! sampling, both loss terms, dLoss/dE; also with the entropy and consistent rankings and
//! three subjects), the reference's metrics and regressors, its
//! `torch.save` files, foreground masks in `eval`, and the evaluation's TTA default.

use candle_core::{DType, Device, Tensor};
use stablekeypoints::detect::item_rng;
use stablekeypoints::estimator::Estimator;
use stablekeypoints::eval::{self, LabelSet, Metric, Protocol, Sample, Scored};
use stablekeypoints::frame::{resize_pil_bilinear, to_model_input};
use stablekeypoints::ops::rng::Rng;
use stablekeypoints::ops::warp::Affine;
use stablekeypoints::pose::{swap_permutation, PoseModel, Regressor, H36M_SWAP_PAIRS};
use stablekeypoints::train::{ImageSample, MemoryImages, TrainConfig, Trainer};
use stablekeypoints::{
    CropMode, DetectOptions, Detector, FrameRef, Item, Model, PixelFormat, Tokens,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::data;
use crate::common::temp::temp_dir;

fn golden(p: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(data(p), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn tiny() -> Arc<Model> {
    Arc::new(Model::load(&data("tiny-sd1"), &Device::Cpu, DType::F32).unwrap())
}

/// max |a - b| / max |b|.
fn rel_max(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f64, f64::max);
    d / b.iter().map(|v| v.abs()).fold(0f64, f64::max)
}

// ------------------------------------------------------------------ stretch = PIL BILINEAR

#[test]
fn stretch_is_pils_bilinear_resize() {
    let g = golden("ops_golden.safetensors");
    for i in 0..4 {
        let input = &g[&format!("pil_in_{i}")];
        let (h, w, _) = input.dims3().unwrap();
        let px: Vec<u8> = input.flatten_all().unwrap().to_vec1().unwrap();
        let frame = FrameRef::packed(PixelFormat::Rgb, w, h, &px, w * 3).unwrap();
        let want = flat(&g[&format!("pil_f_{i}")]);
        let size = g[&format!("pil_f_{i}")].dim(1).unwrap();
        let ours = resize_pil_bilinear(&frame, size, size);
        // The filter itself: PIL on float images.
        let d = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            d < 2e-6,
            "case {i} ({w}x{h} -> {size}): max diff {d} vs PIL float"
        );
        // What the reference's loaders get: PIL on RGB8 rounds each pass to integers.
        let u8s: Vec<u8> = g[&format!("pil_u8_{i}")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let plane = size * size;
        let mut worst = 0f32;
        for (p, &v) in u8s.iter().enumerate() {
            let (pix, c) = (p / 3, p % 3);
            worst = worst.max((ours[c * plane + pix] * 255.0 - f32::from(v)).abs());
        }
        eprintln!("case {i}: vs PIL float {d:.1e}, vs PIL RGB8 {worst:.2} / 255");
        assert!(
            worst <= 1.5,
            "case {i}: {worst} / 255 from PIL's RGB8 result"
        );
        // The crop mode is that resize; the keypoints map back per axis.
        let (input, fit) = to_model_input(&frame, size, CropMode::Stretch);
        assert_eq!(input, ours);
        let (x, y) = fit.to_frame(0.5, 0.25);
        assert!((x - w as f32 / 2.0).abs() < 1e-4 && (y - h as f32 / 4.0).abs() < 1e-4);
    }
}

// ------------------------------------------------------------------ one training step

#[test]
fn one_training_step_matches_pytorch() {
    let g = golden("tiny-sd1/train_golden.safetensors");
    let model = Model::load(&data("tiny-sd1"), &Device::Cpu, DType::F32).unwrap();
    let emb = flat(&g["embeddings"]);
    let (n, _) = g["embeddings"].dims2().unwrap();
    let cfg = TrainConfig {
        num_tokens: n,
        num_candidates: 25,
        num_keypoints: 10,
        input_size: 128,
        map_res: 64,
        ..Default::default()
    };
    // The reference's operating point and loss settings are the defaults.
    assert_eq!(cfg.timestep, 0);
    assert_eq!(
        (cfg.sigma, cfg.sharpening_weight, cfg.equivariance_weight),
        (2.0, 100.0, 1000.0)
    );
    let data_set = MemoryImages {
        size: 128,
        images: vec![vec![0.5; 3 * 128 * 128]],
    };
    let trainer = Trainer::new(&model, &data_set, cfg).unwrap();
    let th = flat(&g["theta"]);
    let sample = ImageSample {
        iteration: 0,
        image: 0,
        flipped: false,
        affine: Affine {
            theta: [[th[0], th[1], th[2]], [th[3], th[4], th[5]]],
        },
        latents: g["latents"].clone(),
        noise: g["noise"].clone(),
    };
    let out = trainer.sample_grad(&emb, &sample, None, 1.0).unwrap();
    let ids = |k: &str| -> Vec<usize> { f64s(&g[k]).iter().map(|&v| v as usize).collect() };
    assert_eq!(
        out.selection.candidates,
        ids("candidates"),
        "Gaussian-KL candidates"
    );
    assert_eq!(
        out.selection.tokens,
        ids("selected"),
        "furthest point sampling"
    );
    let scalar = |k: &str| f64s(&g[k])[0];
    let rel = |a: f64, b: f64| ((a - b) / b).abs();
    let (sharp, equi, loss) = (out.sharpening / 100.0, out.equivariance / 1000.0, out.loss);
    eprintln!(
        "sharpening {:.2e}, equivariance {:.2e}, loss {:.2e} (relative)",
        rel(sharp, scalar("sharpening")),
        rel(equi, scalar("equivariance")),
        rel(loss, scalar("loss"))
    );
    assert!(
        rel(sharp, scalar("sharpening")) < 1e-5,
        "sharpening {sharp}"
    );
    assert!(
        rel(equi, scalar("equivariance")) < 1e-5,
        "equivariance {equi}"
    );
    assert!(rel(loss, scalar("loss")) < 1e-5, "loss {loss}");
    let e = rel_l2(&out.grad, &flat(&g["grad"]));
    eprintln!("dLoss/dE relative L2 error {e:.2e}");
    assert!(e < 1e-4, "gradient rel err {e}");
}

/// The reference's other `--top_k_strategy` values and `--num_subjects 3`: one training
/// step each (tokens/select_golden.safetensors, computed independently in PyTorch).
/// The ranking's values of `case` on the maps of `sample` with the token embeddings `emb`
/// (`n` x `c`) against the golden `want`.
fn ranking_values_match(
    case: &str,
    model: &Model,
    emb: &[f32],
    (n, c): (usize, usize),
    sample: &ImageSample,
    sel_cfg: &stablekeypoints::train::select::SelectConfig,
    want: &Tensor,
) {
    use stablekeypoints::model::MapSpec;
    use stablekeypoints::train::select::candidate_scores;
    let ctx = model
        .prepare_context(&Tensor::from_slice(emb, (n, c), &Device::Cpu).unwrap())
        .unwrap();
    let spec = MapSpec {
        timestep: 0,
        layers: stablekeypoints::model::LayerSet::first(4),
        map_res: 64,
    };
    let maps = model
        .maps_from_latent(
            &sample.latents.narrow(0, 0, 1).unwrap(),
            Some(&sample.noise.narrow(0, 0, 1).unwrap()),
            &ctx,
            &spec,
            None,
        )
        .unwrap();
    let ours = candidate_scores(&flat(&maps), n, 64, sel_cfg).unwrap();
    let want = f64s(want);
    let worst = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0f64, f64::max);
    eprintln!("{case}: ranking values within {worst:.1e}");
    assert!(worst < 1e-5, "{case}: ranking values off by {worst}");
}

#[test]
fn strategies_and_multi_subject_steps_match_pytorch() {
    use stablekeypoints::train::loss::sharpening_targets;
    use stablekeypoints::train::select::TopKStrategy;
    let g = golden("tiny-sd1/select_golden.safetensors");
    let model = Model::load(&data("tiny-sd1"), &Device::Cpu, DType::F32).unwrap();
    for (case, strategy, subjects) in [
        ("entropy", TopKStrategy::Entropy, 1),
        ("consistent", TopKStrategy::Consistent, 1),
        ("subjects3", TopKStrategy::Gaussian, 3),
    ] {
        let t = |k: &str| &g[&format!("{case}_{k}")];
        let emb = flat(t("embeddings"));
        let (n, c) = t("embeddings").dims2().unwrap();
        let cfg = TrainConfig {
            num_tokens: n,
            num_candidates: 25,
            num_keypoints: 10,
            input_size: 128,
            map_res: 64,
            top_k_strategy: strategy,
            num_subjects: subjects,
            ..Default::default()
        };
        let sel_cfg = cfg.select_config();
        let data_set = MemoryImages {
            size: 128,
            images: vec![vec![0.5; 3 * 128 * 128]],
        };
        let trainer = Trainer::new(&model, &data_set, cfg).unwrap();
        let th = flat(t("theta"));
        let sample = ImageSample {
            iteration: 0,
            image: 0,
            flipped: false,
            affine: Affine {
                theta: [[th[0], th[1], th[2]], [th[3], th[4], th[5]]],
            },
            latents: t("latents").clone(),
            noise: t("noise").clone(),
        };
        let out = trainer.sample_grad(&emb, &sample, None, 1.0).unwrap();
        let ids = |k: &str| -> Vec<usize> { f64s(t(k)).iter().map(|&v| v as usize).collect() };
        assert_eq!(
            out.selection.candidates,
            ids("candidates"),
            "{case}: candidates"
        );
        assert_eq!(out.selection.tokens, ids("selected"), "{case}: selected");
        let peaks: Vec<usize> = out.selection.peaks.concat();
        assert_eq!(peaks, ids("peaks"), "{case}: peaks");
        // The ranking's values on the same maps.
        if let Some(want) = g.get(&format!("{case}_scores")) {
            ranking_values_match(case, &model, &emb, (n, c), &sample, &sel_cfg, want);
        }
        if let Some(want) = g.get(&format!("{case}_targets")) {
            let ours = sharpening_targets(64, &out.selection.peaks, 2.0);
            let d = ours
                .iter()
                .zip(flat(want))
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-5, "{case}: multi-peak targets off by {d}");
        }
        let scalar = |k: &str| f64s(t(k))[0];
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        let (sharp, equi) = (out.sharpening / 100.0, out.equivariance / 1000.0);
        for (what, a, b) in [
            ("sharpening", sharp, scalar("sharpening")),
            ("equivariance", equi, scalar("equivariance")),
            ("loss", out.loss, scalar("loss")),
        ] {
            eprintln!("{case}: {what} within {:.1e}", rel(a, b));
            assert!(rel(a, b) < 1e-5, "{case}: {what} {a} vs {b}");
        }
        let e = rel_l2(&out.grad, &flat(t("grad")));
        eprintln!("{case}: dLoss/dE relative L2 error {e:.2e}");
        assert!(e < 1e-4, "{case}: gradient rel err {e}");
    }
}

// ------------------------------------------------------------------ metrics and regressors

type Points = Vec<Vec<Option<[f64; 2]>>>;

/// Every point of every image, present.
fn all_present(raw: &[Vec<[f64; 2]>]) -> Points {
    raw.iter()
        .map(|r| r.iter().map(|&p| Some(p)).collect())
        .collect()
}

/// Image i: its predictions, its size (`wh`: width, height pairs), its truth and raw points.
fn scored<'a>(
    pred: &'a [Vec<[f64; 2]>],
    wh: &[f64],
    gt: &'a Points,
    raw: &'a Points,
) -> Vec<Scored<'a>> {
    (0..pred.len())
        .map(|i| Scored {
            width: wh[2 * i],
            height: wh[2 * i + 1],
            pred: &pred[i],
            gt: &gt[i],
            raw: &raw[i],
        })
        .collect()
}

/// Relative L2 error of `got` against `want`.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (num / den).sqrt()
}

fn pairs2(t: &Tensor) -> Vec<Vec<[f64; 2]>> {
    let (n, l, _) = t.dims3().unwrap();
    let v = f64s(t);
    (0..n)
        .map(|i| {
            (0..l)
                .map(|j| [v[(i * l + j) * 2], v[(i * l + j) * 2 + 1]])
                .collect()
        })
        .collect()
}

#[test]
fn metrics_equal_the_references_formulas() {
    let g = golden("fidelity_golden.safetensors");
    let pred = pairs2(&g["metric_pred"]);
    let raw = pairs2(&g["metric_raw"]);
    let wh = f64s(&g["metric_wh"]);
    let vis = f64s(&g["metric_vis_mask"]);
    let l = raw[0].len();
    let gt: Points = raw
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (0..l)
                .map(|j| (vis[i * l + j] > 0.0).then_some(r[j]))
                .collect()
        })
        .collect();
    let raws = all_present(&raw);
    let images = scored(&pred, &wh, &gt, &raws);
    // The reference reports fractions where the paper shows percent.
    for (metric, key, scale) in [
        (Metric::TaiChi, "metric_taichi", 1.0),
        (
            Metric::InterOcular { left: 0, right: 1 },
            "metric_inter_ocular",
            100.0,
        ),
        (Metric::Visible, "metric_visible", 100.0),
        (Metric::Pck { px: 6.0 }, "metric_pck", 100.0),
    ] {
        let want = f64s(&g[key])[0] * scale;
        let v = metric.score(&images, Protocol::Paper).unwrap();
        assert!(
            ((v.value - want) / want).abs() < 1e-9,
            "{}: {} vs the reference's {want}",
            metric.name(),
            v.value
        );
        assert_eq!(v.scored_images, images.len());
    }
    // Human3.6M with the reference's (non-permutation) swap list.
    let pred = pairs2(&g["h36m_pred"]);
    let raw = pairs2(&g["h36m_raw"]);
    let wh = f64s(&g["h36m_wh"]);
    let opt = all_present(&raw);
    let images = scored(&pred, &wh, &opt, &opt);
    let m = Metric::OrientationInvariant {
        pairs: H36M_SWAP_PAIRS.to_vec(),
    };
    let want = f64s(&g["metric_h36m"])[0];
    let v = m.score(&images, Protocol::Paper).unwrap();
    assert!(
        ((v.value - want) / want).abs() < 1e-9,
        "{} vs {want}",
        v.value
    );
    // The quirk: 20 and 21 both take 28, 28 takes 21, nothing takes 20.
    let perm = swap_permutation(&H36M_SWAP_PAIRS, 32).unwrap();
    assert_eq!((perm[20], perm[21], perm[28]), (28, 28, 21));
    assert!(!perm.contains(&20));
}

/// Samples with normalised labels (width = height = 1) and keypoints `x` (flattened x, y).
fn samples(x: &[f64], y: &[f64], vis: Option<&[f64]>, k2: usize, l2: usize) -> Vec<Sample> {
    (0..x.len() / k2)
        .map(|i| {
            let kp: Vec<[f64; 2]> = x[i * k2..(i + 1) * k2]
                .chunks_exact(2)
                .map(|c| [c[0], c[1]])
                .collect();
            let raw: Vec<Option<[f64; 2]>> = y[i * l2..(i + 1) * l2]
                .chunks_exact(2)
                .map(|c| Some([c[0], c[1]]))
                .collect();
            let labels = raw
                .iter()
                .enumerate()
                .map(|(j, r)| match vis {
                    Some(v) if v[i * l2 / 2 + j] == 0.0 => None,
                    _ => *r,
                })
                .collect();
            Sample {
                image: PathBuf::from(format!("{i}.png")),
                width: 1,
                height: 1,
                keypoints: kp,
                labels,
                raw_labels: raw,
            }
        })
        .collect()
}

#[test]
fn regressors_equal_the_references() {
    let g = golden("fidelity_golden.safetensors");
    let (x, y, vis) = (
        f64s(&g["reg_x"]),
        f64s(&g["reg_y"]),
        f64s(&g["reg_visible"]),
    );
    let (k2, l2) = (g["reg_x"].dim(1).unwrap(), g["reg_y"].dim(1).unwrap());
    let set = samples(&x, &y, Some(&vis), k2, l2);
    // `return_regressor` (all rows, hidden labels as written) for inter-ocular and PCK;
    // `return_regressor_visible` for Tai-Chi and CUB.
    for (metric, key) in [
        (Metric::Pck { px: 6.0 }, "reg_plain_w"),
        (Metric::InterOcular { left: 0, right: 1 }, "reg_plain_w"),
        (Metric::Visible, "reg_visible_w"),
        (Metric::TaiChi, "reg_visible_w"),
    ] {
        let reg = eval::fit(&set, &metric, Protocol::Paper).unwrap();
        let e = rel_max(&reg.weights, &f64s(&g[key]));
        assert!(e < 1e-9, "{}: {key} rel err {e}", metric.name());
    }
    // The visibility protocol fits per landmark for every metric.
    let reg = eval::fit(&set, &Metric::Pck { px: 6.0 }, Protocol::Visibility).unwrap();
    assert!(rel_max(&reg.weights, &f64s(&g["reg_visible_w"])) < 1e-9);

    // `return_regressor_human36m`.
    let (x, y) = (f64s(&g["h36m_x"]), f64s(&g["h36m_y"]));
    let (k2, l2) = (g["h36m_x"].dim(1).unwrap(), g["h36m_y"].dim(1).unwrap());
    let set = samples(&x, &y, None, k2, l2);
    let m = Metric::OrientationInvariant {
        pairs: H36M_SWAP_PAIRS.to_vec(),
    };
    let reg = eval::fit(&set, &m, Protocol::Paper).unwrap();
    let e = rel_max(&reg.weights, &f64s(&g["h36m_w"]));
    assert!(e < 1e-9, "human3.6m regressor rel err {e}");
    let xs: Vec<Vec<f64>> = set.iter().map(Sample::x_row).collect();
    let ys: Vec<Vec<[f64; 2]>> = set.iter().map(|s| s.y_row_raw().unwrap()).collect();
    let perm = swap_permutation(&H36M_SWAP_PAIRS, 32).unwrap();
    let (_, fits) = Regressor::fit_swap_refit(&xs, &ys, &perm).unwrap();
    assert_eq!(fits as f64, f64s(&g["h36m_fits"])[0]);
    assert!(fits > 1, "the golden must exercise the refit");
}

// ------------------------------------------------------------------ the reference's files

#[test]
fn reference_token_files_load_directly() {
    let dir = data("reference-tokens");
    let t = Tokens::load(&dir).unwrap();
    let ours = Tokens::load(&data("tiny-sd1/tokens.safetensors")).unwrap();
    assert_eq!(t.embeddings, ours.embeddings);
    assert_eq!(t.indices, ours.indices);
    assert_eq!(
        (t.num_tokens, t.context_dim),
        (ours.num_tokens, ours.context_dim)
    );
    // The reference's settings.
    assert_eq!(
        (t.input_size, t.map_res, t.num_layers, t.timestep),
        (512, 128, 4, 0)
    );
    // Converted to our file and back: the same token set.
    let tmp = temp_dir("import");
    let out = tmp.join("tokens.safetensors");
    t.save(&out).unwrap();
    assert_eq!(Tokens::load(&out).unwrap(), t);
    // A tensor saved as a view with a storage offset reads from its offset.
    let v = stablekeypoints::torchfile::read_tensor(&dir.join("offset.pt")).unwrap();
    assert_eq!(
        v.to_vec1::<f32>().unwrap(),
        vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    );
}

#[test]
fn bad_reference_files_name_the_file() {
    let src = data("reference-tokens");
    let dir = temp_dir("bad-pt");
    std::fs::copy(src.join("embedding.pt"), dir.join("embedding.pt")).unwrap();
    let e = Tokens::load(&dir).unwrap_err().to_string();
    assert!(e.contains("indices.pt") && e.contains("missing"), "{e}");
    // Not a zip archive; a truncated archive; the regressor in place of the indices.
    std::fs::write(dir.join("indices.pt"), b"\x80\x02garbage").unwrap();
    let e = Tokens::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("indices.pt") && e.contains("not a PyTorch file"),
        "{e}"
    );
    let bytes = std::fs::read(src.join("indices.pt")).unwrap();
    std::fs::write(dir.join("indices.pt"), &bytes[..bytes.len() / 2]).unwrap();
    let e = Tokens::load(&dir).unwrap_err().to_string();
    assert!(e.contains("indices.pt"), "{e}");
    std::fs::copy(src.join("regressor.pt"), dir.join("indices.pt")).unwrap();
    let e = Tokens::load(&dir).unwrap_err().to_string();
    assert!(e.contains("indices.pt") && e.contains("[K]"), "{e}");
    std::fs::copy(src.join("indices.pt"), dir.join("embedding.pt")).unwrap();
    let e = Tokens::load(&dir).unwrap_err().to_string();
    assert!(e.contains("embedding.pt"), "{e}");
}

#[test]
fn reference_regressor_imports_as_a_pose() {
    let g = golden("fidelity_golden.safetensors");
    let dir = data("reference-tokens");
    let tokens = Tokens::load(&dir).unwrap();
    let k = tokens.indices.len();
    let pose = PoseModel::import_reference(
        &dir.join("regressor.pt"),
        tokens.indices.clone(),
        None,
        vec![[0, 1]],
        true,
    )
    .unwrap();
    let w = f64s(&g["ref_regressor"]);
    let (rows, cols) = g["ref_regressor"].dims2().unwrap();
    assert_eq!((rows, cols), (2 * k, 2 * pose.num_landmarks));
    let reg = pose.regressor().unwrap();
    // The reference: est = ((row, col) keypoints - 0.5) @ W + 0.5, labels as (y, x).
    let mut rng = Rng::new(3);
    for _ in 0..5 {
        let kp: Vec<[f64; 2]> = (0..k).map(|_| [rng.uniform(), rng.uniform()]).collect();
        let ours = reg.predict(&kp);
        for (j, p) in ours.iter().enumerate() {
            for (c, want_col) in [(0usize, 2 * j + 1), (1, 2 * j)] {
                let want: f64 = 0.5
                    + (0..k)
                        .map(|i| {
                            (kp[i][1] - 0.5) * w[(2 * i) * cols + want_col]
                                + (kp[i][0] - 0.5) * w[(2 * i + 1) * cols + want_col]
                        })
                        .sum::<f64>();
                assert!((p[c] - want).abs() < 1e-6, "landmark {j} axis {c}");
            }
        }
    }
    // It must have been fitted for these tokens.
    let e = PoseModel::import_reference(&dir.join("regressor.pt"), vec![0, 1], None, vec![], true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("regressor.pt") && e.contains("2 keypoint tokens"),
        "{e}"
    );
}

// ------------------------------------------------------------------ masks and the TTA default

fn write_rgb(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
        .save(path)
        .unwrap();
}

#[test]
fn eval_masks_multiply_the_image() {
    let dir = temp_dir("mask");
    write_rgb(&dir.join("a.png"), 80, 48, |x, y| {
        [(x * 3) as u8, (y * 5) as u8, ((x + y) * 2) as u8]
    });
    write_rgb(&dir.join("black.png"), 80, 48, |_, _| [0, 0, 0]);
    let gray = |name: &str, v: u8, w: u32| {
        image::GrayImage::from_pixel(w, 48, image::Luma([v]))
            .save(dir.join(name))
            .unwrap()
    };
    gray("ones.png", 1, 80); // Human3.6M's masks hold 0 and 1
    gray("zeros.png", 0, 80);
    gray("small.png", 1, 40);
    std::fs::write(
        dir.join("labels.csv"),
        "image,mask,x0,y0\na.png,,1,2\na.png,ones.png,1,2\na.png,zeros.png,1,2\nblack.png,,1,2\n",
    )
    .unwrap();
    let set = LabelSet::load(&dir.join("labels.csv")).unwrap();
    assert_eq!(set.num_landmarks, 1);
    assert_eq!(set.rows[0].mask, None);
    assert_eq!(
        set.rows[1].mask.as_deref(),
        Some(dir.join("ones.png").as_path())
    );
    let tokens = Tokens::load(&data("tiny-sd1/tokens.safetensors")).unwrap();
    let opts = DetectOptions {
        noise: false,
        input_size: Some(64),
        crop: CropMode::Stretch,
        ..Default::default()
    };
    let mut det = Estimator::teacher(Detector::new(tiny(), &tokens, opts).unwrap());
    let s = eval::detect_set(&mut det, &set, &mut |_, _| {}).unwrap();
    // A full mask changes nothing; an empty one leaves a black image.
    assert_eq!(s[1].keypoints, s[0].keypoints);
    assert_eq!(s[2].keypoints, s[3].keypoints);
    assert_ne!(s[0].keypoints, s[3].keypoints);
    // A mask of another size is an error naming the CSV line and the mask.
    std::fs::write(dir.join("bad.csv"), "a.png,small.png,1,2\n").unwrap();
    let set = LabelSet::load(&dir.join("bad.csv")).unwrap();
    let e = eval::detect_set(&mut det, &set, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.csv:1") && e.contains("small.png") && e.contains("40x48"),
        "{e}"
    );
}

#[test]
fn eval_runs_the_references_augmentation() {
    let o = eval::default_detect_options();
    assert_eq!((o.augmentations, o.warp_every_pass), (10, true));
    assert!(
        DetectOptions::default().augmentations == 1 && !DetectOptions::default().warp_every_pass
    );
    // One pass with `warp_every_pass` is one seeded random warp, not a plain pass: the
    // first draw of the image's own generator (item 0: the first image this detector sees).
    let tokens = Tokens::load(&data("tiny-sd1/tokens.safetensors")).unwrap();
    let model = tiny();
    let image = golden("tiny-sd1/golden.safetensors")["image"].clone();
    let opts = DetectOptions {
        noise: false,
        augmentations: 1,
        warp_every_pass: true,
        seed: 5,
        ..Default::default()
    };
    let mut warped = Detector::new(model.clone(), &tokens, opts.clone()).unwrap();
    let mut plain = Detector::new(
        model,
        &tokens,
        DetectOptions {
            warp_every_pass: false,
            ..opts
        },
    )
    .unwrap();
    let a = flat(
        &warped
            .diagnose(Item::square(&image, 0).unwrap(), None)
            .unwrap()
            .maps,
    );
    let b = flat(
        &plain
            .diagnose(
                Item::square(&image, 0).unwrap(),
                Some(&[Affine::random(&mut item_rng(5, 0))]),
            )
            .unwrap()
            .maps,
    );
    assert_eq!(a, b);
    let c = flat(
        &plain
            .diagnose(Item::square(&image, 1).unwrap(), None)
            .unwrap()
            .maps,
    );
    assert_ne!(a, c);
}
