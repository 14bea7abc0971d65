//! Training (issue 4) on the tiny model: gradients against finite differences, loss and
//! sharpness going down, checkpoint/resume identity, NaN handling, and the CLI.

use candle_core::{DType, Device, Tensor, Var};
use stablekeypoints::train::{
    self, checkpoint_path, Event, MemoryImages, Outcome, RunOptions, StepStats, TrainConfig,
    TrainData, Trainer,
};
use stablekeypoints::{Model, Result, Tokens};
use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tiny-sd1")
}

fn tiny() -> Model {
    Model::load(&tiny_dir(), &Device::Cpu, DType::F32).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("skp-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Frame `t` of a synthetic clip: a bright disk moving along a circle over a dim, textured
/// background, planar RGB `[3, size, size]` in [0, 1].
fn frame(t: usize, frames: usize, size: usize) -> Vec<f32> {
    let s = size as f32;
    let phase = t as f32 / frames as f32 * std::f32::consts::TAU;
    let (cx, cy) = (
        s * (0.5 + 0.25 * phase.cos()),
        s * (0.5 + 0.25 * phase.sin()),
    );
    let rad = s * 0.12;
    let mut img = vec![0f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
            // Anti-aliased disk edge.
            let a = (rad + 0.5 - d).clamp(0.0, 1.0);
            let tex = 0.15 + 0.05 * ((x * 7 + y * 13) % 5) as f32 / 4.0;
            let bg = [tex, tex * 0.8, 0.1 + 0.1 * y as f32 / s];
            let fg = [1.0, 0.95, 0.6];
            for c in 0..3 {
                img[c * size * size + y * size + x] = bg[c] * (1.0 - a) + fg[c] * a;
            }
        }
    }
    img
}

fn clip(frames: usize, size: usize) -> MemoryImages {
    MemoryImages {
        size,
        images: (0..frames).map(|t| frame(t, frames, size)).collect(),
    }
}

/// Small settings so that a step takes a fraction of a second on two cores.
fn small_config() -> TrainConfig {
    TrainConfig {
        steps: 30,
        batch_size: 1,
        num_tokens: 32,
        num_keypoints: 4,
        num_candidates: 8,
        num_indices: 4,
        input_size: 128,
        map_res: 32,
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn gradient_matches_central_differences() {
    let model = tiny();
    let data = clip(4, 128);
    let cfg = TrainConfig {
        num_tokens: 16,
        num_candidates: 8,
        num_keypoints: 4,
        ..small_config()
    };
    let (n, c) = (cfg.num_tokens, model.context_dim());
    let mut trainer = Trainer::new(&model, &data, cfg).unwrap();
    let sample = trainer.sample(3).unwrap();
    let e0 = trainer.embeddings().to_vec();
    // The training path: loss differentiated w.r.t. the maps, then one image graph at a time.
    let out = trainer.sample_grad(&e0, &sample, None, 1.0).unwrap();
    let sel = out.selection.clone();
    let g = out.grad.clone();
    assert!(g.iter().all(|v| v.is_finite()));
    // It agrees with plain backpropagation through one graph of both images.
    let var = Var::from_slice(&e0, (n, c), &Device::Cpu).unwrap();
    let whole = trainer
        .sample_loss(var.as_tensor(), &sample, Some(&sel))
        .unwrap();
    assert!(
        (f64::from(whole.total.to_scalar::<f32>().unwrap()) - out.loss).abs() < 1e-5 * out.loss
    );
    let g1: Vec<f32> = whole
        .total
        .backward()
        .unwrap()
        .get(var.as_tensor())
        .expect("the embeddings get a gradient")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let gmax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
    let dmax = g
        .iter()
        .zip(&g1)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        dmax < 1e-4 * gmax,
        "two-stage vs one-graph gradient: {dmax} vs scale {gmax}"
    );
    // Unselected tokens still get a gradient: the softmax runs over all N.
    let unselected = (0..n).find(|t| !sel.tokens.contains(t)).unwrap();
    assert!(g[unselected * c..(unselected + 1) * c]
        .iter()
        .any(|&v| v != 0.0));

    // Check the largest-gradient coordinates of two selected and one unselected token,
    // keeping the selection (and so the targets) fixed as the gradient does.
    let loss_at = |e: &[f32]| -> f64 {
        let t = Tensor::from_slice(e, (n, c), &Device::Cpu).unwrap();
        let l = trainer.sample_loss(&t, &sample, Some(&sel)).unwrap();
        f64::from(l.total.to_scalar::<f32>().unwrap())
    };
    let mut coords = Vec::new();
    for t in [sel.tokens[0], sel.tokens[1], unselected] {
        let row = &g[t * c..(t + 1) * c];
        let j = (0..c)
            .max_by(|&a, &b| row[a].abs().total_cmp(&row[b].abs()))
            .unwrap();
        coords.push(t * c + j);
    }
    let eps = 2e-2f32;
    for &i in &coords {
        let mut plus = e0.clone();
        plus[i] += eps;
        let mut minus = e0.clone();
        minus[i] -= eps;
        let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * f64::from(eps));
        let an = f64::from(g[i]);
        let rel = (fd - an).abs() / fd.abs().max(an.abs());
        println!("coord {i}: analytic {an:.6e}, central difference {fd:.6e}, rel err {rel:.2e}");
        assert!(an.abs() > 1e-6, "gradient too small to check: {an}");
        assert!(
            rel < 1e-2,
            "coordinate {i}: analytic {an} vs finite difference {fd}"
        );
    }
}

fn probe(trainer: &mut Trainer, samples: &[train::ImageSample]) -> (f64, f64) {
    let e = trainer.embeddings_tensor().unwrap();
    let (mut loss, mut ent) = (0f64, 0f64);
    for s in samples {
        let l = trainer.sample_loss(&e, s, None).unwrap();
        loss += f64::from(l.total.to_scalar::<f32>().unwrap());
        ent += l.entropy;
    }
    let k = samples.len() as f64;
    (loss / k, ent / k)
}

/// Trains 30 steps on a 30-frame clip; returns (loss, entropy) of a fixed probe before and
/// after. The probe uses iterations far beyond the run: same images, other warps and noise.
fn thirty_steps(cfg: TrainConfig) -> [(f64, f64); 2] {
    let model = tiny();
    let data = clip(30, 128);
    let mut trainer = Trainer::new(&model, &data, cfg).unwrap();
    let samples: Vec<_> = (1000..1006).map(|i| trainer.sample(i).unwrap()).collect();
    let before = probe(&mut trainer, &samples);
    let start = Instant::now();
    let mut stats: Vec<StepStats> = Vec::new();
    while trainer.step() < 30 {
        stats.push(trainer.train_step().unwrap());
    }
    let per_step = start.elapsed().as_secs_f64() / 30.0;
    let after = probe(&mut trainer, &samples);
    println!(
        "probe loss {:.5} -> {:.5}, entropy {:.4} -> {:.4}; {per_step:.3} s/step",
        before.0, after.0, before.1, after.1
    );
    for s in &stats {
        assert!((s.sharpening + s.equivariance - s.loss).abs() < 1e-4 * s.loss.max(1e-6));
        assert!(s.loss.is_finite() && s.entropy.is_finite());
    }
    [before, after]
}

// lr 0.05 instead of 5e-3: with the reference rate 30 steps barely move the embeddings.
#[test]
fn thirty_steps_lower_the_loss() {
    let [(l0, _), (l1, _)] = thirty_steps(TrainConfig {
        lr: 0.05,
        ..small_config()
    });
    assert!(l1 < 0.95 * l0, "loss {l0} -> {l1}");
}

// With random weights the features are far from equivariant, and at the reference weights
// the equivariance term dominates and favours flat maps: the loss falls while the entropy
// stays put. With the sharpening term dominant the maps must sharpen.
#[test]
fn thirty_steps_sharpen_the_selected_maps() {
    let [(l0, e0), (l1, e1)] = thirty_steps(TrainConfig {
        lr: 0.05,
        equivariance_weight: 100.0,
        ..small_config()
    });
    assert!(l1 < l0, "loss {l0} -> {l1}");
    assert!(e1 < e0 - 0.03, "entropy {e0} -> {e1}");
}

fn run_to_end(
    model: &Model,
    data: &dyn TrainData,
    cfg: TrainConfig,
    opts: &RunOptions,
    stop_at: Option<usize>,
) -> Result<Outcome> {
    let mut trainer = Trainer::new(model, data, cfg)?;
    train::run(&mut trainer, opts, &mut |ev| match ev {
        Event::Step { stats, .. } if Some(stats.step) == stop_at => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
}

fn finished(o: Outcome) -> Tokens {
    match o {
        Outcome::Finished { tokens, .. } => *tokens,
        Outcome::Stopped { step } => panic!("stopped at {step}"),
    }
}

#[test]
fn resume_after_interruption_gives_identical_tokens() {
    let model = tiny();
    let data = clip(5, 128);
    let cfg = TrainConfig {
        steps: 5,
        batch_size: 2,
        flip: true,
        ..small_config()
    };
    let dir = temp_dir("resume");
    let plain = RunOptions::default();
    let whole = finished(run_to_end(&model, &data, cfg.clone(), &plain, None).unwrap());

    let ckpt = checkpoint_path(&dir.join("tokens.safetensors"));
    let opts = RunOptions {
        checkpoint: Some(ckpt.clone()),
        checkpoint_every: 2,
        resume: false,
    };
    // Interrupted after step 3: the checkpoint holds step 2, step 3 is redone on resume.
    match run_to_end(&model, &data, cfg.clone(), &opts, Some(3)).unwrap() {
        Outcome::Stopped { step } => assert_eq!(step, 3),
        o => panic!("{o:?}"),
    }
    assert!(ckpt.is_file());
    let resume = RunOptions {
        resume: true,
        ..opts.clone()
    };
    let resumed = finished(run_to_end(&model, &data, cfg.clone(), &resume, None).unwrap());
    assert_eq!(resumed.embeddings, whole.embeddings);
    assert_eq!(resumed.indices, whole.indices);
    assert_eq!(resumed.indices.len(), 4);
    assert_ne!(
        resumed.embeddings,
        Trainer::new(&model, &data, cfg.clone())
            .unwrap()
            .embeddings(),
        "training changed the embeddings"
    );

    // Metadata: model hash, hyper-parameters, selected indices.
    let out = dir.join("tokens.safetensors");
    resumed.save(&out).unwrap();
    let back = Tokens::load(&out).unwrap();
    assert_eq!(back.input_size, 128);
    assert_eq!(back.map_res, 32);
    let hash = train::model_config_hash(&tiny_dir()).unwrap();
    assert_eq!(back.extra["model_config_hash"], hash);
    let id = stablekeypoints::model::ModelIdentity::of(&tiny_dir()).unwrap();
    assert_eq!(back.extra["model_identity"], id.weights);
    let saved: TrainConfig = serde_json::from_str(&back.extra["train_config"]).unwrap();
    assert_eq!(saved, cfg);
    assert_eq!(
        back.extra["selected_indices"],
        format!("{:?}", back.indices)
    );

    // A checkpoint from other settings is refused with the difference named.
    let other = TrainConfig {
        lr: 1e-2,
        ..cfg.clone()
    };
    let e = run_to_end(&model, &data, other, &resume, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lr") && e.contains("different settings"), "{e}");
    // Checkpoint errors are their own, naming the checkpoint file.
    assert!(
        e.contains("tokens.ckpt.safetensors: checkpoint: made with different settings"),
        "{e}"
    );

    // A checkpoint of other weights is refused; one written before checkpoints recorded
    // the weights' identity (the configuration hash alone) still resumes.
    rewrite_metadata(&ckpt, |m| {
        m.insert("model_identity".into(), "w1-0000000000000000".into());
    });
    let e = run_to_end(&model, &data, cfg.clone(), &resume, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("made with a different model"), "{e}");
    rewrite_metadata(&ckpt, |m| {
        m.remove("model_identity");
    });
    let old = finished(run_to_end(&model, &data, cfg.clone(), &resume, None).unwrap());
    assert_eq!(old.embeddings, whole.embeddings);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rewrites a safetensors file's metadata in place.
fn rewrite_metadata(
    path: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, String>),
) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap_or_default();
    edit(&mut meta);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    safetensors::serialize_to_file(st.tensors(), Some(meta), path).unwrap();
}

/// Images that turn into NaN after a number of reads.
struct PoisonAfter {
    inner: MemoryImages,
    good_reads: usize,
    reads: Cell<usize>,
}

impl TrainData for PoisonAfter {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>> {
        self.reads.set(self.reads.get() + 1);
        let mut img = self.inner.image(index, size)?;
        if self.reads.get() > self.good_reads {
            img.iter_mut().for_each(|v| *v = f32::NAN);
        }
        Ok(img)
    }
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let model = tiny();
    let data = PoisonAfter {
        inner: clip(3, 128),
        good_reads: 2,
        reads: Cell::new(0),
    };
    let cfg = TrainConfig {
        steps: 5,
        map_res: 16,
        num_tokens: 16,
        ..small_config()
    };
    let dir = temp_dir("nan");
    let ckpt = dir.join("t.ckpt.safetensors");
    let opts = RunOptions {
        checkpoint: Some(ckpt.clone()),
        checkpoint_every: 1,
        resume: false,
    };
    let mut trainer = Trainer::new(&model, &data, cfg).unwrap();
    let mut steps_done = 0;
    let err = train::run(&mut trainer, &opts, &mut |ev| {
        if let Event::Step { stats, .. } = ev {
            steps_done = stats.step;
        }
        ControlFlow::Continue(())
    })
    .unwrap_err()
    .to_string();
    println!("{err}");
    assert_eq!(steps_done, 2);
    // NaN images give a non-finite loss or (the fused CPU map kernel clamps NaN logits) a
    // non-finite gradient; either stops the run.
    assert!(
        err.contains("non-finite") && err.contains("at step 3"),
        "{err}"
    );
    assert!(
        err.contains(&ckpt.display().to_string()) && err.contains("(step 2)"),
        "{err}"
    );
    // The checkpoint is the step-2 state, loadable and finite.
    let before = trainer.embeddings().to_vec();
    let mut fresh = Trainer::new(&model, &data, trainer.config().clone()).unwrap();
    fresh.load_checkpoint(&ckpt).unwrap();
    assert_eq!(fresh.step(), 2);
    assert_eq!(fresh.embeddings(), &before[..]);
    let _ = std::fs::remove_dir_all(&dir);
}

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
    let bin = env!("CARGO_BIN_EXE_stablekeypoints");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "train",
            "--model",
            tiny_dir().to_str().unwrap(),
            "--input",
            frames.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "3",
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
            "2",
            "--seed",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let res = std::process::Command::new(bin)
        .args(args(&[]))
        .output()
        .unwrap();
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

    // Resume of a finished run only redoes the vote: same tokens.
    let res = std::process::Command::new(bin)
        .args(args(&["--resume"]))
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(Tokens::load(&out).unwrap(), tok);

    // --resume without a checkpoint is a clear error.
    std::fs::remove_file(checkpoint_path(&out)).unwrap();
    let res = std::process::Command::new(bin)
        .args(args(&["--resume"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(stderr.contains("no checkpoint"), "{stderr}");

    // An empty folder is refused.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let res = std::process::Command::new(bin)
        .args(["train", "--model", tiny_dir().to_str().unwrap(), "--input"])
        .arg(&empty)
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(stderr.contains("no png/jpg images"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
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
