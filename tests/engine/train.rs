//! Training on the tiny model: gradients against finite differences, loss and sharpness
//! going down, checkpoint/resume identity, NaN handling (the command: the CLI's tests).

use candle_core::{DType, Device, Tensor, Var};
use stablekeypoints::train::{
    self, checkpoint_path, Event, MemoryImages, Outcome, RunOptions, StepStats, TrainConfig,
    TrainData, Trainer,
};
use stablekeypoints::{Model, Result, Tokens};
use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use crate::common::data;
use crate::common::images::frame;
use crate::common::temp::temp_dir;

fn tiny() -> Model {
    Model::load(&data("tiny-sd1"), &Device::Cpu, DType::F32).unwrap()
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
    let hash = train::model_config_hash(&crate::common::data("tiny-sd1")).unwrap();
    assert_eq!(back.extra["model_config_hash"], hash);
    let id = stablekeypoints::model::ModelIdentity::of(&crate::common::data("tiny-sd1")).unwrap();
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
