//! `init-model`.

use super::parse::bounded;
use clap::{Args, ValueEnum};
use stablekeypoints::init::TinyArch;
use stablekeypoints::limits;
use std::path::PathBuf;

/// Write a miniature (or full-size) SD-architecture model with deterministic random
/// weights, plus a matching random tokens file.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  stablekeypoints init-model --out out/model --arch tiny-sd2")]
pub struct InitModelCmd {
    /// Output directory (diffusers layout)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Architecture
    #[arg(long, value_enum, default_value_t = Arch::TinySd1)]
    pub arch: Arch,
    /// Seed of the random weights
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Token embeddings in the tokens file [default: 100, 500 for sd15/sd21]
    #[arg(long, visible_alias = "tokens", value_name = "N",
          value_parser = bounded(1, limits::MAX_NUM_TOKENS))]
    pub num_tokens: Option<usize>,
    /// Keypoint tokens in the tokens file
    #[arg(long, visible_alias = "keypoints", value_name = "K", default_value_t = 10,
          value_parser = bounded(1, limits::MAX_NUM_KEYPOINTS))]
    pub num_keypoints: usize,
    /// Write into a --out folder that is not empty (replacing its model and tokens files)
    #[arg(long)]
    pub force: bool,
    /// Also write the same weights as one checkpoint in the original Stable Diffusion
    /// layout (`model.diffusion_model.*`, `first_stage_model.*`), as most SD tools pass
    /// them around (sd15 and sd21 only): for load-time measurements of that form
    #[arg(long, value_name = "FILE.safetensors")]
    pub single_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// Miniature SD 1.x layout
    TinySd1,
    /// Miniature SD 2.x layout
    TinySd2,
    /// Full-size SD 1.5 architecture (3.4 GB)
    Sd15,
    /// Full-size SD 2.1 architecture
    Sd21,
    /// Miniature SDXL base layout
    TinySdxl,
    /// Full-size SDXL base architecture (10 GB)
    Sdxl,
}

impl From<Arch> for TinyArch {
    fn from(a: Arch) -> Self {
        match a {
            Arch::TinySd1 => TinyArch::TinySd1,
            Arch::TinySd2 => TinyArch::TinySd2,
            Arch::Sd15 => TinyArch::Sd15,
            Arch::Sd21 => TinyArch::Sd21,
            Arch::TinySdxl => TinyArch::TinySdxl,
            Arch::Sdxl => TinyArch::Sdxl,
        }
    }
}
