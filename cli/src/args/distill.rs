//! `distill` and `export-onnx`: the student.

use super::common::{AugmentArgs, CropArg, DeviceArg, ModelTokensArgs, SeedArg};
use super::parse::{bounded, widths};
use clap::Args;
use stablekeypoints::limits;
use std::path::PathBuf;

fn distill_defaults() -> stablekeypoints::student::distill::DistillConfig {
    Default::default()
}

/// Distil a teacher (a model and its keypoint tokens) into a small student network that
/// runs in real time on a CPU.
///
/// The teacher labels every input once (cached in OUT.labels.safetensors, so a long
/// labelling run resumes); the student then learns the teacher's keypoints as heatmaps
/// under the tokens' augmentation warps and a photometric jitter, one item in
/// --holdout-every held out and its error printed. Checkpoints go to OUT.ckpt.safetensors;
/// Ctrl-C leaves a resumable one. Inputs as for train.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints distill --model models/figure --input frames/ --out student.safetensors
  stablekeypoints distill --model sd15 --tokens taichi.safetensors --inputs corpus.txt --teacher-augmentations 10 --out taichi-student.safetensors
  stablekeypoints distill ... --resume")]
pub struct DistillCmd {
    #[command(flatten)]
    pub model: ModelTokensArgs,
    /// A folder of images, one image, a label CSV's images, or a video file
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "inputs",
        conflicts_with = "inputs"
    )]
    pub input: Option<PathBuf>,
    /// A corpus of videos (a list file of paths or URIs, or a folder)
    #[arg(long, value_name = "LIST|DIR")]
    pub inputs: Option<PathBuf>,
    /// Output student file (its folder is created if missing)
    #[arg(long, value_name = "STUDENT.safetensors")]
    pub out: PathBuf,
    /// The teacher's keypoints from an earlier `process` run instead of running the teacher:
    /// its keypoints.jsonl for --input VIDEO, its --out-dir for --inputs (each video's
    /// NAME/keypoints.jsonl); frames are matched by timestamp, and only records computed
    /// from their own frame are used
    #[arg(
        long,
        value_name = "JSONL|DIR",
        conflicts_with = "teacher_augmentations"
    )]
    pub labels: Option<PathBuf>,
    /// Teacher test-time augmentation passes per input (eval's 10 make a better teacher)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = bounded(1, limits::MAX_AUGMENTATIONS))]
    pub teacher_augmentations: usize,
    /// The student's square input side, a multiple of 16
    #[arg(long, value_name = "S", default_value_t = distill_defaults().input_size, value_parser = bounded(16, stablekeypoints::student::MAX_INPUT_SIZE))]
    pub student_size: usize,
    /// Channel widths of the student's four stages
    #[arg(long, value_name = "A,B,C,D", default_value = "16,32,64,128", value_parser = widths)]
    pub widths: [usize; 4],
    /// Optimiser steps
    #[arg(long, value_name = "N", default_value_t = distill_defaults().steps,
          value_parser = bounded(1, limits::MAX_STEPS))]
    pub steps: usize,
    /// Images per step
    #[arg(long, value_name = "B", default_value_t = distill_defaults().batch_size,
          value_parser = bounded(1, limits::MAX_TRAIN_BATCH_SIZE))]
    pub batch_size: usize,
    /// Adam learning rate (cosine decay to 5%)
    #[arg(long, value_name = "LR", default_value_t = distill_defaults().lr)]
    pub lr: f64,
    /// Standard deviation of the target heatmaps, in heatmap cells (4 input pixels)
    #[arg(long, value_name = "CELLS", default_value_t = distill_defaults().sigma)]
    pub sigma: f32,
    /// Hold out one input in N and report the student's error on them (0 = none)
    #[arg(long, value_name = "N", default_value_t = distill_defaults().holdout_every, value_parser = bounded(0, limits::MAX_FRAMES))]
    pub holdout_every: usize,
    /// Photometric jitter strength (brightness, contrast, saturation; 0 = none)
    #[arg(long, value_name = "J", default_value_t = distill_defaults().jitter)]
    pub jitter: f32,
    /// Warp ranges [default: the tokens file's]
    #[command(flatten)]
    pub augment: AugmentArgs,
    /// Write the checkpoint every N steps and after the last (0 = only after the last)
    #[arg(long, value_name = "N", default_value_t = distill_defaults().checkpoint_every, value_parser = bounded(0, limits::MAX_STEPS))]
    pub checkpoint_every: usize,
    /// Continue from the checkpoint (and label cache) next to the output
    #[arg(long)]
    pub resume: bool,
    /// Inputs kept, spread uniformly over the sorted list or the video [default: all images; 300 frames of a video]
    #[arg(long, value_name = "N", value_parser = bounded(1, limits::MAX_FRAMES))]
    pub max_frames: Option<usize>,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Export a student file as an ONNX model (image in, K heatmaps out; the preprocessing and
/// the teacher's identity in its metadata).
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  stablekeypoints export-onnx student.safetensors --out student.onnx"
)]
pub struct ExportOnnxCmd {
    /// The student file (distill's output)
    #[arg(value_name = "STUDENT.safetensors")]
    pub student: PathBuf,
    /// Output ONNX file
    #[arg(long, value_name = "FILE.onnx")]
    pub out: PathBuf,
}
