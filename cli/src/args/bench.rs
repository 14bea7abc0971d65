//! `bench`.

use super::parse::{bounded, device, model_path};
use clap::Args;
use stablekeypoints::device::DeviceSpec;
use stablekeypoints::limits;
use stablekeypoints::tokens::{MAX_INPUT_SIZE, MAX_MAP_RES};
use std::path::PathBuf;

/// Per-stage timings of one frame (median of --runs after a warm-up), or --conv: 3x3
/// convolutions, candle against our Winograd kernel.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  stablekeypoints bench --model out/model --runs 5
  stablekeypoints bench --conv")]
pub struct BenchCmd {
    /// Diffusers model directory (unet/, vae/), a hub id in the local cache
    /// (org/name[@revision]), or a student file
    #[arg(
        long,
        value_name = "DIR|ID|STUDENT",
        value_parser = model_path,
        required_unless_present = "conv",
        conflicts_with = "conv"
    )]
    pub model: Option<PathBuf>,
    /// Tokens file [default: 500 random tokens, 10 selected]
    #[arg(long, value_name = "FILE", conflicts_with = "conv")]
    pub tokens: Option<PathBuf>,
    /// Square model input side [default: the tokens file's]
    #[arg(long, value_name = "S", value_parser = bounded(1, MAX_INPUT_SIZE), conflicts_with = "conv")]
    pub size: Option<usize>,
    /// Attention-map resolution [default: the tokens file's]
    #[arg(long, value_name = "R", value_parser = bounded(1, MAX_MAP_RES), conflicts_with = "conv")]
    pub map_res: Option<usize>,
    /// Timed runs after the warm-up
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = bounded(1, limits::MAX_RUNS))]
    pub runs: usize,
    /// Frames per forward pass
    #[arg(long, value_name = "B", default_value_t = 1,
          value_parser = bounded(1, limits::MAX_BATCH_SIZE), conflicts_with = "conv")]
    pub batch: usize,
    /// Compute device: cpu (f32) or cuda:N (f16)
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = device, conflicts_with = "conv")]
    pub device: DeviceSpec,
    /// Time 3x3 convolutions instead of a model
    #[arg(long)]
    pub conv: bool,
}
