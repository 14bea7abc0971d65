//! Unsupervised training of the token embeddings (method.md section 3).
//!
//! Each optimiser step accumulates the gradient of `batch_size` images. Per image, an
//! untracked batch-2 pass gives all N maps of the image and of a random affine warp of it;
//! tokens are selected on host copies (Gaussian-KL candidates, furthest point sampling on
//! the warped maps) and the sharpening and equivariance MSEs are differentiated with respect
//! to the K selected maps. Then each of the two images gets a tracked pass (K maps, softmax
//! still over all N) with the embeddings as a [`Var`] - only they are variables - and is
//! backpropagated with those map gradients. After training, the K keypoint tokens are
//! chosen by a vote over `num_indices` images.
//!
//! Randomness is a pure function of `(seed, stream, index)`: the initial embeddings, which
//! image each iteration sees, its flip, warp and noise. A run resumed from a checkpoint
//! (embeddings, Adam moments, step) therefore continues exactly like an uninterrupted one.

pub mod adam;
pub mod loss;
pub mod select;

use crate::error::{Error, Result};
use crate::model::{MapSpec, Model};
use crate::ops::rng::Rng;
use crate::ops::warp::{warp, Affine, SamplePlan};
use crate::tokens::{self, Tokens};
use adam::Adam;
use candle_core::{DType, Tensor, Var};
use loss::{loss_terms, select as select_tokens, to_host, vote_pick, LossTerms, Selection};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Training hyper-parameters; `Default` is the reference's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Images per optimiser step (gradient accumulation).
    pub batch_size: usize,
    pub lr: f64,
    /// N, the number of token embeddings.
    pub num_tokens: usize,
    /// K, the keypoints kept (furthest point samples per image and vote winners).
    pub num_keypoints: usize,
    /// Gaussian-KL candidates per image.
    pub num_candidates: usize,
    /// Images in the final vote.
    pub num_indices: usize,
    /// Square model input side.
    pub input_size: usize,
    /// Map resolution R.
    pub map_res: usize,
    pub num_layers: usize,
    pub timestep: usize,
    /// Gaussian sigma (pixels at R) of the ranking and the sharpening targets.
    pub sigma: f32,
    pub sharpening_weight: f64,
    pub equivariance_weight: f64,
    /// Random horizontal flip of each image (training and vote), as the reference's Tai-Chi set.
    pub flip: bool,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 500,
            batch_size: 4,
            lr: 5e-3,
            num_tokens: 500,
            num_keypoints: 10,
            num_candidates: 25,
            num_indices: 100,
            input_size: tokens::DEFAULT_INPUT_SIZE,
            map_res: tokens::DEFAULT_MAP_RES,
            num_layers: tokens::DEFAULT_NUM_LAYERS,
            timestep: tokens::DEFAULT_TIMESTEP,
            sigma: loss::SIGMA,
            sharpening_weight: loss::SHARPENING_WEIGHT,
            equivariance_weight: loss::EQUIVARIANCE_WEIGHT,
            flip: false,
            seed: 0,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if self.num_keypoints == 0 || self.num_keypoints > self.num_candidates {
            return bad(format!(
                "need 1 <= num_keypoints ({}) <= num_candidates ({})",
                self.num_keypoints, self.num_candidates
            ));
        }
        if self.num_candidates > self.num_tokens {
            return bad(format!(
                "num_candidates ({}) cannot exceed num_tokens ({})",
                self.num_candidates, self.num_tokens
            ));
        }
        if self.num_indices == 0 {
            return bad("the vote needs at least one image (num_indices)".into());
        }
        if self.map_res == 0 || self.num_layers == 0 || self.timestep >= 1000 {
            return bad(format!(
                "invalid map_res {}, num_layers {} or timestep {}",
                self.map_res, self.num_layers, self.timestep
            ));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return bad(format!("sigma {} must be positive", self.sigma));
        }
        Ok(())
    }

    pub fn map_spec(&self) -> MapSpec {
        MapSpec {
            timestep: self.timestep,
            num_layers: self.num_layers,
            map_res: self.map_res,
        }
    }

    /// Settings that must match for a checkpoint to be resumed (all but `steps`).
    fn resume_key(&self) -> Self {
        Self {
            steps: 0,
            ..self.clone()
        }
    }
}

/// Training images: planar RGB `[3, size, size]` in [0, 1] on request.
pub trait TrainData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image `index` as the square model input of side `size`.
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>>;
    /// Identifies the data set in checkpoints (resume refuses a different one).
    fn fingerprint(&self) -> String {
        format!("{} images", self.len())
    }
}

/// Images already at the model input size, held in memory.
#[derive(Clone, Debug)]
pub struct MemoryImages {
    pub size: usize,
    pub images: Vec<Vec<f32>>,
}

impl TrainData for MemoryImages {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn image(&self, index: usize, size: usize) -> Result<Vec<f32>> {
        if size != self.size {
            return Err(Error::Invalid(format!(
                "in-memory images are {0}x{0}, the model input is {size}x{size}",
                self.size
            )));
        }
        let img = &self.images[index];
        if img.len() != 3 * size * size {
            return Err(Error::Invalid(format!(
                "image {index} has {} values, expected 3x{size}x{size}",
                img.len()
            )));
        }
        Ok(img.clone())
    }
    fn fingerprint(&self) -> String {
        let mut h = Fnv::new();
        for img in &self.images {
            for v in img {
                h.write(&v.to_le_bytes());
            }
        }
        format!("{} images, {}", self.images.len(), h.hex())
    }
}

/// 64-bit FNV-1a, for fingerprints (not security).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Hash of the model's `unet/config.json` and `vae/config.json` (keys sorted, `_`-prefixed
/// bookkeeping keys such as `_diffusers_version` dropped), recorded in tokens and checkpoints.
pub fn model_config_hash(dir: &Path) -> Result<String> {
    fn canon(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().filter(|k| !k.starts_with('_')).collect();
                keys.sort();
                out.push('{');
                for k in keys {
                    out.push_str(&serde_json::to_string(k).expect("string"));
                    out.push(':');
                    canon(&m[k], out);
                    out.push(',');
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for x in a {
                    canon(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut h = Fnv::new();
    for part in ["unet", "vae"] {
        let p = dir.join(part).join("config.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::config(&p, e.to_string()))?;
        let mut s = String::new();
        canon(&v, &mut s);
        h.write(part.as_bytes());
        h.write(s.as_bytes());
    }
    Ok(h.hex())
}

/// Random streams (tags of [`stream`]).
const STREAM_INIT: u64 = 1;
const STREAM_ORDER: u64 = 2;
const STREAM_ITER: u64 = 3;
const STREAM_VOTE_ORDER: u64 = 4;
const STREAM_VOTE: u64 = 5;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Independent generator for `(seed, tag, index)`.
fn stream(seed: u64, tag: u64, index: u64) -> Rng {
    Rng::new(mix64(mix64(mix64(seed) ^ tag) ^ index))
}

/// Item `i` of an endless sequence of seeded shuffles of `0..n` (one permutation per epoch,
/// like a shuffling data loader).
fn shuffled_index(seed: u64, tag: u64, i: u64, n: usize) -> usize {
    let n64 = n as u64;
    let mut rng = stream(seed, tag, i / n64);
    let mut perm: Vec<usize> = (0..n).collect();
    for j in (1..n).rev() {
        perm.swap(j, rng.below(j + 1));
    }
    perm[(i % n64) as usize]
}

fn token_tensor(tokens: &[usize], dev: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    Ok(Tensor::from_vec(v, tokens.len(), dev)?)
}

fn flip_horizontal(img: &mut [f32], size: usize) {
    for row in img.chunks_exact_mut(size) {
        row.reverse();
    }
}

/// Everything random about one training iteration, ready for the UNet.
#[derive(Clone, Debug)]
pub struct ImageSample {
    /// Global iteration number (`step * batch_size + j`).
    pub iteration: u64,
    /// Data set index of the image.
    pub image: usize,
    pub flipped: bool,
    /// The augmentation warp T.
    pub affine: Affine,
    /// Latents of the image and of T(image), `[2, C, h, w]`.
    pub latents: Tensor,
    /// Noise for both, `[2, C, h, w]`.
    pub noise: Tensor,
}

/// Loss of one image.
#[derive(Clone, Debug)]
pub struct SampleLoss {
    pub terms: LossTerms,
    /// Weighted total (scalar tensor, tracked when the embeddings are).
    pub total: Tensor,
    pub selection: Selection,
    /// Mean entropy of the selected tokens' maps of the image (lower = sharper).
    pub entropy: f64,
}

/// Loss of one image and its gradient with respect to the embeddings.
#[derive(Clone, Debug)]
pub struct SampleGrad {
    /// Weighted total, times the requested scale.
    pub loss: f64,
    /// Weighted terms, times the scale (they add up to `loss`).
    pub sharpening: f64,
    pub equivariance: f64,
    /// Mean entropy of the selected tokens' maps of the image.
    pub entropy: f64,
    pub selection: Selection,
    /// d loss / d embeddings, row-major `[N, context_dim]` (zero when the loss is not finite).
    pub grad: Vec<f32>,
}

/// Per-step figures, averaged over the batch; the loss terms are weighted (they add up to
/// `loss`), as the reference logs them.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// Optimiser steps done, including this one.
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub sharpening: f64,
    pub equivariance: f64,
    pub entropy: f64,
    pub seconds: f64,
}

/// The training state: embeddings, Adam, step counter, and a latent cache.
pub struct Trainer<'a> {
    model: &'a Model,
    data: &'a dyn TrainData,
    cfg: TrainConfig,
    embeddings: Vec<f32>,
    adam: Adam,
    step: usize,
    latents: HashMap<(usize, bool), Tensor>,
    model_hash: String,
}

const CHECKPOINT_FORMAT: &str = "stablekeypoints-train-checkpoint/1";

impl<'a> Trainer<'a> {
    /// Fresh state: embeddings drawn from N(0, 1) with the config's seed.
    pub fn new(model: &'a Model, data: &'a dyn TrainData, cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        model.check_input_size(cfg.input_size)?;
        if data.is_empty() {
            return Err(Error::Invalid("no training images".into()));
        }
        let len = cfg.num_tokens * model.context_dim();
        let mut embeddings = vec![0f32; len];
        stream(cfg.seed, STREAM_INIT, 0).fill_normal(&mut embeddings);
        Ok(Self {
            model,
            data,
            adam: Adam::new(len, cfg.lr),
            cfg,
            embeddings,
            step: 0,
            latents: HashMap::new(),
            model_hash: model_config_hash(&model.dir)?,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Optimiser steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Current embeddings, row-major `[N, context_dim]`.
    pub fn embeddings(&self) -> &[f32] {
        &self.embeddings
    }

    pub fn model_hash(&self) -> &str {
        &self.model_hash
    }

    /// The embeddings as an (untracked) tensor on the model's device.
    pub fn embeddings_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.embeddings,
            (self.cfg.num_tokens, self.model.context_dim()),
            &self.model.device,
        )?)
    }

    fn image_tensor(&self, index: usize, flip: bool) -> Result<Tensor> {
        let s = self.cfg.input_size;
        let mut img = self.data.image(index, s)?;
        if img.len() != 3 * s * s {
            return Err(Error::Invalid(format!(
                "training image {index} has {} values, expected 3x{s}x{s}",
                img.len()
            )));
        }
        if flip {
            flip_horizontal(&mut img, s);
        }
        Ok(Tensor::from_vec(img, (3, s, s), &self.model.device)?)
    }

    /// Latent of image `index` (flipped or not), encoded once and cached: it does not
    /// depend on the embeddings.
    fn latent(&mut self, index: usize, flip: bool, image: Option<&Tensor>) -> Result<Tensor> {
        if let Some(z) = self.latents.get(&(index, flip)) {
            return Ok(z.clone());
        }
        let img = match image {
            Some(t) => t.clone(),
            None => self.image_tensor(index, flip)?,
        };
        let z = self.model.encode(&img.unsqueeze(0)?)?;
        self.latents.insert((index, flip), z.clone());
        Ok(z)
    }

    /// Image, flip, warp and noise of global iteration `iteration`.
    pub fn sample(&mut self, iteration: u64) -> Result<ImageSample> {
        let image = shuffled_index(self.cfg.seed, STREAM_ORDER, iteration, self.data.len());
        let mut rng = stream(self.cfg.seed, STREAM_ITER, iteration);
        let flipped = self.cfg.flip && rng.uniform() < 0.5;
        let affine = Affine::random(&mut rng);
        let s = self.cfg.input_size;
        let img = self.image_tensor(image, flipped)?;
        let z = self.latent(image, flipped, Some(&img))?;
        let warped = warp(&img, &SamplePlan::new(&affine, s, s, s, s))?;
        let zw = self.model.encode(&warped.unsqueeze(0)?)?;
        let latents = Tensor::cat(&[&z, &zw], 0)?;
        let mut noise = vec![0f32; latents.elem_count()];
        rng.fill_normal(&mut noise);
        let noise = Tensor::from_vec(noise, latents.shape(), &self.model.device)?;
        Ok(ImageSample {
            iteration,
            image,
            flipped,
            affine,
            latents,
            noise,
        })
    }

    /// Loss of one sample for embeddings `emb` `[N, context_dim]` (a `Var` for gradients).
    /// `fixed` reuses a selection instead of choosing the tokens from these maps.
    pub fn sample_loss(
        &self,
        emb: &Tensor,
        sample: &ImageSample,
        fixed: Option<&Selection>,
    ) -> Result<SampleLoss> {
        let (n, r) = (self.cfg.num_tokens, self.cfg.map_res);
        let spec = self.cfg.map_spec();
        let dev = &self.model.device;
        // The selection needs all N maps but no gradient: an untracked pass. The tracked pass
        // then keeps only the K selected maps (softmax still over all N), so no [N, R, R]
        // tensor is part of the graph (tiny model, N = 500, R = 128: 3.0 s and 0.4 GB per
        // image pair against 3.9 s and 2.7 GB for one tracked pass over all N maps).
        // Training uses the same passes through `sample_grad`.
        let selection = match fixed {
            Some(s) => s.clone(),
            None => {
                let ctx = self.model.prepare_context(&emb.detach())?;
                let maps = self.model.maps_from_latent(
                    &sample.latents,
                    Some(&sample.noise),
                    &ctx,
                    &spec,
                    None,
                )?; // [2, N, R, R]
                let host = to_host(&maps)?;
                let plane = n * r * r;
                select_tokens(
                    &host[..plane],
                    &host[plane..],
                    n,
                    r,
                    self.cfg.num_candidates,
                    self.cfg.num_keypoints,
                    self.cfg.sigma,
                )
            }
        };
        let k = selection.tokens.len();
        let ctx = self.model.prepare_context(emb)?;
        let maps = self.model.maps_from_latent(
            &sample.latents,
            Some(&sample.noise),
            &ctx,
            &spec,
            Some(&token_tensor(&selection.tokens, dev)?),
        )?; // [2, K, R, R]
        let entropy = to_host(&maps.get(0)?)?
            .chunks_exact(r * r)
            .map(select::map_entropy)
            .sum::<f64>()
            / k.max(1) as f64;
        // The maps are already the selected ones, in selection order.
        let local = Selection {
            tokens: (0..k).collect(),
            ..selection.clone()
        };
        let back = SamplePlan::new(&sample.affine.inverse(), r, r, r, r)
            .to_device(maps.device(), maps.dtype())?;
        let terms = loss_terms(&maps.get(0)?, &maps.get(1)?, &local, &back, self.cfg.sigma)?;
        let total = terms.total(self.cfg.sharpening_weight, self.cfg.equivariance_weight)?;
        Ok(SampleLoss {
            terms,
            total,
            selection,
            entropy,
        })
    }

    /// Loss of one sample and its gradient with respect to the embeddings (`emb`, row-major
    /// `[N, context_dim]`), the loss scaled by `scale`. Same value and gradient as
    /// [`Self::sample_loss`], but the graph of only one image is alive at a time: the loss is
    /// differentiated with respect to the selected maps first (maps taken from the untracked
    /// pass), then each image's tracked pass is backpropagated with those map gradients.
    /// This halves peak memory, which decides whether SD 1.5 at 512 fits in RAM.
    pub fn sample_grad(
        &self,
        emb: &[f32],
        sample: &ImageSample,
        fixed: Option<&Selection>,
        scale: f64,
    ) -> Result<SampleGrad> {
        let (n, r) = (self.cfg.num_tokens, self.cfg.map_res);
        let c = self.model.context_dim();
        let spec = self.cfg.map_spec();
        let dev = &self.model.device;
        let emb_t = Tensor::from_slice(emb, (n, c), dev)?;
        let plane = r * r;
        // Untracked pass: selection (on all N maps) and the values of the K selected maps.
        let (selection, values) = match fixed {
            None => {
                let ctx = self.model.prepare_context(&emb_t)?;
                let maps = self.model.maps_from_latent(
                    &sample.latents,
                    Some(&sample.noise),
                    &ctx,
                    &spec,
                    None,
                )?;
                let host = to_host(&maps)?; // [2, N, R, R]
                let sel = select_tokens(
                    &host[..n * plane],
                    &host[n * plane..],
                    n,
                    r,
                    self.cfg.num_candidates,
                    self.cfg.num_keypoints,
                    self.cfg.sigma,
                );
                let mut v = Vec::with_capacity(2 * sel.tokens.len() * plane);
                for img in 0..2 {
                    for &t in &sel.tokens {
                        let o = (img * n + t) * plane;
                        v.extend_from_slice(&host[o..o + plane]);
                    }
                }
                (sel, v)
            }
            Some(sel) => {
                let ctx = self.model.prepare_context(&emb_t)?;
                let maps = self.model.maps_from_latent(
                    &sample.latents,
                    Some(&sample.noise),
                    &ctx,
                    &spec,
                    Some(&token_tensor(&sel.tokens, dev)?),
                )?;
                (sel.clone(), to_host(&maps)?)
            }
        };
        let k = selection.tokens.len();
        // Loss on leaf copies of the selected maps -> dL/dM for both images.
        let leaves = Var::from_vec(values, (2, k, r, r), dev)?;
        let local = Selection {
            tokens: (0..k).collect(),
            ..selection.clone()
        };
        let back =
            SamplePlan::new(&sample.affine.inverse(), r, r, r, r).to_device(dev, DType::F32)?;
        let m = leaves.as_tensor();
        let terms = loss_terms(&m.get(0)?, &m.get(1)?, &local, &back, self.cfg.sigma)?;
        let total =
            (terms.total(self.cfg.sharpening_weight, self.cfg.equivariance_weight)? * scale)?;
        let scalar = |t: &Tensor| -> Result<f64> {
            Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
        };
        let loss = scalar(&total)?;
        let entropy = to_host(&m.get(0)?)?
            .chunks_exact(plane)
            .map(select::map_entropy)
            .sum::<f64>()
            / k.max(1) as f64;
        let mut out = SampleGrad {
            loss,
            sharpening: scalar(&terms.sharpening)? * self.cfg.sharpening_weight * scale,
            equivariance: scalar(&terms.equivariance)? * self.cfg.equivariance_weight * scale,
            entropy,
            selection,
            grad: vec![0f32; n * c],
        };
        if !loss.is_finite() {
            return Ok(out);
        }
        let dmaps = total.backward()?.get(m).cloned().unwrap_or(m.zeros_like()?);
        // Tracked pass per image: backpropagate sum(maps * dL/dmaps).
        let idx = token_tensor(&out.selection.tokens, dev)?;
        for img in 0..2 {
            let var = Var::from_tensor(&emb_t)?;
            let ctx = self.model.prepare_context(var.as_tensor())?;
            let maps = self.model.maps_from_latent(
                &sample.latents.narrow(0, img, 1)?,
                Some(&sample.noise.narrow(0, img, 1)?),
                &ctx,
                &spec,
                Some(&idx),
            )?; // [1, K, R, R]
            let surrogate = (maps.get(0)? * dmaps.get(img)?)?.sum_all()?;
            if let Some(g) = surrogate.backward()?.get(var.as_tensor()) {
                for (a, v) in out.grad.iter_mut().zip(to_host(g)?) {
                    *a += v;
                }
            }
        }
        Ok(out)
    }

    /// One optimiser step over `batch_size` images. A non-finite loss or gradient is an
    /// error and leaves the state untouched.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let start = Instant::now();
        let b = self.cfg.batch_size;
        let mut grad = vec![0f32; self.embeddings.len()];
        let (mut loss, mut sharp, mut equi, mut entropy) = (0f64, 0f64, 0f64, 0f64);
        for j in 0..b {
            let iteration = (self.step * b + j) as u64;
            let sample = self.sample(iteration)?;
            // Each image's loss is divided by the batch size, as the reference accumulates.
            let out = self.sample_grad(&self.embeddings, &sample, None, 1.0 / b as f64)?;
            if !out.loss.is_finite() {
                return Err(Error::Invalid(format!(
                    "non-finite loss ({}) at step {} (iteration {iteration}, image {})",
                    out.loss,
                    self.step + 1,
                    sample.image
                )));
            }
            for (a, v) in grad.iter_mut().zip(&out.grad) {
                *a += v;
            }
            loss += out.loss;
            sharp += out.sharpening;
            equi += out.equivariance;
            entropy += out.entropy / b as f64;
        }
        if let Some(i) = grad.iter().position(|g| !g.is_finite()) {
            return Err(Error::Invalid(format!(
                "non-finite gradient at step {} (embedding value {i})",
                self.step + 1
            )));
        }
        self.adam.update(&mut self.embeddings, &grad);
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            steps: self.cfg.steps,
            loss,
            sharpening: sharp,
            equivariance: equi,
            entropy,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The dataset-wide vote: for `num_indices` images, Gaussian-KL candidates and furthest
    /// point sampling on the image's maps; returns the K most picked `(token, count)`.
    pub fn vote(&mut self, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<(usize, usize)>> {
        let (n, r) = (self.cfg.num_tokens, self.cfg.map_res);
        let ctx = self.model.prepare_context(&self.embeddings_tensor()?)?;
        let total = self.cfg.num_indices;
        let mut picks = Vec::with_capacity(total);
        for v in 0..total as u64 {
            let image = shuffled_index(self.cfg.seed, STREAM_VOTE_ORDER, v, self.data.len());
            let mut rng = stream(self.cfg.seed, STREAM_VOTE, v);
            let flip = self.cfg.flip && rng.uniform() < 0.5;
            let z = self.latent(image, flip, None)?;
            let mut noise = vec![0f32; z.elem_count()];
            rng.fill_normal(&mut noise);
            let noise = Tensor::from_vec(noise, z.shape(), &self.model.device)?;
            let maps =
                self.model
                    .maps_from_latent(&z, Some(&noise), &ctx, &self.cfg.map_spec(), None)?;
            let host = to_host(&maps)?;
            picks.push(vote_pick(
                &host,
                n,
                r,
                self.cfg.num_candidates,
                self.cfg.num_keypoints,
                self.cfg.sigma,
            ));
            progress(v as usize + 1, total);
        }
        Ok(select::vote(&picks, self.cfg.num_keypoints))
    }

    /// The tokens file for the current embeddings and the vote result.
    pub fn tokens(&self, votes: &[(usize, usize)]) -> Result<Tokens> {
        let indices: Vec<usize> = votes.iter().map(|v| v.0).collect();
        let mut t = Tokens::new(
            self.embeddings.clone(),
            self.cfg.num_tokens,
            self.model.context_dim(),
            indices.clone(),
        )?;
        t.input_size = self.cfg.input_size;
        t.map_res = self.cfg.map_res;
        t.num_layers = self.cfg.num_layers;
        t.timestep = self.cfg.timestep;
        let counts: Vec<usize> = votes.iter().map(|v| v.1).collect();
        for (k, v) in [
            ("generator", "stablekeypoints train".to_string()),
            ("model_config_hash", self.model_hash.clone()),
            (
                "train_config",
                serde_json::to_string(&self.cfg).expect("config serialises"),
            ),
            ("train_steps_done", self.step.to_string()),
            ("data_fingerprint", self.data.fingerprint()),
            ("selected_indices", format!("{indices:?}")),
            ("selected_counts", format!("{counts:?}")),
        ] {
            t.extra.insert(k.to_string(), v);
        }
        Ok(t)
    }

    /// Writes embeddings, Adam state and step atomically (temporary file + rename).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let (n, c) = (self.cfg.num_tokens, self.model.context_dim());
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (e, m, v) = (
            bytes(&self.embeddings),
            bytes(&self.adam.m),
            bytes(&self.adam.v),
        );
        fn view(d: &[u8], n: usize, c: usize) -> TensorView<'_> {
            TensorView::new(Dtype::F32, vec![n, c], d).expect("sizes match")
        }
        let views = vec![
            ("embeddings", view(&e, n, c)),
            ("adam_m", view(&m, n, c)),
            ("adam_v", view(&v, n, c)),
        ];
        let meta: HashMap<String, String> = [
            ("format", CHECKPOINT_FORMAT.to_string()),
            ("step", self.step.to_string()),
            ("adam_step", self.adam.step.to_string()),
            (
                "config",
                serde_json::to_string(&self.cfg).expect("config serialises"),
            ),
            ("model_config_hash", self.model_hash.clone()),
            ("data_fingerprint", self.data.fingerprint()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let out = safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| Error::tokens(path, e.to_string()))?;
        crate::util::write_atomic(path, &out)
    }

    /// Restores a checkpoint written with the same settings (all but `steps` must match,
    /// and the model and data must be the same).
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let bad = |m: String| Error::tokens(path, format!("checkpoint: {m}"));
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("missing `{k}`")));
        if get("format")? != CHECKPOINT_FORMAT {
            return Err(bad(format!("unknown format {:?}", get("format")?)));
        }
        let cfg: TrainConfig =
            serde_json::from_str(get("config")?).map_err(|e| bad(format!("bad config: {e}")))?;
        if cfg.resume_key() != self.cfg.resume_key() {
            let a = serde_json::to_value(cfg.resume_key()).expect("json");
            let b = serde_json::to_value(self.cfg.resume_key()).expect("json");
            let diff: Vec<String> = a
                .as_object()
                .expect("object")
                .iter()
                .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                .map(|(k, v)| format!("{k} = {v} there, {} now", b[k.as_str()]))
                .collect();
            return Err(bad(format!(
                "made with different settings ({}); rerun with the same settings or without --resume",
                diff.join(", ")
            )));
        }
        if get("model_config_hash")? != &self.model_hash {
            return Err(bad(
                "made with a different model (config hash differs)".into()
            ));
        }
        if get("data_fingerprint")? != &self.data.fingerprint() {
            return Err(bad(format!(
                "made with different training data ({} there, {} now)",
                get("data_fingerprint")?,
                self.data.fingerprint()
            )));
        }
        let parse = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| bad(format!("`{k}` is not an integer")))
        };
        let step = parse("step")? as usize;
        let adam_step = parse("adam_step")?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let len = self.embeddings.len();
        let read = |name: &str| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor `{name}`")))?;
            if t.dtype() != Dtype::F32 || t.shape().iter().product::<usize>() != len {
                return Err(bad(format!("tensor `{name}` has the wrong dtype or shape")));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect())
        };
        let embeddings = read("embeddings")?;
        let m = read("adam_m")?;
        let v = read("adam_v")?;
        if embeddings.iter().any(|x| !x.is_finite()) {
            return Err(bad("embeddings hold non-finite values".into()));
        }
        self.embeddings = embeddings;
        self.adam.m = m;
        self.adam.v = v;
        self.adam.step = adam_step;
        self.step = step;
        Ok(())
    }
}

/// Where `train` keeps its checkpoint for an output file: `tokens.safetensors` ->
/// `tokens.ckpt.safetensors` in the same directory.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens".into());
    out.with_file_name(format!("{stem}.ckpt.safetensors"))
}

/// How [`run`] checkpoints.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Checkpoint file; `None` = no checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Write a checkpoint every this many steps and after the last one (0 = only after the last).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint (which must exist).
    pub resume: bool,
}

/// What [`run`] reports as it goes.
#[derive(Debug)]
pub enum Event<'e> {
    /// Resumed from a checkpoint at this step.
    Resumed {
        step: usize,
    },
    /// An optimiser step finished; `eta_seconds` estimates the remaining training time.
    Step {
        stats: &'e StepStats,
        eta_seconds: f64,
    },
    Checkpoint {
        step: usize,
        path: &'e Path,
    },
    Vote {
        done: usize,
        total: usize,
    },
}

/// How [`run`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// Training and vote done.
    Finished {
        tokens: Box<Tokens>,
        votes: Vec<(usize, usize)>,
    },
    /// The event callback asked to stop after this step.
    Stopped { step: usize },
}

/// Trains to `config().steps`, checkpointing as asked, then votes. The callback may stop
/// the run after any step (`ControlFlow::Break`). A failing step (e.g. a non-finite loss)
/// is an error that names the last good checkpoint, which is left as it was.
pub fn run(
    trainer: &mut Trainer,
    opts: &RunOptions,
    on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
) -> Result<Outcome> {
    let mut last_good: Option<usize> = None;
    if opts.resume {
        let path = opts
            .checkpoint
            .as_deref()
            .ok_or_else(|| Error::Invalid("resume needs a checkpoint path".into()))?;
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "--resume: no checkpoint at {}",
                path.display()
            )));
        }
        trainer.load_checkpoint(path)?;
        last_good = Some(trainer.step());
        if on_event(Event::Resumed {
            step: trainer.step(),
        })
        .is_break()
        {
            return Ok(Outcome::Stopped {
                step: trainer.step(),
            });
        }
    }
    let steps = trainer.config().steps;
    let first = trainer.step();
    let start = Instant::now();
    while trainer.step() < steps {
        let stats = trainer.train_step().map_err(|e| {
            let ckpt = match (&opts.checkpoint, last_good) {
                (Some(p), Some(s)) => format!(
                    "the last good checkpoint is {} (step {s}); fix the cause and rerun with --resume",
                    p.display()
                ),
                _ => "no checkpoint was written".to_string(),
            };
            Error::Invalid(format!("training stopped: {e}; {ckpt}"))
        })?;
        let step = stats.step;
        if let Some(path) = &opts.checkpoint {
            let due =
                step == steps || (opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0);
            if due {
                trainer.save_checkpoint(path)?;
                last_good = Some(step);
                let _ = on_event(Event::Checkpoint { step, path });
            }
        }
        let per_step = start.elapsed().as_secs_f64() / (step - first) as f64;
        let eta_seconds = per_step * (steps - step) as f64;
        if on_event(Event::Step {
            stats: &stats,
            eta_seconds,
        })
        .is_break()
        {
            return Ok(Outcome::Stopped { step });
        }
    }
    let votes = trainer.vote(&mut |done, total| {
        let _ = on_event(Event::Vote { done, total });
    })?;
    let tokens = trainer.tokens(&votes)?;
    Ok(Outcome::Finished {
        tokens: Box::new(tokens),
        votes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_pure() {
        let a: Vec<u64> = (0..4)
            .map(|i| stream(7, STREAM_ITER, i).next_u64())
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|i| stream(7, STREAM_ITER, i).next_u64())
            .collect();
        assert_eq!(a, b);
        let mut all: Vec<u64> = a.clone();
        all.push(stream(7, STREAM_VOTE, 0).next_u64());
        all.push(stream(8, STREAM_ITER, 0).next_u64());
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn shuffled_index_visits_each_image_once_per_epoch() {
        for n in [1, 2, 7] {
            for epoch in 0..3u64 {
                let mut seen: Vec<usize> = (0..n as u64)
                    .map(|i| shuffled_index(3, STREAM_ORDER, epoch * n as u64 + i, n))
                    .collect();
                seen.sort();
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
            }
        }
        // Different epochs are shuffled differently (for a large enough set).
        let e0: Vec<usize> = (0..20)
            .map(|i| shuffled_index(3, STREAM_ORDER, i, 20))
            .collect();
        let e1: Vec<usize> = (20..40)
            .map(|i| shuffled_index(3, STREAM_ORDER, i, 20))
            .collect();
        assert_ne!(e0, e1);
    }

    #[test]
    fn flip_reverses_rows() {
        let mut img: Vec<f32> = (0..12).map(|v| v as f32).collect(); // [3, 2, 2]
        flip_horizontal(&mut img, 2);
        assert_eq!(
            img,
            vec![1.0, 0.0, 3.0, 2.0, 5.0, 4.0, 7.0, 6.0, 9.0, 8.0, 11.0, 10.0]
        );
    }

    #[test]
    fn checkpoint_path_is_next_to_output() {
        assert_eq!(
            checkpoint_path(Path::new("/a/b/tokens.safetensors")),
            PathBuf::from("/a/b/tokens.ckpt.safetensors")
        );
        assert_eq!(
            checkpoint_path(Path::new("out")),
            PathBuf::from("out.ckpt.safetensors")
        );
    }

    #[test]
    fn config_validation() {
        assert!(TrainConfig::default().validate().is_ok());
        let bad = [
            TrainConfig {
                batch_size: 0,
                ..Default::default()
            },
            TrainConfig {
                num_keypoints: 30,
                ..Default::default()
            },
            TrainConfig {
                num_candidates: 600,
                ..Default::default()
            },
            TrainConfig {
                lr: f64::NAN,
                ..Default::default()
            },
            TrainConfig {
                num_indices: 0,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
