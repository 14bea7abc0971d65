//! `train`, and the training flags `process` shares with it.

use super::common::{AugmentArgs, CropArg, DeviceArg, SeedArg, WeightsArgs};
use super::parse::{bounded, layer_set, model_path, noise_level};
use clap::{Args, ValueEnum};
use stablekeypoints::limits;
use stablekeypoints::model::LayerSet;
use stablekeypoints::options::NoiseLevel;
use stablekeypoints::tokens::{MAX_INPUT_SIZE, MAX_MAP_RES};
use stablekeypoints::train::select::TopKStrategy;
use stablekeypoints::train::TrainConfig;
use std::path::PathBuf;

/// `--top-k-strategy` values (the reference's `--top_k_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// The lowest KL divergence from a Gaussian at the map's peak(s)
    #[default]
    Gaussian,
    /// The lowest entropy of the map's pixel softmax
    Entropy,
    /// Always the first --num-candidates tokens
    Consistent,
}

impl From<Strategy> for TopKStrategy {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::Gaussian => TopKStrategy::Gaussian,
            Strategy::Entropy => TopKStrategy::Entropy,
            Strategy::Consistent => TopKStrategy::Consistent,
        }
    }
}

fn train_defaults() -> TrainConfig {
    TrainConfig::default()
}

/// Training hyper-parameters (`train`, and `process` when it trains).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Training")]
pub struct TrainArgs {
    /// Optimiser steps
    #[arg(long, value_name = "N", default_value_t = train_defaults().steps,
          value_parser = bounded(1, limits::MAX_STEPS))]
    pub steps: usize,
    /// Images per step (gradient accumulation)
    #[arg(long, value_name = "B", default_value_t = train_defaults().batch_size,
          value_parser = bounded(1, limits::MAX_TRAIN_BATCH_SIZE))]
    pub batch_size: usize,
    /// Adam learning rate
    #[arg(long, value_name = "LR", default_value_t = train_defaults().lr)]
    pub lr: f64,
    /// N, the token embeddings learned
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_tokens,
          value_parser = bounded(1, limits::MAX_NUM_TOKENS))]
    pub num_tokens: usize,
    /// K, the keypoints kept
    #[arg(long, value_name = "K", default_value_t = train_defaults().num_keypoints,
          value_parser = bounded(1, limits::MAX_NUM_KEYPOINTS))]
    pub num_keypoints: usize,
    /// Gaussian-KL candidates per image
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_candidates,
          value_parser = bounded(1, limits::MAX_NUM_TOKENS))]
    pub num_candidates: usize,
    /// Images in the final vote
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_indices,
          value_parser = bounded(1, limits::MAX_NUM_INDICES))]
    pub num_indices: usize,
    /// Square model input side [default: the model's native size]
    #[arg(long, value_name = "S", value_parser = bounded(1, MAX_INPUT_SIZE))]
    pub size: Option<usize>,
    /// Attention-map resolution R
    #[arg(long, value_name = "R", default_value_t = train_defaults().map_res,
          value_parser = bounded(1, MAX_MAP_RES))]
    pub map_res: usize,
    /// The reference's noise_level: index into the 50 DDIM timesteps 980, 960, ..., 0 (-1 = the last, t = 0); recorded in the tokens file
    #[arg(long, value_name = "I", default_value = "-1", allow_negative_numbers = true, value_parser = noise_level)]
    pub noise_level: NoiseLevel,
    /// Observed layers averaged, among the 4 recorded (the reference's --layers); recorded in the tokens file
    #[arg(long, value_name = "L,...", default_value = "0,1,2,3", value_parser = layer_set)]
    pub layers: LayerSet,
    /// Gaussian sigma in pixels at the map resolution (candidate ranking and sharpening targets)
    #[arg(long, value_name = "PX", default_value_t = train_defaults().sigma)]
    pub sigma: f32,
    /// Weight of the sharpening loss
    #[arg(long, value_name = "W", default_value_t = train_defaults().sharpening_weight)]
    pub sharpening_weight: f64,
    /// Weight of the equivariance loss
    #[arg(long, value_name = "W", default_value_t = train_defaults().equivariance_weight)]
    pub equivariance_weight: f64,
    /// How each image's candidate tokens are ranked (the reference's --top_k_strategy)
    #[arg(long, value_enum, value_name = "S", default_value_t = Strategy::Gaussian)]
    pub top_k_strategy: Strategy,
    /// Subjects per image: peaks per map in the Gaussian ranking and the sharpening targets
    #[arg(long, value_name = "N", default_value_t = train_defaults().num_subjects, value_parser = bounded(1, limits::MAX_NUM_SUBJECTS))]
    pub num_subjects: usize,
    #[command(flatten)]
    pub augment: AugmentArgs,
    /// Random horizontal flips (as the reference's Tai-Chi set)
    #[arg(long)]
    pub flip: bool,
    /// Write the checkpoint every N steps and after the last (0 = only after the last)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = bounded(0, limits::MAX_STEPS))]
    pub checkpoint_every: usize,
    /// Continue from the checkpoint next to the output
    #[arg(long)]
    pub resume: bool,
    /// Images kept, spread uniformly over the sorted list or the video [default: all images; 300 frames of a video]
    #[arg(long, value_name = "N", value_parser = bounded(1, limits::MAX_FRAMES))]
    pub max_frames: Option<usize>,
}

/// Learn keypoint tokens from a folder of images, a label CSV, a video file or a corpus of
/// videos.
///
/// Images: png/jpg under PATH, recursively. A label CSV (as for eval): its images, each
/// multiplied by its mask when the CSV has a mask column. A video: any file GStreamer
/// decodes; --max-frames frames (300 by default) sampled uniformly over it, first and last
/// included. A corpus (--inputs, as for process): --max-frames frames in total, uniformly
/// over the frames of all its videos. Checkpoints go to TOKENS.ckpt.safetensors next to the
/// output.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints train --model out/model --input frames/ --out tokens.safetensors
  stablekeypoints train --model out/model --input ball.mp4 --out tokens.safetensors \\
      --steps 100 --batch-size 1 --num-tokens 100 --map-res 32 --num-indices 30")]
pub struct TrainCmd {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]) or a single-file checkpoint (.safetensors, .ckpt)
    #[arg(long, value_name = "DIR|ID|FILE", value_parser = model_path)]
    pub model: PathBuf,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// A folder of images, one image, a label CSV (with masks), or a video file
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "inputs",
        conflicts_with = "inputs"
    )]
    pub input: Option<PathBuf>,
    /// A corpus of videos (a list file of paths or URIs, or a folder): --max-frames frames
    /// (300 by default) sampled uniformly over all their frames
    #[arg(long, value_name = "LIST|DIR")]
    pub inputs: Option<PathBuf>,
    /// Output tokens file (its folder is created if missing)
    #[arg(long, value_name = "TOKENS.safetensors")]
    pub out: PathBuf,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub train: TrainArgs,
}
