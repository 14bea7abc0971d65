//! Image -> keypoints (method.md section 4): maps of the K selected tokens, bilinear
//! upsampling to the input size, optional test-time augmentation, peak extraction.
//!
//! **Randomness per item.** The diffusion noise and the augmentation warps of an image or
//! frame are drawn from [`item_rng`]`(seed, key)`, the item's own generator, never from a
//! stream shared with other items: the keypoints of an item depend on the seed, its pixels
//! and its key only, not on what was detected before it or next to it in a batch. The CLI
//! keys images by their content ([`content_key`]), the element frames by their index since
//! the start or the last flush; calls without a key number the items this detector has seen
//! (the n-th frame is item n, as in a video).

use crate::error::{Error, Result};
use crate::frame::{to_model_input, CropMode, Fit, FrameRef};
use crate::keypoints::{argmax_peak, weighted_peak, MapPeak};
use crate::model::{Context, LayerSet, MapSpec, Model};
use crate::ops::resample::{resize, Interp};
use crate::ops::rng::{mix64, Rng};
use crate::ops::warp::{warp, Affine, AugmentRanges, SamplePlan};
use crate::tokens::{Tokens, MAX_INPUT_SIZE, MAX_MAP_RES};
use crate::util::Fnv;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// Augmentation passes run as one batch; their maps are accumulated batch by batch, so any
/// number of passes runs in the memory of this many.
const TTA_CHUNK: usize = 4;

/// The generator of item `key`'s noise and augmentation warps under `seed` (see the module
/// documentation): its warps first, then the noise of each pass in order.
pub fn item_rng(seed: u64, key: u64) -> Rng {
    Rng::new(mix64(mix64(seed) ^ key))
}

/// Content key of an image for [`Detector::set_item_key`]: a hash of its size and its RGB8
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
    /// Item key of the next image or frame given without one.
    next_key: u64,
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
            next_key: 0,
            opts,
            model,
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

    /// The item key the next image or frame given without a key gets (later ones take the
    /// following keys). The CLI sets it to the image's [`content_key`].
    pub fn set_item_key(&mut self, key: u64) {
        self.next_key = key;
    }

    /// The item key of the next image or frame given without a key.
    pub fn next_item_key(&self) -> u64 {
        self.next_key
    }

    fn take_key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key = k.wrapping_add(1);
        k
    }

    /// Maps [B, K, R, R] of images [B, 3, S, S]; `draw(i, noise)` fills image i's noise.
    fn maps_drawn(
        &self,
        images: &Tensor,
        draw: &mut dyn FnMut(usize, &mut [f32]),
    ) -> Result<Tensor> {
        let z = self.model.encode(images)?;
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
        self.model.maps_from_latent(
            &z,
            noise.as_ref(),
            &self.ctx,
            &self.spec,
            Some(&self.select),
        )
    }

    /// Selected tokens' maps [B, K, R, R] for images [B, 3, S, S] in [0, 1], each image an
    /// item of its own (the next B keys).
    pub fn maps(&mut self, images: &Tensor) -> Result<Tensor> {
        let b = images.dim(0)?;
        let seed = self.opts.seed;
        let mut rngs: Vec<Rng> = (0..b).map(|_| item_rng(seed, self.take_key())).collect();
        self.maps_drawn(images, &mut |i, buf| rngs[i].fill_normal(buf))
    }

    /// Averaged keypoint maps [K, S, S] of one image [3, S, S]: one pass, or one pass per
    /// augmentation warp with the maps warped back and averaged.
    pub fn keypoint_maps(&mut self, image: &Tensor) -> Result<Tensor> {
        Ok(self.keypoint_maps_full(image)?.0)
    }

    /// As `keypoint_maps`, also returning the map-resolution maps [K, R, R] of an
    /// unaugmented pass (None with augmentation).
    pub fn keypoint_maps_full(&mut self, image: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let mut rng = item_rng(self.opts.seed, self.take_key());
        if self.opts.augmentations <= 1 && !self.opts.warp_every_pass {
            let m = self
                .maps_drawn(&image.unsqueeze(0)?, &mut |_, buf| rng.fill_normal(buf))?
                .squeeze(0)?;
            let up = resize(&m, self.size, self.size, Interp::Bilinear)?;
            return Ok((up, Some(m)));
        }
        let warps: Vec<Affine> = (0..self.opts.augmentations)
            .map(|_| Affine::random_in(&mut rng, &self.augment))
            .collect();
        Ok((self.augmented(image, &warps, &mut rng)?, None))
    }

    /// Test-time augmentation with the given warps (each warp is one pass); the image is one
    /// item (the next key), whose generator gives the passes' noise.
    pub fn keypoint_maps_with(&mut self, image: &Tensor, warps: &[Affine]) -> Result<Tensor> {
        let mut rng = item_rng(self.opts.seed, self.take_key());
        self.augmented(image, warps, &mut rng)
    }

    /// The passes run [`TTA_CHUNK`] at a time and their warped-back maps and coverage are
    /// summed as they come, so memory does not grow with the number of passes.
    fn augmented(&self, image: &Tensor, warps: &[Affine], rng: &mut Rng) -> Result<Tensor> {
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
            let maps = self.maps_drawn(&Tensor::stack(&warped, 0)?, &mut |_, buf| {
                rng.fill_normal(buf)
            })?;
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
    pub fn peaks(&self, maps: &Tensor) -> Result<Vec<MapPeak>> {
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

    /// Keypoints of a square model-input image [3, S, S] in [0, 1], normalised to it.
    pub fn detect_input(&mut self, image: &Tensor) -> Result<Vec<Keypoint>> {
        let maps = self.keypoint_maps(image)?;
        self.keypoints_of(&maps)
    }

    fn keypoints_of(&self, maps: &Tensor) -> Result<Vec<Keypoint>> {
        Ok(self
            .peaks(maps)?
            .into_iter()
            .enumerate()
            .map(|(id, p)| Keypoint {
                id,
                x: p.x,
                y: p.y,
                score: p.score,
            })
            .collect())
    }

    /// Keypoints of any frame; coordinates are mapped back through the crop/letterbox.
    pub fn detect_frame(&mut self, frame: &FrameRef) -> Result<Detection> {
        Ok(self.detect_frame_full(frame)?.0)
    }

    /// Keypoints of several frames, in order, with one forward pass for all of them (one
    /// pass per frame with test-time augmentation, whose passes are batched already). The
    /// frames are the next items (keys), so the results are those of `detect_frame` on each
    /// frame in turn.
    pub fn detect_frames(&mut self, frames: &[FrameRef]) -> Result<Vec<Detection>> {
        let keys: Vec<u64> = frames.iter().map(|_| self.take_key()).collect();
        self.detect_frames_keyed(frames, &keys)
    }

    /// As `detect_frames`, frame i being item `keys[i]`; the next key is then the last one
    /// plus 1.
    pub fn detect_frames_keyed(
        &mut self,
        frames: &[FrameRef],
        keys: &[u64],
    ) -> Result<Vec<Detection>> {
        let s = self.size;
        let crop = self.opts.crop;
        let inputs = frames.iter().map(|f| to_model_input(f, s, crop)).collect();
        self.detect_inputs_keyed(inputs, keys)
    }

    /// Keypoints of prepared model inputs (a frame's, a region's: [`to_model_input`],
    /// [`crate::frame::region_to_model_input`]), input i being item `keys[i]`, with one
    /// forward pass for all of them (one pass per input with test-time augmentation); each
    /// mapped back to its frame through its fit.
    pub fn detect_inputs_keyed(
        &mut self,
        inputs: Vec<(Vec<f32>, Fit)>,
        keys: &[u64],
    ) -> Result<Vec<Detection>> {
        if keys.len() != inputs.len() {
            return Err(Error::Invalid(format!(
                "{} item keys for {} model inputs",
                keys.len(),
                inputs.len()
            )));
        }
        if self.opts.augmentations > 1 || self.opts.warp_every_pass || inputs.len() < 2 {
            return inputs
                .into_iter()
                .zip(keys)
                .map(|((input, fit), &k)| {
                    self.set_item_key(k);
                    self.detect_prepared(input, &fit)
                })
                .collect();
        }
        let s = self.size;
        if let Some((input, fit)) = inputs
            .iter()
            .find(|(i, f)| i.len() != 3 * s * s || f.size != s)
        {
            return Err(Error::Invalid(format!(
                "model input of {} values (fit for {}) given to a detector of input size {s}",
                input.len(),
                fit.size
            )));
        }
        let seed = self.opts.seed;
        let mut rngs: Vec<Rng> = keys.iter().map(|&k| item_rng(seed, k)).collect();
        self.set_item_key(keys[keys.len() - 1].wrapping_add(1));
        let n = inputs.len();
        let mut pixels = Vec::with_capacity(n * 3 * s * s);
        let mut fits = Vec::with_capacity(n);
        for (input, fit) in inputs {
            pixels.extend_from_slice(&input);
            fits.push(fit);
        }
        let images = Tensor::from_vec(pixels, (n, 3, s, s), self.device())?;
        let maps = self.maps_drawn(&images, &mut |i, buf| rngs[i].fill_normal(buf))?;
        let maps = resize(&maps, s, s, Interp::Bilinear)?;
        fits.iter()
            .enumerate()
            .map(|(i, fit)| Ok(map_back(self.keypoints_of(&maps.get(i)?)?, fit)))
            .collect()
    }

    /// As `detect_frame`, also returning the maps (see `keypoint_maps_full`).
    pub fn detect_frame_full(
        &mut self,
        frame: &FrameRef,
    ) -> Result<(Detection, Tensor, Option<Tensor>)> {
        let (input, fit) = to_model_input(frame, self.size, self.opts.crop);
        self.detect_prepared_full(input, &fit)
    }

    /// Keypoints of a model input prepared by the caller (`to_model_input`, then e.g.
    /// `frame::apply_mask`), mapped back to the frame through `fit`.
    pub fn detect_prepared(&mut self, input: Vec<f32>, fit: &Fit) -> Result<Detection> {
        Ok(self.detect_prepared_full(input, fit)?.0)
    }

    fn detect_prepared_full(
        &mut self,
        input: Vec<f32>,
        fit: &Fit,
    ) -> Result<(Detection, Tensor, Option<Tensor>)> {
        let s = self.size;
        if input.len() != 3 * s * s || fit.size != s {
            return Err(Error::Invalid(format!(
                "model input of {} values (fit for {}) given to a detector of input size {s}",
                input.len(),
                fit.size
            )));
        }
        let image = Tensor::from_vec(input, (3, s, s), self.device())?;
        let (maps, low) = self.keypoint_maps_full(&image)?;
        let kps = self.keypoints_of(&maps)?;
        Ok((map_back(kps, fit), maps, low))
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
    use crate::frame::PixelFormat;
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
            // Twice: the noise stream must stay in step across batches too.
            for _ in 0..2 {
                let got = batch.detect_frames(&frames).unwrap();
                assert_eq!(got.len(), frames.len());
                for (f, g) in frames.iter().zip(&got) {
                    let want = one.detect_frame(f).unwrap();
                    assert_eq!((g.width, g.height), (want.width, want.height));
                    for (a, b) in g.keypoints.iter().zip(&want.keypoints) {
                        assert_eq!((a.id, a.x, a.y), (b.id, b.x, b.y), "noise {noise}");
                        assert!((a.score - b.score).abs() <= 1e-6 * b.score.abs().max(1e-3));
                    }
                }
            }
        }
        let mut d = Detector::new(model, &tokens, DetectOptions::default()).unwrap();
        assert!(d.detect_frames(&[]).unwrap().is_empty());
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
                    .map(|(f, k)| {
                        det.set_item_key(*k);
                        det.detect_frame(f).unwrap()
                    })
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
        let batch = det.detect_frames_keyed(&[fb, fa], &[kb, ka]).unwrap();
        assert_eq!(det.next_item_key(), ka.wrapping_add(1));
        det.set_item_key(ka);
        assert_eq!(det.detect_frame(&fa).unwrap(), batch[1]);
        assert!(det.detect_frames_keyed(&[fa], &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn augmentation_passes_accumulated_in_chunks_equal_one_at_a_time() {
        let (dir, model, tokens) = tiny("chunks");
        let det = Detector::new(model, &tokens, DetectOptions::default()).unwrap();
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
