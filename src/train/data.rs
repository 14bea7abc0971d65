//! Training data: the images a run sees, and everything random about one iteration
//! (which image, its flip, the augmentation warp, the noise).

use super::streams::{shuffled_index, stream, STREAM_ITER, STREAM_ORDER};
use super::Trainer;
use crate::error::{Error, Result};
use crate::ops::warp::{warp, Affine, SamplePlan};
use crate::util::Fnv;
use candle_core::Tensor;

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
    /// Names of the items used (e.g. image files), recorded in checkpoints so that a refused
    /// resume can say which ones differ; empty when the items have no names.
    fn items(&self) -> Vec<String> {
        Vec::new()
    }
    /// Where a video frame comes from: the name of its video's output folder in a corpus's
    /// output (empty for a single video) and its timestamp in nanoseconds; None for images.
    /// `distill --labels` finds the frame's record of an earlier `process` run by these.
    fn source(&self, _index: usize) -> Option<(String, Option<u64>)> {
        None
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

impl Trainer<'_> {
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
    pub(super) fn latent(
        &mut self,
        index: usize,
        flip: bool,
        image: Option<&Tensor>,
    ) -> Result<Tensor> {
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
        let affine = Affine::random_in(&mut rng, &self.cfg.augment);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_reverses_rows() {
        let mut img: Vec<f32> = (0..12).map(|v| v as f32).collect(); // [3, 2, 2]
        flip_horizontal(&mut img, 2);
        assert_eq!(
            img,
            vec![1.0, 0.0, 3.0, 2.0, 5.0, 4.0, 7.0, 6.0, 9.0, 8.0, 11.0, 10.0]
        );
    }
}
