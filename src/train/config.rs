//! Training hyper-parameters and their validation.

use super::loss;
use crate::error::{Error, Result};
use crate::model::MapSpec;
use crate::tokens;
use serde::{Deserialize, Serialize};

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
    pub(super) fn validate(&self) -> Result<()> {
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
    pub(super) fn resume_key(&self) -> Self {
        Self {
            steps: 0,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
