//! The training state and one optimiser step.

use super::adam::Adam;
use super::config::TrainConfig;
use super::data::TrainData;
use super::streams::{stream, STREAM_INIT};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::ModelIdentity;
use candle_core::Tensor;
use std::collections::HashMap;
use std::time::Instant;

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
    pub(super) model: &'a Model,
    pub(super) data: &'a dyn TrainData,
    pub(super) cfg: TrainConfig,
    pub(super) embeddings: Vec<f32>,
    pub(super) adam: Adam,
    pub(super) step: usize,
    pub(super) latents: HashMap<(usize, bool), Tensor>,
    pub(super) model_id: ModelIdentity,
}

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
            model_id: ModelIdentity::of_source(&model.source)?,
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

    pub fn model_identity(&self) -> &ModelIdentity {
        &self.model_id
    }

    /// The embeddings as an (untracked) tensor on the model's device.
    pub fn embeddings_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.embeddings,
            (self.cfg.num_tokens, self.model.context_dim()),
            &self.model.device,
        )?)
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
}
