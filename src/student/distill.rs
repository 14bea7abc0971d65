//! Distillation: the teacher labels each image once (cached, resumable), then the student
//! learns to reproduce the teacher's keypoints as Gaussian heatmaps under the method's own
//! geometric warps and a photometric jitter, with Adam on host buffers so that checkpoints
//! hold the whole state and a resumed run continues exactly.

use super::labels::suffixed;
pub use super::labels::{label, labels_path, LabelEvent, LabelIdentity, Labels};
use super::net::{self, LAYERS, STRIDE};
use super::{StudentInfo, StudentWeights};
use crate::error::{Error, Result};
use crate::frame::CropMode;
use crate::ops::rng::{mix64, Rng};
use crate::ops::warp::{warp_plane_cpu, Affine, AugmentRanges, SamplePlan};
use crate::train::adam::Adam;
use crate::train::TrainData;
use crate::util::{safetensors_bytes, write_atomic, Fnv};
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The training checkpoint next to the student file.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    suffixed(out, ".ckpt.safetensors")
}

/// How the student is trained.
#[derive(Clone, Debug, PartialEq)]
pub struct DistillConfig {
    pub widths: [usize; 4],
    /// The student's input side.
    pub input_size: usize,
    pub crop: CropMode,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Standard deviation of the target Gaussians, in heatmap cells.
    pub sigma: f32,
    /// One item in `holdout_every` is held out (0: none).
    pub holdout_every: usize,
    pub seed: u64,
    /// The method's warps, applied to image and targets together.
    pub augment: AugmentRanges,
    /// Photometric jitter strength (brightness, contrast, saturation), 0 = none.
    pub jitter: f32,
    pub checkpoint_every: usize,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            widths: super::DEFAULT_WIDTHS,
            input_size: 128,
            crop: CropMode::Letterbox,
            steps: 3000,
            batch_size: 16,
            lr: 2e-3,
            sigma: 1.0,
            holdout_every: 10,
            seed: 0,
            augment: AugmentRanges::default(),
            jitter: 0.2,
            checkpoint_every: 100,
        }
    }
}

impl DistillConfig {
    /// Identity of the settings a checkpoint must share with the run that resumes it.
    fn fingerprint(&self, labels_hash: &str, k: usize) -> String {
        let mut h = Fnv::new();
        h.write(format!("{:?}|{labels_hash}|{k}", self.without_schedule()).as_bytes());
        h.hex()
    }

    /// The config without the fields a resumed run may change.
    fn without_schedule(&self) -> Self {
        Self {
            steps: 0,
            checkpoint_every: 0,
            ..self.clone()
        }
    }
}

/// One step's figures.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub seconds: f64,
}

pub enum DistillEvent<'a> {
    Resumed {
        step: usize,
    },
    Step {
        stats: &'a StepStats,
        eta_seconds: f64,
    },
    /// Mean distance between student and teacher keypoints on the held-out items, in pixels
    /// of the student input.
    Holdout {
        step: usize,
        error_px: f32,
    },
}

/// Student inputs held in memory: `[3, s, s]` planar RGB in [0, 1] per item.
pub struct Images {
    pub size: usize,
    pub images: Vec<Vec<f32>>,
}

impl Images {
    /// Every item of `data` at the student's size (read at `read_size`, then resized).
    pub fn read(data: &dyn TrainData, read_size: usize, size: usize) -> Result<Self> {
        let need = data.len() as u64 * (3 * size * size * 4) as u64;
        if let Some(avail) = crate::util::available_memory() {
            if need > avail / 2 {
                return Err(Error::Invalid(format!(
                    "{} student inputs of {size}x{size} need {} of memory, more than half of the {} available; use fewer frames or a smaller --student-size",
                    data.len(),
                    crate::util::human_bytes(need),
                    crate::util::human_bytes(avail)
                )));
            }
        }
        let images = (0..data.len())
            .map(|i| {
                let v = data.image(i, read_size)?;
                if read_size == size {
                    Ok(v)
                } else {
                    resize_planar(&v, read_size, size)
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { size, images })
    }
}

/// Bilinear (area-averaged when shrinking) resize of a `[3, from, from]` plane set.
fn resize_planar(v: &[f32], from: usize, to: usize) -> Result<Vec<f32>> {
    let t = Tensor::from_slice(v, (1, 3, from, from), &Device::Cpu)?;
    let t = crate::ops::resample::resize(&t, to, to, crate::ops::resample::Interp::Bilinear)?;
    Ok(t.flatten_all()?.to_vec1()?)
}

/// The trainer's whole state.
pub struct Distiller {
    pub cfg: DistillConfig,
    pub info: StudentInfo,
    params: Vec<(Vec<f32>, Vec<f32>)>,
    adam: Vec<(Adam, Adam)>,
    step: usize,
    fingerprint: String,
    train_items: Vec<usize>,
    holdout_items: Vec<usize>,
}

/// Per keypoint: the mean teacher confidence over `items` (the heatmap peak of 1).
fn confidence_scale(labels: &Labels, items: &[usize]) -> Vec<f32> {
    (0..labels.k)
        .map(|k| {
            let sum: f64 = items
                .iter()
                .map(|&i| labels.points[i][k][2].max(0.0) as f64)
                .sum();
            let mean = (sum / items.len().max(1) as f64) as f32;
            if mean > 0.0 && mean.is_finite() {
                mean
            } else {
                1.0
            }
        })
        .collect()
}

fn labels_hash(labels: &Labels) -> String {
    let mut h = Fnv::new();
    for p in labels.points.iter().flatten().flatten() {
        h.write(&p.to_bits().to_le_bytes());
    }
    h.hex()
}

impl Distiller {
    /// A new student with seeded He-initialised weights; `teacher` fills the identity
    /// fields of `info` (the widths, size, crop and scales are set here).
    pub fn new(cfg: DistillConfig, labels: &Labels, teacher: TeacherId) -> Result<Self> {
        if cfg.input_size == 0
            || !cfg.input_size.is_multiple_of(net::SIZE_MULTIPLE)
            || cfg.input_size > super::MAX_INPUT_SIZE
        {
            return Err(Error::Invalid(format!(
                "--student-size {}: must be a multiple of {} up to {}",
                cfg.input_size,
                net::SIZE_MULTIPLE,
                super::MAX_INPUT_SIZE
            )));
        }
        let n = labels.points.len();
        let (holdout_items, train_items): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| {
            cfg.holdout_every > 1 && i % cfg.holdout_every == cfg.holdout_every - 1
        });
        if train_items.is_empty() {
            return Err(Error::Invalid(format!(
                "{n} items leave none to train on after holding out one in {}",
                cfg.holdout_every
            )));
        }
        let k = labels.k;
        let info = StudentInfo {
            widths: cfg.widths,
            num_keypoints: k,
            input_size: cfg.input_size,
            crop: cfg.crop,
            teacher_model: teacher.model,
            tokens_hash: teacher.tokens_hash,
            token_indices: teacher.token_indices,
            confidence_scale: confidence_scale(labels, &train_items),
            extra: BTreeMap::new(),
        };
        info.validate().map_err(Error::Invalid)?;
        let params = StudentWeights::random(info.clone(), cfg.seed).layers;
        let adam = params
            .iter()
            .map(|(w, b)| (Adam::new(w.len(), cfg.lr), Adam::new(b.len(), cfg.lr)))
            .collect();
        Ok(Self {
            fingerprint: cfg.fingerprint(&labels_hash(labels), k),
            cfg,
            info,
            params,
            adam,
            step: 0,
            train_items,
            holdout_items,
        })
    }

    pub fn step(&self) -> usize {
        self.step
    }

    pub fn holdout_items(&self) -> &[usize] {
        &self.holdout_items
    }

    pub fn train_items(&self) -> &[usize] {
        &self.train_items
    }

    /// The student as it is now.
    pub fn weights(&self) -> StudentWeights {
        StudentWeights {
            info: self.info.clone(),
            layers: self.params.clone(),
        }
    }

    /// Learning rate at `step` (cosine decay to 5% of `lr`).
    fn lr_at(&self, step: usize) -> f64 {
        let t = step as f64 / self.cfg.steps.max(1) as f64;
        self.cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
    }

    /// One step on a batch drawn from the training items.
    pub fn train_step(&mut self, data: &Images, labels: &Labels) -> Result<StepStats> {
        let started = Instant::now();
        let k = labels.k;
        let bsz = self.cfg.batch_size;
        let (x, y) = self.batch(data, labels)?;
        let dev = Device::Cpu;
        let vars = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (w, b))| {
                let ws = net::weight_shape(&self.cfg.widths, k, i);
                Ok((
                    Var::from_tensor(&Tensor::from_slice(w, ws.to_vec(), &dev)?)?,
                    Var::from_tensor(&Tensor::from_slice(b, ws[0], &dev)?)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let pred = net::forward(&x, &|i, t| {
            super::graph::conv(t, vars[i].0.as_tensor(), vars[i].1.as_tensor(), LAYERS[i].4)
        })?;
        // Sum over a keypoint's cells, mean over keypoints and images: the loss does not
        // shrink with the map's size.
        let loss = ((pred - y)?.sqr()?.sum_all()? / (bsz * k) as f64)?;
        let lv = loss.to_scalar::<f32>()?;
        if !lv.is_finite() {
            return Err(Error::Invalid(format!(
                "the loss became {lv} at step {}; lower --lr",
                self.step + 1
            )));
        }
        self.descend(&loss.backward()?, &vars)?;
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            steps: self.cfg.steps,
            loss: lv,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The step's batch: images [B, 3, S, S] drawn and augmented with the step's own
    /// generator, and their heatmap targets [B, K, S/4, S/4].
    fn batch(&self, data: &Images, labels: &Labels) -> Result<(Tensor, Tensor)> {
        let s = self.cfg.input_size;
        let h = s / STRIDE;
        let k = labels.k;
        let bsz = self.cfg.batch_size;
        let mut rng = Rng::new(mix64(self.cfg.seed ^ mix64(self.step as u64 + 1)));
        let mut images = Vec::with_capacity(bsz * 3 * s * s);
        let mut targets = Vec::with_capacity(bsz * k * h * h);
        for _ in 0..bsz {
            let item = self.train_items[rng.below(self.train_items.len())];
            let (img, pts) = augmented(
                &data.images[item],
                &labels.points[item],
                s,
                &self.cfg.augment,
                self.cfg.jitter,
                &mut rng,
            );
            images.extend_from_slice(&img);
            targets.extend(heatmap_targets(
                &pts,
                &self.info.confidence_scale,
                h,
                self.cfg.sigma,
            ));
        }
        let dev = Device::Cpu;
        Ok((
            Tensor::from_vec(images, (bsz, 3, s, s), &dev)?,
            Tensor::from_vec(targets, (bsz, k, h, h), &dev)?,
        ))
    }

    /// One Adam step of every layer's weights and bias along `grads` of `vars`, at the
    /// step's learning rate.
    fn descend(&mut self, grads: &GradStore, vars: &[(Var, Var)]) -> Result<()> {
        let lr = self.lr_at(self.step);
        for (i, (w, b)) in self.params.iter_mut().enumerate() {
            let gw = grads
                .get(vars[i].0.as_tensor())
                .ok_or_else(|| Error::Invalid(format!("no gradient for layer {i}")))?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let gb = grads
                .get(vars[i].1.as_tensor())
                .ok_or_else(|| Error::Invalid(format!("no gradient for layer {i} bias")))?
                .to_vec1::<f32>()?;
            let (aw, ab) = &mut self.adam[i];
            aw.lr = lr;
            ab.lr = lr;
            aw.update(w, &gw);
            ab.update(b, &gb);
        }
        Ok(())
    }

    /// Mean distance (pixels of the student input) between the student's and the
    /// teacher's keypoints over `items`, unwarped.
    pub fn error_px(&self, images: &Images, labels: &Labels, items: &[usize]) -> Result<f32> {
        if items.is_empty() {
            return Ok(f32::NAN);
        }
        let student = super::Student::new(self.weights(), Path::new("(training)"), &Device::Cpu)?;
        let s = self.cfg.input_size;
        let mut sum = 0f64;
        let mut n = 0usize;
        for chunk in items.chunks(16) {
            let mut px = Vec::with_capacity(chunk.len() * 3 * s * s);
            for &i in chunk {
                px.extend_from_slice(&images.images[i]);
            }
            let x = Tensor::from_vec(px, (chunk.len(), 3, s, s), &Device::Cpu)?;
            let kps = student.keypoints_of(&student.heatmaps(&x)?)?;
            for (kp, &i) in kps.iter().zip(chunk) {
                for (p, t) in kp.iter().zip(&labels.points[i]) {
                    let (dx, dy) = ((p.x - t[0]) * s as f32, (p.y - t[1]) * s as f32);
                    sum += ((dx * dx + dy * dy) as f64).sqrt();
                    n += 1;
                }
            }
        }
        Ok((sum / n as f64) as f32)
    }

    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut data: Vec<(String, Vec<u8>, usize)> = Vec::new();
        let b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for (i, ((w, bias), (aw, ab))) in self.params.iter().zip(&self.adam).enumerate() {
            data.push((format!("{i}.w"), b(w), w.len()));
            data.push((format!("{i}.b"), b(bias), bias.len()));
            data.push((format!("{i}.w.m"), b(&aw.m), w.len()));
            data.push((format!("{i}.w.v"), b(&aw.v), w.len()));
            data.push((format!("{i}.b.m"), b(&ab.m), bias.len()));
            data.push((format!("{i}.b.v"), b(&ab.v), bias.len()));
        }
        let views = data
            .iter()
            .map(|(n, d, len)| {
                safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![*len], d)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| Error::Invalid(format!("checkpoint tensor {n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = BTreeMap::from([
            (
                "format".to_string(),
                "stablekeypoints-distill-checkpoint/1".to_string(),
            ),
            ("fingerprint".to_string(), self.fingerprint.clone()),
            ("step".to_string(), self.step.to_string()),
            ("steps".to_string(), self.cfg.steps.to_string()),
        ]);
        let bytes = safetensors_bytes(views, &meta).map_err(Error::Invalid)?;
        write_atomic(path, &bytes)
    }

    /// Restores a checkpoint of the same run (same teacher labels and settings but the
    /// step count); errors name the file and what differs.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: String| Error::checkpoint(path, m);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("unreadable checkpoint ({e})")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("fingerprint") != Some(&self.fingerprint) {
            return Err(bad(
                "made with other settings, another teacher or other data; distil anew without --resume".into(),
            ));
        }
        let step: usize = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no `step`".into()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("unreadable checkpoint ({e})")))?;
        let read = |name: String, len: usize| -> Result<Vec<f32>> {
            let t = st
                .tensor(&name)
                .map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if t.shape() != [len] {
                return Err(bad(format!("tensor `{name}` has shape {:?}", t.shape())));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())
        };
        for (i, ((w, b), (aw, ab))) in self.params.iter_mut().zip(&mut self.adam).enumerate() {
            *w = read(format!("{i}.w"), w.len())?;
            *b = read(format!("{i}.b"), b.len())?;
            aw.m = read(format!("{i}.w.m"), w.len())?;
            aw.v = read(format!("{i}.w.v"), w.len())?;
            ab.m = read(format!("{i}.b.m"), b.len())?;
            ab.v = read(format!("{i}.b.v"), b.len())?;
            aw.step = step as u64;
            ab.step = step as u64;
        }
        self.step = step;
        Ok(())
    }

    /// Steps to `cfg.steps`, checkpointing every `checkpoint_every` steps and at the end;
    /// `Ok(false)`: stopped by `on_event` (after a checkpoint).
    pub fn run(
        &mut self,
        images: &Images,
        labels: &Labels,
        checkpoint: &Path,
        holdout_every_steps: usize,
        on_event: &mut dyn FnMut(DistillEvent) -> ControlFlow<()>,
    ) -> Result<bool> {
        let first = self.step;
        let start = Instant::now();
        while self.step < self.cfg.steps {
            let stats = self.train_step(images, labels)?;
            let due = self.step == self.cfg.steps
                || (self.cfg.checkpoint_every > 0
                    && self.step.is_multiple_of(self.cfg.checkpoint_every));
            if due {
                self.save_checkpoint(checkpoint)?;
            }
            if holdout_every_steps > 0
                && (self.step.is_multiple_of(holdout_every_steps) || self.step == self.cfg.steps)
                && !self.holdout_items.is_empty()
            {
                let error_px = self.error_px(images, labels, &self.holdout_items)?;
                let _ = on_event(DistillEvent::Holdout {
                    step: self.step,
                    error_px,
                });
            }
            let per = start.elapsed().as_secs_f64() / (self.step - first) as f64;
            let eta_seconds = per * (self.cfg.steps - self.step) as f64;
            if on_event(DistillEvent::Step {
                stats: &stats,
                eta_seconds,
            })
            .is_break()
            {
                self.save_checkpoint(checkpoint)?;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Refuses to start a new run over the checkpoint of an unfinished one (which `--resume`
/// would continue).
pub fn refuse_unfinished(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    let Ok((_, header)) = safetensors::SafeTensors::read_metadata(&bytes) else {
        return Ok(());
    };
    let meta = header.metadata().clone().unwrap_or_default();
    let num = |k: &str| meta.get(k).and_then(|s| s.parse::<usize>().ok());
    match (num("step"), num("steps")) {
        (Some(step), Some(steps)) if step < steps => Err(Error::checkpoint(
            path,
            format!(
                "holds an unfinished distillation (step {step} of {steps}); continue it with \
                 --resume, or remove the file to distil anew"
            ),
        )),
        _ => Ok(()),
    }
}

/// The teacher's identity as a student file records it.
#[derive(Clone, Debug)]
pub struct TeacherId {
    pub model: String,
    pub tokens_hash: String,
    pub token_indices: Vec<usize>,
}

/// An item under a random warp and photometric jitter, with its keypoints moved alike.
/// Points are `[x, y, confidence]` normalised to the square; a point warped outside it keeps
/// its coordinates (its heatmap is then empty).
pub fn augmented(
    image: &[f32],
    points: &[[f32; 3]],
    s: usize,
    ranges: &AugmentRanges,
    jitter: f32,
    rng: &mut Rng,
) -> (Vec<f32>, Vec<[f32; 3]>) {
    let theta = Affine::random_in(rng, ranges);
    let plan = SamplePlan::new(&theta, s, s, s, s);
    let mut out = vec![0f32; 3 * s * s];
    for c in 0..3 {
        warp_plane_cpu(
            &plan,
            &image[c * s * s..(c + 1) * s * s],
            &mut out[c * s * s..(c + 1) * s * s],
        );
    }
    let pts = points.iter().map(|&p| warp_point(&theta, p)).collect();
    if jitter > 0.0 {
        let j = jitter as f64;
        let bright = rng.uniform_range(-j, j) as f32 * 0.5;
        let contrast = rng.uniform_range(1.0 - j, 1.0 + j) as f32;
        let sat = rng.uniform_range(1.0 - j, 1.0 + j) as f32;
        let plane = s * s;
        let mean = out.iter().sum::<f32>() / out.len() as f32;
        for p in 0..plane {
            let (r, g, b) = (out[p], out[plane + p], out[2 * plane + p]);
            let grey = 0.299 * r + 0.587 * g + 0.114 * b;
            for (c, v) in [r, g, b].into_iter().enumerate() {
                let v = grey + (v - grey) * sat;
                let v = mean + (v - mean) * contrast + bright;
                out[c * plane + p] = v.clamp(0.0, 1.0);
            }
        }
    }
    (out, pts)
}

/// Where the warp of [`augmented`] moves a point: the output at q samples the input at
/// theta·q, so an input point p lands at theta⁻¹·p (normalised [-1, 1] coordinates).
pub fn warp_point(theta: &Affine, p: [f32; 3]) -> [f32; 3] {
    let inv = theta.inverse().theta;
    let (x, y) = (2.0 * p[0] - 1.0, 2.0 * p[1] - 1.0);
    let qx = inv[0][0] * x + inv[0][1] * y + inv[0][2];
    let qy = inv[1][0] * x + inv[1][1] * y + inv[1][2];
    [(qx + 1.0) / 2.0, (qy + 1.0) / 2.0, p[2]]
}

/// `[K, h, h]` Gaussian heatmaps of normalised points, each of height confidence / scale.
pub fn heatmap_targets(points: &[[f32; 3]], scale: &[f32], h: usize, sigma: f32) -> Vec<f32> {
    let mut out = vec![0f32; points.len() * h * h];
    let inv = 1.0 / (2.0 * sigma * sigma);
    for (k, p) in points.iter().enumerate() {
        if !(0.0..1.0).contains(&p[0]) || !(0.0..1.0).contains(&p[1]) {
            continue;
        }
        let amp = (p[2] / scale[k]).clamp(0.0, 4.0);
        let (cx, cy) = (p[0] * h as f32 - 0.5, p[1] * h as f32 - 0.5);
        let m = &mut out[k * h * h..(k + 1) * h * h];
        for y in 0..h {
            let dy = y as f32 - cy;
            for x in 0..h {
                let dx = x as f32 - cx;
                m[y * h + x] = amp * (-(dx * dx + dy * dy) * inv).exp();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warped_point_lands_where_its_pixel_goes() {
        // One bright pixel; after the warp the brightest output pixel is where warp_point
        // puts the pixel's centre.
        let s = 64;
        let (py, px) = (20usize, 41usize);
        let mut img = vec![0f32; 3 * s * s];
        for c in 0..3 {
            img[c * s * s + py * s + px] = 1.0;
        }
        let p = [
            (px as f32 + 0.5) / s as f32,
            (py as f32 + 0.5) / s as f32,
            1.0,
        ];
        let ranges = AugmentRanges {
            degrees: 20.0,
            scale: [0.9, 1.1],
            translate: [0.1, 0.1],
        };
        for seed in 0..8 {
            let mut rng = Rng::new(seed);
            let (out, pts) = augmented(&img, &[p], s, &ranges, 0.0, &mut rng);
            let plane = &out[..s * s];
            let best = (0..s * s)
                .max_by(|&a, &b| plane[a].total_cmp(&plane[b]))
                .unwrap();
            let (by, bx) = ((best / s) as f32 + 0.5, (best % s) as f32 + 0.5);
            let (qx, qy) = (pts[0][0] * s as f32, pts[0][1] * s as f32);
            assert!(
                (bx - qx).abs() <= 1.0 && (by - qy).abs() <= 1.0,
                "seed {seed}: brightest pixel at ({bx}, {by}), point at ({qx}, {qy})"
            );
        }
    }

    #[test]
    fn heatmap_targets_peak_at_the_point_with_its_confidence() {
        let h = 16;
        let t = heatmap_targets(&[[0.25, 0.75, 0.5], [1.5, 0.5, 1.0]], &[0.25, 1.0], h, 1.0);
        let m = &t[..h * h];
        let (x, y, v) = net::heatmap_peak(m, h, h);
        assert!(
            (x - 0.25).abs() < 1e-3 && (y - 0.75).abs() < 1e-3,
            "{x} {y}"
        );
        // 0.25 normalised = cell 3.5: the nearest cells are half a cell away.
        let expected = 2.0 * (-0.25f32 / 2.0 - 0.25 / 2.0).exp();
        assert!((v - expected).abs() < 1e-5, "{v} vs {expected}");
        assert!(
            t[h * h..].iter().all(|&v| v == 0.0),
            "a point outside has no target"
        );
    }
}
