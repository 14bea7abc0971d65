//! What a detection is asked for: items (a frame, a region of one, or a model input
//! prepared by the caller), each with its key, and their preparation into model inputs.

use crate::error::{Error, Result};
use crate::frame::{region_to_model_input, to_model_input, CropMode, Fit, FrameRef, Region};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// The pixels of an [`Item`].
#[derive(Clone, Debug)]
pub enum Source<'a> {
    /// A frame of any size, squared by the crop mode.
    Frame(FrameRef<'a>),
    /// A region of a frame (an object's box), squared by the crop mode; its keypoints are
    /// normalised to the frame, not the box.
    Region(FrameRef<'a>, Region),
    /// A model input [3, S, S] in [0, 1] prepared by the caller ([`to_model_input`], then
    /// e.g. a mask), mapped back to its frame through its fit; without a fit the keypoints
    /// are normalised to the input itself.
    Input(Vec<f32>, Option<Fit>),
}

/// One image to detect: its pixels and its key, which seeds its noise and augmentation
/// warps ([`super::item_rng`]).
#[derive(Clone, Debug)]
pub struct Item<'a> {
    pub source: Source<'a>,
    pub key: u64,
}

impl<'a> Item<'a> {
    pub fn frame(frame: FrameRef<'a>, key: u64) -> Self {
        Self {
            source: Source::Frame(frame),
            key,
        }
    }

    pub fn input(input: Vec<f32>, fit: Option<Fit>, key: u64) -> Self {
        Self {
            source: Source::Input(input, fit),
            key,
        }
    }

    /// A model-input image tensor [3, S, S] in [0, 1]; keypoints normalised to it.
    pub fn square(image: &Tensor, key: u64) -> Result<Self> {
        let input = image
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::input(input, None, key))
    }

    /// Frame i as item `keys[i]`.
    pub fn frames(frames: &[FrameRef<'a>], keys: &[u64]) -> Result<Vec<Self>> {
        check_keys(keys.len(), frames.len())?;
        Ok(frames
            .iter()
            .zip(keys)
            .map(|(f, &k)| Self::frame(*f, k))
            .collect())
    }

    /// Regions of frames (`(frame index, region)`), region i as item `keys[i]`.
    pub fn regions(
        frames: &[FrameRef<'a>],
        regions: &[(usize, Region)],
        keys: &[u64],
    ) -> Result<Vec<Self>> {
        check_keys(keys.len(), regions.len())?;
        regions
            .iter()
            .zip(keys)
            .map(|((i, r), &key)| {
                let frame = frames.get(*i).ok_or_else(|| {
                    Error::Invalid(format!(
                        "region of frame {i} of a batch of {}",
                        frames.len()
                    ))
                })?;
                Ok(Self {
                    source: Source::Region(*frame, *r),
                    key,
                })
            })
            .collect()
    }
}

fn check_keys(keys: usize, items: usize) -> Result<()> {
    if keys != items {
        return Err(Error::Invalid(format!(
            "{keys} item keys for {items} inputs"
        )));
    }
    Ok(())
}

/// A model input of side `size` and the fit that maps its keypoints back (none: they stay
/// normalised to the input).
pub(crate) struct Prepared {
    pub input: Vec<f32>,
    pub fit: Option<Fit>,
}

impl Prepared {
    /// An error unless this is an input of side `size` (fit for it).
    pub fn check(&self, size: usize) -> Result<()> {
        if self.input.len() != 3 * size * size || self.fit.is_some_and(|f| f.size != size) {
            return Err(Error::Invalid(format!(
                "model input of {} values (fit for {}) given to a detector of input size {size}",
                self.input.len(),
                self.fit.map_or(size, |f| f.size)
            )));
        }
        Ok(())
    }
}

/// The model inputs of `items` at `size`, squared by `crop` (in parallel; in order).
pub(crate) fn prepare(items: Vec<Item>, size: usize, crop: CropMode) -> Result<Vec<Prepared>> {
    items
        .into_par_iter()
        .map(|item| prepare_one(item.source, size, crop))
        .collect()
}

fn prepare_one(source: Source, size: usize, crop: CropMode) -> Result<Prepared> {
    let (input, fit) = match source {
        Source::Frame(f) => {
            let (input, fit) = to_model_input(&f, size, crop);
            (input, Some(fit))
        }
        Source::Region(f, r) => {
            let (input, fit) = region_to_model_input(&f, &r, size, crop)?;
            (input, Some(fit))
        }
        Source::Input(input, fit) => (input, fit),
    };
    Ok(Prepared { input, fit })
}
