//! `process` (one video or a corpus) and `corpus-status`.

#[cfg(feature = "video")]
use super::common::{CropArg, DeviceArg, SeedArg, WeightsArgs};
#[cfg(feature = "video")]
use super::detect::BoxesArgs;
use super::parse::bounded;
#[cfg(feature = "video")]
use super::parse::{model_path, shard};
#[cfg(feature = "video")]
use super::train::TrainArgs;
#[cfg(feature = "video")]
use crate::corpus::shard::Shard;
use clap::Args;
use stablekeypoints::limits;
use std::path::PathBuf;

/// The element's per-frame passes in `process`: test-time augmentation and the diffusion noise.
#[derive(Args, Clone, Debug)]
pub struct PassArgs {
    /// Test-time augmentation passes (1 = none)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = bounded(1, limits::MAX_AUGMENTATIONS))]
    pub augmentations: usize,
    /// Zero DDIM noise instead of seeded noise (deterministic per image)
    #[arg(long)]
    pub no_noise: bool,
}

/// Element options of `process` (the `stablekeypoints` element's properties).
#[cfg(feature = "video")]
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Element")]
pub struct ElementArgs {
    #[command(flatten)]
    pub pass: PassArgs,
    /// Draw each keypoint's id next to it
    #[arg(long)]
    pub draw_ids: bool,
}

/// A video in, keypoints and an annotated video out; or a corpus of videos (--inputs), as
/// one shard of a cluster job array.
///
/// Trains on VIDEO unless --tokens is given (writing DIR/tokens.safetensors), then runs every
/// frame through the stablekeypoints element into DIR/keypoints.jsonl (JSON
/// lines), DIR/keypoints.coco.json with --coco and DIR/annotated.mp4 (keypoints drawn).
///
/// With --inputs (a list file of video paths or URIs, or a folder searched for videos), each
/// video of this shard goes to DIR/<name>/ with a done.json; a rerun skips what is done and
/// redoes what changed; a failing video gets failed.json and the run goes on. Exit status: 0
/// when every video of the shard is done, 3 when some failed, 130/143 when interrupted.
/// Without --shard the shard comes from JOB_COMPLETION_INDEX with --shard-count or
/// SKP_SHARD_COUNT (Kubernetes Indexed Jobs), or SLURM_ARRAY_TASK_ID with
/// SLURM_ARRAY_TASK_COUNT (Slurm arrays).
#[cfg(feature = "video")]
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints process --model out/model --input clip.mp4 --out-dir result/ --steps 100
  stablekeypoints process --model out/model --input clip.mp4 --out-dir result/ --tokens t.safetensors
  stablekeypoints process --model sd15 --tokens t.safetensors --inputs videos.txt --out-dir /shared/out \\
      --shard 3/16 --workers 2")]
pub struct ProcessCmd {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]), a single-file checkpoint (.safetensors, .ckpt), or a student
    /// file (distill's)
    #[arg(long, value_name = "DIR|ID|FILE|STUDENT", value_parser = model_path)]
    pub model: PathBuf,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// The video file
    #[arg(
        long,
        value_name = "VIDEO",
        required_unless_present = "inputs",
        conflicts_with = "inputs"
    )]
    pub input: Option<PathBuf>,
    /// A corpus: a text file of video paths or URIs (one per line), or a folder searched for videos
    #[arg(long, value_name = "LIST|DIR")]
    pub inputs: Option<PathBuf>,
    /// Output folder (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Tokens to use instead of training on the video (training flags are then refused)
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Pose file (eval --save-regressor): named landmarks in the records and the COCO output
    #[arg(long, value_name = "FILE")]
    pub pose: Option<PathBuf>,
    /// Write no annotated.mp4 (keypoints only)
    #[arg(long)]
    pub no_annotated: bool,
    /// Also write keypoints.coco.json (COCO keypoint results)
    #[arg(long)]
    pub coco: bool,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub crop: CropArg,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub element: ElementArgs,
    #[command(flatten)]
    pub objects: BoxesArgs,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// How a corpus run (`process --inputs`) shares the work and retries.
#[cfg(feature = "video")]
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Corpus")]
pub struct CorpusArgs {
    /// This task's share: video j of the sorted list when j mod N == I [default: from the environment, else all]
    #[arg(long, value_name = "I/N", requires = "inputs", value_parser = shard)]
    pub shard: Option<Shard>,
    /// N with JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's completions) [env: SKP_SHARD_COUNT]
    #[arg(long, value_name = "N", requires = "inputs", conflicts_with = "shard",
          value_parser = bounded(1, limits::MAX_SHARDS))]
    pub shard_count: Option<usize>,
    /// Videos processed at once (pipelines in parallel, one loaded model)
    #[arg(long, value_name = "W", default_value_t = 1, requires = "inputs",
          value_parser = bounded(1, limits::MAX_WORKERS))]
    pub workers: usize,
    /// Attempts per video over all runs; a video that failed this often is skipped
    #[arg(long, value_name = "N", default_value_t = 3, requires = "inputs",
          value_parser = bounded(1, limits::MAX_ATTEMPTS))]
    pub max_attempts: usize,
}

/// Progress of a corpus: done, failed and missing videos against the work list of a
/// `process --inputs` output folder, with frames, time and throughput.
///
/// Exit status: 0 when every video is done, 3 otherwise.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints corpus-status /shared/out
  stablekeypoints corpus-status /shared/out --json
  stablekeypoints corpus-status /shared/out --merge all.jsonl")]
pub struct CorpusStatusCmd {
    /// The output folder of process --inputs
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// One JSON object instead of the text report
    #[arg(long)]
    pub json: bool,
    /// Write the keypoint lines of every done video into one file, each with its "video"
    #[arg(long, value_name = "OUT.jsonl")]
    pub merge: Option<PathBuf>,
    /// List every failed video (the report lists the first 20)
    #[arg(long)]
    pub all: bool,
}
