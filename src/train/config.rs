//! Training hyper-parameters and their validation.

use super::loss;
use super::select::{SelectConfig, TopKStrategy};
use crate::error::{Error, Result};
use crate::model::{LayerSet, MapSpec};
use crate::ops::warp::AugmentRanges;
use crate::tokens;
use serde::{Deserialize, Serialize};

/// Training hyper-parameters; `Default` is the reference's. (Fields missing from a stored
/// config, e.g. a checkpoint of an earlier version, take their defaults.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Observed layers recorded (the reference's 4).
    pub num_layers: usize,
    /// Which of them are averaged (the reference's `--layers`).
    pub layers: LayerSet,
    pub timestep: usize,
    /// Gaussian sigma (pixels at R) of the ranking and the sharpening targets.
    pub sigma: f32,
    pub sharpening_weight: f64,
    pub equivariance_weight: f64,
    /// How each image's candidate tokens are ranked (the reference's `--top_k_strategy`).
    pub top_k_strategy: TopKStrategy,
    /// Peaks per map in the Gaussian ranking and the sharpening targets (`--num_subjects`).
    pub num_subjects: usize,
    /// Ranges of the training warps; recorded in the tokens file as the test-time ones.
    pub augment: AugmentRanges,
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
            layers: LayerSet::first(tokens::DEFAULT_NUM_LAYERS),
            timestep: tokens::DEFAULT_TIMESTEP,
            sigma: loss::SIGMA,
            sharpening_weight: loss::SHARPENING_WEIGHT,
            equivariance_weight: loss::EQUIVARIANCE_WEIGHT,
            top_k_strategy: TopKStrategy::Gaussian,
            num_subjects: 1,
            augment: AugmentRanges::default(),
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
        for (name, w) in [
            ("sharpening", self.sharpening_weight),
            ("equivariance", self.equivariance_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return bad(format!(
                    "the {name} loss weight {w} must be finite and >= 0"
                ));
            }
        }
        if self.num_layers > LayerSet::LIMIT || self.layers.last() >= self.num_layers {
            return bad(format!(
                "layers {} must be among the {} observed layers recorded (at most {})",
                self.layers,
                self.num_layers,
                LayerSet::LIMIT
            ));
        }
        if self.num_subjects == 0 {
            return bad("num_subjects must be at least 1".into());
        }
        self.augment.validate().map_err(Error::Invalid)?;
        Ok(())
    }

    pub fn map_spec(&self) -> MapSpec {
        MapSpec {
            timestep: self.timestep,
            layers: self.layers,
            map_res: self.map_res,
        }
    }

    /// How each image's tokens are chosen.
    pub fn select_config(&self) -> SelectConfig {
        SelectConfig {
            strategy: self.top_k_strategy,
            num_candidates: self.num_candidates,
            num_keypoints: self.num_keypoints,
            sigma: self.sigma,
            num_subjects: self.num_subjects,
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
            TrainConfig {
                num_subjects: 0,
                ..Default::default()
            },
            TrainConfig {
                layers: LayerSet::from_indices(&[4]).unwrap(),
                ..Default::default()
            },
            TrainConfig {
                sharpening_weight: -1.0,
                ..Default::default()
            },
            TrainConfig {
                augment: AugmentRanges {
                    scale: [1.0, 0.5],
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn stored_configs_without_the_new_fields_take_the_defaults() {
        // A checkpoint's config of the version before the knobs (no layers, strategy,
        // subjects or ranges).
        let old = r#"{"steps":5,"batch_size":1,"lr":0.005,"num_tokens":64,"num_keypoints":4,
            "num_candidates":8,"num_indices":3,"input_size":128,"map_res":32,"num_layers":4,
            "timestep":0,"sigma":2.0,"sharpening_weight":100.0,"equivariance_weight":1000.0,
            "flip":false,"seed":1}"#;
        let c: TrainConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c.layers.indices(), vec![0, 1, 2, 3]);
        assert_eq!(c.top_k_strategy, TopKStrategy::Gaussian);
        assert_eq!((c.num_subjects, c.augment), (1, AugmentRanges::default()));
        let json = serde_json::to_string(&TrainConfig::default()).unwrap();
        assert!(json.contains(r#""layers":[0,1,2,3]"#), "{json}");
        assert!(json.contains(r#""top_k_strategy":"gaussian""#), "{json}");
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, TrainConfig::default());
    }
}
