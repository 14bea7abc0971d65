//! Image -> keypoints (method.md section 4): maps of the K selected tokens, bilinear
//! upsampling to the input size, optional test-time augmentation, peak extraction.
//!
//! **Randomness per item.** The diffusion noise and the augmentation warps of an image or
//! frame are drawn from [`item_rng`]`(seed, key)`, the item's own generator, never from a
//! stream shared with other items: the keypoints of an item depend on the seed, its pixels
//! and its key only, not on what was detected before it or next to it in a batch. Every
//! [`Item`] names its key: the CLI keys images by their content ([`content_key`]), the
//! element frames by their index since the start or the last flush.

pub(crate) mod item;
pub(crate) mod timing;

pub use item::{Item, Source};
pub use timing::{Stage, StageTimes};

use crate::error::{Error, Result};
use crate::frame::{CropMode, Fit};
use crate::keypoints::{argmax_peak, weighted_peak, MapPeak};
use crate::model::{Context, LayerSet, MapSpec, Model};
use crate::ops::resample::{resize, Interp};
use crate::ops::rng::{mix64, Rng};
use crate::ops::warp::{warp, Affine, AugmentRanges, SamplePlan};
use crate::tokens::{Tokens, MAX_INPUT_SIZE, MAX_MAP_RES};
use crate::util::Fnv;
use candle_core::{DType, Device, Tensor};
use item::prepare;
use std::sync::Arc;
use std::time::Duration;
use timing::Laps;

/// Augmentation passes run as one batch; their maps are accumulated batch by batch, so any
/// number of passes runs in the memory of this many.
const TTA_CHUNK: usize = 4;

/// The generator of item `key`'s noise and augmentation warps under `seed` (see the module
/// documentation): its warps first, then the noise of each pass in order.
pub fn item_rng(seed: u64, key: u64) -> Rng {
    Rng::new(mix64(mix64(seed) ^ key))
}

/// Content key of an image, its [`Item`] key: a hash of its size and its RGB8
/// pixels, so that the same image gets the same noise wherever it appears.
pub fn content_key(width: usize, height: usize, rgb: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(&(width as u64).to_le_bytes());
    h.write(&(height as u64).to_le_bytes());
    h.write(rgb);
    h.finish()
}

/// How a keypoint is read off its map.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum PeakMode {
    /// Arg-max pixel centre (the reference).
    #[default]
    Argmax,
    /// Mass-weighted mean of the pixels within `radius` px of the arg-max.
    Weighted { radius: f32 },
}

/// The detector's options, as [`Detector::new`] takes them: resolved from the user-facing
/// [`DetectSettings`](crate::options::DetectSettings) (or built by the library's callers,
/// such as `eval`'s protocols). `None` fields take the tokens file's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectOptions {
    pub input_size: Option<usize>,
    pub map_res: Option<usize>,
    /// The observed layers averaged (the reference's `--layers`); None = the tokens file's.
    pub layers: Option<LayerSet>,
    pub timestep: Option<usize>,
    /// Ranges of the test-time augmentation warps.
    pub augment: Option<AugmentRanges>,
    /// Test-time augmentation passes. More than one: every pass is a random warp (the first
    /// too), as the reference's `--augmentation_iterations`. One: a plain pass, unless
    /// `warp_every_pass`.
    pub augmentations: usize,
    /// Warp a single pass too, as the reference does for any pass count (`eval`'s default;
    /// `detect` and the element keep one plain pass as the fast default).
    pub warp_every_pass: bool,
    /// Seed of the noise and of the augmentation warps (per item: see [`item_rng`]).
    pub seed: u64,
    /// Add seeded DDIM noise at the timestep (the reference) or none (deterministic per image).
    pub noise: bool,
    pub peak: PeakMode,
    pub crop: CropMode,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            input_size: None,
            map_res: None,
            layers: None,
            timestep: None,
            augment: None,
            augmentations: 1,
            warp_every_pass: false,
            seed: 0,
            noise: true,
            peak: PeakMode::Argmax,
            crop: CropMode::Letterbox,
        }
    }
}

/// One keypoint. `x`, `y` are normalised to the image or frame ([0, 1], origin top-left);
/// `score` is the peak value of the keypoint's averaged attention map (a probability
/// mass per pixel at the input resolution: higher = more confident).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Keypoint {
    pub id: usize,
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// Keypoints of one frame plus the frame geometry they refer to.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub width: usize,
    pub height: usize,
    pub keypoints: Vec<Keypoint>,
}

impl Detection {
    /// Keypoint `i` in frame pixels.
    pub fn pixel(&self, i: usize) -> (f32, f32) {
        let k = &self.keypoints[i];
        (k.x * self.width as f32, k.y * self.height as f32)
    }
}

/// A detection with its maps, for the callers that look at them (`detect --dump-maps`,
/// the fidelity tests, the goldens).
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The keypoints, as [`Detector::detect`] gives them.
    pub detection: Detection,
    /// Keypoint maps [K, S, S] at the model input's size: one pass upsampled, or the
    /// augmentation passes warped back and averaged.
    pub maps: Tensor,
    /// The map-resolution maps [K, R, R] of a plain pass (None with augmentation).
    pub low_res: Option<Tensor>,
    /// The peaks of `maps`, normalised to the model input's square.
    pub peaks: Vec<MapPeak>,
}

/// A model bound to one token set, with the tokens' keys/values precomputed.
pub struct Detector {
    model: Arc<Model>,
    ctx: Context,
    select: Tensor,
    k: usize,
    size: usize,
    spec: MapSpec,
    augment: AugmentRanges,
    opts: DetectOptions,
    /// Stage times, when recorded ([`Detector::record_stage_times`]).
    laps: Option<Laps>,
}

impl Detector {
    pub fn new(model: Arc<Model>, tokens: &Tokens, opts: DetectOptions) -> Result<Self> {
        if tokens.context_dim != model.context_dim() {
            return Err(Error::Invalid(format!(
                "tokens have width {} but the model at {} expects cross_attention_dim {}",
                tokens.context_dim,
                model.dir.display(),
                model.context_dim()
            )));
        }
        crate::limits::check(opts.augmentations, 1, crate::limits::MAX_AUGMENTATIONS)
            .map_err(|m| Error::Invalid(format!("augmentations {}: {m}", opts.augmentations)))?;
        let size = opts.input_size.unwrap_or(tokens.input_size);
        model.check_input_size(size)?;
        let map_res = opts.map_res.unwrap_or(tokens.map_res);
        // Larger values only come from mistakes, and their buffers would not fit in memory
        // (or their sizes in usize): refuse them instead of aborting.
        if size > MAX_INPUT_SIZE || map_res > MAX_MAP_RES {
            return Err(Error::Invalid(format!(
                "input size {size} or map_res {map_res} is too large (at most {MAX_INPUT_SIZE} and {MAX_MAP_RES})"
            )));
        }
        let timestep = opts.timestep.unwrap_or(tokens.timestep);
        if map_res == 0 || timestep >= 1000 {
            return Err(Error::Invalid(format!(
                "invalid map_res {map_res} or timestep {timestep}"
            )));
        }
        let layers = opts.layers.unwrap_or(tokens.layers);
        let augment = opts.augment.unwrap_or(tokens.augment);
        augment.validate().map_err(Error::Invalid)?;
        let dev = &model.device;
        let emb = Tensor::from_slice(
            &tokens.embeddings,
            (tokens.num_tokens, tokens.context_dim),
            dev,
        )?;
        let ctx = model.prepare_context(&emb)?;
        let idx: Vec<u32> = tokens.indices.iter().map(|&i| i as u32).collect();
        let select = Tensor::from_vec(idx, tokens.indices.len(), dev)?;
        Ok(Self {
            k: tokens.indices.len(),
            ctx,
            select,
            size,
            spec: MapSpec {
                timestep,
                layers,
                map_res,
            },
            augment,
            opts,
            model,
            laps: None,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Side of the square model input.
    pub fn input_size(&self) -> usize {
        self.size
    }

    pub fn num_keypoints(&self) -> usize {
        self.k
    }

    pub fn options(&self) -> &DetectOptions {
        &self.opts
    }

    /// What each pass records: timestep, averaged layers, map resolution (options resolved
    /// against the tokens file).
    pub fn map_spec(&self) -> MapSpec {
        self.spec
    }

    /// Ranges of the test-time augmentation warps in use.
    pub fn augment(&self) -> AugmentRanges {
        self.augment
    }

    fn device(&self) -> &Device {
        &self.model.device
    }

    /// Records the time and FLOPs of each stage of the detections from now on (`on`), each
    /// stage synchronising the device, or stops recording.
    pub fn record_stage_times(&mut self, on: bool) {
        self.laps = on.then(Laps::new);
    }

    /// The stage times recorded since the previous call (zero when not recording).
    pub fn take_stage_times(&mut self) -> StageTimes {
        self.laps
            .as_mut()
            .map(|l| std::mem::take(&mut l.times))
            .unwrap_or_default()
    }

    fn restart_laps(&mut self) {
        if let Some(l) = &mut self.laps {
            l.restart();
        }
    }

    /// Ends a lap of `stage` (with `part` measured inside it), once the device is done.
    fn lap(&mut self, stage: Stage, part: Option<(Stage, Duration, u64)>) -> Result<()> {
        if let Some(l) = &mut self.laps {
            self.model.device.synchronize()?;
            match part {
                Some((p, time, flops)) => l.lap_with_part(stage, p, time, flops),
                None => l.lap(stage),
            }
        }
        Ok(())
    }

    /// Keypoints of `items`, in order, each from its own key's noise and warps. Without
    /// test-time augmentation several items run as one forward pass; with it each item
    /// runs on its own (its passes are batched already). The results are those of each
    /// item alone.
    pub fn detect(&mut self, items: Vec<Item>) -> Result<Vec<Detection>> {
        if self.augmenting() || items.len() < 2 {
            return items
                .into_iter()
                .map(|item| Ok(self.diagnose(item, None)?.detection))
                .collect();
        }
        self.restart_laps();
        let keys: Vec<u64> = items.iter().map(|i| i.key).collect();
        let prepared = prepare(items, self.size, self.opts.crop)?;
        let s = self.size;
        let n = prepared.len();
        let mut pixels = Vec::with_capacity(n * 3 * s * s);
        let mut fits = Vec::with_capacity(n);
        for p in prepared {
            p.check(s)?;
            pixels.extend_from_slice(&p.input);
            fits.push(p.fit);
        }
        let images = Tensor::from_vec(pixels, (n, 3, s, s), self.device())?;
        self.lap(Stage::Preprocess, None)?;
        let seed = self.opts.seed;
        let mut rngs: Vec<Rng> = keys.iter().map(|&k| item_rng(seed, k)).collect();
        let maps = self.maps_drawn(&images, &mut |i, buf| rngs[i].fill_normal(buf))?;
        let maps = resize(&maps, s, s, Interp::Bilinear)?;
        let detections = fits
            .iter()
            .enumerate()
            .map(|(i, fit)| Ok(self.detection(&self.peaks(&maps.get(i)?)?, fit.as_ref())))
            .collect::<Result<Vec<_>>>()?;
        self.lap(Stage::Extraction, None)?;
        Ok(detections)
    }

    /// One item's detection with its maps. `warps`: test-time augmentation with these
    /// warps (one pass each) instead of the detector's own.
    pub fn diagnose(&mut self, item: Item, warps: Option<&[Affine]>) -> Result<Diagnostics> {
        self.restart_laps();
        let mut rng = item_rng(self.opts.seed, item.key);
        let s = self.size;
        let p = prepare(vec![item], s, self.opts.crop)?.remove(0);
        p.check(s)?;
        let image = Tensor::from_vec(p.input, (3, s, s), self.device())?;
        self.lap(Stage::Preprocess, None)?;
        let (maps, low_res) = match warps {
            Some(w) => (self.augmented(&image, w, &mut rng)?, None),
            None if !self.augmenting() => {
                let m = self
                    .maps_drawn(&image.unsqueeze(0)?, &mut |_, buf| rng.fill_normal(buf))?
                    .squeeze(0)?;
                (resize(&m, s, s, Interp::Bilinear)?, Some(m))
            }
            None => {
                let warps: Vec<Affine> = (0..self.opts.augmentations)
                    .map(|_| Affine::random_in(&mut rng, &self.augment))
                    .collect();
                (self.augmented(&image, &warps, &mut rng)?, None)
            }
        };
        let peaks = self.peaks(&maps)?;
        let detection = self.detection(&peaks, p.fit.as_ref());
        self.lap(Stage::Extraction, None)?;
        Ok(Diagnostics {
            detection,
            maps,
            low_res,
            peaks,
        })
    }

    /// Every pass is a warp: more than one pass, or `warp_every_pass`.
    fn augmenting(&self) -> bool {
        self.opts.augmentations > 1 || self.opts.warp_every_pass
    }

    /// Maps [B, K, R, R] of images [B, 3, S, S]; `draw(i, noise)` fills image i's noise.
    fn maps_drawn(
        &mut self,
        images: &Tensor,
        draw: &mut dyn FnMut(usize, &mut [f32]),
    ) -> Result<Tensor> {
        let z = self.model.encode(images)?;
        self.lap(Stage::VaeEncode, None)?;
        let noise = if self.opts.noise {
            let per = z.elem_count() / z.dim(0)?.max(1);
            let mut v = vec![0f32; z.elem_count()];
            for (i, c) in v.chunks_exact_mut(per.max(1)).enumerate() {
                draw(i, c);
            }
            Some(Tensor::from_vec(v, z.shape(), self.device())?)
        } else {
            None
        };
        let rec = self.model.record_maps(
            &z,
            noise.as_ref(),
            &self.ctx,
            &self.spec,
            Some(&self.select),
            self.laps.is_some(),
        )?;
        let part = (Stage::MapRecording, rec.elapsed(), rec.flops());
        let maps = rec.finish()?;
        self.lap(Stage::UnetToExit, Some(part))?;
        Ok(maps)
    }

    /// Test-time augmentation of `image` [3, S, S]: one pass per warp, its maps upsampled
    /// and warped back, averaged where covered. The passes run [`TTA_CHUNK`] at a time and
    /// their warped-back maps and coverage are summed as they come, so memory does not grow
    /// with the number of passes; their noise is drawn from `rng` in pass order.
    fn augmented(&mut self, image: &Tensor, warps: &[Affine], rng: &mut Rng) -> Result<Tensor> {
        if warps.is_empty() {
            return Err(Error::Invalid(
                "test-time augmentation needs at least one warp".into(),
            ));
        }
        let s = self.size;
        let ones = Tensor::ones((1, s, s), DType::F32, self.device())?;
        let mut sum: Option<Tensor> = None;
        let mut count: Option<Tensor> = None;
        for chunk in warps.chunks(TTA_CHUNK) {
            let warped = chunk
                .iter()
                .map(|a| warp(image, &SamplePlan::new(a, s, s, s, s)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let warped = Tensor::stack(&warped, 0)?;
            self.lap(Stage::Augmentation, None)?;
            let maps = self.maps_drawn(&warped, &mut |_, buf| rng.fill_normal(buf))?;
            let maps = resize(&maps, s, s, Interp::Bilinear)?;
            for (i, a) in chunk.iter().enumerate() {
                let back = SamplePlan::new(&a.inverse(), s, s, s, s);
                let m = warp(&maps.get(i)?, &back)?;
                let c = warp(&ones, &back)?;
                sum = Some(match sum {
                    Some(x) => (x + m)?,
                    None => m,
                });
                count = Some(match count {
                    Some(x) => (x + c)?,
                    None => c,
                });
            }
            self.lap(Stage::Augmentation, None)?;
        }
        let (sum, count) = (sum.expect("warps"), count.expect("warps"));
        // sum / count where count > 0, else 0.
        let valid = count.gt(0.0)?;
        let safe = valid.where_cond(&count, &count.ones_like()?)?;
        let avg = sum.broadcast_div(&safe)?;
        Ok(valid
            .broadcast_as(avg.shape())?
            .where_cond(&avg, &avg.zeros_like()?)?)
    }

    /// Peaks of maps [K, H, W], normalised to the maps' square.
    fn peaks(&self, maps: &Tensor) -> Result<Vec<MapPeak>> {
        let (_, h, w) = maps.dims3()?;
        let v = maps.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "the model at {} produced non-finite attention maps (broken weights or input)",
                self.model.dir.display()
            )));
        }
        Ok(v.chunks_exact(h * w)
            .map(|m| match self.opts.peak {
                PeakMode::Argmax => argmax_peak(m, h, w),
                PeakMode::Weighted { radius } => weighted_peak(m, h, w, radius),
            })
            .collect())
    }

    /// The keypoints at `peaks`, mapped back to the frame through `fit` (none: normalised
    /// to the model input).
    fn detection(&self, peaks: &[MapPeak], fit: Option<&Fit>) -> Detection {
        let kps = peaks
            .iter()
            .enumerate()
            .map(|(id, p)| Keypoint {
                id,
                x: p.x,
                y: p.y,
                score: p.score,
            })
            .collect();
        match fit {
            Some(fit) => map_back(kps, fit),
            None => Detection {
                width: self.size,
                height: self.size,
                keypoints: kps,
            },
        }
    }
}

/// Model-square keypoints -> frame-normalised keypoints.
pub fn map_back(kps: Vec<Keypoint>, fit: &Fit) -> Detection {
    let keypoints = kps
        .into_iter()
        .map(|k| {
            let (x, y) = fit.to_frame(k.x, k.y);
            Keypoint {
                x: x / fit.width as f32,
                y: y / fit.height as f32,
                ..k
            }
        })
        .collect();
    Detection {
        width: fit.width,
        height: fit.height,
        keypoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{to_model_input, FrameRef, PixelFormat};
    use crate::init::{init_model, TinyArch};

    #[test]
    fn detect_frames_equals_detect_frame_one_at_a_time() {
        let dir = std::env::temp_dir().join(format!("skp-detect-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init_model(&dir, TinyArch::TinySd1, 3, 24, 5).unwrap();
        let model = Arc::new(
            Model::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap(),
        );
        let tokens = Tokens::load(&dir.join("tokens.safetensors")).unwrap();
        // Different sizes and aspect ratios: each frame keeps its own letterbox.
        let sizes = [(40usize, 30usize), (24, 24), (17, 50)];
        let images: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| {
                (0..w * h * 3)
                    .map(|p| ((p * 31 + i * 97) % 251) as u8)
                    .collect()
            })
            .collect();
        let frames: Vec<FrameRef> = sizes
            .iter()
            .zip(&images)
            .map(|(&(w, h), px)| FrameRef::packed(PixelFormat::Rgb, w, h, px, w * 3).unwrap())
            .collect();
        for noise in [true, false] {
            let opts = DetectOptions {
                noise,
                ..Default::default()
            };
            let mut one = Detector::new(model.clone(), &tokens, opts.clone()).unwrap();
            let mut batch = Detector::new(model.clone(), &tokens, opts).unwrap();
            // Twice, with the next keys: each frame's noise follows its key in a batch too.
            for round in 0..2u64 {
                let keys: Vec<u64> = (0..frames.len() as u64).map(|i| round * 3 + i).collect();
                let got = batch.detect(Item::frames(&frames, &keys).unwrap()).unwrap();
                assert_eq!(got.len(), frames.len());
                for ((f, g), &k) in frames.iter().zip(&got).zip(&keys) {
                    let want = one.detect(vec![Item::frame(*f, k)]).unwrap().remove(0);
                    assert_eq!((g.width, g.height), (want.width, want.height));
                    for (a, b) in g.keypoints.iter().zip(&want.keypoints) {
                        assert_eq!((a.id, a.x, a.y), (b.id, b.x, b.y), "noise {noise}");
                        assert!((a.score - b.score).abs() <= 1e-6 * b.score.abs().max(1e-3));
                    }
                }
            }
        }
        let mut d = Detector::new(model, &tokens, DetectOptions::default()).unwrap();
        assert!(d.detect(Vec::new()).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tiny(name: &str) -> (std::path::PathBuf, Arc<Model>, Tokens) {
        let dir = std::env::temp_dir().join(format!("skp-detect-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init_model(&dir, TinyArch::TinySd1, 3, 24, 5).unwrap();
        let model = Arc::new(
            Model::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap(),
        );
        let tokens = Tokens::load(&dir.join("tokens.safetensors")).unwrap();
        (dir, model, tokens)
    }

    fn pixels(w: usize, h: usize, salt: usize) -> Vec<u8> {
        (0..w * h * 3)
            .map(|p| ((p * 31 + salt * 97) % 251) as u8)
            .collect()
    }

    #[test]
    fn an_item_s_keypoints_depend_on_its_key_not_on_its_place() {
        let (dir, model, tokens) = tiny("keys");
        let (a, b) = (pixels(40, 30, 1), pixels(40, 30, 2));
        let fa = FrameRef::packed(PixelFormat::Rgb, 40, 30, &a, 120).unwrap();
        let fb = FrameRef::packed(PixelFormat::Rgb, 40, 30, &b, 120).unwrap();
        let (ka, kb) = (content_key(40, 30, &a), content_key(40, 30, &b));
        assert_ne!(ka, kb);
        for augmentations in [1, 3] {
            let opts = DetectOptions {
                augmentations,
                ..Default::default()
            };
            let mut det = Detector::new(model.clone(), &tokens, opts).unwrap();
            let mut run = |order: &[(&FrameRef, u64)]| -> Vec<Detection> {
                order
                    .iter()
                    .map(|(f, k)| det.detect(vec![Item::frame(**f, *k)]).unwrap().remove(0))
                    .collect()
            };
            let ab = run(&[(&fa, ka), (&fb, kb)]);
            let ba = run(&[(&fb, kb), (&fa, ka)]);
            let aa = run(&[(&fa, ka), (&fa, ka)]);
            assert_eq!(ab[0], ba[1], "augmentations {augmentations}");
            assert_eq!(ab[1], ba[0], "augmentations {augmentations}");
            assert_eq!(aa[0], aa[1], "augmentations {augmentations}");
            // The key is what decides: another key, other noise (and warps).
            let other = run(&[(&fa, ka ^ 1)]);
            let maps = |d: &Detection| d.keypoints.iter().map(|k| k.score).collect::<Vec<_>>();
            assert_ne!(
                maps(&other[0]),
                maps(&ab[0]),
                "augmentations {augmentations}"
            );
        }
        // Keyed batches equal keyed single frames, whatever the batch holds.
        let mut det = Detector::new(model.clone(), &tokens, DetectOptions::default()).unwrap();
        let batch = det
            .detect(Item::frames(&[fb, fa], &[kb, ka]).unwrap())
            .unwrap();
        let alone = det.detect(vec![Item::frame(fa, ka)]).unwrap().remove(0);
        assert_eq!(alone, batch[1]);
        assert!(Item::frames(&[fa], &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn augmentation_passes_accumulated_in_chunks_equal_one_at_a_time() {
        let (dir, model, tokens) = tiny("chunks");
        let mut det = Detector::new(model, &tokens, DetectOptions::default()).unwrap();
        let s = det.input_size();
        let px = pixels(s, s, 5);
        let frame = FrameRef::packed(PixelFormat::Rgb, s, s, &px, s * 3).unwrap();
        let (input, _) = to_model_input(&frame, s, CropMode::Letterbox);
        let image = Tensor::from_vec(input, (3, s, s), &candle_core::Device::Cpu).unwrap();
        // 9 passes: chunks of 4, 4 and 1.
        let mut r = Rng::new(11);
        let warps: Vec<Affine> = (0..9).map(|_| Affine::random(&mut r)).collect();
        let got = det.augmented(&image, &warps, &mut Rng::new(4)).unwrap();
        // By hand: each pass alone, its noise drawn in pass order from the same generator.
        let mut rng = Rng::new(4);
        let ones = Tensor::ones((1, s, s), DType::F32, &candle_core::Device::Cpu).unwrap();
        let (mut sum, mut count) = (None::<Tensor>, None::<Tensor>);
        for a in &warps {
            let w = warp(&image, &SamplePlan::new(a, s, s, s, s)).unwrap();
            let m = det
                .maps_drawn(&w.unsqueeze(0).unwrap(), &mut |_, b| rng.fill_normal(b))
                .unwrap();
            let m = resize(&m, s, s, Interp::Bilinear).unwrap().get(0).unwrap();
            let back = SamplePlan::new(&a.inverse(), s, s, s, s);
            let (m, c) = (warp(&m, &back).unwrap(), warp(&ones, &back).unwrap());
            sum = Some(sum.map_or(m.clone(), |x| (x + m).unwrap()));
            count = Some(count.map_or(c.clone(), |x| (x + c).unwrap()));
        }
        let (sum, count) = (
            sum.unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            count
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plane = s * s;
        let mut max_err = 0f32;
        for (i, g) in got.iter().enumerate() {
            let c = count[i % plane];
            let want = if c > 0.0 { sum[i] / c } else { 0.0 };
            max_err = max_err.max((g - want).abs() / want.abs().max(1e-6));
        }
        assert!(max_err < 1e-5, "relative error {max_err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
